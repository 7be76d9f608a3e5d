//! Which pod status to write next: the status writer's bookkeeping, apart
//! from its IO.
//!
//! What must stay true: at most one write per pod is in flight, so a pod's
//! writes land in the order they were started and an older status can never
//! overwrite a newer one; a pod waiting to be written holds only its newest
//! status (a newer one replaces it where it stands in line); pods are
//! started in the order they first came to wait, so a burst on one pod
//! cannot starve the others; a write that failed for a reason that may pass
//! waits `retry` before it is tried again, unless a newer status arrived
//! meanwhile (which replaces it). Memory is bounded by the pods on the node.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PodStatus;

use crate::runtime::PodKey;

struct Waiting {
    key: PodKey,
    status: Box<PodStatus>,
    /// Not to be started before this (a failed write's retry).
    not_before: Option<Instant>,
}

/// What the status writer has to do, by pod uid.
#[derive(Default)]
pub struct StatusQueue {
    waiting: HashMap<String, Waiting>,
    /// The uids in `waiting`, in the order they came to wait.
    order: VecDeque<String>,
    in_flight: HashSet<String>,
}

/// What [`StatusQueue::next`] says.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// Write this now; report how it went with [`StatusQueue::done`].
    Write(PodKey, Box<PodStatus>),
    /// Nothing can start before this moment (only retries are waiting).
    At(Instant),
    /// Nothing can start until a write ends or a status arrives.
    Idle,
}

impl StatusQueue {
    /// A new status for the pod: it replaces any status of the pod that is
    /// waiting (and its retry delay), keeping its place in line.
    pub fn push(&mut self, key: PodKey, status: PodStatus) {
        let uid = key.uid.clone();
        let fresh = Waiting {
            key,
            status: Box::new(status),
            not_before: None,
        };
        if self.waiting.insert(uid.clone(), fresh).is_none() {
            self.order.push_back(uid);
        }
    }

    /// The first waiting pod that has no write in flight and whose retry
    /// delay (if any) has passed at `now`, taken off the queue and counted
    /// in flight.
    pub fn next(&mut self, now: Instant) -> Next {
        let mut earliest: Option<Instant> = None;
        let found = self.order.iter().position(|uid| {
            if self.in_flight.contains(uid) {
                return false;
            }
            match self.waiting.get(uid).and_then(|w| w.not_before) {
                Some(at) if at > now => {
                    earliest = Some(earliest.map_or(at, |e| e.min(at)));
                    false
                }
                _ => true,
            }
        });
        let Some(i) = found else {
            return earliest.map_or(Next::Idle, Next::At);
        };
        let Some(uid) = self.order.remove(i) else {
            return Next::Idle;
        };
        let Some(w) = self.waiting.remove(&uid) else {
            return Next::Idle;
        };
        self.in_flight.insert(uid);
        Next::Write(w.key, w.status)
    }

    /// The write of `status` for `key` ended; `retry` when it failed for a
    /// reason that may pass, in which case it is tried again after `delay`
    /// from `now`, unless a newer status is already waiting.
    pub fn done(
        &mut self,
        key: PodKey,
        status: PodStatus,
        retry: bool,
        now: Instant,
        delay: Duration,
    ) {
        self.in_flight.remove(&key.uid);
        if !retry || self.waiting.contains_key(&key.uid) {
            return;
        }
        let uid = key.uid.clone();
        self.waiting.insert(
            uid.clone(),
            Waiting {
                key,
                status: Box::new(status),
                not_before: Some(now + delay),
            },
        );
        self.order.push_back(uid);
    }

    /// Writes in flight.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uid: &str) -> PodKey {
        PodKey {
            namespace: "ns".into(),
            name: format!("pod-{uid}"),
            uid: uid.into(),
        }
    }

    fn status(phase: &str) -> PodStatus {
        PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        }
    }

    fn write(q: &mut StatusQueue, now: Instant) -> Option<(String, String)> {
        match q.next(now) {
            Next::Write(k, s) => Some((k.uid, s.phase.unwrap_or_default())),
            _ => None,
        }
    }

    #[test]
    fn pods_start_in_arrival_order_with_their_newest_status() {
        let mut q = StatusQueue::default();
        let now = Instant::now();
        q.push(key("a"), status("Pending"));
        q.push(key("b"), status("Pending"));
        q.push(key("a"), status("Running"));
        assert_eq!(write(&mut q, now), Some(("a".into(), "Running".into())));
        assert_eq!(write(&mut q, now), Some(("b".into(), "Pending".into())));
        assert_eq!(q.next(now), Next::Idle);
        assert_eq!(q.in_flight(), 2);
    }

    #[test]
    fn a_pod_has_one_write_in_flight_and_its_next_status_waits_for_it() {
        let mut q = StatusQueue::default();
        let now = Instant::now();
        q.push(key("a"), status("Pending"));
        assert_eq!(write(&mut q, now), Some(("a".into(), "Pending".into())));
        q.push(key("a"), status("Running"));
        q.push(key("b"), status("Pending"));
        // b overtakes a, whose write is still in flight.
        assert_eq!(write(&mut q, now), Some(("b".into(), "Pending".into())));
        assert_eq!(q.next(now), Next::Idle);
        q.done(key("a"), status("Pending"), false, now, Duration::ZERO);
        assert_eq!(write(&mut q, now), Some(("a".into(), "Running".into())));
    }

    #[test]
    fn a_failed_write_is_retried_after_the_delay_unless_a_newer_status_came() {
        let mut q = StatusQueue::default();
        let t0 = Instant::now();
        let delay = Duration::from_millis(200);
        q.push(key("a"), status("Pending"));
        assert!(write(&mut q, t0).is_some());
        q.done(key("a"), status("Pending"), true, t0, delay);
        assert_eq!(q.next(t0), Next::At(t0 + delay));
        // Another pod is not held back by the retry.
        q.push(key("b"), status("Pending"));
        assert_eq!(write(&mut q, t0), Some(("b".into(), "Pending".into())));
        assert_eq!(
            write(&mut q, t0 + delay),
            Some(("a".into(), "Pending".into()))
        );

        // A newer status replaces the failed one and goes at once...
        q.done(key("a"), status("Pending"), true, t0, delay);
        q.push(key("a"), status("Running"));
        assert_eq!(write(&mut q, t0), Some(("a".into(), "Running".into())));
        // ... and a failed write never replaces a newer status waiting.
        q.push(key("a"), status("Succeeded"));
        q.done(key("a"), status("Running"), true, t0, delay);
        assert_eq!(write(&mut q, t0), Some(("a".into(), "Succeeded".into())));
    }

    #[test]
    fn a_refused_write_is_dropped() {
        let mut q = StatusQueue::default();
        let now = Instant::now();
        q.push(key("a"), status("Pending"));
        assert!(write(&mut q, now).is_some());
        q.done(key("a"), status("Pending"), false, now, Duration::ZERO);
        assert_eq!(q.next(now), Next::Idle);
        assert_eq!(q.in_flight(), 0);
    }
}
