//! Preemption's pure half: for a pod that fits nowhere, which lower-priority
//! pods to evict, and on which node (upstream's DefaultPreemption).
//!
//! ```text
//!  FitError ─► nodes where preemption might help (Unschedulable, not Unresolvable)
//!     ─► dry run from a random offset on up to max(10%, 100) candidates:
//!          remove every lower-priority pod; still no fit → not a candidate;
//!          re-add (reprieve) from most important down, PDB-violating pods first,
//!          keeping each one that still lets the pod fit
//!     ─► pick one node: fewest PDB violations, lowest highest-victim priority,
//!        smallest priority sum, fewest victims, latest start of top victims
//! ```
//!
//! Deleting the victims and setting `status.nominatedNodeName` is the
//! driver's job; `Snapshot::set_nominated` then keeps the room reserved.

use std::cmp::Ordering;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use rand::Rng;

use crate::core::filter_with_nominated;
use crate::plugins::CycleState;
use crate::pod_info::PodInfo;
use crate::selector::LabelSelector;
use crate::snapshot::{NodeInfo, Snapshot};
use crate::status::{Code, FitError, Plugin, Status};

pub const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
pub const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;
pub const ERR_NO_VICTIMS: &str = "No preemption victims found for incoming pod";
pub const ERR_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";

/// The chosen node and what must go to make room there.
#[derive(Debug, Clone)]
pub struct Preemption {
    pub node: String,
    /// Most important first.
    pub victims: Vec<Arc<Pod>>,
    pub num_pdb_violations: usize,
    /// Pods nominated to that node with lower priority than the preemptor:
    /// their nomination should be cleared.
    pub lower_priority_nominated: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreemptionError {
    /// Upstream's `PodEligibleToPreemptOthers` said no.
    #[error("{0}")]
    NotEligible(&'static str),
    /// No node would fit the pod even after evictions; the per-node reasons
    /// are in the FitError (Display: `0/3 nodes are available: ...`).
    #[error("{0}")]
    NoCandidates(Box<FitError>),
    #[error("{0}")]
    InvalidPod(String),
}

fn start_time(p: &Pod) -> Option<Timestamp> {
    p.status
        .as_ref()
        .and_then(|s| s.start_time.as_ref())
        .map(|t| t.0)
}

/// Upstream's `MoreImportantPod`: higher priority, then started earlier (a
/// pod that has not started counts as starting now, i.e. last).
fn more_important(a: &PodInfo, b: &PodInfo) -> Ordering {
    b.priority
        .cmp(&a.priority)
        .then_with(|| match (start_time(&a.pod), start_time(&b.pod)) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        })
}

/// Splits pods (sorted by importance) into those whose eviction would
/// violate a PodDisruptionBudget and the rest, spending each budget's
/// `disruptionsAllowed` in order, as upstream.
fn split_by_pdb(
    pods: Vec<Arc<PodInfo>>,
    pdbs: &[PodDisruptionBudget],
) -> (Vec<Arc<PodInfo>>, Vec<Arc<PodInfo>>) {
    let mut allowed: Vec<i64> = pdbs
        .iter()
        .map(|p| {
            p.status
                .as_ref()
                .map_or(0, |s| i64::from(s.disruptions_allowed))
        })
        .collect();
    let selectors: Vec<Option<LabelSelector>> = pdbs
        .iter()
        .map(|p| {
            // An invalid selector matches nothing; so does an empty one here.
            LabelSelector::compile(p.spec.as_ref().and_then(|s| s.selector.as_ref()), "pdb")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .collect();
    let (mut violating, mut ok) = (Vec::new(), Vec::new());
    for p in pods {
        let mut violated = false;
        if p.labels().is_some_and(|l| !l.is_empty()) {
            for (i, pdb) in pdbs.iter().enumerate() {
                if pdb.metadata.namespace.as_deref().unwrap_or("default") != p.namespace {
                    continue;
                }
                let Some(sel) = &selectors[i] else { continue };
                if !sel.matches(p.labels()) {
                    continue;
                }
                let already = pdb
                    .status
                    .as_ref()
                    .and_then(|s| s.disrupted_pods.as_ref())
                    .is_some_and(|d| d.contains_key(&p.name));
                if already {
                    continue;
                }
                allowed[i] -= 1;
                if allowed[i] < 0 {
                    violated = true;
                }
            }
        }
        if violated {
            violating.push(p);
        } else {
            ok.push(p);
        }
    }
    (violating, ok)
}

/// Upstream's `SelectVictimsOnNode`: the fewest, least important pods whose
/// removal lets `state.pod` fit on `node`, and how many of them violate a
/// budget.
pub fn select_victims_on_node(
    snapshot: &Snapshot,
    state: &CycleState,
    node: &NodeInfo,
    pdbs: &[PodDisruptionBudget],
) -> Result<(Vec<Arc<PodInfo>>, usize), Status> {
    let mut node = node.clone();
    let mut state = state.clone();
    let prio = state.pod.priority;
    let mut potential: Vec<Arc<PodInfo>> = node
        .pods
        .iter()
        .filter(|p| p.priority < prio)
        .cloned()
        .collect();
    if potential.is_empty() {
        return Err(Status::unresolvable(
            Plugin::NodeResourcesFit,
            ERR_NO_VICTIMS,
        ));
    }
    for p in &potential {
        node.remove_pod(&p.uid);
        state.remove_pod(snapshot, p, &node);
    }
    filter_with_nominated(&state, snapshot, &node)?;
    potential.sort_by(|a, b| more_important(a, b));
    let (violating, ok) = split_by_pdb(potential, pdbs);
    let mut victims = Vec::new();
    let mut violations = 0;
    let has_both = !violating.is_empty() && !ok.is_empty();
    for (is_violating, p) in violating
        .into_iter()
        .map(|p| (true, p))
        .chain(ok.into_iter().map(|p| (false, p)))
    {
        node.add_pod(p.clone());
        state.add_pod(snapshot, &p, &node);
        if filter_with_nominated(&state, snapshot, &node).is_err() {
            node.remove_pod(&p.uid);
            state.remove_pod(snapshot, &p, &node);
            if is_violating {
                violations += 1;
            }
            victims.push(p);
        }
    }
    if has_both {
        victims.sort_by(|a, b| more_important(a, b));
    }
    Ok((victims, violations))
}

struct Candidate {
    node: String,
    victims: Vec<Arc<PodInfo>>,
    violations: usize,
}

/// Upstream's `pickOneNodeForPreemption`.
fn pick_one(cands: &[Candidate]) -> usize {
    let scores: [&dyn Fn(&Candidate) -> i128; 5] = [
        &|c| -(c.violations as i128),
        &|c| -i128::from(c.victims.first().map_or(i32::MIN, |v| v.priority)),
        &|c| {
            -c.victims
                .iter()
                .map(|v| i128::from(v.priority) + i128::from(i32::MAX) + 1)
                .sum::<i128>()
        },
        &|c| -(c.victims.len() as i128),
        &|c| {
            // The earliest start among the most important victims; later wins.
            let top = c.victims.first().map_or(i32::MIN, |v| v.priority);
            c.victims
                .iter()
                .filter(|v| v.priority == top)
                .map(|v| start_time(&v.pod).map_or(i128::MAX, |t| t.as_nanosecond()))
                .min()
                .unwrap_or(i128::MIN)
        },
    ];
    let mut alive: Vec<usize> = (0..cands.len()).collect();
    for f in scores {
        let best = alive.iter().map(|&i| f(&cands[i])).max().unwrap_or(0);
        alive.retain(|&i| f(&cands[i]) == best);
        if alive.len() == 1 {
            break;
        }
    }
    alive[0]
}

fn eligible(snapshot: &Snapshot, pod: &Pod, fit: &FitError) -> Result<(), PreemptionError> {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Err(PreemptionError::NotEligible(
            "not eligible due to preemptionPolicy=Never.",
        ));
    }
    let nominated = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty());
    if let Some(name) = nominated {
        let unresolvable = fit
            .node_statuses
            .get(name)
            .is_some_and(|s| s.code == Code::UnschedulableAndUnresolvable);
        if !unresolvable {
            if let Some(node) = snapshot.node(name) {
                let prio = crate::pod_info::pod_priority(pod);
                if node.pods.iter().any(|p| p.priority < prio && p.terminating) {
                    return Err(PreemptionError::NotEligible(
                        "not eligible due to a terminating pod on the nominated node.",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Finds where evicting lower-priority pods would let `pod` run. `fit` is
/// the error `schedule` returned for it; `rng` picks where the dry run
/// starts.
pub fn preempt<R: Rng + ?Sized>(
    snapshot: &Snapshot,
    pod: &Pod,
    fit: &FitError,
    pdbs: &[PodDisruptionBudget],
    rng: &mut R,
) -> Result<Preemption, PreemptionError> {
    eligible(snapshot, pod, fit)?;
    let state =
        CycleState::new(snapshot, pod).map_err(|e| PreemptionError::InvalidPod(e.message))?;
    let potential: Vec<&Arc<NodeInfo>> = snapshot
        .nodes()
        .iter()
        .filter(|n| {
            fit.node_statuses
                .get(&n.name)
                .is_some_and(|s| s.code == Code::Unschedulable)
        })
        .collect();
    let mut diagnosis = FitError {
        num_all_nodes: snapshot.len(),
        ..Default::default()
    };
    let mut non_violating = Vec::new();
    let mut violating = Vec::new();
    if !potential.is_empty() {
        let n = potential.len();
        let want = (n * MIN_CANDIDATE_NODES_PERCENTAGE / 100)
            .max(MIN_CANDIDATE_NODES_ABSOLUTE)
            .min(n);
        let offset = rng.gen_range(0..n);
        for i in 0..n {
            let node = potential[(offset + i) % n];
            match select_victims_on_node(snapshot, &state, node, pdbs) {
                Ok((victims, violations)) if !victims.is_empty() => {
                    let c = Candidate {
                        node: node.name.clone(),
                        victims,
                        violations,
                    };
                    if violations == 0 {
                        non_violating.push(c);
                    } else {
                        violating.push(c);
                    }
                    if !non_violating.is_empty() && non_violating.len() + violating.len() >= want {
                        break;
                    }
                }
                Ok(_) => diagnosis.record(
                    &node.name,
                    Status::unresolvable(Plugin::NodeResourcesFit, ERR_NO_VICTIMS),
                ),
                Err(st) => diagnosis.record(&node.name, st),
            }
        }
    }
    let mut cands = non_violating;
    cands.extend(violating);
    if cands.is_empty() {
        for n in snapshot.nodes() {
            if !diagnosis.node_statuses.contains_key(&n.name) {
                diagnosis.record(
                    &n.name,
                    Status::unresolvable(Plugin::NodeResourcesFit, ERR_NOT_HELPFUL),
                );
            }
        }
        return Err(PreemptionError::NoCandidates(Box::new(diagnosis)));
    }
    let chosen = cands.swap_remove(pick_one(&cands));
    let lower_priority_nominated = snapshot
        .nominated_on(&chosen.node)
        .iter()
        .filter(|p| p.priority < state.pod.priority)
        .map(|p| p.uid.clone())
        .collect();
    Ok(Preemption {
        node: chosen.node,
        victims: chosen.victims.iter().map(|v| v.pod.clone()).collect(),
        num_pdb_violations: chosen.violations,
        lower_priority_nominated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::schedule;
    use crate::status::ScheduleError;
    use crate::testutil::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use serde_json::json;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(3)
    }

    fn fit_error(s: &Snapshot, p: &Pod) -> FitError {
        match schedule(s, p, &mut rng()) {
            Err(ScheduleError::Unschedulable(fe)) => *fe,
            other => panic!("expected a FitError, got {other:?}"),
        }
    }

    fn names(p: &Preemption) -> Vec<String> {
        p.victims
            .iter()
            .map(|v| v.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    fn run(
        s: &Snapshot,
        p: &Pod,
        pdbs: &[PodDisruptionBudget],
    ) -> Result<Preemption, PreemptionError> {
        preempt(s, p, &fit_error(s, p), pdbs, &mut rng())
    }

    fn pdb(app: &str, allowed: i32) -> PodDisruptionBudget {
        serde_json::from_value(json!({
            "metadata": {"name": format!("pdb-{app}"), "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": app}}},
            "status": {"disruptionsAllowed": allowed, "currentHealthy": 1, "desiredHealthy": 1, "expectedPods": 1}
        }))
        .unwrap()
    }

    #[test]
    fn minimal_victims_reprieving_the_most_important_first() {
        let s = snapshot(
            vec![node("a").cpu("4").build()],
            vec![
                pod("low1").cpu("1").priority(1).on("a").build(),
                pod("low2").cpu("1").priority(2).on("a").build(),
                pod("low3").cpu("2").priority(3).on("a").build(),
            ],
        );
        let p = pod("p").cpu("2").priority(10).build();
        let r = run(&s, &p, &[]).unwrap();
        assert_eq!(r.node, "a");
        // low3 is re-added first and still fits beside p; low2 and low1 do not.
        assert_eq!(names(&r), vec!["low2", "low1"]);
        assert_eq!(r.num_pdb_violations, 0);
        let small = pod("s").cpu("1").priority(10).build();
        assert_eq!(names(&run(&s, &small, &[]).unwrap()), vec!["low1"]);
    }

    #[test]
    fn equal_or_higher_priority_pods_are_never_victims() {
        let s = snapshot(
            vec![node("a").cpu("2").build()],
            vec![pod("peer").cpu("2").priority(10).on("a").build()],
        );
        let p = pod("p").cpu("1").priority(10).build();
        let e = run(&s, &p, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "0/1 nodes are available: 1 No preemption victims found for incoming pod."
        );
        // The driver appends it to the FitError as upstream does.
        let mut fe = fit_error(&s, &p);
        fe.post_filter_msg = Some(format!("preemption: {e}"));
        assert_eq!(
            fe.to_string(),
            "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.."
        );
    }

    #[test]
    fn unresolvable_nodes_are_not_candidates() {
        let s = snapshot(
            vec![
                node("tainted").taint("k", "v", "NoSchedule").build(),
                node("small").cpu("1").build(),
            ],
            vec![pod("low").priority(0).on("tainted").build()],
        );
        let p = pod("p").cpu("2").priority(10).build();
        let e = run(&s, &p, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "0/2 nodes are available: 2 Preemption is not helpful for scheduling."
        );
    }

    #[test]
    fn budgets_steer_the_choice_and_are_counted() {
        let s = snapshot(
            vec![node("a").cpu("2").build(), node("b").cpu("2").build()],
            vec![
                pod("guarded")
                    .label("app", "db")
                    .cpu("2")
                    .priority(1)
                    .on("a")
                    .build(),
                pod("free")
                    .label("app", "batch")
                    .cpu("2")
                    .priority(1)
                    .on("b")
                    .build(),
            ],
        );
        let p = pod("p").cpu("1").priority(10).build();
        let r = run(&s, &p, &[pdb("db", 0)]).unwrap();
        assert_eq!((r.node.as_str(), r.num_pdb_violations), ("b", 0));
        // When every choice violates a budget, it is still possible, and counted.
        let r = run(&s, &p, &[pdb("db", 0), pdb("batch", 0)]).unwrap();
        assert_eq!(r.num_pdb_violations, 1);
        // A budget with room is no violation.
        let r = run(&s, &p, &[pdb("db", 1), pdb("batch", 0)]).unwrap();
        assert_eq!((r.node.as_str(), r.num_pdb_violations), ("a", 0));
    }

    #[test]
    fn budget_violating_pods_are_reprieved_first() {
        let s = snapshot(
            vec![node("a").cpu("2").build()],
            vec![
                pod("guarded")
                    .label("app", "db")
                    .cpu("1")
                    .priority(1)
                    .on("a")
                    .build(),
                pod("plain").cpu("1").priority(5).on("a").build(),
            ],
        );
        let p = pod("p").cpu("1").priority(10).build();
        let r = run(&s, &p, &[pdb("db", 0)]).unwrap();
        assert_eq!(
            names(&r),
            vec!["plain"],
            "the more important pod goes to spare the budget"
        );
    }

    #[test]
    fn node_choice_follows_upstream_order() {
        // Lowest highest-victim priority wins.
        let s = snapshot(
            vec![node("a").cpu("2").build(), node("b").cpu("2").build()],
            vec![
                pod("a1").cpu("2").priority(5).on("a").build(),
                pod("b1").cpu("2").priority(1).on("b").build(),
            ],
        );
        let p = pod("p").cpu("2").priority(10).build();
        assert_eq!(run(&s, &p, &[]).unwrap().node, "b");
        // Same top priority: the smaller priority sum, then fewer victims.
        let s = snapshot(
            vec![node("a").cpu("2").build(), node("b").cpu("2").build()],
            vec![
                pod("a1").cpu("1").priority(3).on("a").build(),
                pod("a2").cpu("1").priority(3).on("a").build(),
                pod("b1").cpu("2").priority(3).on("b").build(),
            ],
        );
        let r = run(&s, &p, &[]).unwrap();
        assert_eq!((r.node.as_str(), names(&r)), ("b", vec!["b1".to_string()]));
        // Everything equal: the node whose top victims started latest.
        let started = |name: &str, node_name: &str, t: &str| {
            let mut pd = pod(name).cpu("2").priority(1).on(node_name).build();
            pd.status = Some(serde_json::from_value(json!({"startTime": t})).unwrap());
            pd
        };
        let s = snapshot(
            vec![node("a").cpu("2").build(), node("b").cpu("2").build()],
            vec![
                started("old", "a", "2024-01-01T00:00:00Z"),
                started("new", "b", "2024-06-01T00:00:00Z"),
            ],
        );
        assert_eq!(run(&s, &p, &[]).unwrap().node, "b");
    }

    #[test]
    fn preemption_policy_never() {
        let s = snapshot(
            vec![node("a").cpu("1").build()],
            vec![pod("low").cpu("1").on("a").build()],
        );
        let p = pod("p")
            .cpu("1")
            .priority(10)
            .spec("preemptionPolicy", json!("Never"))
            .build();
        assert_eq!(
            run(&s, &p, &[]).unwrap_err(),
            PreemptionError::NotEligible("not eligible due to preemptionPolicy=Never.")
        );
    }

    #[test]
    fn evicting_an_anti_affine_pod() {
        let s = snapshot(
            vec![node("a").build()],
            vec![pod("rival")
                .label("app", "rival")
                .priority(0)
                .on("a")
                .build()],
        );
        let p = pod("p")
            .priority(10)
            .spec("affinity", json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "rival"}}}
            ]}}))
            .build();
        let r = run(&s, &p, &[]).unwrap();
        assert_eq!(names(&r), vec!["rival"]);
    }

    #[test]
    fn lower_priority_nominations_are_reported() {
        let mut s = snapshot(
            vec![node("a").cpu("2").build()],
            vec![pod("low").cpu("2").priority(1).on("a").build()],
        );
        s.set_nominated(&pod("waiting").cpu("1").priority(2).build(), "a")
            .unwrap();
        let p = pod("p").cpu("1").priority(10).build();
        let r = run(&s, &p, &[]).unwrap();
        assert_eq!(r.lower_priority_nominated, vec!["uid-waiting".to_string()]);
    }
}
