//! What a live lookup (a linearizable read, past this replica's own state)
//! found, remembered per namespace for a while, as upstream's LimitRanger
//! keeps its `liveLookupCache` (30 s): without it, every pod created in a
//! namespace with no LimitRange would pay a read-index round.
//!
//! Only misses of the local state reach here, so a namespace whose objects
//! this replica already sees never waits on it; what a remembered lookup can
//! miss is an object created through another master within `ttl` of the
//! lookup and not yet applied here, the window upstream accepts too.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// upstream's `liveTTL` for LimitRange lookups.
pub const LIVE_TTL: Duration = Duration::from_secs(30);

/// The bound on namespaces remembered (upstream's LRU holds 10,000).
const MAX_NAMESPACES: usize = 10_000;

/// What a lookup found, and when.
type Found = (Instant, Arc<Vec<Value>>);

pub struct LiveLookups {
    ttl: Duration,
    found: Mutex<HashMap<String, Found>>,
}

impl LiveLookups {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            found: Mutex::default(),
        }
    }

    /// What a lookup in `ns` found less than `ttl` before `now`.
    pub fn get(&self, ns: &str, now: Instant) -> Option<Arc<Vec<Value>>> {
        let found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        let (at, items) = found.get(ns)?;
        (now.saturating_duration_since(*at) < self.ttl).then(|| items.clone())
    }

    /// Remembers what a lookup in `ns` found at `now`.
    pub fn put(&self, ns: &str, items: Arc<Vec<Value>>, now: Instant) {
        let mut found = self.found.lock().unwrap_or_else(|e| e.into_inner());
        if found.len() >= MAX_NAMESPACES && !found.contains_key(ns) {
            let ttl = self.ttl;
            found.retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
            if found.len() >= MAX_NAMESPACES {
                found.clear();
            }
        }
        found.insert(ns.to_string(), (now, items));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_lookup_is_remembered_for_the_ttl_per_namespace() {
        let cache = LiveLookups::new(LIVE_TTL);
        let t0 = Instant::now();
        assert!(cache.get("a", t0).is_none());
        cache.put("a", Arc::new(vec![]), t0);
        cache.put("b", Arc::new(vec![json!({"kind": "LimitRange"})]), t0);
        assert_eq!(
            cache
                .get("a", t0 + Duration::from_secs(29))
                .map(|v| v.len()),
            Some(0)
        );
        assert_eq!(cache.get("b", t0).map(|v| v.len()), Some(1));
        assert!(cache.get("a", t0 + LIVE_TTL).is_none());
        assert!(cache.get("c", t0).is_none());
    }
}
