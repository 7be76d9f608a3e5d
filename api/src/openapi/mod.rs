//! The OpenAPI documents kube-apiserver serves, generated from the kinds
//! table: `/openapi/v3` (an index of group-versions), `/openapi/v3/apis/G/V`
//! (one OpenAPI 3.0 document per group-version) and `/openapi/v2` (one
//! Swagger 2.0 document for everything).
//!
//! ```text
//!  KINDS ─► schemas::definitions (k8s-openapi models + GVK, List kinds,
//!           merge extensions) ─┐
//!        ─► paths::render (operations per kind and subresource) ─┴─► Dialect
//!           (ref form: #/components/schemas/ or #/definitions/) ─► Document
//! ```
//!
//! Pure and computed once: the documents never change while a process runs,
//! so each is built on first use and kept with its serialized bytes and the
//! hash clients cache it under.
//!
//! What kubectl 1.32 needs from them: `apply`, `create -f` and `replace` look
//! for a PATCH operation carrying the kind's `x-kubernetes-group-version-kind`
//! and a `fieldValidation` parameter (else they validate on the client);
//! `explain` finds the kind from the operations on the resource's paths, then
//! the schema carrying that GVK; client-side `apply` computes its strategic
//! merge patch from the `x-kubernetes-patch-*` extensions.

mod extensions;
mod paths;
mod schemas;
mod v2_protobuf;

use std::collections::BTreeMap;
use std::sync::LazyLock;

use bytes::Bytes;
use serde_json::{json, Value};

pub use paths::PATCH_CONTENT_TYPES;
use schemas::Dialect;

use crate::registry::kinds::{self, Kind, KINDS};

/// One served document.
#[derive(Debug)]
pub struct Document {
    pub value: Value,
    /// `value` serialized, ready to send as `application/json`.
    pub json: Bytes,
    /// A hex digest of `json`: the `?hash=` of the index's URLs, usable as an
    /// ETag. Clients cache a document under it.
    pub hash: String,
}

impl Document {
    fn new(value: Value) -> Self {
        let json = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        let hash = format!("{:016X}", fnv1a(&json));
        Self { value, json, hash }
    }
}

/// FNV-1a, 64 bits: stable across builds and platforms, no dependency.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The index key of a group-version: `api/v1`, `apis/apps/v1`.
pub fn v3_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

static V3: LazyLock<BTreeMap<String, Document>> = LazyLock::new(|| {
    kinds::group_versions()
        .into_iter()
        .map(|(g, v)| (v3_path(g, v), Document::new(build_v3(g, v))))
        .collect()
});

static V3_INDEX: LazyLock<Document> = LazyLock::new(|| {
    let paths: serde_json::Map<String, Value> = V3
        .iter()
        .map(|(path, doc)| {
            let url = format!("/openapi/v3/{path}?hash={}", doc.hash);
            (path.clone(), json!({ "serverRelativeURL": url }))
        })
        .collect();
    Document::new(json!({ "paths": paths }))
});

static V2: LazyLock<Document> = LazyLock::new(|| Document::new(build_v2()));

static V2_PROTOBUF: LazyLock<Bytes> = LazyLock::new(|| Bytes::from(v2_protobuf::encode(&V2.value)));

/// The Content-Type to answer `v2_protobuf()` with. kubectl asks with
/// `Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`, but
/// an answer whose Content-Type has that `@` fails its media-type parsing.
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// `GET /openapi/v3`: `{"paths": {"apis/apps/v1": {"serverRelativeURL":
/// "/openapi/v3/apis/apps/v1?hash=..."}, ...}}`.
pub fn v3_index() -> &'static Value {
    &V3_INDEX.value
}

/// The index as a document (bytes and hash).
pub fn v3_index_document() -> &'static Document {
    &V3_INDEX
}

/// `GET /openapi/v3/api/v1`, `/openapi/v3/apis/G/V`; `None` for a
/// group-version Balsa does not serve.
pub fn v3_document(group: &str, version: &str) -> Option<&'static Value> {
    v3_at(&v3_path(group, version)).map(|d| &d.value)
}

/// The v3 document at an index key (`api/v1`, `apis/apps/v1`: the request
/// path after `/openapi/v3/`, without the query).
pub fn v3_at(path: &str) -> Option<&'static Document> {
    V3.get(path.trim_matches('/'))
}

/// `GET /openapi/v2`: every kind in one Swagger 2.0 document.
pub fn v2_document() -> &'static Value {
    &V2.value
}

/// The v2 document with its bytes and hash.
pub fn v2() -> &'static Document {
    &V2
}

/// `GET /openapi/v2` as kubectl requests it: the definitions as a gnostic
/// `openapi.v2.Document` protobuf message (see `v2_protobuf`). kubectl cannot
/// read the JSON form, and fails on 404 or 406, when it needs this.
pub fn v2_protobuf() -> &'static Bytes {
    &V2_PROTOBUF
}

fn build_v3(group: &str, version: &str) -> Value {
    let kinds: Vec<&'static Kind> = KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    let mut schemas = Value::Object(schemas::definitions(&kinds));
    Dialect::V3.rewrite(&mut schemas);
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths::render(&kinds, Dialect::V3),
        "components": {"schemas": schemas},
    })
}

fn build_v2() -> Value {
    let kinds: Vec<&'static Kind> = KINDS.iter().collect();
    let mut definitions = Value::Object(schemas::definitions(&kinds));
    Dialect::V2.rewrite(&mut definitions);
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths::render(&kinds, Dialect::V2),
        "definitions": definitions,
        "securityDefinitions": {
            "BearerToken": {"description": "Bearer Token authentication", "in": "header",
                "name": "authorization", "type": "apiKey"}
        },
        "security": [{"BearerToken": []}],
    })
}

#[cfg(test)]
mod tests;
