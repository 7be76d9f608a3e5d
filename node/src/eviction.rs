//! Which pods to evict first under memory pressure, as a pure function
//! (kubelet's ranking): BestEffort before Burstable before Guaranteed; within
//! a class, pods using more than they requested first, then lower priority,
//! then by how far usage exceeds requests.

use k8s_openapi::api::core::v1::Pod;

use crate::qos::{self, QosClass};
use crate::quantity;

/// One pod's standing.
#[derive(Clone, Debug)]
pub struct Candidate<'a> {
    pub pod: &'a Pod,
    /// Working-set memory in bytes.
    pub memory_usage: u64,
}

fn memory_request(pod: &Pod) -> u64 {
    pod.spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get("memory"))
        .filter_map(quantity::bytes)
        .sum()
}

/// Indices into `candidates`, first to evict first.
pub fn rank(candidates: &[Candidate<'_>]) -> Vec<usize> {
    let mut keyed: Vec<(QosClass, bool, i32, i128, usize)> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let request = memory_request(c.pod);
            let over = c.memory_usage as i128 - request as i128;
            let priority = c.pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
            // `false` sorts first: exceeding pods have `!exceeds == false`.
            (qos::of(c.pod), over <= 0, priority, -over, i)
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|k| k.4).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use std::collections::BTreeMap;

    fn pod(requests: Option<&str>, limits: Option<&str>) -> Pod {
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

    #[test]
    fn best_effort_then_burstable_over_request_then_guaranteed() {
        let guaranteed = pod(Some("100Mi"), Some("100Mi"));
        let burstable_under = pod(Some("500Mi"), None);
        let burstable_over = pod(Some("10Mi"), None);
        let best_effort = pod(None, None);
        let mib = 1024 * 1024;
        let c = vec![
            Candidate {
                pod: &guaranteed,
                memory_usage: 90 * mib,
            },
            Candidate {
                pod: &burstable_under,
                memory_usage: 100 * mib,
            },
            Candidate {
                pod: &burstable_over,
                memory_usage: 50 * mib,
            },
            Candidate {
                pod: &best_effort,
                memory_usage: mib,
            },
        ];
        assert_eq!(rank(&c), vec![3, 2, 1, 0]);
    }
}
