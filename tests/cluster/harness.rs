use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use balsa::server::{self, RunningServer, ServerOptions};
use balsa_api::Store;
use balsa_raft_store::{Faults, Member};
use openraft::ServerState;
use tempfile::TempDir;

/// A cluster of in-process replicas. Replica `i` has Raft id `i + 1`.
pub struct InProc {
    dir: TempDir,
    pub opts: Vec<ServerOptions>,
    pub servers: Vec<Option<RunningServer>>,
    pub faults: Vec<Faults>,
}

pub const WAIT: Duration = Duration::from_secs(20);

impl InProc {
    pub async fn start(n: usize, tweak: impl Fn(&mut ServerOptions)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut opts = Vec::new();
        let mut servers = Vec::new();
        let mut faults = Vec::new();
        for i in 0..n {
            let mut o = ServerOptions::new(i as u64 + 1, dir.path().join(format!("r{}", i + 1)));
            o.replica.request_timeout = Duration::from_secs(3);
            tweak(&mut o);
            let f = Faults::default();
            let s = server::start(o.clone(), f.clone())
                .await
                .expect("start replica");
            // Restarts must come back on the same addresses.
            o.peer_listen = s.peer_addr;
            o.api_listen = s.api_addr;
            opts.push(o);
            faults.push(f);
            servers.push(Some(s));
        }
        let members: BTreeMap<u64, Member> = servers
            .iter()
            .flatten()
            .map(|s| {
                let m = Member {
                    peer_addr: s.peer_addr.to_string(),
                    api_addr: s.api_addr.to_string(),
                };
                (s.replica.id(), m)
            })
            .collect();
        // Every initial member bootstraps with the same token, as `balsa up`
        // starts them, so they agree on the cluster id.
        let token = balsa_raft_store::identity::new_init_token();
        for s in servers.iter().flatten() {
            s.replica
                .initialize(members.clone(), Some(token.as_str()))
                .await
                .expect("initialize");
        }
        let cluster = Self {
            dir,
            opts,
            servers,
            faults,
        };
        cluster.wait_leader(&[]).await;
        cluster
    }

    pub fn server(&self, i: usize) -> &RunningServer {
        self.servers[i].as_ref().expect("replica is running")
    }

    pub fn store(&self, i: usize) -> Arc<dyn Store> {
        self.server(i).replica.clone()
    }

    /// Waits until a replica not in `except` is leader and known to every
    /// running replica outside `except`; returns its index.
    pub async fn wait_leader(&self, except: &[usize]) -> usize {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let running: Vec<usize> = (0..self.servers.len())
                .filter(|i| self.servers[*i].is_some() && !except.contains(i))
                .collect();
            let leaders: Vec<usize> = running
                .iter()
                .copied()
                .filter(|i| {
                    self.server(*i).replica.raft().metrics().borrow().state == ServerState::Leader
                })
                .collect();
            if let [leader] = leaders[..] {
                let id = leader as u64 + 1;
                let agreed = running.iter().all(|i| {
                    self.server(*i)
                        .replica
                        .raft()
                        .metrics()
                        .borrow()
                        .current_leader
                        == Some(id)
                });
                if agreed {
                    return leader;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no leader among {running:?} within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts an empty replica that joins through replica `via`; returns its index.
    pub async fn join(&mut self, via: usize) -> usize {
        let i = self.servers.len();
        let mut o = ServerOptions::new(i as u64 + 1, self.dir.path().join(format!("r{}", i + 1)));
        o.join = Some(self.server(via).api_addr.to_string());
        let f = Faults::default();
        let s = server::start(o.clone(), f.clone()).await.expect("join");
        o.peer_listen = s.peer_addr;
        o.api_listen = s.api_addr;
        o.join = None;
        self.opts.push(o);
        self.faults.push(f);
        self.servers.push(Some(s));
        i
    }

    /// Voter ids as replica `i` sees them.
    pub fn voters(&self, i: usize) -> Vec<u64> {
        self.server(i)
            .replica
            .raft()
            .metrics()
            .borrow()
            .membership_config
            .voter_ids()
            .collect()
    }

    pub async fn stop(&mut self, i: usize) {
        if let Some(s) = self.servers[i].take() {
            s.stop().await;
        }
    }

    pub async fn restart(&mut self, i: usize) {
        let s = server::start(self.opts[i].clone(), self.faults[i].clone())
            .await
            .expect("restart replica");
        self.servers[i] = Some(s);
    }

    /// Cuts replica `i` off from every other replica, both ways.
    pub fn isolate(&self, i: usize) {
        let id = i as u64 + 1;
        for (j, f) in self.faults.iter().enumerate() {
            if j == i {
                f.partition((1..=self.faults.len() as u64).filter(|x| *x != id));
            } else {
                f.partition([id]);
            }
        }
    }

    pub fn heal(&self) {
        for f in &self.faults {
            f.heal();
        }
    }

    pub async fn shutdown(mut self) {
        for i in 0..self.servers.len() {
            self.stop(i).await;
        }
    }
}

impl Drop for InProc {
    /// A test that ends without `shutdown` still stops its replicas before its
    /// data dir goes and the test binary exits: a Raft thread left running
    /// mid-write when the process exits races RocksDB's teardown (seen once as
    /// SIGABRT, "pthread lock: Invalid argument", after a passing test).
    fn drop(&mut self) {
        let servers: Vec<RunningServer> =
            self.servers.iter_mut().filter_map(Option::take).collect();
        if servers.is_empty() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return;
        }
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                for s in servers {
                    s.stop().await;
                }
            })
        });
    }
}

pub fn configmap(ns: &str, name: &str, value: &str) -> bytes::Bytes {
    balsa_api::conformance::configmap(ns, name, value)
}

pub fn key(ns: &str, name: &str) -> balsa_api::ResourceKey {
    balsa_api::conformance::key(ns, name)
}

/// An agent that never sees node pressure: this machine's disk may well be
/// under kubelet's default `nodefs.available<10%`, and a test that is not
/// about eviction would then lose its BestEffort pods to it at the agent's
/// first pass after they start (10 s; a pod slow to become Ready under
/// load was evicted before it was). `node::an_agent_under_memory_pressure_*`
/// pins eviction.
pub fn without_pressure(config: &mut balsa_node::agent::AgentConfig) {
    config.thresholds.hard = balsa_node::eviction::HardThresholds::none();
}
