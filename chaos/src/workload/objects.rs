//! The workload's objects on the wire: ConfigMaps in one namespace whose
//! `data.v` is the unique value of the write that made them.

use balsa_api::resource::ResourceType;
use balsa_api::{ResourceKey, StoreError};
use bytes::Bytes;

use crate::history::{Failure, Seen};

/// Every object of the workload lives here.
pub const NAMESPACE: &str = "chaos";

pub fn key(name: &str) -> ResourceKey {
    ResourceType::of("v1", "ConfigMap").key(Some(NAMESPACE), name)
}

/// A ConfigMap `name` holding `value`, with `expected` as its resourceVersion
/// (a compare-and-set) when given.
pub fn configmap(name: &str, value: &str, expected: Option<u64>) -> Bytes {
    let mut meta = serde_json::json!({"name": name, "namespace": NAMESPACE});
    if let Some(rev) = expected {
        meta["resourceVersion"] = rev.to_string().into();
    }
    let v = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": meta,
        "data": {"v": value},
    });
    Bytes::from(v.to_string())
}

/// Name, value and resourceVersion of a returned object.
pub fn parse(bytes: &[u8]) -> Option<(String, Seen)> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let name = v["metadata"]["name"].as_str()?.to_string();
    let rev = v["metadata"]["resourceVersion"].as_str()?.parse().ok()?;
    let value = v["data"]["v"].as_str()?.to_string();
    Some((name, Seen { value, rev }))
}

/// A write's error: a definite failure, or None when the write may still
/// have taken effect.
pub fn write_failure(e: &StoreError) -> Option<Failure> {
    match e {
        StoreError::NotFound { .. } => Some(Failure::NotFound),
        StoreError::AlreadyExists { .. } => Some(Failure::AlreadyExists),
        StoreError::Conflict { .. } => Some(Failure::Conflict),
        StoreError::Invalid(_) | StoreError::TooLarge { .. } => Some(Failure::Other),
        // Unavailable, NotLeader, Internal, a cut watch: maybe applied.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_round_trip() {
        let b = configmap("k1", "w7", Some(12));
        let mut v: serde_json::Value = serde_json::from_slice(&b).expect("json");
        assert_eq!(v["metadata"]["resourceVersion"], "12");
        v["metadata"]["resourceVersion"] = "13".into();
        let (name, seen) = parse(v.to_string().as_bytes()).expect("parsed");
        assert_eq!(name, "k1");
        assert_eq!(
            seen,
            Seen {
                value: "w7".into(),
                rev: 13
            }
        );
        assert_eq!(write_failure(&StoreError::Unavailable("x".into())), None);
    }
}
