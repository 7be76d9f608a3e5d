//! NodeResourcesFit: the pod's requests must fit the node's allocatable minus
//! what its pods request (filter), and the LeastAllocated strategy prefers
//! nodes with the most room left (score, cpu and memory weighted 1:1).

use crate::pod_info::PodInfo;
use crate::snapshot::NodeInfo;
use crate::status::{Code, FilterResult, Plugin, Status};

pub fn filter(pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    let mut reasons: Vec<String> = Vec::new();
    let mut unresolvable = false;
    let alloc = &node.allocatable;
    let used = &node.requested;
    if node.pods.len() as i64 + 1 > alloc.allowed_pod_number {
        reasons.push("Too many pods".to_string());
    }
    let want = &pod.requests.requests;
    if !want.is_zero() {
        let mut check = |name: &str, want: i64, alloc: i64, used: i64| {
            if want > 0 && want > alloc - used {
                reasons.push(format!("Insufficient {name}"));
                // More than the whole node: no preemption can help.
                unresolvable |= want > alloc;
            }
        };
        check("cpu", want.milli_cpu, alloc.milli_cpu, used.milli_cpu);
        check("memory", want.memory, alloc.memory, used.memory);
        check(
            "ephemeral-storage",
            want.ephemeral_storage,
            alloc.ephemeral_storage,
            used.ephemeral_storage,
        );
        for (name, q) in &want.scalar {
            let a = alloc.scalar.get(name).copied().unwrap_or(0);
            let u = used.scalar.get(name).copied().unwrap_or(0);
            check(name, *q, a, u);
        }
    }
    if reasons.is_empty() {
        return Ok(());
    }
    Err(Status {
        code: if unresolvable {
            Code::UnschedulableAndUnresolvable
        } else {
            Code::Unschedulable
        },
        plugin: Plugin::NodeResourcesFit,
        reasons,
    })
}

fn least_requested(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * 100 / capacity
}

/// LeastAllocated over cpu and memory (non-zero requests), 0..=100.
pub fn score_least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let mut total = 0;
    let mut weights = 0;
    let pairs = [
        (
            node.non_zero_milli_cpu + pod.requests.non_zero_milli_cpu,
            node.allocatable.milli_cpu,
        ),
        (
            node.non_zero_memory + pod.requests.non_zero_memory,
            node.allocatable.memory,
        ),
    ];
    for (req, cap) in pairs {
        if cap == 0 {
            continue;
        }
        total += least_requested(req, cap);
        weights += 1;
    }
    if weights == 0 {
        0
    } else {
        total / weights
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::sync::Arc;

    fn info(p: k8s_openapi::api::core::v1::Pod) -> PodInfo {
        PodInfo::new(Arc::new(p)).unwrap()
    }

    #[test]
    fn fits_and_insufficient() {
        let s = snapshot(
            vec![node("a")
                .cpu("2")
                .mem("4Gi")
                .alloc("example.com/gpu", "1")
                .build()],
            vec![pod("x").cpu("1500m").mem("1Gi").on("a").build()],
        );
        let a = s.node("a").unwrap();
        assert!(filter(&info(pod("p").cpu("500m").build()), a).is_ok());
        let st = filter(&info(pod("p").cpu("600m").mem("4Gi").build()), a).unwrap_err();
        assert_eq!(st.reasons, vec!["Insufficient cpu", "Insufficient memory"]);
        assert_eq!(st.code, Code::Unschedulable);
        assert!(filter(&info(pod("g").req("example.com/gpu", "1").build()), a).is_ok());
        assert_eq!(
            filter(&info(pod("g").req("example.com/gpu", "2").build()), a)
                .unwrap_err()
                .reasons,
            vec!["Insufficient example.com/gpu"]
        );
        assert_eq!(
            filter(&info(pod("g").req("example.com/fpga", "1").build()), a)
                .unwrap_err()
                .reasons,
            vec!["Insufficient example.com/fpga"]
        );
        let huge = filter(&info(pod("h").cpu("3").build()), a).unwrap_err();
        assert_eq!(huge.code, Code::UnschedulableAndUnresolvable);
    }

    #[test]
    fn too_many_pods_even_for_best_effort() {
        let s = snapshot(
            vec![node("a").pods(1).build()],
            vec![pod("x").on("a").build()],
        );
        assert_eq!(
            filter(&info(pod("p").build()), s.node("a").unwrap())
                .unwrap_err()
                .reasons,
            vec!["Too many pods"]
        );
    }

    #[test]
    fn least_allocated_prefers_emptier_nodes() {
        let s = snapshot(
            vec![node("busy").build(), node("idle").build()],
            vec![pod("x").cpu("3").mem("6Gi").on("busy").build()],
        );
        let p = info(pod("p").cpu("1").mem("2Gi").build());
        let busy = score_least_allocated(&p, s.node("busy").unwrap());
        let idle = score_least_allocated(&p, s.node("idle").unwrap());
        assert_eq!(idle, 75);
        assert_eq!(busy, 0);
        // Best-effort pods count as 100m / 200Mi.
        let be = info(pod("be").build());
        assert_eq!(
            score_least_allocated(&be, s.node("idle").unwrap()),
            (97 + 97) / 2
        );
    }
}
