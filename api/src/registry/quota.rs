//! ResourceQuota's arithmetic, shared by the registry's admission and the
//! quota controller: what one object uses (upstream's evaluators), and
//! whether a new object fits a quota.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::kinds::Kind;
use super::quantity::Quantity;

pub type Usage = BTreeMap<String, Quantity>;

/// Kinds with a legacy object-count name besides `count/<plural>`.
const LEGACY_COUNTS: [&str; 7] = [
    "pods",
    "services",
    "configmaps",
    "secrets",
    "persistentvolumeclaims",
    "replicationcontrollers",
    "resourcequotas",
];

/// The resources that make a pod's containers declare requests or limits.
const COMPUTE: [&str; 6] = [
    "cpu",
    "memory",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
];

pub fn count_name(kind: &Kind) -> String {
    if kind.group.is_empty() {
        format!("count/{}", kind.plural)
    } else {
        format!("count/{}.{}", kind.plural, kind.group)
    }
}

fn resources(v: &Value) -> BTreeMap<String, Quantity> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, q)| Some((k.clone(), Quantity::parse(q.as_str()?)?)))
        .collect()
}

fn add(to: &mut Usage, k: &str, q: Quantity) {
    let e = to.entry(k.to_string()).or_default();
    *e = e.plus(q);
}

/// A pod's effective requests or limits (`which`): the sum over its
/// containers, at least the largest init container's, plus overhead.
fn pod_resources(spec: &Value, which: &str) -> BTreeMap<String, Quantity> {
    let mut sum: BTreeMap<String, Quantity> = BTreeMap::new();
    for c in spec["containers"].as_array().into_iter().flatten() {
        for (k, q) in resources(&c["resources"][which]) {
            let e = sum.entry(k).or_default();
            *e = e.plus(q);
        }
    }
    for c in spec["initContainers"].as_array().into_iter().flatten() {
        for (k, q) in resources(&c["resources"][which]) {
            let e = sum.entry(k).or_default();
            if q > *e {
                *e = q;
            }
        }
    }
    for (k, q) in resources(&spec["overhead"]) {
        let e = sum.entry(k).or_default();
        *e = e.plus(q);
    }
    sum
}

fn is_terminal(pod: &Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    )
}

/// What one object of `kind` counts against a quota.
pub fn usage(kind: &Kind, obj: &Value) -> Usage {
    let mut u = Usage::new();
    u.insert(count_name(kind), Quantity::from_units(1));
    let legacy = kind.group.is_empty() && LEGACY_COUNTS.contains(&kind.plural);
    match (kind.group, kind.plural) {
        ("", "pods") => {
            // A finished pod holds only its object count.
            if is_terminal(obj) {
                return u;
            }
            u.insert("pods".into(), Quantity::from_units(1));
            let spec = &obj["spec"];
            for (k, q) in pod_resources(spec, "requests") {
                add(&mut u, &format!("requests.{k}"), q);
                if k == "cpu" || k == "memory" || k == "ephemeral-storage" {
                    add(&mut u, &k, q);
                }
            }
            for (k, q) in pod_resources(spec, "limits") {
                add(&mut u, &format!("limits.{k}"), q);
            }
        }
        ("", "services") => {
            u.insert("services".into(), Quantity::from_units(1));
            let ports = obj["spec"]["ports"].as_array().map_or(0, Vec::len) as i128;
            match obj["spec"]["type"].as_str() {
                Some("NodePort") => {
                    u.insert("services.nodeports".into(), Quantity::from_units(ports));
                }
                Some("LoadBalancer") => {
                    u.insert("services.loadbalancers".into(), Quantity::from_units(1));
                    if obj["spec"]["allocateLoadBalancerNodePorts"] != Value::Bool(false) {
                        u.insert("services.nodeports".into(), Quantity::from_units(ports));
                    }
                }
                _ => {}
            }
        }
        ("", "persistentvolumeclaims") => {
            u.insert("persistentvolumeclaims".into(), Quantity::from_units(1));
            if let Some(q) = obj["spec"]["resources"]["requests"]["storage"]
                .as_str()
                .and_then(Quantity::parse)
            {
                u.insert("requests.storage".into(), q);
            }
        }
        _ if legacy => {
            u.insert(kind.plural.into(), Quantity::from_units(1));
        }
        _ => {}
    }
    u
}

/// Whether a quota's `spec.hard` could care about objects of `kind`.
pub fn tracks(hard: &BTreeSet<String>, kind: &Kind) -> bool {
    let dummy = usage(kind, &serde_json::json!({"spec": {"type": "LoadBalancer"}}));
    hard.contains(&count_name(kind))
        || dummy.keys().any(|k| hard.contains(k))
        || (kind.group.is_empty()
            && kind.plural == "pods"
            && hard.iter().any(|h| {
                h.starts_with("requests.")
                    || h.starts_with("limits.")
                    || h == "cpu"
                    || h == "memory"
                    || h == "ephemeral-storage"
            }))
        || (kind.group.is_empty()
            && kind.plural == "persistentvolumeclaims"
            && hard.contains("requests.storage"))
}

pub fn hard_of(quota: &Value) -> Usage {
    resources(&quota["spec"]["hard"])
}

/// Why `pod` may not be created under a quota limiting `hard`: a container
/// declares no request or limit for a compute resource the quota limits.
pub fn missing_compute(pod: &Value, hard: &Usage) -> Option<String> {
    let required: BTreeSet<&str> = COMPUTE
        .iter()
        .copied()
        .filter(|r| hard.contains_key(*r))
        .collect();
    if required.is_empty() {
        return None;
    }
    let mut missing = BTreeSet::new();
    for list in ["initContainers", "containers"] {
        for c in pod["spec"][list].as_array().into_iter().flatten() {
            let req = resources(&c["resources"]["requests"]);
            let lim = resources(&c["resources"]["limits"]);
            for r in &required {
                let has = match *r {
                    "cpu" | "requests.cpu" => req.contains_key("cpu"),
                    "memory" | "requests.memory" => req.contains_key("memory"),
                    "limits.cpu" => lim.contains_key("cpu"),
                    "limits.memory" => lim.contains_key("memory"),
                    _ => true,
                };
                if !has {
                    missing.insert(*r);
                }
            }
        }
    }
    (!missing.is_empty()).then(|| {
        format!(
            "must specify {}",
            missing.into_iter().collect::<Vec<_>>().join(",")
        )
    })
}

fn pretty(u: &Usage) -> String {
    u.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The quota's new `status.used` with `delta` charged, or upstream's
/// "exceeded quota" message naming what does not fit. Only resources the
/// quota limits are charged.
pub fn charge(name: &str, hard: &Usage, used: &Usage, delta: &Usage) -> Result<Usage, String> {
    let mut new = used.clone();
    let (mut req, mut was, mut lim) = (Usage::new(), Usage::new(), Usage::new());
    for (k, d) in delta.iter().filter(|(k, _)| hard.contains_key(*k)) {
        let u = used.get(k).copied().unwrap_or_default();
        let after = u.plus(*d);
        if after > hard[k] {
            req.insert(k.clone(), *d);
            was.insert(k.clone(), u);
            lim.insert(k.clone(), hard[k]);
        }
        new.insert(k.clone(), after);
    }
    if !req.is_empty() {
        return Err(format!(
            "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
            pretty(&req),
            pretty(&was),
            pretty(&lim)
        ));
    }
    Ok(new)
}

pub fn to_json(u: &Usage) -> Value {
    Value::Object(
        u.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.to_string())))
            .collect(),
    )
}

pub fn used_of(quota: &Value) -> Usage {
    resources(&quota["status"]["used"])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::registry::kinds;

    fn u(pairs: &[(&str, &str)]) -> Usage {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity::parse(v).unwrap()))
            .collect()
    }

    #[test]
    fn pod_usage_and_the_exact_message() {
        let pods = kinds::by_kind("", "Pod").unwrap();
        let pod = json!({"spec":{"containers":[
            {"name":"a","resources":{"requests":{"cpu":"250m","memory":"64Mi"},"limits":{"cpu":"500m"}}},
            {"name":"b","resources":{"requests":{"cpu":"250m","memory":"64Mi"}}}],
            "initContainers":[{"name":"i","resources":{"requests":{"cpu":"2"}}}]}});
        let got = usage(pods, &pod);
        assert_eq!(got["pods"].to_string(), "1");
        assert_eq!(got["count/pods"].to_string(), "1");
        assert_eq!(got["requests.cpu"].to_string(), "2");
        assert_eq!(got["cpu"].to_string(), "2");
        assert_eq!(got["requests.memory"].to_string(), "128Mi");
        assert_eq!(got["limits.cpu"].to_string(), "500m");
        let hard = u(&[("pods", "2"), ("requests.cpu", "3")]);
        let used = u(&[("pods", "2"), ("requests.cpu", "2")]);
        assert_eq!(
            charge("compute", &hard, &used, &got),
            Err("exceeded quota: compute, requested: pods=1,requests.cpu=2, used: pods=2,requests.cpu=2, limited: pods=2,requests.cpu=3".into())
        );
        // Only what does not fit is named.
        let used = u(&[("pods", "2"), ("requests.cpu", "1")]);
        assert_eq!(
            charge("compute", &hard, &used, &got),
            Err("exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2".into())
        );
        let ok = charge("compute", &hard, &u(&[("pods", "0")]), &got).unwrap();
        assert_eq!(ok["requests.cpu"].to_string(), "2");
        assert!(!ok.contains_key("limits.cpu"));
        // Finished pods hold only their object count.
        let done = usage(pods, &json!({"status":{"phase":"Succeeded"}}));
        assert_eq!(done.keys().collect::<Vec<_>>(), ["count/pods"]);
    }

    #[test]
    fn pods_must_declare_what_the_quota_limits() {
        let hard = u(&[
            ("limits.memory", "1Gi"),
            ("requests.cpu", "1"),
            ("pods", "5"),
        ]);
        let pod =
            json!({"spec":{"containers":[{"name":"a","resources":{"requests":{"cpu":"1"}}}]}});
        assert_eq!(
            missing_compute(&pod, &hard).as_deref(),
            Some("must specify limits.memory")
        );
        assert_eq!(missing_compute(&pod, &u(&[("pods", "1")])), None);
    }

    #[test]
    fn other_kinds_count() {
        let cms = kinds::by_kind("", "ConfigMap").unwrap();
        let got = usage(cms, &json!({}));
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            ["configmaps", "count/configmaps"]
        );
        let deps = kinds::by_kind("apps", "Deployment").unwrap();
        assert_eq!(
            usage(deps, &json!({})).keys().collect::<Vec<_>>(),
            ["count/deployments.apps"]
        );
        let svcs = kinds::by_kind("", "Service").unwrap();
        let lb = usage(
            svcs,
            &json!({"spec":{"type":"LoadBalancer","ports":[{},{}]}}),
        );
        assert_eq!(lb["services.loadbalancers"].to_string(), "1");
        assert_eq!(lb["services.nodeports"].to_string(), "2");
    }
}
