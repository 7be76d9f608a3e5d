//! The control loops every master runs (acting only while it leads): the one
//! place they are wired to the API. Each talks to its own master's gRPC API
//! through the typed client, like any other client; writes are forwarded to
//! the leader.

use balsa_api::client::{Client, Leadership};
use tokio::task::JoinHandle;

/// Starts the scheduler (`balsa_scheduler::driver`) against the API at
/// `api_addr`. Abort the handle to stop it.
pub fn spawn(api_addr: String, leadership: Leadership) -> JoinHandle<()> {
    tokio::spawn(async move {
        match Client::new(vec![api_addr]) {
            Ok(client) => balsa_scheduler::driver::run(client, leadership).await,
            Err(e) => tracing::error!(error = %e.message, "scheduler not started"),
        }
    })
}
