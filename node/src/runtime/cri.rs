//! The `cri` runtime: containers run by a CRI runtime (containerd) over its
//! gRPC socket, as the kubelet runs them (`runtime.v1` RuntimeService and
//! ImageService, see `proto/proto/cri/api.proto`).
//!
//! ```text
//!   create_sandbox ─► RunPodSandbox (labels: pod uid/name/namespace,
//!                     log_directory = <root>/logs/<ns>_<name>_<uid>)
//!                     PodSandboxStatus ─► pod IP (the host's when empty;
//!                     host network when the runtime's NetworkReady is false)
//!   ensure_image   ─► ImageStatus, PullImage per imagePullPolicy
//!   start          ─► CreateContainer (log_path <name>/<attempt>.log, env,
//!                     bind mounts, LinuxContainerResources) + StartContainer
//!   wait           ─► ContainerStatus, polled (CRI has no wait; kubelet's
//!                     PLEG relists too)
//!   stop / exec    ─► StopContainer / ExecSync
//!   remove_sandbox ─► StopContainer + RemoveContainer for what is left,
//!                     StopPodSandbox + RemovePodSandbox
//! ```
//!
//! Nothing lives only in this process: sandboxes and containers are found
//! again by their labels (kubelet's `io.kubernetes.*` keys), so a restarted
//! agent reuses a pod's ready sandbox, waits on containers it did not start
//! ([`Runtime::wait`] on any id containerd knows), and tears down what a
//! previous agent left. Volumes stay directories under `<root>/pods/<uid>`
//! (prepared by the worker) and are bind-mounted; containerd writes the
//! CRI-format logs itself, at the paths [`Runtime::log_path`] names.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use balsa_proto::cri;
use balsa_proto::cri::image_service_client::ImageServiceClient;
use balsa_proto::cri::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use super::{
    ContainerConfig, ContainerId, ExecOutcome, ExitStatus, ImageOutcome, PodKey, PullPolicy,
    Runtime, RuntimeError, Sandbox,
};

/// kubelet's label keys; containerd shows them, and they find a pod's
/// sandboxes and containers again.
pub const LABEL_POD_UID: &str = "io.kubernetes.pod.uid";
pub const LABEL_POD_NAME: &str = "io.kubernetes.pod.name";
pub const LABEL_POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const LABEL_CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// How often a running container's status is asked for.
const POLL: Duration = Duration::from_millis(500);
/// kubelet's CFS period (100 ms) and its shares for one CPU.
const CPU_PERIOD_US: i64 = 100_000;
const SHARES_PER_CPU: i64 = 1024;
const MIN_SHARES: i64 = 2;
const EXEC_OUTPUT_LIMIT: usize = 10 * 1024;
/// kubelet's `--runtime-request-timeout` default, for ordinary calls.
const RPC_TIMEOUT: Duration = Duration::from_secs(120);
/// An image pull may take this long (kubelet has no hard deadline; this only
/// keeps a stuck pull from blocking a container for ever).
const PULL_TIMEOUT: Duration = Duration::from_secs(3600);
/// kubelet gives StopContainer at least this long.
const MIN_STOP_GRACE: Duration = Duration::from_secs(2);

/// See the module doc.
#[derive(Clone)]
pub struct CriRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    /// Every call has [`RPC_TIMEOUT`].
    runtime: RuntimeServiceClient<Channel>,
    /// No default deadline: each call sets its own.
    runtime_long: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    images_long: ImageServiceClient<Channel>,
    root: PathBuf,
    host_ip: String,
    /// Sandboxes this agent made or adopted, by pod uid.
    sandboxes: Mutex<HashMap<String, SandboxEntry>>,
    /// One exit watch per container instance waited on.
    exits: Mutex<HashMap<ContainerId, watch::Receiver<Option<ExitStatus>>>>,
}

#[derive(Clone)]
struct SandboxEntry {
    id: String,
    config: cri::PodSandboxConfig,
}

impl CriRuntime {
    /// A runtime talking to the CRI socket at `socket` (connected on first
    /// use), keeping volumes under `root/pods` and logs under `root/logs`.
    /// Pods whose sandbox reports no IP (host network) get `host_ip`.
    pub fn new(
        socket: impl Into<PathBuf>,
        root: impl Into<PathBuf>,
        host_ip: impl Into<String>,
    ) -> Result<Self, RuntimeError> {
        let socket: PathBuf = socket.into();
        // Calls that may take long by design (stopping with a grace period,
        // pulling an image) go on a channel without the default deadline and
        // carry their own.
        let bounded = channel(&socket, Some(RPC_TIMEOUT));
        let unbounded = channel(&socket, None);
        Ok(Self {
            inner: Arc::new(Inner {
                runtime: RuntimeServiceClient::new(bounded.clone()),
                runtime_long: RuntimeServiceClient::new(unbounded.clone()),
                images: ImageServiceClient::new(bounded),
                images_long: ImageServiceClient::new(unbounded),
                root: root.into(),
                host_ip: host_ip.into(),
                sandboxes: Mutex::new(HashMap::new()),
                exits: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The runtime's name and version (`containerd 1.6.20`); also proves the
    /// socket answers.
    pub async fn version(&self) -> Result<String, RuntimeError> {
        let v = self
            .rt()
            .version(cri::VersionRequest {
                version: "v1".into(),
            })
            .await
            .map_err(rpc("Version"))?
            .into_inner();
        Ok(format!("{} {}", v.runtime_name, v.runtime_version))
    }

    fn rt(&self) -> RuntimeServiceClient<Channel> {
        self.inner.runtime.clone()
    }

    fn pod_dir(&self, pod: &PodKey) -> PathBuf {
        self.inner.root.join("pods").join(&pod.uid)
    }

    fn logs_root(&self) -> PathBuf {
        self.inner.root.join("logs")
    }

    /// Whether the runtime can give pods their own network: its
    /// `NetworkReady` condition (false when containerd has no CNI config).
    pub async fn network_ready(&self) -> Result<bool, RuntimeError> {
        let status = self
            .rt()
            .status(cri::StatusRequest { verbose: false })
            .await
            .map_err(rpc("Status"))?
            .into_inner()
            .status
            .unwrap_or_default();
        Ok(status
            .conditions
            .iter()
            .any(|c| c.r#type == "NetworkReady" && c.status))
    }

    fn sandbox_config(&self, pod: &PodKey, host_network: bool) -> cri::PodSandboxConfig {
        let labels = HashMap::from([
            (LABEL_POD_UID.to_string(), pod.uid.clone()),
            (LABEL_POD_NAME.to_string(), pod.name.clone()),
            (LABEL_POD_NAMESPACE.to_string(), pod.namespace.clone()),
        ]);
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: pod.name.clone(),
                uid: pod.uid.clone(),
                namespace: pod.namespace.clone(),
                attempt: 0,
            }),
            // kubelet sets none for a host-network pod: it has the host's
            // UTS namespace (runc refuses to set one there).
            hostname: if host_network {
                String::new()
            } else {
                pod.name.clone()
            },
            log_directory: super::pod_log_dir(&self.logs_root(), pod)
                .display()
                .to_string(),
            labels,
            annotations: HashMap::new(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: String::new(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(cri::NamespaceOption {
                        network: if host_network {
                            cri::NamespaceMode::Node as i32
                        } else {
                            cri::NamespaceMode::Pod as i32
                        },
                        pid: cri::NamespaceMode::Container as i32,
                        ipc: cri::NamespaceMode::Pod as i32,
                    }),
                }),
            }),
        }
    }

    /// The pod's sandboxes containerd knows (ready or not), newest first.
    async fn sandboxes_of(&self, uid: &str) -> Result<Vec<cri::PodSandbox>, RuntimeError> {
        let mut items = self
            .rt()
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    label_selector: HashMap::from([(LABEL_POD_UID.into(), uid.into())]),
                    ..Default::default()
                }),
            })
            .await
            .map_err(rpc("ListPodSandbox"))?
            .into_inner()
            .items;
        items.sort_by_key(|s| std::cmp::Reverse(s.created_at));
        Ok(items)
    }

    async fn sandbox_ip(&self, id: &str) -> Result<String, RuntimeError> {
        let status = self
            .rt()
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            })
            .await
            .map_err(rpc("PodSandboxStatus"))?
            .into_inner()
            .status;
        let ip = status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default();
        Ok(if ip.is_empty() {
            self.inner.host_ip.clone()
        } else {
            ip
        })
    }

    /// The sandbox this pod's containers go into: the one made or adopted
    /// earlier, else a new one.
    async fn sandbox_for(&self, pod: &PodKey) -> Result<SandboxEntry, RuntimeError> {
        if let Some(s) = self.lock_sandboxes().get(&pod.uid).cloned() {
            return Ok(s);
        }
        self.create_sandbox(pod).await?;
        self.lock_sandboxes()
            .get(&pod.uid)
            .cloned()
            .ok_or_else(|| RuntimeError::Exec(format!("no sandbox for pod {pod}")))
    }

    fn lock_sandboxes(&self) -> std::sync::MutexGuard<'_, HashMap<String, SandboxEntry>> {
        self.inner
            .sandboxes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    async fn status(&self, id: &ContainerId) -> Result<cri::ContainerStatus, RuntimeError> {
        let resp = self
            .rt()
            .container_status(cri::ContainerStatusRequest {
                container_id: id.0.clone(),
                verbose: false,
            })
            .await;
        match resp {
            Ok(r) => r
                .into_inner()
                .status
                .ok_or_else(|| RuntimeError::NotFound(id.clone())),
            Err(s) if s.code() == tonic::Code::NotFound => Err(RuntimeError::NotFound(id.clone())),
            Err(s) => Err(rpc("ContainerStatus")(s)),
        }
    }

    /// The exit watch of `id`, started on first use: a task polls the
    /// container's status until it has exited or is gone.
    async fn exit_watch(
        &self,
        id: &ContainerId,
    ) -> Result<watch::Receiver<Option<ExitStatus>>, RuntimeError> {
        if let Some(rx) = self.lock_exits().get(id).cloned() {
            return Ok(rx);
        }
        // Unknown ids are checked first, so waiting on one fails at once.
        let first = self.status(id).await?;
        let mut exits = self.lock_exits();
        if let Some(rx) = exits.get(id).cloned() {
            return Ok(rx);
        }
        let (tx, rx) = watch::channel(exit_of(&first));
        exits.insert(id.clone(), rx.clone());
        drop(exits);
        if rx.borrow().is_none() {
            let this = self.clone();
            let id = id.clone();
            tokio::spawn(async move { this.poll_until_exit(id, tx).await });
        }
        Ok(rx)
    }

    fn lock_exits(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ContainerId, watch::Receiver<Option<ExitStatus>>>> {
        self.inner.exits.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn poll_until_exit(&self, id: ContainerId, tx: watch::Sender<Option<ExitStatus>>) {
        loop {
            if tx.is_closed() && !self.lock_exits().contains_key(&id) {
                return;
            }
            match self.status(&id).await {
                Ok(s) => {
                    if let Some(exit) = exit_of(&s) {
                        tx.send_replace(Some(exit));
                        return;
                    }
                }
                Err(RuntimeError::NotFound(_)) => {
                    // Removed while running (the sandbox went): killed.
                    let now = crate::clock::now();
                    tx.send_replace(Some(ExitStatus {
                        code: 137,
                        signal: Some(9),
                        oom_killed: false,
                        started_at: now,
                        finished_at: now,
                    }));
                    return;
                }
                Err(e) => tracing::debug!(container = %id, error = %e, "container status"),
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Stop and remove every container of sandbox `sandbox_id`.
    async fn remove_containers_of(&self, sandbox_id: &str) -> Result<(), RuntimeError> {
        let containers = self
            .rt()
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    pod_sandbox_id: sandbox_id.into(),
                    ..Default::default()
                }),
            })
            .await
            .map_err(rpc("ListContainers"))?
            .into_inner()
            .containers;
        for c in containers {
            let id = ContainerId(c.id.clone());
            if c.state != cri::ContainerState::ContainerExited as i32 {
                self.rt()
                    .stop_container(cri::StopContainerRequest {
                        container_id: c.id.clone(),
                        timeout: 0,
                    })
                    .await
                    .or_else(not_found_ok)
                    .map_err(rpc("StopContainer"))?;
            }
            self.remove(&id).await?;
        }
        Ok(())
    }

    /// Remove containers of the same pod, name and attempt left by an
    /// earlier agent (containerd reserves the name, so a new one with it
    /// could not be created).
    async fn remove_same_instance(
        &self,
        sandbox_id: &str,
        name: &str,
        attempt: u32,
    ) -> Result<(), RuntimeError> {
        let containers = self
            .rt()
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    pod_sandbox_id: sandbox_id.into(),
                    label_selector: HashMap::from([(LABEL_CONTAINER_NAME.into(), name.into())]),
                    ..Default::default()
                }),
            })
            .await
            .map_err(rpc("ListContainers"))?
            .into_inner()
            .containers;
        for c in containers {
            if c.metadata.as_ref().is_some_and(|m| m.attempt == attempt) {
                let _ = self
                    .rt()
                    .stop_container(cri::StopContainerRequest {
                        container_id: c.id.clone(),
                        timeout: 0,
                    })
                    .await;
                self.remove(&ContainerId(c.id)).await?;
            }
        }
        Ok(())
    }
}

/// A lazily connected channel to the Unix socket at `socket`.
fn channel(socket: &Path, timeout: Option<Duration>) -> Channel {
    // The URI is required by tonic and ignored by the connector.
    let mut endpoint =
        Endpoint::from_static("http://cri.sock").connect_timeout(Duration::from_secs(10));
    if let Some(t) = timeout {
        endpoint = endpoint.timeout(t);
    }
    let path = socket.to_path_buf();
    endpoint.connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(&path).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    }))
}

/// `message` with a deadline (sent to the runtime as `grpc-timeout`).
fn with_deadline<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

/// How an exited container ended, from its CRI status; `None` while it runs.
fn exit_of(s: &cri::ContainerStatus) -> Option<ExitStatus> {
    if s.state != cri::ContainerState::ContainerExited as i32 {
        return None;
    }
    // CRI reports `128 + n` for a signal death without saying it was one;
    // SIGKILL and SIGTERM are the ones a stop or the OOM killer send.
    let signal = match s.exit_code {
        137 => Some(9),
        143 => Some(15),
        _ => None,
    };
    Some(ExitStatus {
        code: s.exit_code,
        signal,
        oom_killed: s.reason == "OOMKilled",
        started_at: timestamp(s.started_at),
        finished_at: timestamp(s.finished_at),
    })
}

fn timestamp(nanos: i64) -> Timestamp {
    Timestamp::from_nanosecond(nanos as i128).unwrap_or_else(|_| crate::clock::now())
}

fn rpc(step: &'static str) -> impl Fn(tonic::Status) -> RuntimeError {
    move |source| RuntimeError::Rpc { step, source }
}

/// Stopping or removing what is already gone succeeded.
fn not_found_ok<T: Default>(s: tonic::Status) -> Result<tonic::Response<T>, tonic::Status> {
    if s.code() == tonic::Code::NotFound {
        Ok(tonic::Response::new(T::default()))
    } else {
        Err(s)
    }
}

/// `LinuxContainerResources` as kubelet computes them from limits (a
/// request defaults to its limit, so shares follow the CPU limit).
fn resources(limits: super::Limits) -> cri::LinuxContainerResources {
    let mut r = cri::LinuxContainerResources::default();
    if let Some(bytes) = limits.memory_bytes {
        r.memory_limit_in_bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
    }
    match limits.cpu_millis {
        Some(milli) => {
            let milli = i64::try_from(milli).unwrap_or(i64::MAX / CPU_PERIOD_US);
            r.cpu_period = CPU_PERIOD_US;
            // kubelet's minimum quota is 1 ms.
            r.cpu_quota = (milli * CPU_PERIOD_US / 1000).max(1000);
            r.cpu_shares = (milli * SHARES_PER_CPU / 1000).max(MIN_SHARES);
        }
        None => r.cpu_shares = MIN_SHARES,
    }
    r
}

fn is_not_found(e: &tonic::Status) -> bool {
    e.code() == tonic::Code::NotFound
}

#[async_trait]
impl Runtime for CriRuntime {
    fn name(&self) -> &'static str {
        "cri"
    }

    async fn create_sandbox(&self, pod: &PodKey) -> Result<Sandbox, RuntimeError> {
        let dir = self.pod_dir(pod);
        tokio::fs::create_dir_all(dir.join("volumes"))
            .await
            .map_err(|e| {
                RuntimeError::io(format!("creating pod directory {}", dir.display()), e)
            })?;
        let log_dir = super::pod_log_dir(&self.logs_root(), pod);
        tokio::fs::create_dir_all(&log_dir).await.map_err(|e| {
            RuntimeError::io(format!("creating log directory {}", log_dir.display()), e)
        })?;
        let known = self.lock_sandboxes().get(&pod.uid).cloned();
        let ready = cri::PodSandboxState::SandboxReady as i32;
        let entry = match known {
            Some(s) => s,
            None => {
                // Without a pod network (no CNI config) pods share the
                // host's, as on the process runtime, rather than never start.
                let host_network = !self.network_ready().await?;
                if host_network {
                    tracing::warn!(pod = %pod, "the CRI runtime reports no pod network: the pod uses the host's");
                }
                let config = self.sandbox_config(pod, host_network);
                let existing = self.sandboxes_of(&pod.uid).await?;
                let id = match existing.iter().find(|s| s.state == ready) {
                    // An earlier agent's sandbox for this pod: keep it.
                    Some(s) => s.id.clone(),
                    None => {
                        for s in &existing {
                            self.remove_sandbox_by_id(&s.id).await?;
                        }
                        self.rt()
                            .run_pod_sandbox(cri::RunPodSandboxRequest {
                                config: Some(config.clone()),
                                runtime_handler: String::new(),
                            })
                            .await
                            .map_err(rpc("RunPodSandbox"))?
                            .into_inner()
                            .pod_sandbox_id
                    }
                };
                SandboxEntry { id, config }
            }
        };
        let id = entry.id.clone();
        self.lock_sandboxes().insert(pod.uid.clone(), entry);
        let ip = self.sandbox_ip(&id).await?;
        Ok(Sandbox { dir, ip })
    }

    async fn remove_sandbox(&self, pod: &PodKey) -> Result<(), RuntimeError> {
        self.lock_sandboxes().remove(&pod.uid);
        for s in self.sandboxes_of(&pod.uid).await? {
            self.remove_sandbox_by_id(&s.id).await?;
        }
        let dir = self.pod_dir(pod);
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RuntimeError::io(
                format!("removing pod directory {}", dir.display()),
                e,
            )),
            _ => Ok(()),
        }
    }

    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
    ) -> Result<ImageOutcome, RuntimeError> {
        let spec = || {
            Some(cri::ImageSpec {
                image: image.to_string(),
            })
        };
        let present = self
            .inner
            .images
            .clone()
            .image_status(cri::ImageStatusRequest {
                image: spec(),
                verbose: false,
            })
            .await
            .map_err(rpc("ImageStatus"))?
            .into_inner()
            .image
            .is_some();
        match (policy, present) {
            (PullPolicy::Never, false) => return Err(RuntimeError::ImageNeverPull(image.into())),
            (PullPolicy::Never | PullPolicy::IfNotPresent, true) => {
                return Ok(ImageOutcome::Present)
            }
            _ => {}
        }
        let began = Instant::now();
        self.inner
            .images_long
            .clone()
            .pull_image(with_deadline(
                cri::PullImageRequest {
                    image: spec(),
                    sandbox_config: None,
                },
                PULL_TIMEOUT,
            ))
            .await
            .map_err(|s| RuntimeError::ImagePull {
                image: image.into(),
                message: s.message().to_string(),
            })?;
        Ok(ImageOutcome::Pulled {
            took: began.elapsed(),
        })
    }

    async fn start(&self, c: ContainerConfig) -> Result<ContainerId, RuntimeError> {
        let sandbox = self.sandbox_for(&c.pod).await?;
        self.remove_same_instance(&sandbox.id, &c.name, c.attempt)
            .await?;
        let log = self.log_path(&c.pod, &c.name, c.attempt);
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| RuntimeError::io(format!("creating {}", dir.display()), e))?;
            super::cri_log::prune(dir, c.attempt.saturating_sub(1));
        }
        let mut labels = sandbox.config.labels.clone();
        labels.insert(LABEL_CONTAINER_NAME.into(), c.name.clone());
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: c.name.clone(),
                attempt: c.attempt,
            }),
            image: Some(cri::ImageSpec {
                image: c.image.clone(),
            }),
            command: c.command.clone(),
            args: c.args.clone(),
            working_dir: c.working_dir.clone().unwrap_or_default(),
            envs: c
                .env
                .iter()
                .map(|(k, v)| cri::KeyValue {
                    key: k.clone(),
                    value: v.clone().into(),
                })
                .collect(),
            mounts: c
                .mounts
                .iter()
                .map(|m| cri::Mount {
                    container_path: m.container_path.clone(),
                    host_path: m.host_path.display().to_string(),
                    readonly: m.read_only,
                })
                .collect(),
            labels,
            annotations: HashMap::new(),
            log_path: format!("{}/{}.log", c.name, c.attempt),
            linux: Some(cri::LinuxContainerConfig {
                resources: Some(resources(c.limits)),
            }),
        };
        let id = self
            .rt()
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox.id.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox.config.clone()),
            })
            .await
            .map_err(rpc("CreateContainer"))?
            .into_inner()
            .container_id;
        let id = ContainerId(id);
        if let Err(e) = self
            .rt()
            .start_container(cri::StartContainerRequest {
                container_id: id.0.clone(),
            })
            .await
        {
            // kubelet: the instance ended with StartError (runc's message).
            let _ = self.remove(&id).await;
            return Err(RuntimeError::Exec(e.message().to_string()));
        }
        self.exit_watch(&id).await?;
        Ok(id)
    }

    async fn wait(&self, id: &ContainerId) -> Result<ExitStatus, RuntimeError> {
        let mut rx = self.exit_watch(id).await?;
        let exit = rx
            .wait_for(|s| s.is_some())
            .await
            .map_err(|_| RuntimeError::NotFound(id.clone()))?
            .clone();
        exit.ok_or_else(|| RuntimeError::NotFound(id.clone()))
    }

    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<ExitStatus, RuntimeError> {
        let rx = self.exit_watch(id).await?;
        if let Some(exit) = rx.borrow().clone() {
            return Ok(exit);
        }
        let timeout = grace.max(MIN_STOP_GRACE).as_secs_f64().ceil() as i64;
        self.inner
            .runtime_long
            .clone()
            .stop_container(with_deadline(
                cri::StopContainerRequest {
                    container_id: id.0.clone(),
                    timeout,
                },
                Duration::from_secs(timeout as u64) + RPC_TIMEOUT,
            ))
            .await
            .or_else(not_found_ok)
            .map_err(rpc("StopContainer"))?;
        // The poller would see it within POLL; asking now is quicker.
        match self.status(id).await {
            Ok(s) => match exit_of(&s) {
                Some(exit) => Ok(exit),
                None => self.wait(id).await,
            },
            Err(_) => self.wait(id).await,
        }
    }

    async fn exec(
        &self,
        id: &ContainerId,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        if command.is_empty() {
            return Err(RuntimeError::Exec("exec: empty command".into()));
        }
        let secs = timeout.as_secs_f64().ceil().max(1.0) as i64;
        let mut client = self.inner.runtime_long.clone();
        let call = client.exec_sync(with_deadline(
            cri::ExecSyncRequest {
                container_id: id.0.clone(),
                cmd: command.to_vec(),
                timeout: secs,
            },
            timeout + RPC_TIMEOUT,
        ));
        // containerd enforces the timeout; the local one only guards
        // against a runtime that never answers.
        let resp = match tokio::time::timeout(timeout + Duration::from_secs(5), call).await {
            Err(_) => {
                return Ok(ExecOutcome {
                    exit_code: None,
                    output: String::new(),
                })
            }
            Ok(Err(s))
                if s.code() == tonic::Code::DeadlineExceeded || s.message().contains("timeout") =>
            {
                return Ok(ExecOutcome {
                    exit_code: None,
                    output: String::new(),
                })
            }
            Ok(Err(s)) if is_not_found(&s) => return Err(RuntimeError::NotFound(id.clone())),
            Ok(Err(s)) => return Err(RuntimeError::Exec(s.message().to_string())),
            Ok(Ok(r)) => r.into_inner(),
        };
        let mut output = resp.stdout.to_vec();
        output.extend_from_slice(&resp.stderr);
        output.truncate(EXEC_OUTPUT_LIMIT);
        Ok(ExecOutcome {
            exit_code: Some(resp.exit_code),
            output: String::from_utf8_lossy(&output).into_owned(),
        })
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.lock_exits().remove(id);
        self.rt()
            .remove_container(cri::RemoveContainerRequest {
                container_id: id.0.clone(),
            })
            .await
            .or_else(not_found_ok)
            .map_err(rpc("RemoveContainer"))?;
        Ok(())
    }

    fn log_path(&self, pod: &PodKey, container: &str, attempt: u32) -> PathBuf {
        super::log_path_under(&self.logs_root(), pod, container, attempt)
    }

    async fn remove_logs(&self, pod: &PodKey) -> Result<(), RuntimeError> {
        let dir = super::pod_log_dir(&self.logs_root(), pod);
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(RuntimeError::io(
                format!("removing logs {}", dir.display()),
                e,
            )),
            _ => Ok(()),
        }
    }
}

impl CriRuntime {
    /// Containers first (containerd refuses to remove a sandbox that still
    /// has some), then the sandbox.
    async fn remove_sandbox_by_id(&self, id: &str) -> Result<(), RuntimeError> {
        self.remove_containers_of(id).await?;
        self.rt()
            .stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .or_else(not_found_ok)
            .map_err(rpc("StopPodSandbox"))?;
        self.rt()
            .remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .or_else(not_found_ok)
            .map_err(rpc("RemovePodSandbox"))?;
        Ok(())
    }
}

/// containerd's socket unless configured otherwise; `balsa up` and
/// `balsa node` use it when no `--cri-socket` is given.
pub const DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";

/// Whether a Unix socket at `path` accepts connections.
pub fn socket_answers(path: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(path).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_become_kubelet_resources() {
        let r = resources(super::super::Limits {
            memory_bytes: Some(64 << 20),
            cpu_millis: Some(250),
        });
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.cpu_quota, 25_000);
        assert_eq!(r.cpu_shares, 256);
        let r = resources(Default::default());
        assert_eq!(
            (r.memory_limit_in_bytes, r.cpu_quota, r.cpu_shares),
            (0, 0, 2)
        );
        // kubelet's floor: 1 ms of quota.
        assert_eq!(
            resources(super::super::Limits {
                memory_bytes: None,
                cpu_millis: Some(1),
            })
            .cpu_quota,
            1000
        );
    }

    #[test]
    fn exit_status_from_cri() {
        let s = cri::ContainerStatus {
            state: cri::ContainerState::ContainerExited as i32,
            exit_code: 137,
            reason: "OOMKilled".into(),
            started_at: 1_700_000_000_000_000_000,
            finished_at: 1_700_000_001_000_000_000,
            ..Default::default()
        };
        let e = exit_of(&s).expect("exited");
        assert!(e.oom_killed);
        assert_eq!((e.code, e.signal), (137, Some(9)));
        assert_eq!(e.finished_at.as_second() - e.started_at.as_second(), 1);
        let running = cri::ContainerStatus {
            state: cri::ContainerState::ContainerRunning as i32,
            ..Default::default()
        };
        assert!(exit_of(&running).is_none());
    }
}
