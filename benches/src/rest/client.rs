//! A minimal Kubernetes REST client over hyper: ConfigMaps in a namespace
//! (create, get, list, watch) and namespaces, as JSON.
//!
//! Balsa's REST listener speaks HTTP/1.1 only, so a request in flight holds a
//! connection to itself: each client is a keep-alive pool that opens as many
//! connections to its master as there are requests in flight (64 workers, 64
//! connections) and reuses them; a watch holds its connection until dropped.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use crate::system::{value, Kv, NameStream};

/// What the server sees as the field manager (and in its logs).
const USER_AGENT: &str = "balsa-bench/0";

#[derive(Clone)]
pub struct RestClient {
    http: Client<HttpConnector, Full<Bytes>>,
    /// `http://host:port`
    base: Arc<str>,
    value: Arc<str>,
}

#[derive(Deserialize)]
struct Meta {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "resourceVersion")]
    resource_version: String,
}

#[derive(Deserialize)]
struct Object {
    metadata: Meta,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    ty: String,
    object: serde_json::Value,
}

#[derive(Deserialize)]
struct List {
    items: Vec<serde::de::IgnoredAny>,
}

/// The start of an error body, enough to show a Status message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.trim().to_string()
}

impl RestClient {
    /// A client of the REST API at `addr` (`host:port`); connects lazily.
    pub fn new(addr: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(120))
            .build(connector);
        Self {
            http,
            base: format!("http://{addr}").into(),
            value: value().into(),
        }
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<Response<Incoming>> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(hyper::header::USER_AGENT, USER_AGENT)
            .header(hyper::header::ACCEPT, "application/json");
        let body = match body {
            Some(b) => {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(b))
            }
            None => Full::new(Bytes::new()),
        };
        self.http
            .request(req.body(body)?)
            .await
            .map_err(|e| anyhow!("{path}: {e:?}"))
    }

    /// Sends a request and reads the whole answer; an error unless it is
    /// `want` (or, with `tolerate`, that one).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        want: StatusCode,
        tolerate: Option<StatusCode>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let resp = self.request(method.clone(), path, body).await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .with_context(|| format!("{method} {path}: reading the body"))?
            .to_bytes();
        if status != want && Some(status) != tolerate {
            bail!("{method} {path}: {status}: {}", snippet(&bytes));
        }
        Ok((status, bytes))
    }

    fn configmaps(space: &str) -> String {
        format!("/api/v1/namespaces/{space}/configmaps")
    }

    fn object(&self, space: &str, name: &str) -> String {
        format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}","namespace":"{space}"}},"data":{{"v":"{}"}}}}"#,
            self.value
        )
    }

    /// Creates a namespace (an existing one is fine).
    pub async fn create_namespace(&self, name: &str) -> anyhow::Result<()> {
        let body =
            format!(r#"{{"apiVersion":"v1","kind":"Namespace","metadata":{{"name":"{name}"}}}}"#);
        self.call(
            Method::POST,
            "/api/v1/namespaces",
            Some(body),
            StatusCode::CREATED,
            Some(StatusCode::CONFLICT),
        )
        .await
        .map(drop)
    }

    /// Lists the ConfigMaps of `space` (a linearizable read) without decoding
    /// them; returns the size of the answer.
    pub async fn list_bytes(&self, space: &str) -> anyhow::Result<usize> {
        let (_, body) = self
            .call(
                Method::GET,
                &Self::configmaps(space),
                None,
                StatusCode::OK,
                None,
            )
            .await?;
        Ok(body.len())
    }

    /// How many ConfigMaps a list of `space` holds (decodes the answer).
    pub async fn count(&self, space: &str) -> anyhow::Result<usize> {
        let (_, body) = self
            .call(
                Method::GET,
                &Self::configmaps(space),
                None,
                StatusCode::OK,
                None,
            )
            .await?;
        let list: List = serde_json::from_slice(&body).context("decoding a list")?;
        Ok(list.items.len())
    }
}

/// One watch line: the name of the object of an ADDED/MODIFIED/DELETED event,
/// `None` for a bookmark, an error for an ERROR event or a bad line.
fn event_name(line: &[u8]) -> anyhow::Result<Option<String>> {
    let event: Event = serde_json::from_slice(line).context("decoding a watch line")?;
    match event.ty.as_str() {
        "BOOKMARK" => Ok(None),
        "ERROR" => bail!("watch error: {}", event.object),
        _ => {
            let obj: Object =
                serde_json::from_value(event.object).context("decoding a watch event's object")?;
            Ok(Some(obj.metadata.name))
        }
    }
}

/// Splits a chunked watch body into lines; each item holds the names of the
/// events of the lines completed by one chunk.
fn watch_lines(body: Incoming) -> NameStream {
    futures::stream::unfold(Some((body, Vec::<u8>::new())), |state| async move {
        let (mut body, mut buf) = state?;
        loop {
            let frame = match body.frame().await {
                None => return None,
                Some(Err(e)) => return Some((Err(anyhow!("watch body: {e}")), None)),
                Some(Ok(f)) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            let mut names = Vec::new();
            while let Some(at) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=at).collect();
                match event_name(&line) {
                    Ok(Some(name)) => names.push(name),
                    Ok(None) => {}
                    Err(e) => return Some((Err(e), None)),
                }
            }
            if !names.is_empty() {
                return Some((Ok(names), Some((body, buf))));
            }
        }
    })
    .boxed()
}

impl Kv for RestClient {
    async fn put(&self, space: &str, name: &str, retry: bool) -> anyhow::Result<u64> {
        let tolerate = retry.then_some(StatusCode::CONFLICT);
        let (status, body) = self
            .call(
                Method::POST,
                &Self::configmaps(space),
                Some(self.object(space, name)),
                StatusCode::CREATED,
                tolerate,
            )
            .await?;
        if status == StatusCode::CONFLICT {
            return Ok(0);
        }
        let obj: Object = serde_json::from_slice(&body).context("decoding a created object")?;
        obj.metadata
            .resource_version
            .parse()
            .with_context(|| format!("resourceVersion {:?}", obj.metadata.resource_version))
    }

    async fn get(&self, space: &str, name: &str) -> anyhow::Result<()> {
        let path = format!("{}/{name}", Self::configmaps(space));
        self.call(Method::GET, &path, None, StatusCode::OK, None)
            .await
            .map(drop)
    }

    async fn watch(&self, space: &str, after: u64) -> anyhow::Result<NameStream> {
        let path = format!(
            "{}?watch=1&resourceVersion={after}",
            Self::configmaps(space)
        );
        let resp = self.request(Method::GET, &path, None).await?;
        if resp.status() != StatusCode::OK {
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            bail!("GET {path}: {status}: {}", snippet(&body));
        }
        Ok(watch_lines(resp.into_body()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_lines_name_their_objects() {
        let added = br#"{"type":"ADDED","object":{"kind":"ConfigMap","metadata":{"name":"w-0000001","resourceVersion":"7"}}}"#;
        assert_eq!(event_name(added).expect("parses"), Some("w-0000001".into()));
        let bookmark =
            br#"{"type":"BOOKMARK","object":{"kind":"ConfigMap","metadata":{"resourceVersion":"9"}}}"#;
        assert_eq!(event_name(bookmark).expect("parses"), None);
        let error = br#"{"type":"ERROR","object":{"kind":"Status","code":410}}"#;
        assert!(event_name(error).is_err());
        assert!(event_name(b"not json").is_err());
    }
}
