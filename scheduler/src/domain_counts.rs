//! Placed pods counted per topology domain, kept up to date in the snapshot,
//! so the PodTopologySpread and InterPodAffinity pre-filters cost
//! O(domains) a cycle instead of a walk over every placed pod.
//!
//! ```text
//!  Snapshot::ensure_indexes(pod) ─► register the pod's Matchers (one walk)
//!  pod added / removed ─────────────┐
//!  node added / removed / relabelled ┴► every Matcher's counts, the domains,
//!                                       existing pods' anti-affinity terms
//!  pre-filter ─► an Arc of the counts (no copy); what-ifs go in an overlay
//! ```
//!
//! What must stay true: every count equals what a walk over the snapshot's
//! nodes and their pods gives (the plugins' tests compare both on random
//! snapshots). A pod whose node is not in the snapshot counts nowhere, as in
//! the walk. Counts never hold zero entries, so an empty map means "none".
//! Matchers whose answer depends on namespace labels are dropped when any
//! namespace's labels change and rebuilt when next asked for; the least
//! recently used matcher goes when there are more than `MAX_MATCHERS`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::pod_info::{AffinityTerm, PodInfo};
use crate::selector::{LabelSelector, Labels};
use crate::snapshot::NodeInfo;

/// Label value → count (pods or nodes); no zero entries.
pub type ValueCounts = HashMap<String, i64>;

/// Matchers kept at once; each costs a selector match per pod change.
pub const MAX_MATCHERS: usize = 256;

/// Which placed pods a set of counts is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Matcher {
    /// PodTopologySpread: pods of `namespace`, not terminating, that the
    /// constraint's selector matches.
    Spread {
        namespace: String,
        selector: LabelSelector,
    },
    /// InterPodAffinity: pods every term matches (a required anti-affinity
    /// term alone, or all of a pod's required affinity terms).
    AllTerms(Vec<AffinityTerm>),
}

impl Matcher {
    pub fn matches(&self, p: &PodInfo, ns_labels: &HashMap<String, Labels>) -> bool {
        match self {
            Matcher::Spread {
                namespace,
                selector,
            } => !p.terminating && p.namespace == *namespace && selector.matches(p.labels()),
            Matcher::AllTerms(terms) => {
                !terms.is_empty()
                    && terms
                        .iter()
                        .all(|t| t.matches_pod(p, ns_labels.get(&p.namespace)))
            }
        }
    }

    fn uses_namespace_labels(&self) -> bool {
        match self {
            Matcher::Spread { .. } => false,
            Matcher::AllTerms(terms) => terms.iter().any(|t| t.namespace_selector.is_some()),
        }
    }
}

fn bump(m: &mut ValueCounts, key: &str, delta: i64) {
    if delta == 0 {
        return;
    }
    match m.get_mut(key) {
        Some(n) => {
            *n += delta;
            if *n == 0 {
                m.remove(key);
            }
        }
        None => {
            m.insert(key.to_string(), delta);
        }
    }
}

/// One matcher's counts: per node, and per value of each label key asked
/// for (over the nodes that carry the key).
#[derive(Debug, Clone, Default)]
struct Counted {
    per_node: ValueCounts,
    per_key: HashMap<String, Arc<ValueCounts>>,
    last_used: u64,
}

impl Counted {
    fn bump(&mut self, node: &NodeInfo, delta: i64) {
        bump(&mut self.per_node, &node.name, delta);
        for (key, counts) in &mut self.per_key {
            if let Some(v) = node.label(key) {
                bump(Arc::make_mut(counts), v, delta);
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DomainIndex {
    /// Label key → value → nodes carrying it.
    domains: HashMap<String, Arc<ValueCounts>>,
    /// Label key → nodes carrying it.
    key_nodes: ValueCounts,
    /// Every required anti-affinity term of a placed pod → its owners per
    /// value of the term's topology key.
    anti_terms: HashMap<AffinityTerm, Arc<ValueCounts>>,
    matchers: HashMap<Matcher, Counted>,
    tick: u64,
}

impl DomainIndex {
    /// `p` was added to (delta 1) or removed from (-1) `node`, a node of the
    /// snapshot.
    pub fn pod_changed(
        &mut self,
        node: &NodeInfo,
        p: &PodInfo,
        ns_labels: &HashMap<String, Labels>,
        delta: i64,
    ) {
        for t in &p.required_anti_affinity {
            if let Some(v) = node.label(&t.topology_key) {
                let counts = self.anti_terms.entry(t.clone()).or_default();
                bump(Arc::make_mut(counts), v, delta);
                if counts.is_empty() {
                    self.anti_terms.remove(t);
                }
            }
        }
        for (m, c) in &mut self.matchers {
            if m.matches(p, ns_labels) {
                c.bump(node, delta);
            }
        }
    }

    /// `node` with its pods joined (1) or left (-1) the snapshot.
    pub fn node_changed(
        &mut self,
        node: &NodeInfo,
        ns_labels: &HashMap<String, Labels>,
        delta: i64,
    ) {
        for (k, v) in node.labels().into_iter().flatten() {
            bump(&mut self.key_nodes, k, delta);
            let values = self.domains.entry(k.clone()).or_default();
            bump(Arc::make_mut(values), v, delta);
            if values.is_empty() {
                self.domains.remove(k);
            }
        }
        for p in &node.pods {
            self.pod_changed(node, p, ns_labels, delta);
        }
    }

    /// Some namespace's labels changed: counts that depended on them go.
    pub fn namespace_labels_changed(&mut self) {
        self.matchers.retain(|m, _| !m.uses_namespace_labels());
    }

    /// Counts `m` from now on, per node and per value of each of `keys`
    /// (one walk over `nodes` the first time).
    pub fn ensure(
        &mut self,
        m: Matcher,
        keys: &[&str],
        nodes: &[Arc<NodeInfo>],
        ns_labels: &HashMap<String, Labels>,
    ) {
        self.tick += 1;
        if !self.matchers.contains_key(&m) {
            if self.matchers.len() >= MAX_MATCHERS {
                let oldest = self
                    .matchers
                    .iter()
                    .min_by_key(|(_, c)| c.last_used)
                    .map(|(m, _)| m.clone());
                if let Some(o) = oldest {
                    self.matchers.remove(&o);
                }
            }
            let mut c = Counted::default();
            for node in nodes {
                let n = node.pods.iter().filter(|p| m.matches(p, ns_labels)).count() as i64;
                bump(&mut c.per_node, &node.name, n);
            }
            self.matchers.insert(m.clone(), c);
        }
        let Some(c) = self.matchers.get_mut(&m) else {
            return;
        };
        c.last_used = self.tick;
        for key in keys {
            if c.per_key.contains_key(*key) {
                continue;
            }
            let mut counts = ValueCounts::new();
            for node in nodes {
                if let (Some(n), Some(v)) = (c.per_node.get(&node.name), node.label(key)) {
                    bump(&mut counts, v, *n);
                }
            }
            c.per_key.insert(key.to_string(), Arc::new(counts));
        }
    }

    /// Pods `m` matches per value of `key`, if counted.
    pub fn counts(&self, m: &Matcher, key: &str) -> Option<&Arc<ValueCounts>> {
        self.matchers.get(m)?.per_key.get(key)
    }

    /// Pods `m` matches on each node, if counted.
    pub fn node_counts(&self, m: &Matcher) -> Option<&ValueCounts> {
        self.matchers.get(m).map(|c| &c.per_node)
    }

    /// Nodes per value of label `key`.
    pub fn domains(&self, key: &str) -> Option<&Arc<ValueCounts>> {
        self.domains.get(key)
    }

    /// Nodes carrying label `key`.
    pub fn nodes_with_key(&self, key: &str) -> usize {
        self.key_nodes
            .get(key)
            .map_or(0, |n| usize::try_from(*n).unwrap_or(0))
    }

    /// Placed pods' required anti-affinity terms, with their owners per value
    /// of each term's topology key.
    pub fn anti_terms(&self) -> impl Iterator<Item = (&AffinityTerm, &Arc<ValueCounts>)> {
        self.anti_terms.iter()
    }

    pub fn matchers(&self) -> usize {
        self.matchers.len()
    }
}

/// Counts per (topology key, value) read through shared maps, with what-if
/// changes (preemption, nominated pods) in an overlay. What the pre-filters
/// hold instead of a copy.
#[derive(Debug, Clone, Default)]
pub struct PairCounts {
    shared: Vec<(String, Arc<ValueCounts>)>,
    delta: HashMap<(String, String), i64>,
}

impl PairCounts {
    /// Adds `counts` (per value of `key`) to what this reads.
    pub fn add_shared(&mut self, key: &str, counts: Arc<ValueCounts>) {
        if !counts.is_empty() {
            self.shared.push((key.to_string(), counts));
        }
    }

    pub fn bump(&mut self, key: &str, value: &str, delta: i64) {
        let pair = (key.to_string(), value.to_string());
        let e = self.delta.entry(pair.clone()).or_insert(0);
        *e += delta;
        if *e == 0 {
            self.delta.remove(&pair);
        }
    }

    pub fn get(&self, key: &str, value: &str) -> i64 {
        let shared: i64 = self
            .shared
            .iter()
            .filter(|(k, _)| k == key)
            .filter_map(|(_, m)| m.get(value))
            .sum();
        let delta = if self.delta.is_empty() {
            0
        } else {
            self.delta
                .get(&(key.to_string(), value.to_string()))
                .copied()
                .unwrap_or(0)
        };
        shared + delta
    }

    /// No pair has a positive count.
    pub fn is_empty(&self) -> bool {
        if self.delta.is_empty() {
            return self.shared.iter().all(|(_, m)| m.values().all(|n| *n <= 0));
        }
        let shared = self
            .shared
            .iter()
            .flat_map(|(k, m)| m.keys().map(move |v| (k.as_str(), v.as_str())));
        let delta = self.delta.keys().map(|(k, v)| (k.as_str(), v.as_str()));
        !shared.chain(delta).any(|(k, v)| self.get(k, v) > 0)
    }

    /// Whether any of the node's labels is a pair with a positive count.
    pub fn any_label(&self, labels: Option<&Labels>) -> bool {
        let Some(labels) = labels else {
            return false;
        };
        let keys = self
            .shared
            .iter()
            .map(|(k, _)| k)
            .chain(self.delta.keys().map(|(k, _)| k));
        for k in keys {
            if labels.get(k).is_some_and(|v| self.get(k, v) > 0) {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    //! The counts against a walk over the snapshot, and the pre-filters
    //! reading them against the pre-filters walking, on random snapshots
    //! changed at random after the counts were registered.

    use super::*;
    use crate::plugins::{ensure_counted, CycleState};
    use crate::snapshot::Snapshot;
    use crate::testutil::*;
    use k8s_openapi::api::core::v1::{Node, Pod};
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use serde_json::{json, Value};

    const ZONES: [&str; 3] = ["a", "b", "c"];
    const APPS: [&str; 3] = ["web", "db", "cache"];
    const NAMESPACES: [&str; 2] = ["default", "other"];

    fn random_node(rng: &mut StdRng, name: &str) -> Node {
        let mut n = node(name);
        if rng.gen_bool(0.85) {
            n = n.label("zone", ZONES.choose(rng).unwrap());
        }
        if rng.gen_bool(0.3) {
            n = n.label("rack", &format!("r{}", rng.gen_range(0..2)));
        }
        if rng.gen_bool(0.2) {
            n = n.taint("dedicated", "x", "NoSchedule");
        }
        if rng.gen_bool(0.3) {
            n = n.label("pool", "x");
        }
        n.build()
    }

    fn selector(rng: &mut StdRng) -> Value {
        match rng.gen_range(0..4) {
            0 => json!({}),
            1 => {
                json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "db"]}]})
            }
            _ => json!({"matchLabels": {"app": APPS.choose(rng).unwrap()}}),
        }
    }

    fn term(rng: &mut StdRng) -> Value {
        let key = ["zone", "kubernetes.io/hostname", "rack"]
            .choose(rng)
            .unwrap();
        let mut t = json!({"topologyKey": key, "labelSelector": selector(rng)});
        match rng.gen_range(0..4) {
            0 => t["namespaceSelector"] = json!({"matchLabels": {"team": "blue"}}),
            1 => t["namespaces"] = json!(["other"]),
            _ => {}
        }
        t
    }

    fn affinity(rng: &mut StdRng) -> Option<Value> {
        let mut a = json!({});
        if rng.gen_bool(0.3) {
            let terms: Vec<Value> = (0..rng.gen_range(1..3)).map(|_| term(rng)).collect();
            a["podAffinity"] = json!({"requiredDuringSchedulingIgnoredDuringExecution": terms});
        }
        if rng.gen_bool(0.4) {
            let terms: Vec<Value> = (0..rng.gen_range(1..3)).map(|_| term(rng)).collect();
            a["podAntiAffinity"] = json!({"requiredDuringSchedulingIgnoredDuringExecution": terms});
        }
        (a != json!({})).then_some(a)
    }

    fn random_pod(rng: &mut StdRng, name: &str, on: Option<&str>) -> Pod {
        let mut p = pod(name).ns(NAMESPACES.choose(rng).unwrap());
        if rng.gen_bool(0.9) {
            p = p.label("app", APPS.choose(rng).unwrap());
        }
        if let Some(a) = affinity(rng) {
            p = p.spec("affinity", a);
        }
        if rng.gen_bool(0.1) {
            p = p.meta("deletionTimestamp", json!("2024-01-01T00:00:00Z"));
        }
        if let Some(n) = on {
            p = p.on(n);
        }
        p.build()
    }

    /// An incoming pod with spreading constraints and affinity terms.
    fn incoming(rng: &mut StdRng, i: usize) -> Pod {
        let mut p = pod(&format!("in{i}"))
            .ns(NAMESPACES.choose(rng).unwrap())
            .label("app", APPS.choose(rng).unwrap());
        let mut cs = Vec::new();
        for _ in 0..rng.gen_range(0..3) {
            let mut c = json!({
                "maxSkew": rng.gen_range(1..3),
                "topologyKey": (*["zone", "kubernetes.io/hostname", "rack"].choose(rng).unwrap()),
                "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": selector(rng),
            });
            if rng.gen_bool(0.3) {
                c["minDomains"] = json!(rng.gen_range(1..5));
            }
            if rng.gen_bool(0.2) {
                c["nodeAffinityPolicy"] = json!("Ignore");
            }
            if rng.gen_bool(0.2) {
                c["nodeTaintsPolicy"] = json!("Honor");
            }
            cs.push(c);
        }
        if !cs.is_empty() {
            p = p.spec("topologySpreadConstraints", json!(cs));
        }
        if rng.gen_bool(0.2) {
            p = p.node_selector("pool", "x");
        }
        if let Some(a) = affinity(rng) {
            p = p.spec("affinity", a);
        }
        p.build()
    }

    /// Every node's verdict, and what preemption's what-if (the first pod
    /// of the first node gone) makes of it.
    fn verdicts(s: &Snapshot, p: &Pod) -> Vec<String> {
        let state = match CycleState::new(s, p) {
            Ok(st) => st,
            Err(e) => return vec![e.to_string()],
        };
        let mut out: Vec<String> = s
            .nodes()
            .iter()
            .map(|n| format!("{:?}", state.filter(s, n)))
            .collect();
        if let Some(n) = s.nodes().iter().find(|n| !n.pods.is_empty()) {
            let mut st = state.clone();
            let mut n2 = (**n).clone();
            let victim = n2.pods[0].clone();
            n2.remove_pod(&victim.uid);
            st.remove_pod(s, &victim, &n2);
            out.extend(s.nodes().iter().map(|m| {
                let m = if m.name == n2.name { &n2 } else { m.as_ref() };
                format!("{:?}", st.filter(s, m))
            }));
        }
        out
    }

    /// What a walk over the snapshot counts for `m` per value of `key`.
    fn walked(s: &Snapshot, m: &Matcher, key: &str) -> ValueCounts {
        let ns = HashMap::from([(
            "other".to_string(),
            s.namespace_labels("other").cloned().unwrap_or_default(),
        )]);
        let mut out = ValueCounts::new();
        for n in s.nodes() {
            let c = n.pods.iter().filter(|p| m.matches(p, &ns)).count() as i64;
            if let Some(v) = n.label(key) {
                bump(&mut out, v, c);
            }
        }
        out
    }

    fn mutate(rng: &mut StdRng, a: &mut Snapshot, b: &mut Snapshot, serial: &mut usize) {
        let names: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
        match rng.gen_range(0..6) {
            0 | 1 => {
                *serial += 1;
                let on = names.choose(rng).unwrap().clone();
                let p = random_pod(rng, &format!("m{serial}"), Some(&on));
                a.upsert_pod(p.clone()).unwrap();
                b.upsert_pod(p).unwrap();
            }
            2 => {
                let uids: Vec<String> = a
                    .nodes()
                    .iter()
                    .flat_map(|n| n.pods.iter().map(|p| p.uid.clone()))
                    .collect();
                if let Some(uid) = uids.choose(rng) {
                    a.remove_pod(uid);
                    b.remove_pod(uid);
                }
            }
            3 => {
                let name = names.choose(rng).unwrap().clone();
                let n = random_node(rng, &name);
                a.upsert_node(n.clone()).unwrap();
                b.upsert_node(n).unwrap();
            }
            4 => {
                let name = names.choose(rng).unwrap();
                a.remove_node(name);
                b.remove_node(name);
            }
            _ => {
                let team = ["blue", "red"].choose(rng).unwrap();
                let labels = crate::selector::Labels::from([("team".into(), team.to_string())]);
                a.set_namespace_labels("other", labels.clone());
                b.set_namespace_labels("other", labels);
            }
        }
    }

    #[test]
    fn counted_filters_agree_with_walking_ones() {
        let mut fast_paths = 0;
        for seed in 0..200u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let nodes: Vec<Node> = (0..rng.gen_range(1..8))
                .map(|i| random_node(&mut rng, &format!("n{i}")))
                .collect();
            let pods: Vec<Pod> = (0..rng.gen_range(0..30))
                .map(|i| {
                    let on = format!("n{}", rng.gen_range(0..9));
                    random_pod(&mut rng, &format!("p{i}"), Some(&on))
                })
                .collect();
            let mut walk = snapshot(nodes.clone(), pods.clone());
            let mut counted = snapshot(nodes, pods);
            let team = crate::selector::Labels::from([("team".into(), "blue".into())]);
            walk.set_namespace_labels("other", team.clone());
            counted.set_namespace_labels("other", team);
            let incoming: Vec<Pod> = (0..4).map(|i| incoming(&mut rng, i)).collect();
            for p in &incoming {
                ensure_counted(&mut counted, p);
            }
            let mut serial = 0;
            for round in 0..6 {
                for p in &incoming {
                    ensure_counted(&mut counted, p);
                    assert_eq!(
                        verdicts(&walk, p),
                        verdicts(&counted, p),
                        "seed {seed} round {round} pod {:?}",
                        p.spec
                    );
                    let info = PodInfo::new(Arc::new(p.clone())).unwrap();
                    let spread = crate::plugins::pod_topology_spread::matchers(p);
                    let terms = crate::plugins::inter_pod_affinity::matchers(&info);
                    for (m, key) in spread.iter().chain(&terms) {
                        let got = counted.domain_index().counts(m, key).unwrap();
                        assert_eq!(**got, walked(&counted, m, key), "seed {seed} {m:?} {key}");
                        fast_paths += usize::from(!got.is_empty());
                    }
                }
                for _ in 0..rng.gen_range(1..6) {
                    mutate(&mut rng, &mut walk, &mut counted, &mut serial);
                }
            }
        }
        assert!(fast_paths > 100, "counts were mostly empty: {fast_paths}");
    }

    #[test]
    fn existing_anti_terms_and_domains_follow_changes() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut s = snapshot(vec![], vec![]);
        let mut shadow = snapshot(vec![], vec![]);
        let mut serial = 0;
        for _ in 0..400 {
            mutate(&mut rng, &mut shadow, &mut s, &mut serial);
            let mut want: HashMap<AffinityTerm, ValueCounts> = HashMap::new();
            let mut domains: HashMap<String, ValueCounts> = HashMap::new();
            for n in s.nodes() {
                for (k, v) in n.labels().into_iter().flatten() {
                    bump(domains.entry(k.clone()).or_default(), v, 1);
                }
                for p in &n.pods {
                    for t in &p.required_anti_affinity {
                        if let Some(v) = n.label(&t.topology_key) {
                            bump(want.entry(t.clone()).or_default(), v, 1);
                        }
                    }
                }
            }
            let got: HashMap<AffinityTerm, ValueCounts> = s
                .domain_index()
                .anti_terms()
                .map(|(t, c)| (t.clone(), (**c).clone()))
                .collect();
            assert_eq!(got, want);
            for (k, values) in &domains {
                assert_eq!(**s.domain_index().domains(k).unwrap(), *values);
                let nodes: i64 = values.values().sum();
                assert_eq!(s.domain_index().nodes_with_key(k) as i64, nodes);
            }
        }
    }

    #[test]
    fn least_recently_used_matcher_goes_first() {
        let mut s = snapshot(vec![node("a").build()], vec![]);
        let m = |i: usize| Matcher::Spread {
            namespace: "default".into(),
            selector: {
                let mut sel = LabelSelector::everything();
                sel.require_equal("app", &i.to_string());
                sel
            },
        };
        for i in 0..MAX_MATCHERS {
            s.ensure_counted(m(i), &["zone"]);
        }
        s.ensure_counted(m(0), &["zone"]);
        s.ensure_counted(m(MAX_MATCHERS), &["zone"]);
        let index = s.domain_index();
        assert_eq!(index.matchers(), MAX_MATCHERS);
        assert!(index.node_counts(&m(0)).is_some(), "used again: kept");
        assert!(index.node_counts(&m(1)).is_none(), "oldest: gone");
    }
}
