//! Kubernetes protobuf request bodies, turned into the JSON Kubernetes would
//! have been sent instead.
//!
//! kubectl's typed commands (`create namespace|configmap|secret|deployment|…`)
//! send `Content-Type: application/vnd.kubernetes.protobuf`:
//!
//! ```text
//!   b"k8s\0"                     4 magic bytes
//!   runtime.Unknown {            k8s.io/apimachinery/pkg/runtime/generated.proto
//!     1 typeMeta        { 1 apiVersion: "apps/v1", 2 kind: "Deployment" }
//!     2 raw             the object as its generated.proto message (no TypeMeta in it)
//!     3 contentEncoding ""  (kubectl 1.32 sends it, empty)
//!     4 contentType     ""  (likewise; empty means "raw is protobuf")
//!   }
//! ```
//!
//! ```text
//!   body ─► strip magic ─► decode Unknown ─► apiVersion/kind → message name
//!        ─► DynamicMessage::decode(raw) ─► to_json (special types) ─► + apiVersion, kind
//! ```
//!
//! The schema is `balsa_proto::k8s::DESCRIPTOR_SET` (upstream 1.32 names, e.g.
//! `k8s.io.api.apps.v1.Deployment`), read once into a prost-reflect pool.
//!
//! What the JSON keeps: the fields the sender set (proto2 presence). Go's
//! gogo-protobuf writes every non-pointer field, set or not, so kubectl's bodies
//! are full of zero values its JSON twin omits (`"namespace": ""`,
//! `"generation": 0`, `"hostPort": 0`, `"stdin": false`). Empty strings are
//! dropped (Kubernetes reads `""` as unset, and defaulting here looks for absent
//! keys); zero numbers and `false` stay, because for pointer fields they are
//! values (`replicas: 0`), and the schema does not say which fields are
//! pointers: readers must treat `0`/`false` like absent where Go would. A zero
//! `creationTimestamp` is `null`, as JSON kubectl sends it. Fields this schema
//! does not know (a newer client) are dropped, as upstream's decoder does.

mod to_json;

use std::sync::LazyLock;

use prost_reflect::{DescriptorPool, DynamicMessage, Value};

pub use prost_reflect::prost::DecodeError;

/// The media type of these bodies (without parameters).
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// What every body starts with.
pub const MAGIC: &[u8; 4] = b"k8s\0";

const UNKNOWN: &str = "k8s.io.apimachinery.pkg.runtime.Unknown";

/// Why a protobuf body could not become JSON. `UnknownKind` and
/// `UnsupportedEncoding` mean "send me JSON instead" (HTTP 415); the others mean
/// the body is malformed (HTTP 400).
#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("protobuf body does not start with the magic bytes \"k8s\\0\"")]
    MissingMagic,
    #[error("protobuf body is not a runtime.Unknown envelope: {0}")]
    Envelope(#[source] DecodeError),
    #[error("protobuf envelope has no typeMeta apiVersion and kind")]
    MissingTypeMeta,
    /// The envelope asks for something other than a plain protobuf `raw`.
    #[error("protobuf envelope with contentEncoding {encoding:?} and contentType {content_type:?} is not supported")]
    UnsupportedEncoding {
        encoding: String,
        content_type: String,
    },
    #[error("{api_version} {kind} is not a kind this server reads as protobuf")]
    UnknownKind { api_version: String, kind: String },
    #[error("{api_version} {kind}: object does not decode: {source}")]
    Object {
        api_version: String,
        kind: String,
        #[source]
        source: DecodeError,
    },
    /// The object decoded but a field holds what Kubernetes cannot mean, e.g. a
    /// RawExtension that is not JSON. `path` is dotted from the object's root.
    #[error("field {path}: {reason}")]
    Field { path: String, reason: String },
}

/// Every kind in `DESCRIPTOR_SET`, by group, as upstream's proto package.
static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    // Our own build artifact: if it does not decode, the build is broken.
    DescriptorPool::decode(balsa_proto::k8s::DESCRIPTOR_SET)
        .expect("balsa_proto::k8s::DESCRIPTOR_SET is a valid FileDescriptorSet")
});

/// Decodes a `application/vnd.kubernetes.protobuf` request body into the JSON
/// object Kubernetes' JSON encoding of the same object would be, with
/// `apiVersion` and `kind` set from the envelope.
pub fn decode(body: &[u8]) -> Result<serde_json::Value, ProtobufError> {
    let rest = body
        .strip_prefix(MAGIC.as_slice())
        .ok_or(ProtobufError::MissingMagic)?;
    let unknown_desc = POOL
        .get_message_by_name(UNKNOWN)
        .expect("runtime.Unknown is in DESCRIPTOR_SET");
    let envelope = DynamicMessage::decode(unknown_desc, rest).map_err(ProtobufError::Envelope)?;

    let type_meta = envelope
        .get_field_by_name("typeMeta")
        .and_then(|v| v.as_message().cloned());
    let (api_version, kind) = match type_meta {
        Some(tm) => (string_field(&tm, "apiVersion"), string_field(&tm, "kind")),
        None => (String::new(), String::new()),
    };
    if api_version.is_empty() || kind.is_empty() {
        return Err(ProtobufError::MissingTypeMeta);
    }
    let encoding = string_field(&envelope, "contentEncoding");
    let content_type = string_field(&envelope, "contentType");
    if !encoding.is_empty() || !(content_type.is_empty() || content_type == CONTENT_TYPE) {
        return Err(ProtobufError::UnsupportedEncoding {
            encoding,
            content_type,
        });
    }

    let desc = message_name(&api_version, &kind)
        .and_then(|name| POOL.get_message_by_name(&name))
        .ok_or_else(|| ProtobufError::UnknownKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
    let raw = match envelope.get_field_by_name("raw").as_deref() {
        Some(Value::Bytes(b)) => b.clone(),
        _ => Default::default(),
    };
    let object = DynamicMessage::decode(desc, raw).map_err(|source| ProtobufError::Object {
        api_version: api_version.clone(),
        kind: kind.clone(),
        source,
    })?;

    let mut json = match to_json::message(&object)? {
        serde_json::Value::Object(map) => map,
        // Only the special types (Time, Quantity, …) are not objects, and no
        // kind is one of them.
        other => {
            return Err(ProtobufError::Field {
                path: String::new(),
                reason: format!("{kind} is not an object: {other}"),
            })
        }
    };
    json.insert("apiVersion".into(), api_version.into());
    json.insert("kind".into(), kind.into());
    Ok(serde_json::Value::Object(json))
}

/// The upstream proto message of a kind: `apps/v1` `Deployment` →
/// `k8s.io.api.apps.v1.Deployment`. Only the group-versions built into
/// `DESCRIPTOR_SET`; `None` for the rest.
pub fn message_name(api_version: &str, kind: &str) -> Option<String> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let package = match group {
        "" => "core",
        "apps" | "batch" | "autoscaling" | "policy" => group,
        "coordination.k8s.io" => "coordination",
        "discovery.k8s.io" => "discovery",
        "events.k8s.io" => "events",
        "networking.k8s.io" => "networking",
        "rbac.authorization.k8s.io" => "rbac",
        "scheduling.k8s.io" => "scheduling",
        _ => return None,
    };
    let valid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
    (valid(version) && valid(kind)).then(|| format!("k8s.io.api.{package}.{version}.{kind}"))
}

fn string_field(msg: &DynamicMessage, name: &str) -> String {
    match msg.get_field_by_name(name).as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests;
