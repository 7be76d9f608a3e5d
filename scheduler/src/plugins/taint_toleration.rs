//! TaintToleration: a node's NoSchedule/NoExecute taints must be tolerated
//! (filter); fewer untolerated PreferNoSchedule taints score higher.

use k8s_openapi::api::core::v1::Toleration;

use crate::plugins::default_normalize;
use crate::snapshot::NodeInfo;
use crate::status::{FilterResult, Plugin, Status};
use crate::toleration::{
    find_untolerated, is_hard_effect, tolerated_by, EFFECT_PREFER_NO_SCHEDULE,
};

pub fn filter(tolerations: &[Toleration], node: &NodeInfo) -> FilterResult {
    match find_untolerated(node.taints(), tolerations, is_hard_effect) {
        None => Ok(()),
        Some(t) => Err(Status::unresolvable(
            Plugin::TaintToleration,
            format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            ),
        )),
    }
}

/// The tolerations that count for scoring: effect PreferNoSchedule or empty.
pub fn prefer_tolerations(tolerations: &[Toleration]) -> Vec<Toleration> {
    tolerations
        .iter()
        .filter(|t| {
            matches!(
                t.effect.as_deref(),
                None | Some("") | Some(EFFECT_PREFER_NO_SCHEDULE)
            )
        })
        .cloned()
        .collect()
}

/// Raw score: the number of untolerated PreferNoSchedule taints.
pub fn score(prefer: &[Toleration], node: &NodeInfo) -> i64 {
    node.taints()
        .iter()
        .filter(|t| t.effect == EFFECT_PREFER_NO_SCHEDULE && !tolerated_by(t, prefer))
        .count() as i64
}

pub fn normalize(scores: &mut [i64]) {
    default_normalize(scores, true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::tolerations;
    use crate::testutil::*;

    #[test]
    fn filter_hard_taints() {
        let s = snapshot(
            vec![
                node("a").taint("k", "v", "NoSchedule").build(),
                node("b").taint("gpu", "", "NoExecute").build(),
                node("c").taint("soft", "x", "PreferNoSchedule").build(),
            ],
            vec![],
        );
        let p = pod("p").build();
        assert_eq!(
            filter(tolerations(&p), s.node("a").unwrap())
                .unwrap_err()
                .reasons,
            vec!["node(s) had untolerated taint {k: v}".to_string()]
        );
        assert_eq!(
            filter(tolerations(&p), s.node("b").unwrap())
                .unwrap_err()
                .reasons,
            vec!["node(s) had untolerated taint {gpu: }".to_string()]
        );
        assert!(filter(tolerations(&p), s.node("c").unwrap()).is_ok());
        let t = pod("t").tolerate("k", "Equal", "v", "NoSchedule").build();
        assert!(filter(tolerations(&t), s.node("a").unwrap()).is_ok());
        assert!(filter(tolerations(&t), s.node("b").unwrap()).is_err());
    }

    #[test]
    fn score_prefers_fewer_intolerable_soft_taints() {
        let s = snapshot(
            vec![
                node("none").build(),
                node("one").taint("a", "1", "PreferNoSchedule").build(),
                node("two")
                    .taint("a", "1", "PreferNoSchedule")
                    .taint("b", "1", "PreferNoSchedule")
                    .build(),
            ],
            vec![],
        );
        let p = pod("p").tolerate("b", "Exists", "", "").build();
        let prefer = prefer_tolerations(tolerations(&p));
        let mut scores: Vec<i64> = ["none", "one", "two"]
            .iter()
            .map(|n| score(&prefer, s.node(n).unwrap()))
            .collect();
        assert_eq!(scores, vec![0, 1, 1]);
        normalize(&mut scores);
        assert_eq!(scores, vec![100, 0, 0]);
        let mut zero = vec![0, 0];
        normalize(&mut zero);
        assert_eq!(zero, vec![100, 100]);
    }
}
