//! One monitoring pass of kubelet's eviction manager, as pure decisions:
//! which signals are under their hard thresholds, which pressure conditions
//! the node reports, and which single pod to evict and with what message.
//!
//! ```text
//!  Observation ─► met() ─► pressure(now) ──► MemoryPressure / DiskPressure
//!                   │      (held true for the transition period after the
//!                   │       last pass that met a threshold, as kubelet does)
//!                   └─► choose(signal, pods' usage) ─► one Eviction (or none)
//! ```
//!
//! The agent's monitor task does the IO around it (reading signals and
//! usage, stopping the pod, writing the event); this module keeps no clock
//! of its own, so tests drive it with made-up readings and instants.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use super::rank::{self, Candidate};
use super::signals::Observation;
use super::threshold::{format_bytes, HardThresholds, Signal};

/// kubelet's `evictionPressureTransitionPeriod` default.
pub const DEFAULT_TRANSITION: Duration = Duration::from_secs(5 * 60);
/// Pods at or above this priority are critical (`system-cluster-critical`
/// and up): kubelet never evicts them.
pub const CRITICAL_PRIORITY: i32 = 2_000_000_000;
/// kubelet's reason for evicted pods and their events.
pub const REASON: &str = "Evicted";

/// The pressure conditions the node reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pressure {
    pub memory: bool,
    pub disk: bool,
}

/// What one running pod uses, for ranking and the eviction message.
#[derive(Clone, Debug)]
pub struct PodUsage {
    pub pod: Pod,
    /// Working-set memory of its containers, bytes.
    pub memory: u64,
    /// Local storage it uses (its directory and logs), bytes.
    pub disk: u64,
    /// Each container's working-set memory, by name.
    pub containers: Vec<(String, u64)>,
}

/// The pod to evict and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Eviction {
    pub uid: String,
    /// `namespace/name`, for logs.
    pub pod: String,
    pub signal: Signal,
    /// kubelet's status message (also the event's).
    pub message: String,
}

pub struct Manager {
    hard: HardThresholds,
    transition: Duration,
    /// When each signal was last seen under its threshold.
    last_met: HashMap<Signal, Instant>,
}

fn observed(signal: Signal, o: &Observation) -> (u64, u64) {
    match signal {
        Signal::MemoryAvailable => (o.memory_available, o.memory_capacity),
        Signal::NodefsAvailable => (o.nodefs_available, o.nodefs_capacity),
    }
}

impl Manager {
    pub fn new(hard: HardThresholds, transition: Duration) -> Self {
        Self {
            hard,
            transition,
            last_met: HashMap::new(),
        }
    }

    /// The signals under their thresholds, memory first (kubelet reclaims
    /// memory before disk).
    pub fn met(&self, o: &Observation) -> Vec<Signal> {
        [Signal::MemoryAvailable, Signal::NodefsAvailable]
            .into_iter()
            .filter(|s| {
                self.hard.get(*s).is_some_and(|v| {
                    let (available, capacity) = observed(*s, o);
                    available < v.bytes(capacity)
                })
            })
            .collect()
    }

    /// The conditions after a pass at `now` that found `met`: a condition
    /// stays true until the transition period has passed without its
    /// threshold being met (so it does not flap).
    pub fn pressure(&mut self, met: &[Signal], now: Instant) -> Pressure {
        for s in met {
            self.last_met.insert(*s, now);
        }
        let held = |s: Signal| {
            self.last_met
                .get(&s)
                .is_some_and(|t| met.contains(&s) || now.duration_since(*t) < self.transition)
        };
        Pressure {
            memory: held(Signal::MemoryAvailable),
            disk: held(Signal::NodefsAvailable),
        }
    }

    /// The one pod to evict for `signal`, in kubelet's order, skipping
    /// critical pods; `None` when no pod can be evicted.
    pub fn choose(&self, signal: Signal, o: &Observation, pods: &[PodUsage]) -> Option<Eviction> {
        let resource = signal.resource();
        let evictable: Vec<&PodUsage> = pods
            .iter()
            .filter(|p| rank::priority(&p.pod) < CRITICAL_PRIORITY)
            .collect();
        let candidates: Vec<Candidate<'_>> = evictable
            .iter()
            .map(|p| Candidate {
                pod: &p.pod,
                usage: match signal {
                    Signal::MemoryAvailable => p.memory,
                    Signal::NodefsAvailable => p.disk,
                },
            })
            .collect();
        let first = *rank::rank(&candidates, resource).first()?;
        let chosen = evictable[first];
        let meta = &chosen.pod.metadata;
        Some(Eviction {
            uid: meta.uid.clone().unwrap_or_default(),
            pod: format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or("default"),
                meta.name.as_deref().unwrap_or_default()
            ),
            signal,
            message: self.message(signal, o, chosen),
        })
    }

    /// kubelet's `evictionMessage`: the resource, the threshold and what was
    /// available, then each container using more memory than it requested.
    pub fn message(&self, signal: Signal, o: &Observation, pod: &PodUsage) -> String {
        let resource = signal.resource();
        let mut message = format!("The node was low on resource: {resource}. ");
        if let Some(v) = self.hard.get(signal) {
            let (available, capacity) = observed(signal, o);
            message += &format!(
                "Threshold quantity: {}, available: {}. ",
                v.display(capacity),
                format_bytes(available)
            );
        }
        if signal == Signal::MemoryAvailable {
            let spec = pod.pod.spec.as_ref();
            for c in spec.iter().flat_map(|s| s.containers.iter()) {
                let Some((_, usage)) = pod.containers.iter().find(|(n, _)| *n == c.name) else {
                    continue;
                };
                let request = c
                    .resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get(resource));
                let request_bytes = request.and_then(crate::quantity::bytes).unwrap_or(0);
                if *usage > request_bytes {
                    message += &format!(
                        "Container {} was using {}, request is {}, has larger consumption of {resource}. ",
                        c.name,
                        format_bytes(*usage),
                        request.map_or("0", |q| q.0.as_str()),
                    );
                }
            }
        }
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    const MIB: u64 = 1 << 20;

    fn usage(
        name: &str,
        memory_request: Option<&str>,
        priority: Option<i32>,
        memory: u64,
    ) -> PodUsage {
        let requests =
            memory_request.map(|m| BTreeMap::from([("memory".to_string(), Quantity(m.into()))]));
        PodUsage {
            pod: Pod {
                metadata: ObjectMeta {
                    name: Some(name.into()),
                    namespace: Some("default".into()),
                    uid: Some(format!("uid-{name}")),
                    ..Default::default()
                },
                spec: Some(PodSpec {
                    priority,
                    containers: vec![Container {
                        name: "main".into(),
                        resources: Some(ResourceRequirements {
                            limits: requests.clone(),
                            requests,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                status: None,
            },
            memory,
            disk: memory / 2,
            containers: vec![("main".into(), memory)],
        }
    }

    fn obs(memory_available: u64, nodefs_available: u64) -> Observation {
        Observation {
            memory_available,
            memory_capacity: 4096 * MIB,
            nodefs_available,
            nodefs_capacity: 1000 * MIB,
        }
    }

    #[test]
    fn thresholds_met_and_conditions_held_for_the_transition_period() {
        let mut m = Manager::new(HardThresholds::default(), Duration::from_secs(30));
        let t0 = Instant::now();
        assert!(m.met(&obs(200 * MIB, 500 * MIB)).is_empty());
        assert_eq!(m.pressure(&[], t0), Pressure::default());
        let low = m.met(&obs(99 * MIB, 99 * MIB));
        assert_eq!(low, vec![Signal::MemoryAvailable, Signal::NodefsAvailable]);
        assert_eq!(
            m.pressure(&low, t0),
            Pressure {
                memory: true,
                disk: true
            }
        );
        // Back above: still true within the period, false after it.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(m.met(&obs(100 * MIB, 100 * MIB)), vec![]);
        assert!(m.pressure(&[], t1).memory);
        let t2 = t0 + Duration::from_secs(31);
        assert_eq!(m.pressure(&[], t2), Pressure::default());
    }

    #[test]
    fn a_zero_transition_period_drops_the_condition_at_once() {
        let mut m = Manager::new(HardThresholds::default(), Duration::ZERO);
        let t0 = Instant::now();
        assert!(m.pressure(&[Signal::NodefsAvailable], t0).disk);
        assert!(!m.pressure(&[], t0 + Duration::from_millis(1)).disk);
    }

    #[test]
    fn evicts_best_effort_first_with_kubelets_message() {
        let m = Manager::new(HardThresholds::default(), DEFAULT_TRANSITION);
        let o = obs(50 * MIB, 500 * MIB);
        let pods = vec![
            usage("guaranteed", Some("64Mi"), None, 10 * MIB),
            usage("best-effort", None, None, 3 * MIB),
            usage("critical", None, Some(CRITICAL_PRIORITY), 900 * MIB),
        ];
        let e = m.choose(Signal::MemoryAvailable, &o, &pods).unwrap();
        assert_eq!(e.pod, "default/best-effort");
        assert_eq!(e.uid, "uid-best-effort");
        assert_eq!(
            e.message,
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
             Container main was using 3Mi, request is 0, has larger consumption of memory. "
        );
        // Then the Guaranteed pod; never the critical one.
        let e = m.choose(Signal::MemoryAvailable, &o, &pods[..1]).unwrap();
        assert_eq!(e.pod, "default/guaranteed");
        assert_eq!(
            e.message,
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. "
        );
        assert_eq!(m.choose(Signal::MemoryAvailable, &o, &pods[2..]), None);
    }

    #[test]
    fn disk_pressure_ranks_by_storage_and_names_ephemeral_storage() {
        let m = Manager::new(HardThresholds::default(), DEFAULT_TRANSITION);
        let o = obs(2048 * MIB, 10 * MIB);
        let pods = vec![
            usage("small", None, None, 2 * MIB),
            usage("big", None, None, 40 * MIB),
        ];
        let e = m.choose(Signal::NodefsAvailable, &o, &pods).unwrap();
        assert_eq!(e.pod, "default/big");
        assert_eq!(
            e.message,
            "The node was low on resource: ephemeral-storage. Threshold quantity: 100Mi, available: 10Mi. "
        );
    }
}
