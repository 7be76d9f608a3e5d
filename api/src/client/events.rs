//! Kubernetes Events (core/v1) about objects, as client-go's recorder writes
//! them: `kubectl describe` shows them under the object.
//!
//! ```text
//!  Recorder::event (never blocks; drops when full) ──bounded──► one task:
//!     same (object, type, reason, message) seen before? ─ yes ─► patch count+1, lastTimestamp
//!                                                       └ no ──► create <name>.<hex nanos>
//! ```
//!
//! Recording is best effort, as upstream: a full channel or a failed write
//! loses the event (logged once), never slows the caller. The one task owns
//! the dedupe cache; writes run concurrently, a bounded number at a time.
//!
//! As client-go's EventSourceObjectSpamFilter, each (component, object) may
//! write 25 events at once and one more every 5 minutes; the rest are
//! dropped. A ReplicaSet of 10,000 replicas thus costs 25 Events, not
//! 10,000 Raft writes beside its pods. A recorder may also be held to its
//! component's client rate ([`Recorder::limited`]): the scheduler's, as
//! kube-scheduler's event client, writes 50 a second after a burst of 100.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::token_bucket::{Rate, TokenBucket};
use super::{Api, Client, Patch, PatchParams, PostParams, Resource};
use crate::registry::Reason;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Events waiting to be written before new ones are dropped (client-go's
/// maxQueuedEvents, whose broadcaster drops when its queue is full).
const QUEUE: usize = 1000;
/// Event writes in flight at once.
const WRITES_IN_FLIGHT: usize = 32;
/// Distinct events remembered for deduplication (cleared when full).
const CACHE: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

#[derive(Debug)]
struct Record {
    component: Arc<str>,
    object: ObjectReference,
    type_: EventType,
    reason: String,
    message: String,
}

/// Events one component may write about one object at once (client-go's
/// defaultSpamBurst).
const SPAM_BURST: u32 = 25;
/// How often that allowance grows back by one (client-go's defaultSpamQPS,
/// 1/300).
const SPAM_REFILL: Duration = Duration::from_secs(300);

/// What the spam filter counts by: component, and the object's namespace,
/// name, uid and kind (client-go's getSpamKey; we set no source host).
type SpamKey = (Arc<str>, String, String, String, String);

/// Token buckets per [`SpamKey`], refilled lazily; cleared when full
/// (upstream keeps an LRU of the same size).
struct SpamFilter {
    buckets: HashMap<SpamKey, (f64, Instant)>,
}

impl SpamFilter {
    fn new() -> Self {
        Self {
            buckets: HashMap::new(),
        }
    }

    /// Whether `r` may be written at `now` (and if so, spends a token).
    fn allow(&mut self, r: &Record, now: Instant) -> bool {
        if self.buckets.len() >= CACHE {
            self.buckets.clear();
        }
        let o = &r.object;
        let key = (
            r.component.clone(),
            o.namespace.clone().unwrap_or_default(),
            o.name.clone().unwrap_or_default(),
            o.uid.clone().unwrap_or_default(),
            o.kind.clone().unwrap_or_default(),
        );
        let burst = f64::from(SPAM_BURST);
        let (tokens, at) = self.buckets.entry(key).or_insert((burst, now));
        let refilled = now.saturating_duration_since(*at).as_secs_f64() / SPAM_REFILL.as_secs_f64();
        *tokens = (*tokens + refilled).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What identifies repeats of one event: component, namespace, uid, type,
/// reason, message (client-go's EventCorrelator key, less what never varies).
type Key = (Arc<str>, String, String, EventType, String, String);

/// A cheap-clone handle; events go to the task `Recorder::new` returned.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Record>,
    component: Arc<str>,
    /// Events dropped on a full queue, by every handle of this writer.
    dropped: Arc<AtomicU64>,
}

/// The reference an Event's `involvedObject` holds for `object`.
pub fn object_ref<K: Resource>(object: &K) -> ObjectReference {
    let meta = object.metadata();
    ObjectReference {
        api_version: Some(K::API_VERSION.into()),
        kind: Some(K::KIND.into()),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        field_path: None,
    }
}

use crate::clock::now_to_second as now;

impl Recorder {
    /// A recorder writing as `component` (`source.component`,
    /// `reportingComponent`), and the task that writes: run it (it ends when
    /// every handle is dropped).
    pub fn new(
        client: Client,
        component: &str,
    ) -> (Recorder, impl std::future::Future<Output = ()> + Send) {
        Self::limited(client, component, None)
    }

    /// As [`Recorder::new`], its writes held to `rate` (the component's
    /// client rate limit, as upstream's event sinks share their client's):
    /// events beyond it wait in the queue, and are dropped once it is full.
    pub fn limited(
        client: Client,
        component: &str,
        rate: Option<Rate>,
    ) -> (Recorder, impl std::future::Future<Output = ()> + Send) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = write_events(client, rx, rate);
        let recorder = Recorder {
            tx,
            component: component.into(),
            dropped: Arc::default(),
        };
        (recorder, task)
    }

    /// A handle on the same writer that records as another component (one
    /// writer task serves every controller of the manager).
    pub fn named(&self, component: &str) -> Recorder {
        Recorder {
            tx: self.tx.clone(),
            component: component.into(),
            dropped: self.dropped.clone(),
        }
    }

    pub fn component(&self) -> &str {
        &self.component
    }

    /// Records an event about `object`; never waits.
    pub fn event(
        &self,
        object: ObjectReference,
        type_: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        let record = Record {
            component: self.component.clone(),
            object,
            type_,
            reason: reason.into(),
            message: message.into(),
        };
        if let Err(mpsc::error::TrySendError::Full(r)) = self.tx.try_send(record) {
            // Logged at the 1st, 2nd, 4th, ... drop: a writer held to its
            // rate may drop thousands in a burst.
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(reason = %r.reason, dropped = n, "event queue full; dropping events");
            }
        }
    }
}

struct Seen {
    name: String,
    count: i32,
    first: Timestamp,
}

fn key(r: &Record) -> Key {
    (
        r.component.clone(),
        r.object.namespace.clone().unwrap_or_default(),
        r.object.uid.clone().unwrap_or_default(),
        r.type_,
        r.reason.clone(),
        r.message.clone(),
    )
}

async fn write_events(client: Client, mut rx: mpsc::Receiver<Record>, rate: Option<Rate>) {
    let mut seen: HashMap<Key, Seen> = HashMap::new();
    let mut spam = SpamFilter::new();
    let mut limit = rate.map(|r| TokenBucket::new(r, tokio::time::Instant::now()));
    let mut writes = JoinSet::new();
    while let Some(r) = rx.recv().await {
        if !spam.allow(&r, Instant::now()) {
            tracing::debug!(reason = %r.reason, object = ?r.object.name, "event over its source's burst; dropped");
            continue;
        }
        if let Some(l) = limit.as_mut() {
            l.wait().await;
        }
        while writes.len() >= WRITES_IN_FLIGHT {
            writes.join_next().await;
        }
        while writes.try_join_next().is_some() {}
        let now = now();
        if seen.len() >= CACHE {
            seen.clear();
        }
        let ns = r
            .object
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api = Api::<Event>::namespaced(client.clone(), &ns);
        let k = key(&r);
        let write = match seen.get_mut(&k) {
            Some(s) => {
                s.count += 1;
                Write::Bump {
                    name: s.name.clone(),
                    count: s.count,
                    fallback: build(&r, &s.name, s.count, s.first, now),
                }
            }
            None => {
                let nanos = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let name = format!(
                    "{}.{:x}",
                    r.object.name.as_deref().unwrap_or("unknown"),
                    nanos
                );
                let ev = build(&r, &name, 1, now, now);
                seen.insert(
                    k,
                    Seen {
                        name,
                        count: 1,
                        first: now,
                    },
                );
                Write::Create(ev)
            }
        };
        writes.spawn(write.run(api, now));
    }
    while writes.join_next().await.is_some() {}
}

enum Write {
    Create(Event),
    Bump {
        name: String,
        count: i32,
        /// Created instead when the event is gone (expired, deleted).
        fallback: Event,
    },
}

impl Write {
    async fn run(self, api: Api<Event>, now: Timestamp) {
        let result = match self {
            Write::Create(ev) => api
                .create_revision(&ev, &PostParams::default())
                .await
                .map(drop),
            Write::Bump {
                name,
                count,
                fallback,
            } => {
                let patch = Patch::Merge(json!({
                    "count": count,
                    "lastTimestamp": now.to_string(),
                }));
                match api
                    .patch_revision(&name, &PatchParams::default(), &patch)
                    .await
                {
                    Err(e) if e.reason == Reason::NotFound => api
                        .create_revision(&fallback, &PostParams::default())
                        .await
                        .map(drop),
                    other => other.map(drop),
                }
            }
        };
        match result {
            Ok(()) => {}
            // The create of a repeat raced its first write: counted anyway.
            Err(e) if e.reason == Reason::AlreadyExists => {}
            Err(e) => tracing::warn!(error = %e.message, "writing an event failed; dropped"),
        }
    }
}

fn build(r: &Record, name: &str, count: i32, first: Timestamp, last: Timestamp) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: r.object.namespace.clone(),
            ..Default::default()
        },
        involved_object: r.object.clone(),
        reason: Some(r.reason.clone()),
        message: Some(r.message.clone()),
        type_: Some(r.type_.as_str().into()),
        source: Some(EventSource {
            component: Some(r.component.to_string()),
            host: None,
        }),
        reporting_component: Some(r.component.to_string()),
        reporting_instance: Some(r.component.to_string()),
        count: Some(count),
        first_timestamp: Some(Time(first)),
        last_timestamp: Some(Time(last)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(component: &str, object: &str, message: &str) -> Record {
        Record {
            component: component.into(),
            object: ObjectReference {
                kind: Some("ReplicaSet".into()),
                namespace: Some("ns".into()),
                name: Some(object.into()),
                uid: Some(format!("uid-{object}")),
                ..Default::default()
            },
            type_: EventType::Normal,
            reason: "SuccessfulCreate".into(),
            message: message.into(),
        }
    }

    #[test]
    fn spam_filter_allows_a_burst_per_source_and_object_then_one_per_refill() {
        let mut f = SpamFilter::new();
        let t0 = Instant::now();
        let allowed = (0..100)
            .filter(|i| f.allow(&record("rs", "a", &format!("Created pod: a-{i}")), t0))
            .count();
        assert_eq!(
            allowed, SPAM_BURST as usize,
            "distinct messages share the bucket"
        );
        // Another object, or another component about the same object: its own.
        assert!(f.allow(&record("rs", "b", "Created pod: b-0"), t0));
        assert!(f.allow(&record("deployment", "a", "Scaled up"), t0));
        // One more after a refill period, not two.
        let later = t0 + SPAM_REFILL;
        assert!(f.allow(&record("rs", "a", "Created pod: a-100"), later));
        assert!(!f.allow(&record("rs", "a", "Created pod: a-101"), later));
        // Long idle: back to a full burst, no more.
        let idle = later + SPAM_REFILL * 100;
        let allowed = (0..100)
            .filter(|i| f.allow(&record("rs", "a", &format!("again {i}")), idle))
            .count();
        assert_eq!(allowed, SPAM_BURST as usize);
    }
}
