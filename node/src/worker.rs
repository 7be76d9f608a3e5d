//! One async worker per pod: sandbox, volumes, init containers in order, then
//! every container, each supervised until the pod is done or deleted.
//!
//! ```text
//! spawn(pod) ─► sandbox ─► volumes ─► init[0] ─► init[1] ─► … ─► containers (one runner each)
//!                (retried)  (FailedMount,     (each to exit 0;      │ start ─► probes ─► exit
//!                            retried)          restart per policy)  │   ▲                  │
//!                                                                   │   └── back-off ◄─────┘ (per restartPolicy)
//! terminate(grace) ─► every runner: preStop hook, SIGTERM, SIGKILL after grace
//! ```
//!
//! The worker is the only writer of its pod's status: runners update their
//! container's entry through [`Shared::update`], which recomputes phase and
//! conditions ([`crate::status`]) and publishes on a `watch` channel. Events go
//! to the shared bounded [`Emitter`]. Every status change, and every
//! worker's end, also wakes the one [`PodWorker::changes`] the agent loop
//! waits on, so the loop reads statuses when they change instead of
//! polling each pod. When nothing will run any more (a
//! terminal phase, or deletion) the worker removes the sandbox and ends; the
//! last published status is final. Logs stay until the agent calls
//! [`Runtime::remove_logs`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;

use k8s_openapi::api::core::v1::{
    Container, ContainerStateTerminated, ContainerStatus, HostIP, Pod, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;

use crate::backoff::{Backoff, BackoffConfig};
use crate::env::{self, Downward};
pub use crate::events::{Emitter, EventType, PodEvent};
use crate::objects::ObjectSource;
use crate::probe::{self, ProbeContext, ProbeState, Target};
use crate::runtime::{
    ContainerConfig, ContainerId, ExitStatus, ImageOutcome, Limits, PodKey, PullPolicy, Recovered,
    Runtime, RuntimeError,
};
use crate::status;
use crate::volumes::{self, VolumePaths};
use crate::{qos, quantity};

const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// How workers behave; the defaults are kubelet's.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub node_name: String,
    pub host_ip: String,
    pub backoff: BackoffConfig,
    /// The length of a probe's "second" (`periodSeconds`, `timeoutSeconds`,
    /// `initialDelaySeconds`): 1 s except in tests.
    pub probe_unit: Duration,
    /// How long to wait before retrying a pod whose sandbox, volumes or
    /// container config could not be prepared.
    pub retry: Duration,
    /// The node's allocatable, for downward API limits a container leaves unset.
    pub node_cpu_millis: u64,
    pub node_memory_bytes: u64,
    pub node_ephemeral_bytes: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            node_name: String::new(),
            host_ip: "127.0.0.1".into(),
            backoff: BackoffConfig::default(),
            probe_unit: Duration::from_secs(1),
            retry: Duration::from_secs(10),
            node_cpu_millis: 1000,
            node_memory_bytes: 1 << 30,
            node_ephemeral_bytes: 1 << 30,
        }
    }
}

/// Starts pod workers; cheap to clone.
#[derive(Clone)]
pub struct PodWorker {
    runtime: Arc<dyn Runtime>,
    source: Arc<dyn ObjectSource>,
    events: Emitter,
    config: Arc<WorkerConfig>,
    /// Woken by every status change and every worker's end.
    changes: Arc<Notify>,
}

/// A pod's status as its worker publishes it: each change also wakes the
/// workers' shared [`PodWorker::changes`].
#[derive(Clone)]
struct StatusTx {
    tx: Arc<watch::Sender<PodStatus>>,
    changes: Arc<Notify>,
}

impl StatusTx {
    fn modify(&self, f: impl FnOnce(&mut PodStatus)) {
        self.tx.send_modify(f);
        self.changes.notify_one();
    }

    fn phase(&self) -> Option<String> {
        self.tx.borrow().phase.clone()
    }
}

/// How a worker is stopped: the request (the grace, `Duration::MAX` for
/// the pod's own) both ways, and why, when the pod must end Failed.
type Stopping = (
    watch::Sender<Option<Duration>>,
    watch::Receiver<Option<Duration>>,
    Arc<OnceLock<Failure>>,
);

/// Why a pod was stopped by the node itself and must end Failed (kubelet's
/// `Evicted`), set at most once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// `status.reason`.
    pub reason: String,
    /// `status.message`, also the `DisruptionTarget` condition's.
    pub message: String,
}

/// The agent loop's grip on one pod's worker.
pub struct PodHandle {
    key: PodKey,
    status: watch::Receiver<PodStatus>,
    terminate: watch::Sender<Option<Duration>>,
    failure: Arc<OnceLock<Failure>>,
    /// Set by the worker as it ends, before it wakes the loop (the task
    /// itself is finished a moment later).
    done: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl PodHandle {
    pub fn key(&self) -> &PodKey {
        &self.key
    }

    /// The latest status; `changed()` on it wakes on every update.
    pub fn status(&self) -> watch::Receiver<PodStatus> {
        self.status.clone()
    }

    /// Stop the pod (it was deleted): preStop hooks, SIGTERM, SIGKILL after
    /// `grace` (the pod's `terminationGracePeriodSeconds` when `None`). Calling
    /// it again with a shorter grace does not shorten a stop in progress.
    pub fn terminate(&self, grace: Option<Duration>) {
        self.terminate.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(grace.unwrap_or(Duration::MAX));
                true
            } else {
                false
            }
        });
    }

    /// Stop the pod for the node's sake (eviction): as [`PodHandle::terminate`]
    /// with `grace`, and the pod ends `Failed` with `failure`'s reason and
    /// message and a `DisruptionTarget` condition (reason
    /// `TerminationByKubelet`), as kubelet's eviction leaves it. The first
    /// failure set wins.
    pub fn fail(&self, failure: Failure, grace: Duration) {
        let _ = self.failure.set(failure);
        self.terminate(Some(grace));
    }

    /// Whether the pod is being stopped (deleted, evicted, past its deadline)
    /// or has ended.
    pub fn stopping(&self) -> bool {
        self.terminate.borrow().is_some() || self.is_finished()
    }

    /// End the worker at once, leaving its containers as they are (they
    /// are adopted by the next agent).
    pub fn abandon(&self) {
        self.task.abort();
    }

    /// Whether the worker has ended (terminal phase reached or terminated).
    pub fn is_finished(&self) -> bool {
        self.done.load(Ordering::Acquire) || self.task.is_finished()
    }

    /// Wait for the worker to end; returns the final status.
    pub async fn finished(self) -> PodStatus {
        let _ = self.task.await;
        let status = self.status.borrow().clone();
        status
    }
}

/// The runtime's key of a pod (namespace, name, uid; the name when it has
/// no uid yet).
pub(crate) fn pod_key(pod: &Pod) -> PodKey {
    let name = pod.metadata.name.clone().unwrap_or_default();
    PodKey {
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        uid: pod.metadata.uid.clone().unwrap_or_else(|| name.clone()),
        name,
    }
}

impl PodWorker {
    pub fn new(
        runtime: Arc<dyn Runtime>,
        source: Arc<dyn ObjectSource>,
        events: Emitter,
        config: WorkerConfig,
    ) -> Self {
        Self {
            runtime,
            source,
            events,
            config: Arc::new(config),
            changes: Arc::new(Notify::new()),
        }
    }

    /// Woken (one permit, kept until taken) whenever a pod's status changes
    /// or a worker ends: the agent loop's cue to read the statuses.
    pub fn changes(&self) -> Arc<Notify> {
        self.changes.clone()
    }

    /// The runtime the workers use.
    pub fn runtime(&self) -> &dyn Runtime {
        self.runtime.as_ref()
    }

    /// Start running `pod` (already bound to this node). The first status is
    /// published before this returns.
    pub fn spawn(&self, pod: Pod) -> PodHandle {
        self.spawn_adopting(Arc::new(pod), Vec::new())
    }

    /// As [`PodWorker::spawn`], taking over `adopted`: this pod's container
    /// instances still running from before an agent restart
    /// ([`Runtime::recover`]). They are not started again; their restart
    /// counts go on, init containers (done before) do not run again, and
    /// the pod's status starts from what the API holds.
    ///
    /// The worker keeps `pod` as it is shared (the agent holds the same
    /// object): a node runs thousands of pods, so each copy counts.
    pub fn spawn_adopting(&self, pod: Arc<Pod>, adopted: Vec<Recovered>) -> PodHandle {
        let key = pod_key(&pod);
        let spec = spec_of(&pod);
        let mut initial = PodStatus {
            phase: Some(status::PENDING.into()),
            qos_class: Some(qos::of(&pod).as_str().into()),
            host_ip: Some(self.config.host_ip.clone()),
            host_ips: Some(vec![HostIP {
                ip: self.config.host_ip.clone(),
            }]),
            init_container_statuses: spec.init_containers.as_ref().map(|list| {
                list.iter()
                    .map(|c| status::initial(&c.name, image(c), "PodInitializing"))
                    .collect()
            }),
            container_statuses: Some(
                spec.containers
                    .iter()
                    .map(|c| {
                        let reason = if spec.init_containers.as_ref().is_some_and(|l| !l.is_empty())
                        {
                            "PodInitializing"
                        } else {
                            "ContainerCreating"
                        };
                        status::initial(&c.name, image(c), reason)
                    })
                    .collect(),
            ),
            ..Default::default()
        };
        let now = crate::clock::now();
        status::set_condition(&mut initial, "PodScheduled", true, None, None, now);
        status::set_condition(
            &mut initial,
            "PodReadyToStartContainers",
            false,
            None,
            None,
            now,
        );
        status::recompute(spec, &mut initial, false, now);
        if !adopted.is_empty() {
            if let Some(known) = pod
                .status
                .clone()
                .filter(|s| s.container_statuses.is_some())
            {
                initial = known;
            }
        }
        let adopted: HashMap<String, Recovered> = adopted
            .into_iter()
            .map(|r| (r.container.clone(), r))
            .collect();
        let (status_tx, status_rx) = watch::channel(initial);
        let (terminate_tx, terminate_rx) = watch::channel(None);
        let terminate_tx_inner = terminate_tx.clone();
        let failure = Arc::new(OnceLock::new());
        let task_failure = failure.clone();
        let worker = self.clone();
        let task_key = key.clone();
        let done = Arc::new(AtomicBool::new(false));
        let task_done = done.clone();
        let status_tx = StatusTx {
            tx: Arc::new(status_tx),
            changes: self.changes.clone(),
        };
        let task = tokio::spawn(async move {
            let span = tracing::info_span!("pod", pod = %task_key);
            let changes = status_tx.changes.clone();
            let _ = tracing::Instrument::instrument(
                worker.run(
                    pod,
                    adopted,
                    task_key,
                    status_tx,
                    (terminate_tx_inner, terminate_rx, task_failure),
                ),
                span,
            )
            .await;
            task_done.store(true, Ordering::Release);
            changes.notify_one();
        });
        PodHandle {
            key,
            status: status_rx,
            terminate: terminate_tx,
            failure,
            done,
            task,
        }
    }

    async fn run(
        self,
        pod: Arc<Pod>,
        adopted: HashMap<String, Recovered>,
        key: PodKey,
        status_tx: StatusTx,
        (terminate_tx, terminate, failure): Stopping,
    ) {
        // activeDeadlineSeconds counts from the pod's start on this node; when
        // it passes, the pod is stopped as if deleted and ends Failed.
        let deadline = spec_of(&pod).active_deadline_seconds.map(|secs| {
            let events = self.events.clone();
            let key = key.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(secs.max(0) as u64)).await;
                let fired = terminate_tx.send_if_modified(|t| {
                    let first = t.is_none();
                    if first {
                        *t = Some(Duration::MAX);
                    }
                    first
                });
                if fired {
                    events.emit(
                        &key,
                        None,
                        EventType::Normal,
                        "DeadlineExceeded",
                        DEADLINE_MESSAGE,
                    );
                }
                fired
            })
        });
        self.run_pod(
            pod.clone(),
            adopted,
            key.clone(),
            status_tx.clone(),
            terminate,
        )
        .await;
        let deadline_exceeded = match deadline {
            // `true` only if the deadline is what stopped the pod.
            Some(timer) if timer.is_finished() => timer.await.unwrap_or(false),
            Some(timer) => {
                timer.abort();
                false
            }
            None => false,
        };
        // Boxed, as are the other steps a pod passes through once: a future
        // is as large as its largest step, and every pod holds its own.
        Box::pin(self.finish(
            &key,
            spec_of(&pod),
            &status_tx,
            deadline_exceeded,
            failure.get(),
        ))
        .await
    }

    /// Everything until no container will run any more.
    async fn run_pod(
        &self,
        pod: Arc<Pod>,
        adopted: HashMap<String, Recovered>,
        key: PodKey,
        status_tx: StatusTx,
        mut terminate: watch::Receiver<Option<Duration>>,
    ) {
        // Sandbox and volumes, retried until they work or the pod is deleted.
        let sandbox = loop {
            match Box::pin(self.runtime.create_sandbox(&key)).await {
                Ok(s) => break s,
                Err(e) => {
                    self.events.emit(
                        &key,
                        None,
                        EventType::Warning,
                        "FailedCreatePodSandBox",
                        e.to_string(),
                    );
                    if wait_or_terminated(self.config.retry, &mut terminate).await {
                        return;
                    }
                }
            }
        };
        let start_time = crate::clock::now();
        status_tx.modify(|st| {
            st.pod_ip = Some(sandbox.ip.clone());
            st.pod_ips = Some(vec![PodIP {
                ip: sandbox.ip.clone(),
            }]);
            // An adopted pod keeps the start time it had.
            st.start_time.get_or_insert(Time(start_time));
            status::set_condition(
                st,
                "PodReadyToStartContainers",
                true,
                None,
                None,
                start_time,
            );
        });
        let downward = Downward {
            pod_ip: sandbox.ip.clone(),
            host_ip: self.config.host_ip.clone(),
            node_name: self.config.node_name.clone(),
            node_cpu_millis: self.config.node_cpu_millis,
            node_memory_bytes: self.config.node_memory_bytes,
            node_ephemeral_bytes: self.config.node_ephemeral_bytes,
        };
        let volumes = loop {
            match Box::pin(volumes::prepare(
                &pod,
                &sandbox.dir,
                self.source.as_ref(),
                &downward,
            ))
            .await
            {
                Ok(v) => break v,
                Err(e) => {
                    self.events
                        .emit(&key, None, EventType::Warning, "FailedMount", e.to_string());
                    if wait_or_terminated(self.config.retry, &mut terminate).await {
                        return;
                    }
                }
            }
        };
        let spec = spec_of(&pod);
        let grace =
            Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64);
        let containers = spec.containers.len();
        let inits = spec.init_containers.as_ref().map_or(0, Vec::len);
        let shared = Arc::new(Shared {
            worker: self.clone(),
            pod,
            key: key.clone(),
            status: status_tx.clone(),
            volumes,
            downward,
            pod_ip: sandbox.ip,
            grace,
            adopted: std::sync::Mutex::new(adopted),
        });

        let init_done = !shared
            .adopted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        let inits = if init_done { 0 } else { inits };
        for index in 0..inits {
            match Box::pin(run_container(
                shared.clone(),
                Kind::Init,
                index,
                terminate.clone(),
            ))
            .await
            {
                End::Succeeded => {}
                End::Failed | End::Terminated => return,
            }
        }
        let mut runners = JoinSet::new();
        for index in 0..containers {
            runners.spawn(run_container(
                shared.clone(),
                Kind::Regular,
                index,
                terminate.clone(),
            ));
        }
        while runners.join_next().await.is_some() {}
    }

    /// Nothing runs any more: final status, sandbox gone.
    async fn finish(
        &self,
        key: &PodKey,
        spec: &PodSpec,
        status: &StatusTx,
        deadline_exceeded: bool,
        failure: Option<&Failure>,
    ) {
        if let Err(e) = self.runtime.remove_sandbox(key).await {
            tracing::warn!(error = %e, "removing pod sandbox");
        }
        let now = crate::clock::now();
        status.modify(|st| {
            // Containers that never ran end as kubelet shows them.
            for cs in st
                .init_container_statuses
                .iter_mut()
                .flatten()
                .chain(st.container_statuses.iter_mut().flatten())
            {
                cs.ready = false;
                if cs.state.as_ref().is_some_and(|s| s.running.is_some()) {
                    cs.state = Some(status::terminated(ContainerStateTerminated {
                        exit_code: 137,
                        reason: Some("Error".into()),
                        ..Default::default()
                    }));
                }
            }
            status::recompute(spec, st, true, now);
            status::set_condition(st, "PodReadyToStartContainers", false, None, None, now);
            if let Some(f) = failure {
                st.phase = Some(status::FAILED.into());
                st.reason = Some(f.reason.clone());
                st.message = Some(f.message.clone());
                status::set_condition(
                    st,
                    "DisruptionTarget",
                    true,
                    Some("TerminationByKubelet"),
                    Some(f.message.clone()),
                    now,
                );
            } else if deadline_exceeded {
                st.phase = Some(status::FAILED.into());
                st.reason = Some("DeadlineExceeded".into());
                st.message = Some(DEADLINE_MESSAGE.into());
            }
        });
        tracing::info!(phase = ?status.phase(), "pod worker finished");
    }
}

fn image(c: &Container) -> &str {
    c.image.as_deref().unwrap_or("")
}

/// Sleep `d`, or return `true` early when termination is requested.
async fn wait_or_terminated(
    d: Duration,
    terminate: &mut watch::Receiver<Option<Duration>>,
) -> bool {
    if terminate.borrow().is_some() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        r = terminate.wait_for(|t| t.is_some()) => { let _ = r; true }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Init,
    Regular,
}

enum End {
    /// Exited 0 and will not restart (or an init container completed).
    Succeeded,
    /// Exited non-zero and will not restart.
    Failed,
    /// Stopped because the pod is being deleted.
    Terminated,
}

/// A pod's spec (the default, empty one when it has none).
fn spec_of(pod: &Pod) -> &PodSpec {
    static NONE: std::sync::LazyLock<PodSpec> = std::sync::LazyLock::new(PodSpec::default);
    pod.spec.as_ref().unwrap_or(&NONE)
}

/// What every runner of one pod shares.
struct Shared {
    worker: PodWorker,
    pod: Arc<Pod>,
    key: PodKey,
    status: StatusTx,
    volumes: VolumePaths,
    downward: Downward,
    pod_ip: String,
    grace: Duration,
    /// Instances found running after an agent restart, by container name;
    /// each is taken once by its container's runner.
    adopted: std::sync::Mutex<HashMap<String, Recovered>>,
}

impl Shared {
    fn spec(&self) -> &PodSpec {
        spec_of(&self.pod)
    }

    fn container(&self, kind: Kind, index: usize) -> &Container {
        let spec = self.spec();
        match kind {
            Kind::Init => &spec.init_containers.as_deref().unwrap_or_default()[index],
            Kind::Regular => &spec.containers[index],
        }
    }

    /// Change one container's status, then recompute the pod's.
    fn update(&self, kind: Kind, index: usize, f: impl FnOnce(&mut ContainerStatus)) {
        let now = crate::clock::now();
        self.status.modify(|st| {
            let list = match kind {
                Kind::Init => st.init_container_statuses.as_mut(),
                Kind::Regular => st.container_statuses.as_mut(),
            };
            if let Some(cs) = list.and_then(|l| l.get_mut(index)) {
                f(cs);
            }
            status::recompute(self.spec(), st, false, now);
        });
    }

    fn emit(&self, field_path: &str, type_: EventType, reason: &str, message: impl Into<String>) {
        self.worker.events.emit(
            &self.key,
            Some(field_path.to_string()),
            type_,
            reason,
            message,
        );
    }

    fn runtime(&self) -> &dyn Runtime {
        self.worker.runtime.as_ref()
    }

    fn take_adopted(&self, container: &str) -> Option<Recovered> {
        self.adopted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(container)
    }
}

fn limits_of(c: &Container) -> Limits {
    let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    Limits {
        memory_bytes: limits
            .and_then(|l| l.get("memory"))
            .and_then(quantity::bytes),
        cpu_millis: limits
            .and_then(|l| l.get("cpu"))
            .and_then(quantity::cpu_millis),
    }
}

/// Everything up to a started container; `Err` is the waiting reason and
/// message to show before retrying, or a start error (an instance that
/// "ran" and ended with exit code 128).
enum Prepared {
    /// Running: started now, or (with its start time) found still running
    /// after an agent restart.
    Started(ContainerId, Option<Timestamp>),
    Waiting(&'static str, String),
    StartError(String),
}

async fn prepare_and_start(
    shared: &Shared,
    c: &Container,
    field_path: &str,
    attempt: u32,
) -> Prepared {
    let worker = &shared.worker;
    let env = match env::resolve(&shared.pod, c, worker.source.as_ref(), &shared.downward).await {
        Ok(env) => env,
        Err(e) => return Prepared::Waiting("CreateContainerConfigError", e.to_string()),
    };
    let mounts = match volumes::mounts(c, &shared.volumes) {
        Ok(m) => m,
        Err(e) => return Prepared::Waiting("CreateContainerConfigError", e.to_string()),
    };
    let image = image(c);
    let policy = PullPolicy::resolve(c.image_pull_policy.as_deref(), image);
    match shared.runtime().ensure_image(image, policy).await {
        Ok(ImageOutcome::Present) => shared.emit(
            field_path,
            EventType::Normal,
            "Pulled",
            format!("Container image {image:?} already present on machine"),
        ),
        Ok(ImageOutcome::Pulled { took }) => shared.emit(
            field_path,
            EventType::Normal,
            "Pulled",
            format!("Successfully pulled image {image:?} in {took:?}"),
        ),
        Err(e @ RuntimeError::ImageNeverPull(_)) => {
            return Prepared::Waiting("ErrImageNeverPull", e.to_string())
        }
        Err(e) => return Prepared::Waiting("ErrImagePull", e.to_string()),
    }
    let (command, args) = env::expand_command(c, &env);
    let config = ContainerConfig {
        pod: shared.key.clone(),
        name: c.name.clone(),
        attempt,
        image: image.to_string(),
        command,
        args,
        env: env.0,
        working_dir: c.working_dir.clone(),
        mounts,
        limits: limits_of(c),
    };
    match shared.runtime().start(config).await {
        Ok(id) => Prepared::Started(id, None),
        Err(RuntimeError::Exec(message)) => Prepared::StartError(message),
        Err(e) => Prepared::Waiting("RunContainerError", e.to_string()),
    }
}

/// How one started instance ended.
enum Outcome {
    Exited(ExitStatus),
    /// Killed because a liveness or startup probe failed.
    Unhealthy(ExitStatus),
    Terminated(ExitStatus),
}

/// Supervise one running instance: probes, exit, kill on deletion.
async fn supervise(
    shared: &Shared,
    kind: Kind,
    index: usize,
    c: &Container,
    id: &ContainerId,
    field_path: &str,
    terminate: &mut watch::Receiver<Option<Duration>>,
) -> Outcome {
    let runtime = shared.runtime();
    // kubelet runs postStart before the container counts as started; a
    // failed hook kills the container (reason FailedPostStartHook).
    if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
        let target = Target {
            runtime,
            id,
            pod_ip: &shared.pod_ip,
            container: c,
        };
        let action = probe::Action::of_hook(hook);
        if let Err(message) = Box::pin(probe::run_once(&action, &target, shared.grace)).await {
            shared.emit(
                field_path,
                EventType::Warning,
                "FailedPostStartHook",
                format!("PostStartHook failed: {message}"),
            );
            shared.emit(
                field_path,
                EventType::Normal,
                "Killing",
                format!("FailedPostStartHook: stopping container {}", c.name),
            );
            let exit = match runtime.stop(id, shared.grace).await {
                Ok(s) => s,
                Err(_) => runtime.wait(id).await.unwrap_or_else(|_| fallback_exit()),
            };
            return Outcome::Exited(exit);
        }
    }
    let (probe_tx, mut probe_rx) = watch::channel(ProbeState::default());
    let probes = async {
        if kind == Kind::Regular {
            let ctx = ProbeContext {
                target: Target {
                    runtime,
                    id,
                    pod_ip: &shared.pod_ip,
                    container: c,
                },
                pod: &shared.key,
                field_path: field_path.to_string(),
                events: &shared.worker.events,
                unit: shared.worker.config.probe_unit,
            };
            // Boxed: most containers have no probes, and this ends at once.
            Box::pin(probe::run(ctx, &probe_tx)).await;
        }
        // Probes are done (or there are none): nothing more from them.
        std::future::pending::<()>().await
    };
    tokio::pin!(probes);
    let stop = |grace: Duration| async move {
        match runtime.stop(id, grace).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "stopping container");
                fallback_exit()
            }
        }
    };
    loop {
        tokio::select! {
            exit = runtime.wait(id) => {
                return Outcome::Exited(exit.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "waiting for container");
                    fallback_exit()
                }));
            }
            _ = &mut probes => {}
            changed = probe_rx.changed() => {
                if changed.is_err() { continue; }
                let state = probe_rx.borrow_and_update().clone();
                if let Some((probe, message)) = state.failed {
                    let _ = message;
                    shared.emit(field_path, EventType::Normal, "Killing", format!(
                        "Container {} failed {} probe, will be restarted",
                        c.name, probe.as_str().to_lowercase()
                    ));
                    let probe_grace = match probe {
                        probe::ProbeKind::Liveness => c.liveness_probe.as_ref(),
                        probe::ProbeKind::Startup => c.startup_probe.as_ref(),
                        probe::ProbeKind::Readiness => None,
                    }
                    .and_then(|p| p.termination_grace_period_seconds)
                    .map(|s| Duration::from_secs(s.max(0) as u64))
                    .unwrap_or(shared.grace);
                    return Outcome::Unhealthy(Box::pin(kill_with_hook(shared, c, id, probe_grace, &stop)).await);
                }
                shared.update(kind, index, |cs| {
                    cs.started = Some(state.started);
                    cs.ready = state.ready;
                });
            }
            requested = async { terminate.wait_for(|t| t.is_some()).await.ok().and_then(|t| *t) } => {
                let requested = requested.unwrap_or(Duration::MAX);
                let grace = if requested == Duration::MAX { shared.grace } else { requested };
                shared.emit(field_path, EventType::Normal, "Killing", format!("Stopping container {}", c.name));
                return Outcome::Terminated(Box::pin(kill_with_hook(shared, c, id, grace, &stop)).await);
            }
        }
    }
}

/// How an instance is recorded when the runtime lost track of it.
fn fallback_exit() -> ExitStatus {
    let now = crate::clock::now();
    ExitStatus {
        code: 137,
        signal: Some(9),
        oom_killed: false,
        started_at: now,
        finished_at: now,
    }
}

/// kubelet's killContainer: the preStop hook within the grace period, then
/// SIGTERM with what is left (at least 2 s), then SIGKILL.
async fn kill_with_hook<F, Fut>(
    shared: &Shared,
    c: &Container,
    id: &ContainerId,
    grace: Duration,
    stop: &F,
) -> ExitStatus
where
    F: Fn(Duration) -> Fut,
    Fut: std::future::Future<Output = ExitStatus>,
{
    let began = Instant::now();
    let mut grace = grace;
    if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
        let target = Target {
            runtime: shared.runtime(),
            id,
            pod_ip: &shared.pod_ip,
            container: c,
        };
        let action = probe::Action::of_hook(hook);
        if let Err(message) = probe::run_once(&action, &target, grace).await {
            let field_path = format!("spec.containers{{{}}}", c.name);
            shared.emit(
                &field_path,
                EventType::Warning,
                "FailedPreStopHook",
                format!("PreStopHook failed: {message}"),
            );
        }
        grace = grace
            .saturating_sub(began.elapsed())
            .max(Duration::from_secs(2).min(grace));
    }
    stop(grace).await
}

/// One container instance, however it ended.
struct Instance {
    exit: ExitStatus,
    /// The runtime could not start it (reason `StartError`).
    start_error: Option<String>,
    id: Option<ContainerId>,
    started: Option<Instant>,
    /// Killed after a liveness or startup probe failed.
    unhealthy: bool,
    /// Stopped because the pod is being deleted.
    terminated: bool,
}

/// The life of one container of the pod, across restarts.
async fn run_container(
    shared: Arc<Shared>,
    kind: Kind,
    index: usize,
    mut terminate: watch::Receiver<Option<Duration>>,
) -> End {
    let c = shared.container(kind, index);
    let field_path = match kind {
        Kind::Init => format!("spec.initContainers{{{}}}", c.name),
        Kind::Regular => format!("spec.containers{{{}}}", c.name),
    };
    let policy = shared
        .spec()
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let config = shared.worker.config.clone();
    let mut backoff = Backoff::new(config.backoff);
    let mut pull_backoff: Option<Duration> = None;
    let mut restart_count: i32 = 0;
    let mut last_terminated: Option<ContainerStateTerminated> = None;
    // An instance still running from before an agent restart is taken over
    // instead of starting one.
    let mut adopted = match kind {
        Kind::Regular => shared.take_adopted(&c.name),
        Kind::Init => None,
    };
    loop {
        if terminate.borrow().is_some() {
            return End::Terminated;
        }
        let prepared = match adopted.take() {
            Some(r) => {
                restart_count = r.attempt as i32;
                Prepared::Started(r.id, Some(r.started_at))
            }
            // Boxed: a runner's future is as large as its largest step,
            // and the steps before a start are over while it runs.
            None => {
                Box::pin(prepare_and_start(
                    &shared,
                    c,
                    &field_path,
                    restart_count as u32,
                ))
                .await
            }
        };
        let ended = match prepared {
            Prepared::Waiting(reason, message) => {
                shared.emit(
                    &field_path,
                    EventType::Warning,
                    "Failed",
                    format!("Error: {message}"),
                );
                shared.update(kind, index, |cs| {
                    cs.state = Some(status::waiting(reason, Some(message)));
                });
                if wait_or_terminated(config.retry, &mut terminate).await {
                    return End::Terminated;
                }
                if reason == "ErrImagePull" {
                    // kubelet's image back-off: the pull is not retried
                    // until it expires (same numbers as the crash loop's).
                    let delay = pull_backoff
                        .map_or(config.backoff.initial, |d| (d * 2).min(config.backoff.max));
                    pull_backoff = Some(delay);
                    let message = format!("Back-off pulling image {:?}", image(c));
                    shared.emit(&field_path, EventType::Normal, "BackOff", message.clone());
                    shared.update(kind, index, |cs| {
                        cs.state = Some(status::waiting("ImagePullBackOff", Some(message)));
                    });
                    if wait_or_terminated(delay, &mut terminate).await {
                        return End::Terminated;
                    }
                }
                continue;
            }
            Prepared::StartError(message) => {
                shared.emit(
                    &field_path,
                    EventType::Warning,
                    "Failed",
                    format!("Error: {message}"),
                );
                let now = crate::clock::now();
                Instance {
                    exit: ExitStatus {
                        code: 128,
                        signal: None,
                        oom_killed: false,
                        started_at: now,
                        finished_at: now,
                    },
                    start_error: Some(message),
                    id: None,
                    started: None,
                    unhealthy: false,
                    terminated: false,
                }
            }
            Prepared::Started(id, adopted_at) => {
                let started = Instant::now();
                let now = adopted_at.unwrap_or_else(crate::clock::now);
                if adopted_at.is_none() {
                    shared.emit(
                        &field_path,
                        EventType::Normal,
                        "Created",
                        format!("Created container {}", c.name),
                    );
                    shared.emit(
                        &field_path,
                        EventType::Normal,
                        "Started",
                        format!("Started container {}", c.name),
                    );
                }
                let runtime_name = shared.runtime().name();
                let has_startup = kind == Kind::Regular && c.startup_probe.is_some();
                let ready_now =
                    kind == Kind::Regular && !has_startup && c.readiness_probe.is_none();
                let last = last_terminated.clone();
                shared.update(kind, index, |cs| {
                    cs.container_id = Some(format!("{runtime_name}://{id}"));
                    cs.state = Some(status::running(now));
                    cs.restart_count = restart_count;
                    // An adopted instance keeps what the API last showed
                    // (its last state, readiness); probes go on from there.
                    if adopted_at.is_none() {
                        cs.last_state = last.map(status::terminated);
                        cs.started = Some(!has_startup);
                        cs.ready = ready_now;
                    }
                });
                tracing::debug!(pod = %shared.key, container = %c.name, ready = ready_now, "container running");
                let outcome =
                    supervise(&shared, kind, index, c, &id, &field_path, &mut terminate).await;
                let (exit, unhealthy, terminated) = match outcome {
                    Outcome::Exited(s) => (s, false, false),
                    Outcome::Unhealthy(s) => (s, true, false),
                    Outcome::Terminated(s) => (s, false, true),
                };
                Instance {
                    exit,
                    start_error: None,
                    id: Some(id),
                    started: Some(started),
                    unhealthy,
                    terminated,
                }
            }
        };
        let exit = &ended.exit;
        let reason = if ended.start_error.is_some() {
            "StartError"
        } else if exit.oom_killed {
            "OOMKilled"
        } else if exit.code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let runtime_name = shared.runtime().name();
        let terminated = ContainerStateTerminated {
            exit_code: exit.code,
            signal: exit.signal,
            reason: Some(reason.into()),
            message: ended.start_error.clone(),
            started_at: Some(Time(exit.started_at)),
            finished_at: Some(Time(exit.finished_at)),
            container_id: ended.id.as_ref().map(|id| format!("{runtime_name}://{id}")),
        };
        if let Some(id) = &ended.id {
            let _ = shared.runtime().remove(id).await;
        }
        let restart = !ended.terminated
            && match (kind, policy.as_str()) {
                (Kind::Init, _) if exit.code == 0 && !ended.unhealthy => false,
                (_, "Always") => true,
                (_, "OnFailure") => exit.code != 0 || ended.unhealthy,
                _ => false,
            };
        if !restart {
            let t = terminated.clone();
            shared.update(kind, index, |cs| {
                cs.state = Some(status::terminated(t));
                cs.ready = false;
                cs.started = Some(false);
            });
            return if ended.terminated {
                End::Terminated
            } else if exit.code == 0 {
                End::Succeeded
            } else {
                End::Failed
            };
        }
        let delay = backoff.on_exit(ended.started, Instant::now());
        restart_count += 1;
        last_terminated = Some(terminated.clone());
        let pod_desc = shared.key.to_string();
        let name = c.name.clone();
        shared.update(kind, index, |cs| {
            cs.restart_count = restart_count;
            cs.ready = false;
            cs.started = Some(false);
            if delay.is_zero() {
                // Restarting at once: the instance shows as terminated until
                // the next one runs (and becomes lastState then).
                cs.state = Some(status::terminated(terminated));
            } else {
                cs.last_state = Some(status::terminated(terminated));
                cs.state = Some(status::waiting(
                    "CrashLoopBackOff",
                    Some(format!(
                        "back-off {} restarting failed container={name} pod={pod_desc}",
                        fmt_duration(delay)
                    )),
                ));
            }
        });
        if !delay.is_zero() {
            shared.emit(
                &field_path,
                EventType::Warning,
                "BackOff",
                format!(
                    "Back-off restarting failed container {} in pod {}",
                    c.name, shared.key
                ),
            );
        }
        if wait_or_terminated(delay, &mut terminate).await {
            return End::Terminated;
        }
    }
}

/// Go's duration format for the common cases (`10s`, `2m40s`, `500ms`).
fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, s) => format!("{m}m{s}s"),
    }
}
