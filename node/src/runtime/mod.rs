//! The container runtime port: what a pod worker needs from whatever actually
//! runs containers on this machine.
//!
//! A worker resolves everything Kubernetes-level first (env, `$(VAR)`
//! expansion, volumes, limits) and hands the runtime a [`ContainerConfig`] that
//! needs no API access. Implementations:
//!
//! - [`process::ProcessRuntime`]: the container's command as a supervised local
//!   process (process group, cgroup limits, CRI-format log file);
//! - [`sim::SimRuntime`]: a hollow runtime for scale tests;
//! - [`cri::CriRuntime`]: containerd (any CRI runtime) over its gRPC socket: a
//!   sandbox per pod ([`Runtime::create_sandbox`]), images pulled per pull
//!   policy ([`Runtime::ensure_image`]).
//!
//! Rules: a runtime never talks to the API and never decides about restarts;
//! [`Runtime::wait`] may be called any number of times, concurrently with
//! [`Runtime::stop`], and every caller sees the same [`ExitStatus`].

pub mod cgroup;
pub mod cri;
pub mod cri_log;
pub mod process;
pub mod sim;
pub mod usage;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::jiff::Timestamp;

/// Which pod a sandbox or container belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PodKey {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl std::fmt::Display for PodKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // kubelet's format_pod: name_namespace(uid)
        write!(f, "{}_{}({})", self.name, self.namespace, self.uid)
    }
}

/// What a runtime set up for a pod before its first container.
#[derive(Clone, Debug)]
pub struct Sandbox {
    /// The pod's directory on this machine; volumes live under `dir/volumes`.
    pub dir: PathBuf,
    /// The pod's IP (the host's for the process runtime: no network namespace).
    pub ip: String,
}

/// One directory made visible to a container at `container_path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub container_path: String,
    pub host_path: PathBuf,
    pub read_only: bool,
}

/// Limits after quantity parsing; `None` means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub cpu_millis: Option<u64>,
}

/// `imagePullPolicy`, defaulted as the API server does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// The API's default: `Always` for `:latest` or untagged images, else
    /// `IfNotPresent`.
    pub fn resolve(policy: Option<&str>, image: &str) -> Self {
        match policy {
            Some("Always") => Self::Always,
            Some("Never") => Self::Never,
            Some("IfNotPresent") => Self::IfNotPresent,
            _ => {
                let last = image.rsplit('/').next().unwrap_or(image);
                let tagged = last.contains(':') || image.contains('@');
                if !tagged || image.ends_with(":latest") {
                    Self::Always
                } else {
                    Self::IfNotPresent
                }
            }
        }
    }
}

/// What [`Runtime::ensure_image`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageOutcome {
    /// The image was already there (event `Pulled`, "already present").
    Present,
    /// The image was pulled (event `Pulled`, "Successfully pulled").
    Pulled { took: Duration },
}

/// A fully resolved container: nothing left to look up.
#[derive(Clone, Debug)]
pub struct ContainerConfig {
    pub pod: PodKey,
    pub name: String,
    /// The restart count of this instance; names its log file.
    pub attempt: u32,
    pub image: String,
    /// `command` after `$(VAR)` expansion (the image entrypoint when empty,
    /// which only an image-aware runtime knows).
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub mounts: Vec<Mount>,
    pub limits: Limits,
}

/// Opaque, unique per container instance.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContainerId(pub String);

impl std::fmt::Display for ContainerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a container instance ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code; `128 + signal` when a signal ended it (as containerd reports).
    pub code: i32,
    pub signal: Option<i32>,
    /// The kernel's OOM killer ended it (cgroup `oom_kill` counter moved).
    pub oom_killed: bool,
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
}

/// The result of a command run inside a container (exec probes, hooks).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutcome {
    /// `None` when the command timed out (and was killed).
    pub exit_code: Option<i32>,
    /// Combined stdout and stderr, truncated.
    pub output: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The container has no command and this runtime cannot know the image's
    /// entrypoint (kubelet reason `RunContainerError`).
    #[error("container {container:?} has no command: the {runtime} runtime cannot run an image's entrypoint, set `command`")]
    NoCommand {
        container: String,
        runtime: &'static str,
    },
    /// The process could not be started (kubelet: terminated, reason
    /// `StartError`, exit code 128).
    #[error("{0}")]
    Exec(String),
    /// The image is not on the machine and the policy forbids pulling
    /// (kubelet reason `ErrImageNeverPull`).
    #[error("container image {0:?} is not present with pull policy of Never")]
    ImageNeverPull(String),
    #[error("pulling image {image:?}: {message}")]
    ImagePull { image: String, message: String },
    #[error("container {0} not found")]
    NotFound(ContainerId),
    /// A CRI call failed (the `cri` runtime).
    #[error("CRI {step}: {}", source.message())]
    Rpc {
        step: &'static str,
        #[source]
        source: tonic::Status,
    },
    #[error("{step}: {source}")]
    Io {
        step: String,
        #[source]
        source: std::io::Error,
    },
}

impl RuntimeError {
    pub(crate) fn io(step: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            step: step.into(),
            source,
        }
    }
}

/// What runs containers on this machine. See the module doc for the rules.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// A short name for messages (`process`, `sim`, `cri`).
    fn name(&self) -> &'static str;

    /// Set up what a pod's containers share (directory, network). Idempotent.
    async fn create_sandbox(&self, pod: &PodKey) -> Result<Sandbox, RuntimeError>;

    /// Tear down the sandbox and everything under its directory. Logs stay
    /// until [`Runtime::remove_logs`].
    async fn remove_sandbox(&self, pod: &PodKey) -> Result<(), RuntimeError>;

    /// Make the image available per the pull policy.
    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
    ) -> Result<ImageOutcome, RuntimeError>;

    /// Create and start one container instance. On success it is running.
    async fn start(&self, config: ContainerConfig) -> Result<ContainerId, RuntimeError>;

    /// Wait until the instance has exited (returns at once if it has).
    async fn wait(&self, id: &ContainerId) -> Result<ExitStatus, RuntimeError>;

    /// SIGTERM to every process of the container, SIGKILL after `grace`;
    /// returns when it has exited.
    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<ExitStatus, RuntimeError>;

    /// Run a command in the container's context (env, working directory).
    async fn exec(
        &self,
        id: &ContainerId,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError>;

    /// Forget an exited instance (its log file stays).
    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError>;

    /// Where the log of `container`'s instance number `attempt` is (or will
    /// be) written, in CRI log format. The previous instance's file is kept
    /// (for `logs --previous`); older ones are deleted when a new one starts.
    fn log_path(&self, pod: &PodKey, container: &str, attempt: u32) -> PathBuf;

    /// Delete a pod's logs (after the pod object is gone).
    async fn remove_logs(&self, pod: &PodKey) -> Result<(), RuntimeError>;

    /// The working-set memory of a running instance, in bytes, for eviction
    /// ranking; `None` when this runtime cannot tell (counted as 0).
    async fn memory_usage(&self, _id: &ContainerId) -> Option<u64> {
        None
    }

    /// The local storage a pod uses (its directory, volumes and logs), in
    /// bytes, for eviction ranking; `None` when this runtime cannot tell.
    async fn disk_usage(&self, _pod: &PodKey) -> Option<u64> {
        None
    }

    /// Container instances still running from before this agent started
    /// (a restarted agent), supervised again from now on: `wait`, `stop`
    /// and `exec` work on them as on instances this runtime started, and
    /// their output goes on into the same log files. Default: none.
    async fn recover(&self) -> Result<Vec<Recovered>, RuntimeError> {
        Ok(Vec::new())
    }
}

/// A running container instance found by [`Runtime::recover`].
#[derive(Clone, Debug)]
pub struct Recovered {
    pub pod: PodKey,
    pub container: String,
    /// Its restart count (the attempt number its log file is named by).
    pub attempt: u32,
    pub id: ContainerId,
    pub started_at: Timestamp,
}

/// kubelet's log directory layout: `<root>/<ns>_<name>_<uid>/<container>/<attempt>.log`.
pub fn log_path_under(
    root: &std::path::Path,
    pod: &PodKey,
    container: &str,
    attempt: u32,
) -> PathBuf {
    pod_log_dir(root, pod)
        .join(container)
        .join(format!("{attempt}.log"))
}

pub(crate) fn pod_log_dir(root: &std::path::Path, pod: &PodKey) -> PathBuf {
    root.join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_policy_defaults_like_the_api() {
        assert_eq!(PullPolicy::resolve(None, "nginx"), PullPolicy::Always);
        assert_eq!(
            PullPolicy::resolve(None, "nginx:latest"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::resolve(None, "nginx:1.25"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            PullPolicy::resolve(None, "localhost:5000/app"),
            PullPolicy::Always
        );
        assert_eq!(PullPolicy::resolve(Some("Never"), "x:1"), PullPolicy::Never);
    }
}
