//! Watch responses: one JSON event per line on a chunked 200 response, served
//! from the replicated log through the registry; Table events for `kubectl get
//! -w`; ended by `timeoutSeconds` (default: a random 30-60 minutes, as
//! kube-apiserver does, so clients spread their reconnects).

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use futures::StreamExt;
use serde_json::json;

use super::negotiate::{Wants, JSON};
use super::route::Target;
use super::table::{table, Include};
use crate::registry::{ApiError, FieldSelector, LabelSelector, Registry, WatchItem, WatchQuery};

const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

fn timeout(q: &HashMap<String, String>) -> Result<Duration, ApiError> {
    match q.get("timeoutSeconds") {
        Some(t) => t.parse::<u64>().map(Duration::from_secs).map_err(|_| {
            ApiError::bad_request(format!("timeoutSeconds must be a number, not {t:?}"))
        }),
        None => Ok(Duration::from_secs(1800 + rand::random::<u64>() % 1800)),
    }
}

pub async fn serve(
    reg: &Registry,
    t: &Target,
    q: &HashMap<String, String>,
    wants: Wants,
) -> Result<Response, ApiError> {
    let query = WatchQuery {
        labels: LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))?,
        fields: FieldSelector::parse(
            q.get("fieldSelector").map_or("", String::as_str),
            t.kind.group,
            t.kind.kind,
        )?,
        resource_version: q.get("resourceVersion").cloned(),
        bookmarks: super::truthy(q.get("allowWatchBookmarks")),
        bookmark_interval: Some(BOOKMARK_EVERY),
    };
    let until = tokio::time::sleep(timeout(q)?);
    let kind = t.kind;
    let include = Include::parse(q.get("includeObject").map(String::as_str));
    let events = reg.watch(kind, t.ns.as_deref(), query).await?;
    let lines = events.take_until(until).map(move |item| {
        let mut v = item.to_json();
        if let (Wants::Table, WatchItem::Event { ty, object }) = (wants, &item) {
            if *ty != "BOOKMARK" {
                let meta = json!({"resourceVersion": object["metadata"]["resourceVersion"]});
                v["object"] = table(kind, std::slice::from_ref(object), meta, include);
            }
        }
        let mut line = serde_json::to_vec(&v).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::io::Error>(line)
    });
    let mut resp = Response::new(Body::from_stream(lines));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    Ok(resp)
}
