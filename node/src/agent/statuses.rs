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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use balsa_api::client::{Api, Client, Patch, PatchParams};
use balsa_api::registry::Reason;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use serde_json::json;
use tokio::sync::{watch, Notify};

use crate::runtime::PodKey;

/// Writes in flight at once.
const CONCURRENCY: usize = 16;
const RETRY: Duration = Duration::from_millis(200);
pub const FIELD_MANAGER: &str = "balsa-node";

#[derive(Clone)]
pub struct StatusWriter {
    pending: Arc<Mutex<HashMap<String, (PodKey, PodStatus)>>>,
    wake: Arc<Notify>,
}

impl StatusWriter {
    /// The writer and its task; the task ends when `stop` turns true.
    pub fn spawn(client: Client, stop: watch::Receiver<bool>) -> Self {
        let w = Self {
            pending: Arc::default(),
            wake: Arc::new(Notify::new()),
        };
        tokio::spawn(w.clone().run(client, stop));
        w
    }

    pub fn push(&self, key: PodKey, status: PodStatus) {
        self.lock().insert(key.uid.clone(), (key, status));
        self.wake.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (PodKey, PodStatus)>> {
        // Held only to insert or take; a poisoned map is still a map.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run(self, client: Client, mut stop: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let batch: Vec<(PodKey, PodStatus)> = self.lock().drain().map(|(_, v)| v).collect();
            let failed: Vec<(PodKey, PodStatus)> = futures::stream::iter(batch)
                .map(|(key, status)| {
                    let client = client.clone();
                    async move {
                        match write(&client, &key, &status).await {
                            Ok(()) => None,
                            Err(retry) => retry.then_some((key, status)),
                        }
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .filter_map(|r| async move { r })
                .collect()
                .await;
            if !failed.is_empty() {
                {
                    let mut pending = self.lock();
                    for (key, status) in failed {
                        pending.entry(key.uid.clone()).or_insert((key, status));
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                self.wake.notify_one();
            }
        }
    }
}

/// Writes one status; `Err(true)` when worth retrying.
async fn write(client: &Client, key: &PodKey, status: &PodStatus) -> Result<(), bool> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &key.namespace);
    let pp = PatchParams {
        field_manager: FIELD_MANAGER.into(),
        ..Default::default()
    };
    // A merge patch: lists (conditions, containerStatuses) are replaced whole,
    // fields this agent does not set (nominatedNodeName) are kept. The uid is
    // a precondition: a pod re-created under the same name is another pod.
    let patch = Patch::Merge(json!({ "metadata": { "uid": key.uid }, "status": status }));
    match api.patch_status(&key.name, &pp, &patch).await {
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
