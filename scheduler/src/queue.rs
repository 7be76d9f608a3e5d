//! The scheduling queue: which pending pod to try next, and when to retry.
//!
//! ```text
//!   add ─► activeQ ──pop──► in flight ──(bound)──► done
//!            ▲   ▲                 │ unschedulable: a relevant event arrived meanwhile?
//!            │   │                 ├─ no ──► unschedulable ──(relevant cluster event
//!            │   │                 │                          or 5 min)──┐
//!            │   └──(backoff over)─┴─ yes / error ──► backoffQ ◄─────────┘ (if still
//!            └───────────────────────────────────────────────────────────── backing off)
//! ```
//!
//! A pure data structure: the clock comes in as `now`, nothing sleeps. The
//! driver calls `flush(now)` when `next_wakeup()` passes (upstream flushes
//! backoff every second and long-unschedulable pods every 30 s).
//! activeQ is ordered by priority, then by when the pod was (re-)enqueued.
//! Backoff is 1 s doubling per attempt up to 10 s. Pods are keyed by uid: an
//! update replaces the queued copy, a delete removes it wherever it is.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};

use crate::pod_info::{pod_priority, pod_uid, DEFAULT_SCHEDULER_NAME};
use crate::status::Plugin;

pub const POD_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const POD_MAX_BACKOFF: Duration = Duration::from_secs(10);
pub const POD_MAX_IN_UNSCHEDULABLE_PODS_DURATION: Duration = Duration::from_secs(5 * 60);

/// Whether this scheduler owns the pod (`spec.schedulerName`, defaulting to
/// "default-scheduler").
pub fn responsible_for(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduler_name.as_deref())
        .filter(|n| !n.is_empty())
        .unwrap_or(DEFAULT_SCHEDULER_NAME)
        == DEFAULT_SCHEDULER_NAME
}

fn is_assigned(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty())
}

/// A change in the cluster that may make unschedulable pods schedulable.
#[derive(Debug, Clone, Copy)]
pub enum ClusterEvent<'a> {
    NodeAdded(&'a Node),
    NodeUpdated { old: &'a Node, new: &'a Node },
    AssignedPodAdded(&'a Pod),
    AssignedPodUpdated { old: &'a Pod, new: &'a Pod },
    AssignedPodDeleted(&'a Pod),
}

impl ClusterEvent<'_> {
    /// The plugins whose verdict this event may change.
    pub fn plugins(&self) -> BTreeSet<Plugin> {
        use Plugin::*;
        match self {
            ClusterEvent::NodeAdded(_) => BTreeSet::from([
                NodeUnschedulable,
                NodeName,
                TaintToleration,
                NodeReady,
                NodeAffinity,
                NodePorts,
                NodeResourcesFit,
                PodTopologySpread,
                InterPodAffinity,
            ]),
            ClusterEvent::NodeUpdated { old, new } => {
                let mut s = BTreeSet::new();
                let status = |n: &Node| n.status.clone().unwrap_or_default();
                let spec = |n: &Node| n.spec.clone().unwrap_or_default();
                let (os, ns) = (status(old), status(new));
                let (osp, nsp) = (spec(old), spec(new));
                if os.allocatable != ns.allocatable {
                    s.insert(NodeResourcesFit);
                }
                if old.metadata.labels != new.metadata.labels {
                    s.extend([NodeAffinity, PodTopologySpread, InterPodAffinity]);
                }
                if osp.taints != nsp.taints {
                    s.extend([TaintToleration, NodeReady, PodTopologySpread]);
                }
                if osp.unschedulable != nsp.unschedulable {
                    s.insert(NodeUnschedulable);
                }
                let ready = |st: &k8s_openapi::api::core::v1::NodeStatus| {
                    st.conditions
                        .iter()
                        .flatten()
                        .find(|c| c.type_ == "Ready")
                        .map(|c| c.status.clone())
                };
                if ready(&os) != ready(&ns) {
                    s.insert(NodeReady);
                }
                s
            }
            ClusterEvent::AssignedPodAdded(_) => {
                BTreeSet::from([InterPodAffinity, PodTopologySpread])
            }
            ClusterEvent::AssignedPodUpdated { old, new } => {
                let mut s = BTreeSet::new();
                if old.metadata.labels != new.metadata.labels {
                    s.extend([InterPodAffinity, PodTopologySpread]);
                }
                let res = |p: &Pod| {
                    p.spec.as_ref().map(|s| {
                        s.containers
                            .iter()
                            .map(|c| c.resources.clone())
                            .collect::<Vec<_>>()
                    })
                };
                if res(old) != res(new) {
                    s.insert(NodeResourcesFit);
                }
                s
            }
            ClusterEvent::AssignedPodDeleted(_) => BTreeSet::from([
                NodeResourcesFit,
                InterPodAffinity,
                NodePorts,
                PodTopologySpread,
            ]),
        }
    }
}

/// A pod in the queue and its scheduling history.
#[derive(Debug, Clone)]
pub struct QueuedPod {
    pub pod: Arc<Pod>,
    pub uid: String,
    /// When it was last (re-)enqueued; orders equal priorities.
    pub timestamp: Instant,
    /// Scheduling attempts so far (incremented by `pop`).
    pub attempts: u32,
    pub initial_attempt: Option<Instant>,
    /// The plugins that rejected it last time (empty: unknown, any event).
    pub unschedulable_plugins: BTreeSet<Plugin>,
}

impl QueuedPod {
    fn priority(&self) -> i32 {
        pod_priority(&self.pod)
    }
}

#[derive(Debug, Clone)]
pub struct QueueConfig {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_in_unschedulable: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            initial_backoff: POD_INITIAL_BACKOFF,
            max_backoff: POD_MAX_BACKOFF,
            max_in_unschedulable: POD_MAX_IN_UNSCHEDULABLE_PODS_DURATION,
        }
    }
}

type ActiveKey = (Reverse<i32>, Instant, u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loc {
    Active(ActiveKey),
    Backoff((Instant, u64)),
    Unschedulable,
    InFlight,
}

#[derive(Debug)]
struct Entry {
    info: QueuedPod,
    loc: Loc,
    /// While in flight: plugins of events seen meanwhile.
    events_in_flight: BTreeSet<Plugin>,
    any_event_in_flight: bool,
    updated_in_flight: bool,
    deleted_in_flight: bool,
}

/// Where a pod is, for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueLocation {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
}

#[derive(Debug, Default)]
pub struct SchedulingQueue {
    config: QueueConfig,
    entries: HashMap<String, Entry>,
    active: BTreeMap<ActiveKey, String>,
    backoff: BTreeMap<(Instant, u64), String>,
    seq: u64,
}

/// What a change to a pod's spec means for a pod parked as unschedulable.
fn significantly_updated(old: &Pod, new: &Pod) -> bool {
    old.spec != new.spec
        || old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
}

impl SchedulingQueue {
    pub fn new(config: QueueConfig) -> SchedulingQueue {
        SchedulingQueue {
            config,
            ..Default::default()
        }
    }

    /// Upstream's `calculateBackoffDuration`: initial, doubled per further
    /// attempt, capped.
    pub fn backoff_duration(&self, attempts: u32) -> Duration {
        let mut d = self.config.initial_backoff;
        for _ in 1..attempts {
            if d > self.config.max_backoff.saturating_sub(d) {
                return self.config.max_backoff;
            }
            d += d;
        }
        d.min(self.config.max_backoff)
    }

    fn backoff_expiry(&self, info: &QueuedPod) -> Instant {
        info.timestamp + self.backoff_duration(info.attempts)
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn detach(&mut self, uid: &str) {
        if let Some(e) = self.entries.get(uid) {
            match e.loc {
                Loc::Active(k) => {
                    self.active.remove(&k);
                }
                Loc::Backoff(k) => {
                    self.backoff.remove(&k);
                }
                Loc::Unschedulable | Loc::InFlight => {}
            }
        }
    }

    fn place_active(&mut self, uid: &str) {
        let seq = self.next_seq();
        let Some(e) = self.entries.get_mut(uid) else {
            return;
        };
        let key = (Reverse(e.info.priority()), e.info.timestamp, seq);
        e.loc = Loc::Active(key);
        self.active.insert(key, uid.to_string());
    }

    fn place_backoff(&mut self, uid: &str) {
        let seq = self.next_seq();
        let Some(expiry) = self.entries.get(uid).map(|e| self.backoff_expiry(&e.info)) else {
            return;
        };
        if let Some(e) = self.entries.get_mut(uid) {
            e.loc = Loc::Backoff((expiry, seq));
            self.backoff.insert((expiry, seq), uid.to_string());
        }
    }

    /// Back to activeQ, or to backoffQ while its backoff has not expired.
    fn move_out(&mut self, uid: &str, now: Instant) {
        self.detach(uid);
        let backing_off = self
            .entries
            .get(uid)
            .is_some_and(|e| e.info.attempts > 0 && self.backoff_expiry(&e.info) > now);
        if backing_off {
            self.place_backoff(uid);
        } else {
            self.place_active(uid);
        }
    }

    /// A new pending pod. Returns false (and ignores it) when the pod is
    /// already assigned or belongs to another scheduler.
    pub fn add(&mut self, pod: impl Into<Arc<Pod>>, now: Instant) -> bool {
        let pod: Arc<Pod> = pod.into();
        if !responsible_for(&pod) || is_assigned(&pod) {
            return false;
        }
        let uid = pod_uid(&pod);
        if self.entries.contains_key(&uid) {
            return self.update(pod, now);
        }
        self.entries.insert(
            uid.clone(),
            Entry {
                info: QueuedPod {
                    pod,
                    uid: uid.clone(),
                    timestamp: now,
                    attempts: 0,
                    initial_attempt: None,
                    unschedulable_plugins: BTreeSet::new(),
                },
                loc: Loc::Unschedulable,
                events_in_flight: BTreeSet::new(),
                any_event_in_flight: false,
                updated_in_flight: false,
                deleted_in_flight: false,
            },
        );
        self.place_active(&uid);
        true
    }

    /// A pending pod changed. An assigned pod, or one handed to another
    /// scheduler, leaves the queue. Returns whether the pod is queued.
    pub fn update(&mut self, pod: impl Into<Arc<Pod>>, now: Instant) -> bool {
        let pod: Arc<Pod> = pod.into();
        let uid = pod_uid(&pod);
        if !responsible_for(&pod) || is_assigned(&pod) {
            self.delete(&uid);
            return false;
        }
        let Some(e) = self.entries.get_mut(&uid) else {
            return self.add(pod, now);
        };
        let changed = significantly_updated(&e.info.pod, &pod);
        let priority_changed = pod_priority(&e.info.pod) != pod_priority(&pod);
        e.info.pod = pod;
        match e.loc {
            Loc::InFlight => {
                e.updated_in_flight |= changed;
            }
            Loc::Unschedulable => {
                if changed {
                    self.move_out(&uid, now);
                }
            }
            Loc::Active(_) => {
                if priority_changed {
                    self.detach(&uid);
                    self.place_active(&uid);
                }
            }
            Loc::Backoff(_) => {}
        }
        true
    }

    /// The pod was deleted (or bound elsewhere): forget it wherever it is.
    pub fn delete(&mut self, uid: &str) {
        self.detach(uid);
        if let Some(e) = self.entries.get_mut(uid) {
            if e.loc == Loc::InFlight {
                e.deleted_in_flight = true;
                return;
            }
        }
        self.entries.remove(uid);
    }

    /// The next pod to schedule (backoffs that expired by `now` first move
    /// to activeQ). The pod stays known as in flight until `done` or a
    /// requeue.
    pub fn pop(&mut self, now: Instant) -> Option<QueuedPod> {
        self.flush_backoff(now);
        let (_, uid) = self.active.pop_first()?;
        let e = self.entries.get_mut(&uid)?;
        e.loc = Loc::InFlight;
        e.events_in_flight.clear();
        e.any_event_in_flight = false;
        e.updated_in_flight = false;
        e.deleted_in_flight = false;
        e.info.attempts += 1;
        e.info.initial_attempt.get_or_insert(now);
        Some(e.info.clone())
    }

    /// The popped pod was bound (or given up on): forget it.
    pub fn done(&mut self, uid: &str) {
        if self
            .entries
            .get(uid)
            .is_some_and(|e| e.loc == Loc::InFlight)
        {
            self.entries.remove(uid);
        }
    }

    fn take_in_flight(&mut self, uid: &str) -> Option<&mut Entry> {
        let deleted = match self.entries.get(uid) {
            Some(e) if e.loc == Loc::InFlight => e.deleted_in_flight,
            _ => return None,
        };
        if deleted {
            self.entries.remove(uid);
            return None;
        }
        self.entries.get_mut(uid)
    }

    /// The popped pod fits nowhere; `plugins` rejected it (see
    /// `ScheduleError::unschedulable_plugins`). It waits for a relevant
    /// cluster event, unless one already came while it was in flight.
    pub fn requeue_unschedulable(&mut self, uid: &str, plugins: BTreeSet<Plugin>, now: Instant) {
        let Some(e) = self.take_in_flight(uid) else {
            return;
        };
        e.info.timestamp = now;
        let missed = e.updated_in_flight
            || if plugins.is_empty() {
                e.any_event_in_flight
            } else {
                !e.events_in_flight.is_disjoint(&plugins)
            };
        e.info.unschedulable_plugins = plugins;
        if missed {
            self.place_backoff(uid);
        } else {
            e.loc = Loc::Unschedulable;
        }
    }

    /// The popped pod failed for another reason (binding error, ...): retry
    /// after its backoff.
    pub fn requeue_error(&mut self, uid: &str, now: Instant) {
        let Some(e) = self.take_in_flight(uid) else {
            return;
        };
        e.info.timestamp = now;
        e.info.unschedulable_plugins.clear();
        self.place_backoff(uid);
    }

    /// Moves the unschedulable pods this event may help.
    pub fn on_event(&mut self, event: &ClusterEvent<'_>, now: Instant) {
        let interested = event.plugins();
        if interested.is_empty() {
            return;
        }
        let mut to_move = Vec::new();
        for (uid, e) in self.entries.iter_mut() {
            match e.loc {
                Loc::Unschedulable
                    if e.info.unschedulable_plugins.is_empty()
                        || !e.info.unschedulable_plugins.is_disjoint(&interested) =>
                {
                    to_move.push(uid.clone());
                }
                Loc::InFlight => {
                    e.any_event_in_flight = true;
                    e.events_in_flight.extend(interested.iter().copied());
                }
                _ => {}
            }
        }
        for uid in to_move {
            self.move_out(&uid, now);
        }
    }

    fn flush_backoff(&mut self, now: Instant) {
        while let Some((&(expiry, seq), _)) = self.backoff.first_key_value() {
            if expiry > now {
                break;
            }
            if let Some(uid) = self.backoff.remove(&(expiry, seq)) {
                self.place_active(&uid);
            }
        }
    }

    /// Periodic work: expired backoffs to activeQ, and pods unschedulable
    /// for longer than 5 minutes back into circulation.
    pub fn flush(&mut self, now: Instant) {
        self.flush_backoff(now);
        let limit = self.config.max_in_unschedulable;
        let stale: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| {
                e.loc == Loc::Unschedulable
                    && now.saturating_duration_since(e.info.timestamp) > limit
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in stale {
            self.move_out(&uid, now);
        }
    }

    /// When `flush` next has something to do (the driver's timer).
    pub fn next_wakeup(&self) -> Option<Instant> {
        let backoff = self.backoff.keys().next().map(|(t, _)| *t);
        let unsched = self
            .entries
            .values()
            .filter(|e| e.loc == Loc::Unschedulable)
            .map(|e| e.info.timestamp + self.config.max_in_unschedulable + Duration::from_nanos(1))
            .min();
        match (backoff, unsched) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn location(&self, uid: &str) -> Option<QueueLocation> {
        self.entries.get(uid).map(|e| match e.loc {
            Loc::Active(_) => QueueLocation::Active,
            Loc::Backoff(_) => QueueLocation::Backoff,
            Loc::Unschedulable => QueueLocation::Unschedulable,
            Loc::InFlight => QueueLocation::InFlight,
        })
    }

    /// Pods known to the queue, in flight included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn active_len(&self) -> usize {
        self.active.len()
    }

    pub fn backoff_len(&self) -> usize {
        self.backoff.len()
    }

    pub fn unschedulable_len(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.loc == Loc::Unschedulable)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use serde_json::json;

    fn q() -> SchedulingQueue {
        SchedulingQueue::new(QueueConfig::default())
    }

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn only_our_pending_pods_are_queued() {
        let mut q = q();
        let t = Instant::now();
        assert!(q.add(pod("a").build(), t));
        assert!(!q.add(pod("b").on("n1").build(), t));
        assert!(!q.add(pod("c").spec("schedulerName", json!("other")).build(), t));
        assert!(q.add(
            pod("d")
                .spec("schedulerName", json!("default-scheduler"))
                .build(),
            t
        ));
        assert_eq!(q.len(), 2);
        assert!(responsible_for(&pod("x").build()));
    }

    #[test]
    fn priority_then_enqueue_time() {
        let mut q = q();
        let t = Instant::now();
        q.add(pod("low-early").priority(1).build(), t);
        q.add(pod("high").priority(100).build(), t + s(2));
        q.add(pod("low-late").priority(1).build(), t + s(1));
        q.add(pod("none").build(), t);
        let order: Vec<String> = std::iter::from_fn(|| {
            q.pop(t + s(3))
                .map(|p| p.pod.metadata.name.clone().unwrap())
        })
        .collect();
        assert_eq!(order, vec!["high", "low-early", "low-late", "none"]);
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        let q = q();
        let d: Vec<u64> = (1..=6).map(|a| q.backoff_duration(a).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 10, 10]);
        assert_eq!(q.backoff_duration(1000), s(10));
    }

    #[test]
    fn errors_retry_after_backoff() {
        let mut q = q();
        let t = Instant::now();
        q.add(pod("p").build(), t);
        let p = q.pop(t).unwrap();
        assert_eq!(p.attempts, 1);
        q.requeue_error(&p.uid, t);
        assert_eq!(q.location(&p.uid), Some(QueueLocation::Backoff));
        assert_eq!(q.next_wakeup(), Some(t + s(1)));
        assert!(q.pop(t + Duration::from_millis(999)).is_none());
        let p = q.pop(t + s(1)).unwrap();
        assert_eq!(p.attempts, 2);
        q.requeue_error(&p.uid, t + s(1));
        assert_eq!(
            q.next_wakeup(),
            Some(t + s(3)),
            "second failure backs off 2 s"
        );
        assert!(q.pop(t + s(2)).is_none());
        assert!(q.pop(t + s(3)).is_some());
    }

    #[test]
    fn relevant_events_move_unschedulable_pods() {
        let mut q = q();
        let t = Instant::now();
        q.add(pod("fit").build(), t);
        q.add(pod("aff").build(), t);
        let a = q.pop(t).unwrap();
        let b = q.pop(t).unwrap();
        let (fit, aff) = if a.uid == "uid-fit" { (a, b) } else { (b, a) };
        q.requeue_unschedulable(&fit.uid, BTreeSet::from([Plugin::NodeResourcesFit]), t);
        q.requeue_unschedulable(&aff.uid, BTreeSet::from([Plugin::NodeAffinity]), t);
        assert_eq!(q.unschedulable_len(), 2);

        // A new assigned pod helps neither.
        let other = pod("o").on("n1").build();
        q.on_event(&ClusterEvent::AssignedPodAdded(&other), t + s(1));
        assert_eq!(q.unschedulable_len(), 2);
        // A deleted assigned pod frees resources: "fit" moves.
        q.on_event(&ClusterEvent::AssignedPodDeleted(&other), t + s(20));
        assert_eq!(q.location("uid-fit"), Some(QueueLocation::Active));
        assert_eq!(q.location("uid-aff"), Some(QueueLocation::Unschedulable));
        // A node's allocatable changing does not help node affinity...
        let old = node("n1").build();
        let bigger = node("n1").cpu("64").build();
        q.on_event(
            &ClusterEvent::NodeUpdated {
                old: &old,
                new: &bigger,
            },
            t + s(20),
        );
        assert_eq!(q.location("uid-aff"), Some(QueueLocation::Unschedulable));
        // ...a label change does.
        let labelled = node("n1").label("disk", "ssd").build();
        q.on_event(
            &ClusterEvent::NodeUpdated {
                old: &old,
                new: &labelled,
            },
            t + s(20),
        );
        assert_eq!(q.location("uid-aff"), Some(QueueLocation::Active));
    }

    #[test]
    fn moved_pods_still_back_off() {
        let mut q = q();
        let t = Instant::now();
        q.add(pod("p").build(), t);
        let p = q.pop(t).unwrap();
        q.requeue_unschedulable(&p.uid, BTreeSet::from([Plugin::NodeResourcesFit]), t);
        let n = node("new").build();
        q.on_event(&ClusterEvent::NodeAdded(&n), t + Duration::from_millis(500));
        assert_eq!(q.location(&p.uid), Some(QueueLocation::Backoff));
        assert!(q.pop(t + Duration::from_millis(600)).is_none());
        assert!(q.pop(t + s(1)).is_some());
    }

    #[test]
    fn event_during_the_attempt_is_not_lost() {
        let mut q = q();
        let t = Instant::now();
        q.add(pod("p").build(), t);
        let p = q.pop(t).unwrap();
        let n = node("new").build();
        q.on_event(&ClusterEvent::NodeAdded(&n), t);
        q.requeue_unschedulable(&p.uid, BTreeSet::from([Plugin::NodeResourcesFit]), t);
        assert_eq!(q.location(&p.uid), Some(QueueLocation::Backoff));
        // An irrelevant event during the attempt parks it.
        let p = q.pop(t + s(2)).unwrap();
        let x = pod("x").on("n").build();
        q.on_event(&ClusterEvent::AssignedPodAdded(&x), t + s(2));
        q.requeue_unschedulable(&p.uid, BTreeSet::from([Plugin::NodeResourcesFit]), t + s(2));
        assert_eq!(q.location(&p.uid), Some(QueueLocation::Unschedulable));
    }

    #[test]
    fn long_unschedulable_pods_are_flushed_after_five_minutes() {
        let mut q = q();
        let t = Instant::now();
        q.add(pod("p").build(), t);
        let p = q.pop(t).unwrap();
        q.requeue_unschedulable(&p.uid, BTreeSet::from([Plugin::TaintToleration]), t);
        q.flush(t + s(299));
        assert_eq!(q.location(&p.uid), Some(QueueLocation::Unschedulable));
        assert_eq!(q.next_wakeup(), Some(t + s(300) + Duration::from_nanos(1)));
        q.flush(t + s(301));
        assert_eq!(q.location(&p.uid), Some(QueueLocation::Active));
    }

    #[test]
    fn dedup_update_delete() {
        let mut q = q();
        let t = Instant::now();
        q.add(pod("p").priority(1).build(), t);
        q.add(pod("p").priority(1).build(), t);
        assert_eq!(q.len(), 1);
        q.add(pod("other").priority(5).build(), t);
        // Raising the priority reorders it.
        q.update(pod("p").priority(10).build(), t);
        assert_eq!(q.active_len(), 2);
        let first = q.pop(t).unwrap();
        assert_eq!(first.uid, "uid-p");
        assert_eq!(first.pod.spec.as_ref().unwrap().priority, Some(10));
        q.delete("uid-other");
        assert!(q.pop(t).is_none());
        // Bound elsewhere while queued: it leaves.
        q.add(pod("z").build(), t);
        assert!(!q.update(pod("z").on("n1").build(), t));
        assert!(q.location("uid-z").is_none());
    }

    #[test]
    fn updated_unschedulable_pods_move_and_deleted_in_flight_pods_vanish() {
        let mut q = q();
        let t = Instant::now();
        q.add(pod("p").build(), t);
        let p = q.pop(t).unwrap();
        q.requeue_unschedulable(&p.uid, BTreeSet::from([Plugin::NodeAffinity]), t);
        // A status-only change leaves it parked; a spec change moves it.
        let mut status_only = pod("p").build();
        status_only.status = Some(Default::default());
        q.update(status_only, t + s(5));
        assert_eq!(q.location(&p.uid), Some(QueueLocation::Unschedulable));
        q.update(pod("p").node_selector("zone", "a").build(), t + s(5));
        assert_eq!(q.location(&p.uid), Some(QueueLocation::Active));

        let p = q.pop(t + s(5)).unwrap();
        q.delete(&p.uid);
        assert_eq!(q.location(&p.uid), Some(QueueLocation::InFlight));
        q.requeue_unschedulable(&p.uid, BTreeSet::new(), t + s(5));
        assert!(q.is_empty());
        // done() forgets a bound pod.
        q.add(pod("b").build(), t);
        let b = q.pop(t).unwrap();
        q.done(&b.uid);
        assert!(q.is_empty());
    }

    #[test]
    fn unknown_reasons_move_on_any_event() {
        let mut q = q();
        let t = Instant::now();
        q.add(pod("p").build(), t);
        let p = q.pop(t).unwrap();
        q.requeue_unschedulable(&p.uid, BTreeSet::new(), t);
        let x = pod("x").on("n").build();
        q.on_event(&ClusterEvent::AssignedPodAdded(&x), t + s(10));
        assert_eq!(q.location(&p.uid), Some(QueueLocation::Active));
    }
}
