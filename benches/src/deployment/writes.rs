//! Where the writes go: every write to the store takes one revision, so the
//! leader's revision before and after a phase counts them all; watches on a
//! follower count those to pods (creates, bindings, status writes, deletes),
//! to Events (kubelet's, the scheduler's, the controllers') and to the
//! Deployment and its ReplicaSets (spec and status). The rest is Nodes,
//! Leases and everything else the masters and agents write.
//!
//! ```text
//!  follower ══ Watch pods / events / replicasets / deployments (after rev) ══► counters
//!  leader ── list (limit 1) ──► revision now
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use balsa_api::grpc::client::Client;
use balsa_proto::objects::{EventType, WatchRequest};
use futures::StreamExt;
use serde::Serialize;
use tokio::task::JoinHandle;

/// What the writes counted so far were to.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Writes {
    /// All writes (the leader's revision).
    pub all: u64,
    pub pods: u64,
    pub events: u64,
    /// The Deployment and its ReplicaSets.
    pub workload: u64,
}

impl Writes {
    /// `self - earlier`.
    pub fn since(&self, earlier: &Writes) -> Writes {
        Writes {
            all: self.all.saturating_sub(earlier.all),
            pods: self.pods.saturating_sub(earlier.pods),
            events: self.events.saturating_sub(earlier.events),
            workload: self.workload.saturating_sub(earlier.workload),
        }
    }

    /// Writes that were to none of the watched kinds (Nodes, Leases, ...).
    pub fn other(&self) -> u64 {
        self.all
            .saturating_sub(self.pods + self.events + self.workload)
    }
}

/// The counting watches; aborted when dropped.
pub struct WriteCount {
    pods: Arc<AtomicU64>,
    events: Arc<AtomicU64>,
    workload: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl WriteCount {
    /// Counts the writes to `namespace`'s pods, Events, ReplicaSets and
    /// Deployments after revision `after`, from `follower`.
    pub async fn start(follower: &Client, namespace: &str, after: u64) -> anyhow::Result<Self> {
        let (pods, events, workload) = (Arc::default(), Arc::default(), Arc::default());
        let mut tasks = Vec::new();
        for (group, resource, counter) in [
            ("", "pods", &pods),
            ("", "events", &events),
            ("apps", "replicasets", &workload),
            ("apps", "deployments", &workload),
        ] {
            tasks.push(
                count(
                    follower,
                    group,
                    resource,
                    namespace,
                    after,
                    Arc::clone(counter),
                )
                .await?,
            );
        }
        Ok(Self {
            pods,
            events,
            workload,
            tasks,
        })
    }

    /// The counts now, `all` from `leader`'s latest revision (None when it
    /// does not answer).
    pub async fn read(&self, leader: &Client) -> Option<Writes> {
        let all = leader
            .list("", "namespaces", None, 1, None)
            .await
            .ok()?
            .revision
            .0;
        Some(Writes {
            all,
            pods: self.pods.load(Ordering::Relaxed),
            events: self.events.load(Ordering::Relaxed),
            workload: self.workload.load(Ordering::Relaxed),
        })
    }
}

impl Drop for WriteCount {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn count(
    client: &Client,
    group: &str,
    resource: &str,
    namespace: &str,
    after: u64,
    counter: Arc<AtomicU64>,
) -> anyhow::Result<JoinHandle<()>> {
    let stream = client
        .watch(WatchRequest {
            group: group.into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: String::new(),
            after: Some(after),
            bookmark_interval_ms: 0,
        })
        .await
        .with_context(|| format!("watching {resource}"))?;
    let resource = resource.to_string();
    Ok(tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(e) if e.r#type == EventType::Bookmark as i32 => {}
                Ok(_) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    eprintln!("  the {resource} write count stopped: {e}");
                    return;
                }
            }
        }
    }))
}
