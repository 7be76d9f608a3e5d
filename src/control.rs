//! The control loops every master runs, each acting only while this master
//! leads (Raft leadership is the controller lease): the scheduler and the
//! controller manager. The only place they are wired. Each talks to its own
//! master's gRPC API through the typed client, like any other client, with
//! every write fenced by the lease it acts under: a write decided while this
//! master led is refused once it no longer does, never forwarded to the new
//! leader (see `balsa_api::store::fence`). Their calls go straight into this
//! master's gRPC services, not over a socket (`balsa_api::grpc::transport`).
//!
//! The scheduler runs on a thread of its own (as kube-scheduler is a process
//! of its own), with its own client of the API. On the API's runtime its
//! informer and its owner task were two tasks among the hundreds a burst of
//! writes wakes: each pod reached the scheduler 0.1-0.4 s after its create
//! was answered, and each yield of the owner task cost as much again. On its
//! own thread the kernel schedules it whatever the API is doing.

use balsa_api::client::{Client, Leadership};
use balsa_controllers::manager::Options;
use tokio::runtime::{Builder, Runtime};
use tokio::task::JoinHandle;

/// The running control loops; `stop` (or dropping it) ends them.
pub struct Control {
    controllers: Option<JoinHandle<()>>,
    /// The scheduler's own thread.
    scheduler: Option<Runtime>,
}

/// Runs the scheduler (`balsa_scheduler::driver`, on its own thread) and the
/// controller manager (`balsa_controllers::manager`, on the caller's runtime)
/// against the API `client` reaches.
pub fn spawn(
    member: u64,
    client: Client,
    leadership: Leadership,
    options: Options,
) -> std::io::Result<Control> {
    let scheduler = Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(format!("scheduler-{member}"))
        .enable_all()
        .build()?;
    // Each `fenced_by` is a client of its own.
    scheduler.spawn(balsa_scheduler::driver::run(
        client.fenced_by(&leadership),
        leadership.clone(),
    ));
    let client = client.fenced_by(&leadership);
    let controllers = tokio::spawn(balsa_controllers::manager::run(client, leadership, options));
    Ok(Control {
        controllers: Some(controllers),
        scheduler: Some(scheduler),
    })
}

impl Control {
    /// Ends every loop at once: what they have in flight is dropped, not
    /// waited for (their writes are fenced by the lease anyway).
    pub fn stop(&mut self) {
        if let Some(c) = self.controllers.take() {
            c.abort();
        }
        if let Some(rt) = self.scheduler.take() {
            // Never blocks, so it may run inside the caller's runtime.
            rt.shutdown_background();
        }
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Threads of this process with this name (Linux: /proc/self/task).
    fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .expect("/proc/self/task")
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim_end() == name)
            .count()
    }

    async fn eventually_threads(name: &str, want: usize) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let n = threads_named(name);
            if n == want || tokio::time::Instant::now() > deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn the_scheduler_has_a_thread_of_its_own_until_stopped() {
        // No master listens there: the loops only retry their connections.
        let client = Client::new(vec!["127.0.0.1:1".into()]).expect("client");
        let mut control =
            spawn(97, client, Leadership::always(), Options::default()).expect("control loops");
        assert_eq!(eventually_threads("scheduler-97", 1).await, 1);
        control.stop();
        assert_eq!(eventually_threads("scheduler-97", 0).await, 0);
    }
}
