//! Content negotiation: request bodies in JSON, YAML or Kubernetes protobuf;
//! answers in JSON (or a Table when asked for one), each error as a Status.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::k8s_protobuf::{self, ProtobufError};
use crate::registry::{ApiError, Reason};

/// Kubernetes' request body limit.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

pub const JSON: &str = "application/json";
pub const DISCOVERY_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// What the client asked to get back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wants {
    Object,
    /// `as=Table;g=meta.k8s.io;v=v1`
    Table,
}

pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

fn accept(headers: &HeaderMap) -> String {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The media types of an Accept header, each with its parameters.
fn accepted(headers: &HeaderMap) -> Vec<String> {
    accept(headers)
        .split(',')
        .map(|s| s.replace(' ', ""))
        .filter(|s| !s.is_empty())
        .collect()
}

pub fn wants(headers: &HeaderMap) -> Result<Wants, ApiError> {
    let types = accepted(headers);
    if types.is_empty() {
        return Ok(Wants::Object);
    }
    for t in &types {
        if t.contains("as=Table") {
            return Ok(Wants::Table);
        }
        let base = t.split(';').next().unwrap_or_default();
        if matches!(
            base,
            "application/json" | "application/*" | "*/*" | "application/yaml"
        ) && !t.contains("as=")
        {
            return Ok(Wants::Object);
        }
    }
    Err(ApiError::new(
        Reason::NotAcceptable,
        format!("only the following media types are accepted: application/json, application/json;as=Table;v=v1;g=meta.k8s.io (asked for {})", types.join(",")),
    ))
}

/// Whether the client asked for aggregated discovery.
pub fn wants_aggregated(headers: &HeaderMap) -> bool {
    accepted(headers)
        .iter()
        .any(|t| t.contains("as=APIGroupDiscoveryList") && t.contains("v=v2"))
}

/// Decodes a request body by its Content-Type.
pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type(headers);
    let base = ct.split(';').next().unwrap_or_default().trim();
    match base {
        "" | "application/json" | "application/json-patch+json" | "application/merge-patch+json"
        | "application/strategic-merge-patch+json" | "application/apply-patch+json" => {
            serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
            })
        }
        "application/yaml" | "application/apply-patch+yaml" => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("the YAML body is not UTF-8"))?;
            serde_saphyr::from_str::<Value>(text)
                .map_err(|e| ApiError::bad_request(format!("the request body is not valid YAML: {e}")))
        }
        k8s_protobuf::CONTENT_TYPE => k8s_protobuf::decode(body).map_err(|e| match e {
            ProtobufError::UnknownKind { .. } | ProtobufError::UnsupportedEncoding { .. } => {
                ApiError::new(Reason::UnsupportedMediaType, e.to_string())
            }
            other => ApiError::bad_request(format!("the protobuf body cannot be decoded: {other}")),
        }),
        other => Err(ApiError::new(
            Reason::UnsupportedMediaType,
            format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {other:?})"),
        )),
    }
}

/// A JSON answer with `Warning` headers.
/// A JSON body already encoded.
pub fn json_bytes_response(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    resp
}

pub fn json_response(status: StatusCode, body: &Value, warnings: &[String]) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON));
    for w in warnings {
        let text = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
        if let Ok(v) = HeaderValue::from_str(&text) {
            headers.append(header::WARNING, v);
        }
    }
    resp
}

pub fn error_response(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = json_response(status, &e.status(), &[]);
    if let Some(secs) = e.retry_after {
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

/// A handler result: an answer or a Status.
pub struct Answer(pub Result<Response, ApiError>);

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        match self.0 {
            Ok(r) => r,
            Err(e) => error_response(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn accept_headers() {
        assert_eq!(wants(&headers(&[])).unwrap(), Wants::Object);
        let table = headers(&[("accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json")]);
        assert_eq!(wants(&table).unwrap(), Wants::Table);
        let pb = headers(&[(
            "accept",
            "application/vnd.kubernetes.protobuf,application/json",
        )]);
        assert_eq!(wants(&pb).unwrap(), Wants::Object);
        let only_pb = headers(&[("accept", "application/vnd.kubernetes.protobuf")]);
        assert_eq!(wants(&only_pb).unwrap_err().code(), 406);
        let agg = headers(&[(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )]);
        assert!(wants_aggregated(&agg));
    }

    #[test]
    fn bodies_by_content_type() {
        let json = headers(&[("content-type", "application/json")]);
        assert_eq!(decode_body(&json, br#"{"a":1}"#).unwrap()["a"], 1);
        assert_eq!(decode_body(&json, b"{").unwrap_err().code(), 400);
        let yaml = headers(&[("content-type", "application/apply-patch+yaml")]);
        assert_eq!(decode_body(&yaml, b"a: 1\nb: [x]\n").unwrap()["b"][0], "x");
        let xml = headers(&[("content-type", "application/xml")]);
        assert_eq!(decode_body(&xml, b"<a/>").unwrap_err().code(), 415);
        let pb = headers(&[("content-type", "application/vnd.kubernetes.protobuf")]);
        assert_eq!(decode_body(&pb, b"garbage").unwrap_err().code(), 400);
    }
}
