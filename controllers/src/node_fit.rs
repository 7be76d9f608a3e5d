//! Whether a pod fits a node by what the node says about itself: its name,
//! labels (nodeSelector, required node affinity) and taints. The daemon set
//! controller decides with it which nodes should run a daemon pod, as
//! upstream's NodeShouldRunDaemonPod (resources are the scheduler's business).

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, PodSpec, Taint, Toleration,
};

fn node_name(node: &Node) -> &str {
    node.metadata.name.as_deref().unwrap_or_default()
}

fn requirement(r: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let num = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| num(v)),
                values.first().and_then(|b| num(b)),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// One term: all its expressions and fields hold. An empty term matches
/// nothing (upstream).
fn term(t: &NodeSelectorTerm, node: &Node) -> bool {
    let exprs = t.match_expressions.as_deref().unwrap_or_default();
    let fields = t.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    let name = node_name(node).to_string();
    exprs
        .iter()
        .all(|r| requirement(r, labels.and_then(|l| l.get(&r.key))))
        && fields.iter().all(|r| {
            let v = (r.key == "metadata.name").then_some(&name);
            requirement(r, v)
        })
}

/// nodeName, nodeSelector and required node affinity (terms ORed).
pub fn selects(spec: &PodSpec, node: &Node) -> bool {
    if let Some(n) = spec.node_name.as_deref().filter(|n| !n.is_empty()) {
        if n != node_name(node) {
            return false;
        }
    }
    let labels = node.metadata.labels.as_ref();
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
    let affinity_ok = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_none_or(|req| req.node_selector_terms.iter().any(|t| term(t, node)));
    selector_ok && affinity_ok
}

/// Upstream ToleratesTaint.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    if t.key
        .as_deref()
        .is_some_and(|k| !k.is_empty() && k != taint.key)
    {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// The node's NoSchedule / NoExecute taints the pod does not tolerate.
pub fn untolerated<'a>(spec: &PodSpec, node: &'a Node) -> Vec<&'a Taint> {
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
        .iter()
        .filter(|t| matches!(t.effect.as_str(), "NoSchedule" | "NoExecute"))
        .filter(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
        .collect()
}

/// (should run, should continue running) for a pod with `spec` on `node`:
/// a node it fits runs it; a node whose untolerated taints are all
/// NoSchedule keeps a pod already there; any other does neither.
pub fn should_run(spec: &PodSpec, node: &Node) -> (bool, bool) {
    if !selects(spec, node) {
        return (false, false);
    }
    let bad = untolerated(spec, node);
    if bad.is_empty() {
        return (true, true);
    }
    (false, !bad.iter().any(|t| t.effect == "NoExecute"))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Affinity, NodeAffinity, NodeSelector, NodeSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn node(name: &str, labels: &[(&str, &str)], taints: &[(&str, &str)]) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(
                    taints
                        .iter()
                        .map(|(k, e)| Taint {
                            key: k.to_string(),
                            effect: e.to_string(),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn req(key: &str, op: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn with_affinity(terms: Vec<NodeSelectorTerm>) -> PodSpec {
        PodSpec {
            affinity: Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: terms,
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn selector_affinity_and_fields() {
        let gpu = node("a", &[("kind", "gpu"), ("cores", "8")], &[]);
        let plain = node("b", &[], &[]);
        let spec = PodSpec {
            node_selector: Some([("kind".to_string(), "gpu".to_string())].into()),
            ..Default::default()
        };
        assert!(selects(&spec, &gpu));
        assert!(!selects(&spec, &plain));
        let gt = with_affinity(vec![NodeSelectorTerm {
            match_expressions: Some(vec![req("cores", "Gt", &["4"])]),
            ..Default::default()
        }]);
        assert!(selects(&gt, &gpu) && !selects(&gt, &plain));
        let by_name = with_affinity(vec![NodeSelectorTerm {
            match_fields: Some(vec![req("metadata.name", "In", &["b"])]),
            ..Default::default()
        }]);
        assert!(!selects(&by_name, &gpu) && selects(&by_name, &plain));
        // Terms are ORed; an empty term matches nothing.
        let either = with_affinity(vec![
            NodeSelectorTerm::default(),
            NodeSelectorTerm {
                match_expressions: Some(vec![req("kind", "DoesNotExist", &[])]),
                ..Default::default()
            },
        ]);
        assert!(!selects(&either, &gpu) && selects(&either, &plain));
    }

    #[test]
    fn taints_decide_run_and_continue() {
        let spec = PodSpec {
            tolerations: Some(vec![Toleration {
                key: Some("ok".into()),
                operator: Some("Exists".into()),
                ..Default::default()
            }]),
            ..Default::default()
        };
        assert_eq!(should_run(&spec, &node("n", &[], &[])), (true, true));
        assert_eq!(
            should_run(&spec, &node("n", &[], &[("ok", "NoExecute")])),
            (true, true)
        );
        assert_eq!(
            should_run(&spec, &node("n", &[], &[("bad", "NoSchedule")])),
            (false, true)
        );
        assert_eq!(
            should_run(&spec, &node("n", &[], &[("bad", "NoExecute")])),
            (false, false)
        );
        assert_eq!(
            should_run(&spec, &node("n", &[], &[("bad", "PreferNoSchedule")])),
            (true, true)
        );
        let value = Toleration {
            key: Some("k".into()),
            value: Some("v".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        };
        let taint = |v: &str, e: &str| Taint {
            key: "k".into(),
            value: Some(v.into()),
            effect: e.into(),
            ..Default::default()
        };
        assert!(tolerates(&value, &taint("v", "NoSchedule")));
        assert!(!tolerates(&value, &taint("w", "NoSchedule")));
        assert!(!tolerates(&value, &taint("v", "NoExecute")));
    }
}
