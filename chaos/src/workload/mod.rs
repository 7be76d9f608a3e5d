//! The workload: register clients spread over every replica, and watchers on
//! every replica (half of them hang up and resume on purpose), and liveness
//! probes on every replica. All of them
//! record into one [`Recorder`] and stop on one signal.

pub mod objects;
pub mod probes;
pub mod registers;
pub mod watchers;

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::history::Recorder;

#[derive(Debug, Clone)]
pub struct WorkloadOptions {
    pub clients: usize,
    pub keys: usize,
    /// Ops per second over all clients.
    pub rate: f64,
    pub timeout: Duration,
    pub seed: u64,
}

/// The running workload.
pub struct Workload {
    stop_clients: watch::Sender<bool>,
    stop_watchers: watch::Sender<bool>,
    clients: JoinSet<()>,
    watchers: JoinSet<()>,
}

impl Workload {
    /// Starts watchers on every replica (`replicas` are (member id, API
    /// address)), then the clients.
    pub fn start(opts: &WorkloadOptions, replicas: &[(u64, String)], rec: &Recorder) -> Self {
        let (stop_clients, clients_rx) = watch::channel(false);
        let (stop_watchers, watchers_rx) = watch::channel(false);
        let mut watchers = JoinSet::new();
        for (i, (id, addr)) in replicas.iter().enumerate() {
            for resumer in [false, true] {
                let spec = watchers::WatcherSpec {
                    watcher: (2 * i + usize::from(resumer)) as u32,
                    replica: *id,
                    addr: addr.clone(),
                    resume_every: resumer.then(|| Duration::from_millis(1500 + 250 * i as u64)),
                    bookmark_ms: 300,
                };
                watchers.spawn(watchers::run(spec, rec.clone(), watchers_rx.clone()));
            }
        }
        let mut clients = JoinSet::new();
        for (id, addr) in replicas {
            clients.spawn(probes::run(
                *id,
                addr.clone(),
                Duration::from_millis(40),
                Duration::from_secs(5),
                rec.clone(),
                clients_rx.clone(),
            ));
        }
        for c in 0..opts.clients {
            let (id, addr) = &replicas[c % replicas.len()];
            let spec = registers::ClientSpec {
                client: c as u32,
                replica: *id,
                addr: addr.clone(),
                keys: opts.keys,
                rate: opts.rate / opts.clients.max(1) as f64,
                timeout: opts.timeout,
                seed: opts.seed.wrapping_add(c as u64),
            };
            clients.spawn(registers::run(spec, rec.clone(), clients_rx.clone()));
        }
        Self {
            stop_clients,
            stop_watchers,
            clients,
            watchers,
        }
    }

    /// Stops the clients and waits for their last ops (at most one timeout).
    pub async fn stop_clients(&mut self) {
        let _ = self.stop_clients.send(true);
        while self.clients.join_next().await.is_some() {}
    }

    /// Stops the watchers; each records its open session.
    pub async fn stop_watchers(&mut self) {
        let _ = self.stop_watchers.send(true);
        while self.watchers.join_next().await.is_some() {}
    }
}
