//! PodTopologySpread: keep matching pods evenly spread over topology domains.
//!
//! DoNotSchedule constraints filter: on the candidate node's domain,
//! `matching + (1 if the pod matches itself) - global minimum <= maxSkew`,
//! where the minimum is 0 while fewer than `minDomains` domains exist.
//! ScheduleAnyway constraints score: fewer matching pods in the node's domain
//! is better, each constraint weighted by `ln(domains + 2)`.
//! Domains come from nodes that pass the inclusion policies (node affinity
//! honored, taints ignored, by default) and carry every constraint's key.
//!
//! The filter's counts come from the snapshot's `domain_counts` when the
//! pod's constraints are counted there: shared as they are when every node
//! is a domain of every constraint (each carries the keys, no inclusion
//! policy excludes any), else summed per included node; only for a pod
//! whose constraints are not counted does the pre-filter walk every pod.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Toleration};

use crate::domain_counts::{Matcher, ValueCounts};
use crate::plugins::node_affinity;
use crate::pod_info::PodInfo;
use crate::selector::{LabelSelector, SelectorError};
use crate::snapshot::{NodeInfo, Snapshot};
use crate::status::{FilterResult, Plugin, Status};
use crate::toleration::{find_untolerated, is_hard_effect};

pub const ERR_REASON_CONSTRAINTS_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints";
pub const ERR_REASON_NODE_LABEL_NOT_MATCH: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";
const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";

#[derive(Debug, Clone)]
pub struct Constraint {
    pub max_skew: i64,
    pub topology_key: String,
    pub selector: LabelSelector,
    pub min_domains: i64,
    pub honor_node_affinity: bool,
    pub honor_node_taints: bool,
}

/// The pod's constraints with `whenUnsatisfiable == when`.
pub fn constraints(pod: &Pod, when: &str) -> Result<Vec<Constraint>, SelectorError> {
    let mut out = Vec::new();
    let list = pod
        .spec
        .as_ref()
        .and_then(|s| s.topology_spread_constraints.as_ref());
    for (i, c) in list.into_iter().flatten().enumerate() {
        if c.when_unsatisfiable != when {
            continue;
        }
        let path = format!("spec.topologySpreadConstraints[{i}].labelSelector");
        let mut selector = LabelSelector::compile(c.label_selector.as_ref(), &path)?;
        if c.label_selector.is_some() {
            for k in c.match_label_keys.iter().flatten() {
                if let Some(v) = pod.metadata.labels.as_ref().and_then(|l| l.get(k)) {
                    selector.require_equal(k, v);
                }
            }
        }
        out.push(Constraint {
            max_skew: i64::from(c.max_skew),
            topology_key: c.topology_key.clone(),
            selector,
            min_domains: i64::from(c.min_domains.unwrap_or(1)),
            honor_node_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_node_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        });
    }
    Ok(out)
}

impl Constraint {
    /// What the snapshot counts for this constraint of a pod in `namespace`.
    pub fn matcher(&self, namespace: &str) -> Matcher {
        Matcher::Spread {
            namespace: namespace.to_string(),
            selector: self.selector.clone(),
        }
    }
}

/// What the snapshot should count for `pod`'s constraints, and by which
/// topology keys; invalid constraints ask for nothing.
pub fn matchers(pod: &Pod) -> Vec<(Matcher, String)> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    ["DoNotSchedule", "ScheduleAnyway"]
        .into_iter()
        .flat_map(|when| constraints(pod, when).unwrap_or_default())
        .map(|c| (c.matcher(ns), c.topology_key))
        .collect()
}

fn has_all_keys(node: &NodeInfo, cs: &[Constraint]) -> bool {
    cs.iter().all(|c| node.label(&c.topology_key).is_some())
}

fn included(
    c: &Constraint,
    node: &NodeInfo,
    na: &node_affinity::State,
    tols: &[Toleration],
) -> bool {
    if c.honor_node_affinity && !na.matches_required(node) {
        return false;
    }
    if c.honor_node_taints && find_untolerated(node.taints(), tols, is_hard_effect).is_some() {
        return false;
    }
    true
}

fn count_matching(pods: &[std::sync::Arc<PodInfo>], sel: &LabelSelector, ns: &str) -> i64 {
    pods.iter()
        .filter(|p| !p.terminating && p.namespace == ns && sel.matches(p.labels()))
        .count() as i64
}

/// Matching pods per domain of one constraint.
#[derive(Debug, Clone)]
struct DomainCounts {
    /// Per domain; absent means 0.
    counts: Arc<ValueCounts>,
    /// Every domain, when `counts` are the snapshot's (which leave out
    /// domains without matching pods); `None`: the keys of `counts`.
    domains: Option<Arc<ValueCounts>>,
    /// What-if changes (preemption, nominated pods) over `counts`.
    delta: HashMap<String, i64>,
}

impl DomainCounts {
    fn owned(counts: HashMap<String, i64>) -> DomainCounts {
        DomainCounts {
            counts: Arc::new(counts),
            domains: None,
            delta: HashMap::new(),
        }
    }

    fn get(&self, v: &str) -> i64 {
        self.counts.get(v).copied().unwrap_or(0) + self.delta.get(v).copied().unwrap_or(0)
    }

    fn domains(&self) -> Box<dyn Iterator<Item = &String> + '_> {
        match &self.domains {
            Some(d) => Box::new(d.keys()),
            None => Box::new(
                self.counts
                    .keys()
                    .chain(self.delta.keys().filter(|v| !self.counts.contains_key(*v))),
            ),
        }
    }

    fn len(&self) -> usize {
        match &self.domains {
            Some(d) => d.len(),
            None => self.domains().count(),
        }
    }

    /// The fewest matching pods in a domain; `None` without domains.
    fn min(&self) -> Option<i64> {
        if let Some(d) = &self.domains {
            // `counts` holds no zeros: a domain it leaves out has none.
            if self.delta.is_empty() && self.counts.len() < d.len() {
                return Some(0);
            }
        }
        self.domains().map(|v| self.get(v)).min()
    }
}

/// Per-cycle state of the filter: matching pods per domain, per constraint.
#[derive(Debug, Clone)]
pub struct FilterState {
    constraints: Vec<Constraint>,
    counts: Vec<DomainCounts>,
    min: Vec<i64>,
    namespace: String,
    na: node_affinity::State,
    tolerations: Vec<Toleration>,
}

impl FilterState {
    /// `None` when the pod has no DoNotSchedule constraint.
    pub fn new(
        snapshot: &Snapshot,
        pod: &PodInfo,
        na: &node_affinity::State,
        tolerations: &[Toleration],
    ) -> Result<Option<FilterState>, SelectorError> {
        let cs = constraints(&pod.pod, "DoNotSchedule")?;
        if cs.is_empty() {
            return Ok(None);
        }
        let counts = match shared_counts(snapshot, &cs, &pod.namespace, na) {
            Some(counts) => counts,
            None => walk_counts(snapshot, &cs, &pod.namespace, na, tolerations),
        };
        let mut s = FilterState {
            counts,
            min: vec![0; cs.len()],
            constraints: cs,
            namespace: pod.namespace.clone(),
            na: na.clone(),
            tolerations: tolerations.to_vec(),
        };
        s.recompute_min();
        Ok(Some(s))
    }

    fn recompute_min(&mut self) {
        for (i, c) in self.constraints.iter().enumerate() {
            let m = self.counts[i].min().unwrap_or(i64::from(i32::MAX));
            self.min[i] = if (self.counts[i].len() as i64) < c.min_domains {
                0
            } else {
                m
            };
        }
    }

    /// A pod appeared on (delta 1) or left (delta -1) `node` (preemption's
    /// what-if).
    pub fn update(&mut self, p: &PodInfo, node: &NodeInfo, delta: i64) {
        if p.namespace != self.namespace || p.terminating || !has_all_keys(node, &self.constraints)
        {
            return;
        }
        let mut changed = false;
        for (i, c) in self.constraints.iter().enumerate() {
            if !included(c, node, &self.na, &self.tolerations) || !c.selector.matches(p.labels()) {
                continue;
            }
            let v = node.label(&c.topology_key).unwrap_or_default();
            *self.counts[i].delta.entry(v.to_string()).or_insert(0) += delta;
            changed = true;
        }
        if changed {
            self.recompute_min();
        }
    }
}

pub fn filter(state: &FilterState, pod: &PodInfo, node: &NodeInfo) -> FilterResult {
    for (i, c) in state.constraints.iter().enumerate() {
        let Some(v) = node.label(&c.topology_key) else {
            return Err(Status::unresolvable(
                Plugin::PodTopologySpread,
                ERR_REASON_NODE_LABEL_NOT_MATCH,
            ));
        };
        let self_match = i64::from(c.selector.matches(pod.labels()));
        let matching = state.counts[i].get(v);
        if matching + self_match - state.min[i] > c.max_skew {
            return Err(Status::unschedulable(
                Plugin::PodTopologySpread,
                ERR_REASON_CONSTRAINTS_NOT_MATCH,
            ));
        }
    }
    Ok(())
}

/// The snapshot's counts as they are, when every node is a domain of every
/// constraint: each node carries every key and no inclusion policy can
/// exclude one (node affinity honored only without required node terms;
/// taints honored never qualifies).
fn shared_counts(
    snapshot: &Snapshot,
    cs: &[Constraint],
    namespace: &str,
    na: &node_affinity::State,
) -> Option<Vec<DomainCounts>> {
    let index = snapshot.domain_index();
    cs.iter()
        .map(|c| {
            let every_node = index.nodes_with_key(&c.topology_key) == snapshot.len();
            let all_included =
                !c.honor_node_taints && (!c.honor_node_affinity || na.required.is_empty());
            if !every_node || !all_included {
                return None;
            }
            Some(DomainCounts {
                counts: index
                    .counts(&c.matcher(namespace), &c.topology_key)?
                    .clone(),
                domains: Some(index.domains(&c.topology_key)?.clone()),
                delta: HashMap::new(),
            })
        })
        .collect()
}

/// Matching pods on `node`: from the snapshot's per-node counts when it
/// keeps them, else by looking at every pod there.
fn matching_on(snapshot: &Snapshot, c: &Constraint, namespace: &str, node: &NodeInfo) -> i64 {
    match snapshot.domain_index().node_counts(&c.matcher(namespace)) {
        Some(per_node) => per_node.get(&node.name).copied().unwrap_or(0),
        None => count_matching(&node.pods, &c.selector, namespace),
    }
}

/// Counts summed over the included nodes that carry every key.
fn walk_counts(
    snapshot: &Snapshot,
    cs: &[Constraint],
    namespace: &str,
    na: &node_affinity::State,
    tolerations: &[Toleration],
) -> Vec<DomainCounts> {
    let mut counts = vec![HashMap::new(); cs.len()];
    for node in snapshot.nodes() {
        if !has_all_keys(node, cs) {
            continue;
        }
        for (i, c) in cs.iter().enumerate() {
            if !included(c, node, na, tolerations) {
                continue;
            }
            let v = node.label(&c.topology_key).unwrap_or_default();
            let n = matching_on(snapshot, c, namespace, node);
            *counts[i].entry(v.to_string()).or_insert(0) += n;
        }
    }
    counts.into_iter().map(DomainCounts::owned).collect()
}

/// Per-cycle state of the score.
#[derive(Debug, Clone)]
pub struct ScoreState {
    constraints: Vec<Constraint>,
    pair_counts: HashMap<(String, String), i64>,
    weights: Vec<f64>,
    namespace: String,
}

impl ScoreState {
    /// `None` when the pod has no ScheduleAnyway constraint.
    pub fn new(
        snapshot: &Snapshot,
        pod: &PodInfo,
        na: &node_affinity::State,
        tolerations: &[Toleration],
        feasible: &[&NodeInfo],
    ) -> Result<Option<ScoreState>, SelectorError> {
        let cs = constraints(&pod.pod, "ScheduleAnyway")?;
        if cs.is_empty() {
            return Ok(None);
        }
        let mut pair_counts = HashMap::new();
        let mut sizes = vec![0usize; cs.len()];
        let mut ignored = 0usize;
        for node in feasible {
            if !has_all_keys(node, &cs) {
                ignored += 1;
                continue;
            }
            for (i, c) in cs.iter().enumerate() {
                if c.topology_key == LABEL_HOSTNAME {
                    continue;
                }
                let pair = (
                    c.topology_key.clone(),
                    node.label(&c.topology_key).unwrap_or_default().to_string(),
                );
                if let std::collections::hash_map::Entry::Vacant(e) = pair_counts.entry(pair) {
                    e.insert(0i64);
                    sizes[i] += 1;
                }
            }
        }
        let weights = cs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let size = if c.topology_key == LABEL_HOSTNAME {
                    feasible.len() - ignored
                } else {
                    sizes[i]
                };
                ((size + 2) as f64).ln()
            })
            .collect();
        for node in snapshot.nodes() {
            if !has_all_keys(node, &cs) {
                continue;
            }
            for c in &cs {
                if !included(c, node, na, tolerations) {
                    continue;
                }
                let pair = (
                    c.topology_key.clone(),
                    node.label(&c.topology_key).unwrap_or_default().to_string(),
                );
                if let Some(n) = pair_counts.get_mut(&pair) {
                    *n += matching_on(snapshot, c, &pod.namespace, node);
                }
            }
        }
        Ok(Some(ScoreState {
            constraints: cs,
            pair_counts,
            weights,
            namespace: pod.namespace.clone(),
        }))
    }
}

/// Raw score (lower is better); `None` for nodes without every key.
pub fn score(state: &ScoreState, node: &NodeInfo) -> Option<i64> {
    if !has_all_keys(node, &state.constraints) {
        return None;
    }
    let mut score = 0f64;
    for (i, c) in state.constraints.iter().enumerate() {
        let Some(v) = node.label(&c.topology_key) else {
            continue;
        };
        let cnt = if c.topology_key == LABEL_HOSTNAME {
            count_matching(&node.pods, &c.selector, &state.namespace)
        } else {
            state
                .pair_counts
                .get(&(c.topology_key.clone(), v.to_string()))
                .copied()
                .unwrap_or(0)
        };
        score += cnt as f64 * state.weights[i] + (c.max_skew - 1) as f64;
    }
    Some(score.round() as i64)
}

/// Fewest matching pods → 100; ignored nodes → 0.
pub fn normalize(raw: &[Option<i64>], out: &mut [i64]) {
    let mut min = i64::MAX;
    let mut max = 0i64;
    for s in raw.iter().flatten() {
        min = min.min(*s);
        max = max.max(*s);
    }
    for (o, r) in out.iter_mut().zip(raw) {
        *o = match r {
            None => 0,
            Some(_) if max == 0 => 100,
            Some(s) => 100 * (max + min - s) / max,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::tolerations;
    use crate::testutil::*;
    use serde_json::json;
    use std::sync::Arc;

    fn spread(max_skew: i32, key: &str, when: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut c = json!({"maxSkew": max_skew, "topologyKey": key, "whenUnsatisfiable": when,
            "labelSelector": {"matchLabels": {"app": "web"}}});
        if let (Some(o), Some(e)) = (c.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        json!([c])
    }

    fn zones() -> Vec<k8s_openapi::api::core::v1::Node> {
        vec![
            node("a1").label("zone", "a").build(),
            node("a2").label("zone", "a").build(),
            node("b1").label("zone", "b").build(),
            node("nolabel").build(),
        ]
    }

    fn filter_on(s: &Snapshot, p: &Pod, n: &str) -> FilterResult {
        let info = PodInfo::new(Arc::new(p.clone())).unwrap();
        let na = node_affinity::State::new(p).unwrap();
        let st = FilterState::new(s, &info, &na, tolerations(p))
            .unwrap()
            .unwrap();
        filter(&st, &info, s.node(n).unwrap())
    }

    #[test]
    fn max_skew_by_zone() {
        let s = snapshot(
            zones(),
            vec![
                pod("w1").label("app", "web").on("a1").build(),
                pod("w2").label("app", "web").on("a2").build(),
                pod("other").label("app", "db").on("b1").build(),
            ],
        );
        let p = pod("p")
            .label("app", "web")
            .spec(
                "topologySpreadConstraints",
                spread(1, "zone", "DoNotSchedule", json!({})),
            )
            .build();
        // zone a has 2, b has 0: placing in a makes skew 3.
        assert_eq!(
            filter_on(&s, &p, "a1").unwrap_err().reasons,
            vec![ERR_REASON_CONSTRAINTS_NOT_MATCH.to_string()]
        );
        assert!(filter_on(&s, &p, "b1").is_ok());
        let st = filter_on(&s, &p, "nolabel").unwrap_err();
        assert_eq!(
            st.reasons,
            vec![ERR_REASON_NODE_LABEL_NOT_MATCH.to_string()]
        );
        // maxSkew 2 lets zone a take it... no: 2 + 1 - 0 = 3 > 2.
        let p3 = pod("p")
            .label("app", "web")
            .spec(
                "topologySpreadConstraints",
                spread(3, "zone", "DoNotSchedule", json!({})),
            )
            .build();
        assert!(filter_on(&s, &p3, "a1").is_ok());
    }

    #[test]
    fn min_domains_forces_new_domains() {
        let s = snapshot(
            vec![
                node("a1").label("zone", "a").build(),
                node("b1").label("zone", "b").build(),
            ],
            vec![
                pod("w1").label("app", "web").on("a1").build(),
                pod("w2").label("app", "web").on("b1").build(),
            ],
        );
        let plain = pod("p")
            .label("app", "web")
            .spec(
                "topologySpreadConstraints",
                spread(1, "zone", "DoNotSchedule", json!({})),
            )
            .build();
        assert!(filter_on(&s, &plain, "a1").is_ok());
        // Only 2 domains exist but 3 are wanted: the global minimum counts as 0.
        let md = pod("p")
            .label("app", "web")
            .spec(
                "topologySpreadConstraints",
                spread(1, "zone", "DoNotSchedule", json!({"minDomains": 3})),
            )
            .build();
        assert!(filter_on(&s, &md, "a1").is_err());
    }

    #[test]
    fn node_affinity_policy_limits_domains() {
        let s = snapshot(
            vec![
                node("a1").label("zone", "a").build(),
                node("b1").label("zone", "b").label("pool", "x").build(),
            ],
            vec![pod("w1").label("app", "web").on("b1").build()],
        );
        // Honor (default): zone a is not a domain for a pool=x pod; b has 1,
        // minimum 1, skew 1 + 1 - 1 = 1 fits.
        let p = pod("p")
            .label("app", "web")
            .node_selector("pool", "x")
            .spec(
                "topologySpreadConstraints",
                spread(1, "zone", "DoNotSchedule", json!({})),
            )
            .build();
        assert!(filter_on(&s, &p, "b1").is_ok());
        let ignore = pod("p")
            .label("app", "web")
            .node_selector("pool", "x")
            .spec(
                "topologySpreadConstraints",
                spread(
                    1,
                    "zone",
                    "DoNotSchedule",
                    json!({"nodeAffinityPolicy": "Ignore"}),
                ),
            )
            .build();
        assert!(filter_on(&s, &ignore, "b1").is_err());
    }

    #[test]
    fn taints_policy_honor_excludes_tainted_domains() {
        let s = snapshot(
            vec![
                node("a1")
                    .label("zone", "a")
                    .taint("k", "v", "NoSchedule")
                    .build(),
                node("b1").label("zone", "b").build(),
            ],
            vec![pod("w1").label("app", "web").on("b1").build()],
        );
        let ignore = pod("p")
            .label("app", "web")
            .spec(
                "topologySpreadConstraints",
                spread(1, "zone", "DoNotSchedule", json!({})),
            )
            .build();
        assert!(
            filter_on(&s, &ignore, "b1").is_err(),
            "tainted zone a counts as empty domain"
        );
        let honor = pod("p")
            .label("app", "web")
            .spec(
                "topologySpreadConstraints",
                spread(
                    1,
                    "zone",
                    "DoNotSchedule",
                    json!({"nodeTaintsPolicy": "Honor"}),
                ),
            )
            .build();
        assert!(filter_on(&s, &honor, "b1").is_ok());
    }

    #[test]
    fn schedule_anyway_scores_emptier_domains_higher() {
        let s = snapshot(
            zones(),
            vec![
                pod("w1").label("app", "web").on("a1").build(),
                pod("w2").label("app", "web").on("a2").build(),
            ],
        );
        let p = pod("p")
            .label("app", "web")
            .spec(
                "topologySpreadConstraints",
                spread(1, "zone", "ScheduleAnyway", json!({})),
            )
            .build();
        let info = PodInfo::new(Arc::new(p.clone())).unwrap();
        let na = node_affinity::State::new(&p).unwrap();
        let feasible: Vec<&NodeInfo> = s.nodes().iter().map(|n| n.as_ref()).collect();
        let st = ScoreState::new(&s, &info, &na, tolerations(&p), &feasible)
            .unwrap()
            .unwrap();
        let raw: Vec<Option<i64>> = feasible.iter().map(|n| score(&st, n)).collect();
        // zone a: 2 * ln(4) ≈ 2.77 → 3; zone b: 0; nolabel ignored.
        assert_eq!(raw, vec![Some(3), Some(3), Some(0), None]);
        let mut out = vec![0; raw.len()];
        normalize(&raw, &mut out);
        assert_eq!(out, vec![0, 0, 100, 0]);
    }
}
