//! A pod with everything the plugins ask of it parsed once: requests, host
//! ports, compiled affinity terms, priority. Built for the pod being scheduled
//! and for every pod already on a node.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, WeightedPodAffinityTerm};

use crate::quantity::QuantityError;
use crate::resources::{pod_requests, PodRequests};
use crate::selector::{LabelSelector, Labels, SelectorError};

/// Why a pod's spec cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodInfoError {
    #[error("invalid resource request: {0}")]
    Quantity(#[from] QuantityError),
    #[error("invalid selector: {0}")]
    Selector(#[from] SelectorError),
}

pub const DEFAULT_SCHEDULER_NAME: &str = "default-scheduler";

/// A pod the scheduler can hold on to: an `Arc<Pod>` is shared as it is (the
/// informer's copy), a `&Pod` is copied once.
pub trait SharedPod {
    fn shared(self) -> Arc<Pod>;
}

impl SharedPod for &Pod {
    fn shared(self) -> Arc<Pod> {
        Arc::new(self.clone())
    }
}

impl SharedPod for &Arc<Pod> {
    fn shared(self) -> Arc<Pod> {
        self.clone()
    }
}

/// The identity of a pod: its uid, or `namespace/name` for objects that have
/// none yet (hand-built test pods).
pub fn pod_uid(pod: &Pod) -> String {
    match &pod.metadata.uid {
        Some(uid) if !uid.is_empty() => uid.clone(),
        _ => format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or("default"),
            pod.metadata.name.as_deref().unwrap_or("")
        ),
    }
}

pub fn pod_priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// A host port a pod's container claims. Empty ip means 0.0.0.0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub ip: String,
    pub protocol: String,
    pub port: i32,
}

impl HostPort {
    /// Upstream's conflict rule: same protocol and port, and either address is
    /// the wildcard or they are equal.
    pub fn conflicts(&self, o: &HostPort) -> bool {
        self.port == o.port
            && self.protocol == o.protocol
            && (self.ip == "0.0.0.0" || o.ip == "0.0.0.0" || self.ip == o.ip)
    }
}

fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    spec.containers
        .iter()
        .chain(sidecars)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|p| *p > 0)?;
            Some(HostPort {
                ip: match p.host_ip.as_deref() {
                    None | Some("") => "0.0.0.0".to_string(),
                    Some(ip) => ip.to_string(),
                },
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_string()),
                port,
            })
        })
        .collect()
}

/// A compiled `PodAffinityTerm` (namespaces resolved against the owning pod).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AffinityTerm {
    pub selector: LabelSelector,
    pub namespaces: Vec<String>,
    pub namespace_selector: Option<LabelSelector>,
    pub topology_key: String,
}

impl AffinityTerm {
    fn compile(
        t: &PodAffinityTerm,
        owner: &Pod,
        path: &str,
    ) -> Result<AffinityTerm, SelectorError> {
        let mut selector =
            LabelSelector::compile(t.label_selector.as_ref(), &format!("{path}.labelSelector"))?;
        let owner_labels = owner.metadata.labels.as_ref();
        // matchLabelKeys / mismatchLabelKeys narrow the selector with the
        // owner's own label values (the API server merges them on create;
        // doing it again is harmless).
        if t.label_selector.is_some() {
            for k in t.match_label_keys.iter().flatten() {
                if let Some(v) = owner_labels.and_then(|l| l.get(k)) {
                    selector.require_equal(k, v);
                }
            }
            for k in t.mismatch_label_keys.iter().flatten() {
                if let Some(v) = owner_labels.and_then(|l| l.get(k)) {
                    selector.require_not_equal(k, v);
                }
            }
        }
        let namespace_selector = match &t.namespace_selector {
            None => None,
            Some(s) => Some(LabelSelector::compile(
                Some(s),
                &format!("{path}.namespaceSelector"),
            )?),
        };
        let mut namespaces = t.namespaces.clone().unwrap_or_default();
        if namespaces.is_empty() && namespace_selector.is_none() {
            namespaces.push(
                owner
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            );
        }
        Ok(AffinityTerm {
            selector,
            namespaces,
            namespace_selector,
            topology_key: t.topology_key.clone(),
        })
    }

    /// Whether `pod` (labels, namespace, namespace labels) is selected.
    pub fn matches(
        &self,
        labels: Option<&Labels>,
        namespace: &str,
        ns_labels: Option<&Labels>,
    ) -> bool {
        let ns_ok = self.namespaces.iter().any(|n| n == namespace)
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|s| s.matches(ns_labels));
        ns_ok && self.selector.matches(labels)
    }

    pub fn matches_pod(&self, p: &PodInfo, ns_labels: Option<&Labels>) -> bool {
        self.matches(p.labels(), &p.namespace, ns_labels)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedTerm {
    pub weight: i64,
    pub term: AffinityTerm,
}

/// A pod plus what the scheduler derives from it.
#[derive(Debug, Clone)]
pub struct PodInfo {
    pub pod: Arc<Pod>,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub priority: i32,
    pub requests: PodRequests,
    pub host_ports: Vec<HostPort>,
    pub required_affinity: Vec<AffinityTerm>,
    pub required_anti_affinity: Vec<AffinityTerm>,
    pub preferred_affinity: Vec<WeightedTerm>,
    pub preferred_anti_affinity: Vec<WeightedTerm>,
    /// deletionTimestamp is set: spreading does not count it.
    pub terminating: bool,
}

fn compile_terms(
    terms: Option<&Vec<PodAffinityTerm>>,
    owner: &Pod,
    path: &str,
) -> Result<Vec<AffinityTerm>, SelectorError> {
    terms
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, t)| AffinityTerm::compile(t, owner, &format!("{path}[{i}]")))
        .collect()
}

fn compile_weighted(
    terms: Option<&Vec<WeightedPodAffinityTerm>>,
    owner: &Pod,
    path: &str,
) -> Result<Vec<WeightedTerm>, SelectorError> {
    terms
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, t)| {
            Ok(WeightedTerm {
                weight: i64::from(t.weight),
                term: AffinityTerm::compile(
                    &t.pod_affinity_term,
                    owner,
                    &format!("{path}[{i}].podAffinityTerm"),
                )?,
            })
        })
        .collect()
}

impl PodInfo {
    pub fn new(pod: Arc<Pod>) -> Result<PodInfo, PodInfoError> {
        let requests = pod_requests(&pod)?;
        let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let pa = affinity.and_then(|a| a.pod_affinity.as_ref());
        let paa = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        const A: &str = "spec.affinity.podAffinity";
        const AA: &str = "spec.affinity.podAntiAffinity";
        const REQ: &str = "requiredDuringSchedulingIgnoredDuringExecution";
        const PREF: &str = "preferredDuringSchedulingIgnoredDuringExecution";
        let required_affinity = compile_terms(
            pa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
            &pod,
            &format!("{A}.{REQ}"),
        )?;
        let required_anti_affinity = compile_terms(
            paa.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
            &pod,
            &format!("{AA}.{REQ}"),
        )?;
        let preferred_affinity = compile_weighted(
            pa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
            &pod,
            &format!("{A}.{PREF}"),
        )?;
        let preferred_anti_affinity = compile_weighted(
            paa.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            }),
            &pod,
            &format!("{AA}.{PREF}"),
        )?;
        Ok(PodInfo {
            uid: pod_uid(&pod),
            namespace: pod
                .metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            name: pod.metadata.name.clone().unwrap_or_default(),
            priority: pod_priority(&pod),
            requests,
            host_ports: host_ports(&pod),
            required_affinity,
            required_anti_affinity,
            preferred_affinity,
            preferred_anti_affinity,
            terminating: pod.metadata.deletion_timestamp.is_some(),
            pod,
        })
    }

    pub fn labels(&self) -> Option<&Labels> {
        self.pod.metadata.labels.as_ref()
    }

    pub fn node_name(&self) -> Option<&str> {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
    }

    pub fn has_affinity(&self) -> bool {
        !self.required_affinity.is_empty()
            || !self.required_anti_affinity.is_empty()
            || !self.preferred_affinity.is_empty()
            || !self.preferred_anti_affinity.is_empty()
    }

    pub fn has_required_anti_affinity(&self) -> bool {
        !self.required_anti_affinity.is_empty()
    }
}
