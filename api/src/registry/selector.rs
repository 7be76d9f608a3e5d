//! Label and field selectors (`?labelSelector=`, `?fieldSelector=`), parsed once
//! and matched against object JSON.

use serde_json::Value;

use super::error::ApiError;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Eq(String),
    NotEq(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Op,
}

/// A parsed label selector; empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits at commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0usize, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn bad(s: &str, why: &str) -> ApiError {
    ApiError::bad_request(format!("unable to parse requirement: {s:?}: {why}"))
}

fn set_values(s: &str, rest: &str) -> Result<Vec<String>, ApiError> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| bad(s, "expected a parenthesised list of values"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn parse_requirement(s: &str) -> Result<Requirement, ApiError> {
    let t = s.trim();
    if let Some(key) = t.strip_prefix('!') {
        return Ok(Requirement {
            key: key.trim().to_string(),
            op: Op::DoesNotExist,
        });
    }
    for (sep, ctor) in [
        ("!=", Op::NotEq as fn(String) -> Op),
        ("==", Op::Eq as fn(String) -> Op),
        ("=", Op::Eq as fn(String) -> Op),
    ] {
        if let Some((k, v)) = t.split_once(sep) {
            return Ok(Requirement {
                key: k.trim().to_string(),
                op: ctor(v.trim().to_string()),
            });
        }
    }
    let mut words = t.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default().to_string();
    let rest = words.next().unwrap_or_default().trim();
    let op = if let Some(r) = rest.strip_prefix("notin") {
        Op::NotIn(set_values(s, r)?)
    } else if let Some(r) = rest.strip_prefix("in") {
        Op::In(set_values(s, r)?)
    } else if rest.is_empty() {
        Op::Exists
    } else {
        return Err(bad(s, "expected one of =, ==, !=, in, notin"));
    };
    Ok(Requirement { key, op })
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        let reqs = split_top(s)
            .into_iter()
            .map(parse_requirement)
            .collect::<Result<Vec<_>, _>>()?;
        for r in &reqs {
            if let Err(why) = super::names::qualified_name(&r.key) {
                return Err(bad(&r.key, &why));
            }
        }
        Ok(Self(reqs))
    }

    /// A `metav1.LabelSelector` object (`matchLabels`, `matchExpressions`).
    pub fn from_object(sel: &Value) -> Self {
        let mut reqs: Vec<Requirement> = sel["matchLabels"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| Requirement {
                key: k.clone(),
                op: Op::Eq(v.as_str().unwrap_or_default().to_string()),
            })
            .collect();
        for e in sel["matchExpressions"].as_array().into_iter().flatten() {
            let values: Vec<String> = e["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect();
            let op = match e["operator"].as_str().unwrap_or_default() {
                "In" => Op::In(values),
                "NotIn" => Op::NotIn(values),
                "Exists" => Op::Exists,
                _ => Op::DoesNotExist,
            };
            reqs.push(Requirement {
                key: e["key"].as_str().unwrap_or_default().to_string(),
                op,
            });
        }
        Self(reqs)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn matches(&self, labels: &Value) -> bool {
        self.0.iter().all(|r| {
            let have = labels.get(&r.key).and_then(Value::as_str);
            match &r.op {
                Op::Eq(v) => have == Some(v.as_str()),
                Op::NotEq(v) => have != Some(v.as_str()),
                Op::In(vs) => have.is_some_and(|h| vs.iter().any(|v| v == h)),
                Op::NotIn(vs) => have.is_none_or(|h| vs.iter().all(|v| v != h)),
                Op::Exists => have.is_some(),
                Op::DoesNotExist => have.is_none(),
            }
        })
    }
}

/// A parsed field selector: `path=value` / `path!=value` terms over the fields
/// a kind supports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// Fields each kind can be selected by, beyond `metadata.name` and
/// `metadata.namespace`.
fn extra_fields(group: &str, kind: &str) -> &'static [&'static str] {
    match (group, kind) {
        ("", "Pod") => &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ],
        ("", "Event") => &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
        ("events.k8s.io", "Event") => &[
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
            "reason",
            "type",
        ],
        ("", "Secret") => &["type"],
        ("", "Node") => &["spec.unschedulable"],
        ("", "Namespace") => &["status.phase"],
        ("batch", "Job") => &["status.successful"],
        ("", "ReplicationController") => &["status.replicas"],
        _ => &[],
    }
}

impl FieldSelector {
    pub fn parse(s: &str, group: &str, kind: &str) -> Result<Self, ApiError> {
        let mut terms = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (path, negate, value) = if let Some((p, v)) = term.split_once("!=") {
                (p, true, v)
            } else if let Some((p, v)) = term.split_once("==") {
                (p, false, v)
            } else if let Some((p, v)) = term.split_once('=') {
                (p, false, v)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{s}'; can't understand '{term}'"
                )));
            };
            let path = path.trim();
            let extra = extra_fields(group, kind);
            if !["metadata.name", "metadata.namespace"].contains(&path) && !extra.contains(&path) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {path}"
                )));
            }
            terms.push((path.to_string(), negate, value.trim().to_string()));
        }
        Ok(Self(terms))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name a `metadata.name=X` term pins, to narrow the read to one key.
    pub fn name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(p, neg, _)| p == "metadata.name" && !neg)
            .map(|(_, _, v)| v.as_str())
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, negate, want)| {
            let mut cur = obj;
            for seg in path.split('.') {
                cur = &cur[seg];
            }
            let have = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            // An absent boolean reads as "false", as Kubernetes' field sets do.
            let have = if have.is_empty() && (want == "false") && path == "spec.unschedulable" {
                "false".to_string()
            } else {
                have
            };
            (have == *want) != *negate
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn label_selectors() {
        let labels = json!({"app":"web","tier":"front"});
        let yes = [
            "",
            "app=web",
            "app==web",
            "app!=db",
            "tier in (front, back)",
            "tier notin (back)",
            "app",
            "!zone",
            "app=web,tier in (front)",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).unwrap().matches(&labels), "{s}");
        }
        for s in ["app=db", "zone", "!app", "tier in (back)", "app,zone=x"] {
            assert!(!LabelSelector::parse(s).unwrap().matches(&labels), "{s}");
        }
        assert_eq!(LabelSelector::parse("a in b").unwrap_err().code(), 400);
        assert_eq!(LabelSelector::parse("bad key=1").unwrap_err().code(), 400);
        let from = LabelSelector::from_object(&json!({"matchLabels":{"app":"web"},
            "matchExpressions":[{"key":"tier","operator":"NotIn","values":["back"]}]}));
        assert!(from.matches(&labels));
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata":{"name":"p","namespace":"ns"},
            "spec":{"nodeName":"n1"},"status":{"phase":"Running"}});
        let sel =
            FieldSelector::parse("spec.nodeName=n1,status.phase!=Pending", "", "Pod").unwrap();
        assert!(sel.matches(&pod));
        let sel = FieldSelector::parse("metadata.name=q", "", "Pod").unwrap();
        assert!(!sel.matches(&pod));
        assert_eq!(sel.name(), Some("q"));
        assert!(FieldSelector::parse("spec.nodeName=", "", "Pod")
            .unwrap()
            .matches(&json!({"spec":{}})));
        let err = FieldSelector::parse("spec.replicas=1", "apps", "Deployment").unwrap_err();
        assert_eq!(err.code(), 400);
        assert!(err.message.contains("spec.replicas"));
        let ev = json!({"involvedObject":{"kind":"Pod","name":"p"}});
        assert!(
            FieldSelector::parse("involvedObject.kind=Pod,involvedObject.name=p", "", "Event")
                .unwrap()
                .matches(&ev)
        );
    }
}
