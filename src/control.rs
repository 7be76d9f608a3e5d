//! The control loops every master runs, each acting only while this master
//! leads (Raft leadership is the controller lease): the scheduler and the
//! controller manager. The only place they are wired. Each talks to its own
//! master's gRPC API through the typed client, like any other client; writes
//! are forwarded to the leader.

use balsa_api::client::{Client, Leadership};
use tokio::task::JoinHandle;

/// Runs the scheduler (`balsa_scheduler::driver`) and the controller manager
/// (`balsa_controllers::manager`) against the API at `api_addr` until the
/// task is aborted.
pub fn spawn(
    api_addr: String,
    leadership: Leadership,
    controllers: balsa_controllers::manager::Options,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        match Client::new(vec![api_addr]) {
            Ok(client) => {
                tokio::join!(
                    balsa_scheduler::driver::run(client.clone(), leadership.clone()),
                    balsa_controllers::manager::run(client, leadership, controllers),
                );
            }
            Err(e) => tracing::error!(error = %e.message, "control loops not started"),
        }
    })
}
