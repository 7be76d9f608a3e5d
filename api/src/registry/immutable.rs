//! What an update may not change, as kube-apiserver's `Validate*Update`
//! functions check it: a workload's selector, a StatefulSet's spec beyond its
//! mutable fields, a Job's selector, template, completions and policies, a pod's spec
//! beyond images, tolerations added and deadlines shortened, and the data of
//! an immutable ConfigMap or Secret.

use serde_json::{Map, Value};

use super::error::Cause;

pub fn no_update_checks(_: &Value, _: &Value, _: &mut Vec<Cause>) {}

fn shown(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn immutable(old: &Value, new: &Value, field: &str, out: &mut Vec<Cause>) {
    if old != new {
        out.push(Cause::invalid(field, shown(new), "field is immutable"));
    }
}

/// Deployment, ReplicaSet, DaemonSet (apps/v1): the selector is fixed.
pub fn selector_fixed(old: &Value, new: &Value, out: &mut Vec<Cause>) {
    immutable(
        &old["spec"]["selector"],
        &new["spec"]["selector"],
        "spec.selector",
        out,
    );
}

const STATEFUL_SET_MUTABLE: [&str; 7] = [
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

fn without(spec: &Value, fields: &[&str]) -> Map<String, Value> {
    let mut m = spec.as_object().cloned().unwrap_or_default();
    for f in fields {
        m.remove(*f);
    }
    m
}

pub fn stateful_set(old: &Value, new: &Value, out: &mut Vec<Cause>) {
    if without(&old["spec"], &STATEFUL_SET_MUTABLE) != without(&new["spec"], &STATEFUL_SET_MUTABLE)
    {
        out.push(Cause::forbidden(
            "spec",
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        ));
    }
}

/// A template with the scheduling directives a suspended Job that never
/// started may still change (upstream's mutable scheduling directives: node
/// selector and affinity, tolerations, scheduling gates, labels and
/// annotations) taken out.
fn without_scheduling_directives(template: &Value) -> Value {
    let mut t = template.clone();
    if let Some(meta) = t["metadata"].as_object_mut() {
        meta.remove("labels");
        meta.remove("annotations");
    }
    if let Some(spec) = t["spec"].as_object_mut() {
        for f in ["nodeSelector", "tolerations", "schedulingGates"] {
            spec.remove(f);
        }
        // Of the affinity, only node affinity may change.
        let affinity = spec.get_mut("affinity").and_then(Value::as_object_mut);
        if let Some(a) = affinity {
            a.remove("nodeAffinity");
            if a.is_empty() {
                spec.remove("affinity");
            }
        }
    }
    t
}

pub fn job(old: &Value, new: &Value, out: &mut Vec<Cause>) {
    let (o, n) = (&old["spec"], &new["spec"]);
    immutable(&o["selector"], &n["selector"], "spec.selector", out);
    let suspended_unstarted =
        n["suspend"] == Value::Bool(true) && old["status"]["startTime"].is_null();
    let template_same = if suspended_unstarted {
        without_scheduling_directives(&o["template"])
            == without_scheduling_directives(&n["template"])
    } else {
        o["template"] == n["template"]
    };
    if !template_same {
        out.push(Cause::invalid(
            "spec.template",
            shown(&n["template"]),
            "field is immutable",
        ));
    }
    // Indexed Jobs are elastic: completions may change together with an
    // equal parallelism.
    let elastic = n["completionMode"] == "Indexed" && n["completions"] == n["parallelism"];
    if !elastic {
        immutable(
            &o["completions"],
            &n["completions"],
            "spec.completions",
            out,
        );
    }
    for field in [
        "completionMode",
        "podFailurePolicy",
        "backoffLimitPerIndex",
        "managedBy",
        "successPolicy",
    ] {
        immutable(&o[field], &n[field], &format!("spec.{field}"), out);
    }
}

const POD_UPDATE: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// A toleration without its tolerationSeconds, which an update may change.
fn toleration_key(t: &Value) -> Value {
    let mut t = t.clone();
    if let Some(m) = t.as_object_mut() {
        m.remove("tolerationSeconds");
    }
    t
}

pub fn pod(old: &Value, new: &Value, out: &mut Vec<Cause>) {
    let (o, n) = (&old["spec"], &new["spec"]);
    // The old spec with what an update may change taken from the new one.
    let mut munged = o.clone();
    for list in ["containers", "initContainers"] {
        // (`get_mut`: indexing a Value mutably would insert a null.)
        let mine = munged.get_mut(list).and_then(Value::as_array_mut);
        let (Some(mine), Some(theirs)) = (mine, n[list].as_array()) else {
            continue;
        };
        if mine.len() != theirs.len() {
            continue;
        }
        for (c, nc) in mine.iter_mut().zip(theirs) {
            if let (Some(c), Some(image)) = (c.as_object_mut(), nc.get("image")) {
                c.insert("image".into(), image.clone());
            }
        }
    }
    if let Some(m) = munged.as_object_mut() {
        for f in [
            "activeDeadlineSeconds",
            "tolerations",
            "terminationGracePeriodSeconds",
            "schedulingGates",
        ] {
            match n.get(f) {
                Some(v) => m.insert(f.into(), v.clone()),
                None => m.remove(f),
            };
        }
    }
    if munged != *n {
        out.push(Cause::forbidden("spec", POD_UPDATE));
    }
    match (
        o["activeDeadlineSeconds"].as_i64(),
        n["activeDeadlineSeconds"].as_i64(),
    ) {
        (Some(_), None) => out.push(Cause::invalid(
            "spec.activeDeadlineSeconds",
            "\"null\"",
            "must not update from a positive integer to nil value",
        )),
        (Some(was), Some(now)) if now > was => out.push(Cause::invalid(
            "spec.activeDeadlineSeconds",
            now,
            "must be less than or equal to previous value",
        )),
        _ => {}
    }
    let new_tolerations: Vec<Value> = n["tolerations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(toleration_key)
        .collect();
    let dropped = o["tolerations"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|t| !new_tolerations.contains(&toleration_key(t)));
    if dropped {
        out.push(Cause::forbidden(
            "spec.tolerations",
            "existing toleration can not be modified except its tolerationSeconds",
        ));
    }
    // Scheduling gates may only be removed.
    let new_gates = n["schedulingGates"].as_array().cloned().unwrap_or_default();
    let old_gates = o["schedulingGates"].as_array().cloned().unwrap_or_default();
    if new_gates.iter().any(|g| !old_gates.contains(g)) {
        out.push(Cause::forbidden(
            "spec.schedulingGates",
            "only deletion is allowed, but found new scheduling gate",
        ));
    }
}

/// ConfigMap and Secret: once `immutable` is true, it and the data stay.
pub fn immutable_data(old: &Value, new: &Value, out: &mut Vec<Cause>) {
    if old["immutable"] != Value::Bool(true) {
        return;
    }
    const WHY: &str = "field is immutable when `immutable` is set";
    if new["immutable"] != Value::Bool(true) {
        out.push(Cause::forbidden("immutable", WHY));
    }
    for field in ["data", "binaryData"] {
        if old[field] != new[field] {
            out.push(Cause::forbidden(field, WHY));
        }
    }
}

pub fn secret(old: &Value, new: &Value, out: &mut Vec<Cause>) {
    immutable(&old["type"], &new["type"], "type", out);
    immutable_data(old, new, out);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn lines(check: fn(&Value, &Value, &mut Vec<Cause>), old: &Value, new: &Value) -> Vec<String> {
        let mut out = Vec::new();
        check(old, new, &mut out);
        out.iter().map(Cause::line).collect()
    }

    #[test]
    fn workload_selectors_are_fixed() {
        let old = json!({"spec": {"replicas": 1, "selector": {"matchLabels": {"app": "a"}}}});
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(3);
        assert!(lines(selector_fixed, &old, &new).is_empty());
        new["spec"]["selector"] = json!({"matchLabels": {"app": "b"}});
        assert_eq!(
            lines(selector_fixed, &old, &new),
            ["spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"b\"}}: field is immutable"]
        );
    }

    #[test]
    fn stateful_sets_change_only_their_mutable_fields() {
        let old = json!({"spec": {"replicas": 1, "serviceName": "db", "template": {"a": 1},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}}]}});
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(5);
        new["spec"]["template"] = json!({"a": 2});
        new["spec"]["updateStrategy"] = json!({"type": "OnDelete"});
        assert!(lines(stateful_set, &old, &new).is_empty());
        new["spec"]["volumeClaimTemplates"] = json!([]);
        assert_eq!(
            lines(stateful_set, &old, &new),
            ["spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"]
        );
    }

    #[test]
    fn jobs_keep_selector_template_and_completions() {
        let old = json!({"spec": {"completions": 3, "parallelism": 1, "completionMode": "NonIndexed",
            "selector": {"matchLabels": {"u": "1"}},
            "template": {"metadata": {"labels": {"u": "1"}}, "spec": {"containers": [{"name": "c"}]}}},
            "status": {"startTime": "2026-11-23T00:00:00Z"}});
        let mut new = old.clone();
        new["spec"]["parallelism"] = json!(3);
        new["spec"]["ttlSecondsAfterFinished"] = json!(60);
        assert!(lines(job, &old, &new).is_empty());
        new["spec"]["completions"] = json!(4);
        new["spec"]["template"]["spec"]["nodeSelector"] = json!({"zone": "a"});
        assert_eq!(
            lines(job, &old, &new),
            [
                "spec.template: Invalid value: {\"metadata\":{\"labels\":{\"u\":\"1\"}},\"spec\":{\"containers\":[{\"name\":\"c\"}],\"nodeSelector\":{\"zone\":\"a\"}}}: field is immutable",
                "spec.completions: Invalid value: 4: field is immutable"
            ]
        );
        // managedBy and successPolicy stay as they were created.
        let mut managed = old.clone();
        managed["spec"]["managedBy"] = json!("example.com/queue");
        managed["spec"]["successPolicy"] = json!({"rules": [{"succeededCount": 1}]});
        assert_eq!(
            lines(job, &old, &managed),
            [
                "spec.managedBy: Invalid value: \"example.com/queue\": field is immutable",
                "spec.successPolicy: Invalid value: {\"rules\":[{\"succeededCount\":1}]}: field is immutable"
            ]
        );
        assert_eq!(
            lines(job, &managed, &old),
            [
                "spec.managedBy: Invalid value: null: field is immutable",
                "spec.successPolicy: Invalid value: null: field is immutable"
            ]
        );
        // A suspended Job that never started may move its pods' scheduling.
        let mut unstarted = old.clone();
        unstarted["status"] = json!({});
        let mut new = unstarted.clone();
        new["spec"]["suspend"] = json!(true);
        new["spec"]["template"]["spec"]["nodeSelector"] = json!({"zone": "a"});
        assert!(lines(job, &unstarted, &new).is_empty());
        new["spec"]["template"]["spec"]["affinity"] =
            json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {}}});
        assert!(lines(job, &unstarted, &new).is_empty());
        new["spec"]["template"]["spec"]["affinity"]["podAffinity"] = json!({});
        assert_eq!(lines(job, &unstarted, &new).len(), 1, "pod affinity stays");
        new["spec"]["template"]["spec"]["affinity"] = json!({});
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("x");
        assert_eq!(lines(job, &unstarted, &new).len(), 1);
        // Elastic Indexed Jobs scale completions with parallelism.
        let mut indexed = old.clone();
        indexed["spec"]["completionMode"] = json!("Indexed");
        let mut new = indexed.clone();
        new["spec"]["completions"] = json!(6);
        new["spec"]["parallelism"] = json!(6);
        assert!(lines(job, &indexed, &new).is_empty());
    }

    #[test]
    fn pod_updates_as_kube_apiserver() {
        let old = json!({"spec": {
            "containers": [{"name": "c", "image": "a:1", "ports": [{"containerPort": 80}]}],
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
            "activeDeadlineSeconds": 100,
            "schedulingGates": [{"name": "g"}]}});
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("a:2");
        new["spec"]["tolerations"][0]["tolerationSeconds"] = json!(10);
        new["spec"]["tolerations"]
            .as_array_mut()
            .unwrap()
            .push(json!({"key": "other", "operator": "Exists"}));
        new["spec"]["activeDeadlineSeconds"] = json!(50);
        new["spec"]["schedulingGates"] = json!([]);
        assert!(lines(pod, &old, &new).is_empty());

        let mut moved = old.clone();
        moved["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(81);
        assert_eq!(
            lines(pod, &old, &moved),
            [format!("spec: Forbidden: {POD_UPDATE}")]
        );
        let mut longer = old.clone();
        longer["spec"]["activeDeadlineSeconds"] = json!(200);
        assert_eq!(
            lines(pod, &old, &longer),
            ["spec.activeDeadlineSeconds: Invalid value: 200: must be less than or equal to previous value"]
        );
        let mut dropped = old.clone();
        dropped["spec"]["tolerations"] = json!([]);
        assert_eq!(
            lines(pod, &old, &dropped),
            ["spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"]
        );
        let mut gated = old.clone();
        gated["spec"]["schedulingGates"] = json!([{"name": "g"}, {"name": "h"}]);
        assert_eq!(
            lines(pod, &old, &gated),
            ["spec.schedulingGates: Forbidden: only deletion is allowed, but found new scheduling gate"]
        );
    }

    #[test]
    fn immutable_config_maps_and_secrets_keep_their_data() {
        let old = json!({"data": {"a": "1"}});
        let new = json!({"data": {"a": "2"}, "immutable": true});
        assert!(lines(immutable_data, &old, &new).is_empty());
        let old = new;
        let new = json!({"data": {"a": "3"}, "immutable": false});
        assert_eq!(
            lines(immutable_data, &old, &new),
            [
                "immutable: Forbidden: field is immutable when `immutable` is set",
                "data: Forbidden: field is immutable when `immutable` is set"
            ]
        );
        let s_old = json!({"type": "Opaque"});
        let s_new = json!({"type": "kubernetes.io/tls"});
        assert_eq!(
            lines(secret, &s_old, &s_new),
            ["type: Invalid value: \"kubernetes.io/tls\": field is immutable"]
        );
    }
}
