//! Resource amounts and what a pod requests, computed as kube-scheduler does.
//!
//! A pod's request is `max(sum of containers (+ sidecars), max over init
//! containers (each plus the sidecars started before it)) + overhead`. The
//! "non-zero" variant gives containers without a cpu/memory request the
//! scheduler's defaults (100m, 200Mi) and is what spreading scores use.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Node, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;

use crate::quantity::{milli_value_of, value_of, QuantityError};

pub const CPU: &str = "cpu";
pub const MEMORY: &str = "memory";
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
pub const PODS: &str = "pods";

/// kube-scheduler's defaults for containers that request no cpu / memory.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// A resource that is neither cpu, memory, ephemeral-storage nor pods, and
/// counts like a number: extended (`example.com/gpu`), prefixed native,
/// hugepages, attachable volumes. Unknown unprefixed names are ignored, as
/// upstream does.
pub fn is_scalar_resource(name: &str) -> bool {
    name.starts_with("hugepages-")
        || name.starts_with("attachable-volumes-")
        || (name.contains('/') && !name.starts_with("requests."))
}

/// Amounts of each resource: requested by pods or allocatable on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub ephemeral_storage: i64,
    /// Only meaningful for allocatable (the "pods" resource).
    pub allowed_pod_number: i64,
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Parses a resource list (requests, allocatable, overhead).
    pub fn from_list(list: &BTreeMap<String, K8sQuantity>) -> Result<Resources, QuantityError> {
        let mut r = Resources::default();
        for (name, q) in list {
            match name.as_str() {
                CPU => r.milli_cpu = milli_value_of(q)?,
                MEMORY => r.memory = value_of(q)?,
                EPHEMERAL_STORAGE => r.ephemeral_storage = value_of(q)?,
                PODS => r.allowed_pod_number = value_of(q)?,
                other if is_scalar_resource(other) => {
                    r.scalar.insert(other.to_string(), value_of(q)?);
                }
                _ => {}
            }
        }
        Ok(r)
    }

    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(o.milli_cpu);
        self.memory = self.memory.saturating_add(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_add(o.ephemeral_storage);
        self.allowed_pod_number = self.allowed_pod_number.saturating_add(o.allowed_pod_number);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = e.saturating_add(*v);
        }
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.saturating_sub(o.milli_cpu);
        self.memory = self.memory.saturating_sub(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.saturating_sub(o.ephemeral_storage);
        self.allowed_pod_number = self.allowed_pod_number.saturating_sub(o.allowed_pod_number);
        for (k, v) in &o.scalar {
            if let Some(e) = self.scalar.get_mut(k) {
                *e = e.saturating_sub(*v);
                if *e == 0 {
                    self.scalar.remove(k);
                }
            }
        }
    }

    /// Element-wise maximum.
    pub fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        self.allowed_pod_number = self.allowed_pod_number.max(o.allowed_pod_number);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }

    pub fn is_zero(&self) -> bool {
        self.milli_cpu == 0
            && self.memory == 0
            && self.ephemeral_storage == 0
            && self.scalar.values().all(|v| *v == 0)
    }
}

/// What one pod asks of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRequests {
    /// Requests as written (plus overhead).
    pub requests: Resources,
    /// cpu / memory with the scheduler's per-container defaults filled in.
    pub non_zero_milli_cpu: i64,
    pub non_zero_memory: i64,
}

fn container_requests(c: &Container) -> Result<Resources, QuantityError> {
    let Some(res) = &c.resources else {
        return Ok(Resources::default());
    };
    // The API server defaults a missing request to the limit; do the same so a
    // pod stored without defaulting is not under-counted.
    let mut merged: BTreeMap<String, K8sQuantity> = res.limits.clone().unwrap_or_default();
    if let Some(req) = &res.requests {
        for (k, v) in req {
            merged.insert(k.clone(), v.clone());
        }
    }
    Resources::from_list(&merged)
}

fn non_zero(r: &Resources) -> (i64, i64) {
    let cpu = if r.milli_cpu == 0 {
        DEFAULT_MILLI_CPU_REQUEST
    } else {
        r.milli_cpu
    };
    let mem = if r.memory == 0 {
        DEFAULT_MEMORY_REQUEST
    } else {
        r.memory
    };
    (cpu, mem)
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The pod's effective request, as upstream's `resource.PodRequests` (with
/// sidecar containers) and the non-zero variant used by scores.
pub fn pod_requests(pod: &Pod) -> Result<PodRequests, QuantityError> {
    let Some(spec) = &pod.spec else {
        return Ok(PodRequests::default());
    };
    let mut reqs = Resources::default();
    let (mut nz_cpu, mut nz_mem) = (0i64, 0i64);
    for c in &spec.containers {
        let r = container_requests(c)?;
        let (cpu, mem) = non_zero(&r);
        nz_cpu += cpu;
        nz_mem += mem;
        reqs.add(&r);
    }
    let mut init_max = Resources::default();
    let mut sidecars = Resources::default();
    let (mut nz_init_cpu, mut nz_init_mem) = (0i64, 0i64);
    let (mut nz_side_cpu, mut nz_side_mem) = (0i64, 0i64);
    for c in spec.init_containers.iter().flatten() {
        let r = container_requests(c)?;
        let (cpu, mem) = non_zero(&r);
        if is_sidecar(c) {
            // A sidecar keeps running beside the main containers.
            reqs.add(&r);
            nz_cpu += cpu;
            nz_mem += mem;
            sidecars.add(&r);
            nz_side_cpu += cpu;
            nz_side_mem += mem;
            init_max.max_with(&sidecars);
            nz_init_cpu = nz_init_cpu.max(nz_side_cpu);
            nz_init_mem = nz_init_mem.max(nz_side_mem);
        } else {
            let mut with_sidecars = r;
            with_sidecars.add(&sidecars);
            init_max.max_with(&with_sidecars);
            nz_init_cpu = nz_init_cpu.max(cpu + nz_side_cpu);
            nz_init_mem = nz_init_mem.max(mem + nz_side_mem);
        }
    }
    reqs.max_with(&init_max);
    nz_cpu = nz_cpu.max(nz_init_cpu);
    nz_mem = nz_mem.max(nz_init_mem);
    if let Some(overhead) = &spec.overhead {
        let o = Resources::from_list(overhead)?;
        nz_cpu += o.milli_cpu;
        nz_mem += o.memory;
        reqs.add(&o);
    }
    Ok(PodRequests {
        requests: reqs,
        non_zero_milli_cpu: nz_cpu,
        non_zero_memory: nz_mem,
    })
}

/// A node's allocatable resources.
pub fn node_allocatable(node: &Node) -> Result<Resources, QuantityError> {
    match node.status.as_ref().and_then(|s| s.allocatable.as_ref()) {
        Some(list) => Resources::from_list(list),
        None => Ok(Resources::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn sum_of_containers_plus_overhead() {
        let p = pod(json!({"spec": {
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "1Gi", "example.com/gpu": "1"}}},
                {"name": "b", "resources": {"requests": {"cpu": "1.5"}}}
            ],
            "overhead": {"cpu": "10m", "memory": "1Mi"}
        }}));
        let r = pod_requests(&p).unwrap();
        assert_eq!(r.requests.milli_cpu, 1610);
        assert_eq!(r.requests.memory, (1 << 30) + (1 << 20));
        assert_eq!(r.requests.scalar.get("example.com/gpu"), Some(&1));
        // b has no memory request: 200Mi default in the non-zero variant.
        assert_eq!(
            r.non_zero_memory,
            (1 << 30) + DEFAULT_MEMORY_REQUEST + (1 << 20)
        );
        assert_eq!(r.non_zero_milli_cpu, 1610);
    }

    #[test]
    fn init_containers_take_the_max() {
        let p = pod(json!({"spec": {
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "100Mi"}}}],
            "initContainers": [
                {"name": "i1", "resources": {"requests": {"cpu": "2", "memory": "10Mi"}}},
                {"name": "i2", "resources": {"requests": {"cpu": "50m", "memory": "300Mi"}}}
            ]
        }}));
        let r = pod_requests(&p).unwrap();
        assert_eq!(r.requests.milli_cpu, 2000);
        assert_eq!(r.requests.memory, 300 << 20);
    }

    #[test]
    fn sidecars_add_to_main_and_later_inits() {
        let p = pod(json!({"spec": {
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}],
            "initContainers": [
                {"name": "side", "restartPolicy": "Always", "resources": {"requests": {"cpu": "500m"}}},
                {"name": "i", "resources": {"requests": {"cpu": "1200m"}}}
            ]
        }}));
        let r = pod_requests(&p).unwrap();
        // main: 1 + 0.5 = 1.5; init i runs beside the sidecar: 1.2 + 0.5 = 1.7.
        assert_eq!(r.requests.milli_cpu, 1700);
    }

    #[test]
    fn limits_stand_in_for_missing_requests() {
        let p = pod(json!({"spec": {"containers": [
            {"name": "a", "resources": {"limits": {"cpu": "2", "memory": "1Gi"}, "requests": {"cpu": "1"}}}
        ]}}));
        let r = pod_requests(&p).unwrap();
        assert_eq!(r.requests.milli_cpu, 1000);
        assert_eq!(r.requests.memory, 1 << 30);
    }

    #[test]
    fn bad_quantity_is_an_error() {
        let p = pod(json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "lots"}}}
        ]}}));
        assert_eq!(
            pod_requests(&p).unwrap_err().to_string(),
            "quantity \"lots\" is invalid: expected a number"
        );
    }
}
