//! NodeReady: a node whose Ready condition is not True takes only pods that
//! tolerate the taint the node lifecycle controller would put on it
//! (`node.kubernetes.io/not-ready`, or `.../unreachable` when Ready is
//! Unknown, effect NoSchedule). Balsa has no lifecycle controller yet, so the
//! scheduler reads the condition itself; when the taint is already on the
//! node, TaintToleration judges it and this filter stays out of the way.

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::snapshot::{NodeInfo, Readiness};
use crate::status::{FilterResult, Plugin, Status};
use crate::toleration::{
    tolerated_by, EFFECT_NO_SCHEDULE, TAINT_NODE_NOT_READY, TAINT_NODE_UNREACHABLE,
};

pub fn filter(tolerations: &[Toleration], node: &NodeInfo) -> FilterResult {
    let key = match node.readiness {
        Readiness::Ready => return Ok(()),
        Readiness::NotReady => TAINT_NODE_NOT_READY,
        Readiness::Unreachable => TAINT_NODE_UNREACHABLE,
    };
    if node.taints().iter().any(|t| t.key == key) {
        return Ok(());
    }
    let taint = Taint {
        key: key.to_string(),
        effect: EFFECT_NO_SCHEDULE.to_string(),
        value: None,
        time_added: None,
    };
    if tolerated_by(&taint, tolerations) {
        return Ok(());
    }
    Err(Status::unresolvable(
        Plugin::NodeReady,
        format!("node(s) had untolerated taint {{{key}: }}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::tolerations;
    use crate::testutil::*;

    #[test]
    fn not_ready_unless_tolerated() {
        let s = snapshot(
            vec![
                node("ok").build(),
                node("down").ready("False").build(),
                node("gone").ready("Unknown").build(),
                node("tainted")
                    .ready("False")
                    .taint(TAINT_NODE_NOT_READY, "", "NoSchedule")
                    .build(),
            ],
            vec![],
        );
        let p = pod("p").build();
        let t = tolerations(&p);
        assert!(filter(t, s.node("ok").unwrap()).is_ok());
        assert_eq!(
            filter(t, s.node("down").unwrap()).unwrap_err().reasons,
            vec!["node(s) had untolerated taint {node.kubernetes.io/not-ready: }".to_string()]
        );
        assert_eq!(
            filter(t, s.node("gone").unwrap()).unwrap_err().reasons,
            vec!["node(s) had untolerated taint {node.kubernetes.io/unreachable: }".to_string()]
        );
        assert!(
            filter(t, s.node("tainted").unwrap()).is_ok(),
            "left to TaintToleration"
        );
        let tol = pod("t")
            .tolerate(TAINT_NODE_NOT_READY, "Exists", "", "")
            .build();
        assert!(filter(tolerations(&tol), s.node("down").unwrap()).is_ok());
        assert!(filter(tolerations(&tol), s.node("gone").unwrap()).is_err());
    }
}
