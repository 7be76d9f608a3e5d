//! The control loops a master runs: each acts only while this master leads
//! (Raft leadership is the controller lease). The only place they are wired.

use balsa_api::client::{Client, Leadership};
use tokio::task::JoinHandle;

/// Runs the controller manager against this master's own API (writes are
/// forwarded to the leader, which is this master while the loops act) until
/// the task is aborted.
pub fn spawn(api_addr: String, leadership: Leadership) -> JoinHandle<()> {
    tokio::spawn(async move {
        match Client::new(vec![api_addr]) {
            Ok(client) => balsa_controllers::manager::run(client, leadership).await,
            Err(e) => tracing::error!(error = %e, "controller manager not started"),
        }
    })
}
