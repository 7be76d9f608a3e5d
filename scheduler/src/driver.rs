//! The async driver: watches pods, nodes, PodDisruptionBudgets and
//! namespaces, and while this master leads, schedules pending pods and binds
//! them through the API.
//!
//! ```text
//!  informers (always running) ──changes──► owner task: Snapshot + SchedulingQueue
//!                                              │ (only while leading)
//!                      pop ─► schedule ─► assume ─► bind (async, ≤ BINDS_IN_FLIGHT)
//!                                 │                    ├─ ok: Scheduled event
//!                                 │                    ├─ 409/404: forget the assumption
//!                                 │                    └─ other: forget, requeue with backoff
//!                                 └─ fits nowhere: PodScheduled=False + FailedScheduling
//!                                    event, preemption (delete victims, nominate)
//! ```
//!
//! What must stay true: a pod is bound by at most one binding in flight; an
//! assumed pod counts against its node from the moment it is picked until the
//! watch shows it assigned (or the binding fails); stale unassigned copies of
//! a pod we bound never re-enter the queue. The owner task holds all mutable
//! state and never awaits while holding a borrow of it across an API call:
//! API calls run as spawned tasks whose results come back as messages.
//! On losing leadership everything but the caches is dropped; on regaining it
//! the snapshot and the queue are rebuilt from the caches.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use balsa_api::client::events::{object_ref, EventType, Recorder};
use balsa_api::client::token_bucket::Rate;
use balsa_api::client::{
    Api, Change, Client, DeleteParams, Informer, Leadership, Patch, PatchParams,
};
use balsa_api::registry::{ApiError, Reason};
use balsa_api::{Lease, Revision};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinSet;

use crate::core::{Scheduler, SchedulerConfig};
use crate::pod_info::{pod_uid, DEFAULT_SCHEDULER_NAME};
use crate::preemption::{preempt, PreemptionError};
use crate::queue::{responsible_for, ClusterEvent, QueueConfig, QueueLocation, SchedulingQueue};
use crate::snapshot::Snapshot;
use crate::status::ScheduleError;

/// Bindings in flight at once: scheduling goes on while they complete.
/// Binds per second are at most this over a binding's latency, and under
/// load a write waits 0.2-0.9 s for its Raft entry: at 128 the scheduler
/// bound ~550 pods/s while 1,000/s were created and each pod then waited
/// ~0.7 s in the queue. Upstream bounds binds only by its client's rate.
pub const BINDS_IN_FLIGHT: usize = 1024;
/// Status writes (unschedulable conditions) in flight at once; beyond it a
/// condition waits for the pod's next attempt.
pub const STATUS_WRITES_IN_FLIGHT: usize = 256;
/// How long the owner task schedules before it yields to the runtime (and
/// then takes in its channels and finished binds). A cycle costs tens of
/// microseconds, while a yield on a busy runtime cost 70-300 ms before the
/// task ran again (64 pods a turn, a burst of 1,000 pods): a burst is
/// scheduled in few turns rather than in many small ones.
const TURN: Duration = Duration::from_millis(10);
/// kube-scheduler's events go through their own client, limited as its
/// main one (clientConnection qps 50, burst 100 by default): when pods are
/// bound faster, `Scheduled` events queue and, once the recorder's queue is
/// full, are dropped, as upstream's broadcaster drops them.
const EVENT_RATE: Rate = Rate {
    qps: 50.0,
    burst: 100,
};

/// Runs the scheduler until the future is dropped: caches always, scheduling
/// only while `leadership` says this master leads.
pub async fn run(client: Client, leadership: Leadership) {
    let pods = Informer::new(Api::<Pod>::all(client.clone()));
    let nodes = Informer::new(Api::<Node>::all(client.clone()));
    let pdbs = Informer::new(Api::<PodDisruptionBudget>::all(client.clone()));
    let namespaces = Informer::new(Api::<Namespace>::all(client.clone()));
    // Events are observations, written unfenced (as upstream's broadcaster).
    let (recorder, record) =
        Recorder::limited(client.unfenced(), DEFAULT_SCHEDULER_NAME, Some(EVENT_RATE));
    let caches = Caches {
        pods: pods.clone(),
        nodes: nodes.clone(),
        pdbs: pdbs.clone(),
        namespaces: namespaces.clone(),
    };
    tokio::join!(
        pods.run(),
        nodes.run(),
        pdbs.run(),
        namespaces.run(),
        record,
        lead(caches, client, recorder, leadership),
    );
}

#[derive(Clone)]
struct Caches {
    pods: Informer<Pod>,
    nodes: Informer<Node>,
    pdbs: Informer<PodDisruptionBudget>,
    namespaces: Informer<Namespace>,
}

impl Caches {
    /// Waits until every cache is listed and reflects every write up to
    /// `rev` (where the lease began: binding from a cache behind it could
    /// bind a pod the old leader already bound).
    async fn ready(&self, rev: Revision) {
        // A cache whose writer is gone never gets ready: wait forever then.
        let _ = futures::future::try_join4(
            self.pods.store().wait_until_synced(rev),
            self.nodes.store().wait_until_synced(rev),
            self.pdbs.store().wait_until_synced(rev),
            self.namespaces.store().wait_until_synced(rev),
        )
        .await;
    }
}

/// Waits for leadership, schedules while it lasts, starts over when lost.
async fn lead(caches: Caches, client: Client, recorder: Recorder, leadership: Leadership) {
    loop {
        leadership.wait_for(true).await;
        let Some(lease) = leadership.lease() else {
            continue;
        };
        tokio::select! {
            _ = caches.ready(lease.revision) => {}
            _ = leadership.wait_lost(lease) => continue,
        }
        let subs = Subscriptions {
            pods: caches.pods.subscribe(),
            nodes: caches.nodes.subscribe(),
            pdbs: caches.pdbs.subscribe(),
            namespaces: caches.namespaces.subscribe(),
        };
        let mut owner = Owner::new(caches.clone(), client.clone(), recorder.clone());
        owner.rebuild();
        tracing::info!(
            nodes = owner.snapshot.len(),
            pending = owner.queue.len(),
            "scheduler leading"
        );
        owner.run(subs, &leadership, lease).await;
        tracing::info!("scheduler no longer leading; dropping its queue");
    }
}

struct Subscriptions {
    pods: broadcast::Receiver<Change<Pod>>,
    nodes: broadcast::Receiver<Change<Node>>,
    pdbs: broadcast::Receiver<Change<PodDisruptionBudget>>,
    namespaces: broadcast::Receiver<Change<Namespace>>,
}

/// What a spawned API call reports back to the owner.
enum Done {
    Bind {
        pod: Arc<Pod>,
        node: String,
        /// When the binding was sent.
        sent: Instant,
        result: Result<(), ApiError>,
    },
    /// A status write of `set_unschedulable`.
    Status,
    Other,
}

struct Owner {
    caches: Caches,
    client: Client,
    recorder: Recorder,
    snapshot: Snapshot,
    queue: SchedulingQueue,
    scheduler: Scheduler,
    rng: StdRng,
    /// Pod uid → the node it was picked for, until the watch shows it
    /// assigned (binding in flight, or bound and not yet seen).
    assumed: HashMap<String, String>,
    binds: usize,
    status_writes: usize,
    tasks: JoinSet<Done>,
}

fn is_assigned(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

fn nominated_node(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty())
}

fn name_of(pod: &Pod) -> (String, String) {
    (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

impl Owner {
    fn new(caches: Caches, client: Client, recorder: Recorder) -> Owner {
        Owner {
            caches,
            client,
            recorder,
            snapshot: Snapshot::default(),
            queue: SchedulingQueue::new(QueueConfig::default()),
            scheduler: Scheduler::new(SchedulerConfig::default()),
            rng: StdRng::from_entropy(),
            assumed: HashMap::new(),
            binds: 0,
            status_writes: 0,
            tasks: JoinSet::new(),
        }
    }

    /// Snapshot and queue from the caches; assumptions whose binding is in
    /// flight or unconfirmed are kept.
    fn rebuild(&mut self) {
        let now = Instant::now();
        self.snapshot = Snapshot::default();
        for ns in self.caches.namespaces.store().state() {
            self.namespace_changed(&ns);
        }
        for n in self.caches.nodes.store().state() {
            if let Err(e) = self.snapshot.upsert_node((*n).clone()) {
                tracing::warn!(error = %e, "node left out of scheduling");
            }
        }
        // Pods the queue holds in flight (binding) stay known to it.
        let mut queue = SchedulingQueue::new(QueueConfig::default());
        std::mem::swap(&mut queue, &mut self.queue);
        let mut present = std::collections::HashSet::new();
        for p in self.caches.pods.store().state() {
            let uid = pod_uid(&p);
            present.insert(uid.clone());
            if is_assigned(&p) {
                self.assumed.remove(&uid);
                if let Err(e) = self.snapshot.upsert_pod(p.clone()) {
                    tracing::warn!(error = %e, "pod left out of scheduling");
                }
            } else if let Some(node) = self.assumed.get(&uid).cloned() {
                if self.snapshot.assume(&p, &node).is_err() {
                    self.assumed.remove(&uid);
                }
            } else {
                self.pending_pod(&p, now);
            }
        }
        self.assumed.retain(|uid, _| present.contains(uid));
    }

    fn namespace_changed(&mut self, ns: &Namespace) {
        if let Some(name) = &ns.metadata.name {
            let labels = ns.metadata.labels.clone().unwrap_or_default();
            self.snapshot
                .set_namespace_labels(name, labels.into_iter().collect());
        }
    }

    /// An unassigned pod from the watch.
    fn pending_pod(&mut self, pod: &Arc<Pod>, now: Instant) {
        let uid = pod_uid(pod);
        if !responsible_for(pod) || pod.metadata.deletion_timestamp.is_some() || is_finished(pod) {
            self.queue.delete(&uid);
            self.snapshot.clear_nominated(&uid);
            return;
        }
        match nominated_node(pod) {
            Some(node) => {
                if let Err(e) = self.snapshot.set_nominated(pod, node) {
                    tracing::debug!(error = %e, "nomination ignored");
                }
            }
            None => self.snapshot.clear_nominated(&uid),
        }
        self.queue.add(pod.clone(), now);
    }

    fn pod_applied(&mut self, pod: &Arc<Pod>) {
        let now = Instant::now();
        let uid = pod_uid(pod);
        if !is_assigned(pod) {
            // A copy from before our binding: the pod is ours already.
            if self.assumed.contains_key(&uid) {
                return;
            }
            tracing::debug!(
                pod = ?name_of(pod),
                revision = pod.metadata.resource_version.as_deref().unwrap_or_default(),
                "pending pod seen"
            );
            self.pending_pod(pod, now);
            return;
        }
        self.assumed.remove(&uid);
        self.queue.delete(&uid);
        let old = self.snapshot_pod(&uid);
        if let Err(e) = self.snapshot.upsert_pod(pod.clone()) {
            tracing::warn!(error = %e, "pod left out of scheduling");
            return;
        }
        let event = match &old {
            Some(old) => ClusterEvent::AssignedPodUpdated { old, new: pod },
            None => ClusterEvent::AssignedPodAdded(pod),
        };
        self.queue.on_event(&event, now);
        if is_finished(pod) {
            self.queue
                .on_event(&ClusterEvent::AssignedPodDeleted(pod), now);
        }
    }

    fn snapshot_pod(&self, uid: &str) -> Option<Arc<Pod>> {
        let node = self.snapshot.node_of(uid)?;
        self.snapshot
            .node(node)?
            .pods
            .iter()
            .find(|p| p.uid == uid)
            .map(|p| p.pod.clone())
    }

    fn pod_deleted(&mut self, pod: &Pod) {
        let uid = pod_uid(pod);
        self.queue.delete(&uid);
        self.snapshot.clear_nominated(&uid);
        self.assumed.remove(&uid);
        if let Some(gone) = self.snapshot.remove_pod(&uid) {
            self.queue
                .on_event(&ClusterEvent::AssignedPodDeleted(&gone.pod), Instant::now());
        }
    }

    fn node_applied(&mut self, node: &Node) {
        let name = node.metadata.name.clone().unwrap_or_default();
        let old = self.snapshot.node(&name).map(|n| n.node.clone());
        if let Err(e) = self.snapshot.upsert_node(node.clone()) {
            tracing::warn!(error = %e, "node left out of scheduling");
            return;
        }
        let event = match &old {
            Some(old) => ClusterEvent::NodeUpdated { old, new: node },
            None => ClusterEvent::NodeAdded(node),
        };
        self.queue.on_event(&event, Instant::now());
    }

    async fn run(&mut self, mut subs: Subscriptions, leadership: &Leadership, lease: Lease) {
        loop {
            if leadership.lease() != Some(lease) {
                return;
            }
            if self.drain(&mut subs) {
                self.rebuild();
            }
            while let Some(done) = self.tasks.try_join_next() {
                self.finished(done);
            }
            let turn = Instant::now();
            self.queue.flush(turn);
            let mut more = false;
            while self.binds < BINDS_IN_FLIGHT {
                if !self.schedule_one() {
                    break;
                }
                if turn.elapsed() >= TURN {
                    more = true;
                    break;
                }
            }
            if more && self.binds < BINDS_IN_FLIGHT {
                // More to do: let the channels and binds in first.
                tokio::task::yield_now().await;
                continue;
            }
            let wakeup = self.queue.next_wakeup();
            let sleep = async {
                match wakeup {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let resync = tokio::select! {
                _ = leadership.wait_lost(lease) => return,
                c = subs.pods.recv() => match c {
                    Ok(c) => self.pod_change(c),
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return,
                },
                c = subs.nodes.recv() => match c {
                    Ok(c) => self.node_change(c),
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return,
                },
                c = subs.namespaces.recv() => match c {
                    Ok(Change::Applied(ns)) => { self.namespace_changed(&ns); false }
                    Ok(_) => false,
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => return,
                },
                // PDBs are read from the cache when preempting.
                c = subs.pdbs.recv() => {
                    if matches!(c, Err(RecvError::Closed)) {
                        return;
                    }
                    false
                }
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    self.finished(done);
                    false
                }
                _ = sleep => false,
            };
            if resync {
                self.rebuild();
            }
        }
    }

    /// Takes every change already waiting; true when a resync is needed.
    fn drain(&mut self, subs: &mut Subscriptions) -> bool {
        use broadcast::error::TryRecvError;
        let mut resync = false;
        loop {
            match subs.pods.try_recv() {
                Ok(c) => resync |= self.pod_change(c),
                Err(TryRecvError::Lagged(_)) => resync = true,
                Err(_) => break,
            }
        }
        loop {
            match subs.nodes.try_recv() {
                Ok(c) => resync |= self.node_change(c),
                Err(TryRecvError::Lagged(_)) => resync = true,
                Err(_) => break,
            }
        }
        loop {
            match subs.namespaces.try_recv() {
                Ok(Change::Applied(ns)) => self.namespace_changed(&ns),
                Ok(_) => {}
                Err(TryRecvError::Lagged(_)) => resync = true,
                Err(_) => break,
            }
        }
        while subs.pdbs.try_recv().is_ok() {}
        resync
    }

    fn pod_change(&mut self, c: Change<Pod>) -> bool {
        match c {
            Change::Applied(p) => self.pod_applied(&p),
            Change::Deleted(p) => self.pod_deleted(&p),
            Change::Resynced => return true,
        }
        false
    }

    fn node_change(&mut self, c: Change<Node>) -> bool {
        match c {
            Change::Applied(n) => self.node_applied(&n),
            Change::Deleted(n) => {
                self.snapshot
                    .remove_node(n.metadata.name.as_deref().unwrap_or_default());
            }
            Change::Resynced => return true,
        }
        false
    }

    /// One scheduling cycle; false when no pod is due.
    fn schedule_one(&mut self) -> bool {
        let now = Instant::now();
        let Some(qp) = self.queue.pop(now) else {
            return false;
        };
        let pod = qp.pod.clone();
        let uid = qp.uid.clone();
        let span = tracing::debug_span!("schedule", pod = ?name_of(&pod), attempt = qp.attempts);
        let _enter = span.enter();
        crate::plugins::ensure_counted(&mut self.snapshot, &pod);
        match self.scheduler.schedule(&self.snapshot, &pod, &mut self.rng) {
            Ok(r) => {
                if let Err(e) = self.snapshot.assume(&pod, &r.node) {
                    tracing::warn!(error = %e, "cannot assume pod; retrying later");
                    self.queue.requeue_error(&uid, now);
                    return true;
                }
                self.assumed.insert(uid.clone(), r.node.clone());
                self.binds += 1;
                tracing::debug!(
                    node = %r.node,
                    queued_ms = now.saturating_duration_since(qp.timestamp).as_millis() as u64,
                    binds_in_flight = self.binds,
                    "binding"
                );
                let (ns, name) = name_of(&pod);
                let api = Api::<Pod>::namespaced(self.client.clone(), &ns);
                self.tasks.spawn(async move {
                    let result = api
                        .bind_revision(&name, Some(&uid), &r.node)
                        .await
                        .map(|_| ());
                    Done::Bind {
                        pod,
                        node: r.node,
                        sent: now,
                        result,
                    }
                });
            }
            Err(e) => self.unschedulable(&pod, &uid, e, now),
        }
        true
    }

    fn unschedulable(&mut self, pod: &Arc<Pod>, uid: &str, err: ScheduleError, now: Instant) {
        let plugins = err.unschedulable_plugins();
        let mut nominate: Option<String> = None;
        let message = match err {
            ScheduleError::NoNodesAvailable => err.to_string(),
            ScheduleError::Unschedulable(mut fe) => {
                let pdbs: Vec<PodDisruptionBudget> = self
                    .caches
                    .pdbs
                    .store()
                    .state()
                    .iter()
                    .map(|p| (**p).clone())
                    .collect();
                match preempt(&self.snapshot, pod, &fe, &pdbs, &mut self.rng) {
                    Ok(p) => {
                        self.start_preemption(pod, &p);
                        nominate = Some(p.node);
                    }
                    Err(PreemptionError::NoCandidates(diag)) => {
                        let d = diag.to_string();
                        fe.post_filter_msg =
                            Some(format!("preemption: {}", d.trim_end_matches('.')));
                    }
                    Err(PreemptionError::NotEligible(why)) => {
                        fe.post_filter_msg =
                            Some(format!("preemption: {}", why.trim_end_matches('.')));
                    }
                    Err(PreemptionError::InvalidPod(_)) => {}
                }
                fe.to_string()
            }
        };
        tracing::debug!(%message, "pod is unschedulable");
        self.queue.requeue_unschedulable(uid, plugins, now);
        self.recorder.event(
            object_ref(pod.as_ref()),
            EventType::Warning,
            "FailedScheduling",
            message.clone(),
        );
        self.set_unschedulable(pod, &message, nominate);
    }

    /// Deletes the victims and reserves the room on the chosen node.
    fn start_preemption(&mut self, pod: &Pod, p: &crate::preemption::Preemption) {
        tracing::info!(node = %p.node, victims = p.victims.len(), "preempting");
        if let Err(e) = self.snapshot.set_nominated(pod, &p.node) {
            tracing::debug!(error = %e, "nomination ignored");
        }
        let preemptor = pod_uid(pod);
        for victim in &p.victims {
            let (ns, name) = name_of(victim);
            let api = Api::<Pod>::namespaced(self.client.clone(), &ns);
            let dp = DeleteParams {
                uid: victim.metadata.uid.clone(),
                ..Default::default()
            };
            self.recorder.event(
                object_ref(victim.as_ref()),
                EventType::Normal,
                "Preempted",
                format!("Preempted by pod {preemptor} on node {}", p.node),
            );
            self.tasks.spawn(async move {
                match api.delete(&name, &dp).await {
                    Ok(_) => {}
                    Err(e) if e.reason == Reason::NotFound || e.reason == Reason::Conflict => {}
                    Err(e) => tracing::warn!(pod = %name, error = %e.message, "deleting a preemption victim failed"),
                }
                Done::Other
            });
        }
        // Lower-priority pods nominated there lose their nomination.
        for uid in &p.lower_priority_nominated {
            self.snapshot.clear_nominated(uid);
            let found = self
                .caches
                .pods
                .store()
                .filter(|x| pod_uid(x) == *uid)
                .into_iter()
                .next();
            if let Some(other) = found {
                let (ns, name) = name_of(&other);
                let api = Api::<Pod>::namespaced(self.client.clone(), &ns);
                self.tasks.spawn(async move {
                    let patch = Patch::Merge(json!({"status": {"nominatedNodeName": null}}));
                    if let Err(e) = api.patch_status(&name, &PatchParams::default(), &patch).await {
                        tracing::debug!(pod = %name, error = %e.message, "clearing a nomination failed");
                    }
                    Done::Other
                });
            }
        }
    }

    /// `PodScheduled=False/Unschedulable` with the message (and the
    /// nomination) in the pod's status, unless it already says so.
    fn set_unschedulable(&mut self, pod: &Pod, message: &str, nominate: Option<String>) {
        let status = pod.status.clone().unwrap_or_default();
        let conditions = status.conditions.unwrap_or_default();
        let current = conditions.iter().find(|c| c.type_ == "PodScheduled");
        let same_condition = current.is_some_and(|c| {
            c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
                && c.message.as_deref() == Some(message)
        });
        let nomination_unchanged =
            nominate.is_none() || nominate.as_deref() == status.nominated_node_name.as_deref();
        if same_condition && nomination_unchanged {
            return;
        }
        if self.status_writes >= STATUS_WRITES_IN_FLIGHT && nominate.is_none() {
            tracing::debug!(pod = ?name_of(pod), "too many status writes in flight; condition deferred");
            return;
        }
        self.status_writes += 1;
        let transition = match current {
            Some(c) if c.status == "False" => c
                .last_transition_time
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_else(|| balsa_api::clock::now_to_second().to_string()),
            _ => balsa_api::clock::now_to_second().to_string(),
        };
        let mut list: Vec<serde_json::Value> = conditions
            .iter()
            .filter(|c| c.type_ != "PodScheduled")
            .map(|c| serde_json::to_value(c).unwrap_or_default())
            .collect();
        list.push(json!({
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastProbeTime": null,
            "lastTransitionTime": transition,
        }));
        // Only onto the copy that was scheduled: a pod bound or changed
        // meanwhile (a 409) gets its condition on its next attempt, if any.
        let mut body = json!({
            "metadata": {"resourceVersion": pod.metadata.resource_version},
            "status": {"conditions": list},
        });
        if let Some(node) = &nominate {
            body["status"]["nominatedNodeName"] = json!(node);
        }
        let (ns, name) = name_of(pod);
        let api = Api::<Pod>::namespaced(self.client.clone(), &ns);
        self.tasks.spawn(async move {
            let patch = Patch::Merge(body);
            match api.patch_status(&name, &PatchParams::default(), &patch).await {
                Ok(_) => {}
                // Gone or changed meanwhile: the next attempt writes again.
                Err(e) if matches!(e.reason, Reason::NotFound | Reason::Conflict) => {}
                Err(e) => {
                    tracing::warn!(pod = %name, error = %e.message, "writing the pod's unschedulable condition failed")
                }
            }
            Done::Status
        });
    }

    fn finished(&mut self, done: Result<Done, tokio::task::JoinError>) {
        let Ok(done) = done else {
            return;
        };
        let (pod, node, sent, result) = match done {
            Done::Bind {
                pod,
                node,
                sent,
                result,
            } => (pod, node, sent, result),
            Done::Status => {
                self.status_writes = self.status_writes.saturating_sub(1);
                return;
            }
            Done::Other => return,
        };
        self.binds = self.binds.saturating_sub(1);
        let uid = pod_uid(&pod);
        let now = Instant::now();
        match result {
            Ok(()) => {
                self.queue.done(&uid);
                let (ns, name) = name_of(&pod);
                tracing::debug!(
                    pod = ?(&ns, &name),
                    %node,
                    bind_ms = now.saturating_duration_since(sent).as_millis() as u64,
                    "bound"
                );
                self.recorder.event(
                    object_ref(pod.as_ref()),
                    EventType::Normal,
                    "Scheduled",
                    format!("Successfully assigned {ns}/{name} to {node}"),
                );
            }
            Err(e) => {
                // Undo the assumption unless the watch already shows the
                // pod assigned (then the snapshot holds the truth).
                if self.assumed.remove(&uid).is_some() {
                    if let Some(gone) = self.snapshot.remove_pod(&uid) {
                        self.queue
                            .on_event(&ClusterEvent::AssignedPodDeleted(&gone.pod), now);
                    }
                }
                if matches!(e.reason, Reason::Conflict | Reason::NotFound) {
                    // Bound by someone else, recreated or deleted: the watch
                    // tells what to do next; retrying blindly would not help.
                    tracing::debug!(pod = ?name_of(&pod), error = %e.message, "binding refused");
                    self.queue.done(&uid);
                    return;
                }
                tracing::warn!(pod = ?name_of(&pod), %node, error = %e.message, "binding failed; retrying");
                self.recorder.event(
                    object_ref(pod.as_ref()),
                    EventType::Warning,
                    "FailedScheduling",
                    format!("Binding rejected: {}", e.message),
                );
                if self.queue.location(&uid) == Some(QueueLocation::InFlight) {
                    self.queue.requeue_error(&uid, now);
                } else if let Some(current) = self
                    .caches
                    .pods
                    .store()
                    .get(&balsa_api::client::ObjectKey::of(&*pod))
                {
                    if !is_assigned(&current) && pod_uid(&current) == uid {
                        self.pending_pod(&current, now);
                    }
                }
            }
        }
    }
}
