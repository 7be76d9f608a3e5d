//! One scheduling cycle: a snapshot and a pod in, a node (or why none) out.
//!
//! ```text
//!  pod ─► PreFilter (CycleState) ─► find feasible nodes ─► score ─► select
//!            │ invalid spec            │ start at a rotating offset,   │ ties broken
//!            ▼                         │ stop after numFeasibleNodes-  │ by the rng
//!         FitError (pre-filter msg)    │ ToFind (adaptive %)           ▼
//!                                      ▼ none fit                  ScheduleResult
//!                                   FitError (reasons per node)
//! ```
//!
//! Filtering and scoring run on several threads when there are many nodes
//! to look at, in order-preserving chunks, so results do not depend on
//! thread timing.

use std::ops::Range;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use rand::Rng;

use crate::plugins::{
    balanced_allocation, image_locality, inter_pod_affinity, node_affinity, node_resources_fit,
    pod_topology_spread, taint_toleration, CycleState,
};
use crate::pod_info::SharedPod;
use crate::snapshot::{NodeInfo, Snapshot};
use crate::status::{FilterResult, FitError, Plugin, ScheduleError};

/// Below this many nodes every node is considered.
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never goes below this.
pub const MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND: usize = 5;
/// Work items per cycle below which threads cost more than they save.
const PARALLEL_THRESHOLD: usize = 1024;

/// Score weights of kube-scheduler's default profile.
pub const WEIGHT_LEAST_ALLOCATED: i64 = 1;
pub const WEIGHT_BALANCED_ALLOCATION: i64 = 1;
pub const WEIGHT_IMAGE_LOCALITY: i64 = 1;
pub const WEIGHT_INTER_POD_AFFINITY: i64 = 2;
pub const WEIGHT_NODE_AFFINITY: i64 = 2;
pub const WEIGHT_POD_TOPOLOGY_SPREAD: i64 = 2;
pub const WEIGHT_TAINT_TOLERATION: i64 = 3;

/// How many feasible nodes to look for before scoring, as upstream's
/// `numFeasibleNodesToFind`: `percentage` 0 means adaptive
/// (50% - nodes/125, at least 5%), and never fewer than 100 nodes.
pub fn num_feasible_nodes_to_find(percentage: u32, num_all_nodes: usize) -> usize {
    if num_all_nodes < MIN_FEASIBLE_NODES_TO_FIND || percentage >= 100 {
        return num_all_nodes;
    }
    let mut pct = percentage as i64;
    if pct == 0 {
        pct = 50 - (num_all_nodes as i64) / 125;
        pct = pct.max(MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND as i64);
    }
    let n = (num_all_nodes as i64 * pct / 100) as usize;
    n.max(MIN_FEASIBLE_NODES_TO_FIND)
}

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// `percentageOfNodesToScore`; 0 = adaptive.
    pub percentage_of_nodes_to_score: u32,
    /// Threads for filtering/scoring large snapshots (1 = never parallel).
    pub parallelism: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            percentage_of_nodes_to_score: 0,
            parallelism: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

/// The chosen node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleResult {
    pub node: String,
    /// Nodes the filters looked at.
    pub evaluated_nodes: usize,
    /// How many of them fit.
    pub feasible_nodes: usize,
}

/// The scheduling algorithm with its one piece of state: where the next
/// search for feasible nodes starts.
#[derive(Debug, Clone, Default)]
pub struct Scheduler {
    pub config: SchedulerConfig,
    next_start_node_index: usize,
}

/// Maps `0..n` in `threads` order-preserving chunks.
fn par_map<T: Send>(n: usize, threads: usize, f: impl Fn(Range<usize>) -> Vec<T> + Sync) -> Vec<T> {
    if threads <= 1 || n < PARALLEL_THRESHOLD {
        return f(0..n);
    }
    let chunk = n.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let r = (t * chunk).min(n)..((t + 1) * chunk).min(n);
                let f = &f;
                s.spawn(move || f(r))
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for h in handles {
            match h.join() {
                Ok(v) => out.extend(v),
                Err(p) => std::panic::resume_unwind(p),
            }
        }
        out
    })
}

/// Filters with the pods nominated to the node counted in (those of equal
/// or higher priority), then without them, as upstream: the pod must fit
/// both ways.
pub fn filter_with_nominated(
    state: &CycleState,
    snapshot: &Snapshot,
    node: &NodeInfo,
) -> FilterResult {
    if snapshot.has_nominated() {
        let nominated: Vec<_> = snapshot
            .nominated_on(&node.name)
            .iter()
            .filter(|p| p.priority >= state.pod.priority && p.uid != state.pod.uid)
            .cloned()
            .collect();
        if !nominated.is_empty() {
            let mut with = node.clone();
            let mut st = state.clone();
            for p in nominated {
                st.add_pod(snapshot, &p, &with);
                with.add_pod(p);
            }
            st.filter(snapshot, &with)?;
        }
    }
    state.filter(snapshot, node)
}

#[derive(Debug, Clone, Copy, Default)]
struct Raw {
    least_allocated: i64,
    balanced: i64,
    image: i64,
    inter_pod: i64,
    node_affinity: i64,
    spread: Option<i64>,
    taint: i64,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Scheduler {
        Scheduler {
            config,
            next_start_node_index: 0,
        }
    }

    /// Picks a node for `pod`. `rng` breaks ties between equally scored
    /// nodes (pass a seeded one in tests).
    pub fn schedule<R: Rng + ?Sized>(
        &mut self,
        snapshot: &Snapshot,
        pod: impl SharedPod,
        rng: &mut R,
    ) -> Result<ScheduleResult, ScheduleError> {
        let n = snapshot.len();
        if n == 0 {
            return Err(ScheduleError::NoNodesAvailable);
        }
        let pod = pod.shared();
        let state = CycleState::new(snapshot, &pod).map_err(|e| {
            let mut fe = FitError {
                num_all_nodes: n,
                pre_filter_msg: Some(e.message),
                ..Default::default()
            };
            fe.unschedulable_plugins.insert(e.plugin);
            ScheduleError::Unschedulable(Box::new(fe))
        })?;

        // A pod nominated by an earlier preemption tries its node first.
        let nominated = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref())
            .filter(|s| !s.is_empty())
            .and_then(|name| snapshot.node(name));
        if let Some(node) = nominated {
            if filter_with_nominated(&state, snapshot, node).is_ok() {
                return Ok(ScheduleResult {
                    node: node.name.clone(),
                    evaluated_nodes: 1,
                    feasible_nodes: 1,
                });
            }
        }

        let (feasible, evaluated, fit_error) = self.find_feasible(snapshot, &state);
        if feasible.is_empty() {
            return Err(ScheduleError::Unschedulable(Box::new(fit_error)));
        }
        if feasible.len() == 1 {
            return Ok(ScheduleResult {
                node: feasible[0].name.clone(),
                evaluated_nodes: evaluated,
                feasible_nodes: 1,
            });
        }
        let totals = self.score(snapshot, &state, &feasible).map_err(|e| {
            let mut fe = FitError {
                num_all_nodes: n,
                pre_filter_msg: Some(e.message),
                ..Default::default()
            };
            fe.unschedulable_plugins.insert(e.plugin);
            ScheduleError::Unschedulable(Box::new(fe))
        })?;
        // Reservoir sampling among the best: each tied node equally likely.
        let mut best = 0usize;
        let mut ties = 0u32;
        for (i, s) in totals.iter().enumerate() {
            if *s > totals[best] {
                best = i;
                ties = 1;
            } else if *s == totals[best] {
                ties += 1;
                if rng.gen_range(0..ties) == 0 {
                    best = i;
                }
            }
        }
        Ok(ScheduleResult {
            node: feasible[best].name.clone(),
            evaluated_nodes: evaluated,
            feasible_nodes: feasible.len(),
        })
    }

    /// The feasible nodes (in search order), how many nodes were looked at,
    /// and, when none fit, the reasons of every node.
    fn find_feasible<'s>(
        &mut self,
        snapshot: &'s Snapshot,
        state: &CycleState,
    ) -> (Vec<&'s NodeInfo>, usize, FitError) {
        let nodes = snapshot.nodes();
        let n = nodes.len();
        let want = num_feasible_nodes_to_find(self.config.percentage_of_nodes_to_score, n);
        let start = self.next_start_node_index % n;
        let mut feasible: Vec<&NodeInfo> = Vec::with_capacity(want.min(n));
        let mut failed: Vec<(usize, crate::status::Status)> = Vec::new();
        let mut processed = 0usize;
        let threads = self.config.parallelism.max(1);
        while processed < n && feasible.len() < want {
            let batch = (want - feasible.len()).max(256).min(n - processed);
            let base = processed;
            let results = par_map(batch, threads, |r| {
                r.map(|i| {
                    let idx = (start + base + i) % n;
                    (idx, filter_with_nominated(state, snapshot, &nodes[idx]))
                })
                .collect()
            });
            for (idx, res) in results {
                processed += 1;
                match res {
                    Ok(()) => {
                        feasible.push(&nodes[idx]);
                        if feasible.len() == want {
                            break;
                        }
                    }
                    Err(st) => failed.push((idx, st)),
                }
            }
        }
        self.next_start_node_index = (start + processed) % n;
        let mut fe = FitError {
            num_all_nodes: n,
            ..Default::default()
        };
        if feasible.is_empty() {
            for (idx, st) in failed {
                fe.record(&nodes[idx].name, st);
            }
        }
        (feasible, processed, fe)
    }

    /// Weighted total score per feasible node.
    fn score(
        &self,
        snapshot: &Snapshot,
        state: &CycleState,
        feasible: &[&NodeInfo],
    ) -> Result<Vec<i64>, crate::plugins::PreFilterError> {
        let pod = &state.pod;
        let prefer = taint_toleration::prefer_tolerations(&state.tolerations);
        let images = image_locality::pod_images(&pod.pod);
        let skip_balanced = balanced_allocation::skip(pod);
        let inter_pod = inter_pod_affinity::ScoreState::new(snapshot, pod);
        let has_node_pref = !state.node_affinity.preferred.is_empty();
        let spread = pod_topology_spread::ScoreState::new(
            snapshot,
            pod,
            &state.node_affinity,
            &state.tolerations,
            feasible,
        )
        .map_err(|e| crate::plugins::PreFilterError {
            plugin: Plugin::PodTopologySpread,
            message: format!("invalid selector: {e}"),
        })?;
        let threads = self.config.parallelism.max(1);
        let raw: Vec<Raw> = par_map(feasible.len(), threads, |r| {
            r.map(|i| {
                let node = feasible[i];
                Raw {
                    least_allocated: node_resources_fit::score_least_allocated(pod, node),
                    balanced: if skip_balanced {
                        0
                    } else {
                        balanced_allocation::score(pod, node)
                    },
                    image: image_locality::score(&images, snapshot, node),
                    inter_pod: inter_pod
                        .as_ref()
                        .map_or(0, |s| inter_pod_affinity::score(s, node)),
                    node_affinity: if has_node_pref {
                        node_affinity::score(&state.node_affinity, node)
                    } else {
                        0
                    },
                    spread: spread
                        .as_ref()
                        .and_then(|s| pod_topology_spread::score(s, node)),
                    taint: taint_toleration::score(&prefer, node),
                }
            })
            .collect()
        });
        let col = |f: fn(&Raw) -> i64| raw.iter().map(f).collect::<Vec<i64>>();
        let mut inter = col(|r| r.inter_pod);
        if inter_pod.is_some() {
            inter_pod_affinity::normalize(&mut inter);
        }
        let mut na = col(|r| r.node_affinity);
        node_affinity::normalize(&mut na);
        let mut taint = col(|r| r.taint);
        taint_toleration::normalize(&mut taint);
        let mut spread_scores = vec![0i64; raw.len()];
        if spread.is_some() {
            let rs: Vec<Option<i64>> = raw.iter().map(|r| r.spread).collect();
            pod_topology_spread::normalize(&rs, &mut spread_scores);
        }
        Ok(raw
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.least_allocated * WEIGHT_LEAST_ALLOCATED
                    + r.balanced * WEIGHT_BALANCED_ALLOCATION
                    + r.image * WEIGHT_IMAGE_LOCALITY
                    + inter[i] * WEIGHT_INTER_POD_AFFINITY
                    + na[i] * WEIGHT_NODE_AFFINITY
                    + spread_scores[i] * WEIGHT_POD_TOPOLOGY_SPREAD
                    + taint[i] * WEIGHT_TAINT_TOLERATION
            })
            .collect())
    }

    /// Where the next search starts (exposed for tests and metrics).
    pub fn next_start_node_index(&self) -> usize {
        self.next_start_node_index
    }
}

/// Convenience for one-off calls: a default scheduler's `schedule`.
pub fn schedule<R: Rng + ?Sized>(
    snapshot: &Snapshot,
    pod: &Pod,
    rng: &mut R,
) -> Result<ScheduleResult, ScheduleError> {
    Scheduler::default().schedule(snapshot, pod, rng)
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<Snapshot>();
    f::<CycleState>();
    f::<Arc<NodeInfo>>();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use serde_json::json;
    use std::collections::BTreeSet;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    #[test]
    fn adaptive_percentage_as_upstream() {
        assert_eq!(num_feasible_nodes_to_find(0, 50), 50);
        assert_eq!(num_feasible_nodes_to_find(0, 100), 100);
        assert_eq!(num_feasible_nodes_to_find(0, 150), 100);
        assert_eq!(num_feasible_nodes_to_find(0, 1000), 420);
        assert_eq!(num_feasible_nodes_to_find(0, 5000), 500);
        assert_eq!(num_feasible_nodes_to_find(0, 6000), 300);
        assert_eq!(num_feasible_nodes_to_find(0, 20000), 1000);
        assert_eq!(num_feasible_nodes_to_find(10, 500), 100);
        assert_eq!(num_feasible_nodes_to_find(30, 1000), 300);
        assert_eq!(num_feasible_nodes_to_find(100, 5000), 5000);
    }

    #[test]
    fn picks_the_least_allocated_node() {
        let s = snapshot(
            vec![
                node("busy").build(),
                node("idle").build(),
                node("half").build(),
            ],
            vec![
                pod("x").cpu("3").mem("6Gi").on("busy").build(),
                pod("y").cpu("2").mem("4Gi").on("half").build(),
            ],
        );
        let r = schedule(&s, &pod("p").cpu("500m").mem("1Gi").build(), &mut rng()).unwrap();
        assert_eq!(r.node, "idle");
        assert_eq!(r.feasible_nodes, 3);
        assert_eq!(r.evaluated_nodes, 3);
    }

    #[test]
    fn fit_error_lists_reasons_as_upstream() {
        let s = snapshot(
            vec![
                node("a").cpu("1").build(),
                node("b").cpu("1").build(),
                node("c").cpu("1").build(),
                node("d").taint("k", "v", "NoSchedule").build(),
                node("e").taint("k", "v", "NoSchedule").build(),
            ],
            vec![],
        );
        let err = schedule(&s, &pod("p").cpu("2").build(), &mut rng()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/5 nodes are available: 2 node(s) had untolerated taint {k: v}, 3 Insufficient cpu."
        );
        assert_eq!(
            err.unschedulable_plugins(),
            BTreeSet::from([Plugin::TaintToleration, Plugin::NodeResourcesFit])
        );
        let ScheduleError::Unschedulable(fe) = err else {
            panic!("expected FitError")
        };
        assert_eq!(fe.node_statuses.len(), 5);
    }

    #[test]
    fn empty_cluster_and_invalid_pods() {
        let empty = Snapshot::default();
        assert_eq!(
            schedule(&empty, &pod("p").build(), &mut rng()).unwrap_err(),
            ScheduleError::NoNodesAvailable
        );
        let s = snapshot(vec![node("a").build(), node("b").build()], vec![]);
        let bad_cpu = schedule(&s, &pod("p").cpu("two").build(), &mut rng()).unwrap_err();
        assert_eq!(
            bad_cpu.to_string(),
            "0/2 nodes are available: invalid resource request: quantity \"two\" is invalid: expected a number."
        );
        let bad_op = pod("p")
            .spec("affinity", json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "zone", "labelSelector": {"matchExpressions": [{"key": "app", "operator": "Like", "values": ["x"]}]}}
            ]}}))
            .build();
        let e = schedule(&s, &bad_op, &mut rng()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "0/2 nodes are available: invalid selector: spec.affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution[0].labelSelector.matchExpressions[0].operator: \"Like\" is not a valid label selector operator."
        );
        assert_eq!(
            e.unschedulable_plugins(),
            BTreeSet::from([Plugin::InterPodAffinity])
        );
        let bad_spread = pod("p")
            .spec(
                "topologySpreadConstraints",
                json!([{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}]),
            )
            .build();
        assert!(schedule(&s, &bad_spread, &mut rng())
            .unwrap_err()
            .to_string()
            .contains("Required value"));
    }

    #[test]
    fn search_starts_where_the_last_one_stopped() {
        let nodes: Vec<_> = (0..1000)
            .map(|i| node(&format!("n{i:04}")).build())
            .collect();
        let s = snapshot(nodes, vec![]);
        let mut sched = Scheduler::new(SchedulerConfig {
            percentage_of_nodes_to_score: 0,
            parallelism: 1,
        });
        let r = sched.schedule(&s, &pod("p").build(), &mut rng()).unwrap();
        assert_eq!(r.evaluated_nodes, 420);
        assert_eq!(r.feasible_nodes, 420);
        assert_eq!(sched.next_start_node_index(), 420);
        let r2 = sched.schedule(&s, &pod("q").build(), &mut rng()).unwrap();
        assert_eq!(r2.evaluated_nodes, 420);
        assert_eq!(sched.next_start_node_index(), 840);
        // Wraps around.
        sched.schedule(&s, &pod("r").build(), &mut rng()).unwrap();
        assert_eq!(sched.next_start_node_index(), 260);
        // The chosen node is from the window searched.
        let n: usize = r2.node[1..].parse().unwrap();
        assert!((420..840).contains(&n), "{}", r2.node);
    }

    #[test]
    fn ties_are_broken_by_the_rng() {
        let s = snapshot(
            (0..4).map(|i| node(&format!("n{i}")).build()).collect(),
            vec![],
        );
        let p = pod("p").build();
        let mut seen = BTreeSet::new();
        let mut r = StdRng::seed_from_u64(1);
        for _ in 0..64 {
            seen.insert(schedule(&s, &p, &mut r).unwrap().node);
        }
        assert_eq!(seen.len(), 4, "every tied node gets picked: {seen:?}");
        // Same seed, same choice.
        let a = schedule(&s, &p, &mut StdRng::seed_from_u64(9)).unwrap();
        let b = schedule(&s, &p, &mut StdRng::seed_from_u64(9)).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn scores_combine_with_default_weights() {
        // Preferred node affinity (weight 2 x 100) beats a slightly emptier node.
        let s = snapshot(
            vec![
                node("plain").build(),
                node("ssd").label("disk", "ssd").build(),
            ],
            vec![pod("x").cpu("1").on("ssd").build()],
        );
        let p = pod("p")
            .spec("affinity", json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 1, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}
            ]}}))
            .build();
        assert_eq!(schedule(&s, &p, &mut rng()).unwrap().node, "ssd");
        // A PreferNoSchedule taint (weight 3) pushes pods away.
        let s2 = snapshot(
            vec![
                node("a").taint("soft", "", "PreferNoSchedule").build(),
                node("b").build(),
            ],
            vec![pod("x").cpu("1").on("b").build()],
        );
        assert_eq!(
            schedule(&s2, &pod("p").build(), &mut rng()).unwrap().node,
            "b"
        );
    }

    #[test]
    fn nominated_pods_reserve_room_for_lower_priority() {
        let mut s = snapshot(
            vec![node("a").cpu("2").build(), node("b").cpu("2").build()],
            vec![],
        );
        let nominee = pod("big").cpu("2").priority(100).build();
        s.set_nominated(&nominee, "a").unwrap();
        let low = pod("low").cpu("1").priority(10).build();
        for seed in 0..8 {
            let r = schedule(&s, &low, &mut StdRng::seed_from_u64(seed)).unwrap();
            assert_eq!(r.node, "b");
        }
        // A higher-priority pod ignores the nomination.
        let high = pod("high").cpu("1").priority(1000).build();
        let mut nodes = BTreeSet::new();
        for seed in 0..16 {
            nodes.insert(
                schedule(&s, &high, &mut StdRng::seed_from_u64(seed))
                    .unwrap()
                    .node,
            );
        }
        assert!(nodes.contains("a"));
        // The nominee itself goes to its node first.
        let with_status = pod("big").cpu("2").priority(100).build();
        let mut with_status = with_status;
        with_status.status =
            Some(serde_json::from_value(json!({"nominatedNodeName": "a"})).unwrap());
        let r = schedule(&s, &with_status, &mut rng()).unwrap();
        assert_eq!((r.node.as_str(), r.evaluated_nodes), ("a", 1));
        s.clear_nominated("uid-big");
        assert!(!s.has_nominated());
    }

    #[test]
    fn assumed_pods_count_at_once() {
        let mut s = snapshot(vec![node("a").cpu("1").build()], vec![]);
        let p = pod("p").cpu("600m").build();
        let r = schedule(&s, &p, &mut rng()).unwrap();
        s.assume(&p, &r.node).unwrap();
        let q = pod("q").cpu("600m").build();
        assert_eq!(
            schedule(&s, &q, &mut rng()).unwrap_err().to_string(),
            "0/1 nodes are available: 1 Insufficient cpu."
        );
        // Binding failed: forget the assumption.
        s.remove_pod("uid-p");
        assert!(schedule(&s, &q, &mut rng()).is_ok());
    }

    #[test]
    fn parallel_and_sequential_agree() {
        let nodes: Vec<_> = (0..3000)
            .map(|i| {
                node(&format!("n{i:04}"))
                    .label("zone", &format!("z{}", i % 7))
                    .cpu(&format!("{}", 2 + i % 5))
                    .build()
            })
            .collect();
        let pods: Vec<_> = (0..3000)
            .step_by(3)
            .map(|i| {
                pod(&format!("e{i}"))
                    .cpu("1")
                    .label("app", "web")
                    .on(&format!("n{i:04}"))
                    .build()
            })
            .collect();
        let s = snapshot(nodes, pods);
        let p = pod("p")
            .cpu("1500m")
            .label("app", "web")
            .spec(
                "topologySpreadConstraints",
                json!([{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app": "web"}}}]),
            )
            .build();
        for pct in [0, 100] {
            let mut seq = Scheduler::new(SchedulerConfig {
                percentage_of_nodes_to_score: pct,
                parallelism: 1,
            });
            let mut par = Scheduler::new(SchedulerConfig {
                percentage_of_nodes_to_score: pct,
                parallelism: 4,
            });
            for seed in 0..3 {
                let a = seq
                    .schedule(&s, &p, &mut StdRng::seed_from_u64(seed))
                    .unwrap();
                let b = par
                    .schedule(&s, &p, &mut StdRng::seed_from_u64(seed))
                    .unwrap();
                assert_eq!(a, b);
            }
        }
    }

    /// Prints the amortized time per pod on 5,000 nodes (asserts nothing
    /// about speed; run with `--nocapture` in release to read it).
    #[test]
    fn timing_5000_nodes() {
        let nodes: Vec<_> = (0..5000)
            .map(|i| {
                node(&format!("node-{i:05}"))
                    .label("topology.kubernetes.io/zone", &format!("z{}", i % 3))
                    .cpu("32")
                    .mem("128Gi")
                    .image("app:1", 200 << 20)
                    .build()
            })
            .collect();
        let mut s = snapshot(nodes, vec![]);
        let mut sched = Scheduler::new(SchedulerConfig::default());
        let mut r = rng();
        let n = 300;
        let pods: Vec<Pod> = (0..n)
            .map(|i| pod(&format!("p{i}")).cpu("100m").mem("128Mi").build())
            .collect();
        let mut in_schedule = std::time::Duration::ZERO;
        let t = std::time::Instant::now();
        for p in &pods {
            let t0 = std::time::Instant::now();
            let res = sched.schedule(&s, p, &mut r).unwrap();
            in_schedule += t0.elapsed();
            s.assume(p, &res.node).unwrap();
        }
        println!(
            "5000 nodes: {:?} per pod in schedule, {:?} with assume",
            in_schedule / n,
            t.elapsed() / n
        );
        // Every node filtered and scored (the parallel path).
        let mut all = Scheduler::new(SchedulerConfig {
            percentage_of_nodes_to_score: 100,
            ..SchedulerConfig::default()
        });
        let t = std::time::Instant::now();
        for p in pods.iter().take(10) {
            all.schedule(&s, p, &mut r).unwrap();
        }
        println!("5000 nodes, 100% scored: {:?} per pod", t.elapsed() / 10);
        assert_eq!(
            s.nodes().iter().map(|n| n.pods.len()).sum::<usize>(),
            n as usize
        );
    }
}
