//! ResourceQuota scopes: which objects a scoped quota counts (upstream's pod
//! evaluator, `podMatchesScopeFunc`), and the validation of `spec.scopes` and
//! `spec.scopeSelector`.
//!
//! A quota's scopes and its scope selector's expressions are all required to
//! match (`scopes` are `Exists` expressions). Only pods carry scopes: a quota
//! with any scope counts no other kind, as upstream's object-count evaluator.

use std::collections::BTreeSet;

use serde_json::Value;

use super::error::Cause;
use super::kinds::Kind;

const TERMINATING: &str = "Terminating";
const NOT_TERMINATING: &str = "NotTerminating";
const BEST_EFFORT: &str = "BestEffort";
const NOT_BEST_EFFORT: &str = "NotBestEffort";
const PRIORITY_CLASS: &str = "PriorityClass";
const CROSS_NAMESPACE_AFFINITY: &str = "CrossNamespacePodAffinity";

const SCOPES: [&str; 6] = [
    TERMINATING,
    NOT_TERMINATING,
    BEST_EFFORT,
    NOT_BEST_EFFORT,
    PRIORITY_CLASS,
    CROSS_NAMESPACE_AFFINITY,
];

/// Resource names the quota system knows (upstream's standardQuotaResources):
/// only these are checked against a scope.
const STANDARD: [&str; 19] = [
    "cpu",
    "memory",
    "ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.storage",
    "requests.ephemeral-storage",
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "pods",
    "resourcequotas",
    "services",
    "replicationcontrollers",
    "secrets",
    "persistentvolumeclaims",
    "configmaps",
    "services.nodeports",
    "services.loadbalancers",
];

const POD_COMPUTE: [&str; 6] = [
    "cpu",
    "memory",
    "limits.cpu",
    "limits.memory",
    "requests.cpu",
    "requests.memory",
];

/// One requirement: a scope, an operator and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Requirement {
    scope: String,
    operator: String,
    values: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn requirements(quota: &Value) -> Vec<Requirement> {
    let spec = &quota["spec"];
    let scopes = strings(&spec["scopes"])
        .into_iter()
        .map(|scope| Requirement {
            scope,
            operator: "Exists".into(),
            values: Vec::new(),
        });
    let selected = spec["scopeSelector"]["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| Requirement {
            scope: e["scopeName"].as_str().unwrap_or_default().to_string(),
            operator: e["operator"].as_str().unwrap_or_default().to_string(),
            values: strings(&e["values"]),
        });
    scopes.chain(selected).collect()
}

fn is_pods(kind: &Kind) -> bool {
    kind.group.is_empty() && kind.plural == "pods"
}

/// Whether `quota` may count objects of `kind` at all: any kind when it has
/// no scope, only pods when it has one.
pub fn counts_kind(quota: &Value, kind: &Kind) -> bool {
    is_pods(kind) || requirements(quota).is_empty()
}

/// Whether `quota` counts `obj` of `kind`: always when it has no scope,
/// otherwise only a pod matching every scope.
pub fn matches(quota: &Value, kind: &Kind, obj: &Value) -> bool {
    let reqs = requirements(quota);
    if reqs.is_empty() {
        return true;
    }
    is_pods(kind) && reqs.iter().all(|r| pod_matches(r, obj))
}

/// Guaranteed, Burstable or BestEffort: the pod's recorded class, else the
/// class its spec gives.
fn qos(pod: &Value) -> &str {
    pod["status"]["qosClass"]
        .as_str()
        .unwrap_or_else(|| super::rules::qos_class(&pod["spec"]))
}

fn terminating(pod: &Value) -> bool {
    pod["spec"]["activeDeadlineSeconds"]
        .as_i64()
        .is_some_and(|s| s >= 0)
}

/// Any pod (anti-)affinity term, required or preferred, that names
/// namespaces or a namespace selector.
fn cross_namespace_affinity(pod: &Value) -> bool {
    let affinity = &pod["spec"]["affinity"];
    let cross = |t: &Value| {
        t["namespaces"].as_array().is_some_and(|n| !n.is_empty())
            || !t["namespaceSelector"].is_null()
    };
    ["podAffinity", "podAntiAffinity"].iter().any(|a| {
        let a = &affinity[*a];
        let required = a["requiredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten();
        let preferred = a["preferredDuringSchedulingIgnoredDuringExecution"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| &w["podAffinityTerm"]);
        required.chain(preferred).any(cross)
    })
}

/// PriorityClass as a label selector on `{PriorityClass: name}`, the label
/// absent when the pod names no class.
fn priority_matches(r: &Requirement, pod: &Value) -> bool {
    let class = pod["spec"]["priorityClassName"]
        .as_str()
        .filter(|c| !c.is_empty());
    match r.operator.as_str() {
        "In" => class.is_some_and(|c| r.values.iter().any(|v| v == c)),
        "NotIn" => class.is_none_or(|c| !r.values.iter().any(|v| v == c)),
        "Exists" => class.is_some(),
        "DoesNotExist" => class.is_none(),
        _ => false,
    }
}

fn pod_matches(r: &Requirement, pod: &Value) -> bool {
    match r.scope.as_str() {
        TERMINATING => terminating(pod),
        NOT_TERMINATING => !terminating(pod),
        BEST_EFFORT => qos(pod) == "BestEffort",
        NOT_BEST_EFFORT => qos(pod) != "BestEffort",
        PRIORITY_CLASS => priority_matches(r, pod),
        CROSS_NAMESPACE_AFFINITY => cross_namespace_affinity(pod),
        _ => false,
    }
}

/// Upstream's IsResourceQuotaScopeValidForResource.
fn valid_for(scope: &str, resource: &str) -> bool {
    match scope {
        BEST_EFFORT => resource == "pods",
        TERMINATING
        | NOT_TERMINATING
        | NOT_BEST_EFFORT
        | PRIORITY_CLASS
        | CROSS_NAMESPACE_AFFINITY => resource == "pods" || POD_COMPUTE.contains(&resource),
        _ => true,
    }
}

fn is_standard(resource: &str) -> bool {
    STANDARD.contains(&resource)
        || resource.starts_with("hugepages-")
        || resource.starts_with("requests.hugepages-")
}

/// `spec.scopes` and `spec.scopeSelector` as kube-apiserver validates them.
pub fn validate(quota: &Value, out: &mut Vec<Cause>) {
    let spec = &quota["spec"];
    let hard: BTreeSet<&str> = spec["hard"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.as_str())
        .filter(|k| is_standard(k))
        .collect();
    let scopes = strings(&spec["scopes"]);
    if !scopes.is_empty() {
        let shown = serde_json::to_string(&spec["scopes"]).unwrap_or_default();
        let mut seen = BTreeSet::new();
        for scope in &scopes {
            if !SCOPES.contains(&scope.as_str()) {
                out.push(Cause::invalid("spec.scopes", &shown, "unsupported scope"));
            }
            for _ in hard.iter().filter(|k| !valid_for(scope, k)) {
                out.push(Cause::invalid(
                    "spec.scopes",
                    &shown,
                    "unsupported scope applied to resource",
                ));
            }
            seen.insert(scope.as_str());
        }
        conflicts(&seen, "spec.scopes", &shown, out);
    }
    let Some(exprs) = spec["scopeSelector"]["matchExpressions"].as_array() else {
        return;
    };
    let path = "spec.scopeSelector.matchExpressions";
    let shown = serde_json::to_string(&spec["scopeSelector"]).unwrap_or_default();
    let mut seen = BTreeSet::new();
    for e in exprs {
        let scope = e["scopeName"].as_str().unwrap_or_default();
        let op = e["operator"].as_str().unwrap_or_default();
        let values = strings(&e["values"]);
        if !SCOPES.contains(&scope) {
            out.push(Cause::invalid(
                format!("{path}.scopeName"),
                format!("{scope:?}"),
                "unsupported scope",
            ));
        }
        for _ in hard.iter().filter(|k| !valid_for(scope, k)) {
            out.push(Cause::invalid(
                path,
                &shown,
                "unsupported scope applied to resource",
            ));
        }
        if [TERMINATING, NOT_TERMINATING, BEST_EFFORT, NOT_BEST_EFFORT].contains(&scope)
            && op != "Exists"
        {
            out.push(Cause::invalid(
                format!("{path}.operator"),
                format!("{op:?}"),
                "must be 'Exist' only operator when scope is any of ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort and ResourceQuotaScopeNotBestEffort",
            ));
        }
        match op {
            "In" | "NotIn" if values.is_empty() => {
                out.push(Cause::required_because(
                    format!("{path}.values"),
                    "must be at least one value when `operator` is 'In' or 'NotIn' for scope selector",
                ));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => out.push(Cause::invalid(
                format!("{path}.values"),
                serde_json::to_string(&e["values"]).unwrap_or_default(),
                "must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            _ => out.push(Cause::invalid(
                format!("{path}.operator"),
                format!("{op:?}"),
                "not a valid selector operator",
            )),
        }
        seen.insert(scope);
    }
    conflicts(&seen, path, &shown, out);
}

fn conflicts(seen: &BTreeSet<&str>, field: &str, shown: &str, out: &mut Vec<Cause>) {
    for pair in [
        [BEST_EFFORT, NOT_BEST_EFFORT],
        [TERMINATING, NOT_TERMINATING],
    ] {
        if pair.iter().all(|s| seen.contains(s)) {
            out.push(Cause::invalid(field, shown, "conflicting scopes"));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::kinds;

    fn pods() -> &'static Kind {
        kinds::by_kind("", "Pod").unwrap()
    }

    fn pod(spec: Value) -> Value {
        json!({ "spec": spec })
    }

    fn best_effort() -> Value {
        pod(json!({"containers": [{"name": "a"}]}))
    }

    fn burstable() -> Value {
        pod(json!({"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}]}))
    }

    #[test]
    fn unscoped_quotas_count_everything() {
        let q = json!({"spec": {"hard": {"pods": "1"}}});
        let cms = kinds::by_kind("", "ConfigMap").unwrap();
        assert!(counts_kind(&q, cms));
        assert!(matches(&q, cms, &json!({})));
        assert!(matches(&q, pods(), &best_effort()));
    }

    #[test]
    fn scopes_select_pods_and_only_pods() {
        let q = json!({"spec": {"hard": {"pods": "1"}, "scopes": ["BestEffort"]}});
        assert!(matches(&q, pods(), &best_effort()));
        assert!(!matches(&q, pods(), &burstable()));
        let cms = kinds::by_kind("", "ConfigMap").unwrap();
        assert!(counts_kind(&q, pods()));
        assert!(!counts_kind(&q, cms));
        assert!(!matches(&q, cms, &json!({})));
        // The recorded class wins over the spec's.
        let mut recorded = burstable();
        recorded["status"] = json!({"qosClass": "BestEffort"});
        assert!(matches(&q, pods(), &recorded));

        let q = json!({"spec": {"scopes": ["NotBestEffort", "Terminating"]}});
        let mut p = burstable();
        assert!(!matches(&q, pods(), &p), "every scope must match");
        p["spec"]["activeDeadlineSeconds"] = json!(30);
        assert!(matches(&q, pods(), &p));
        let q = json!({"spec": {"scopes": ["NotTerminating"]}});
        assert!(!matches(&q, pods(), &p));
        assert!(matches(&q, pods(), &burstable()));
    }

    #[test]
    fn priority_class_selects_like_a_label_selector() {
        let sel = |op: &str, values: Value| {
            json!({"spec": {"scopeSelector": {"matchExpressions": [
                {"scopeName": "PriorityClass", "operator": op, "values": values}]}}})
        };
        let high = pod(json!({"priorityClassName": "high", "containers": []}));
        let low = pod(json!({"priorityClassName": "low", "containers": []}));
        let none = pod(json!({"containers": []}));
        let q = sel("In", json!(["high"]));
        assert!(matches(&q, pods(), &high));
        assert!(!matches(&q, pods(), &low));
        assert!(!matches(&q, pods(), &none));
        // NotIn matches a pod without a class, as a label selector does.
        let q = sel("NotIn", json!(["high"]));
        assert!(!matches(&q, pods(), &high));
        assert!(matches(&q, pods(), &low));
        assert!(matches(&q, pods(), &none));
        let q = sel("Exists", json!([]));
        assert!(matches(&q, pods(), &low));
        assert!(!matches(&q, pods(), &none));
        let q = sel("DoesNotExist", json!([]));
        assert!(!matches(&q, pods(), &low));
        assert!(matches(&q, pods(), &none));
    }

    #[test]
    fn cross_namespace_affinity_terms() {
        let q = json!({"spec": {"scopes": ["CrossNamespacePodAffinity"]}});
        let local = pod(json!({"affinity": {"podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{"topologyKey": "zone"}]}}}));
        assert!(!matches(&q, pods(), &local));
        let named = pod(json!({"affinity": {"podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1,
                "podAffinityTerm": {"topologyKey": "zone", "namespaces": ["other"]}}]}}}));
        assert!(matches(&q, pods(), &named));
        let selected = pod(json!({"affinity": {"podAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "zone", "namespaceSelector": {}}]}}}));
        assert!(matches(&q, pods(), &selected));
    }

    fn causes(q: Value) -> Vec<String> {
        let mut out = Vec::new();
        validate(&q, &mut out);
        out.iter().map(Cause::line).collect()
    }

    #[test]
    fn validation_as_kube_apiserver() {
        assert!(causes(json!({"spec": {"hard": {"pods": "1", "cpu": "1"},
            "scopes": ["NotBestEffort", "Terminating"]}}))
        .is_empty());
        // BestEffort pods have no compute to count.
        assert_eq!(
            causes(json!({"spec": {"hard": {"pods": "1", "requests.cpu": "1"}, "scopes": ["BestEffort"]}})),
            ["spec.scopes: Invalid value: [\"BestEffort\"]: unsupported scope applied to resource"]
        );
        // Scopes count only pods; a non-standard name (count/...) is not checked.
        assert_eq!(
            causes(json!({"spec": {"hard": {"configmaps": "1", "count/secrets": "1"}, "scopes": ["Terminating"]}})),
            ["spec.scopes: Invalid value: [\"Terminating\"]: unsupported scope applied to resource"]
        );
        assert_eq!(
            causes(json!({"spec": {"scopes": ["BestEffort", "NotBestEffort", "Sometimes"]}})),
            [
                "spec.scopes: Invalid value: [\"BestEffort\",\"NotBestEffort\",\"Sometimes\"]: unsupported scope",
                "spec.scopes: Invalid value: [\"BestEffort\",\"NotBestEffort\",\"Sometimes\"]: conflicting scopes"
            ]
        );
        let sel = |exprs: Value| json!({"spec": {"scopeSelector": {"matchExpressions": exprs}}});
        assert!(causes(sel(
            json!([{"scopeName": "PriorityClass", "operator": "In", "values": ["a"]}])
        ))
        .is_empty());
        assert_eq!(
            causes(sel(json!([{"scopeName": "PriorityClass", "operator": "In"}]))),
            ["spec.scopeSelector.matchExpressions.values: Required value: must be at least one value when `operator` is 'In' or 'NotIn' for scope selector"]
        );
        assert_eq!(
            causes(sel(json!([{"scopeName": "PriorityClass", "operator": "Exists", "values": ["a"]}]))),
            ["spec.scopeSelector.matchExpressions.values: Invalid value: [\"a\"]: must be no value when `operator` is 'Exist' or 'DoesNotExist' for scope selector"]
        );
        assert_eq!(
            causes(sel(json!([{"scopeName": "BestEffort", "operator": "In", "values": ["a"]}]))),
            ["spec.scopeSelector.matchExpressions.operator: Invalid value: \"In\": must be 'Exist' only operator when scope is any of ResourceQuotaScopeTerminating, ResourceQuotaScopeNotTerminating, ResourceQuotaScopeBestEffort and ResourceQuotaScopeNotBestEffort"]
        );
        assert_eq!(
            causes(sel(json!([{"scopeName": "PriorityClass", "operator": "Near"}]))),
            ["spec.scopeSelector.matchExpressions.operator: Invalid value: \"Near\": not a valid selector operator"]
        );
    }
}
