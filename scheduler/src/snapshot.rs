//! The cluster as one scheduling cycle sees it: every node with the pods
//! assigned to it and what they add up to.
//!
//! Per node everything a plugin needs is computed when a node or pod changes,
//! never per scheduled pod: requested resources (exact and non-zero), used
//! host ports, images present, readiness, and counts of pods with affinity.
//! Nodes are `Arc`s, so cloning a snapshot is cheap and changing one node
//! copies only that node. A pod the driver has just bound is *assumed*
//! (`assume`): it counts against its node at once, before the watch reports
//! it. Placed pods are also counted per topology domain (`domain_counts`)
//! for the spreading and inter-pod affinity pre-filters.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod, Taint};

use crate::domain_counts::{DomainIndex, Matcher};
use crate::pod_info::{pod_uid, HostPort, PodInfo, PodInfoError};
use crate::quantity::QuantityError;
use crate::resources::{node_allocatable, Resources};
use crate::selector::Labels;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("node {node}: {source}")]
    Node {
        node: String,
        #[source]
        source: QuantityError,
    },
    #[error("pod {pod}: {source}")]
    Pod {
        pod: String,
        #[source]
        source: PodInfoError,
    },
    #[error("pod {pod} is not assigned to a node")]
    NotAssigned { pod: String },
    #[error("node {node} is not in the snapshot")]
    NoSuchNode { node: String },
}

/// The node's Ready condition, as the node lifecycle controller reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Ready is False, or missing.
    NotReady,
    /// Ready is Unknown (the agent stopped reporting).
    Unreachable,
}

fn readiness(node: &Node) -> Readiness {
    let cond = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    match cond.map(|c| c.status.as_str()) {
        Some("True") => Readiness::Ready,
        Some("Unknown") => Readiness::Unreachable,
        _ => Readiness::NotReady,
    }
}

/// Image names get a `:latest` tag when they have none, as upstream.
pub fn normalized_image_name(name: &str) -> String {
    let last_colon = name.rfind(':');
    let last_slash = name.rfind('/');
    if last_colon.is_none() || last_colon <= last_slash {
        format!("{name}:latest")
    } else {
        name.to_string()
    }
}

/// One node and the pods on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub node: Arc<Node>,
    pub name: String,
    /// `spec.unschedulable` and `spec.taints`, copied out of the Node: every
    /// filter pass reads them for hundreds of nodes, and the `Node` itself
    /// is another allocation (a cache miss each) that the basic filters
    /// otherwise never touch.
    unschedulable: bool,
    taints: Vec<Taint>,
    pub pods: Vec<Arc<PodInfo>>,
    pub requested: Resources,
    pub non_zero_milli_cpu: i64,
    pub non_zero_memory: i64,
    pub allocatable: Resources,
    pub used_ports: Vec<HostPort>,
    /// Normalized image name → size in bytes.
    pub images: HashMap<String, i64>,
    pub readiness: Readiness,
    pub pods_with_affinity: usize,
    pub pods_with_required_anti_affinity: usize,
}

impl NodeInfo {
    pub fn new(node: Arc<Node>) -> Result<NodeInfo, SnapshotError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let allocatable = node_allocatable(&node).map_err(|source| SnapshotError::Node {
            node: name.clone(),
            source,
        })?;
        let mut images = HashMap::new();
        for img in node
            .status
            .as_ref()
            .and_then(|s| s.images.as_ref())
            .into_iter()
            .flatten()
        {
            for n in img.names.iter().flatten() {
                images.insert(normalized_image_name(n), img.size_bytes.unwrap_or(0));
            }
        }
        let spec = node.spec.as_ref();
        Ok(NodeInfo {
            readiness: readiness(&node),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            node,
            name,
            pods: Vec::new(),
            requested: Resources::default(),
            non_zero_milli_cpu: 0,
            non_zero_memory: 0,
            allocatable,
            used_ports: Vec::new(),
            images,
            pods_with_affinity: 0,
            pods_with_required_anti_affinity: 0,
        })
    }

    pub fn labels(&self) -> Option<&Labels> {
        self.node.metadata.labels.as_ref()
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels().and_then(|l| l.get(key)).map(String::as_str)
    }

    pub fn taints(&self) -> &[Taint] {
        &self.taints
    }

    pub fn unschedulable(&self) -> bool {
        self.unschedulable
    }

    pub fn add_pod(&mut self, p: Arc<PodInfo>) {
        self.requested.add(&p.requests.requests);
        self.non_zero_milli_cpu += p.requests.non_zero_milli_cpu;
        self.non_zero_memory += p.requests.non_zero_memory;
        self.used_ports.extend(p.host_ports.iter().cloned());
        if p.has_affinity() {
            self.pods_with_affinity += 1;
        }
        if p.has_required_anti_affinity() {
            self.pods_with_required_anti_affinity += 1;
        }
        self.pods.push(p);
    }

    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let i = self.pods.iter().position(|p| p.uid == uid)?;
        let p = self.pods.swap_remove(i);
        self.requested.sub(&p.requests.requests);
        self.non_zero_milli_cpu -= p.requests.non_zero_milli_cpu;
        self.non_zero_memory -= p.requests.non_zero_memory;
        for hp in &p.host_ports {
            if let Some(j) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(j);
            }
        }
        if p.has_affinity() {
            self.pods_with_affinity -= 1;
        }
        if p.has_required_anti_affinity() {
            self.pods_with_required_anti_affinity -= 1;
        }
        Some(p)
    }
}

/// Every node, sorted by name, plus cluster-wide aggregates.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    nodes: Vec<Arc<NodeInfo>>,
    /// Normalized image name → number of nodes that have it.
    image_nodes: Arc<HashMap<String, usize>>,
    /// Pod uid → node name, for every assigned or assumed pod.
    pod_nodes: HashMap<String, String>,
    /// Pods whose node is not (yet) in the snapshot.
    pending: HashMap<String, Vec<Arc<PodInfo>>>,
    namespace_labels: HashMap<String, Labels>,
    /// Node name → pods nominated to it (waiting for preemption victims to go).
    nominated: HashMap<String, Vec<Arc<PodInfo>>>,
    nominated_nodes: HashMap<String, String>,
    pods_with_affinity: usize,
    pods_with_required_anti_affinity: usize,
    /// Placed pods per topology domain; shared by clones until one changes.
    index: Arc<DomainIndex>,
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded") | Some("Failed")
    )
}

impl Snapshot {
    /// Builds a snapshot from lists; unassigned and finished pods are skipped.
    pub fn build(
        nodes: impl IntoIterator<Item = Node>,
        pods: impl IntoIterator<Item = Pod>,
    ) -> Result<Snapshot, SnapshotError> {
        let mut s = Snapshot::default();
        for n in nodes {
            s.upsert_node(n)?;
        }
        for p in pods {
            if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                s.upsert_pod(p)?;
            }
        }
        Ok(s)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn nodes(&self) -> &[Arc<NodeInfo>] {
        &self.nodes
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.nodes.binary_search_by(|n| n.name.as_str().cmp(name))
    }

    pub fn node(&self, name: &str) -> Option<&Arc<NodeInfo>> {
        self.position(name).ok().map(|i| &self.nodes[i])
    }

    /// How many nodes have the image (normalized name).
    pub fn image_num_nodes(&self, image: &str) -> usize {
        self.image_nodes.get(image).copied().unwrap_or(0)
    }

    pub fn namespace_labels(&self, ns: &str) -> Option<&Labels> {
        self.namespace_labels.get(ns)
    }

    /// Namespace labels, for affinity terms with a namespaceSelector.
    pub fn set_namespace_labels(&mut self, ns: &str, labels: Labels) {
        if self.namespace_labels.get(ns) == Some(&labels) {
            return;
        }
        self.namespace_labels.insert(ns.to_string(), labels);
        Arc::make_mut(&mut self.index).namespace_labels_changed();
    }

    /// The per-domain counts of placed pods.
    pub fn domain_index(&self) -> &DomainIndex {
        &self.index
    }

    /// Counts the pods `m` matches from now on, per node and per value of
    /// each of `keys` (a walk over every placed pod the first time).
    pub fn ensure_counted(&mut self, m: Matcher, keys: &[&str]) {
        Arc::make_mut(&mut self.index).ensure(m, keys, &self.nodes, &self.namespace_labels);
    }

    /// Any pod anywhere with (required anti-) affinity terms.
    pub fn has_pods_with_affinity(&self) -> bool {
        self.pods_with_affinity > 0
    }

    pub fn has_pods_with_required_anti_affinity(&self) -> bool {
        self.pods_with_required_anti_affinity > 0
    }

    fn count_images(&mut self, n: &NodeInfo, delta: isize) {
        let m = Arc::make_mut(&mut self.image_nodes);
        for img in n.images.keys() {
            let e = m.entry(img.clone()).or_insert(0);
            *e = e.saturating_add_signed(delta);
            if *e == 0 {
                m.remove(img);
            }
        }
    }

    /// Adds or replaces a node, keeping the pods already on it.
    pub fn upsert_node(&mut self, node: Node) -> Result<(), SnapshotError> {
        let mut info = NodeInfo::new(Arc::new(node))?;
        match self.position(&info.name) {
            Ok(i) => {
                let old = self.nodes[i].clone();
                self.count_images(&old, -1);
                for p in &old.pods {
                    info.add_pod(p.clone());
                }
                self.count_images(&info, 1);
                if old.labels() != info.labels() {
                    let index = Arc::make_mut(&mut self.index);
                    index.node_changed(&old, &self.namespace_labels, -1);
                    index.node_changed(&info, &self.namespace_labels, 1);
                }
                self.nodes[i] = Arc::new(info);
            }
            Err(i) => {
                for p in self.pending.remove(&info.name).unwrap_or_default() {
                    info.add_pod(p);
                }
                self.count_images(&info, 1);
                Arc::make_mut(&mut self.index).node_changed(&info, &self.namespace_labels, 1);
                self.nodes.insert(i, Arc::new(info));
            }
        }
        Ok(())
    }

    /// Removes a node; its pods wait in case the node comes back.
    pub fn remove_node(&mut self, name: &str) -> Option<Arc<Node>> {
        let i = self.position(name).ok()?;
        let info = self.nodes.remove(i);
        self.count_images(&info, -1);
        Arc::make_mut(&mut self.index).node_changed(&info, &self.namespace_labels, -1);
        if !info.pods.is_empty() {
            self.pending.insert(name.to_string(), info.pods.clone());
        }
        Some(info.node.clone())
    }

    fn add_pod_info(&mut self, node: &str, p: Arc<PodInfo>) {
        self.pod_nodes.insert(p.uid.clone(), node.to_string());
        if p.has_affinity() {
            self.pods_with_affinity += 1;
        }
        if p.has_required_anti_affinity() {
            self.pods_with_required_anti_affinity += 1;
        }
        match self.position(node) {
            Ok(i) => {
                Arc::make_mut(&mut self.index).pod_changed(
                    &self.nodes[i],
                    &p,
                    &self.namespace_labels,
                    1,
                );
                Arc::make_mut(&mut self.nodes[i]).add_pod(p);
            }
            Err(_) => self.pending.entry(node.to_string()).or_default().push(p),
        }
    }

    /// Adds or replaces an assigned pod (spec.nodeName set). A finished pod
    /// (Succeeded/Failed) no longer counts and is removed.
    pub fn upsert_pod(&mut self, pod: impl Into<Arc<Pod>>) -> Result<(), SnapshotError> {
        let pod: Arc<Pod> = pod.into();
        let uid = pod_uid(&pod);
        if is_terminal(&pod) {
            self.remove_pod(&uid);
            return Ok(());
        }
        let info = PodInfo::new(pod).map_err(|source| SnapshotError::Pod {
            pod: uid.clone(),
            source,
        })?;
        let Some(node) = info.node_name().map(str::to_string) else {
            return Err(SnapshotError::NotAssigned { pod: uid });
        };
        self.remove_pod(&uid);
        self.clear_nominated(&uid);
        self.add_pod_info(&node, Arc::new(info));
        Ok(())
    }

    /// Counts `pod` against `node` at once (the binding is in flight).
    pub fn assume(&mut self, pod: &Pod, node: &str) -> Result<(), SnapshotError> {
        if self.position(node).is_err() {
            return Err(SnapshotError::NoSuchNode {
                node: node.to_string(),
            });
        }
        let mut bound = pod.clone();
        bound.spec.get_or_insert_with(Default::default).node_name = Some(node.to_string());
        self.upsert_pod(bound)
    }

    /// Removes a pod (deleted, finished, or an assumption that failed to bind).
    pub fn remove_pod(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let node = self.pod_nodes.remove(uid)?;
        let removed = match self.position(&node) {
            Ok(i) => {
                let p = Arc::make_mut(&mut self.nodes[i]).remove_pod(uid);
                if let Some(p) = &p {
                    Arc::make_mut(&mut self.index).pod_changed(
                        &self.nodes[i],
                        p,
                        &self.namespace_labels,
                        -1,
                    );
                }
                p
            }
            Err(_) => {
                let list = self.pending.get_mut(&node)?;
                let j = list.iter().position(|p| p.uid == uid)?;
                let p = list.swap_remove(j);
                if list.is_empty() {
                    self.pending.remove(&node);
                }
                Some(p)
            }
        };
        if let Some(p) = &removed {
            if p.has_affinity() {
                self.pods_with_affinity -= 1;
            }
            if p.has_required_anti_affinity() {
                self.pods_with_required_anti_affinity -= 1;
            }
        }
        removed
    }

    /// Which node a pod is on (or assumed on).
    pub fn node_of(&self, uid: &str) -> Option<&str> {
        self.pod_nodes.get(uid).map(String::as_str)
    }

    /// Records that `pod` is nominated to `node` (status.nominatedNodeName):
    /// pods of equal or lower priority see its resources as taken there.
    pub fn set_nominated(&mut self, pod: &Pod, node: &str) -> Result<(), SnapshotError> {
        let info = PodInfo::new(Arc::new(pod.clone())).map_err(|source| SnapshotError::Pod {
            pod: pod_uid(pod),
            source,
        })?;
        self.clear_nominated(&info.uid);
        self.nominated_nodes
            .insert(info.uid.clone(), node.to_string());
        self.nominated
            .entry(node.to_string())
            .or_default()
            .push(Arc::new(info));
        Ok(())
    }

    pub fn clear_nominated(&mut self, uid: &str) {
        if let Some(node) = self.nominated_nodes.remove(uid) {
            if let Some(list) = self.nominated.get_mut(&node) {
                list.retain(|p| p.uid != uid);
                if list.is_empty() {
                    self.nominated.remove(&node);
                }
            }
        }
    }

    /// Pods nominated to `node`.
    pub fn nominated_on(&self, node: &str) -> &[Arc<PodInfo>] {
        self.nominated.get(node).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn has_nominated(&self) -> bool {
        !self.nominated.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use serde_json::json;

    #[test]
    fn aggregates_per_node() {
        let s = snapshot(
            vec![
                node("a").image("app:1", 100).build(),
                node("b").image("app", 5).build(),
            ],
            vec![
                pod("x").cpu("1").mem("1Gi").host_port(80).on("a").build(),
                pod("y").on("a").build(),
                pod("pending").build(),
                pod("done").cpu("3").on("b").build(),
            ],
        );
        let a = s.node("a").unwrap();
        assert_eq!(a.pods.len(), 2);
        assert_eq!(a.requested.milli_cpu, 1000);
        assert_eq!(a.non_zero_milli_cpu, 1100, "best-effort y counts 100m");
        assert_eq!(a.used_ports.len(), 1);
        assert_eq!(a.allocatable.milli_cpu, 4000);
        assert_eq!(a.allocatable.allowed_pod_number, 110);
        assert_eq!(s.image_num_nodes("app:1"), 1);
        assert_eq!(s.image_num_nodes("app:latest"), 1);
        assert_eq!(s.node("b").unwrap().pods.len(), 1);
    }

    #[test]
    fn finished_pods_do_not_count() {
        let mut done = pod("done").cpu("3").on("a").build();
        done.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
        let mut s = snapshot(vec![node("a").build()], vec![done.clone()]);
        assert!(s.node("a").unwrap().pods.is_empty());
        // A running pod that finishes is removed.
        s.upsert_pod(pod("done").cpu("3").on("a").build()).unwrap();
        assert_eq!(s.node("a").unwrap().requested.milli_cpu, 3000);
        s.upsert_pod(done).unwrap();
        assert_eq!(s.node("a").unwrap().requested.milli_cpu, 0);
    }

    #[test]
    fn pods_survive_node_churn() {
        let mut s = snapshot(vec![], vec![pod("early").cpu("1").on("a").build()]);
        assert!(s.node("a").is_none());
        s.upsert_node(node("a").build()).unwrap();
        assert_eq!(s.node("a").unwrap().requested.milli_cpu, 1000);
        s.upsert_node(node("a").cpu("8").build()).unwrap();
        let a = s.node("a").unwrap();
        assert_eq!(
            (a.allocatable.milli_cpu, a.requested.milli_cpu),
            (8000, 1000)
        );
        s.remove_node("a");
        assert!(s.is_empty());
        s.upsert_node(node("a").build()).unwrap();
        assert_eq!(s.node("a").unwrap().pods.len(), 1);
        assert!(s.remove_pod("uid-early").is_some());
        assert!(s.node("a").unwrap().pods.is_empty());
        assert!(s.remove_pod("uid-early").is_none());
    }

    #[test]
    fn updates_replace_and_move_pods() {
        let mut s = snapshot(vec![node("a").build(), node("b").build()], vec![]);
        s.upsert_pod(pod("p").cpu("1").on("a").build()).unwrap();
        s.upsert_pod(pod("p").cpu("2").on("a").build()).unwrap();
        assert_eq!(s.node("a").unwrap().requested.milli_cpu, 2000);
        s.upsert_pod(pod("p").cpu("2").on("b").build()).unwrap();
        assert_eq!(s.node("a").unwrap().requested.milli_cpu, 0);
        assert_eq!(s.node_of("uid-p"), Some("b"));
        assert!(matches!(
            s.upsert_pod(pod("q").build()),
            Err(SnapshotError::NotAssigned { .. })
        ));
        assert!(matches!(
            s.assume(&pod("q").build(), "zz"),
            Err(SnapshotError::NoSuchNode { .. })
        ));
    }

    #[test]
    fn clones_share_untouched_nodes() {
        let s = snapshot(vec![node("a").build(), node("b").build()], vec![]);
        let mut c = s.clone();
        c.assume(&pod("p").cpu("1").build(), "a").unwrap();
        assert!(Arc::ptr_eq(s.node("b").unwrap(), c.node("b").unwrap()));
        assert_eq!(s.node("a").unwrap().requested.milli_cpu, 0);
        assert_eq!(c.node("a").unwrap().requested.milli_cpu, 1000);
    }

    #[test]
    fn bad_quantities_are_errors() {
        let e = Snapshot::build(vec![node("a").cpu("4 cores").build()], vec![]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "node a: quantity \"4 cores\" is invalid: unknown suffix"
        );
        let e = Snapshot::build(
            vec![node("a").build()],
            vec![pod("p").mem("1GB").on("a").build()],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "pod uid-p: invalid resource request: quantity \"1GB\" is invalid: unknown suffix"
        );
    }

    #[test]
    fn readiness_from_conditions() {
        let s = snapshot(
            vec![
                node("a").build(),
                node("b").ready("False").build(),
                node("c").ready("Unknown").build(),
            ],
            vec![pod("t")
                .meta("deletionTimestamp", json!("2024-01-01T00:00:00Z"))
                .on("a")
                .build()],
        );
        assert_eq!(s.node("a").unwrap().readiness, Readiness::Ready);
        assert_eq!(s.node("b").unwrap().readiness, Readiness::NotReady);
        assert_eq!(s.node("c").unwrap().readiness, Readiness::Unreachable);
        assert!(s.node("a").unwrap().pods[0].terminating);
    }
}
