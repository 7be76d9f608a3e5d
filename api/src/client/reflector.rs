//! A cache of one kind's objects, kept by applying a watcher's events.
//! Readers never wait on the watcher: they see the state after the last event
//! applied. The cache is "ready" once its first list is complete, and
//! "synced to" the newest revision it is known to reflect fully (an event
//! applied, a list or a bookmark): a new leader waits for that to reach the
//! revision it took over at before acting on the cache.

use std::collections::HashMap;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;

use super::api::Resource;
use super::watcher::Event;
use crate::store::Revision;

/// Which object: namespace (None for cluster-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: Option<&str>, name: &str) -> Self {
        Self {
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        }
    }

    pub fn of<K: Resource>(obj: &K) -> Self {
        let meta = obj.metadata();
        Self {
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

type Map<K> = HashMap<ObjectKey, Arc<K>>;

/// The read side, cheap to clone.
pub struct Store<K> {
    objects: Arc<RwLock<Map<K>>>,
    ready: watch::Receiver<bool>,
    synced: watch::Receiver<Revision>,
}

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Self {
            objects: self.objects.clone(),
            ready: self.ready.clone(),
            synced: self.synced.clone(),
        }
    }
}

/// The write side, owned by whoever applies the watcher's events.
pub struct Writer<K> {
    objects: Arc<RwLock<Map<K>>>,
    ready: watch::Sender<bool>,
    /// A relist in progress: the new content, swapped in at `InitDone`.
    relist: Option<Map<K>>,
    revision: Revision,
    synced: watch::Sender<Revision>,
}

/// An empty cache and its writer.
pub fn store<K: Resource>() -> (Store<K>, Writer<K>) {
    let objects = Arc::new(RwLock::new(HashMap::new()));
    let (tx, rx) = watch::channel(false);
    let (synced_tx, synced_rx) = watch::channel(Revision(0));
    (
        Store {
            objects: objects.clone(),
            ready: rx,
            synced: synced_rx,
        },
        Writer {
            objects,
            ready: tx,
            relist: None,
            revision: Revision(0),
            synced: synced_tx,
        },
    )
}

// The locks guard plain maps, are never held across an await, and a panic
// while holding one leaves a consistent map (inserts and removes are single
// calls), so a poisoned lock is still usable.
fn read<K>(l: &RwLock<Map<K>>) -> RwLockReadGuard<'_, Map<K>> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<K>(l: &RwLock<Map<K>>) -> RwLockWriteGuard<'_, Map<K>> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

fn revision_of<K: Resource>(obj: &K) -> Revision {
    Revision(
        obj.metadata()
            .resource_version
            .as_deref()
            .and_then(|rv| rv.parse().ok())
            .unwrap_or(0),
    )
}

impl<K: Resource> Writer<K> {
    pub fn apply(&mut self, event: &Event<K>) {
        self.apply_owned(event.clone());
    }

    /// Applies `event`, keeping its object in the cache without a copy, and
    /// gives the event back with the object shared (the informer passes it on
    /// to its subscribers as is).
    pub fn apply_owned(&mut self, event: Event<K>) -> Event<Arc<K>> {
        match event {
            Event::Init => {
                self.relist = Some(HashMap::new());
                Event::Init
            }
            Event::InitApply(obj) => {
                self.revision = self.revision.max(revision_of(&obj));
                let obj = Arc::new(obj);
                let key = ObjectKey::of(&*obj);
                match &mut self.relist {
                    Some(map) => {
                        map.insert(key, obj.clone());
                    }
                    None => {
                        write(&self.objects).insert(key, obj.clone());
                    }
                }
                Event::InitApply(obj)
            }
            Event::InitDone => {
                if let Some(map) = self.relist.take() {
                    *write(&self.objects) = map;
                }
                self.ready.send_replace(true);
                Event::InitDone
            }
            Event::Apply(obj) => {
                self.revision = self.revision.max(revision_of(&obj));
                let obj = Arc::new(obj);
                write(&self.objects).insert(ObjectKey::of(&*obj), obj.clone());
                self.synced_to(self.revision);
                Event::Apply(obj)
            }
            Event::Delete(obj) => {
                self.revision = self.revision.max(revision_of(&obj));
                write(&self.objects).remove(&ObjectKey::of(&obj));
                self.synced_to(self.revision);
                Event::Delete(Arc::new(obj))
            }
            Event::Progress(rev) => {
                // Outside a relist only: a list's objects are not visible
                // before its `InitDone`.
                if self.relist.is_none() {
                    self.synced_to(rev);
                }
                Event::Progress(rev)
            }
        }
    }

    fn synced_to(&self, rev: Revision) {
        self.synced.send_if_modified(|s| {
            let newer = rev > *s;
            if newer {
                *s = rev;
            }
            newer
        });
    }

    /// The newest revision an applied event carried.
    pub fn revision(&self) -> Revision {
        self.revision
    }
}

impl<K: Resource> Store<K> {
    pub fn get(&self, key: &ObjectKey) -> Option<Arc<K>> {
        read(&self.objects).get(key).cloned()
    }

    /// Every object, in no particular order.
    pub fn state(&self) -> Vec<Arc<K>> {
        read(&self.objects).values().cloned().collect()
    }

    /// The objects `keep` selects.
    pub fn filter(&self, keep: impl Fn(&K) -> bool) -> Vec<Arc<K>> {
        read(&self.objects)
            .values()
            .filter(|o| keep(o))
            .cloned()
            .collect()
    }

    /// Visits every object in place, in no particular order, without
    /// copying the cache: for a pass over many objects that keeps few
    /// (counting, say). Holds the cache's read lock throughout, so
    /// `visit` must be quick and must not wait on the cache's writer.
    pub fn for_each(&self, mut visit: impl FnMut(&K)) {
        for o in read(&self.objects).values() {
            visit(o);
        }
    }

    pub fn len(&self) -> usize {
        read(&self.objects).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// The newest revision the cache is known to reflect fully.
    pub fn synced(&self) -> Revision {
        *self.synced.borrow()
    }

    /// Waits until the cache is listed and reflects every change up to
    /// `rev`. Errors only when the writer is gone first.
    pub async fn wait_until_synced(&self, rev: Revision) -> Result<(), WriterDropped> {
        self.wait_until_ready().await?;
        let mut rx = self.synced.clone();
        rx.wait_for(|s| *s >= rev)
            .await
            .map(|_| ())
            .map_err(|_| WriterDropped)
    }

    /// Waits until the first list has been applied. Errors only when the
    /// writer is gone without ever being ready.
    pub async fn wait_until_ready(&self) -> Result<(), WriterDropped> {
        let mut rx = self.ready.clone();
        rx.wait_for(|r| *r)
            .await
            .map(|_| ())
            .map_err(|_| WriterDropped)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the cache's writer was dropped before the cache got where it was awaited")]
pub struct WriterDropped;

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;

    fn cm(ns: &str, name: &str, rv: u64) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.namespace = Some(ns.into());
        c.metadata.name = Some(name.into());
        c.metadata.resource_version = Some(rv.to_string());
        c
    }

    #[tokio::test]
    async fn a_relist_replaces_the_content_at_once() {
        let (store, mut w) = store::<ConfigMap>();
        assert!(!store.is_ready());
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(cm("a", "one", 3)));
        w.apply(&Event::InitApply(cm("a", "two", 4)));
        // Not visible before the list completes.
        assert!(store.is_empty());
        w.apply(&Event::InitDone);
        store.wait_until_ready().await.unwrap();
        assert_eq!(store.len(), 2);
        w.apply(&Event::Apply(cm("b", "three", 9)));
        w.apply(&Event::Delete(cm("a", "one", 10)));
        assert_eq!(w.revision(), Revision(10));
        let mut names: Vec<String> = store
            .state()
            .iter()
            .map(|c| ObjectKey::of(&**c).to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["a/two", "b/three"]);

        // A relist after a gap: "two" was deleted meanwhile, "four" created.
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(cm("b", "three", 9)));
        w.apply(&Event::InitApply(cm("c", "four", 12)));
        assert_eq!(store.len(), 2);
        assert!(store.get(&ObjectKey::new(Some("a"), "two")).is_some());
        w.apply(&Event::InitDone);
        assert!(store.get(&ObjectKey::new(Some("a"), "two")).is_none());
        assert!(store.get(&ObjectKey::new(Some("c"), "four")).is_some());
        assert_eq!(
            store
                .filter(|c| c.metadata.namespace.as_deref() == Some("b"))
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn a_cache_is_synced_by_events_and_progress_but_not_by_an_unfinished_relist() {
        let (store, mut w) = store::<ConfigMap>();
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(cm("a", "one", 3)));
        w.apply(&Event::InitDone);
        w.apply(&Event::Progress(Revision(5)));
        assert_eq!(store.synced(), Revision(5));
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { store.wait_until_synced(Revision(9)).await }
        });
        w.apply(&Event::Apply(cm("a", "two", 7)));
        assert_eq!(store.synced(), Revision(7));
        // A relist's progress is not the cache's until the list is in.
        w.apply(&Event::Init);
        w.apply(&Event::InitApply(cm("a", "one", 3)));
        w.apply(&Event::Progress(Revision(12)));
        assert_eq!(store.synced(), Revision(7));
        assert!(!waiting.is_finished());
        w.apply(&Event::InitDone);
        w.apply(&Event::Progress(Revision(12)));
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("synced past 9")
            .unwrap()
            .unwrap();
        // Never goes back.
        w.apply(&Event::Progress(Revision(10)));
        assert_eq!(store.synced(), Revision(12));
    }

    #[test]
    fn an_applied_object_is_shared_with_the_cache_not_copied() {
        let (store, mut w) = store::<ConfigMap>();
        let Event::Apply(given) = w.apply_owned(Event::Apply(cm("a", "one", 3))) else {
            panic!("an Apply gives back an Apply");
        };
        let cached = store.get(&ObjectKey::new(Some("a"), "one")).unwrap();
        assert!(Arc::ptr_eq(&given, &cached));
        assert_eq!(w.revision(), Revision(3));
        let Event::Delete(gone) = w.apply_owned(Event::Delete(cm("a", "one", 4))) else {
            panic!("a Delete gives back a Delete");
        };
        assert_eq!(gone.metadata.name.as_deref(), Some("one"));
        assert!(store.get(&ObjectKey::new(Some("a"), "one")).is_none());
    }
}
