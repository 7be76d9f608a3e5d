//! The set of pods this node runs, for the agent loop: give it the pods bound
//! to the node, it starts and stops workers to match; read statuses back.
//!
//! Owned by one task (the agent loop); no locks. A pod is identified by its
//! uid: a pod re-created under the same name is a new pod.
//!
//! - a new pod → [`PodWorker::spawn`];
//! - a pod with `deletionTimestamp` → terminated with its
//!   `deletionGracePeriodSeconds`;
//! - a pod no longer listed (force-deleted) → terminated with its spec's
//!   grace, then its logs are removed once the worker ends.
//!
//! After an agent restart, the instances the runtime recovered are handed
//! to their pods' new workers ([`PodManager::adopt`]); those of pods no
//! longer bound here are the agent's to stop ([`PodManager::orphans`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, PodStatus};

use crate::runtime::{PodKey, Recovered};
use crate::worker::{Failure, PodHandle, PodWorker};

/// How long the status of a pod still starting (phase Pending) may be held
/// back by [`PodManager::changed_statuses`] in case it is about to change
/// again (see there).
pub const HOLD: Duration = Duration::from_millis(100);

/// What [`PodManager::changed_statuses`] found.
#[derive(Debug, Default)]
pub struct Changed {
    /// The statuses to write.
    pub statuses: Vec<(PodKey, PodStatus)>,
    /// When a status held back is due: call again then.
    pub due: Option<Instant>,
}

pub struct PodManager {
    worker: PodWorker,
    pods: HashMap<String, Managed>,
    /// Recovered instances not yet handed to a worker, by pod uid.
    adopted: HashMap<String, Vec<Recovered>>,
}

struct Managed {
    handle: PodHandle,
    /// Still listed by the API (false: force-deleted, logs go too).
    listed: bool,
    /// The status as [`PodManager::changed_statuses`] last read it.
    status: tokio::sync::watch::Receiver<PodStatus>,
    /// Since when [`PodManager::changed_statuses`] has held back a change
    /// of this pod's status (see there).
    held_since: Option<Instant>,
}

fn uid(pod: &Pod) -> String {
    pod.metadata
        .uid
        .clone()
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default()
}

fn grace(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(secs.max(0) as u64)
}

impl PodManager {
    pub fn new(worker: PodWorker) -> Self {
        Self {
            worker,
            pods: HashMap::new(),
            adopted: HashMap::new(),
        }
    }

    /// Instances still running from before an agent restart: the next
    /// [`PodManager::sync`] that lists their pod takes them over instead of
    /// starting containers.
    pub fn adopt(&mut self, found: Vec<Recovered>) {
        for r in found {
            self.adopted.entry(r.pod.uid.clone()).or_default().push(r);
        }
    }

    /// Recovered instances no listed pod took (deleted while no agent ran,
    /// or being deleted): call after a sync with every pod bound here.
    pub fn orphans(&mut self) -> Vec<Recovered> {
        self.adopted.drain().flat_map(|(_, v)| v).collect()
    }

    /// Make the running set match `desired` (every pod bound to this node).
    pub fn sync<'a>(&mut self, desired: impl IntoIterator<Item = &'a Arc<Pod>>) {
        let mut seen = HashSet::new();
        for pod in desired {
            let uid = uid(pod);
            seen.insert(uid.clone());
            let deleting = pod.metadata.deletion_timestamp.is_some();
            match self.pods.get_mut(&uid) {
                Some(m) => {
                    m.listed = true;
                    if deleting {
                        m.handle.terminate(Some(grace(pod)));
                    }
                }
                None if deleting => {}
                None => {
                    let adopted = self.adopted.remove(&uid).unwrap_or_default();
                    let handle = self.worker.spawn_adopting(pod.clone(), adopted);
                    let mut status = handle.status();
                    // Unread: the first `changed_statuses` reports it.
                    status.mark_changed();
                    self.pods.insert(
                        uid,
                        Managed {
                            handle,
                            listed: true,
                            status,
                            held_since: None,
                        },
                    );
                }
            }
        }
        for (uid, m) in self.pods.iter_mut() {
            if !seen.contains(uid) && m.listed {
                m.listed = false;
                m.handle.terminate(None);
            }
        }
    }

    /// Pods still running here (not stopping, not ended), with their uid
    /// and latest status: what eviction chooses among.
    pub fn running(&self) -> Vec<(String, PodStatus)> {
        self.pods
            .iter()
            .filter(|(_, m)| m.listed && !m.handle.stopping())
            .map(|(uid, m)| (uid.clone(), m.handle.status().borrow().clone()))
            .collect()
    }

    /// Stop a pod for the node's sake (eviction); see [`PodHandle::fail`].
    /// `false` when the pod is not running here.
    pub fn fail(&mut self, uid: &str, failure: Failure, grace: Duration) -> bool {
        match self.pods.get(uid) {
            Some(m) if !m.handle.stopping() => {
                m.handle.fail(failure, grace);
                true
            }
            _ => false,
        }
    }

    /// Every pod's latest status.
    pub fn statuses(&self) -> Vec<(PodKey, PodStatus)> {
        self.pods
            .values()
            .map(|m| (m.handle.key().clone(), m.handle.status().borrow().clone()))
            .collect()
    }

    /// Woken whenever a pod's status changes or a worker ends (one permit,
    /// kept until taken): the cue to call [`PodManager::changed_statuses`]
    /// and [`PodManager::reap`].
    pub fn changes(&self) -> Arc<tokio::sync::Notify> {
        self.worker.changes()
    }

    /// The latest status of each pod whose status changed since the last
    /// call (and of each whose worker has ended, whose last change a
    /// closed channel no longer tells apart): what the agent loop compares
    /// with what it wrote, without copying every pod's status.
    ///
    /// A pod still starting (phase Pending, worker running) has its change
    /// held back for up to [`HOLD`] from the call that first saw it, and
    /// `due` says when the first held change is due. A pod that starts at
    /// once is then written Running in one status write rather than
    /// Pending and then Running, where the second write waits for the
    /// first's round trip (one write per pod in flight); a pod that takes
    /// longer still shows Pending [`HOLD`] later. No status is skipped: the
    /// one held stays unread, so a later call reports the latest.
    pub fn changed_statuses(&mut self, now: Instant) -> Changed {
        let mut out = Changed::default();
        for m in self.pods.values_mut() {
            if !m.status.has_changed().unwrap_or(true) {
                continue;
            }
            let starting = !m.handle.is_finished()
                && m.status.borrow().phase.as_deref() == Some(crate::status::PENDING);
            if starting {
                let due = *m.held_since.get_or_insert(now) + HOLD;
                if now < due {
                    out.due = Some(out.due.map_or(due, |d| d.min(due)));
                    continue;
                }
            }
            m.held_since = None;
            let status = m.status.borrow_and_update().clone();
            out.statuses.push((m.handle.key().clone(), status));
        }
        out
    }

    /// A pod's status watch (wakes on every change), for the agent to push
    /// updates as they happen.
    pub fn watch(&self, uid: &str) -> Option<tokio::sync::watch::Receiver<PodStatus>> {
        self.pods.get(uid).map(|m| m.handle.status())
    }

    /// Every pod's key and status watch (for the log endpoint).
    pub fn watches(&self) -> Vec<(PodKey, tokio::sync::watch::Receiver<PodStatus>)> {
        self.pods
            .values()
            .map(|m| (m.handle.key().clone(), m.handle.status()))
            .collect()
    }

    /// Whether the pod has a worker here (running or ended, not yet reaped).
    pub fn has(&self, uid: &str) -> bool {
        self.pods.contains_key(uid)
    }

    /// True when nothing of the pod runs here: its worker has ended, or it
    /// never had one (it was already being deleted when it arrived). A pod
    /// being deleted gracefully is finished off (deleted with grace 0) then.
    pub fn stopped(&self, uid: &str) -> bool {
        self.pods.get(uid).is_none_or(|m| m.handle.is_finished())
    }

    /// Forget workers that ended and are no longer listed; their final
    /// statuses are returned, their logs removed.
    pub async fn reap(&mut self) -> Vec<(PodKey, PodStatus)> {
        let done: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, m)| !m.listed && m.handle.is_finished())
            .map(|(uid, _)| uid.clone())
            .collect();
        let mut out = Vec::new();
        for uid in done {
            if let Some(m) = self.pods.remove(&uid) {
                let key = m.handle.key().clone();
                let status = m.handle.finished().await;
                if let Err(e) = self.worker.runtime().remove_logs(&key).await {
                    tracing::warn!(pod = %key, error = %e, "removing pod logs");
                }
                out.push((key, status));
            }
        }
        out
    }

    /// Stop every worker without stopping its containers (the agent goes,
    /// the pods stay for the next one to adopt).
    ///
    /// Waits until every worker is gone, so none sees the runtime's
    /// supervision end with the process (it would take that for an exit
    /// and clean the instance up).
    pub async fn abandon(mut self) {
        for m in self.pods.values() {
            m.handle.abandon();
        }
        for (_, m) in self.pods.drain() {
            m.handle.finished().await;
        }
    }

    /// Stop every pod (agent shutdown) and wait for them. Logs stay.
    pub async fn shutdown(mut self, grace: Option<Duration>) {
        for m in self.pods.values() {
            m.handle.terminate(grace);
        }
        for (_, m) in self.pods.drain() {
            m.handle.finished().await;
        }
    }

    pub fn len(&self) -> usize {
        self.pods.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }
}
