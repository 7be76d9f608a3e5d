//! Label selectors and node selectors, compiled once and matched many times.
//!
//! Compiling is where bad input is caught: an unknown operator, `In` without
//! values, `Gt` with a non-integer. The error says which field, in the API
//! server's style, so the pod's events explain why it cannot be scheduled.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;

/// A selector in a pod, node-selector term or disruption budget is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SelectorError {
    pub path: String,
    pub message: String,
}

fn sel_err(path: impl Into<String>, message: impl Into<String>) -> SelectorError {
    SelectorError {
        path: path.into(),
        message: message.into(),
    }
}

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LabelOp {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LabelReq {
    key: String,
    op: LabelOp,
}

/// A compiled `metav1.LabelSelector`. A missing selector selects nothing; an
/// empty one selects everything.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LabelSelector {
    nothing: bool,
    reqs: Vec<LabelReq>,
}

impl LabelSelector {
    pub fn everything() -> LabelSelector {
        LabelSelector {
            nothing: false,
            reqs: Vec::new(),
        }
    }

    pub fn nothing() -> LabelSelector {
        LabelSelector {
            nothing: true,
            reqs: Vec::new(),
        }
    }

    /// Compiles `sel`; `path` names it in errors.
    pub fn compile(
        sel: Option<&meta::LabelSelector>,
        path: &str,
    ) -> Result<LabelSelector, SelectorError> {
        let Some(sel) = sel else {
            return Ok(LabelSelector::nothing());
        };
        let mut reqs = Vec::new();
        for (k, v) in sel.match_labels.iter().flatten() {
            reqs.push(LabelReq {
                key: k.clone(),
                op: LabelOp::In(vec![v.clone()]),
            });
        }
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let p = format!("{path}.matchExpressions[{i}]");
            let values = e.values.clone().unwrap_or_default();
            let op = match e.operator.as_str() {
                "In" | "NotIn" => {
                    if values.is_empty() {
                        return Err(sel_err(
                            format!("{p}.values"),
                            "Required value: must be specified when `operator` is 'In' or 'NotIn'",
                        ));
                    }
                    if e.operator == "In" {
                        LabelOp::In(values)
                    } else {
                        LabelOp::NotIn(values)
                    }
                }
                "Exists" | "DoesNotExist" => {
                    if !values.is_empty() {
                        return Err(sel_err(
                            format!("{p}.values"),
                            "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                        ));
                    }
                    if e.operator == "Exists" {
                        LabelOp::Exists
                    } else {
                        LabelOp::DoesNotExist
                    }
                }
                other => {
                    return Err(sel_err(
                        format!("{p}.operator"),
                        format!("{other:?} is not a valid label selector operator"),
                    ))
                }
            };
            reqs.push(LabelReq {
                key: e.key.clone(),
                op,
            });
        }
        Ok(LabelSelector {
            nothing: false,
            reqs,
        })
    }

    /// True when it selects everything (no requirements).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.reqs.is_empty()
    }

    /// Adds `key in (value)` (how `matchLabelKeys` narrows a selector).
    pub fn require_equal(&mut self, key: &str, value: &str) {
        self.reqs.push(LabelReq {
            key: key.to_string(),
            op: LabelOp::In(vec![value.to_string()]),
        });
    }

    /// Adds `key notin (value)` (how `mismatchLabelKeys` narrows a selector).
    pub fn require_not_equal(&mut self, key: &str, value: &str) {
        self.reqs.push(LabelReq {
            key: key.to_string(),
            op: LabelOp::NotIn(vec![value.to_string()]),
        });
    }

    pub fn matches(&self, labels: Option<&Labels>) -> bool {
        if self.nothing {
            return false;
        }
        self.reqs.iter().all(|r| {
            let v = labels.and_then(|l| l.get(&r.key));
            match &r.op {
                LabelOp::In(vals) => v.is_some_and(|v| vals.contains(v)),
                LabelOp::NotIn(vals) => v.is_none_or(|v| !vals.contains(v)),
                LabelOp::Exists => v.is_some(),
                LabelOp::DoesNotExist => v.is_none(),
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum NodeOp {
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    Gt(i64),
    Lt(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeReq {
    key: String,
    op: NodeOp,
}

/// One compiled `NodeSelectorTerm`: its requirements are ANDed; a term with
/// none matches no node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeTerm {
    exprs: Vec<NodeReq>,
    /// `matchFields` on `metadata.name`: (In?, name).
    fields: Vec<(bool, String)>,
}

const NODE_OPERATORS: &str = r#""DoesNotExist", "Exists", "Gt", "In", "Lt", "NotIn""#;

fn compile_node_req(r: &NodeSelectorRequirement, path: &str) -> Result<NodeReq, SelectorError> {
    let values = r.values.clone().unwrap_or_default();
    let op = match r.operator.as_str() {
        "In" | "NotIn" => {
            if values.is_empty() {
                return Err(sel_err(
                    format!("{path}.values"),
                    "Required value: must be specified when `operator` is 'In' or 'NotIn'",
                ));
            }
            if r.operator == "In" {
                NodeOp::In(values)
            } else {
                NodeOp::NotIn(values)
            }
        }
        "Exists" | "DoesNotExist" => {
            if !values.is_empty() {
                return Err(sel_err(
                    format!("{path}.values"),
                    "Forbidden: may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                ));
            }
            if r.operator == "Exists" {
                NodeOp::Exists
            } else {
                NodeOp::DoesNotExist
            }
        }
        "Gt" | "Lt" => {
            if values.len() != 1 {
                return Err(sel_err(
                    format!("{path}.values"),
                    "Required value: must be specified single value when `operator` is 'Lt' or 'Gt'",
                ));
            }
            let n: i64 = values[0].parse().map_err(|_| {
                sel_err(
                    format!("{path}.values[0]"),
                    format!("Invalid value: {:?}: must be an integer", values[0]),
                )
            })?;
            if r.operator == "Gt" {
                NodeOp::Gt(n)
            } else {
                NodeOp::Lt(n)
            }
        }
        other => {
            return Err(sel_err(
                format!("{path}.operator"),
                format!("Unsupported value: {other:?}: supported values: {NODE_OPERATORS}"),
            ))
        }
    };
    Ok(NodeReq {
        key: r.key.clone(),
        op,
    })
}

impl NodeTerm {
    pub fn compile(t: &NodeSelectorTerm, path: &str) -> Result<NodeTerm, SelectorError> {
        let mut exprs = Vec::new();
        for (i, r) in t.match_expressions.iter().flatten().enumerate() {
            exprs.push(compile_node_req(
                r,
                &format!("{path}.matchExpressions[{i}]"),
            )?);
        }
        let mut fields = Vec::new();
        for (i, r) in t.match_fields.iter().flatten().enumerate() {
            let p = format!("{path}.matchFields[{i}]");
            if r.key != "metadata.name" {
                return Err(sel_err(
                    format!("{p}.key"),
                    format!(
                        "Unsupported value: {:?}: supported values: \"metadata.name\"",
                        r.key
                    ),
                ));
            }
            let values = r.values.as_deref().unwrap_or_default();
            let is_in = match r.operator.as_str() {
                "In" => true,
                "NotIn" => false,
                other => {
                    return Err(sel_err(
                        format!("{p}.operator"),
                        format!(
                            "Unsupported value: {other:?}: supported values: \"In\", \"NotIn\""
                        ),
                    ))
                }
            };
            if values.len() != 1 {
                return Err(sel_err(
                    format!("{p}.values"),
                    "Required value: must be only one value when `operator` is 'In' or 'NotIn' for node field selector",
                ));
            }
            fields.push((is_in, values[0].clone()));
        }
        Ok(NodeTerm { exprs, fields })
    }

    pub fn matches(&self, node_name: &str, labels: Option<&Labels>) -> bool {
        if self.exprs.is_empty() && self.fields.is_empty() {
            return false;
        }
        let labels_ok = self.exprs.iter().all(|r| {
            let v = labels.and_then(|l| l.get(&r.key));
            match &r.op {
                NodeOp::In(vals) => v.is_some_and(|v| vals.contains(v)),
                NodeOp::NotIn(vals) => v.is_none_or(|v| !vals.contains(v)),
                NodeOp::Exists => v.is_some(),
                NodeOp::DoesNotExist => v.is_none(),
                NodeOp::Gt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|x| x > *n),
                NodeOp::Lt(n) => v
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|x| x < *n),
            }
        });
        labels_ok
            && self
                .fields
                .iter()
                .all(|(is_in, name)| (name == node_name) == *is_in)
    }

    /// The node names this term can match at most, when it pins names with
    /// `matchFields metadata.name In`.
    pub fn pinned_name(&self) -> Option<&str> {
        self.fields
            .iter()
            .find(|(is_in, _)| *is_in)
            .map(|(_, n)| n.as_str())
    }
}

/// `requiredDuringScheduling...` node affinity plus `spec.nodeSelector`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequiredNodeSelector {
    node_selector: Vec<(String, String)>,
    /// ORed; `None` when the pod has no required node affinity.
    terms: Option<Vec<NodeTerm>>,
}

impl RequiredNodeSelector {
    pub fn compile(pod: &k8s_openapi::api::core::v1::Pod) -> Result<Self, SelectorError> {
        let Some(spec) = &pod.spec else {
            return Ok(Self::default());
        };
        let node_selector = spec
            .node_selector
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let required = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|na| {
                na.required_during_scheduling_ignored_during_execution
                    .as_ref()
            });
        let terms = match required {
            None => None,
            Some(ns) => {
                let mut out = Vec::new();
                for (i, t) in ns.node_selector_terms.iter().enumerate() {
                    let path = format!(
                        "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{i}]"
                    );
                    out.push(NodeTerm::compile(t, &path)?);
                }
                Some(out)
            }
        };
        Ok(RequiredNodeSelector {
            node_selector,
            terms,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.node_selector.is_empty() && self.terms.is_none()
    }

    pub fn matches(&self, node_name: &str, labels: Option<&Labels>) -> bool {
        let sel_ok = self
            .node_selector
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
        sel_ok
            && match &self.terms {
                None => true,
                Some(terms) => terms.iter().any(|t| t.matches(node_name, labels)),
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn label_sel(v: serde_json::Value) -> Result<LabelSelector, SelectorError> {
        let s: meta::LabelSelector = serde_json::from_value(v).unwrap();
        LabelSelector::compile(Some(&s), "sel")
    }

    #[test]
    fn label_selector_operators() {
        let l = labels(&[("app", "web"), ("tier", "front")]);
        let ok = |v| label_sel(v).unwrap().matches(Some(&l));
        assert!(ok(json!({"matchLabels": {"app": "web"}})));
        assert!(!ok(json!({"matchLabels": {"app": "db"}})));
        assert!(ok(
            json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "web"]}]})
        ));
        assert!(!ok(
            json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]})
        ));
        assert!(ok(
            json!({"matchExpressions": [{"key": "x", "operator": "NotIn", "values": ["web"]}]})
        ));
        assert!(ok(
            json!({"matchExpressions": [{"key": "tier", "operator": "Exists"}]})
        ));
        assert!(ok(
            json!({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]})
        ));
        assert!(ok(json!({})), "empty selects everything");
        assert!(!LabelSelector::compile(None, "s").unwrap().matches(Some(&l)));
    }

    #[test]
    fn label_selector_errors() {
        let e =
            label_sel(json!({"matchExpressions": [{"key": "a", "operator": "Near"}]})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "sel.matchExpressions[0].operator: \"Near\" is not a valid label selector operator"
        );
        assert!(label_sel(json!({"matchExpressions": [{"key": "a", "operator": "In"}]})).is_err());
        assert!(label_sel(
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]})
        )
        .is_err());
    }

    fn term(v: serde_json::Value) -> Result<NodeTerm, SelectorError> {
        let t: NodeSelectorTerm = serde_json::from_value(v).unwrap();
        NodeTerm::compile(&t, "t")
    }

    #[test]
    fn node_term_operators() {
        let l = labels(&[("zone", "a"), ("cores", "8")]);
        let ok = |v| term(v).unwrap().matches("n1", Some(&l));
        assert!(ok(
            json!({"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]})
        ));
        assert!(!ok(
            json!({"matchExpressions": [{"key": "cores", "operator": "Lt", "values": ["4"]}]})
        ));
        assert!(!ok(
            json!({"matchExpressions": [{"key": "zone", "operator": "Gt", "values": ["4"]}]})
        ));
        assert!(ok(
            json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}, {"key": "gpu", "operator": "DoesNotExist"}]})
        ));
        assert!(ok(
            json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]})
        ));
        assert!(!ok(
            json!({"matchFields": [{"key": "metadata.name", "operator": "NotIn", "values": ["n1"]}]})
        ));
        assert!(!ok(json!({})), "an empty term matches nothing");
    }

    #[test]
    fn node_term_errors() {
        let e =
            term(json!({"matchExpressions": [{"key": "a", "operator": "Near", "values": ["1"]}]}))
                .unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.matchExpressions[0].operator: Unsupported value: \"Near\": supported values: \"DoesNotExist\", \"Exists\", \"Gt\", \"In\", \"Lt\", \"NotIn\""
        );
        assert!(term(
            json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["x"]}]})
        )
        .is_err());
        assert!(term(
            json!({"matchFields": [{"key": "metadata.uid", "operator": "In", "values": ["x"]}]})
        )
        .is_err());
    }
}
