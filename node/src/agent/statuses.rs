//! Pod statuses out to the API: the latest status of each pod, written
//! through the status subresource, newest wins.
//!
//! The agent loop hands over a status whenever it differs from the last one
//! handed over; a pod whose status changes faster than writes complete is
//! written only at its latest. Pending statuses are at most one per pod, so
//! memory is bounded by the pods on the node. A write that fails for a reason
//! that may pass (no quorum, master unreachable) is retried unless a newer
//! status has arrived; a pod that is gone (NotFound) or a status the API
//! refuses is dropped and logged.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use balsa_api::client::{Api, Batcher, Client, Patch, PatchParams};
use balsa_api::registry::Reason;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use serde_json::json;
use tokio::sync::{watch, Notify};

use super::status_queue::{Next, StatusQueue};
use crate::runtime::PodKey;

/// Writes in flight at once (at most one per pod).
const CONCURRENCY: usize = 16;
const RETRY: Duration = Duration::from_millis(200);
pub const FIELD_MANAGER: &str = "balsa-node";

#[derive(Clone)]
pub struct StatusWriter {
    queue: Arc<Mutex<StatusQueue>>,
    wake: Arc<Notify>,
}

impl StatusWriter {
    /// The writer and its task; the task ends when `stop` turns true.
    /// Writes go through `batcher` (several at once share a request).
    pub fn spawn(client: Client, batcher: Batcher, stop: watch::Receiver<bool>) -> Self {
        let w = Self {
            queue: Arc::default(),
            wake: Arc::new(Notify::new()),
        };
        tokio::spawn(w.clone().run(client, batcher, stop));
        w
    }

    pub fn push(&self, key: PodKey, status: PodStatus) {
        self.lock().push(key, status);
        self.wake.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StatusQueue> {
        // Held only to push or take; a poisoned queue is still a queue.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Pipelined: a write starts as soon as there is room and a status to
    /// write, not when a whole batch has ended, so a status that arrives
    /// while slow writes are in flight waits only for room (or for its own
    /// pod's write in flight).
    async fn run(self, client: Client, batcher: Batcher, mut stop: watch::Receiver<bool>) {
        let mut writes = FuturesUnordered::new();
        loop {
            let mut at = None;
            while writes.len() < CONCURRENCY {
                match self.lock().next(Instant::now()) {
                    Next::Write(key, status) => {
                        tracing::debug!(
                            pod = %key,
                            phase = status.phase.as_deref().unwrap_or_default(),
                            ready = ready(&status),
                            "pod status write issued"
                        );
                        let client = client.clone();
                        let batcher = batcher.clone();
                        writes.push(async move {
                            let started = Instant::now();
                            let outcome = write(&client, &batcher, &key, &status).await;
                            tracing::debug!(pod = %key, took_ms = started.elapsed().as_millis() as u64, ok = outcome.is_ok(), "pod status written");
                            (key, status, outcome)
                        });
                    }
                    Next::At(when) => {
                        at = Some(when);
                        break;
                    }
                    Next::Idle => break,
                }
            }
            let retry_due = async {
                match at {
                    Some(when) => tokio::time::sleep_until(when.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some((key, status, outcome)) = writes.next(), if !writes.is_empty() => {
                    let retry = outcome.err().unwrap_or(false);
                    self.lock().done(key, *status, retry, Instant::now(), RETRY);
                }
                _ = self.wake.notified() => {}
                _ = retry_due => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// Whether `status` says the pod is Ready (for tracing the startup path).
fn ready(status: &PodStatus) -> bool {
    status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Writes one status; `Err(true)` when worth retrying.
async fn write(
    client: &Client,
    batcher: &Batcher,
    key: &PodKey,
    status: &PodStatus,
) -> Result<(), bool> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &key.namespace);
    let pp = PatchParams {
        field_manager: FIELD_MANAGER.into(),
        ..Default::default()
    };
    // A merge patch: lists (conditions, containerStatuses) are replaced whole,
    // fields this agent does not set (nominatedNodeName) are kept. The uid is
    // a precondition: a pod re-created under the same name is another pod.
    let patch = Patch::Merge(json!({ "metadata": { "uid": key.uid }, "status": status }));
    let written = match api.patch_status_op(&key.name, &pp, &patch) {
        Ok(op) => batcher.write(op).await,
        Err(e) => Err(e),
    };
    match written {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.reason, Reason::NotFound | Reason::Conflict) => Err(false),
        Err(e) if matches!(e.reason, Reason::Invalid | Reason::BadRequest) => {
            tracing::warn!(pod = %key, error = %e, "the API refused a pod status");
            Err(false)
        }
        Err(e) => {
            tracing::debug!(pod = %key, error = %e, "writing a pod status; will retry");
            Err(true)
        }
    }
}
