//! What admission read of this replica's own state, per namespace, kept
//! until the replica applies a write of that resource.
//!
//! Every create in a namespace checks the namespace and reads its
//! ResourceQuotas (and, for a pod, its LimitRanges): two or three local
//! reads and JSON decodes of objects that almost never change, about a third
//! of a create's time on the leader. Upstream's admission plugins read them
//! from informers, a little behind the store. This cache is exact instead:
//!
//! ```text
//!  mark = resource_changes(resource)   (moves when a write of it is applied)
//!  read locally ─► remember (mark, ns, what was found)
//!  next lookup: the mark still where it was ─► the remembered answer
//!               it moved ─► everything remembered is dropped, read again
//! ```
//!
//! The mark is taken before the read and moves only once a write can be read
//! locally, so a remembered answer is what a local read would give now.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::store::{Revision, Store};

/// At most this many namespaces are remembered between writes.
const MAX_NAMESPACES: usize = 10_000;

pub struct LocalCache<T> {
    /// None: the store cannot say when the resource changes; nothing is kept.
    changes: Option<watch::Receiver<Revision>>,
    /// The mark the answers were read under, and the answers.
    kept: Mutex<(Revision, HashMap<String, T>)>,
}

impl<T: Clone> LocalCache<T> {
    pub fn new(store: &dyn Store, group: &str, resource: &str) -> Self {
        Self {
            changes: store.resource_changes(group, resource),
            kept: Mutex::new((Revision(0), HashMap::new())),
        }
    }

    fn mark(&self) -> Option<Revision> {
        self.changes.as_ref().map(|c| *c.borrow())
    }

    /// What `read` (a read of this replica's own state in namespace `ns`)
    /// finds, remembered when it finds something (`Some`).
    pub async fn get_or_read<E, F, Fut>(&self, ns: &str, read: F) -> Result<Option<T>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        let Some(mark) = self.mark() else {
            return read().await;
        };
        if let Some(found) = self.kept_at(mark, ns) {
            return Ok(Some(found));
        }
        let found = read().await?;
        if let Some(found) = &found {
            self.keep(mark, ns, found.clone());
        }
        Ok(found)
    }

    fn kept_at(&self, mark: Revision, ns: &str) -> Option<T> {
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if kept.0 != mark {
            return None;
        }
        kept.1.get(ns).cloned()
    }

    fn keep(&self, mark: Revision, ns: &str, found: T) {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if mark < kept.0 {
            // Read before a newer write that another read already saw.
            return;
        }
        if mark > kept.0 || kept.1.len() >= MAX_NAMESPACES {
            kept.1.clear();
            kept.0 = mark;
        }
        kept.1.insert(ns.to_string(), found);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::store::hooked::Hooked;
    use crate::store::mem::MemStore;
    use crate::store::window::WindowConfig;
    use crate::store::{ReadMode, ResourceKey};

    fn key(ns: &str, name: &str, resource: &str) -> ResourceKey {
        ResourceKey::new("", resource, Some(ns), name)
    }

    fn value(ns: &str, name: &str, v: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","namespace":"{ns}"}},"data":{{"v":"{v}"}}}}"#
        ))
    }

    async fn create(store: &dyn Store, resource: &str, ns: &str, name: &str, v: &str) {
        store
            .create(key(ns, name, resource), value(ns, name, v))
            .await
            .unwrap();
    }

    /// Reads configmap `ns/c`'s data through the cache, counting the reads
    /// that reach the store.
    async fn lookup(
        cache: &LocalCache<String>,
        store: &dyn Store,
        ns: &str,
        reads: &AtomicUsize,
    ) -> Option<String> {
        cache
            .get_or_read(ns, || async {
                reads.fetch_add(1, Ordering::SeqCst);
                match store
                    .get(&key(ns, "c", "configmaps"), ReadMode::Local)
                    .await
                {
                    Ok(o) => Ok(Some(String::from_utf8(o.data.to_vec()).unwrap())),
                    Err(crate::store::StoreError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn an_answer_is_kept_until_a_write_of_its_resource() {
        let store = MemStore::new(WindowConfig::default());
        let cache = LocalCache::<String>::new(store.as_ref(), "", "configmaps");
        let reads = AtomicUsize::new(0);
        create(store.as_ref(), "configmaps", "a", "c", "1").await;
        let first = lookup(&cache, store.as_ref(), "a", &reads).await.unwrap();
        assert!(first.contains(r#""v":"1""#));
        assert_eq!(
            lookup(&cache, store.as_ref(), "a", &reads).await,
            Some(first)
        );
        assert_eq!(reads.load(Ordering::SeqCst), 1, "the second lookup is kept");

        // Another resource's write leaves it.
        create(store.as_ref(), "secrets", "a", "s", "x").await;
        lookup(&cache, store.as_ref(), "a", &reads).await;
        assert_eq!(reads.load(Ordering::SeqCst), 1);

        // A write of the resource, in any namespace, drops it.
        create(store.as_ref(), "configmaps", "b", "c", "1").await;
        lookup(&cache, store.as_ref(), "a", &reads).await;
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        let obj = store
            .get(&key("a", "c", "configmaps"), ReadMode::Local)
            .await
            .unwrap();
        store
            .update(
                key("a", "c", "configmaps"),
                value("a", "c", "2"),
                Some(obj.revision),
            )
            .await
            .unwrap();
        let after = lookup(&cache, store.as_ref(), "a", &reads).await.unwrap();
        assert!(after.contains(r#""v":"2""#), "{after}");
        assert_eq!(reads.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn nothing_found_is_not_kept() {
        let store = MemStore::new(WindowConfig::default());
        let cache = LocalCache::<String>::new(store.as_ref(), "", "configmaps");
        let reads = AtomicUsize::new(0);
        assert_eq!(lookup(&cache, store.as_ref(), "a", &reads).await, None);
        assert_eq!(lookup(&cache, store.as_ref(), "a", &reads).await, None);
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_store_that_cannot_say_is_read_every_time() {
        let store = Arc::new(Hooked::new());
        let cache = LocalCache::<String>::new(store.as_ref(), "", "configmaps");
        let reads = AtomicUsize::new(0);
        create(store.as_ref(), "configmaps", "a", "c", "1").await;
        lookup(&cache, store.as_ref(), "a", &reads).await.unwrap();
        lookup(&cache, store.as_ref(), "a", &reads).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn an_answer_read_before_a_newer_one_is_not_kept() {
        let store = MemStore::new(WindowConfig::default());
        let cache = LocalCache::<String>::new(store.as_ref(), "", "configmaps");
        cache.keep(Revision(5), "a", "new".into());
        cache.keep(Revision(3), "b", "old".into());
        assert_eq!(cache.kept_at(Revision(5), "a"), Some("new".into()));
        assert_eq!(cache.kept_at(Revision(5), "b"), None);
        assert_eq!(cache.kept_at(Revision(3), "b"), None);
    }
}
