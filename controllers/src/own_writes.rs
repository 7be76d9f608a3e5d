//! The resourceVersion of each object's last write by this controller. A
//! reconcile that finds its cache older than that would decide from state
//! it has itself already changed: it waits for the cache instead (the
//! write's watch event reconciles the object again). Without this, every
//! status write is followed by a reconcile on the old copy whose own write
//! then fails with a conflict.

use std::collections::HashMap;
use std::sync::Mutex;

use balsa_api::client::{ObjectKey, Resource};

#[derive(Default)]
pub struct OwnWrites {
    last: Mutex<HashMap<ObjectKey, u64>>,
}

fn revision<K: Resource>(obj: &K) -> u64 {
    obj.metadata()
        .resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0)
}

impl OwnWrites {
    /// Records `written`, the object as a write returned it.
    pub fn wrote<K: Resource>(&self, written: &K) {
        let mut map = self.last.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(ObjectKey::of(written), revision(written));
    }

    /// Whether `cached` is at least as new as this controller's last write
    /// of it (forgetting the write once the cache has caught up).
    pub fn caught_up<K: Resource>(&self, cached: &K) -> bool {
        let mut map = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let key = ObjectKey::of(cached);
        match map.get(&key) {
            Some(w) if revision(cached) < *w => false,
            Some(_) => {
                map.remove(&key);
                true
            }
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;

    use super::*;

    fn at(rv: u64) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.name = Some("c".into());
        c.metadata.resource_version = Some(rv.to_string());
        c
    }

    #[test]
    fn a_cache_older_than_the_last_write_is_not_caught_up() {
        let w = OwnWrites::default();
        assert!(w.caught_up(&at(5)));
        w.wrote(&at(9));
        assert!(!w.caught_up(&at(5)));
        assert!(w.caught_up(&at(9)));
        assert!(w.caught_up(&at(3)), "forgotten once caught up");
    }
}
