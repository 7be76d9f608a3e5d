//! Whether a stored Namespace takes new objects: it must not be terminating
//! (`status.phase` Terminating, or a `metadata.deletionTimestamp`). Every
//! namespaced create asks, so only those two fields are decoded, not the
//! whole object.

use serde::Deserialize;
use serde_json::Value;

use super::{decode_object, ApiError};
use crate::store::Object;

#[derive(Deserialize)]
struct Gate {
    #[serde(default)]
    metadata: Meta,
    #[serde(default)]
    status: Status,
}

#[derive(Deserialize, Default)]
struct Meta {
    #[serde(rename = "deletionTimestamp", default)]
    deletion_timestamp: Option<Value>,
}

#[derive(Deserialize, Default)]
struct Status {
    #[serde(default)]
    phase: Option<Value>,
}

/// True when the namespace is being deleted. A stored object of another
/// shape (metadata or status not an object) is read whole, as before.
pub(super) fn terminating(ns: &Object) -> Result<bool, ApiError> {
    let (phase, deletion) = match serde_json::from_slice::<Gate>(&ns.data) {
        Ok(g) => (
            g.status.phase.unwrap_or(Value::Null),
            g.metadata.deletion_timestamp.unwrap_or(Value::Null),
        ),
        Err(_) => {
            let v = decode_object(ns)?;
            (
                v["status"]["phase"].clone(),
                v["metadata"]["deletionTimestamp"].clone(),
            )
        }
    };
    Ok(phase == "Terminating" || !deletion.is_null())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::store::{ResourceKey, Revision};

    fn ns(json: &str) -> Object {
        Object {
            key: ResourceKey::new("", "namespaces", None, "a"),
            data: Bytes::from(json.to_string()),
            revision: Revision(1),
            created: Revision(1),
        }
    }

    #[test]
    fn terminating_by_phase_or_deletion_timestamp() {
        for (json, want) in [
            (
                r#"{"metadata":{"name":"a"},"status":{"phase":"Active"}}"#,
                false,
            ),
            (r#"{"metadata":{"name":"a"}}"#, false),
            (
                r#"{"metadata":{"name":"a","deletionTimestamp":null},"status":{}}"#,
                false,
            ),
            (
                r#"{"metadata":{"name":"a"},"status":{"phase":"Terminating"}}"#,
                true,
            ),
            (
                r#"{"metadata":{"name":"a","deletionTimestamp":"2026-01-01T00:00:00Z"},"status":{"phase":"Active"}}"#,
                true,
            ),
            // Odd shapes are read whole, with the same answer as before.
            (r#"{"metadata":{"name":"a"},"status":"x"}"#, false),
            (
                r#"{"metadata":{"name":"a","deletionTimestamp":"t"},"status":7}"#,
                true,
            ),
        ] {
            assert_eq!(terminating(&ns(json)).unwrap(), want, "{json}");
        }
        assert!(terminating(&ns("not json")).is_err());
    }
}
