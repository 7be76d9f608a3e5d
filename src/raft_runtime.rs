//! The thread a master's consensus runs on, apart from the API.
//!
//! A master's Raft core (which writes and fsyncs the log itself, see
//! `balsa_raft_store::log_store`), its replication streams, the state machine
//! worker and the peer gRPC server all run on one dedicated Tokio
//! runtime with its own OS thread. The API (REST, the gRPC Objects service,
//! watches, the scheduler and controllers) keeps the main runtime. Without
//! this split a burst of API work (a list of thousands of objects, a watch
//! fan-out to hundreds of watchers) queues ahead of heartbeats on the same
//! worker threads; on a loaded 2-core machine a follower then misses the
//! leader for longer than its election timeout and campaigns, and openraft
//! 0.9 (no pre-vote) lets that disrupt a healthy leader. On its own thread,
//! mostly asleep, consensus is woken promptly by the kernel's scheduler
//! whatever the API is doing. (TiKV separates its raftstore threads from its
//! gRPC threads for the same reason.)
//!
//! Calls from the API into the replica cross runtimes through openraft's
//! channels, which is fine; what must run here is everything that spawns
//! consensus tasks: `Replica::open` and the peer server.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio::runtime::{Builder, Handle, Runtime};

/// A runtime that is shut down without blocking when dropped, so a master
/// can be stopped (or a test can drop one) from inside another runtime.
pub struct RaftRuntime {
    runtime: Option<Runtime>,
}

impl RaftRuntime {
    /// Starts the runtime's thread, named after the member.
    pub fn new(member: u64) -> std::io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(format!("raft-{member}"))
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// Logs every time the raft thread was busy (or not scheduled) for
    /// longer than `threshold`: a task that should wake every few
    /// milliseconds comes late. A stall past the election timeout costs an
    /// election, so the log says when and how long.
    pub fn watch_stalls(&self, threshold: Duration) {
        self.handle().spawn(async move {
            let tick = Duration::from_millis(10);
            loop {
                let before = Instant::now();
                tokio::time::sleep(tick).await;
                let late = before.elapsed().saturating_sub(tick);
                if late >= threshold {
                    tracing::warn!(
                        late_ms = late.as_millis() as u64,
                        "the raft thread was stalled (busy or not scheduled)"
                    );
                }
            }
        });
    }

    pub fn handle(&self) -> &Handle {
        match &self.runtime {
            Some(rt) => rt.handle(),
            // `drop` and `shutdown` take the runtime out, and both consume it.
            None => {
                unreachable!("the raft runtime is only taken by drop and shutdown, which end it")
            }
        }
    }

    /// Runs `fut` on the raft thread and waits for it from the caller's runtime.
    pub async fn run<F>(&self, fut: F) -> anyhow::Result<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        Ok(self.handle().spawn(fut).await?)
    }

    /// Shuts the runtime down and waits (up to `grace`, off the caller's
    /// runtime) until its thread has dropped every task, and with them the
    /// store handles they held. Dropping it instead returns at once and
    /// leaves that thread to finish on its own: when the process exits
    /// meanwhile (a test binary right after its test), the thread races
    /// RocksDB's teardown (SIGABRT, "pthread lock: Invalid argument").
    pub async fn shutdown(mut self, grace: Duration) {
        if let Some(rt) = self.runtime.take() {
            let _ = tokio::task::spawn_blocking(move || rt.shutdown_timeout(grace)).await;
        }
    }
}

impl Drop for RaftRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_on_its_own_thread_and_drops_inside_a_runtime() {
        let rt = RaftRuntime::new(7).expect("runtime");
        let name = rt
            .run(async { std::thread::current().name().map(str::to_string) })
            .await
            .expect("ran");
        assert_eq!(name.as_deref(), Some("raft-7"));
        let pending = rt.handle().spawn(std::future::pending::<()>());
        // Dropping a plain Runtime here would panic (blocking inside async).
        drop(rt);
        assert!(pending.await.expect_err("cancelled").is_cancelled());
    }

    /// `shutdown` returns once the thread has dropped its tasks, and what
    /// they held with them.
    #[tokio::test]
    async fn shutdown_waits_until_the_tasks_let_go() {
        let rt = RaftRuntime::new(8).expect("runtime");
        let held = std::sync::Arc::new(());
        let inside = held.clone();
        rt.handle().spawn(async move {
            let _inside = inside;
            std::future::pending::<()>().await
        });
        assert_eq!(std::sync::Arc::strong_count(&held), 2);
        rt.shutdown(Duration::from_secs(5)).await;
        assert_eq!(std::sync::Arc::strong_count(&held), 1);
    }
}
