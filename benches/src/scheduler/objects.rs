//! The Node and Pod objects of every shape, as scheduler_perf makes them
//! (`test/integration/scheduler_perf/templates/`): nodes of 4 cpu, 32Gi and
//! 110 pods, Ready; pods of one `pause` container requesting (and limited to)
//! 100m cpu and 500Mi. The same JSON feeds the real cluster and the
//! in-memory core run.

use serde::Serialize;
use serde_json::{json, Value};

use crate::system::object_name;

/// The namespace every pod is created in.
pub const NAMESPACE: &str = "bench";
/// Zones the nodes are spread over (label `topology.kubernetes.io/zone`).
pub const ZONES: usize = 3;
/// The spread shape's `maxSkew` (scheduler_perf's spreading template uses 5).
pub const MAX_SKEW: usize = 5;

/// What the pods ask of the scheduler beyond resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Constraint {
    /// Requests only (SchedulingBasic).
    None,
    /// Required pod anti-affinity against each other on
    /// `kubernetes.io/hostname`: at most one such pod a node.
    AntiAffinity,
    /// `topologySpreadConstraints` on the zone, DoNotSchedule, maxSkew 5.
    Spread,
}

pub fn node_name(i: usize) -> String {
    object_name("node", i)
}

pub fn pod_name(i: usize) -> String {
    object_name("pod", i)
}

pub fn zone(i: usize) -> String {
    format!("zone-{}", i % ZONES)
}

pub fn node(i: usize) -> Value {
    let name = node_name(i);
    let resources = json!({"cpu": "4", "memory": "32Gi", "pods": "110"});
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "topology.kubernetes.io/zone": zone(i),
            },
        },
        "spec": {},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            "phase": "Running",
        },
    })
}

pub fn pod(i: usize, constraint: Constraint) -> Value {
    let resources = json!({"cpu": "100m", "memory": "500Mi"});
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod_name(i), "namespace": NAMESPACE, "labels": {"color": "green"}},
        "spec": {
            "containers": [{
                "name": "pause",
                "image": "registry.k8s.io/pause:3.10",
                "ports": [{"containerPort": 80}],
                "resources": {"limits": resources, "requests": resources},
            }],
        },
    });
    let selector = json!({"matchLabels": {"color": "green"}});
    match constraint {
        Constraint::None => {}
        Constraint::AntiAffinity => {
            pod["spec"]["affinity"] = json!({"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": selector,
                    "topologyKey": "kubernetes.io/hostname",
                }],
            }});
        }
        Constraint::Spread => {
            pod["spec"]["topologySpreadConstraints"] = json!([{
                "maxSkew": MAX_SKEW,
                "topologyKey": "topology.kubernetes.io/zone",
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": selector,
            }]);
        }
    }
    pod
}

/// Whether the placement obeys the shape's constraint: `placed` holds each
/// bound pod's node index. A short description of what was checked.
pub fn check_placement(constraint: Constraint, placed: &[usize], nodes: usize) -> (bool, String) {
    match constraint {
        Constraint::None => {
            let mut per_node = vec![0usize; nodes];
            for &n in placed {
                per_node[n] += 1;
            }
            let max = per_node.iter().copied().max().unwrap_or(0);
            (max <= 110, format!("at most {max} pods a node"))
        }
        Constraint::AntiAffinity => {
            let mut per_node = vec![0usize; nodes];
            for &n in placed {
                per_node[n] += 1;
            }
            let max = per_node.iter().copied().max().unwrap_or(0);
            (max <= 1, format!("at most {max} pod(s) a node"))
        }
        Constraint::Spread => {
            let mut per_zone = [0usize; ZONES];
            for &n in placed {
                per_zone[n % ZONES] += 1;
            }
            let max = per_zone.iter().copied().max().unwrap_or(0);
            let min = per_zone.iter().copied().min().unwrap_or(0);
            (
                max - min <= MAX_SKEW,
                format!("zones {per_zone:?}, skew {}", max - min),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Node, Pod};

    #[test]
    fn objects_parse_as_kubernetes_types() {
        let n: Node = serde_json::from_value(node(7)).expect("node");
        assert_eq!(n.metadata.name.as_deref(), Some("node-0000007"));
        for c in [
            Constraint::None,
            Constraint::AntiAffinity,
            Constraint::Spread,
        ] {
            let p: Pod = serde_json::from_value(pod(3, c)).expect("pod");
            assert_eq!(p.metadata.namespace.as_deref(), Some(NAMESPACE));
        }
    }

    #[test]
    fn placement_checks_catch_violations() {
        assert!(check_placement(Constraint::AntiAffinity, &[0, 1, 2], 3).0);
        assert!(!check_placement(Constraint::AntiAffinity, &[0, 1, 1], 3).0);
        assert!(check_placement(Constraint::Spread, &[0, 1, 2, 3], 6).0);
        assert!(!check_placement(Constraint::Spread, &[0; 6], 6).0);
    }
}
