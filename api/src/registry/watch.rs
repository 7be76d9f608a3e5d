//! Watches as Kubernetes clients see them: store events filtered by label and
//! field selectors (an object leaving the selection is a DELETED, one entering
//! it an ADDED), initial state for `resourceVersion` unset or `0`, bookmarks,
//! and `410 Expired` as an ERROR event.

use std::time::Duration;

use futures::{stream, Stream, StreamExt};
use serde_json::{json, Value};

use super::error::ApiError;
use super::{decode_object, parse_rv, prepare, FieldSelector, Kind, LabelSelector, Registry};
use crate::store::{EventType, ListOptions, ReadMode, Revision, WatchEvent, WatchOptions};

#[derive(Debug, Clone, Default)]
pub struct WatchQuery {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub resource_version: Option<String>,
    pub bookmarks: bool,
    /// How often an idle watch gets a bookmark.
    pub bookmark_interval: Option<Duration>,
}

/// One item of a watch, as the wire carries it.
#[derive(Debug, Clone)]
pub enum WatchItem {
    /// ADDED, MODIFIED, DELETED or BOOKMARK with its object.
    Event { ty: &'static str, object: Value },
    /// The watch ends with this error (an ERROR event holding its Status).
    Error(ApiError),
}

impl WatchItem {
    pub fn to_json(&self) -> Value {
        match self {
            WatchItem::Event { ty, object } => json!({"type": ty, "object": object}),
            WatchItem::Error(e) => json!({"type": "ERROR", "object": e.status()}),
        }
    }
}

fn selected(q: &WatchQuery, v: &Value) -> bool {
    q.labels.matches(&v["metadata"]["labels"]) && q.fields.matches(v)
}

impl Registry {
    pub async fn watch(
        &self,
        kind: &'static Kind,
        ns: Option<&str>,
        q: WatchQuery,
    ) -> Result<impl Stream<Item = WatchItem> + Send + 'static, ApiError> {
        let mut prefix = Registry::prefix(kind, ns);
        if let Some(name) = q.fields.name() {
            prefix.name = Some(name.to_string());
        }
        // Unset or 0: the current state as ADDED events, then what follows.
        let (initial, after) = match q.resource_version.as_deref() {
            None | Some("") | Some("0") => {
                let read = if q.resource_version.is_none() {
                    ReadMode::Linearizable
                } else {
                    ReadMode::Local
                };
                let res = self
                    .store()
                    .list(
                        &prefix,
                        ListOptions {
                            read,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(|e| ApiError::from_store(e, prepare::subject(kind, "")))?;
                let mut items = Vec::new();
                for obj in &res.items {
                    let v = decode_object(obj)?;
                    if selected(&q, &v) {
                        items.push(WatchItem::Event {
                            ty: "ADDED",
                            object: v,
                        });
                    }
                }
                (items, res.revision)
            }
            Some(rv) => (Vec::new(), parse_rv(rv)?),
        };
        let opts = WatchOptions {
            after,
            bookmark_interval: q.bookmark_interval.filter(|_| q.bookmarks),
        };
        let events = match self.store().watch(&prefix, opts).await {
            Ok(s) => s,
            Err(e) => {
                let err = ApiError::from_store(e, prepare::subject(kind, ""));
                return Ok(stream::iter(vec![WatchItem::Error(err)]).boxed());
            }
        };
        let api_version = kind.api_version();
        let kind_name = kind.kind;
        let live = events
            .scan(false, move |ended, item| {
                if *ended {
                    return futures::future::ready(None);
                }
                let out = match item {
                    Ok(WatchEvent::Bookmark(rev)) => vec![bookmark(kind_name, &api_version, rev)],
                    Ok(WatchEvent::Event(ev)) => convert(&q, ev),
                    Err(e) => {
                        *ended = true;
                        vec![WatchItem::Error(ApiError::from_store(
                            e,
                            prepare::subject(kind, ""),
                        ))]
                    }
                };
                futures::future::ready(Some(stream::iter(out)))
            })
            .flatten();
        Ok(stream::iter(initial).chain(live).boxed())
    }
}

fn bookmark(kind: &str, api_version: &str, rev: Revision) -> WatchItem {
    WatchItem::Event {
        ty: "BOOKMARK",
        object: json!({"kind": kind, "apiVersion": api_version,
            "metadata": {"resourceVersion": rev.to_string()}}),
    }
}

fn convert(q: &WatchQuery, ev: crate::store::Event) -> Vec<WatchItem> {
    let Ok(object) = decode_object(&ev.object) else {
        return Vec::new();
    };
    let now = selected(q, &object);
    let before = match (&ev.kind, &ev.prev) {
        (EventType::Modified, Some(prev)) => decode_object(prev).is_ok_and(|p| selected(q, &p)),
        _ => now,
    };
    let ty = match (ev.kind, before, now) {
        (EventType::Added, _, true) => "ADDED",
        (EventType::Deleted, _, true) => "DELETED",
        (EventType::Modified, true, true) => "MODIFIED",
        (EventType::Modified, false, true) => "ADDED",
        (EventType::Modified, true, false) => "DELETED",
        _ => return Vec::new(),
    };
    vec![WatchItem::Event { ty, object }]
}
