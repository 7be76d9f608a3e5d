//! The control loops every master runs, each acting only while this master
//! leads (Raft leadership is the controller lease): the scheduler and the
//! controller manager. The only place they are wired. Each talks to its own
//! master's gRPC API through the typed client, like any other client, with
//! every write fenced by the lease it acts under: a write decided while this
//! master led is refused once it no longer does, never forwarded to the new
//! leader (see `balsa_api::store::fence`).

use balsa_api::client::{Client, Leadership};
use balsa_controllers::manager::Options;
use tokio::task::JoinHandle;

/// Runs the scheduler (`balsa_scheduler::driver`) and the controller manager
/// (`balsa_controllers::manager`) against the API at `api_addr` until the
/// task is aborted.
pub fn spawn(api_addr: String, leadership: Leadership, options: Options) -> JoinHandle<()> {
    tokio::spawn(async move {
        match Client::new(vec![api_addr]) {
            Ok(client) => {
                let client = client.fenced_by(&leadership);
                tokio::join!(
                    balsa_scheduler::driver::run(client.clone(), leadership.clone()),
                    balsa_controllers::manager::run(client, leadership, options),
                );
            }
            Err(e) => tracing::error!(error = %e.message, "control loops not started"),
        }
    })
}
