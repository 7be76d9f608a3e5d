//! The Deployment's status as a watch shows it: every version is kept with
//! when it arrived, so a phase's end is the first version meeting its
//! condition, and the rollout's bounds (most pods, fewest available) are
//! read off the whole history.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use balsa_api::grpc::client::Client;
use balsa_proto::objects::{EventType, WatchRequest};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The fields `kubectl rollout status` reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeployState {
    pub generation: i64,
    pub observed_generation: i64,
    pub replicas: i64,
    pub updated: i64,
    pub ready: i64,
    pub available: i64,
}

#[derive(Deserialize)]
struct View {
    metadata: Meta,
    #[serde(default)]
    status: Option<StatusView>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    generation: i64,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StatusView {
    #[serde(default)]
    observed_generation: i64,
    #[serde(default)]
    replicas: i64,
    #[serde(default)]
    updated_replicas: i64,
    #[serde(default)]
    ready_replicas: i64,
    #[serde(default)]
    available_replicas: i64,
}

pub struct DeploymentWatch {
    latest: watch::Receiver<DeployState>,
    history: Arc<Mutex<Vec<(Instant, DeployState)>>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl DeploymentWatch {
    pub async fn start(
        client: &Client,
        namespace: &str,
        name: &str,
        after: u64,
    ) -> anyhow::Result<Self> {
        let stream = client
            .watch(WatchRequest {
                group: "apps".into(),
                resource: "deployments".into(),
                namespace: namespace.into(),
                name: name.into(),
                after: Some(after),
                bookmark_interval_ms: 0,
            })
            .await
            .context("watching the deployment")?;
        let (tx, latest) = watch::channel(DeployState::default());
        let history: Arc<Mutex<Vec<(Instant, DeployState)>>> = Arc::default();
        let h = history.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                let item = item.context("deployment watch")?;
                if item.r#type == EventType::Bookmark as i32 {
                    continue;
                }
                let v: View =
                    serde_json::from_slice(&item.object).context("decoding the deployment")?;
                let s = v.status.unwrap_or_default();
                let state = DeployState {
                    generation: v.metadata.generation,
                    observed_generation: s.observed_generation,
                    replicas: s.replicas,
                    updated: s.updated_replicas,
                    ready: s.ready_replicas,
                    available: s.available_replicas,
                };
                h.lock()
                    .map_err(|_| anyhow!("poisoned"))?
                    .push((Instant::now(), state));
                tx.send_replace(state);
            }
            Err(anyhow!("the deployment watch ended"))
        });
        Ok(Self {
            latest,
            history,
            task,
        })
    }

    pub fn latest(&self) -> DeployState {
        *self.latest.borrow()
    }

    /// Waits for a status meeting `done`; fails when the watch ends or
    /// `progress` (a figure that should keep rising) has not moved for
    /// `stall`. Returns when the status arrived.
    pub async fn wait_for(
        &mut self,
        what: &str,
        stall: Duration,
        done: impl Fn(&DeployState) -> bool,
        progress: impl Fn(&DeployState) -> i64,
        mut report: impl FnMut(&DeployState),
    ) -> anyhow::Result<Instant> {
        let mut last_progress = (progress(&self.latest()), Instant::now());
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        tick.tick().await;
        loop {
            let s = self.latest();
            if done(&s) {
                let at = self
                    .history
                    .lock()
                    .map_err(|_| anyhow!("poisoned"))?
                    .iter()
                    .find(|(_, h)| done(h))
                    .map(|(t, _)| *t)
                    .unwrap_or_else(Instant::now);
                return Ok(at);
            }
            if progress(&s) != last_progress.0 {
                last_progress = (progress(&s), Instant::now());
            } else if last_progress.1.elapsed() > stall {
                bail!("{what}: no progress for {stall:?} (last status {s:?})");
            }
            if self.task.is_finished() {
                bail!("{what}: the deployment watch stopped");
            }
            tokio::select! {
                _ = self.latest.changed() => {}
                _ = tick.tick() => report(&s),
            }
        }
    }

    /// The statuses that arrived from `from` on.
    pub fn since(&self, from: Instant) -> Vec<DeployState> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(t, _)| *t >= from)
            .map(|(_, s)| *s)
            .collect()
    }
}

impl Drop for DeploymentWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
