//! The Kubernetes REST API over the registry, with axum.
//!
//! ```text
//!  GET/POST/PUT/PATCH/DELETE /api/v1/..., /apis/G/V/...
//!     └─ route (path → kind, namespace, name, subresource)
//!         └─ negotiate (body: JSON | YAML | protobuf; answer: object | Table)
//!             └─ registry (the same one the gRPC service uses)
//! ```
//!
//! Discovery, `/version`, health and OpenAPI are static documents built from
//! the kinds table.

mod discovery;
mod logs;
mod negotiate;
mod route;
mod table;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{to_bytes, Body};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::openapi;
use crate::registry::{
    ApiError, DeleteOptions, FieldSelector, FieldValidation, LabelSelector, ListQuery, Part,
    PatchType, Reason, Registry, ScaleChange, WriteOptions,
};
use crate::store::ReadMode;
use negotiate::{decode_body, error_response, json_response, wants, Answer, Wants};
use route::Target;
use table::{table, Include};

pub use negotiate::MAX_BODY;

struct Rest {
    registry: Registry,
}

type Shared = State<Arc<Rest>>;
type Params = Query<HashMap<String, String>>;

/// The Kubernetes API router for one master.
pub fn router(registry: Registry) -> Router {
    let state = Arc::new(Rest { registry });
    Router::new()
        .route(
            "/version",
            get(|| async { axum::Json(discovery::version()) }),
        )
        .route("/healthz", get(health))
        .route("/livez", get(health))
        .route("/readyz", get(ready))
        .route("/api", get(api))
        .route("/apis", get(apis))
        .route("/openapi/v2", get(openapi_v2))
        .route(
            "/openapi/v3",
            get(|| async { document(openapi::v3_index_document()) }),
        )
        .route("/openapi/v3/{*path}", get(openapi_v3))
        .fallback(resource)
        .with_state(state)
}

fn document(doc: &openapi::Document) -> Response {
    let mut resp = Response::new(Body::from(doc.json.clone()));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(negotiate::JSON),
    );
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", doc.hash)) {
        resp.headers_mut().insert(header::ETAG, etag);
    }
    resp
}

/// kubectl asks for v2 as protobuf only (and parses whatever comes back as
/// protobuf); other clients get JSON.
async fn openapi_v2(headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .unwrap_or_default();
    if accept.contains("protobuf") {
        let mut resp = Response::new(Body::from(openapi::v2_protobuf().clone()));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(openapi::V2_PROTOBUF_CONTENT_TYPE),
        );
        return resp;
    }
    document(openapi::v2())
}

async fn openapi_v3(axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    match openapi::v3_at(&path) {
        Some(doc) => document(doc),
        None => error_response(&route::not_found()),
    }
}

async fn health() -> &'static str {
    "ok"
}

async fn ready(State(s): Shared) -> Response {
    match s.registry.store().revision(ReadMode::Local).await {
        Ok(_) => "ok".into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store not ready: {e}"),
        )
            .into_response(),
    }
}

fn discovery_answer(headers: &HeaderMap, core: bool, legacy: Value) -> Response {
    if negotiate::wants_aggregated(headers) {
        let mut resp = json_response(StatusCode::OK, &discovery::aggregated(core), &[]);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(negotiate::DISCOVERY_V2),
        );
        return resp;
    }
    json_response(StatusCode::OK, &legacy, &[])
}

async fn api(headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    discovery_answer(&headers, true, discovery::api_versions(&host))
}

async fn apis(headers: HeaderMap) -> Response {
    discovery_answer(&headers, false, discovery::api_groups())
}

fn truthy(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("true" | "1" | "True"))
}

fn write_options(
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<WriteOptions, ApiError> {
    let dry_run = match q.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: {other:?}: supported values: \"All\""
            )))
        }
    };
    let manager = match q.get("fieldManager").filter(|m| !m.is_empty()) {
        Some(m) => m.clone(),
        None => headers
            .get(header::USER_AGENT)
            .and_then(|u| u.to_str().ok())
            .and_then(|u| u.split('/').next())
            .filter(|u| !u.is_empty())
            .unwrap_or("unknown")
            .to_string(),
    };
    Ok(WriteOptions {
        dry_run,
        manager,
        validation: FieldValidation::parse(q.get("fieldValidation").map_or("", String::as_str))?,
        force: truthy(q.get("force")),
    })
}

fn list_query(t: &Target, q: &HashMap<String, String>) -> Result<ListQuery, ApiError> {
    Ok(ListQuery {
        labels: LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))?,
        fields: FieldSelector::parse(
            q.get("fieldSelector").map_or("", String::as_str),
            t.kind.group,
            t.kind.kind,
        )?,
        limit: q
            .get("limit")
            .map(|l| {
                l.parse().map_err(|_| {
                    ApiError::bad_request(format!("limit must be a number, not {l:?}"))
                })
            })
            .transpose()?,
        continue_token: q.get("continue").cloned(),
        resource_version: q.get("resourceVersion").cloned(),
        resource_version_match: q
            .get("resourceVersionMatch")
            .cloned()
            .filter(|m| !m.is_empty()),
    })
}

fn read_mode(q: &HashMap<String, String>) -> ReadMode {
    match q.get("resourceVersion").map(String::as_str) {
        Some("0") => ReadMode::Local,
        _ => ReadMode::Linearizable,
    }
}

fn status_success(details: Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": details, "code": 201})
}

async fn resource(
    State(s): Shared,
    method: Method,
    uri: Uri,
    Query(q): Params,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let target = match route::parse(uri.path()) {
        Ok(route::Route::Discovery { group, version }) => {
            return match discovery::resource_list(&group, &version) {
                Some(list) => json_response(StatusCode::OK, &list, &[]),
                None => error_response(&route::not_found()),
            };
        }
        Ok(route::Route::Resource(t)) => t,
        Err(e) => return error_response(&e),
    };
    let span = tracing::debug_span!("rest", http.method = %method, object.kind = target.kind.kind,
        object.namespace = target.ns.as_deref().unwrap_or(""), object.name = target.name.as_deref().unwrap_or(""));
    let body = match to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(&ApiError::new(
                Reason::RequestEntityTooLarge,
                format!("Request entity too large: limit is {MAX_BODY}"),
            ))
        }
    };
    let answer = dispatch(&s.registry, method, target, &q, &headers, &body)
        .instrument(span)
        .await;
    Answer(answer).into_response()
}

async fn dispatch(
    reg: &Registry,
    method: Method,
    t: Target,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let kind = t.kind;
    let ns = t.ns.as_deref();
    let sub = t.sub.as_deref();
    let name = t.name.clone();
    let unsupported = || {
        ApiError::new(
            Reason::MethodNotAllowed,
            format!(
                "the server does not allow this method on the requested resource ({method} {}{})",
                kind.plural,
                sub.map(|s| format!("/{s}")).unwrap_or_default()
            ),
        )
    };
    match (&method, name.as_deref(), sub) {
        (&Method::GET, None, None) => {
            let wants = wants(headers)?;
            if t.watch || truthy(q.get("watch")) {
                return watch::serve(reg, &t, q, wants).await;
            }
            let query = list_query(&t, q)?;
            if wants == Wants::Object {
                let listed = reg.list_stored(kind, ns, &query).await?;
                return Ok(negotiate::json_bytes_response(
                    StatusCode::OK,
                    listed.to_json(kind),
                ));
            }
            let list = reg.list(kind, ns, &query).await?;
            let out = match wants {
                Wants::Object => list,
                Wants::Table => {
                    let items = list["items"].as_array().cloned().unwrap_or_default();
                    table(
                        kind,
                        &items,
                        list["metadata"].clone(),
                        Include::parse(q.get("includeObject").map(String::as_str)),
                    )
                }
            };
            Ok(json_response(StatusCode::OK, &out, &[]))
        }
        (&Method::GET, Some(name), None | Some("status")) => {
            let wants = if sub.is_some() {
                Wants::Object
            } else {
                wants(headers)?
            };
            let obj = reg.get(kind, ns, name, read_mode(q)).await?;
            let out = match wants {
                Wants::Object => obj,
                Wants::Table => {
                    let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
                    table(
                        kind,
                        &[obj],
                        meta,
                        Include::parse(q.get("includeObject").map(String::as_str)),
                    )
                }
            };
            Ok(json_response(StatusCode::OK, &out, &[]))
        }
        (&Method::GET, Some(name), Some("log")) if kind.kind == "Pod" => {
            logs::serve(reg, ns.unwrap_or("default"), name, q).await
        }
        (&Method::GET, Some(name), Some("scale")) => Ok(json_response(
            StatusCode::OK,
            &reg.get_scale(kind, ns, name).await?,
            &[],
        )),
        (&Method::POST, None, None) => {
            let opts = write_options(q, headers)?;
            let obj = decode_body(headers, body)?;
            let w = reg.create(kind, ns, obj, &opts).await?;
            Ok(json_response(StatusCode::CREATED, &w.object, &w.warnings))
        }
        (&Method::POST, Some(name), Some("binding")) if kind.kind == "Pod" => {
            let opts = write_options(q, headers)?;
            let binding = decode_body(headers, body)?;
            reg.bind(ns, name, &binding, &opts).await?;
            Ok(json_response(
                StatusCode::CREATED,
                &status_success(json!({"name": name, "kind": "pods"})),
                &[],
            ))
        }
        (&Method::POST, Some(name), Some("eviction")) if kind.kind == "Pod" => {
            let eviction = decode_body(headers, body)?;
            reg.evict(ns, name, &eviction).await?;
            Ok(json_response(
                StatusCode::CREATED,
                &status_success(json!({"name": name, "kind": "pods"})),
                &[],
            ))
        }
        (&Method::PUT, Some(name), None | Some("status")) => {
            let opts = write_options(q, headers)?;
            let obj = decode_body(headers, body)?;
            let part = if sub == Some("status") {
                Part::Status
            } else {
                Part::Main
            };
            let w = reg.update(kind, ns, name, obj, part, &opts).await?;
            Ok(json_response(StatusCode::OK, &w.object, &w.warnings))
        }
        (&Method::PUT, Some(name), Some("scale")) => {
            let opts = write_options(q, headers)?;
            let obj = decode_body(headers, body)?;
            let scale = reg
                .set_scale(kind, ns, name, ScaleChange::Replace(&obj), &opts)
                .await?;
            Ok(json_response(StatusCode::OK, &scale, &[]))
        }
        (&Method::PATCH, Some(name), None | Some("status") | Some("scale")) => {
            let opts = write_options(q, headers)?;
            let ct = negotiate::content_type(headers);
            let ty = PatchType::from_content_type(&ct).ok_or_else(|| {
                ApiError::new(
                    Reason::UnsupportedMediaType,
                    format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"),
                )
            })?;
            if ty == PatchType::Apply && q.get("fieldManager").is_none_or(String::is_empty) {
                return Err(ApiError::new(
                    Reason::Invalid,
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                ));
            }
            if ty != PatchType::Apply && opts.force {
                return Err(ApiError::bad_request(
                    "force may only be used with server-side apply",
                ));
            }
            let patch = decode_body(headers, body)?;
            if sub == Some("scale") {
                let scale = reg
                    .set_scale(kind, ns, name, ScaleChange::Patch(ty, &patch), &opts)
                    .await?;
                return Ok(json_response(StatusCode::OK, &scale, &[]));
            }
            let part = if sub == Some("status") {
                Part::Status
            } else {
                Part::Main
            };
            let w = reg.patch(kind, ns, name, (ty, &patch), part, &opts).await?;
            let code = if w.created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(json_response(code, &w.object, &w.warnings))
        }
        (&Method::DELETE, name, None) => {
            let opts = delete_options(q, headers, body)?;
            let out = match name {
                Some(name) => reg.delete(kind, ns, name, &opts).await?,
                None => {
                    reg.delete_collection(kind, ns, &list_query(&t, q)?, &opts)
                        .await?
                }
            };
            Ok(json_response(StatusCode::OK, &out, &[]))
        }
        _ => Err(unsupported()),
    }
}

fn delete_options(
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<DeleteOptions, ApiError> {
    let b = if body.is_empty() {
        json!({})
    } else {
        decode_body(headers, body)?
    };
    let grace = match q.get("gracePeriodSeconds") {
        Some(g) => Some(g.parse::<i64>().map_err(|_| {
            ApiError::bad_request(format!("gracePeriodSeconds must be a number, not {g:?}"))
        })?),
        None => b["gracePeriodSeconds"].as_i64(),
    };
    let propagation = q
        .get("propagationPolicy")
        .cloned()
        .or_else(|| b["propagationPolicy"].as_str().map(str::to_string))
        .or_else(|| {
            (b["orphanDependents"] == true
                || q.get("orphanDependents").is_some_and(|v| v == "true"))
            .then(|| "Orphan".to_string())
        });
    if let Some(p) = &propagation {
        if !["Orphan", "Background", "Foreground"].contains(&p.as_str()) {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy: Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            )));
        }
    }
    let dry_run = q.get("dryRun").is_some_and(|d| d == "All")
        || b["dryRun"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "All"));
    Ok(DeleteOptions {
        grace_period: grace,
        propagation,
        uid: b["preconditions"]["uid"].as_str().map(str::to_string),
        resource_version: b["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_string),
        dry_run,
    })
}
