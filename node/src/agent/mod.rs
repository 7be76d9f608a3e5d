//! The agent loop: the node agent proper, kubelet's main loop.
//!
//! ```text
//!  masters ══ NodeAgent.Attach ══► stream ──Update──► loop ──sync──► PodManager ─► workers
//!  (any; fails over, resumes       (bounded, in        │  ▲ statuses (read when a worker
//!   after the last revision)        revision order)    │  │  says they changed)
//!                                                      │  └───────────────┐
//!                                                      ├─► StatusWriter ──┴─► pods/status
//!                                                      ├─► finish graceful deletes (grace 0)
//!  workers ──PodEvent (bounded)──► events ─────────────┼─► core/v1 Events
//!  registration (every heartbeat) ─────────────────────┴─► Lease; Node + nodes/status
//!                                                           when changed or every 5 min
//!  masters ══ NodeLogs.PodLog ══► log_service ◄── directory (pods, published by the loop)
//!  eviction monitor ──Running / Fail (bounded)──► loop;  ──Pressure (watch)──► registration
//! ```
//!
//! One task owns the desired set and the [`PodManager`]; the stream, the
//! writers and the registration are tasks of their own, so a slow API write
//! never holds back a pod start. Pods are keyed by uid in the manager, so a
//! snapshot after a reconnect that lists a running pod again starts nothing.
//!
//! Statuses, events, the Node and the Lease are written through the typed
//! client (any master), not the stream: see `proto/proto/balsa/node.proto`.

mod events;
pub mod eviction;
pub mod log_service;
mod objects;
mod registration;
mod status_queue;
mod status_report;
mod statuses;
pub mod stream;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use balsa_api::client::{Api, Batcher, Client, DeleteParams};
use balsa_api::registry::{ApiError, Reason};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

pub use objects::ApiObjects;
pub use registration::{KUBELET_VERSION, LEASE_NAMESPACE};
pub use stream::StreamState;

use crate::events::Emitter;
use crate::eviction::{MachineSignals, Pressure};
use crate::machine::{MachineError, MachineInfo, Thresholds};
use crate::runtime::Runtime;
use crate::worker::{PodWorker, WorkerConfig};
use crate::PodManager;

#[derive(Clone)]
pub struct AgentConfig {
    pub node_name: String,
    /// The masters' gRPC API addresses (`host:port`).
    pub masters: Vec<String>,
    /// The node's directory (pods, logs; its disk is nodefs).
    pub root: PathBuf,
    /// The node's InternalIP.
    pub host_ip: String,
    pub runtime: Arc<dyn Runtime>,
    /// Lease renewal and node status period (kubelet's
    /// `nodeStatusUpdateFrequency`: 10 s).
    pub heartbeat: Duration,
    /// How often an unchanged Node status is written anyway (kubelet's
    /// `nodeStatusReportFrequency`: 5 min).
    pub status_report: Duration,
    /// Worker settings; `node_name`, `host_ip` and the node's allocatable
    /// are filled in from the above and the machine.
    pub worker: WorkerConfig,
    /// Reservations and hard eviction thresholds.
    pub thresholds: Thresholds,
    /// The eviction monitor (node pressure).
    pub eviction: eviction::EvictionConfig,
}

impl AgentConfig {
    pub fn new(
        node_name: impl Into<String>,
        masters: Vec<String>,
        root: impl Into<PathBuf>,
        runtime: Arc<dyn Runtime>,
    ) -> Self {
        Self {
            node_name: node_name.into(),
            masters,
            root: root.into(),
            host_ip: "127.0.0.1".into(),
            runtime,
            heartbeat: Duration::from_secs(10),
            status_report: status_report::REPORT_EVERY,
            worker: WorkerConfig::default(),
            thresholds: Thresholds::default(),
            eviction: eviction::EvictionConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid agent configuration: {0}")]
    Config(String),
    #[error("reading the machine's capacity")]
    Machine(#[source] MachineError),
    #[error("creating the API client")]
    Client(#[source] ApiError),
}

/// A running agent. Dropping it does not stop it: call [`Agent::stop`].
pub struct Agent {
    shutdown: oneshot::Sender<Shutdown>,
    stream: watch::Receiver<StreamState>,
    task: JoinHandle<()>,
}

/// How often the loop looks at its pods unprompted: graceful deletions to
/// send again, and a backstop for anything a wake-up did not cover. Status
/// changes and workers' ends wake it themselves ([`PodManager::changes`]),
/// so a thousand idle nodes in one agent cost nothing between ticks.
const TICK: Duration = Duration::from_secs(1);
/// How long after a wake-up the loop reads the statuses: a pod changes its
/// status several times as it starts (sandbox, then each container), and
/// one read takes them all.
const SETTLE: Duration = Duration::from_millis(5);
/// A delete that has not made the pod go away is sent again after this long.
const FINISH_AGAIN: Duration = Duration::from_secs(5);
const UPDATES: usize = 256;
/// How long a container whose pod was deleted while no agent ran gets to
/// stop (the pod's own grace is gone with it; kubelet's default).
const ORPHAN_GRACE: Duration = Duration::from_secs(30);
const EVENTS: usize = 1024;
/// Requests from the eviction monitor waiting for the loop (it makes one
/// pass at a time, so a few suffice).
const EVICTION_CALLS: usize = 4;

impl Agent {
    /// Registers the node and attaches to a master, in the background; errors
    /// here are configuration errors only (a master that cannot be reached is
    /// retried for ever). No log endpoint: see [`Agent::start_with_logs`].
    pub async fn start(config: AgentConfig) -> Result<Self, AgentError> {
        Self::start_with_logs(config, None).await
    }

    /// As [`Agent::start`], serving `NodeLogs` (the masters' way to pod logs)
    /// on `logs`, whose port the Node publishes as its kubelet endpoint.
    pub async fn start_with_logs(
        config: AgentConfig,
        logs: Option<tokio::net::TcpListener>,
    ) -> Result<Self, AgentError> {
        if config.node_name.is_empty() {
            return Err(AgentError::Config("a node needs a name".into()));
        }
        if config.masters.is_empty() {
            return Err(AgentError::Config("no master addresses".into()));
        }
        std::fs::create_dir_all(&config.root)
            .map_err(|e| AgentError::Config(format!("creating {}: {e}", config.root.display())))?;
        let root = config.root.clone();
        let mut info = tokio::task::spawn_blocking(move || MachineInfo::read(&root))
            .await
            .map_err(|e| AgentError::Config(format!("reading the machine: {e}")))?
            .map_err(AgentError::Machine)?;
        // The node's name is its hostname here (kubelet's --hostname-override):
        // several agents share one machine.
        info.hostname = config.node_name.clone();
        let client = Client::new(config.masters.clone()).map_err(AgentError::Client)?;
        let log_port = match &logs {
            Some(l) => Some(
                l.local_addr()
                    .map_err(|e| AgentError::Config(format!("the log listener: {e}")))?
                    .port(),
            ),
            None => None,
        };
        let (stop, stop_rx) = watch::channel(false);
        let (stream_state, stream_rx) = watch::channel(StreamState::default());
        let (updates_tx, updates) = mpsc::channel(UPDATES);
        let (emitter, events_rx) = Emitter::channel(EVENTS);
        let (pressure_tx, pressure_rx) = watch::channel(Pressure::default());
        let (calls_tx, calls_rx) = mpsc::channel(EVICTION_CALLS);
        let monitor = eviction::Monitor {
            source: config
                .eviction
                .source
                .clone()
                .unwrap_or_else(|| Arc::new(MachineSignals::new(config.root.clone()))),
            config: config.eviction.clone(),
            hard: config.thresholds.hard.clone(),
            runtime: config.runtime.clone(),
            calls: calls_tx,
            events: emitter.clone(),
            pressure: pressure_tx,
        };

        let mut worker = config.worker.clone();
        worker.node_name = config.node_name.clone();
        worker.host_ip = config.host_ip.clone();
        worker.node_cpu_millis = info.cpu_millis;
        worker.node_memory_bytes = info.memory_bytes;
        worker.node_ephemeral_bytes = info.ephemeral_bytes;
        let source = Arc::new(ApiObjects::new(client.clone()));
        let mut manager = PodManager::new(PodWorker::new(
            config.runtime.clone(),
            source,
            emitter,
            worker,
        ));
        // A restarted agent takes over the containers still running; the
        // first snapshot says which pods they belong to.
        match config.runtime.recover().await {
            Ok(found) if !found.is_empty() => {
                tracing::info!(
                    containers = found.len(),
                    "adopting containers still running"
                );
                manager.adopt(found);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "looking for containers still running"),
        }

        tokio::spawn(stream::run(
            config.masters.clone(),
            config.node_name.clone(),
            updates_tx,
            stream_state,
            stop_rx.clone(),
        ));
        // The node's pod statuses and Events share requests.
        let batcher = Batcher::spawn(client.clone());
        tokio::spawn(events::run(
            client.clone(),
            batcher.clone(),
            config.node_name.clone(),
            events_rx,
            stop_rx.clone(),
        ));
        tokio::spawn(
            registration::Registration {
                client: client.clone(),
                node: config.node_name.clone(),
                host_ip: config.host_ip.clone(),
                info,
                root: config.root.clone(),
                thresholds: config.thresholds.clone(),
                every: config.heartbeat,
                report_every: config.status_report,
                log_port,
                pressure: pressure_rx,
            }
            .run(stop_rx.clone()),
        );
        tokio::spawn(monitor.run(stop_rx.clone()));
        let (directory, directory_rx) = watch::channel(Arc::new(HashMap::new()));
        if let Some(listener) = logs {
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let service = log_service::LogService::server(directory_rx, config.runtime.clone());
            let mut stopped = stop_rx.clone();
            tokio::spawn(async move {
                let served = tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = served {
                    tracing::warn!(error = %e, "the log endpoint stopped");
                }
            });
        }
        let statuses = statuses::StatusWriter::spawn(client.clone(), batcher, stop_rx);
        let (shutdown, shutdown_rx) = oneshot::channel();
        let state = Loop {
            client,
            manager,
            desired: HashMap::new(),
            pushed: HashMap::new(),
            finishing: HashMap::new(),
            statuses,
            directory,
            runtime: config.runtime.clone(),
        };
        let span = tracing::info_span!("agent", node.name = %config.node_name);
        let task = tokio::spawn(
            state
                .run(updates, calls_rx, shutdown_rx, stop)
                .instrument(span),
        );
        tracing::info!(node.name = %config.node_name, runtime = config.runtime.name(), "node agent started");
        Ok(Self {
            shutdown,
            stream: stream_rx,
            task,
        })
    }

    /// Where the assignment stream is.
    pub fn stream(&self) -> watch::Receiver<StreamState> {
        self.stream.clone()
    }

    /// Stops the agent and its pods (with `grace`, or each pod's own grace
    /// period when `None`); the pods' API objects are left as they are.
    pub async fn stop(self, grace: Option<Duration>) {
        let _ = self.shutdown.send(Shutdown::StopPods(grace));
        let _ = self.task.await;
    }

    /// Stops the agent and leaves its pods running (kubelet's way when it
    /// is stopped): an agent started later on the same root adopts them.
    /// Only for a process about to exit: the runtime's supervision of the
    /// containers ends with it.
    pub async fn leave(self) {
        let _ = self.shutdown.send(Shutdown::LeavePods);
        let _ = self.task.await;
    }
}

/// What an agent does with its pods when it stops.
enum Shutdown {
    /// Stop them, with this grace (each pod's own when `None`).
    StopPods(Option<Duration>),
    LeavePods,
}

/// Runs an agent until `shutdown` completes, then stops its pods with `grace`.
pub async fn run(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Option<Duration>,
) -> Result<(), AgentError> {
    let agent = Agent::start(config).await?;
    shutdown.await;
    agent.stop(grace).await;
    Ok(())
}

/// The loop's state: what the masters say the node runs, and what it does.
struct Loop {
    client: Client,
    manager: PodManager,
    /// Pods bound to the node, by `namespace/name`.
    desired: HashMap<String, Arc<Pod>>,
    /// The last status handed to the writer, by uid.
    pushed: HashMap<String, PodStatus>,
    /// Graceful deletions being finished, by uid: when the delete was sent.
    finishing: HashMap<String, Instant>,
    statuses: statuses::StatusWriter,
    /// What the log endpoint can read: republished when the set of pods changes.
    directory: watch::Sender<Arc<HashMap<String, log_service::LogTarget>>>,
    runtime: Arc<dyn Runtime>,
}

fn key_of(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

fn pod_path(key: &crate::runtime::PodKey) -> String {
    format!("{}/{}", key.namespace, key.name)
}

fn uid_of(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or_default()
}

fn terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

impl Loop {
    async fn run(
        mut self,
        mut updates: mpsc::Receiver<stream::Update>,
        mut calls: mpsc::Receiver<eviction::Call>,
        mut shutdown: oneshot::Receiver<Shutdown>,
        stop: watch::Sender<bool>,
    ) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let changes = self.manager.changes();
        // When to look at the pods next (a wake-up settled, a held status due).
        let mut wake: Option<tokio::time::Instant> = None;
        let how = loop {
            let at = wake;
            let woken = async {
                match at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                how = &mut shutdown => break how.unwrap_or(Shutdown::StopPods(None)),
                update = updates.recv() => {
                    let Some(update) = update else { break Shutdown::StopPods(None) };
                    let mut snapshot = matches!(update, stream::Update::Snapshot { .. });
                    self.apply(update);
                    while let Ok(u) = updates.try_recv() {
                        snapshot |= matches!(u, stream::Update::Snapshot { .. });
                        self.apply(u);
                    }
                    self.sync();
                    if snapshot {
                        self.stop_orphans();
                    }
                    // New pods' first statuses start their hold now.
                    wake = earliest(wake, self.push_statuses());
                }
                () = changes.notified() => {
                    wake = earliest(wake, Some(tokio::time::Instant::now() + SETTLE));
                }
                () = woken => wake = self.tick().await,
                _ = tick.tick() => wake = earliest(wake, self.tick().await),
                Some(call) = calls.recv() => self.eviction(call),
            }
        };
        tracing::info!(pods = self.manager.len(), "node agent stopping");
        let _ = stop.send(true);
        match how {
            Shutdown::StopPods(grace) => self.manager.shutdown(grace).await,
            Shutdown::LeavePods => {
                tracing::info!("leaving the pods running for the next agent");
                self.manager.abandon().await;
            }
        }
    }

    /// The eviction monitor's requests: the running pods, or one to stop.
    fn eviction(&mut self, call: eviction::Call) {
        match call {
            eviction::Call::Running(reply) => {
                let by_uid: HashMap<&str, &Pod> =
                    self.desired.values().map(|p| (uid_of(p), &**p)).collect();
                let running = self
                    .manager
                    .running()
                    .into_iter()
                    .filter_map(|(uid, status)| {
                        Some(((*by_uid.get(uid.as_str())?).clone(), status))
                    })
                    .collect();
                let _ = reply.send(running);
            }
            eviction::Call::Fail {
                uid,
                failure,
                grace,
            } => {
                if !self.manager.fail(&uid, failure, grace) {
                    tracing::debug!(pod.uid = %uid, "not evicted: no longer running");
                }
            }
        }
    }

    fn apply(&mut self, update: stream::Update) {
        match update {
            stream::Update::Snapshot { revision, pods } => {
                tracing::debug!(revision, pods = pods.len(), "snapshot");
                self.desired = pods
                    .into_iter()
                    .map(|p| (key_of(&p), Arc::new(p)))
                    .collect();
            }
            stream::Update::Change {
                deleted: true, pod, ..
            } => {
                self.desired.remove(&key_of(&pod));
            }
            stream::Update::Change { pod, revision, .. } => {
                let key = key_of(&pod);
                let new = self
                    .desired
                    .get(&key)
                    .is_none_or(|held| uid_of(held) != uid_of(&pod));
                if new {
                    // The first stage of a pod's startup on this node, for
                    // tracing the bind → Ready path (with the worker's
                    // "containers started" and the writer's "pod status").
                    tracing::debug!(pod = %key, revision, "pod assigned");
                }
                self.desired.insert(key, Arc::new(*pod));
            }
            stream::Update::Progress { .. } => {}
        }
    }

    fn sync(&mut self) {
        // A pod that already ended (before this agent started) is not run
        // again; one this agent ran stays listed so its logs stay.
        let desired: Vec<&Arc<Pod>> = self
            .desired
            .values()
            .filter(|p| !terminal(p) || self.manager.has(uid_of(p)))
            .collect();
        self.manager.sync(desired);
        self.publish();
    }

    /// Containers recovered at start whose pods no longer run here (deleted
    /// while no agent ran): stopped, and their pods' files removed.
    fn stop_orphans(&mut self) {
        for r in self.manager.orphans() {
            let runtime = self.runtime.clone();
            tokio::spawn(async move {
                tracing::info!(pod = %r.pod, container = %r.container, "stopping a container whose pod is gone");
                if let Err(e) = runtime.stop(&r.id, ORPHAN_GRACE).await {
                    tracing::warn!(pod = %r.pod, error = %e, "stopping an orphaned container");
                }
                let _ = runtime.remove(&r.id).await;
                let _ = runtime.remove_sandbox(&r.pod).await;
                let _ = runtime.remove_logs(&r.pod).await;
            });
        }
    }

    fn publish(&self) {
        let watches = self.manager.watches();
        let same = {
            let current = self.directory.borrow();
            current.len() == watches.len()
                && watches
                    .iter()
                    .all(|(k, _)| current.get(&pod_path(k)).is_some_and(|t| t.key == *k))
        };
        if same {
            return;
        }
        let map = watches
            .into_iter()
            .map(|(key, status)| (pod_path(&key), log_service::LogTarget { key, status }))
            .collect();
        self.directory.send_replace(Arc::new(map));
    }

    /// Hands the changed statuses to the writer; when a held one is due.
    fn push_statuses(&mut self) -> Option<tokio::time::Instant> {
        let changed = self.manager.changed_statuses(Instant::now());
        for (key, status) in changed.statuses {
            // Only for a pod still bound here (the same uid under its name).
            let live = self
                .desired
                .get(&pod_path(&key))
                .is_some_and(|p| uid_of(p) == key.uid);
            if !live {
                continue;
            }
            if self.pushed.get(&key.uid) != Some(&status) {
                self.pushed.insert(key.uid.clone(), status.clone());
                self.statuses.push(key, status);
            }
        }
        changed.due.map(tokio::time::Instant::from_std)
    }

    /// Statuses out, graceful deletions finished, ended workers reaped;
    /// when to come back for a held status.
    async fn tick(&mut self) -> Option<tokio::time::Instant> {
        let due = self.push_statuses();
        let live: HashSet<&str> = self.desired.values().map(|p| uid_of(p)).collect();
        let now = Instant::now();
        for pod in self.desired.values() {
            if pod.metadata.deletion_timestamp.is_none() {
                continue;
            }
            let uid = uid_of(pod);
            if !self.manager.stopped(uid) {
                continue;
            }
            if self
                .finishing
                .get(uid)
                .is_some_and(|sent| now.duration_since(*sent) < FINISH_AGAIN)
            {
                continue;
            }
            self.finishing.insert(uid.to_string(), now);
            tokio::spawn(finish(self.client.clone(), pod.clone()));
        }
        self.finishing.retain(|uid, _| live.contains(uid.as_str()));
        let reaped = self.manager.reap().await;
        if !reaped.is_empty() {
            self.publish();
        }
        for (key, _) in reaped {
            self.pushed.remove(&key.uid);
        }
        due
    }
}

fn earliest(
    a: Option<tokio::time::Instant>,
    b: Option<tokio::time::Instant>,
) -> Option<tokio::time::Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Deletes a pod whose graceful deletion this node has carried out: its
/// containers have stopped, so the object can go (grace 0, this uid only).
async fn finish(client: Client, pod: Arc<Pod>) {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client, ns);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => tracing::debug!(pod = %format!("{ns}/{name}"), "graceful deletion finished"),
        Err(e) if matches!(e.reason, Reason::NotFound | Reason::Conflict) => {}
        Err(e) => {
            tracing::info!(pod = %format!("{ns}/{name}"), error = %e, "finishing a deletion; will retry")
        }
    }
}
