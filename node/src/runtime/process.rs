//! The process runtime: each container's command runs as a supervised local
//! process. No images, no namespaces; what it does give a container:
//!
//! - **Its own process group** (`setpgid(0, 0)` at spawn), so a stop signals
//!   the command and every child it made; when the main process exits, the
//!   rest of its group (and of its cgroup) is SIGKILLed, as a container's init
//!   dying takes the container with it.
//! - **A directory layout instead of a root filesystem.** Per container:
//!   `<root>/pods/<pod uid>/containers/<name>/root/`. Every volume mount
//!   becomes a symlink at `root/<mountPath>` pointing at the volume's real
//!   directory, the working directory is `root/<workingDir>` (or `root/`), and
//!   the command gets `BALSA_CONTAINER_ROOT` naming that directory. So a
//!   command that uses paths *relative* to its working directory, or
//!   `$(BALSA_CONTAINER_ROOT)/data/...`, sees its mounts; absolute paths such as
//!   `/data` are the host's (binding them would need a mount namespace, which
//!   the `cri` runtime provides).
//! - **A clean environment**: only the container's env, plus `PATH` (the
//!   usual default) and `HOSTNAME` (the pod name) unless the pod sets them.
//! - **Limits** through [`super::cgroup`] when a writable hierarchy exists:
//!   the process joins its cgroup before `exec`, and the `oom_kill` counter
//!   decides `OOMKilled`.
//! - **Logs** in CRI format at kubelet's path layout (see [`super::cri_log`]).
//! - **A life beyond the agent's.** stdout and stderr are FIFOs, not pipes
//!   (`<root>/pods/<uid>/run/<id>/`): the container holds each open for
//!   reading and writing, so its writes never meet a closed pipe when the
//!   agent dies (they wait, 64 KiB later, for a reader), and the agent reads
//!   them. Beside them `state.json` (pid, its start time, attempt, env,
//!   working directory) lets a restarted agent find the instance again
//!   ([`Runtime::recover`]), read on into the same log file and watch for
//!   its exit. Such an instance is not the agent's child: its exit code is
//!   unknown (reported as 137, kubelet's code for a container whose status
//!   was lost, or 128+signal after a stop).
//!
//! The executable is looked up (in the container's `PATH`) before anything is
//! spawned, so a missing one is reported as a start error with runc's words,
//! not as exit code 127 of a wrapper.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::jiff::Timestamp;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::stat::Mode;
use nix::unistd::Pid;
use serde_json::json;
use tokio::net::unix::pipe;
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

use super::cgroup::{Cgroups, Leaf};
use super::cri_log::{self, Stream};
use super::{
    ContainerConfig, ContainerId, ExecOutcome, ExitStatus, ImageOutcome, PodKey, PullPolicy,
    Recovered, Runtime, RuntimeError, Sandbox,
};

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Joins the cgroups named by its first arguments, then becomes the command.
const CGROUP_WRAPPER: &str = r#"n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 126; shift; n=$((n-1)); done; exec "$@""#;
/// How long output may keep flowing after the main process exited (from
/// grandchildren that escaped the process group) before the log is closed.
const DRAIN: Duration = Duration::from_secs(2);
const EXEC_OUTPUT_LIMIT: usize = 10 * 1024;
/// How often a recovered instance (not our child: no SIGCHLD) is checked.
const POLL_EXIT: Duration = Duration::from_millis(250);
/// The exit code of a recovered instance that ended on its own (kubelet's
/// for a container whose status was lost).
const UNKNOWN_EXIT: i32 = 137;

/// See the module doc.
#[derive(Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    host_ip: String,
    cgroups: Option<Cgroups>,
    containers: Mutex<HashMap<ContainerId, Arc<Entry>>>,
    seq: AtomicU64,
}

struct Entry {
    pod_uid: String,
    pgid: Pid,
    /// The last signal `stop` sent (0: none): a recovered instance's exit
    /// code when it ends after one.
    signalled: Arc<AtomicI32>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    exit: watch::Receiver<Option<ExitStatus>>,
}

impl ProcessRuntime {
    /// A runtime keeping pods under `root/pods` and logs under `root/logs`;
    /// pods get `host_ip` as their IP. Uses cgroups when it can.
    pub fn new(root: impl Into<PathBuf>, host_ip: impl Into<String>) -> Self {
        static INSTANCE: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "balsa-node-{}-{}",
            std::process::id(),
            INSTANCE.fetch_add(1, Ordering::Relaxed)
        );
        let cgroups = Cgroups::detect(&name);
        match &cgroups {
            Some(c) => tracing::debug!(cgroups = ?c, "process runtime: cgroup limits enforced"),
            None => tracing::info!(
                "process runtime: no writable cgroup hierarchy, limits are not enforced"
            ),
        }
        Self::with_cgroups(root, host_ip, cgroups)
    }

    /// As [`ProcessRuntime::new`] with the cgroup choice made by the caller.
    pub fn with_cgroups(
        root: impl Into<PathBuf>,
        host_ip: impl Into<String>,
        cgroups: Option<Cgroups>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                root: root.into(),
                host_ip: host_ip.into(),
                cgroups,
                containers: Mutex::new(HashMap::new()),
                // Ids stay unique across agent restarts (recovered instances
                // keep theirs).
                seq: AtomicU64::new(crate::clock::now().as_millisecond().max(0) as u64),
            }),
        }
    }

    /// Whether memory/CPU limits are enforced (and OOM kills detected).
    pub fn enforces_limits(&self) -> bool {
        self.inner.cgroups.is_some()
    }

    fn pod_dir(&self, pod: &PodKey) -> PathBuf {
        self.inner.root.join("pods").join(&pod.uid)
    }

    /// An instance's FIFOs and `state.json`.
    fn run_dir(&self, pod_uid: &str, id: &ContainerId) -> PathBuf {
        self.inner
            .root
            .join("pods")
            .join(pod_uid)
            .join("run")
            .join(&id.0)
    }

    fn logs_root(&self) -> PathBuf {
        self.inner.root.join("logs")
    }

    fn entry(&self, id: &ContainerId) -> Result<Arc<Entry>, RuntimeError> {
        self.inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| RuntimeError::NotFound(id.clone()))
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Best effort: the parent groups are empty once every container exited.
        match &self.cgroups {
            Some(Cgroups::V2 { parent }) => {
                let _ = std::fs::remove_dir(parent);
            }
            Some(Cgroups::V1 { memory, cpu }) => {
                let _ = std::fs::remove_dir(memory);
                if let Some(cpu) = cpu {
                    let _ = std::fs::remove_dir(cpu);
                }
            }
            None => {}
        }
    }
}

/// Find `program` as `execve` would through `PATH`; the error is runc's.
fn resolve_executable(
    program: &str,
    env: &[(String, String)],
    cwd: &Path,
) -> Result<PathBuf, String> {
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let path = cwd.join(program);
        return match std::fs::metadata(&path) {
            Err(e) => Err(format!(
                "exec: {program:?}: stat {program}: {}",
                describe_io(&e)
            )),
            Ok(_) if !executable(&path) => Err(format!("exec: {program:?}: permission denied")),
            Ok(_) => Ok(path),
        };
    }
    let path_var = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_PATH);
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| cwd.join(d).join(program))
        .find(|p| executable(p))
        .ok_or_else(|| format!("exec: {program:?}: executable file not found in $PATH"))
}

fn describe_io(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn exit_code(status: std::process::ExitStatus) -> (i32, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(sig)) => (128 + sig, Some(sig)),
        (None, None) => (-1, None),
    }
}

/// Replace whatever is at `link` with a symlink to `target`.
fn place_symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    if let Some(parent) = link.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(link) {
        if meta.is_dir() {
            std::fs::remove_dir(link)?;
        } else {
            std::fs::remove_file(link)?;
        }
    }
    std::os::unix::fs::symlink(target, link)
}

/// How an instance's main process ended: `(code, signal)`.
type Exit = std::pin::Pin<Box<dyn std::future::Future<Output = (i32, Option<i32>)> + Send>>;

/// Owns one running instance: copies its output to the log, waits for its
/// main process (`exit`), kills what it left behind, then publishes how it
/// ended.
async fn supervise(
    exit: Exit,
    outputs: Vec<(pipe::Receiver, Stream)>,
    pgid: Pid,
    leaf: Option<Leaf>,
    log: PathBuf,
    started_at: Timestamp,
    done: watch::Sender<Option<ExitStatus>>,
) {
    let (records, rx) = mpsc::channel(256);
    let writer = tokio::spawn(cri_log::write_file(log.clone(), rx));
    let pumps: Vec<_> = outputs
        .into_iter()
        .map(|(reader, stream)| tokio::spawn(cri_log::pump(reader, stream, records.clone())))
        .collect();
    drop(records);
    let (code, signal) = exit.await;
    let finished_at = crate::clock::now();
    let _ = killpg(pgid, Signal::SIGKILL);
    if let Some(leaf) = &leaf {
        for pid in leaf.pids() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    for pump in pumps {
        let abort = pump.abort_handle();
        if tokio::time::timeout(DRAIN, pump).await.is_err() {
            abort.abort();
        }
    }
    match tokio::time::timeout(DRAIN, writer).await {
        Ok(Ok(Err(e))) => tracing::warn!(log = %log.display(), error = %e, "writing container log"),
        Err(_) => tracing::warn!(log = %log.display(), "container log writer did not finish"),
        _ => {}
    }
    let oom_killed = leaf.as_ref().is_some_and(|l| l.oom_kills() > 0);
    if let Some(leaf) = &leaf {
        leaf.remove().await;
    }
    let _ = done.send(Some(ExitStatus {
        code,
        signal,
        oom_killed,
        started_at,
        finished_at,
    }));
}

/// A process's start time (`/proc/PID/stat` field 22, in clock ticks since
/// boot): with the pid, it names one process (pids are reused).
fn proc_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); a zombie has exited.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Waits until the process `pid` that started at `start_time` is gone.
async fn gone(pid: i32, start_time: u64) {
    while proc_start_time(pid) == Some(start_time) {
        tokio::time::sleep(POLL_EXIT).await;
    }
}

/// Opens the agent's (read-only) end of an instance's output FIFO. Only
/// once the container holds its end: a FIFO without writers reads as EOF.
fn open_output(path: &Path) -> Result<pipe::Receiver, RuntimeError> {
    pipe::OpenOptions::new()
        .open_receiver(path)
        .map_err(|e| RuntimeError::io(format!("opening {}", path.display()), e))
}

async fn wait_exit(mut rx: watch::Receiver<Option<ExitStatus>>) -> Option<ExitStatus> {
    rx.wait_for(|s| s.is_some())
        .await
        .ok()
        .and_then(|s| s.clone())
}

/// `state.json` in `run`, replaced atomically; readable by the agent only
/// (it holds the container's environment).
fn write_state(run: &Path, state: &serde_json::Value) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = run.join("state.json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(state.to_string().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(tmp, run.join("state.json"))
}

impl ProcessRuntime {
    /// One instance from its run directory, if its process still runs: its
    /// output is read again and its exit watched.
    fn recover_one(&self, run: &Path) -> Option<Recovered> {
        let text = std::fs::read_to_string(run.join("state.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let s = |k: &str| v[k].as_str().map(str::to_string);
        let pid = i32::try_from(v["pid"].as_i64()?).ok()?;
        let start_time = v["startTime"].as_u64()?;
        if proc_start_time(pid) != Some(start_time) {
            return None;
        }
        let pod = PodKey {
            namespace: s("namespace")?,
            name: s("name")?,
            uid: s("uid")?,
        };
        let id = ContainerId(s("id")?);
        let started_at: Timestamp = s("startedAt")?.parse().ok()?;
        let env: Vec<(String, String)> = serde_json::from_value(v["env"].clone()).ok()?;
        let container = s("container")?;
        let attempt = u32::try_from(v["attempt"].as_u64()?).ok()?;
        let log = PathBuf::from(s("log")?);
        let cwd = PathBuf::from(s("cwd")?);
        let outputs = vec![
            (open_output(&run.join("stdout")).ok()?, Stream::Stdout),
            (open_output(&run.join("stderr")).ok()?, Stream::Stderr),
        ];
        let pgid = Pid::from_raw(pid);
        let signalled = Arc::new(AtomicI32::new(0));
        let sent = signalled.clone();
        let exit: Exit = Box::pin(async move {
            gone(pid, start_time).await;
            match sent.load(Ordering::Relaxed) {
                0 => (UNKNOWN_EXIT, None),
                sig => (128 + sig, Some(sig)),
            }
        });
        let (done, exit_rx) = watch::channel(None);
        tokio::spawn(supervise(exit, outputs, pgid, None, log, started_at, done));
        let entry = Entry {
            pod_uid: pod.uid.clone(),
            pgid,
            signalled,
            env,
            cwd,
            exit: exit_rx,
        };
        self.inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), Arc::new(entry));
        tracing::info!(container = %id, pid, "recovered a running container");
        Some(Recovered {
            pod,
            container,
            attempt,
            id,
            started_at,
        })
    }
}

#[async_trait]
impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    async fn create_sandbox(&self, pod: &PodKey) -> Result<Sandbox, RuntimeError> {
        let dir = self.pod_dir(pod);
        tokio::fs::create_dir_all(dir.join("volumes"))
            .await
            .map_err(|e| {
                RuntimeError::io(format!("creating pod directory {}", dir.display()), e)
            })?;
        Ok(Sandbox {
            dir,
            ip: self.inner.host_ip.clone(),
        })
    }

    async fn remove_sandbox(&self, pod: &PodKey) -> Result<(), RuntimeError> {
        let leftovers: Vec<Arc<Entry>> = {
            let mut map = self
                .inner
                .containers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let ids: Vec<ContainerId> = map
                .iter()
                .filter(|(_, e)| e.pod_uid == pod.uid)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| map.remove(id)).collect()
        };
        for entry in leftovers {
            if entry.exit.borrow().is_none() {
                let _ = killpg(entry.pgid, Signal::SIGKILL);
                wait_exit(entry.exit.clone()).await;
            }
        }
        // remove_dir_all does not follow symlinks: mounts' targets survive.
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
        _image: &str,
        _policy: PullPolicy,
    ) -> Result<ImageOutcome, RuntimeError> {
        // There are no images: the command runs from the host.
        Ok(ImageOutcome::Present)
    }

    async fn start(&self, c: ContainerConfig) -> Result<ContainerId, RuntimeError> {
        if c.command.is_empty() {
            return Err(RuntimeError::NoCommand {
                container: c.name.clone(),
                runtime: self.name(),
            });
        }
        let root = self
            .pod_dir(&c.pod)
            .join("containers")
            .join(&c.name)
            .join("root");
        let io = |step: String| move |e| RuntimeError::io(step, e);
        std::fs::create_dir_all(&root).map_err(io(format!("creating {}", root.display())))?;
        for m in &c.mounts {
            let link = root.join(m.container_path.trim_start_matches('/'));
            place_symlink(&m.host_path, &link).map_err(io(format!(
                "mounting {} at {}",
                m.host_path.display(),
                link.display()
            )))?;
        }
        let cwd = match &c.working_dir {
            Some(w) if !w.is_empty() => root.join(w.trim_start_matches('/')),
            _ => root.clone(),
        };
        std::fs::create_dir_all(&cwd).map_err(io(format!("creating {}", cwd.display())))?;

        let mut env = c.env.clone();
        for (key, value) in [
            ("PATH", DEFAULT_PATH.to_string()),
            ("HOSTNAME", c.pod.name.clone()),
        ] {
            if !env.iter().any(|(k, _)| k == key) {
                env.push((key.into(), value));
            }
        }
        env.push(("BALSA_CONTAINER_ROOT".into(), root.display().to_string()));

        let argv: Vec<&String> = c.command.iter().chain(&c.args).collect();
        let program = resolve_executable(argv[0], &env, &cwd)
            .map_err(|e| RuntimeError::Exec(format!("unable to start container process: {e}")))?;

        let log = self.log_path(&c.pod, &c.name, c.attempt);
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
            cri_log::prune(dir, c.attempt.saturating_sub(1));
        }

        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        let id = ContainerId(format!("{}-{}-{}-{seq}", c.pod.uid, c.name, c.attempt));
        let run = self.run_dir(&c.pod.uid, &id);
        std::fs::create_dir_all(&run).map_err(io(format!("creating {}", run.display())))?;
        let fifos = [run.join("stdout"), run.join("stderr")];
        let mut ends = Vec::new();
        for fifo in &fifos {
            nix::unistd::mkfifo(fifo, Mode::S_IRUSR | Mode::S_IWUSR)
                .map_err(|e| RuntimeError::io(format!("creating {}", fifo.display()), e.into()))?;
            // Read-write: the container is a reader too, so a write never
            // fails for want of one (the agent may be gone).
            let end = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(fifo)
                .map_err(io(format!("opening {}", fifo.display())))?;
            ends.push(end);
        }
        // The child gets copies; ours stay open until the agent's read ends
        // are: a FIFO that nobody holds open loses what is buffered in it
        // (a quick command may have written and exited by then).
        let child_end = |i: usize| {
            ends[i]
                .try_clone()
                .map_err(io(format!("duplicating {}", fifos[i].display())))
        };
        let (stdout_end, stderr_end) = (child_end(0)?, child_end(1)?);
        let leaf = match (&self.inner.cgroups, c.limits == Default::default()) {
            (Some(cgroups), false) => Some(
                cgroups
                    .create(&id.0, c.limits)
                    .map_err(io(format!("creating cgroup for {id}")))?,
            ),
            _ => None,
        };
        let mut cmd = match &leaf {
            Some(leaf) => {
                let procs = leaf.procs_files();
                let mut cmd = Command::new("/bin/sh");
                cmd.arg("-c")
                    .arg(CGROUP_WRAPPER)
                    .arg("sh")
                    .arg(procs.len().to_string())
                    .args(procs)
                    .arg(&program);
                cmd
            }
            None => {
                let mut cmd = Command::new(&program);
                cmd.arg0(argv[0]);
                cmd
            }
        };
        cmd.args(&argv[1..])
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .current_dir(&cwd)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout_end))
            .stderr(Stdio::from(stderr_end))
            .kill_on_drop(false);
        let spawned = cmd.spawn();
        // Our copies of the write ends go: the output ends when the
        // container's processes have all closed theirs.
        drop(cmd);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                if let Some(leaf) = &leaf {
                    leaf.remove().await;
                }
                return Err(RuntimeError::Exec(format!(
                    "unable to start container process: exec: {:?}: {}",
                    argv[0],
                    describe_io(&e)
                )));
            }
        };
        let Some(pid) = child.id() else {
            return Err(RuntimeError::Exec(
                "process exited before it was tracked".into(),
            ));
        };
        let pgid = Pid::from_raw(pid as i32);
        let started_at = crate::clock::now();
        let outputs = match (open_output(&fifos[0]), open_output(&fifos[1])) {
            (Ok(out), Ok(err)) => {
                drop(ends);
                vec![(out, Stream::Stdout), (err, Stream::Stderr)]
            }
            (Err(e), _) | (_, Err(e)) => {
                let _ = killpg(pgid, Signal::SIGKILL);
                let _ = child.wait().await;
                return Err(e);
            }
        };
        let state = json!({
            "namespace": c.pod.namespace, "name": c.pod.name, "uid": c.pod.uid,
            "container": c.name, "attempt": c.attempt, "id": id.0,
            "pid": pid, "startTime": proc_start_time(pid as i32),
            "startedAt": started_at.to_string(), "env": env, "cwd": cwd, "log": log,
        });
        if let Err(e) = write_state(&run, &state) {
            tracing::warn!(container = %id, error = %e, "writing container state; an agent restart will not find it");
        }
        let exit: Exit = Box::pin(async move {
            match child.wait().await {
                Ok(status) => exit_code(status),
                Err(e) => {
                    tracing::warn!(error = %e, "waiting for container process");
                    (-1, None)
                }
            }
        });
        let (done, exit_rx) = watch::channel(None);
        tokio::spawn(supervise(exit, outputs, pgid, leaf, log, started_at, done));
        let entry = Entry {
            pod_uid: c.pod.uid.clone(),
            pgid,
            signalled: Arc::new(AtomicI32::new(0)),
            env,
            cwd,
            exit: exit_rx,
        };
        self.inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), Arc::new(entry));
        Ok(id)
    }

    async fn wait(&self, id: &ContainerId) -> Result<ExitStatus, RuntimeError> {
        let entry = self.entry(id)?;
        wait_exit(entry.exit.clone())
            .await
            .ok_or_else(|| RuntimeError::NotFound(id.clone()))
    }

    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<ExitStatus, RuntimeError> {
        let entry = self.entry(id)?;
        if let Some(status) = entry.exit.borrow().clone() {
            return Ok(status);
        }
        entry
            .signalled
            .store(Signal::SIGTERM as i32, Ordering::Relaxed);
        let _ = killpg(entry.pgid, Signal::SIGTERM);
        let exited = match tokio::time::timeout(grace, wait_exit(entry.exit.clone())).await {
            Ok(status) => status,
            Err(_) => {
                entry
                    .signalled
                    .store(Signal::SIGKILL as i32, Ordering::Relaxed);
                let _ = killpg(entry.pgid, Signal::SIGKILL);
                wait_exit(entry.exit.clone()).await
            }
        };
        exited.ok_or_else(|| RuntimeError::NotFound(id.clone()))
    }

    async fn exec(
        &self,
        id: &ContainerId,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        let entry = self.entry(id)?;
        let Some(first) = command.first() else {
            return Err(RuntimeError::Exec("exec: empty command".into()));
        };
        let program =
            resolve_executable(first, &entry.env, &entry.cwd).map_err(RuntimeError::Exec)?;
        let child = Command::new(program)
            .arg0(first)
            .args(&command[1..])
            .env_clear()
            .envs(entry.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&entry.cwd)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RuntimeError::Exec(format!("exec: {first:?}: {}", describe_io(&e))))?;
        let pgid = child.id().map(|p| Pid::from_raw(p as i32));
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => {
                let mut output = out.stdout;
                output.extend_from_slice(&out.stderr);
                output.truncate(EXEC_OUTPUT_LIMIT);
                Ok(ExecOutcome {
                    exit_code: Some(exit_code(out.status).0),
                    output: String::from_utf8_lossy(&output).into_owned(),
                })
            }
            Ok(Err(e)) => Err(RuntimeError::io("waiting for exec", e)),
            Err(_) => {
                if let Some(pgid) = pgid {
                    let _ = killpg(pgid, Signal::SIGKILL);
                }
                Ok(ExecOutcome {
                    exit_code: None,
                    output: String::new(),
                })
            }
        }
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let entry = self
            .inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if let Some(entry) = entry {
            let _ = tokio::fs::remove_dir_all(self.run_dir(&entry.pod_uid, id)).await;
        }
        Ok(())
    }

    async fn recover(&self) -> Result<Vec<Recovered>, RuntimeError> {
        let mut found = Vec::new();
        let pods = self.inner.root.join("pods");
        let Ok(pod_dirs) = std::fs::read_dir(&pods) else {
            return Ok(found);
        };
        for run in pod_dirs
            .flatten()
            .filter_map(|p| std::fs::read_dir(p.path().join("run")).ok())
            .flat_map(|r| r.flatten().map(|e| e.path()))
        {
            match self.recover_one(&run) {
                Some(r) => found.push(r),
                // Ended while no agent watched (or unreadable): forget it.
                None => {
                    let _ = std::fs::remove_dir_all(&run);
                }
            }
        }
        Ok(found)
    }

    async fn memory_usage(&self, id: &ContainerId) -> Option<u64> {
        let pgid = self.entry(id).ok()?.pgid.as_raw();
        tokio::task::spawn_blocking(move || super::usage::process_group_rss(pgid))
            .await
            .ok()
    }

    async fn disk_usage(&self, pod: &PodKey) -> Option<u64> {
        let dirs = [
            self.pod_dir(pod),
            super::pod_log_dir(&self.logs_root(), pod),
        ];
        tokio::task::spawn_blocking(move || dirs.iter().map(|d| super::usage::disk_usage(d)).sum())
            .await
            .ok()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Limits;

    fn config(pod: &PodKey, script: &str) -> ContainerConfig {
        ContainerConfig {
            pod: pod.clone(),
            name: "app".into(),
            attempt: 2,
            image: "x".into(),
            command: vec!["sh".into(), "-c".into(), script.into()],
            args: Vec::new(),
            env: vec![("GREETING".into(), "hello".into())],
            working_dir: None,
            mounts: Vec::new(),
            limits: Limits::default(),
        }
    }

    #[tokio::test]
    async fn another_runtime_on_the_same_root_recovers_a_running_instance() {
        let dir = tempfile::tempdir().unwrap();
        let pod = PodKey {
            namespace: "default".into(),
            name: "web".into(),
            uid: "u1".into(),
        };
        let first = ProcessRuntime::with_cgroups(dir.path(), "127.0.0.1", None);
        first.create_sandbox(&pod).await.unwrap();
        let script =
            "echo $GREETING; while [ ! -e go ]; do sleep 0.1; done; echo after; sleep 1000";
        let id = first.start(config(&pod, script)).await.unwrap();
        let log = first.log_path(&pod, "app", 2);
        let has = |want: &'static str| {
            let log = log.clone();
            async move {
                for _ in 0..300 {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if text.contains(want) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                panic!("{want:?} never reached the log");
            }
        };
        has("hello").await;

        // A second runtime (a restarted agent) finds it; the first stops
        // watching it as a dead agent would.
        let second = ProcessRuntime::with_cgroups(dir.path(), "127.0.0.1", None);
        let found = second.recover().await.unwrap();
        assert_eq!(found.len(), 1);
        let r = &found[0];
        assert_eq!((&r.id, r.attempt, r.container.as_str()), (&id, 2, "app"));
        assert_eq!(r.pod, pod);
        drop(first);
        let root = dir.path().join("pods/u1/containers/app/root");
        std::fs::write(root.join("go"), b"").unwrap();
        has("after").await;
        let out = second
            .exec(
                &id,
                &["sh".into(), "-c".into(), "echo $GREETING".into()],
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        assert_eq!(out.output, "hello\n");
        // Not our child: the code is the signal that stopped it.
        let exit = second.stop(&id, Duration::from_secs(10)).await.unwrap();
        assert_eq!(exit.code, 128 + 15);
        second.remove(&id).await.unwrap();
        assert!(second.recover().await.unwrap().is_empty());
    }

    #[test]
    fn executables_are_found_like_execve() {
        let cwd = Path::new("/");
        assert!(resolve_executable("sh", &[], cwd).is_ok());
        let err = resolve_executable("no-such-binary-xyz", &[], cwd).unwrap_err();
        assert_eq!(
            err,
            r#"exec: "no-such-binary-xyz": executable file not found in $PATH"#
        );
        let err = resolve_executable("/nope/x", &[], cwd).unwrap_err();
        assert_eq!(
            err,
            r#"exec: "/nope/x": stat /nope/x: no such file or directory"#
        );
        let env = vec![("PATH".to_string(), "/nonexistent".to_string())];
        assert!(resolve_executable("sh", &env, cwd).is_err());
    }
}
