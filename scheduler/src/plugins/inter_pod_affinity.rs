//! InterPodAffinity: required pod affinity / anti-affinity (filter), both
//! the incoming pod's and existing pods' anti-affinity against it; preferred
//! terms of both sides (score).
//!
//! Counts are kept per topology pair (`key`, `value` of the node label):
//! - existing anti-affinity: pairs where some existing pod forbids this pod;
//! - affinity: pairs holding pods that match *all* the pod's affinity terms;
//! - anti-affinity: pairs holding pods that match one of its anti terms.
//!
//! The filter reads these from the snapshot's `domain_counts` (shared, not
//! copied): existing pods' anti-affinity terms are always counted there, the
//! pod's own terms once `Snapshot::ensure_counted` registered them. Only
//! for own terms not counted does the pre-filter walk every placed pod.

use std::collections::HashMap;

use crate::domain_counts::{Matcher, PairCounts};
use crate::pod_info::{AffinityTerm, PodInfo};
use crate::selector::Labels;
use crate::snapshot::{NodeInfo, Snapshot};
use crate::status::{FilterResult, Plugin, Status};

pub const ERR_REASON_EXISTING_ANTI_AFFINITY: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";
pub const ERR_REASON_AFFINITY: &str = "node(s) didn't match pod affinity rules";
pub const ERR_REASON_ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";

/// Weight given to existing pods' required affinity terms when scoring
/// (upstream's hardPodAffinityWeight default).
const HARD_POD_AFFINITY_WEIGHT: i64 = 1;

fn bump(m: &mut PairCounts, node: &NodeInfo, key: &str, delta: i64) {
    if let Some(v) = node.label(key) {
        m.bump(key, v, delta);
    }
}

/// What the snapshot should count for `pod`'s required terms, and by which
/// topology keys: all its affinity terms together, each anti term alone.
pub fn matchers(pod: &PodInfo) -> Vec<(Matcher, String)> {
    let mut out = Vec::new();
    if !pod.required_affinity.is_empty() {
        let m = Matcher::AllTerms(pod.required_affinity.clone());
        for t in &pod.required_affinity {
            out.push((m.clone(), t.topology_key.clone()));
        }
    }
    for t in &pod.required_anti_affinity {
        out.push((Matcher::AllTerms(vec![t.clone()]), t.topology_key.clone()));
    }
    out
}

fn matches_all(terms: &[AffinityTerm], p: &PodInfo, ns_labels: Option<&Labels>) -> bool {
    !terms.is_empty() && terms.iter().all(|t| t.matches_pod(p, ns_labels))
}

/// Per-cycle filter state.
#[derive(Debug, Clone)]
pub struct FilterState {
    existing_anti: PairCounts,
    affinity: PairCounts,
    anti: PairCounts,
}

impl FilterState {
    /// No counts at all (the pod is unconstrained so far).
    pub fn empty() -> FilterState {
        FilterState {
            existing_anti: PairCounts::default(),
            affinity: PairCounts::default(),
            anti: PairCounts::default(),
        }
    }

    /// `None` when nothing can constrain this pod.
    pub fn new(snapshot: &Snapshot, pod: &PodInfo) -> Option<FilterState> {
        let has_own = !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
        if !has_own && !snapshot.has_pods_with_required_anti_affinity() {
            return None;
        }
        let s = Self::counted(snapshot, pod).unwrap_or_else(|| Self::walk(snapshot, pod));
        if s.existing_anti.is_empty() && !has_own {
            return None;
        }
        Some(s)
    }

    /// From the snapshot's counts; `None` when some own term is not counted.
    fn counted(snapshot: &Snapshot, pod: &PodInfo) -> Option<FilterState> {
        let index = snapshot.domain_index();
        let mut s = FilterState::empty();
        if !pod.required_affinity.is_empty() {
            let m = Matcher::AllTerms(pod.required_affinity.clone());
            for t in &pod.required_affinity {
                let counts = index.counts(&m, &t.topology_key)?;
                s.affinity.add_shared(&t.topology_key, counts.clone());
            }
        }
        for t in &pod.required_anti_affinity {
            let counts = index.counts(&Matcher::AllTerms(vec![t.clone()]), &t.topology_key)?;
            s.anti.add_shared(&t.topology_key, counts.clone());
        }
        let pod_ns_labels = snapshot.namespace_labels(&pod.namespace);
        for (t, counts) in index.anti_terms() {
            if t.matches_pod(pod, pod_ns_labels) {
                s.existing_anti.add_shared(&t.topology_key, counts.clone());
            }
        }
        Some(s)
    }

    /// By looking at every placed pod.
    fn walk(snapshot: &Snapshot, pod: &PodInfo) -> FilterState {
        let has_own = !pod.required_affinity.is_empty() || !pod.required_anti_affinity.is_empty();
        let mut s = FilterState::empty();
        for node in snapshot.nodes() {
            if node.labels().is_none_or(|l| l.is_empty()) {
                continue;
            }
            if node.pods_with_required_anti_affinity == 0 && !has_own {
                continue;
            }
            for p in &node.pods {
                s.add_existing(snapshot, pod, p, node, 1);
            }
        }
        s
    }

    fn add_existing(
        &mut self,
        snapshot: &Snapshot,
        pod: &PodInfo,
        existing: &PodInfo,
        node: &NodeInfo,
        delta: i64,
    ) {
        let pod_ns_labels = snapshot.namespace_labels(&pod.namespace);
        for t in &existing.required_anti_affinity {
            if t.matches_pod(pod, pod_ns_labels) {
                bump(&mut self.existing_anti, node, &t.topology_key, delta);
            }
        }
        let ex_ns_labels = snapshot.namespace_labels(&existing.namespace);
        if matches_all(&pod.required_affinity, existing, ex_ns_labels) {
            for t in &pod.required_affinity {
                bump(&mut self.affinity, node, &t.topology_key, delta);
            }
        }
        for t in &pod.required_anti_affinity {
            if t.matches_pod(existing, ex_ns_labels) {
                bump(&mut self.anti, node, &t.topology_key, delta);
            }
        }
    }

    /// A pod appeared on (1) or left (-1) `node` (preemption's what-if).
    pub fn update(
        &mut self,
        snapshot: &Snapshot,
        pod: &PodInfo,
        existing: &PodInfo,
        node: &NodeInfo,
        delta: i64,
    ) {
        self.add_existing(snapshot, pod, existing, node, delta);
    }
}

pub fn filter(
    state: &FilterState,
    snapshot: &Snapshot,
    pod: &PodInfo,
    node: &NodeInfo,
) -> FilterResult {
    let labels = node.labels();
    // Existing pods' anti-affinity against this pod.
    if state.existing_anti.any_label(labels) {
        return Err(Status::unschedulable(
            Plugin::InterPodAffinity,
            ERR_REASON_EXISTING_ANTI_AFFINITY,
        ));
    }
    // The pod's required affinity.
    let mut pods_exist = true;
    for t in &pod.required_affinity {
        match node.label(&t.topology_key) {
            None => {
                return Err(Status::unresolvable(
                    Plugin::InterPodAffinity,
                    ERR_REASON_AFFINITY,
                ))
            }
            Some(v) => {
                if state.affinity.get(&t.topology_key, v) <= 0 {
                    pods_exist = false;
                }
            }
        }
    }
    if !pods_exist {
        // The first pod of a group with affinity to itself may go anywhere
        // its topology keys exist.
        let self_match = state.affinity.is_empty()
            && matches_all(
                &pod.required_affinity,
                pod,
                snapshot.namespace_labels(&pod.namespace),
            );
        if !self_match {
            return Err(Status::unresolvable(
                Plugin::InterPodAffinity,
                ERR_REASON_AFFINITY,
            ));
        }
    }
    // The pod's required anti-affinity.
    for t in &pod.required_anti_affinity {
        if let Some(v) = node.label(&t.topology_key) {
            if state.anti.get(&t.topology_key, v) > 0 {
                return Err(Status::unschedulable(
                    Plugin::InterPodAffinity,
                    ERR_REASON_ANTI_AFFINITY,
                ));
            }
        }
    }
    Ok(())
}

/// Per-cycle score state: topology key → value → summed weight.
#[derive(Debug, Clone, Default)]
pub struct ScoreState {
    scores: HashMap<String, HashMap<String, i64>>,
}

impl ScoreState {
    /// `None` when no preferred/required term on either side can matter.
    pub fn new(snapshot: &Snapshot, pod: &PodInfo) -> Option<ScoreState> {
        let has_preferred =
            !pod.preferred_affinity.is_empty() || !pod.preferred_anti_affinity.is_empty();
        if !has_preferred && !snapshot.has_pods_with_affinity() {
            return None;
        }
        let mut s = ScoreState::default();
        let pod_ns_labels = snapshot.namespace_labels(&pod.namespace);
        for node in snapshot.nodes() {
            if node.labels().is_none_or(|l| l.is_empty()) {
                continue;
            }
            if !has_preferred && node.pods_with_affinity == 0 {
                continue;
            }
            for ex in &node.pods {
                if !has_preferred && !ex.has_affinity() {
                    continue;
                }
                let ex_ns_labels = snapshot.namespace_labels(&ex.namespace);
                for w in &pod.preferred_affinity {
                    if w.term.matches_pod(ex, ex_ns_labels) {
                        s.add(node, &w.term.topology_key, w.weight);
                    }
                }
                for w in &pod.preferred_anti_affinity {
                    if w.term.matches_pod(ex, ex_ns_labels) {
                        s.add(node, &w.term.topology_key, -w.weight);
                    }
                }
                for t in &ex.required_affinity {
                    if t.matches_pod(pod, pod_ns_labels) {
                        s.add(node, &t.topology_key, HARD_POD_AFFINITY_WEIGHT);
                    }
                }
                for w in &ex.preferred_affinity {
                    if w.term.matches_pod(pod, pod_ns_labels) {
                        s.add(node, &w.term.topology_key, w.weight);
                    }
                }
                for w in &ex.preferred_anti_affinity {
                    if w.term.matches_pod(pod, pod_ns_labels) {
                        s.add(node, &w.term.topology_key, -w.weight);
                    }
                }
            }
        }
        if s.scores.is_empty() {
            return None;
        }
        Some(s)
    }

    fn add(&mut self, node: &NodeInfo, key: &str, w: i64) {
        if let Some(v) = node.label(key) {
            *self
                .scores
                .entry(key.to_string())
                .or_default()
                .entry(v.to_string())
                .or_insert(0) += w;
        }
    }
}

pub fn score(state: &ScoreState, node: &NodeInfo) -> i64 {
    state
        .scores
        .iter()
        .filter_map(|(k, vals)| node.label(k).and_then(|v| vals.get(v)))
        .sum()
}

/// Min-max scaling to 0..=100; all equal → 0.
pub fn normalize(scores: &mut [i64]) {
    let (Some(min), Some(max)) = (scores.iter().min().copied(), scores.iter().max().copied())
    else {
        return;
    };
    let diff = max - min;
    for s in scores.iter_mut() {
        *s = if diff > 0 {
            (100.0 * ((*s - min) as f64 / diff as f64)) as i64
        } else {
            0
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use serde_json::json;
    use std::sync::Arc;

    fn info(p: k8s_openapi::api::core::v1::Pod) -> PodInfo {
        PodInfo::new(Arc::new(p)).unwrap()
    }

    fn term(key: &str, app: &str) -> serde_json::Value {
        json!({"topologyKey": key, "labelSelector": {"matchLabels": {"app": app}}})
    }

    fn cluster(pods: Vec<k8s_openapi::api::core::v1::Pod>) -> Snapshot {
        snapshot(
            vec![
                node("a1").label("zone", "a").build(),
                node("a2").label("zone", "a").build(),
                node("b1").label("zone", "b").build(),
            ],
            pods,
        )
    }

    fn check(s: &Snapshot, p: &PodInfo, n: &str) -> FilterResult {
        match FilterState::new(s, p) {
            None => Ok(()),
            Some(st) => filter(&st, s, p, s.node(n).unwrap()),
        }
    }

    #[test]
    fn required_affinity_by_zone() {
        let s = cluster(vec![pod("db").label("app", "db").on("a1").build()]);
        let p = info(pod("web").spec("affinity", json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("zone", "db")]}})).build());
        assert!(check(&s, &p, "a1").is_ok());
        assert!(check(&s, &p, "a2").is_ok(), "same zone");
        assert_eq!(
            check(&s, &p, "b1").unwrap_err().reasons,
            vec![ERR_REASON_AFFINITY.to_string()]
        );
    }

    #[test]
    fn first_pod_of_a_self_affine_group_may_go_anywhere() {
        let s = cluster(vec![]);
        let p = info(pod("web").label("app", "web").spec("affinity", json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("zone", "web")]}})).build());
        assert!(check(&s, &p, "b1").is_ok());
        let other = info(pod("x").label("app", "x").spec("affinity", json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("zone", "web")]}})).build());
        assert!(check(&s, &other, "b1").is_err());
    }

    #[test]
    fn required_anti_affinity() {
        let s = cluster(vec![pod("w1").label("app", "web").on("a1").build()]);
        let p = info(pod("w2").label("app", "web").spec("affinity", json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("zone", "web")]}})).build());
        assert_eq!(
            check(&s, &p, "a2").unwrap_err().reasons,
            vec![ERR_REASON_ANTI_AFFINITY.to_string()]
        );
        assert!(check(&s, &p, "b1").is_ok());
        // Other namespace does not count.
        let q = info(pod("w3").ns("other").label("app", "web").spec("affinity", json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("zone", "web")]}})).build());
        assert!(check(&s, &q, "a2").is_ok());
    }

    #[test]
    fn existing_pods_anti_affinity_repels_incoming() {
        let s = cluster(vec![pod("loner")
            .label("app", "loner")
            .spec("affinity", json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("kubernetes.io/hostname", "web")]}}))
            .on("a1")
            .build()]);
        let p = info(pod("w").label("app", "web").build());
        assert_eq!(
            check(&s, &p, "a1").unwrap_err().reasons,
            vec![ERR_REASON_EXISTING_ANTI_AFFINITY.to_string()]
        );
        assert!(check(&s, &p, "a2").is_ok());
        let unrelated = info(pod("d").label("app", "db").build());
        assert!(check(&s, &unrelated, "a1").is_ok());
    }

    #[test]
    fn update_for_preemption_what_if() {
        let s = cluster(vec![pod("w1").label("app", "web").on("a1").build()]);
        let p = info(pod("w2").label("app", "web").spec("affinity", json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("zone", "web")]}})).build());
        let mut st = FilterState::new(&s, &p).unwrap();
        let a1 = s.node("a1").unwrap();
        assert!(filter(&st, &s, &p, a1).is_err());
        let victim = a1.pods[0].clone();
        st.update(&s, &p, &victim, a1, -1);
        assert!(filter(&st, &s, &p, a1).is_ok());
    }

    #[test]
    fn preferred_terms_score() {
        let s = cluster(vec![
            pod("db").label("app", "db").on("a1").build(),
            pod("cache").label("app", "cache").on("b1").build(),
        ]);
        let p = info(pod("web").spec("affinity", json!({
            "podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50, "podAffinityTerm": term("zone", "db")}]},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 20, "podAffinityTerm": term("zone", "cache")}]}
        })).build());
        let st = ScoreState::new(&s, &p).unwrap();
        let mut scores: Vec<i64> = ["a1", "a2", "b1"]
            .iter()
            .map(|n| score(&st, s.node(n).unwrap()))
            .collect();
        assert_eq!(scores, vec![50, 50, -20]);
        normalize(&mut scores);
        assert_eq!(scores, vec![100, 100, 0]);
    }

    #[test]
    fn existing_pods_preferences_count_too() {
        let s = cluster(vec![pod("fan")
            .label("app", "fan")
            .spec("affinity", json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 5, "podAffinityTerm": term("zone", "web")}]}}))
            .on("b1")
            .build()]);
        let p = info(pod("web").label("app", "web").build());
        let st = ScoreState::new(&s, &p).unwrap();
        assert_eq!(score(&st, s.node("b1").unwrap()), 5);
        assert_eq!(score(&st, s.node("a1").unwrap()), 0);
    }
}
