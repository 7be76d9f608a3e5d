//! Per-kind defaulting and validation, as kube-apiserver's `SetDefaults_*` and
//! `Validate*` do for the fields users meet first. Objects arrive here already
//! checked against the typed model, so fields have the right JSON types.

use serde_json::{json, Map, Value};

use super::error::Cause;
use super::immutable::{self, no_update_checks};
use super::{job_policies, names};

/// What one kind adds to the generic object rules.
#[derive(Clone, Copy)]
pub struct Rules {
    pub name: fn(&str) -> Result<(), String>,
    /// Fills in defaults on create and update.
    pub defaults: fn(&mut Value),
    pub validate: fn(&Value, &mut Vec<Cause>),
    /// What an update may not change: (old, new) after defaulting.
    pub update: fn(&Value, &Value, &mut Vec<Cause>),
}

fn no_defaults(_: &mut Value) {}
fn no_checks(_: &Value, _: &mut Vec<Cause>) {}

pub const NONE: Rules = Rules {
    name: names::dns1123_subdomain,
    defaults: no_defaults,
    validate: no_checks,
    update: no_update_checks,
};

pub const NAMESPACE: Rules = Rules {
    name: names::dns1123_label,
    defaults: namespace_defaults,
    validate: no_checks,
    update: no_update_checks,
};
pub const NODE: Rules = NONE;
pub const POD: Rules = Rules {
    name: names::dns1123_subdomain,
    defaults: pod_defaults,
    validate: pod_validate,
    update: immutable::pod,
};
pub const SERVICE: Rules = Rules {
    name: names::dns1035_label,
    defaults: service_defaults,
    validate: service_validate,
    update: no_update_checks,
};
pub const CONFIG_MAP: Rules = Rules {
    name: names::dns1123_subdomain,
    defaults: no_defaults,
    validate: config_map_validate,
    update: immutable::immutable_data,
};
pub const SECRET: Rules = Rules {
    name: names::dns1123_subdomain,
    defaults: secret_defaults,
    validate: secret_validate,
    update: immutable::secret,
};
pub const EVENT: Rules = Rules {
    name: |_| Ok(()),
    defaults: no_defaults,
    validate: no_checks,
    update: no_update_checks,
};
pub const DEPLOYMENT: Rules = Rules {
    name: names::dns1123_subdomain,
    defaults: deployment_defaults,
    validate: workload_validate::<true>,
    update: immutable::selector_fixed,
};
pub const REPLICA_SET: Rules = Rules {
    name: names::dns1123_subdomain,
    defaults: replica_set_defaults,
    validate: workload_validate::<true>,
    update: immutable::selector_fixed,
};
pub const DAEMON_SET: Rules = Rules {
    name: names::dns1123_subdomain,
    defaults: daemon_set_defaults,
    validate: workload_validate::<true>,
    update: immutable::selector_fixed,
};
pub const STATEFUL_SET: Rules = Rules {
    name: names::dns1123_subdomain,
    defaults: stateful_set_defaults,
    validate: workload_validate::<true>,
    update: immutable::stateful_set,
};
pub const PERSISTENT_VOLUME_CLAIM: Rules = Rules {
    name: names::dns1123_subdomain,
    defaults: persistent_volume_claim_defaults,
    validate: no_checks,
    update: no_update_checks,
};
pub const JOB: Rules = Rules {
    name: names::dns1123_subdomain,
    defaults: job_defaults,
    validate: job_validate,
    update: job_update,
};

/// A Job's spec may change only as upstream allows; its status only along
/// upstream's transitions.
fn job_update(old: &Value, new: &Value, out: &mut Vec<Cause>) {
    immutable::job(old, new, out);
    super::job_status::update(old, new, out);
}
pub const RESOURCE_QUOTA: Rules = Rules {
    name: names::dns1123_subdomain,
    defaults: no_defaults,
    validate: super::quota_scope::validate,
    update: no_update_checks,
};
pub const CRON_JOB: Rules = Rules {
    name: cron_job_name,
    defaults: cron_job_defaults,
    validate: cron_job_validate,
    update: no_update_checks,
};

/// `obj[path...]` as a mutable object, created when absent.
fn obj_at<'a>(v: &'a mut Value, path: &[&str]) -> Option<&'a mut Map<String, Value>> {
    let mut cur = v;
    for p in path {
        let map = cur.as_object_mut()?;
        cur = map
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    cur.as_object_mut()
}

fn set_default(map: &mut Map<String, Value>, field: &str, value: Value) {
    if map.get(field).is_none_or(Value::is_null) {
        map.insert(field.to_string(), value);
    }
}

fn namespace_defaults(v: &mut Value) {
    let name = v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some(labels) = obj_at(v, &["metadata", "labels"]) {
        labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    }
    if let Some(spec) = obj_at(v, &["spec"]) {
        set_default(spec, "finalizers", json!(["kubernetes"]));
    }
    if let Some(status) = obj_at(v, &["status"]) {
        set_default(status, "phase", json!("Active"));
    }
}

fn image_pull_policy(image: &str) -> &'static str {
    let tail = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match tail.split_once(':') {
        Some((_, "latest")) | None => "Always",
        Some(_) => "IfNotPresent",
    }
}

fn container_defaults(c: &mut Value) {
    let image = c["image"].as_str().unwrap_or_default().to_string();
    let Some(map) = c.as_object_mut() else { return };
    set_default(map, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(map, "terminationMessagePolicy", json!("File"));
    set_default(map, "imagePullPolicy", json!(image_pull_policy(&image)));
    set_default(map, "resources", json!({}));
    if let Some(ports) = map.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(Value::as_object_mut) {
            set_default(p, "protocol", json!("TCP"));
        }
    }
}

/// Defaults of a pod spec, also inside workload templates.
fn pod_spec_defaults(spec: &mut Map<String, Value>) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "enableServiceLinks", json!(true));
    for list in ["initContainers", "containers"] {
        if let Some(cs) = spec.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(container_defaults);
        }
    }
}

fn pod_defaults(v: &mut Value) {
    if let Some(spec) = obj_at(v, &["spec"]) {
        pod_spec_defaults(spec);
        default_toleration_seconds(spec);
        requests_from_limits(spec);
        // ServiceAccount admission: a pod runs as `default` unless it says
        // otherwise (the deprecated `serviceAccount` field is its old name).
        let sa = [spec.get("serviceAccountName"), spec.get("serviceAccount")]
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|s| !s.is_empty())
            .unwrap_or("default")
            .to_string();
        spec.insert("serviceAccountName".into(), json!(sa));
        spec.insert("serviceAccount".into(), json!(sa));
    }
    if let Some(status) = obj_at(v, &["status"]) {
        set_default(status, "phase", json!("Pending"));
    }
    let qos = qos_class(&v["spec"]);
    if let Some(status) = obj_at(v, &["status"]) {
        set_default(status, "qosClass", json!(qos));
    }
}

/// A container that sets a limit but no request for a resource requests
/// its limit (upstream `SetDefaults_Pod`; pods only, not templates).
fn requests_from_limits(spec: &mut Map<String, Value>) {
    for list in ["initContainers", "containers"] {
        for c in spec
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(limits) = c["resources"]["limits"].as_object().cloned() else {
                continue;
            };
            if limits.is_empty() {
                continue;
            }
            if !c["resources"]["requests"].is_object() {
                c["resources"]["requests"] = json!({});
            }
            if let Some(req) = c["resources"]["requests"].as_object_mut() {
                for (k, v) in limits {
                    req.entry(k).or_insert(v);
                }
            }
        }
    }
}

/// DefaultTolerationSeconds admission: a pod leaves a failed node after
/// 300 s unless it already tolerates the taint, as upstream judges it: a
/// toleration of that key or of every key (empty), for NoExecute or every
/// effect (empty).
fn default_toleration_seconds(spec: &mut Map<String, Value>) {
    let tolerations = spec.entry("tolerations").or_insert_with(|| json!([]));
    let Some(list) = tolerations.as_array_mut() else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let tolerated = list.iter().any(|t| {
            let k = t["key"].as_str().unwrap_or_default();
            let e = t["effect"].as_str().unwrap_or_default();
            (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
        });
        if !tolerated {
            list.push(json!({"key": key, "operator": "Exists",
                "effect": "NoExecute", "tolerationSeconds": 300}));
        }
    }
}

/// Guaranteed when every container sets equal cpu and memory requests and
/// limits, BestEffort when none sets any, Burstable otherwise.
pub(super) fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .filter_map(|l| spec[*l].as_array())
        .flatten()
        .collect();
    let any = containers.iter().any(|c| {
        let r = &c["resources"];
        r["requests"].as_object().is_some_and(|m| !m.is_empty())
            || r["limits"].as_object().is_some_and(|m| !m.is_empty())
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        let r = &c["resources"];
        ["cpu", "memory"].iter().all(|res| {
            let limit = &r["limits"][*res];
            !limit.is_null() && (r["requests"][*res].is_null() || r["requests"][*res] == *limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn template_defaults(v: &mut Value, path: &[&str]) {
    if let Some(spec) = obj_at(v, path) {
        pod_spec_defaults(spec);
    }
}

fn deployment_defaults(v: &mut Value) {
    if let Some(spec) = obj_at(v, &["spec"]) {
        set_default(spec, "replicas", json!(1));
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(spec, "progressDeadlineSeconds", json!(600));
        set_default(spec, "strategy", json!({"type": "RollingUpdate"}));
    }
    if let Some(strategy) = obj_at(v, &["spec", "strategy"]) {
        if strategy.get("type") == Some(&json!("RollingUpdate")) {
            let ru = strategy.entry("rollingUpdate").or_insert_with(|| json!({}));
            if let Some(ru) = ru.as_object_mut() {
                set_default(ru, "maxUnavailable", json!("25%"));
                set_default(ru, "maxSurge", json!("25%"));
            }
        }
    }
    template_defaults(v, &["spec", "template", "spec"]);
}

fn replica_set_defaults(v: &mut Value) {
    if let Some(spec) = obj_at(v, &["spec"]) {
        set_default(spec, "replicas", json!(1));
    }
    template_defaults(v, &["spec", "template", "spec"]);
}

fn daemon_set_defaults(v: &mut Value) {
    if let Some(spec) = obj_at(v, &["spec"]) {
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(
            spec,
            "updateStrategy",
            json!({"type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
        );
    }
    template_defaults(v, &["spec", "template", "spec"]);
}

/// Where apps/v1 keeps a DaemonSet's template generation (upstream's
/// `spec.templateGeneration`): 1 on create, one more on each update that
/// changes the template, never set by the client. The daemon set
/// controller labels its pods `pod-template-generation` with it.
pub const DAEMON_SET_TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

/// Sets the template generation of DaemonSet `new`, created (`current`
/// None) or updated from `current`.
pub fn daemon_set_template_generation(current: Option<&Value>, new: &mut Value) {
    let generation = match current {
        None => 1,
        Some(old) => {
            let was = old["metadata"]["annotations"][DAEMON_SET_TEMPLATE_GENERATION]
                .as_str()
                .and_then(|g| g.parse::<i64>().ok())
                .unwrap_or(0);
            if old["spec"]["template"] != new["spec"]["template"] {
                was + 1
            } else if was == 0 {
                // Never set before (older data): nothing to keep.
                if let Some(a) = new["metadata"]["annotations"].as_object_mut() {
                    a.remove(DAEMON_SET_TEMPLATE_GENERATION);
                }
                return;
            } else {
                was
            }
        }
    };
    if let Some(a) = obj_at(new, &["metadata", "annotations"]) {
        a.insert(
            DAEMON_SET_TEMPLATE_GENERATION.into(),
            json!(generation.to_string()),
        );
    }
}

fn stateful_set_defaults(v: &mut Value) {
    if let Some(spec) = obj_at(v, &["spec"]) {
        set_default(spec, "replicas", json!(1));
        set_default(spec, "revisionHistoryLimit", json!(10));
        set_default(spec, "podManagementPolicy", json!("OrderedReady"));
        set_default(
            spec,
            "updateStrategy",
            json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
        );
        set_default(
            spec,
            "persistentVolumeClaimRetentionPolicy",
            json!({"whenDeleted": "Retain", "whenScaled": "Retain"}),
        );
    }
    template_defaults(v, &["spec", "template", "spec"]);
}

fn persistent_volume_claim_defaults(v: &mut Value) {
    if let Some(spec) = obj_at(v, &["spec"]) {
        set_default(spec, "volumeMode", json!("Filesystem"));
    }
    if let Some(status) = obj_at(v, &["status"]) {
        set_default(status, "phase", json!("Pending"));
    }
}

fn job_spec_defaults(spec: &mut Map<String, Value>) {
    if spec.get("completions").is_none_or(Value::is_null)
        && spec.get("parallelism").is_none_or(Value::is_null)
    {
        spec.insert("completions".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    // With a per-index limit, the Job-wide one does not bind.
    let per_index = spec
        .get("backoffLimitPerIndex")
        .is_some_and(|v| !v.is_null());
    set_default(
        spec,
        "backoffLimit",
        json!(if per_index { i32::MAX } else { 6 }),
    );
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    // Pods are replaced once terminating, unless a pod failure policy must
    // see how they end (upstream's JobPodReplacementPolicy defaults).
    let policy = if spec.get("podFailurePolicy").is_some_and(|p| !p.is_null()) {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    set_default(spec, "podReplacementPolicy", json!(policy));
}

/// The labels the job controller's pods carry, and the one its generated
/// selector matches.
pub const JOB_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
const LEGACY_CONTROLLER_UID: &str = "controller-uid";
const LEGACY_JOB_NAME: &str = "job-name";

fn manual_selector(spec: &Value) -> bool {
    spec["manualSelector"] == json!(true)
}

/// Upstream's Job PrepareForCreate/generateSelector: unless
/// `manualSelector`, the template gets the job's name and uid labels (those
/// the user set are kept, and validation says if they are wrong) and the
/// selector matches the uid label.
fn job_defaults(v: &mut Value) {
    let uid = v["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let name = v["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some(spec) = obj_at(v, &["spec"]) {
        job_spec_defaults(spec);
    }
    if !manual_selector(&v["spec"]) && !uid.is_empty() {
        if let Some(labels) = obj_at(v, &["spec", "template", "metadata", "labels"]) {
            for (k, val) in [
                (LEGACY_JOB_NAME, &name),
                (JOB_NAME, &name),
                (LEGACY_CONTROLLER_UID, &uid),
                (JOB_CONTROLLER_UID, &uid),
            ] {
                set_default(labels, k, json!(val));
            }
        }
        if let Some(match_labels) = obj_at(v, &["spec", "selector", "matchLabels"]) {
            set_default(match_labels, JOB_CONTROLLER_UID, json!(uid));
        }
    }
    template_defaults(v, &["spec", "template", "spec"]);
}

fn cron_job_defaults(v: &mut Value) {
    if let Some(spec) = obj_at(v, &["spec"]) {
        set_default(spec, "concurrencyPolicy", json!("Allow"));
        set_default(spec, "suspend", json!(false));
        set_default(spec, "successfulJobsHistoryLimit", json!(3));
        set_default(spec, "failedJobsHistoryLimit", json!(1));
    }
    if let Some(spec) = obj_at(v, &["spec", "jobTemplate", "spec"]) {
        set_default(spec, "backoffLimit", json!(6));
    }
    template_defaults(v, &["spec", "jobTemplate", "spec", "template", "spec"]);
}

fn service_defaults(v: &mut Value) {
    if let Some(spec) = obj_at(v, &["spec"]) {
        set_default(spec, "type", json!("ClusterIP"));
        set_default(spec, "sessionAffinity", json!("None"));
        if spec.get("type") != Some(&json!("ExternalName")) {
            set_default(spec, "internalTrafficPolicy", json!("Cluster"));
            set_default(spec, "ipFamilies", json!(["IPv4"]));
            set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        }
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports.iter_mut().filter_map(Value::as_object_mut) {
                set_default(p, "protocol", json!("TCP"));
                if let Some(port) = p.get("port").cloned() {
                    set_default(p, "targetPort", port);
                }
            }
        }
    }
    if let Some(status) = obj_at(v, &["status"]) {
        set_default(status, "loadBalancer", json!({}));
    }
}

fn secret_defaults(v: &mut Value) {
    use base64::Engine;
    let string_data = v
        .as_object_mut()
        .and_then(|m| m.remove("stringData"))
        .and_then(|s| s.as_object().cloned());
    if let Some(map) = v.as_object_mut() {
        set_default(map, "type", json!("Opaque"));
    }
    if let Some(string_data) = string_data {
        if let Some(data) = obj_at(v, &["data"]) {
            for (k, s) in string_data {
                let text = s.as_str().unwrap_or_default();
                let b64 = base64::engine::general_purpose::STANDARD.encode(text);
                data.insert(k, json!(b64));
            }
        }
    }
}

fn keys_valid(v: &Value, field: &str, out: &mut Vec<Cause>) {
    if let Some(map) = v[field].as_object() {
        for k in map.keys() {
            if let Err(why) = names::config_key(k) {
                out.push(Cause::invalid(field, format!("{k:?}"), &why));
            }
        }
    }
}

fn config_map_validate(v: &Value, out: &mut Vec<Cause>) {
    keys_valid(v, "data", out);
    keys_valid(v, "binaryData", out);
    if let (Some(d), Some(b)) = (v["data"].as_object(), v["binaryData"].as_object()) {
        for k in d.keys().filter(|k| b.contains_key(*k)) {
            out.push(Cause::invalid(
                "data",
                format!("{k:?}"),
                "duplicate of key present in binaryData",
            ));
        }
    }
}

fn secret_validate(v: &Value, out: &mut Vec<Cause>) {
    keys_valid(v, "data", out);
}

fn port_ok(p: &Value) -> bool {
    p.as_i64().is_some_and(|p| (1..=65535).contains(&p))
}

fn containers_validate(spec: &Value, path: &str, out: &mut Vec<Cause>) {
    let mut seen = Vec::new();
    let containers = spec["containers"].as_array().filter(|c| !c.is_empty());
    if containers.is_none() {
        out.push(Cause::required(format!("{path}.containers")));
    }
    for list in ["initContainers", "containers"] {
        for (i, c) in spec[list].as_array().into_iter().flatten().enumerate() {
            let at = format!("{path}.{list}[{i}]");
            match c["name"].as_str() {
                None | Some("") => out.push(Cause::required(format!("{at}.name"))),
                Some(name) => {
                    if let Err(why) = names::dns1123_label(name) {
                        out.push(Cause::invalid(
                            format!("{at}.name"),
                            format!("{name:?}"),
                            &why,
                        ));
                    } else if seen.contains(&name) {
                        out.push(Cause::duplicate(format!("{at}.name"), format!("{name:?}")));
                    }
                    seen.push(name);
                }
            }
            if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
                out.push(Cause::required(format!("{at}.image")));
            }
            for (j, p) in c["ports"].as_array().into_iter().flatten().enumerate() {
                if !port_ok(&p["containerPort"]) {
                    out.push(Cause::invalid(
                        format!("{at}.ports[{j}].containerPort"),
                        &p["containerPort"],
                        "must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
    }
    if let Some(policy) = spec["restartPolicy"].as_str() {
        let ok = ["Always", "OnFailure", "Never"];
        if !ok.contains(&policy) {
            out.push(Cause::not_supported(
                format!("{path}.restartPolicy"),
                policy,
                &ok,
            ));
        }
    }
}

fn pod_validate(v: &Value, out: &mut Vec<Cause>) {
    containers_validate(&v["spec"], "spec", out);
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    let want = selector["matchLabels"].as_object();
    let ok_labels = want
        .into_iter()
        .flatten()
        .all(|(k, val)| labels.get(k) == Some(val));
    let ok_exprs = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|e| {
            let have = labels.get(e["key"].as_str().unwrap_or_default());
            let values: Vec<&Value> = e["values"].as_array().into_iter().flatten().collect();
            match e["operator"].as_str().unwrap_or_default() {
                "In" => have.is_some_and(|h| values.contains(&h)),
                "NotIn" => have.is_none_or(|h| !values.contains(&h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        });
    ok_labels && ok_exprs
}

fn non_negative(v: &Value, field: &str, path: &str, out: &mut Vec<Cause>) {
    if let Some(n) = v[field].as_i64() {
        if n < 0 {
            out.push(Cause::invalid(
                format!("{path}.{field}"),
                n,
                "must be greater than or equal to 0",
            ));
        }
    }
}

/// Deployment, ReplicaSet, DaemonSet, StatefulSet: a selector that selects the
/// template, a valid template, replicas >= 0.
fn workload_validate<const ALWAYS: bool>(v: &Value, out: &mut Vec<Cause>) {
    let spec = &v["spec"];
    non_negative(spec, "replicas", "spec", out);
    let selector = &spec["selector"];
    let empty = selector["matchLabels"]
        .as_object()
        .is_none_or(Map::is_empty)
        && selector["matchExpressions"]
            .as_array()
            .is_none_or(Vec::is_empty);
    if empty {
        out.push(Cause::required("spec.selector"));
    } else if !labels_match(selector, &spec["template"]["metadata"]["labels"]) {
        out.push(Cause::invalid(
            "spec.template.metadata.labels",
            &spec["template"]["metadata"]["labels"],
            "`selector` does not match template `labels`",
        ));
    }
    let pod = &spec["template"]["spec"];
    containers_validate(pod, "spec.template.spec", out);
    if ALWAYS {
        if let Some(policy) = pod["restartPolicy"].as_str() {
            if policy != "Always" {
                out.push(Cause::not_supported(
                    "spec.template.spec.restartPolicy",
                    policy,
                    &["Always"],
                ));
            }
        }
    }
}

fn job_spec_validate(spec: &Value, path: &str, out: &mut Vec<Cause>) {
    for f in [
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        non_negative(spec, f, path, out);
    }
    per_index_validate(spec, path, out);
    let pod = &spec["template"]["spec"];
    let pod_path = format!("{path}.template.spec");
    containers_validate(pod, &pod_path, out);
    match pod["restartPolicy"].as_str() {
        Some("OnFailure" | "Never") => {}
        Some(other) => out.push(Cause::not_supported(
            format!("{pod_path}.restartPolicy"),
            other,
            &["OnFailure", "Never"],
        )),
        None => out.push(Cause::required(format!("{pod_path}.restartPolicy"))),
    }
    match spec["completionMode"].as_str() {
        None | Some("NonIndexed") => {}
        Some("Indexed") => {
            if spec["completions"].is_null() {
                out.push(Cause::required_because(
                    format!("{path}.completions"),
                    "when completion mode is Indexed",
                ));
            }
        }
        Some(other) => out.push(Cause::not_supported(
            format!("{path}.completionMode"),
            other,
            &["NonIndexed", "Indexed"],
        )),
    }
    if !spec["podFailurePolicy"].is_null() {
        pod_failure_policy_validate(spec, path, out);
    }
    job_policies::success_policy(spec, path, out);
    job_policies::pod_replacement_policy(spec, path, out);
    job_policies::managed_by(spec, path, out);
}

/// The parts of upstream's pod failure policy validation Balsa's job
/// controller relies on (FailIndex only beside backoffLimitPerIndex).
/// backoffLimitPerIndex and maxFailedIndexes: Indexed Jobs only, and at
/// most `completions` (and 10^5) failed indexes.
fn per_index_validate(spec: &Value, path: &str, out: &mut Vec<Cause>) {
    let indexed = spec["completionMode"] == "Indexed";
    let max_failed = spec["maxFailedIndexes"].as_i64();
    for f in ["backoffLimitPerIndex", "maxFailedIndexes"] {
        if !indexed && !spec[f].is_null() {
            out.push(Cause::invalid(
                format!("{path}.{f}"),
                &spec[f],
                "requires indexed completion mode",
            ));
        }
    }
    if max_failed.is_some() && spec["backoffLimitPerIndex"].is_null() {
        out.push(Cause::required_because(
            format!("{path}.backoffLimitPerIndex"),
            "when maxFailedIndexes is specified",
        ));
    }
    if let (true, Some(m)) = (indexed, max_failed) {
        if spec["completions"].as_i64().is_some_and(|c| m > c) {
            out.push(Cause::invalid(
                format!("{path}.maxFailedIndexes"),
                m,
                "must be less than or equal to completions",
            ));
        }
        if m > 100_000 {
            out.push(Cause::invalid(
                format!("{path}.maxFailedIndexes"),
                m,
                "must be less than or equal to 100000",
            ));
        }
    }
}

fn pod_failure_policy_validate(spec: &Value, path: &str, out: &mut Vec<Cause>) {
    let policy = &spec["podFailurePolicy"];
    let restart = spec["template"]["spec"]["restartPolicy"].as_str();
    if let Some(r) = restart.filter(|r| *r != "Never") {
        out.push(Cause::invalid(
            format!("{path}.template.spec.restartPolicy"),
            format!("{r:?}"),
            "only \"Never\" is supported when podFailurePolicy is specified",
        ));
    }
    let rules = policy["rules"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if rules.len() > 20 {
        out.push(Cause::too_many(
            format!("{path}.podFailurePolicy.rules"),
            rules.len(),
            20,
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("{path}.podFailurePolicy.rules[{i}]");
        let actions = ["Count", "FailIndex", "FailJob", "Ignore"];
        match rule["action"].as_str() {
            Some("FailIndex") if spec["backoffLimitPerIndex"].is_null() => {
                out.push(Cause::invalid(
                    format!("{at}.action"),
                    "\"FailIndex\"",
                    "requires the backoffLimitPerIndex to be set",
                ))
            }
            Some(a) if actions.contains(&a) => {}
            Some(a) => out.push(Cause::not_supported(format!("{at}.action"), a, &actions)),
            None => out.push(Cause::required(format!("{at}.action"))),
        }
        let codes = &rule["onExitCodes"];
        let conditions = &rule["onPodConditions"];
        match (codes.is_null(), conditions.is_null()) {
            (true, true) => out.push(Cause::invalid(
                at.clone(),
                "{}",
                "specifying one of OnExitCodes and OnPodConditions is required",
            )),
            (false, false) => out.push(Cause::invalid(
                at.clone(),
                "{}",
                "specifying both OnExitCodes and OnPodConditions is not supported",
            )),
            _ => {}
        }
        if !codes.is_null() {
            let ops = ["In", "NotIn"];
            let op = codes["operator"].as_str().unwrap_or_default();
            if !ops.contains(&op) {
                out.push(Cause::not_supported(
                    format!("{at}.onExitCodes.operator"),
                    op,
                    &ops,
                ));
            }
            let values = codes["values"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            if values.is_empty() {
                out.push(Cause::required(format!("{at}.onExitCodes.values")));
            }
            let mut seen = Vec::new();
            for (j, val) in values.iter().enumerate() {
                if op == "In" && val.as_i64() == Some(0) {
                    out.push(Cause::invalid(
                        format!("{at}.onExitCodes.values[{j}]"),
                        0,
                        "must not be 0 for the In operator",
                    ));
                }
                if seen.contains(&val) {
                    out.push(Cause::duplicate(
                        format!("{at}.onExitCodes.values[{j}]"),
                        val,
                    ));
                }
                seen.push(val);
            }
        }
        for (j, c) in conditions.as_array().into_iter().flatten().enumerate() {
            if c["type"].as_str().is_none_or(str::is_empty) {
                out.push(Cause::required(format!("{at}.onPodConditions[{j}].type")));
            }
            let statuses = ["True", "False", "Unknown"];
            let st = c["status"].as_str().unwrap_or("True");
            if !statuses.contains(&st) {
                out.push(Cause::not_supported(
                    format!("{at}.onPodConditions[{j}].status"),
                    st,
                    &statuses,
                ));
            }
        }
    }
}

fn has_label(meta: &Value, key: &str, want: &str, out: &mut Vec<Cause>) {
    let field = format!("spec.template.metadata.labels[{key}]");
    match meta["labels"][key].as_str() {
        None => out.push(Cause::required(field)),
        Some(v) if v != want => out.push(Cause::invalid(
            field,
            format!("{v:?}"),
            &format!("must be '{want}'"),
        )),
        Some(_) => {}
    }
}

/// A Job's own rules on top of its spec's: a selector that selects its
/// template, and (unless `manualSelector`) the generated labels and selector.
fn job_validate(v: &Value, out: &mut Vec<Cause>) {
    let spec = &v["spec"];
    job_spec_validate(spec, "spec", out);
    let selector = &spec["selector"];
    let labels = &spec["template"]["metadata"]["labels"];
    if selector.is_null() {
        out.push(Cause::required("spec.selector"));
        return;
    }
    if !labels_match(selector, labels) {
        out.push(Cause::invalid(
            "spec.template.metadata.labels",
            labels,
            "`selector` does not match template `labels`",
        ));
    }
    if manual_selector(spec) {
        return;
    }
    let uid = v["metadata"]["uid"].as_str().unwrap_or_default();
    let name = v["metadata"]["name"].as_str().unwrap_or_default();
    let meta = &spec["template"]["metadata"];
    has_label(meta, LEGACY_CONTROLLER_UID, uid, out);
    has_label(meta, LEGACY_JOB_NAME, name, out);
    has_label(meta, JOB_CONTROLLER_UID, uid, out);
    has_label(meta, JOB_NAME, name, out);
    if !labels_match(selector, &json!({ JOB_CONTROLLER_UID: uid })) {
        out.push(Cause::invalid(
            "spec.selector",
            selector,
            "`selector` not auto-generated",
        ));
    }
}

/// A CronJob's name leaves room for the `-<minutes>` its Jobs append.
fn cron_job_name(name: &str) -> Result<(), String> {
    names::dns1123_subdomain(name)?;
    if name.len() > 52 {
        return Err("must be no more than 52 characters".into());
    }
    Ok(())
}

fn cron_job_validate(v: &Value, out: &mut Vec<Cause>) {
    let spec = &v["spec"];
    match spec["schedule"].as_str() {
        None | Some("") => out.push(Cause::required("spec.schedule")),
        Some(s) if s.contains("TZ") => out.push(Cause::invalid(
            "spec.schedule",
            format!("{s:?}"),
            "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
        )),
        Some(s) => {
            if let Err(e) = crate::cron::Schedule::parse(s) {
                out.push(Cause::invalid(
                    "spec.schedule",
                    format!("{s:?}"),
                    &e.to_string(),
                ));
            }
        }
    }
    if let Some(tz) = spec["timeZone"].as_str() {
        if let Err(e) = crate::cron::time_zone(Some(tz)) {
            out.push(Cause::invalid(
                "spec.timeZone",
                format!("{tz:?}"),
                &e.to_string(),
            ));
        }
    }
    if let Some(policy) = spec["concurrencyPolicy"].as_str() {
        let ok = ["Allow", "Forbid", "Replace"];
        if !ok.contains(&policy) {
            out.push(Cause::not_supported("spec.concurrencyPolicy", policy, &ok));
        }
    }
    for f in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        non_negative(spec, f, "spec", out);
    }
    job_spec_validate(&spec["jobTemplate"]["spec"], "spec.jobTemplate.spec", out);
}

fn service_validate(v: &Value, out: &mut Vec<Cause>) {
    let spec = &v["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    let types = ["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"];
    if !types.contains(&ty) {
        out.push(Cause::not_supported("spec.type", ty, &types));
    }
    let headless = spec["clusterIP"] == "None";
    let ports = spec["ports"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if ports.is_empty() && ty != "ExternalName" && !headless {
        out.push(Cause::required("spec.ports"));
    }
    let mut names = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        if !port_ok(&p["port"]) {
            out.push(Cause::invalid(
                format!("spec.ports[{i}].port"),
                &p["port"],
                "must be between 1 and 65535, inclusive",
            ));
        }
        match p["name"].as_str() {
            Some(n) if !n.is_empty() => {
                if names.contains(&n) {
                    out.push(Cause::duplicate(
                        format!("spec.ports[{i}].name"),
                        format!("{n:?}"),
                    ));
                }
                names.push(n);
            }
            _ if ports.len() > 1 => out.push(Cause::required(format!("spec.ports[{i}].name"))),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn causes(rules: Rules, v: &Value) -> Vec<String> {
        let mut out = Vec::new();
        (rules.validate)(v, &mut out);
        out.iter().map(Cause::line).collect()
    }

    #[test]
    fn pod_defaults_and_checks() {
        let mut pod = json!({"metadata":{"name":"p"},"spec":{"containers":[
            {"name":"c","image":"nginx"},{"name":"d","image":"busybox:1.36",
             "resources":{"limits":{"cpu":"1","memory":"1Gi"}}}]}});
        pod_defaults(&mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(
            pod["spec"]["containers"][1]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(pod["status"]["phase"], "Pending");
        assert_eq!(pod["status"]["qosClass"], "Burstable");
        // Limits without requests: requests default to the limits.
        assert_eq!(
            pod["spec"]["containers"][1]["resources"]["requests"],
            json!({"cpu":"1","memory":"1Gi"})
        );
        assert_eq!(pod["spec"]["tolerations"].as_array().unwrap().len(), 2);
        assert!(causes(POD, &pod).is_empty());

        let bad = json!({"spec":{"containers":[{"name":"C"},{"name":"x","image":"i",
            "ports":[{"containerPort":70000}]},{"name":"x","image":"i"}],
            "restartPolicy":"Sometimes"}});
        assert_eq!(
            causes(POD, &bad),
            vec![
                "spec.containers[0].name: Invalid value: \"C\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
                "spec.containers[0].image: Required value",
                "spec.containers[1].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.containers[2].name: Duplicate value: \"x\"",
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
            ]
        );
        assert_eq!(
            causes(POD, &json!({"spec":{}})),
            vec!["spec.containers: Required value"]
        );
    }

    #[test]
    fn default_toleration_seconds_as_upstream() {
        let tols = |extra: Value| {
            let mut pod = json!({"spec":{"containers":[{"name":"c","image":"i"}],
                "tolerations": extra}});
            pod_defaults(&mut pod);
            pod["spec"]["tolerations"].clone()
        };
        assert_eq!(
            tols(json!([])),
            json!([
                {"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoExecute","tolerationSeconds":300},
                {"key":"node.kubernetes.io/unreachable","operator":"Exists","effect":"NoExecute","tolerationSeconds":300},
            ])
        );
        // A pod's own toleration of the key (any effect) is kept as is.
        let own = json!({"key":"node.kubernetes.io/unreachable","operator":"Exists","tolerationSeconds":5});
        let t = tols(json!([own.clone()]));
        assert_eq!(t.as_array().unwrap().len(), 2);
        assert_eq!(t[0], own);
        assert_eq!(t[1]["key"], "node.kubernetes.io/not-ready");
        // Tolerating every taint tolerates both.
        let all = json!([{"operator":"Exists"}]);
        assert_eq!(tols(all.clone()), all);
        // A NoSchedule toleration of the key does not count.
        let ns =
            json!({"key":"node.kubernetes.io/not-ready","operator":"Exists","effect":"NoSchedule"});
        assert_eq!(tols(json!([ns])).as_array().unwrap().len(), 3);
    }

    #[test]
    fn pods_run_as_the_default_service_account() {
        let mut pod = json!({"spec":{"containers":[{"name":"c","image":"i"}]}});
        pod_defaults(&mut pod);
        assert_eq!(pod["spec"]["serviceAccountName"], "default");
        assert_eq!(pod["spec"]["serviceAccount"], "default");
        let mut own = json!({"spec":{"containers":[],"serviceAccount":"builder"}});
        pod_defaults(&mut own);
        assert_eq!(own["spec"]["serviceAccountName"], "builder");
    }

    #[test]
    fn deployment_selector_must_match_template() {
        let mut d = json!({"spec":{"selector":{"matchLabels":{"app":"web"}},
            "template":{"metadata":{"labels":{"app":"db"}},
                "spec":{"containers":[{"name":"c","image":"i"}]}}}});
        deployment_defaults(&mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let c = causes(DEPLOYMENT, &d);
        assert_eq!(c.len(), 1);
        assert!(
            c[0].starts_with("spec.template.metadata.labels: Invalid value"),
            "{c:?}"
        );
        d["spec"]["template"]["metadata"]["labels"]["app"] = json!("web");
        d["spec"]["replicas"] = json!(-1);
        assert_eq!(
            causes(DEPLOYMENT, &d),
            vec!["spec.replicas: Invalid value: -1: must be greater than or equal to 0"]
        );
        let no_selector =
            json!({"spec":{"template":{"spec":{"containers":[{"name":"c","image":"i"}]}}}});
        assert_eq!(
            causes(DEPLOYMENT, &no_selector),
            vec!["spec.selector: Required value"]
        );
    }

    #[test]
    fn jobs_cronjobs_services_configmaps_secrets() {
        let mut job = json!({"metadata":{"name":"j","uid":"u1"},"spec":{"template":{"spec":{
            "restartPolicy":"Always","containers":[{"name":"c","image":"i"}]}}}});
        job_defaults(&mut job);
        assert_eq!(job["spec"]["completions"], 1);
        assert_eq!(
            job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            "u1"
        );
        assert_eq!(
            job["spec"]["template"]["metadata"]["labels"]["job-name"],
            "j"
        );
        assert_eq!(
            causes(JOB, &job),
            vec!["spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""]
        );
        let cj = json!({"spec":{"schedule":"* * *","jobTemplate":{"spec":{"template":{"spec":{
            "restartPolicy":"Never","containers":[{"name":"c","image":"i"}]}}}}}});
        assert_eq!(
            causes(CRON_JOB, &cj),
            vec!["spec.schedule: Invalid value: \"* * *\": expected exactly 5 fields (minute hour day-of-month month day-of-week), found 3"]
        );
        let svc = json!({"spec":{"ports":[{"port":80},{"port":0,"name":"b"}]}});
        assert_eq!(causes(SERVICE, &svc).len(), 2);
        assert_eq!(
            causes(SERVICE, &json!({"spec":{}})),
            vec!["spec.ports: Required value"]
        );
        let mut svc = json!({"spec":{"ports":[{"port":80}]}});
        service_defaults(&mut svc);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        let cm = json!({"data":{"ok":"1","not ok":"2"}});
        assert_eq!(causes(CONFIG_MAP, &cm).len(), 1);
        let mut secret = json!({"stringData":{"user":"admin"}});
        secret_defaults(&mut secret);
        assert_eq!(secret, json!({"type":"Opaque","data":{"user":"YWRtaW4="}}));
    }

    #[test]
    fn claims_default_to_filesystem_and_pending() {
        let mut pvc = json!({"metadata":{"name":"data-db-0"},
            "spec":{"accessModes":["ReadWriteOnce"]}});
        persistent_volume_claim_defaults(&mut pvc);
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
        assert_eq!(pvc["status"]["phase"], "Pending");
        let mut block = json!({"spec":{"volumeMode":"Block"},"status":{"phase":"Bound"}});
        persistent_volume_claim_defaults(&mut block);
        assert_eq!(block["spec"]["volumeMode"], "Block");
        assert_eq!(block["status"]["phase"], "Bound");
    }

    fn job(extra: Value) -> Value {
        let mut j = json!({"metadata":{"name":"pi","uid":"u1"},"spec":{"template":{"spec":{
            "restartPolicy":"Never","containers":[{"name":"c","image":"i"}]}}}});
        json_patch::merge(&mut j, &extra);
        j
    }

    #[test]
    fn job_policies_are_checked_in_jobs_and_cron_job_templates() {
        let mut j = job(json!({"spec":{"managedBy":"queue","podReplacementPolicy":"Never"}}));
        job_defaults(&mut j);
        assert_eq!(
            causes(JOB, &j),
            vec![
                "spec.podReplacementPolicy: Unsupported value: \"Never\": supported values: \"Failed\", \"TerminatingOrFailed\"",
                "spec.managedBy: Invalid value: \"queue\": must be a domain-prefixed path (such as \"acme.io/foo\")",
            ]
        );
        let cj = json!({"spec":{"schedule":"@hourly","jobTemplate":{"spec":{
            "successPolicy":{"rules":[{"succeededCount":1}]},
            "template":{"spec":{"restartPolicy":"Never","containers":[{"name":"c","image":"i"}]}}}}}});
        assert_eq!(
            causes(CRON_JOB, &cj),
            vec!["spec.jobTemplate.spec.successPolicy: Invalid value: {\"Rules\":[{\"SucceededIndexes\":null,\"SucceededCount\":1}]}: requires indexed completion mode"]
        );
        let many: Vec<Value> = (0..21)
            .map(|_| json!({"action":"Ignore","onExitCodes":{"operator":"In","values":[1]}}))
            .collect();
        let mut j = job(json!({"spec":{"podFailurePolicy":{"rules": many}}}));
        job_defaults(&mut j);
        assert_eq!(
            causes(JOB, &j),
            vec!["spec.podFailurePolicy.rules: Too many: 21: must have at most 20 items"]
        );
    }

    #[test]
    fn jobs_get_a_generated_selector_unless_manual() {
        let mut j = job(json!({}));
        job_defaults(&mut j);
        assert_eq!(
            j["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}})
        );
        assert_eq!(
            j["spec"]["template"]["metadata"]["labels"],
            json!({"batch.kubernetes.io/controller-uid": "u1", "batch.kubernetes.io/job-name": "pi",
                "controller-uid": "u1", "job-name": "pi"})
        );
        assert_eq!(j["spec"]["podReplacementPolicy"], "TerminatingOrFailed");
        assert!(causes(JOB, &j).is_empty(), "{:?}", causes(JOB, &j));

        // A selector of one's own needs manualSelector, as upstream.
        let mut j = job(json!({"spec":{"selector":{"matchLabels":{"app":"x"}},
            "template":{"metadata":{"labels":{"app":"x"}}}}}));
        job_defaults(&mut j);
        assert_eq!(
            j["spec"]["selector"]["matchLabels"],
            json!({"app": "x", "batch.kubernetes.io/controller-uid": "u1"})
        );
        assert_eq!(
            causes(JOB, &j),
            vec!["spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"x\",\"batch.kubernetes.io/controller-uid\":\"u1\"}}: `selector` not auto-generated"]
        );

        // ... and one naming another uid is refused.
        let mut j = job(json!({"spec":{"selector":{"matchLabels":{
            "batch.kubernetes.io/controller-uid":"other"}}}}));
        job_defaults(&mut j);
        let c = causes(JOB, &j);
        assert!(
            c.contains(&"spec.selector: Invalid value: {\"matchLabels\":{\"batch.kubernetes.io/controller-uid\":\"other\"}}: `selector` not auto-generated".to_string()),
            "{c:?}"
        );

        // manualSelector: the labels and selector are the user's own.
        let mut j = job(json!({"spec":{"manualSelector":true,
            "selector":{"matchLabels":{"app":"x"}},
            "template":{"metadata":{"labels":{"app":"x"}}}}}));
        job_defaults(&mut j);
        assert_eq!(
            j["spec"]["template"]["metadata"]["labels"],
            json!({"app": "x"})
        );
        assert_eq!(j["spec"]["selector"], json!({"matchLabels": {"app": "x"}}));
        assert!(causes(JOB, &j).is_empty());
        let mut j = job(json!({"spec":{"manualSelector":true,
            "selector":{"matchLabels":{"app":"y"}},
            "template":{"metadata":{"labels":{"app":"x"}}}}}));
        job_defaults(&mut j);
        assert_eq!(
            causes(JOB, &j),
            vec!["spec.template.metadata.labels: Invalid value: {\"app\":\"x\"}: `selector` does not match template `labels`"]
        );
        let mut j = job(json!({"spec":{"manualSelector":true}}));
        job_defaults(&mut j);
        assert_eq!(causes(JOB, &j), vec!["spec.selector: Required value"]);
    }

    #[test]
    fn job_modes_and_pod_failure_policies_are_checked() {
        let mut j = job(json!({"spec":{"completionMode":"Indexed","parallelism":2}}));
        job_defaults(&mut j);
        assert_eq!(
            causes(JOB, &j),
            vec!["spec.completions: Required value: when completion mode is Indexed"]
        );
        let mut j = job(json!({"spec":{"completionMode":"Sometimes"}}));
        job_defaults(&mut j);
        assert_eq!(causes(JOB, &j).len(), 1);

        let policy = json!({"rules":[
            {"action":"FailJob","onExitCodes":{"operator":"In","values":[42]}},
            {"action":"Ignore","onPodConditions":[{"type":"DisruptionTarget","status":"True"}]},
            {"action":"Count","onExitCodes":{"operator":"NotIn","values":[0, 1]}}]});
        let mut j = job(json!({"spec":{"podFailurePolicy": policy}}));
        job_defaults(&mut j);
        assert_eq!(j["spec"]["podReplacementPolicy"], "Failed");
        assert!(causes(JOB, &j).is_empty(), "{:?}", causes(JOB, &j));

        let bad = json!({"rules":[
            {"action":"Retry","onExitCodes":{"operator":"In","values":[0, 3, 3]}},
            {"action":"Ignore"}]});
        let mut j = job(json!({"spec":{"podFailurePolicy": bad,
            "template":{"spec":{"restartPolicy":"OnFailure"}}}}));
        job_defaults(&mut j);
        assert_eq!(
            causes(JOB, &j),
            vec![
                "spec.template.spec.restartPolicy: Invalid value: \"OnFailure\": only \"Never\" is supported when podFailurePolicy is specified",
                "spec.podFailurePolicy.rules[0].action: Unsupported value: \"Retry\": supported values: \"Count\", \"FailIndex\", \"FailJob\", \"Ignore\"",
                "spec.podFailurePolicy.rules[0].onExitCodes.values[0]: Invalid value: 0: must not be 0 for the In operator",
                "spec.podFailurePolicy.rules[0].onExitCodes.values[2]: Duplicate value: 3",
                "spec.podFailurePolicy.rules[1]: Invalid value: {}: specifying one of OnExitCodes and OnPodConditions is required",
            ]
        );

        // backoffLimitPerIndex: Indexed only; the Job-wide limit defaults
        // out of the way.
        let fail_index =
            json!({"rules":[{"action":"FailIndex","onExitCodes":{"operator":"In","values":[42]}}]});
        let mut j = job(json!({"spec":{"completionMode":"Indexed","completions":3,
            "backoffLimitPerIndex":1,"maxFailedIndexes":2,"podFailurePolicy": fail_index}}));
        job_defaults(&mut j);
        assert_eq!(j["spec"]["backoffLimit"], i32::MAX);
        assert!(causes(JOB, &j).is_empty(), "{:?}", causes(JOB, &j));
        let mut j = job(json!({"spec":{"maxFailedIndexes":5,"podFailurePolicy": fail_index}}));
        job_defaults(&mut j);
        assert_eq!(
            causes(JOB, &j),
            vec![
                "spec.maxFailedIndexes: Invalid value: 5: requires indexed completion mode",
                "spec.backoffLimitPerIndex: Required value: when maxFailedIndexes is specified",
                "spec.podFailurePolicy.rules[0].action: Invalid value: \"FailIndex\": requires the backoffLimitPerIndex to be set",
            ]
        );
        let mut j = job(json!({"spec":{"completionMode":"Indexed","completions":3,
            "backoffLimitPerIndex":1,"maxFailedIndexes":4}}));
        job_defaults(&mut j);
        assert_eq!(
            causes(JOB, &j),
            vec!["spec.maxFailedIndexes: Invalid value: 4: must be less than or equal to completions"]
        );
    }

    #[test]
    fn cron_schedules_and_time_zones_are_checked() {
        let cj = |schedule: &str, tz: Option<&str>| {
            json!({"spec":{"schedule":schedule,"timeZone":tz,"jobTemplate":{"spec":{"template":{"spec":{
                "restartPolicy":"Never","containers":[{"name":"c","image":"i"}]}}}}}})
        };
        for ok in [
            "*/5 * * * *",
            "0 9 * JAN-MAR mon-fri",
            "@hourly",
            "@weekly",
            "30 2 1,15 * ?",
        ] {
            assert!(causes(CRON_JOB, &cj(ok, None)).is_empty(), "{ok}");
        }
        assert_eq!(
            causes(CRON_JOB, &cj("61 * * * *", None)),
            vec!["spec.schedule: Invalid value: \"61 * * * *\": minute field \"61\": 61 is above the maximum 59"]
        );
        assert_eq!(
            causes(CRON_JOB, &cj("TZ=UTC 0 * * * *", None)),
            vec!["spec.schedule: Invalid value: \"TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"]
        );
        assert!(causes(CRON_JOB, &cj("0 9 * * *", Some("Asia/Tokyo"))).is_empty());
        assert_eq!(
            causes(CRON_JOB, &cj("0 9 * * *", Some("Mars/Olympus"))),
            vec!["spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus"]
        );
        assert!(cron_job_name(&"a".repeat(52)).is_ok());
        assert_eq!(
            cron_job_name(&"a".repeat(53)),
            Err("must be no more than 52 characters".to_string())
        );
    }
}
