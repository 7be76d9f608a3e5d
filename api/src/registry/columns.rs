//! Printer columns: what `kubectl get` shows for each kind, computed on the
//! server into a `meta.k8s.io/v1` Table as kube-apiserver's printers do.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};

/// One column of a kind's table.
pub struct Column {
    pub name: &'static str,
    /// `string`, `integer`, `date`
    pub ty: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: u8,
    pub description: &'static str,
    pub cell: fn(&Value) -> Value,
}

const fn col(name: &'static str, ty: &'static str, cell: fn(&Value) -> Value) -> Column {
    Column {
        name,
        ty,
        priority: 0,
        description: "",
        cell,
    }
}

const fn wide(name: &'static str, cell: fn(&Value) -> Value) -> Column {
    Column {
        name,
        ty: "string",
        priority: 1,
        description: "",
        cell,
    }
}

fn name(v: &Value) -> Value {
    v["metadata"]["name"].clone()
}

fn age(v: &Value) -> Value {
    json!(age_of(&v["metadata"]["creationTimestamp"]))
}

/// `5s`, `3m`, `2d4h`, as kubectl's `HumanDuration`; `<unknown>` without a time.
pub fn age_of(ts: &Value) -> String {
    let Some(t) = ts.as_str().and_then(|s| humantime::parse_rfc3339(s).ok()) else {
        return "<unknown>".into();
    };
    let d = SystemTime::now()
        .duration_since(t)
        .unwrap_or(Duration::ZERO);
    human_duration(d)
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (m, h, days) = (s / 60, s / 3600, s / 86400);
    match s {
        0..120 => format!("{s}s"),
        120..600 if !s.is_multiple_of(60) => format!("{m}m{}s", s % 60),
        120..10800 => format!("{m}m"),
        10800..28800 if !m.is_multiple_of(60) => format!("{h}h{}m", m % 60),
        10800..172800 => format!("{h}h"),
        172800..691200 if !h.is_multiple_of(24) => format!("{days}d{}h", h % 24),
        _ if days < 365 * 2 => format!("{days}d"),
        _ => format!("{}y", days / 365),
    }
}

fn count(v: &Value) -> usize {
    match v {
        Value::Object(m) => m.len(),
        Value::Array(a) => a.len(),
        _ => 0,
    }
}

fn int(v: &Value) -> Value {
    json!(v.as_i64().unwrap_or(0))
}

fn or_none(s: String) -> Value {
    if s.is_empty() {
        json!("<none>")
    } else {
        json!(s)
    }
}

/// A label selector object as `kubectl` prints it: `app=web,tier in (a,b)`.
pub fn selector_string(sel: &Value) -> String {
    let mut parts: Vec<String> = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let key = e["key"].as_str().unwrap_or_default();
        parts.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_string(),
            _ => format!("!{key}"),
        });
    }
    parts.join(",")
}

fn map_string(m: &Value) -> String {
    m.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",")
}

fn containers(tpl: &Value) -> Value {
    let names: Vec<&str> = tpl["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    json!(names.join(","))
}

fn images(tpl: &Value) -> Value {
    let names: Vec<&str> = tpl["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["image"].as_str())
        .collect();
    json!(names.join(","))
}

pub static DEFAULT: &[Column] = &[col("Name", "string", name), col("Age", "string", age)];

pub static NAMESPACE: &[Column] = &[
    col("Name", "string", name),
    col("Status", "string", |v| v["status"]["phase"].clone()),
    col("Age", "string", age),
];

fn node_status(v: &Value) -> Value {
    let ready = v["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready");
    let mut s = match ready.and_then(|c| c["status"].as_str()) {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if v["spec"]["unschedulable"] == true {
        s.push_str(",SchedulingDisabled");
    }
    json!(s)
}

fn node_roles(v: &Value) -> Value {
    let roles: Vec<&str> = v["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
        .collect();
    or_none(roles.join(","))
}

fn node_address(v: &Value, ty: &str) -> Value {
    let addr = v["status"]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["type"] == ty)
        .and_then(|a| a["address"].as_str())
        .unwrap_or_default();
    or_none(addr.to_string())
}

pub static NODE: &[Column] = &[
    col("Name", "string", name),
    col("Status", "string", node_status),
    col("Roles", "string", node_roles),
    col("Age", "string", age),
    col("Version", "string", |v| {
        v["status"]["nodeInfo"]["kubeletVersion"].clone()
    }),
    wide("Internal-IP", |v| node_address(v, "InternalIP")),
    wide("External-IP", |v| node_address(v, "ExternalIP")),
    wide("OS-Image", |v| v["status"]["nodeInfo"]["osImage"].clone()),
    wide("Kernel-Version", |v| {
        v["status"]["nodeInfo"]["kernelVersion"].clone()
    }),
    wide("Container-Runtime", |v| {
        v["status"]["nodeInfo"]["containerRuntimeVersion"].clone()
    }),
];

fn pod_ready(v: &Value) -> Value {
    let total = count(&v["spec"]["containers"]);
    let ready = v["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["ready"] == true)
        .count();
    json!(format!("{ready}/{total}"))
}

/// kubectl's pod STATUS: a waiting or terminated container's reason wins over
/// the phase; a pod being deleted is `Terminating`.
fn pod_status(v: &Value) -> Value {
    let status = &v["status"];
    let mut reason = status["reason"]
        .as_str()
        .or(status["phase"].as_str())
        .unwrap_or("Unknown")
        .to_string();
    for c in status["initContainerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(r) = c["state"]["waiting"]["reason"].as_str() {
            if r != "PodInitializing" {
                reason = format!("Init:{r}");
            }
        }
    }
    for c in status["containerStatuses"].as_array().into_iter().flatten() {
        if let Some(r) = c["state"]["waiting"]["reason"]
            .as_str()
            .or(c["state"]["terminated"]["reason"].as_str())
        {
            reason = r.to_string();
        }
    }
    if !v["metadata"]["deletionTimestamp"].is_null() {
        reason = "Terminating".into();
    }
    json!(reason)
}

fn pod_restarts(v: &Value) -> Value {
    let n: i64 = v["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["restartCount"].as_i64().unwrap_or(0))
        .sum();
    json!(n)
}

pub static POD: &[Column] = &[
    col("Name", "string", name),
    col("Ready", "string", pod_ready),
    col("Status", "string", pod_status),
    col("Restarts", "string", pod_restarts),
    col("Age", "string", age),
    wide("IP", |v| {
        or_none(v["status"]["podIP"].as_str().unwrap_or_default().into())
    }),
    wide("Node", |v| {
        or_none(v["spec"]["nodeName"].as_str().unwrap_or_default().into())
    }),
    wide("Nominated Node", |v| {
        or_none(
            v["status"]["nominatedNodeName"]
                .as_str()
                .unwrap_or_default()
                .into(),
        )
    }),
    wide("Readiness Gates", |v| {
        or_none(
            v["spec"]["readinessGates"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|g| g["conditionType"].as_str())
                .collect::<Vec<_>>()
                .join(","),
        )
    }),
];

fn service_ports(v: &Value) -> Value {
    let ports: Vec<String> = v["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(np) => format!("{}:{np}/{proto}", p["port"]),
                None => format!("{}/{proto}", p["port"]),
            }
        })
        .collect();
    or_none(ports.join(","))
}

pub static SERVICE: &[Column] = &[
    col("Name", "string", name),
    col("Type", "string", |v| v["spec"]["type"].clone()),
    col("Cluster-IP", "string", |v| {
        or_none(v["spec"]["clusterIP"].as_str().unwrap_or_default().into())
    }),
    col("External-IP", "string", |v| {
        let ips: Vec<&str> = v["spec"]["externalIPs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        or_none(ips.join(","))
    }),
    col("Port(s)", "string", service_ports),
    col("Age", "string", age),
    wide("Selector", |v| or_none(map_string(&v["spec"]["selector"]))),
];

pub static ENDPOINTS: &[Column] = &[
    col("Name", "string", name),
    col("Endpoints", "string", |v| {
        let mut eps = Vec::new();
        for s in v["subsets"].as_array().into_iter().flatten() {
            for a in s["addresses"].as_array().into_iter().flatten() {
                for p in s["ports"].as_array().into_iter().flatten() {
                    eps.push(format!(
                        "{}:{}",
                        a["ip"].as_str().unwrap_or_default(),
                        p["port"]
                    ));
                }
            }
        }
        or_none(eps.join(","))
    }),
    col("Age", "string", age),
];

pub static CONFIG_MAP: &[Column] = &[
    col("Name", "string", name),
    col("Data", "integer", |v| {
        json!(count(&v["data"]) + count(&v["binaryData"]))
    }),
    col("Age", "string", age),
];

pub static SECRET: &[Column] = &[
    col("Name", "string", name),
    col("Type", "string", |v| v["type"].clone()),
    col("Data", "integer", |v| json!(count(&v["data"]))),
    col("Age", "string", age),
];

pub static EVENT: &[Column] = &[
    col("Last Seen", "string", |v| {
        let ts = if v["lastTimestamp"].is_null() {
            &v["eventTime"]
        } else {
            &v["lastTimestamp"]
        };
        json!(age_of(ts))
    }),
    col("Type", "string", |v| v["type"].clone()),
    col("Reason", "string", |v| v["reason"].clone()),
    col("Object", "string", |v| {
        let o = &v["involvedObject"];
        json!(format!(
            "{}/{}",
            o["kind"].as_str().unwrap_or_default().to_ascii_lowercase(),
            o["name"].as_str().unwrap_or_default()
        ))
    }),
    col("Message", "string", |v| v["message"].clone()),
];

pub static DEPLOYMENT: &[Column] = &[
    col("Name", "string", name),
    col("Ready", "string", |v| {
        json!(format!(
            "{}/{}",
            v["status"]["readyReplicas"].as_i64().unwrap_or(0),
            v["spec"]["replicas"].as_i64().unwrap_or(0)
        ))
    }),
    col("Up-to-date", "integer", |v| {
        int(&v["status"]["updatedReplicas"])
    }),
    col("Available", "integer", |v| {
        int(&v["status"]["availableReplicas"])
    }),
    col("Age", "string", age),
    wide("Containers", |v| containers(&v["spec"]["template"])),
    wide("Images", |v| images(&v["spec"]["template"])),
    wide("Selector", |v| {
        json!(selector_string(&v["spec"]["selector"]))
    }),
];

pub static REPLICA_SET: &[Column] = &[
    col("Name", "string", name),
    col("Desired", "integer", |v| int(&v["spec"]["replicas"])),
    col("Current", "integer", |v| int(&v["status"]["replicas"])),
    col("Ready", "integer", |v| int(&v["status"]["readyReplicas"])),
    col("Age", "string", age),
    wide("Containers", |v| containers(&v["spec"]["template"])),
    wide("Images", |v| images(&v["spec"]["template"])),
    wide("Selector", |v| {
        json!(selector_string(&v["spec"]["selector"]))
    }),
];

pub static DAEMON_SET: &[Column] = &[
    col("Name", "string", name),
    col("Desired", "integer", |v| {
        int(&v["status"]["desiredNumberScheduled"])
    }),
    col("Current", "integer", |v| {
        int(&v["status"]["currentNumberScheduled"])
    }),
    col("Ready", "integer", |v| int(&v["status"]["numberReady"])),
    col("Up-to-date", "integer", |v| {
        int(&v["status"]["updatedNumberScheduled"])
    }),
    col("Available", "integer", |v| {
        int(&v["status"]["numberAvailable"])
    }),
    col("Node Selector", "string", |v| {
        or_none(map_string(&v["spec"]["template"]["spec"]["nodeSelector"]))
    }),
    col("Age", "string", age),
    wide("Containers", |v| containers(&v["spec"]["template"])),
    wide("Images", |v| images(&v["spec"]["template"])),
    wide("Selector", |v| {
        json!(selector_string(&v["spec"]["selector"]))
    }),
];

pub static STATEFUL_SET: &[Column] = &[
    col("Name", "string", name),
    col("Ready", "string", |v| {
        json!(format!(
            "{}/{}",
            v["status"]["readyReplicas"].as_i64().unwrap_or(0),
            v["spec"]["replicas"].as_i64().unwrap_or(0)
        ))
    }),
    col("Age", "string", age),
    wide("Containers", |v| containers(&v["spec"]["template"])),
    wide("Images", |v| images(&v["spec"]["template"])),
];

/// `daemonset.apps/web`: the controlling owner, as kubectl's printer
/// formats a GroupKind and name.
fn revision_controller(v: &Value) -> Value {
    let owner = v["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["controller"] == true);
    let Some(r) = owner else {
        return json!("<none>");
    };
    let group = r["apiVersion"]
        .as_str()
        .and_then(|av| av.split_once('/'))
        .map(|(g, _)| g)
        .unwrap_or_default();
    let kind = r["kind"].as_str().unwrap_or_default().to_lowercase();
    let gk = if group.is_empty() {
        kind
    } else {
        format!("{kind}.{group}")
    };
    json!(format!("{gk}/{}", r["name"].as_str().unwrap_or_default()))
}

pub static CONTROLLER_REVISION: &[Column] = &[
    col("Name", "string", name),
    col("Controller", "string", revision_controller),
    col("Revision", "integer", |v| {
        json!(v["revision"].as_i64().unwrap_or(0))
    }),
    col("Age", "string", age),
];

/// `RWO,ROX`, as kubectl abbreviates access modes.
fn access_modes(modes: &Value) -> Value {
    let short: Vec<&str> = modes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect();
    json!(short.join(","))
}

fn str_or_empty(v: &Value) -> Value {
    json!(v.as_str().unwrap_or_default())
}

pub static PERSISTENT_VOLUME_CLAIM: &[Column] = &[
    col("Name", "string", name),
    col("Status", "string", |v| str_or_empty(&v["status"]["phase"])),
    col("Volume", "string", |v| {
        str_or_empty(&v["spec"]["volumeName"])
    }),
    col("Capacity", "string", |v| {
        str_or_empty(&v["status"]["capacity"]["storage"])
    }),
    col("Access Modes", "string", |v| {
        access_modes(&v["status"]["accessModes"])
    }),
    col("StorageClass", "string", |v| {
        str_or_empty(&v["spec"]["storageClassName"])
    }),
    col("VolumeAttributesClass", "string", |v| {
        json!(v["spec"]["volumeAttributesClassName"]
            .as_str()
            .unwrap_or("<unset>"))
    }),
    col("Age", "string", age),
    wide("VolumeMode", |v| str_or_empty(&v["spec"]["volumeMode"])),
];

/// kubectl's job STATUS: the first condition that holds, in its order.
fn job_status(v: &Value) -> Value {
    let conditions = v["status"]["conditions"].as_array();
    let has = |ty: &str| {
        conditions
            .into_iter()
            .flatten()
            .any(|c| c["type"] == ty && c["status"] == "True")
    };
    json!(if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if !v["metadata"]["deletionTimestamp"].is_null() {
        "Terminating"
    } else if has("Suspended") {
        "Suspended"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    })
}

/// `succeeded/completions`; a job without completions is done after one
/// success, shown as `n/1` (`n/1 of p` with parallelism above 1).
fn job_completions(v: &Value) -> Value {
    let succeeded = v["status"]["succeeded"].as_i64().unwrap_or(0);
    json!(match v["spec"]["completions"].as_i64() {
        Some(c) => format!("{succeeded}/{c}"),
        None => match v["spec"]["parallelism"].as_i64().unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    })
}

pub static JOB: &[Column] = &[
    col("Name", "string", name),
    col("Status", "string", job_status),
    col("Completions", "string", job_completions),
    col("Duration", "string", |v| {
        let start = v["status"]["startTime"]
            .as_str()
            .and_then(|s| humantime::parse_rfc3339(s).ok());
        let end = v["status"]["completionTime"]
            .as_str()
            .and_then(|s| humantime::parse_rfc3339(s).ok())
            .unwrap_or_else(SystemTime::now);
        match start {
            Some(s) => json!(human_duration(
                end.duration_since(s).unwrap_or(Duration::ZERO)
            )),
            None => json!(""),
        }
    }),
    col("Age", "string", age),
    wide("Containers", |v| containers(&v["spec"]["template"])),
    wide("Images", |v| images(&v["spec"]["template"])),
    wide("Selector", |v| {
        json!(selector_string(&v["spec"]["selector"]))
    }),
];

pub static CRON_JOB: &[Column] = &[
    col("Name", "string", name),
    col("Schedule", "string", |v| v["spec"]["schedule"].clone()),
    col("Timezone", "string", |v| {
        or_none(v["spec"]["timeZone"].as_str().unwrap_or_default().into())
    }),
    col("Suspend", "string", |v| {
        json!(if v["spec"]["suspend"] == true {
            "True"
        } else {
            "False"
        })
    }),
    col("Active", "integer", |v| {
        json!(count(&v["status"]["active"]))
    }),
    col("Last Schedule", "string", |v| {
        if v["status"]["lastScheduleTime"].is_null() {
            json!("<none>")
        } else {
            json!(age_of(&v["status"]["lastScheduleTime"]))
        }
    }),
    col("Age", "string", age),
    wide("Containers", |v| {
        containers(&v["spec"]["jobTemplate"]["spec"]["template"])
    }),
    wide("Images", |v| {
        images(&v["spec"]["jobTemplate"]["spec"]["template"])
    }),
    wide("Selector", |v| {
        json!(selector_string(
            &v["spec"]["jobTemplate"]["spec"]["selector"]
        ))
    }),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        let d = |s| human_duration(Duration::from_secs(s));
        assert_eq!(d(5), "5s");
        assert_eq!(d(119), "119s");
        assert_eq!(d(130), "2m10s");
        assert_eq!(d(600), "10m");
        assert_eq!(d(3 * 3600 + 60), "3h1m");
        assert_eq!(d(9 * 3600), "9h");
        assert_eq!(d(3 * 86400 + 3600), "3d1h");
        assert_eq!(d(30 * 86400), "30d");
    }

    #[test]
    fn job_columns_read_like_kubectl() {
        let job = json!({"metadata":{},"spec":{"completions":3,"parallelism":2},
            "status":{"succeeded":2,"conditions":[{"type":"SuccessCriteriaMet","status":"True"}]}});
        assert_eq!(job_completions(&job), "2/3");
        assert_eq!(job_status(&job), "SuccessCriteriaMet");
        let job = json!({"metadata":{},"spec":{"parallelism":4},"status":{"conditions":[
            {"type":"FailureTarget","status":"True"},{"type":"Failed","status":"True"}]}});
        assert_eq!(job_completions(&job), "0/1 of 4");
        assert_eq!(job_status(&job), "Failed");
        let job = json!({"metadata":{"deletionTimestamp":"2024-01-01T00:00:00Z"},"spec":{}});
        assert_eq!(job_status(&job), "Terminating");
        assert_eq!(job_completions(&job), "0/1");
    }

    #[test]
    fn pod_status_prefers_container_reasons() {
        let pod = json!({"metadata":{},"spec":{"containers":[{"name":"a"},{"name":"b"}]},
            "status":{"phase":"Running","containerStatuses":[
                {"ready":true,"restartCount":2,"state":{"running":{}}},
                {"ready":false,"restartCount":3,"state":{"waiting":{"reason":"CrashLoopBackOff"}}}]}});
        assert_eq!(pod_status(&pod), "CrashLoopBackOff");
        assert_eq!(pod_ready(&pod), "1/2");
        assert_eq!(pod_restarts(&pod), 5);
        assert_eq!(
            selector_string(&json!({"matchLabels":{"app":"web"},
                "matchExpressions":[{"key":"tier","operator":"In","values":["a","b"]}]})),
            "app=web,tier in (a,b)"
        );
    }

    #[test]
    fn revision_and_claim_columns_read_like_kubectl() {
        let cr = json!({"metadata":{"ownerReferences":[
                {"apiVersion":"apps/v1","kind":"DaemonSet","name":"web","uid":"u","controller":true}]},
            "revision": 3});
        assert_eq!(revision_controller(&cr), "daemonset.apps/web");
        assert_eq!((CONTROLLER_REVISION[2].cell)(&cr), 3);
        assert_eq!(revision_controller(&json!({"metadata":{}})), "<none>");
        let pvc = json!({"metadata":{},"spec":{"volumeMode":"Filesystem"},
            "status":{"phase":"Bound","accessModes":["ReadWriteOnce","ReadWriteMany"],
                "capacity":{"storage":"1Gi"}}});
        let cells: Vec<Value> = PERSISTENT_VOLUME_CLAIM
            .iter()
            .map(|c| (c.cell)(&pvc))
            .collect();
        assert_eq!(cells[1], "Bound");
        assert_eq!(cells[3], "1Gi");
        assert_eq!(cells[4], "RWO,RWX");
        assert_eq!(cells[6], "<unset>");
        assert_eq!(cells[8], "Filesystem");
    }
}
