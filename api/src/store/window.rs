//! The watch window: the recent events of this replica's applied history, in
//! revision order. Watches replay from it and then follow it live; lists at an
//! older revision undo the newer events from it. Below its oldest revision the
//! answer is 410 Expired.
//!
//! Invariants: every event with `oldest < revision <= current` is present, in
//! revision order; an event batch is evicted whole (never a split revision).
//! Storage writes and `push` happen under the same write lock, so a reader that
//! holds the read lock sees storage and window at the same revision.
//!
//! Watchers are woken per resource (`subscribe_resource`): a push wakes only
//! the watchers of the resources its events touch, not every watcher on the
//! replica (each master runs a few dozen, and a write would wake them all).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{Event, EventType, KeyPrefix, Object, ResourceKey, Revision, StoreError};

#[derive(Debug, Clone)]
pub struct WindowConfig {
    /// Keep at least this many events...
    pub min_events: usize,
    /// ...and every event younger than this...
    pub min_age: Duration,
    /// ...but never more than this many, whatever their age.
    pub max_events: usize,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            min_events: 100_000,
            min_age: Duration::from_secs(300),
            max_events: 1_000_000,
        }
    }
}

impl WindowConfig {
    /// A window that keeps exactly `n` events (tests of expiry).
    pub fn events(n: usize) -> Self {
        Self {
            min_events: n,
            min_age: Duration::ZERO,
            max_events: n,
        }
    }
}

pub struct WatchWindow {
    inner: RwLock<Inner>,
    applied: watch::Sender<Revision>,
    /// group -> resource -> the newest revision with an event of that
    /// resource (or a reset), for the watchers of that resource.
    topics: Mutex<Topics>,
}

type Topics = HashMap<String, HashMap<String, watch::Sender<Revision>>>;

pub struct Inner {
    config: WindowConfig,
    events: VecDeque<(Instant, Event)>,
    oldest: Revision,
    current: Revision,
    /// Where this replica's history begins (start, or the last snapshot).
    floor: Revision,
    /// The newest evicted revision per group/resource and per
    /// group/resource/namespace: a watcher already past it lost nothing by the
    /// eviction, however far behind `oldest` its cursor is.
    evicted: HashMap<(String, String, Option<String>), Revision>,
    /// Each object whose newest event is in the window, as that event holds
    /// it (see [`Inner::latest`]).
    latest: HashMap<ResourceKey, Arc<Object>>,
}

impl WatchWindow {
    /// A window whose history starts after `start` (the state already applied).
    pub fn new(config: WindowConfig, start: Revision) -> Arc<Self> {
        Arc::new(Self {
            inner: RwLock::new(Inner {
                config,
                events: VecDeque::new(),
                oldest: start,
                current: start,
                floor: start,
                evicted: HashMap::new(),
                latest: HashMap::new(),
            }),
            applied: watch::channel(start).0,
            topics: Mutex::new(HashMap::new()),
        })
    }

    /// Holds the window still: storage may be read consistently with it.
    pub fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Excludes readers while the caller writes storage and then pushes.
    pub fn write(&self) -> WindowWriter<'_> {
        WindowWriter {
            guard: self.inner.write().unwrap_or_else(|e| e.into_inner()),
            applied: &self.applied,
            topics: &self.topics,
        }
    }

    /// Changes with every revision applied.
    pub fn subscribe(&self) -> watch::Receiver<Revision> {
        self.applied.subscribe()
    }

    /// Changes when an event of `group`/`resource` is pushed, or the history
    /// is reset; not for other resources' events. Ends with the window.
    pub fn subscribe_resource(&self, group: &str, resource: &str) -> watch::Receiver<Revision> {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        topics
            .entry(group.to_string())
            .or_default()
            .entry(resource.to_string())
            .or_insert_with(|| watch::channel(Revision(0)).0)
            .subscribe()
    }

    pub fn current(&self) -> Revision {
        self.read().current
    }
}

pub struct WindowWriter<'a> {
    guard: RwLockWriteGuard<'a, Inner>,
    applied: &'a watch::Sender<Revision>,
    topics: &'a Mutex<Topics>,
}

impl WindowWriter<'_> {
    /// Records that revision `rev` was applied with these events (maybe none).
    pub fn push(&mut self, rev: Revision, events: Vec<Event>) {
        let inner = &mut *self.guard;
        debug_assert!(rev >= inner.current, "revisions go forward");
        let now = Instant::now();
        if !events.is_empty() {
            let topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
            let mut last: Option<(&str, &str)> = None;
            for e in &events {
                let k = &e.object.key;
                let this = (k.group.as_str(), k.resource.as_str());
                if last == Some(this) {
                    continue;
                }
                last = Some(this);
                if let Some(topic) = topics.get(this.0).and_then(|g| g.get(this.1)) {
                    topic.send_replace(rev);
                }
            }
        }
        for e in &events {
            let key = &e.object.key;
            match e.kind {
                EventType::Deleted => inner.latest.remove(key),
                EventType::Added | EventType::Modified => {
                    inner.latest.insert(key.clone(), e.object.clone())
                }
            };
        }
        inner.events.extend(events.into_iter().map(|e| (now, e)));
        inner.current = inner.current.max(rev);
        inner.evict(now);
        self.applied.send_replace(inner.current);
    }

    /// Forgets all history: the state was replaced (a snapshot was installed).
    pub fn reset(&mut self, rev: Revision) {
        let inner = &mut *self.guard;
        inner.events.clear();
        inner.evicted.clear();
        inner.latest.clear();
        inner.oldest = rev;
        inner.current = rev;
        inner.floor = rev;
        let topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        for topic in topics.values().flat_map(HashMap::values) {
            topic.send_replace(rev);
        }
        self.applied.send_replace(rev);
    }

    pub fn current(&self) -> Revision {
        self.guard.current
    }
}

impl Inner {
    fn evict(&mut self, now: Instant) {
        while self.events.len() > self.config.min_events {
            let Some((at, front)) = self.events.front() else {
                break;
            };
            if now.duration_since(*at) < self.config.min_age
                && self.events.len() <= self.config.max_events
            {
                break;
            }
            let rev = front.revision;
            while self.events.front().is_some_and(|(_, e)| e.revision == rev) {
                if let Some((_, e)) = self.events.pop_front() {
                    let k = &e.object.key;
                    if self
                        .latest
                        .get(k)
                        .is_some_and(|o| Arc::ptr_eq(o, &e.object))
                    {
                        self.latest.remove(k);
                    }
                    for ns in [None, k.namespace.clone()] {
                        self.evicted
                            .insert((k.group.clone(), k.resource.clone(), ns), rev);
                    }
                }
            }
            self.oldest = rev;
        }
    }

    pub fn current(&self) -> Revision {
        self.current
    }

    /// The object at `key` as the newest event of it still in the window
    /// left it: `Some` only for an object that event added or modified (a
    /// deleted one, or one with no event left, is `None`: ask storage).
    /// Storage holds the same object, since storage is written before the
    /// push; a caller that stamps a change on it shares it as the new
    /// event's `prev` instead of reading and copying it again.
    pub fn latest(&self, key: &ResourceKey) -> Option<&Arc<Object>> {
        self.latest.get(key)
    }

    pub fn oldest(&self) -> Revision {
        self.oldest
    }

    /// Fails with Expired when history after `after` is no longer complete.
    pub fn check(&self, after: Revision) -> Result<(), StoreError> {
        if after < self.oldest {
            return Err(StoreError::expired(after, self.oldest));
        }
        Ok(())
    }

    /// For a watcher that was at `after` already: fails only when an event it
    /// would have seen was evicted (or the history was replaced), so an idle
    /// watcher on a quiet prefix is not cut off by writes elsewhere.
    pub fn check_continuing(&self, after: Revision, prefix: &KeyPrefix) -> Result<(), StoreError> {
        if after >= self.oldest {
            return Ok(());
        }
        let lost = self
            .evicted
            .get(&(
                prefix.group.clone(),
                prefix.resource.clone(),
                prefix.namespace.clone(),
            ))
            .copied()
            .unwrap_or(self.floor);
        if after >= self.floor && lost <= after {
            return Ok(());
        }
        Err(StoreError::expired(after, self.oldest))
    }

    /// Events after `after` matching `prefix`, at most about `max` (a revision
    /// is never split), and the revision up to which the window was scanned.
    pub fn events_after(
        &self,
        after: Revision,
        prefix: &KeyPrefix,
        max: usize,
    ) -> Result<(Vec<Event>, Revision), StoreError> {
        self.check(after)?;
        self.scan(after, prefix, max)
    }

    /// `events_after` for a watcher already at `after` (`check_continuing`).
    pub fn events_after_continuing(
        &self,
        after: Revision,
        prefix: &KeyPrefix,
        max: usize,
    ) -> Result<(Vec<Event>, Revision), StoreError> {
        self.check_continuing(after, prefix)?;
        self.scan(after, prefix, max)
    }

    fn scan(
        &self,
        after: Revision,
        prefix: &KeyPrefix,
        max: usize,
    ) -> Result<(Vec<Event>, Revision), StoreError> {
        let start = self.events.partition_point(|(_, e)| e.revision <= after);
        let mut out = Vec::new();
        for (_, e) in self.events.range(start..) {
            if out.len() >= max && out.last().is_some_and(|l: &Event| l.revision != e.revision) {
                return Ok((out, Revision(e.revision.0 - 1)));
            }
            if prefix.matches(&e.object.key) {
                out.push(e.clone());
            }
        }
        Ok((out, self.current.max(after)))
    }

    /// For each key under `prefix` changed after `at`, its state at `at`
    /// (None: absent), keyed by encoded key. Used to serve lists at `at`.
    pub fn state_at(
        &self,
        at: Revision,
        prefix: &KeyPrefix,
    ) -> Result<BTreeMap<Vec<u8>, Option<Arc<Object>>>, StoreError> {
        self.check(at)?;
        let start = self.events.partition_point(|(_, e)| e.revision <= at);
        let mut out = BTreeMap::new();
        for (_, e) in self.events.range(start..) {
            if prefix.matches(&e.object.key) {
                out.entry(e.object.key.encode())
                    .or_insert_with(|| e.prev.clone());
            }
        }
        Ok(out)
    }
}

/// An ADDED event of `resource` `ns/name` at `rev`, for tests.
#[cfg(test)]
pub(crate) fn added_event(rev: u64, resource: &str, name: &str) -> Event {
    Event {
        revision: Revision(rev),
        kind: crate::store::EventType::Added,
        object: Arc::new(Object {
            key: crate::store::ResourceKey::new("", resource, Some("ns"), name),
            data: Default::default(),
            revision: Revision(rev),
            created: Revision(rev),
        }),
        prev: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ResourceKey;

    fn ev(rev: u64, name: &str) -> Event {
        added_event(rev, "pods", name)
    }

    #[test]
    fn eviction_keeps_revisions_whole_and_expires_below_oldest() {
        let w = WatchWindow::new(WindowConfig::events(2), Revision(0));
        w.write().push(Revision(1), vec![ev(1, "a")]);
        w.write().push(Revision(2), vec![ev(2, "b"), ev(2, "c")]);
        w.write().push(Revision(4), vec![ev(4, "d")]);
        let r = w.read();
        assert_eq!(r.oldest(), Revision(2));
        let prefix = KeyPrefix::resource("", "pods");
        assert!(matches!(
            r.events_after(Revision(1), &prefix, 10),
            Err(StoreError::Expired {
                requested: 1,
                oldest: 2
            })
        ));
        let (events, upto) = r.events_after(Revision(2), &prefix, 10).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(upto, Revision(4));
    }

    /// What `latest` answers must be what storage holds: the newest added
    /// or modified object, nothing for a deleted one, and nothing once that
    /// event is evicted (an older event's eviction leaves a newer one).
    #[test]
    fn latest_follows_the_newest_event_of_each_key() {
        let w = WatchWindow::new(WindowConfig::events(2), Revision(0));
        let key = ResourceKey::new("", "pods", Some("ns"), "a");
        let change = |rev: u64, kind: EventType| {
            let mut e = ev(rev, "a");
            e.kind = kind;
            e
        };
        let a1 = ev(1, "a");
        let a2 = change(2, EventType::Modified);
        let (first, second) = (a1.object.clone(), a2.object.clone());
        w.write().push(Revision(1), vec![a1]);
        assert!(Arc::ptr_eq(w.read().latest(&key).unwrap(), &first));
        w.write().push(Revision(2), vec![a2]);
        assert!(Arc::ptr_eq(w.read().latest(&key).unwrap(), &second));
        // Evicting the event at 1 leaves the newer one's object.
        w.write().push(Revision(3), vec![ev(3, "b")]);
        assert_eq!(w.read().oldest(), Revision(1));
        assert!(Arc::ptr_eq(w.read().latest(&key).unwrap(), &second));
        w.write()
            .push(Revision(4), vec![change(4, EventType::Deleted)]);
        assert!(w.read().latest(&key).is_none(), "deleted: storage answers");
        w.write().push(Revision(5), vec![ev(5, "a")]);
        assert!(w.read().latest(&key).is_some());
        // Evicted (two newer events of other keys): storage answers.
        w.write().push(Revision(6), vec![ev(6, "c")]);
        w.write().push(Revision(7), vec![ev(7, "d")]);
        assert!(w.read().latest(&key).is_none());
        let b = ResourceKey::new("", "pods", Some("ns"), "d");
        assert!(w.read().latest(&b).is_some());
        w.write().reset(Revision(9));
        assert!(w.read().latest(&b).is_none(), "a reset forgets them");
    }

    #[test]
    fn a_watcher_on_a_quiet_prefix_survives_evictions_elsewhere() {
        let w = WatchWindow::new(WindowConfig::events(1), Revision(0));
        let other = |rev: u64| {
            let mut e = ev(rev, "x");
            let key = ResourceKey::new("", "pods", Some("busy"), "x");
            e.object = Arc::new(Object {
                key,
                ..(*e.object).clone()
            });
            e
        };
        w.write().push(Revision(1), vec![ev(1, "a")]);
        for rev in 2..6 {
            w.write().push(Revision(rev), vec![other(rev)]);
        }
        let r = w.read();
        let quiet = KeyPrefix::resource("", "pods").in_namespace(Some("ns"));
        let busy = KeyPrefix::resource("", "pods").in_namespace(Some("busy"));
        // A new watch below the window is refused, as Kubernetes does...
        assert!(r.events_after(Revision(1), &quiet, 10).is_err());
        // ...but a watcher already at 1 on the quiet namespace lost nothing.
        let (events, upto) = r.events_after_continuing(Revision(1), &quiet, 10).unwrap();
        assert!(events.is_empty());
        assert_eq!(upto, Revision(5));
        // One at 0 lost the event at 1; one on the busy namespace lost events.
        assert!(r.events_after_continuing(Revision(0), &quiet, 10).is_err());
        assert!(r.events_after_continuing(Revision(2), &busy, 10).is_err());
        let all = KeyPrefix::resource("", "pods");
        assert!(r.events_after_continuing(Revision(2), &all, 10).is_err());
    }

    #[test]
    fn a_push_wakes_the_watchers_of_its_resources_only() {
        let w = WatchWindow::new(WindowConfig::default(), Revision(0));
        let mut pods = w.subscribe_resource("", "pods");
        let deployments = w.subscribe_resource("apps", "deployments");
        let mut applied = w.subscribe();
        w.write().push(Revision(1), vec![ev(1, "a")]);
        assert!(pods.has_changed().unwrap());
        assert_eq!(*pods.borrow_and_update(), Revision(1));
        assert!(!deployments.has_changed().unwrap());
        assert!(applied.has_changed().unwrap());
        applied.mark_unchanged();
        // A revision with no events (a membership change) wakes no watcher.
        w.write().push(Revision(2), vec![]);
        assert!(!pods.has_changed().unwrap());
        assert!(applied.has_changed().unwrap());
        // A reset wakes every watcher: their history was replaced.
        w.write().reset(Revision(9));
        assert!(pods.has_changed().unwrap());
        assert!(deployments.has_changed().unwrap());
        drop(w);
        assert!(pods.has_changed().is_err(), "ends with the window");
    }

    #[test]
    fn a_page_never_splits_a_revision() {
        let w = WatchWindow::new(WindowConfig::default(), Revision(0));
        w.write().push(Revision(1), vec![ev(1, "a"), ev(1, "b")]);
        w.write().push(Revision(3), vec![ev(3, "c")]);
        let (events, upto) = w
            .read()
            .events_after(Revision(0), &KeyPrefix::resource("", "pods"), 1)
            .unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(upto, Revision(2));
    }
}
