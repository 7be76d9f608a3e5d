//! Whether a pod's tolerations cover a node's taints (upstream `ToleratesTaint`).

use k8s_openapi::api::core::v1::{Taint, Toleration};

pub const EFFECT_NO_SCHEDULE: &str = "NoSchedule";
pub const EFFECT_NO_EXECUTE: &str = "NoExecute";
pub const EFFECT_PREFER_NO_SCHEDULE: &str = "PreferNoSchedule";

pub const TAINT_NODE_NOT_READY: &str = "node.kubernetes.io/not-ready";
pub const TAINT_NODE_UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const TAINT_NODE_UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";

pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

pub fn tolerated_by(taint: &Taint, tolerations: &[Toleration]) -> bool {
    tolerations.iter().any(|t| tolerates(t, taint))
}

/// The first taint passing `consider` that no toleration covers.
pub fn find_untolerated<'a>(
    taints: &'a [Taint],
    tolerations: &[Toleration],
    consider: impl Fn(&Taint) -> bool,
) -> Option<&'a Taint> {
    taints
        .iter()
        .find(|t| consider(t) && !tolerated_by(t, tolerations))
}

pub fn is_hard_effect(t: &Taint) -> bool {
    t.effect == EFFECT_NO_SCHEDULE || t.effect == EFFECT_NO_EXECUTE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(Into::into),
            effect: effect.into(),
            time_added: None,
        }
    }
    fn tol(
        key: Option<&str>,
        op: Option<&str>,
        value: Option<&str>,
        effect: Option<&str>,
    ) -> Toleration {
        Toleration {
            key: key.map(Into::into),
            operator: op.map(Into::into),
            value: value.map(Into::into),
            effect: effect.map(Into::into),
            toleration_seconds: None,
        }
    }

    #[test]
    fn matching_rules() {
        let t = taint("k", Some("v"), EFFECT_NO_SCHEDULE);
        assert!(tolerates(&tol(Some("k"), None, Some("v"), None), &t));
        assert!(tolerates(
            &tol(Some("k"), Some("Equal"), Some("v"), Some("NoSchedule")),
            &t
        ));
        assert!(!tolerates(
            &tol(Some("k"), Some("Equal"), Some("w"), None),
            &t
        ));
        assert!(!tolerates(
            &tol(Some("k"), Some("Exists"), None, Some("NoExecute")),
            &t
        ));
        assert!(tolerates(&tol(Some("k"), Some("Exists"), None, None), &t));
        assert!(
            tolerates(&tol(None, Some("Exists"), None, None), &t),
            "empty key + Exists tolerates all"
        );
        assert!(!tolerates(
            &tol(Some("k"), Some("Bogus"), Some("v"), None),
            &t
        ));
        assert!(!tolerates(&tol(Some("j"), Some("Exists"), None, None), &t));
    }
}
