//! NodeUnschedulable: a cordoned node (`spec.unschedulable`) takes only pods
//! that tolerate `node.kubernetes.io/unschedulable:NoSchedule`.

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::snapshot::NodeInfo;
use crate::status::{FilterResult, Plugin, Status};
use crate::toleration::{tolerated_by, EFFECT_NO_SCHEDULE, TAINT_NODE_UNSCHEDULABLE};

pub const ERR_REASON: &str = "node(s) were unschedulable";

pub fn filter(tolerations: &[Toleration], node: &NodeInfo) -> FilterResult {
    if !node.unschedulable() {
        return Ok(());
    }
    let taint = Taint {
        key: TAINT_NODE_UNSCHEDULABLE.to_string(),
        effect: EFFECT_NO_SCHEDULE.to_string(),
        value: None,
        time_added: None,
    };
    if tolerated_by(&taint, tolerations) {
        return Ok(());
    }
    Err(Status::unresolvable(Plugin::NodeUnschedulable, ERR_REASON))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::tolerations;
    use crate::testutil::*;

    #[test]
    fn cordoned_unless_tolerated() {
        let s = snapshot(
            vec![node("a").unschedulable().build(), node("b").build()],
            vec![],
        );
        let p = pod("p").build();
        assert_eq!(
            filter(tolerations(&p), s.node("a").unwrap())
                .unwrap_err()
                .reasons,
            vec![ERR_REASON.to_string()]
        );
        assert!(filter(tolerations(&p), s.node("b").unwrap()).is_ok());
        let t = pod("t")
            .tolerate(TAINT_NODE_UNSCHEDULABLE, "Exists", "", "NoSchedule")
            .build();
        assert!(filter(tolerations(&t), s.node("a").unwrap()).is_ok());
    }
}
