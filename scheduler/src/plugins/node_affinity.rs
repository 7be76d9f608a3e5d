//! NodeAffinity: `spec.nodeSelector` and required node affinity must match
//! (filter); preferred node affinity terms add their weights (score).

use k8s_openapi::api::core::v1::Pod;

use crate::plugins::default_normalize;
use crate::selector::{NodeTerm, RequiredNodeSelector, SelectorError};
use crate::snapshot::NodeInfo;
use crate::status::{FilterResult, Plugin, Status};

pub const ERR_REASON_POD: &str = "node(s) didn't match Pod's node affinity/selector";

/// The pod's node affinity, compiled once per cycle.
#[derive(Debug, Clone, Default)]
pub struct State {
    pub required: RequiredNodeSelector,
    pub preferred: Vec<(i64, NodeTerm)>,
}

impl State {
    pub fn new(pod: &Pod) -> Result<State, SelectorError> {
        let required = RequiredNodeSelector::compile(pod)?;
        let mut preferred = Vec::new();
        let terms = pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            });
        for (i, t) in terms.into_iter().flatten().enumerate() {
            if t.weight == 0 {
                continue;
            }
            let path = format!(
                "spec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution[{i}].preference"
            );
            preferred.push((
                i64::from(t.weight),
                NodeTerm::compile(&t.preference, &path)?,
            ));
        }
        Ok(State {
            required,
            preferred,
        })
    }

    pub fn matches_required(&self, node: &NodeInfo) -> bool {
        self.required.matches(&node.name, node.labels())
    }
}

pub fn filter(state: &State, node: &NodeInfo) -> FilterResult {
    if state.required.is_empty() || state.matches_required(node) {
        Ok(())
    } else {
        Err(Status::unresolvable(Plugin::NodeAffinity, ERR_REASON_POD))
    }
}

/// Sum of the weights of the preferred terms the node matches.
pub fn score(state: &State, node: &NodeInfo) -> i64 {
    state
        .preferred
        .iter()
        .filter(|(_, t)| t.matches(&node.name, node.labels()))
        .map(|(w, _)| *w)
        .sum()
}

pub fn normalize(scores: &mut [i64]) {
    default_normalize(scores, false);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use serde_json::json;

    fn nodes() -> crate::snapshot::Snapshot {
        snapshot(
            vec![
                node("a").label("zone", "z1").label("disk", "ssd").build(),
                node("b").label("zone", "z2").build(),
                node("c").build(),
            ],
            vec![],
        )
    }

    #[test]
    fn node_selector() {
        let s = nodes();
        let st = State::new(&pod("p").node_selector("zone", "z1").build()).unwrap();
        assert!(filter(&st, s.node("a").unwrap()).is_ok());
        assert_eq!(
            filter(&st, s.node("b").unwrap()).unwrap_err().reasons,
            vec![ERR_REASON_POD.to_string()]
        );
        let none = State::new(&pod("q").build()).unwrap();
        assert!(filter(&none, s.node("c").unwrap()).is_ok());
    }

    #[test]
    fn required_terms_are_ored_and_and_with_selector() {
        let s = nodes();
        let p = pod("p")
            .spec("affinity", json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z2"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["c"]}]}
            ]}}}))
            .build();
        let st = State::new(&p).unwrap();
        let fits: Vec<bool> = ["a", "b", "c"]
            .iter()
            .map(|n| filter(&st, s.node(n).unwrap()).is_ok())
            .collect();
        assert_eq!(fits, vec![false, true, true]);
        let p2 = pod("p2")
            .node_selector("zone", "z2")
            .spec("affinity", json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["z2"]}]}
            ]}}}))
            .build();
        let st2 = State::new(&p2).unwrap();
        assert!(["a", "b", "c"]
            .iter()
            .all(|n| filter(&st2, s.node(n).unwrap()).is_err()));
    }

    #[test]
    fn bad_operator_is_an_error() {
        let p = pod("p")
            .spec("affinity", json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "Within", "values": ["z2"]}]}
            ]}}}))
            .build();
        let e = State::new(&p).unwrap_err();
        assert!(
            e.to_string().contains("Unsupported value: \"Within\""),
            "{e}"
        );
    }

    #[test]
    fn preferred_weights() {
        let s = nodes();
        let p = pod("p")
            .spec("affinity", json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}},
                {"weight": 30, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}},
                {"weight": 20, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z2"]}]}}
            ]}}))
            .build();
        let st = State::new(&p).unwrap();
        let mut scores: Vec<i64> = ["a", "b", "c"]
            .iter()
            .map(|n| score(&st, s.node(n).unwrap()))
            .collect();
        assert_eq!(scores, vec![40, 20, 0]);
        normalize(&mut scores);
        assert_eq!(scores, vec![100, 50, 0]);
    }
}
