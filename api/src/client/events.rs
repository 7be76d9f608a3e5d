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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Api, Client, Patch, PatchParams, PostParams, Resource};
use crate::registry::Reason;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Events waiting to be written before new ones are dropped.
const QUEUE: usize = 4096;
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

/// What identifies repeats of one event: component, namespace, uid, type,
/// reason, message (client-go's EventCorrelator key, less what never varies).
type Key = (Arc<str>, String, String, EventType, String, String);

/// A cheap-clone handle; events go to the task `Recorder::new` returned.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Record>,
    component: Arc<str>,
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
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = write_events(client, rx);
        let recorder = Recorder {
            tx,
            component: component.into(),
        };
        (recorder, task)
    }

    /// A handle on the same writer that records as another component (one
    /// writer task serves every controller of the manager).
    pub fn named(&self, component: &str) -> Recorder {
        Recorder {
            tx: self.tx.clone(),
            component: component.into(),
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
            tracing::warn!(reason = %r.reason, "event queue full; dropping event");
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

async fn write_events(client: Client, mut rx: mpsc::Receiver<Record>) {
    let mut seen: HashMap<Key, Seen> = HashMap::new();
    let mut writes = JoinSet::new();
    while let Some(r) = rx.recv().await {
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
            Write::Create(ev) => api.create(&ev, &PostParams::default()).await.map(|_| ()),
            Write::Bump {
                name,
                count,
                fallback,
            } => {
                let patch = Patch::Merge(json!({
                    "count": count,
                    "lastTimestamp": now.to_string(),
                }));
                match api.patch(&name, &PatchParams::default(), &patch).await {
                    Err(e) if e.reason == Reason::NotFound => api
                        .create(&fallback, &PostParams::default())
                        .await
                        .map(|_| ()),
                    other => other.map(|_| ()),
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
