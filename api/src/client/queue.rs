//! The work queue of a controller: each key at most once, at the earliest
//! time it is due; a key is never handed out while it is being worked on
//! (re-adding it then delays it until the work is done); failed keys come
//! back with exponential backoff. Time is passed in, so tests need no clock.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

pub struct WorkQueue<T> {
    /// (due, insertion sequence, key): ordered by due time, then FIFO.
    due: BTreeSet<(Instant, u64, T)>,
    /// When each queued key is due, and its sequence number.
    queued: HashMap<T, (Instant, u64)>,
    running: HashSet<T>,
    /// Keys added while running: queued again when their work is done.
    dirty: HashMap<T, Instant>,
    failures: HashMap<T, u32>,
    seq: u64,
    backoff_base: Duration,
    backoff_max: Duration,
}

impl<T: Clone + Eq + Hash + Ord> WorkQueue<T> {
    pub fn new(backoff_base: Duration, backoff_max: Duration) -> Self {
        Self {
            due: BTreeSet::new(),
            queued: HashMap::new(),
            running: HashSet::new(),
            dirty: HashMap::new(),
            failures: HashMap::new(),
            seq: 0,
            backoff_base,
            backoff_max,
        }
    }

    /// Queues `key` to be due at `at`; an earlier due time already queued wins.
    pub fn add(&mut self, key: T, at: Instant) {
        if self.running.contains(&key) {
            let d = self.dirty.entry(key).or_insert(at);
            *d = (*d).min(at);
            return;
        }
        if let Some(&(when, seq)) = self.queued.get(&key) {
            if when <= at {
                return;
            }
            self.due.remove(&(when, seq, key.clone()));
        }
        self.seq += 1;
        self.queued.insert(key.clone(), (at, self.seq));
        self.due.insert((at, self.seq, key));
    }

    /// The first key due at or before `now`, now marked running.
    pub fn pop(&mut self, now: Instant) -> Option<T> {
        let first = self.due.first()?;
        if first.0 > now {
            return None;
        }
        let (_, _, key) = self.due.pop_first()?;
        self.queued.remove(&key);
        self.running.insert(key.clone());
        Some(key)
    }

    /// The work on `key` is over; if it was re-added meanwhile it is queued.
    pub fn done(&mut self, key: &T) {
        self.running.remove(key);
        if let Some(at) = self.dirty.remove(key) {
            self.add(key.clone(), at);
        }
    }

    /// Counts a failure of `key`: the delay before its next attempt
    /// (base, doubling per consecutive failure, up to the maximum).
    pub fn fail(&mut self, key: &T) -> Duration {
        let n = self.failures.entry(key.clone()).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 2u32.saturating_pow((*n - 1).min(31));
        self.backoff_base
            .saturating_mul(factor)
            .min(self.backoff_max)
    }

    /// `key` succeeded: its backoff starts over.
    pub fn forget(&mut self, key: &T) {
        self.failures.remove(key);
    }

    /// When the next queued key is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.first().map(|(at, _, _)| *at)
    }

    pub fn len(&self) -> usize {
        self.queued.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Forgets every queued key (leadership lost); running work is the
    /// caller's to cancel.
    pub fn clear(&mut self) {
        self.due.clear();
        self.queued.clear();
        self.running.clear();
        self.dirty.clear();
        self.failures.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> WorkQueue<&'static str> {
        WorkQueue::new(Duration::from_millis(100), Duration::from_secs(1))
    }

    #[test]
    fn keys_are_deduplicated_and_come_out_in_due_order() {
        let t0 = Instant::now();
        let mut q = queue();
        q.add("b", t0 + Duration::from_secs(2));
        q.add("a", t0 + Duration::from_secs(1));
        q.add("b", t0 + Duration::from_secs(5)); // later: the earlier time stays
        q.add("c", t0 + Duration::from_secs(3));
        q.add("c", t0); // earlier: moves forward
        assert_eq!(q.len(), 3);
        assert_eq!(q.pop(t0), Some("c"));
        assert_eq!(q.pop(t0), None, "nothing else is due yet");
        assert_eq!(q.next_due(), Some(t0 + Duration::from_secs(1)));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(q.pop(later), Some("a"));
        assert_eq!(q.pop(later), Some("b"));
        assert_eq!(q.pop(later), None);
    }

    #[test]
    fn a_running_key_is_not_handed_out_twice() {
        let t0 = Instant::now();
        let mut q = queue();
        q.add("a", t0);
        assert_eq!(q.pop(t0), Some("a"));
        q.add("a", t0);
        assert_eq!(q.pop(t0), None, "a is still running");
        assert_eq!(q.running(), 1);
        q.done(&"a");
        assert_eq!(q.pop(t0), Some("a"), "re-added while running: queued after");
        q.done(&"a");
        assert_eq!(q.pop(t0), None);
    }

    /// Upstream's workqueue: a key added while it is processed is marked
    /// dirty and processed again right after, whatever the finished run then
    /// asks for (a later requeue, or a retry after backoff). Without that, a
    /// pod change arriving during a ReplicaSet's reconcile would wait for the
    /// backoff or for a change that may never come.
    #[test]
    fn a_key_re_added_while_running_runs_again_at_once_after_it() {
        let t0 = Instant::now();
        let mut q = queue();
        q.add("a", t0);
        assert_eq!(q.pop(t0), Some("a"));
        q.add("a", t0);
        // The run fails: the controller marks it done, then asks for a retry
        // after the backoff; the change seen meanwhile is not held back.
        q.done(&"a");
        let backoff = q.fail(&"a");
        q.add("a", t0 + backoff);
        assert_eq!(q.next_due(), Some(t0));
        assert_eq!(q.pop(t0), Some("a"));
        // Re-added again while running, and the run asks to look again in
        // a minute: the change still wins.
        q.add("a", t0);
        q.done(&"a");
        q.add("a", t0 + Duration::from_secs(60));
        assert_eq!(q.pop(t0), Some("a"));
        // Not re-added: the requeue stands on its own.
        q.done(&"a");
        q.add("a", t0 + Duration::from_secs(60));
        assert_eq!(q.pop(t0), None);
        assert_eq!(q.next_due(), Some(t0 + Duration::from_secs(60)));
    }

    #[test]
    fn failures_back_off_exponentially_until_forgotten() {
        let mut q = queue();
        let d: Vec<u128> = (0..6).map(|_| q.fail(&"a").as_millis()).collect();
        assert_eq!(d, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(q.fail(&"b").as_millis(), 100, "per key");
        q.forget(&"a");
        assert_eq!(q.fail(&"a").as_millis(), 100);
    }

    #[test]
    fn clear_forgets_everything() {
        let t0 = Instant::now();
        let mut q = queue();
        q.add("a", t0);
        q.add("b", t0);
        q.pop(t0);
        q.clear();
        assert!(q.is_empty());
        assert_eq!(q.running(), 0);
        assert_eq!(q.pop(t0), None);
    }
}
