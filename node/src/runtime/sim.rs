//! A hollow runtime: nothing runs. A container "starts" after a configurable
//! delay and runs until a test (or a scale harness) ends it with
//! [`SimRuntime::exit`], or it is stopped. Exec probes succeed. Each
//! container costs one small map entry, so thousands of pods fit on a laptop.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

use super::{
    ContainerConfig, ContainerId, ExecOutcome, ExitStatus, ImageOutcome, PodKey, PullPolicy,
    Runtime, RuntimeError, Sandbox,
};

/// See the module doc.
#[derive(Clone)]
pub struct SimRuntime {
    inner: Arc<SimInner>,
}

struct SimInner {
    root: PathBuf,
    start_delay: Duration,
    ip: String,
    seq: AtomicU64,
    containers: Mutex<HashMap<ContainerId, SimContainer>>,
}

struct SimContainer {
    pod_uid: String,
    name: String,
    started_at: Timestamp,
    exit: watch::Sender<Option<ExitStatus>>,
}

impl SimRuntime {
    /// Sandboxes are directories under `root` (volumes are still prepared, so
    /// configuration errors show as they would on a real node).
    pub fn new(root: impl Into<PathBuf>, start_delay: Duration) -> Self {
        Self {
            inner: Arc::new(SimInner {
                root: root.into(),
                start_delay,
                ip: "10.255.0.1".into(),
                seq: AtomicU64::new(0),
                containers: Mutex::new(HashMap::new()),
            }),
        }
    }

    fn finish(&self, id: &ContainerId, code: i32, signal: Option<i32>) -> Option<ExitStatus> {
        let map = self
            .inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let c = map.get(id)?;
        if c.exit.borrow().is_none() {
            let status = ExitStatus {
                code,
                signal,
                oom_killed: false,
                started_at: c.started_at,
                finished_at: crate::clock::now(),
            };
            c.exit.send_replace(Some(status));
        }
        let status = c.exit.borrow().clone();
        status
    }

    /// End every running instance of `container` in pod `pod_uid` with `code`.
    /// Returns how many were running.
    pub fn exit(&self, pod_uid: &str, container: &str, code: i32) -> usize {
        let ids: Vec<ContainerId> = {
            let map = self
                .inner
                .containers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            map.iter()
                .filter(|(_, c)| {
                    c.pod_uid == pod_uid && c.name == container && c.exit.borrow().is_none()
                })
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in &ids {
            self.finish(id, code, None);
        }
        ids.len()
    }

    /// Containers currently "running".
    pub fn running(&self) -> usize {
        let map = self
            .inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.values().filter(|c| c.exit.borrow().is_none()).count()
    }

    fn receiver(
        &self,
        id: &ContainerId,
    ) -> Result<watch::Receiver<Option<ExitStatus>>, RuntimeError> {
        let map = self
            .inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.get(id)
            .map(|c| c.exit.subscribe())
            .ok_or_else(|| RuntimeError::NotFound(id.clone()))
    }
}

#[async_trait]
impl Runtime for SimRuntime {
    fn name(&self) -> &'static str {
        "sim"
    }

    async fn create_sandbox(&self, pod: &PodKey) -> Result<Sandbox, RuntimeError> {
        let dir = self.inner.root.join("pods").join(&pod.uid);
        Ok(Sandbox {
            dir,
            ip: self.inner.ip.clone(),
        })
    }

    async fn remove_sandbox(&self, pod: &PodKey) -> Result<(), RuntimeError> {
        self.inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, c| c.pod_uid != pod.uid);
        let dir = self.inner.root.join("pods").join(&pod.uid);
        let _ = tokio::fs::remove_dir_all(dir).await;
        Ok(())
    }

    async fn ensure_image(
        &self,
        _image: &str,
        _policy: PullPolicy,
    ) -> Result<ImageOutcome, RuntimeError> {
        Ok(ImageOutcome::Present)
    }

    async fn start(&self, c: ContainerConfig) -> Result<ContainerId, RuntimeError> {
        if !self.inner.start_delay.is_zero() {
            tokio::time::sleep(self.inner.start_delay).await;
        }
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        let id = ContainerId(format!("sim-{seq}"));
        let (exit, _) = watch::channel(None);
        self.inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id.clone(),
                SimContainer {
                    pod_uid: c.pod.uid,
                    name: c.name,
                    started_at: crate::clock::now(),
                    exit,
                },
            );
        Ok(id)
    }

    async fn wait(&self, id: &ContainerId) -> Result<ExitStatus, RuntimeError> {
        let mut rx = self.receiver(id)?;
        let status = rx
            .wait_for(|s| s.is_some())
            .await
            .ok()
            .and_then(|s| s.clone());
        status.ok_or_else(|| RuntimeError::NotFound(id.clone()))
    }

    async fn stop(&self, id: &ContainerId, _grace: Duration) -> Result<ExitStatus, RuntimeError> {
        // A hollow process "handles" SIGTERM at once: 143.
        self.finish(id, 143, Some(15))
            .ok_or_else(|| RuntimeError::NotFound(id.clone()))
    }

    async fn exec(
        &self,
        id: &ContainerId,
        _command: &[String],
        _timeout: Duration,
    ) -> Result<ExecOutcome, RuntimeError> {
        self.receiver(id)?;
        Ok(ExecOutcome {
            exit_code: Some(0),
            output: String::new(),
        })
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.inner
            .containers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        Ok(())
    }

    fn log_path(&self, pod: &PodKey, container: &str, attempt: u32) -> PathBuf {
        super::log_path_under(&self.inner.root.join("logs"), pod, container, attempt)
    }

    async fn remove_logs(&self, _pod: &PodKey) -> Result<(), RuntimeError> {
        Ok(())
    }
}
