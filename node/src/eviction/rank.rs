//! Which pod to evict first, as a pure function: kubelet's ranking
//! (`rankMemoryPressure`, `rankDiskPressureFunc`), for the resource the node
//! is short of:
//!
//! 1. pods whose usage exceeds their request first;
//! 2. then lower `spec.priority` first;
//! 3. then the larger usage above the request first.
//!
//! The QoS class is not a key of its own, as in kubelet: a BestEffort pod
//! requests nothing, so any usage exceeds and it goes first among pods of its
//! priority; a Guaranteed pod uses at most its request (its limit) and goes
//! after every pod that exceeds. Among pods within their requests, the one
//! closest to (or furthest over) its request goes first.

use k8s_openapi::api::core::v1::Pod;

use crate::quantity;

/// One pod's standing for the resource being reclaimed.
#[derive(Clone, Debug)]
pub struct Candidate<'a> {
    pub pod: &'a Pod,
    /// Bytes in use: working-set memory, or local storage (ephemeral-storage).
    pub usage: u64,
}

/// The pod's request of `resource` (`memory`, `ephemeral-storage`): the sum
/// over its containers (init containers run before, not beside them).
pub fn request(pod: &Pod, resource: &str) -> u64 {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get(resource))
        .filter_map(quantity::bytes)
        .sum()
}

/// `spec.priority`, 0 when unset (the API's default without a class).
pub fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Indices into `candidates`, the first to evict first, for `resource`.
pub fn rank(candidates: &[Candidate<'_>], resource: &str) -> Vec<usize> {
    let mut keyed: Vec<(bool, i32, i128, usize)> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let over = c.usage as i128 - request(c.pod, resource) as i128;
            // `false` sorts first: exceeding pods have `!exceeds == false`.
            (over <= 0, priority(c.pod), -over, i)
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|k| k.3).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    fn pod(requests: Option<&str>, limits: Option<&str>, priority: Option<i32>) -> Pod {
        let list = |v: Option<&str>| {
            v.map(|m| {
                BTreeMap::from([
                    ("memory".to_string(), Quantity(m.into())),
                    ("cpu".to_string(), Quantity("100m".into())),
                ])
            })
        };
        Pod {
            spec: Some(PodSpec {
                priority,
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: list(requests),
                        limits: list(limits),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn exceeding_pods_first_then_by_how_far_over() {
        let guaranteed = pod(Some("100Mi"), Some("100Mi"), None);
        let burstable_under = pod(Some("500Mi"), None, None);
        let burstable_over = pod(Some("10Mi"), None, None);
        let best_effort = pod(None, None, None);
        let c = vec![
            Candidate {
                pod: &guaranteed,
                usage: 90 * MIB,
            },
            Candidate {
                pod: &burstable_under,
                usage: 100 * MIB,
            },
            Candidate {
                pod: &burstable_over,
                usage: 50 * MIB,
            },
            Candidate {
                pod: &best_effort,
                usage: MIB,
            },
        ];
        // Burstable over by 40Mi, BestEffort over by 1Mi, then the
        // Guaranteed pod (10Mi under) before the Burstable one 400Mi under.
        assert_eq!(rank(&c, "memory"), vec![2, 3, 0, 1]);
    }

    #[test]
    fn best_effort_goes_first_among_equals_and_guaranteed_last() {
        let guaranteed = pod(Some("64Mi"), Some("64Mi"), None);
        let best_effort = pod(None, None, None);
        let c = vec![
            Candidate {
                pod: &guaranteed,
                usage: MIB,
            },
            Candidate {
                pod: &best_effort,
                usage: 0,
            },
        ];
        assert_eq!(rank(&c, "memory"), vec![1, 0]);
    }

    #[test]
    fn priority_orders_pods_that_exceed_alike() {
        let low = pod(None, None, Some(-10));
        let high = pod(None, None, Some(1000));
        let c = vec![
            Candidate {
                pod: &high,
                usage: 500 * MIB,
            },
            Candidate {
                pod: &low,
                usage: MIB,
            },
        ];
        assert_eq!(rank(&c, "memory"), vec![1, 0], "lower priority first");
        // Storage is ranked by its own requests.
        assert_eq!(request(&high, "ephemeral-storage"), 0);
        assert_eq!(request(&pod(Some("1Ki"), None, None), "memory"), 1024);
    }
}
