use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use balsa_node::backoff::BackoffConfig;
use balsa_node::events::{Emitter, PodEvent};
use balsa_node::runtime::{PodKey, Runtime};
use balsa_node::{PodHandle, PodWorker, ProcessRuntime, StaticObjects, WorkerConfig};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use tokio::sync::mpsc;

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub runtime: Arc<ProcessRuntime>,
    pub objects: Arc<StaticObjects>,
    pub worker: PodWorker,
    pub events: mpsc::Receiver<PodEvent>,
}

/// Fast clocks: probe "seconds" of 100 ms, back-off starting at 300 ms.
pub fn fast_config() -> WorkerConfig {
    WorkerConfig {
        node_name: "node-1".into(),
        host_ip: "127.0.0.1".into(),
        backoff: BackoffConfig {
            initial: Duration::from_millis(300),
            max: Duration::from_secs(2),
            reset_after: Duration::from_secs(60),
        },
        probe_unit: Duration::from_millis(100),
        retry: Duration::from_millis(200),
        node_cpu_millis: 2000,
        node_memory_bytes: 4 << 30,
        node_ephemeral_bytes: 10 << 30,
    }
}

impl Harness {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = Arc::new(ProcessRuntime::new(dir.path().join("node"), "127.0.0.1"));
        let objects = Arc::new(StaticObjects::new());
        let (emitter, events) = Emitter::channel(4096);
        let worker = PodWorker::new(runtime.clone(), objects.clone(), emitter, fast_config());
        Self {
            dir,
            runtime,
            objects,
            worker,
            events,
        }
    }

    pub fn log(&self, pod: &PodKey, container: &str, attempt: u32) -> String {
        let path = self.runtime.log_path(pod, container, attempt);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    pub fn drain_events(&mut self) -> Vec<PodEvent> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e);
        }
        out
    }

    pub fn host_dir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).expect("host dir");
        p
    }
}

pub fn pod(value: serde_json::Value) -> Pod {
    let mut pod: Pod = serde_json::from_value(value).expect("pod json");
    let name = pod.metadata.name.clone().unwrap_or_default();
    pod.metadata
        .namespace
        .get_or_insert_with(|| "default".into());
    pod.metadata
        .uid
        .get_or_insert_with(|| format!("uid-{name}-{}", std::process::id()));
    pod
}

/// Wait until `pred` holds for the published status; panics with the last
/// status after `timeout`.
pub async fn wait_for(
    handle: &PodHandle,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&PodStatus) -> bool,
) -> PodStatus {
    let mut rx = handle.status();
    let deadline = Instant::now() + timeout;
    loop {
        {
            let st = rx.borrow_and_update().clone();
            if pred(&st) {
                return st;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
            let st = rx.borrow().clone();
            panic!(
                "timed out waiting for {what}; last status: {}",
                serde_json::to_string_pretty(&st).unwrap_or_default()
            );
        }
    }
}

pub fn phase(st: &PodStatus) -> &str {
    st.phase.as_deref().unwrap_or("")
}

pub fn container<'a>(st: &'a PodStatus, name: &str) -> &'a ContainerStatus {
    st.container_statuses
        .iter()
        .flatten()
        .chain(st.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no status for container {name}"))
}

pub fn waiting_reason<'a>(st: &'a PodStatus, name: &str) -> Option<&'a str> {
    container(st, name)
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .as_deref()
}

pub fn terminated(
    st: &PodStatus,
    name: &str,
) -> Option<k8s_openapi::api::core::v1::ContainerStateTerminated> {
    container(st, name).state.as_ref()?.terminated.clone()
}

pub fn condition(st: &PodStatus, type_: &str) -> String {
    st.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

/// Stop the pod and wait for its worker, so no process outlives the test.
pub async fn stop(handle: PodHandle) -> PodStatus {
    handle.terminate(Some(Duration::from_secs(2)));
    tokio::time::timeout(Duration::from_secs(20), handle.finished())
        .await
        .expect("pod worker finished")
}

/// Contents of the CRI log lines (`<time> <stream> <tag> <content>`), checking the format.
pub fn log_contents(raw: &str) -> Vec<String> {
    raw.lines()
        .map(|line| {
            let rec = balsa_node::runtime::cri_log::parse_line(line.as_bytes())
                .unwrap_or_else(|| panic!("not a CRI log line: {line:?}"));
            String::from_utf8_lossy(&rec.content).into_owned()
        })
        .collect()
}
