//! Taints and tolerations as the node lifecycle controller and taint-based
//! eviction read them (upstream `v1helper.TolerationsTolerateTaint`).

use k8s_openapi::api::core::v1::{Taint, Toleration};

pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NO_EXECUTE: &str = "NoExecute";
pub const NO_SCHEDULE: &str = "NoSchedule";

/// Whether `t` tolerates `taint`: same effect (or any), same key (or any,
/// with `Exists`), and `Exists` or an equal value.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
        if e != taint.effect {
            return false;
        }
    }
    if let Some(k) = t.key.as_deref().filter(|k| !k.is_empty()) {
        if k != taint.key {
            return false;
        }
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

pub fn is(taint: &Taint, key: &str, effect: &str) -> bool {
    taint.key == key && taint.effect == effect
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(str::to_string),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn tol(key: Option<&str>, op: &str, value: Option<&str>, effect: Option<&str>) -> Toleration {
        Toleration {
            key: key.map(str::to_string),
            operator: Some(op.into()),
            value: value.map(str::to_string),
            effect: effect.map(str::to_string),
            toleration_seconds: None,
        }
    }

    #[test]
    fn matching_as_upstream() {
        let t = taint(UNREACHABLE, None, NO_EXECUTE);
        assert!(tolerates(
            &tol(Some(UNREACHABLE), "Exists", None, Some(NO_EXECUTE)),
            &t
        ));
        assert!(tolerates(&tol(Some(UNREACHABLE), "Exists", None, None), &t));
        assert!(tolerates(&tol(None, "Exists", None, None), &t));
        assert!(!tolerates(
            &tol(Some(UNREACHABLE), "Exists", None, Some(NO_SCHEDULE)),
            &t
        ));
        assert!(!tolerates(&tol(Some(NOT_READY), "Exists", None, None), &t));
        let v = taint("dedicated", Some("gpu"), NO_EXECUTE);
        assert!(tolerates(
            &tol(Some("dedicated"), "Equal", Some("gpu"), None),
            &v
        ));
        assert!(!tolerates(
            &tol(Some("dedicated"), "Equal", Some("cpu"), None),
            &v
        ));
    }
}
