//! NodeResourcesBalancedAllocation: prefer nodes where cpu and memory would
//! be used in equal fractions after placing the pod. Best-effort pods skip it.

use crate::pod_info::PodInfo;
use crate::snapshot::NodeInfo;

/// True when the plugin has nothing to say (the pod requests no cpu/memory).
pub fn skip(pod: &PodInfo) -> bool {
    pod.requests.requests.milli_cpu == 0 && pod.requests.requests.memory == 0
}

pub fn score(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let pairs = [
        (
            node.requested.milli_cpu + pod.requests.requests.milli_cpu,
            node.allocatable.milli_cpu,
        ),
        (
            node.requested.memory + pod.requests.requests.memory,
            node.allocatable.memory,
        ),
    ];
    let mut fractions = [0f64; 2];
    let mut n = 0;
    for (req, cap) in pairs {
        if cap == 0 {
            continue;
        }
        fractions[n] = (req as f64 / cap as f64).min(1.0);
        n += 1;
    }
    let std = if n == 2 {
        ((fractions[0] - fractions[1]) / 2.0).abs()
    } else {
        0.0
    };
    ((1.0 - std) * 100.0) as i64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use std::sync::Arc;

    #[test]
    fn balanced_beats_lopsided() {
        let s = snapshot(
            vec![node("cpu-heavy").build(), node("even").build()],
            vec![
                pod("x").cpu("3").on("cpu-heavy").build(),
                pod("y").cpu("1").mem("2Gi").on("even").build(),
            ],
        );
        let p = PodInfo::new(Arc::new(pod("p").cpu("1").mem("2Gi").build())).unwrap();
        // cpu-heavy: cpu 4/4 = 1, mem 2/8 = .25 → 100 * (1 - .375) = 62
        assert_eq!(score(&p, s.node("cpu-heavy").unwrap()), 62);
        // even: cpu 2/4, mem 4/8 → 100
        assert_eq!(score(&p, s.node("even").unwrap()), 100);
        assert!(skip(&PodInfo::new(Arc::new(pod("be").build())).unwrap()));
        assert!(!skip(&p));
    }
}
