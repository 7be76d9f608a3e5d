//! The default profile's plugins, one per file, called in upstream's order.
//!
//! Each plugin is a set of free functions over the pod (`PodInfo`), a node
//! (`NodeInfo`) and, where it needs cluster-wide counts, its own per-cycle
//! state built once by `CycleState::new` (PreFilter). Dispatch is static:
//! `CycleState::filter` names every filter in order, `core` names every score.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, Toleration};

use crate::pod_info::{PodInfo, PodInfoError, SharedPod};
use crate::snapshot::{NodeInfo, Snapshot};
use crate::status::{FilterResult, Plugin};

pub mod balanced_allocation;
pub mod image_locality;
pub mod inter_pod_affinity;
pub mod node_affinity;
pub mod node_name;
pub mod node_ports;
pub mod node_ready;
pub mod node_resources_fit;
pub mod node_unschedulable;
pub mod pod_topology_spread;
pub mod taint_toleration;

/// The pod's tolerations.
pub fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[])
}

/// Upstream's `DefaultNormalizeScore`: scale to 0..=100 by the maximum;
/// `reverse` turns "more is worse" into a score.
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = 100);
        }
        return;
    }
    for s in scores.iter_mut() {
        let v = 100 * *s / max;
        *s = if reverse { 100 - v } else { v };
    }
}

/// Has the snapshot count, per topology domain, the placed pods that `pod`'s
/// spreading constraints and required (anti-)affinity terms select, so that
/// their pre-filters read counts instead of walking every placed pod. Call
/// before `Scheduler::schedule`; without it the pre-filters walk. A spec
/// that does not compile asks for nothing (the cycle reports it).
pub fn ensure_counted(snapshot: &mut Snapshot, pod: &Pod) {
    let mut wanted = pod_topology_spread::matchers(pod);
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    if affinity.is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some()) {
        if let Ok(info) = PodInfo::new(Arc::new(pod.clone())) {
            wanted.extend(inter_pod_affinity::matchers(&info));
        }
    }
    for (m, key) in wanted {
        snapshot.ensure_counted(m, &[&key]);
    }
}

/// The pod's spec cannot be evaluated (PreFilter failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PreFilterError {
    pub plugin: Plugin,
    pub message: String,
}

/// Everything computed once per pod per scheduling cycle.
#[derive(Debug, Clone)]
pub struct CycleState {
    pub pod: Arc<PodInfo>,
    pub tolerations: Vec<Toleration>,
    pub node_affinity: node_affinity::State,
    pub spread: Option<pod_topology_spread::FilterState>,
    pub affinity: Option<inter_pod_affinity::FilterState>,
}

impl CycleState {
    pub fn new(snapshot: &Snapshot, pod: impl SharedPod) -> Result<CycleState, PreFilterError> {
        let info = PodInfo::new(pod.shared()).map_err(|e| PreFilterError {
            plugin: match e {
                PodInfoError::Quantity(_) => Plugin::NodeResourcesFit,
                PodInfoError::Selector(_) => Plugin::InterPodAffinity,
            },
            message: e.to_string(),
        })?;
        Self::from_info(snapshot, Arc::new(info))
    }

    pub fn from_info(
        snapshot: &Snapshot,
        info: Arc<PodInfo>,
    ) -> Result<CycleState, PreFilterError> {
        let tolerations = tolerations(&info.pod).to_vec();
        let node_affinity = node_affinity::State::new(&info.pod).map_err(|e| PreFilterError {
            plugin: Plugin::NodeAffinity,
            message: format!("invalid selector: {e}"),
        })?;
        let spread =
            pod_topology_spread::FilterState::new(snapshot, &info, &node_affinity, &tolerations)
                .map_err(|e| PreFilterError {
                    plugin: Plugin::PodTopologySpread,
                    message: format!("invalid selector: {e}"),
                })?;
        let affinity = inter_pod_affinity::FilterState::new(snapshot, &info);
        Ok(CycleState {
            pod: info,
            tolerations,
            node_affinity,
            spread,
            affinity,
        })
    }

    /// Runs every filter in upstream's order; the first rejection wins.
    pub fn filter(&self, snapshot: &Snapshot, node: &NodeInfo) -> FilterResult {
        let pod = &self.pod;
        node_unschedulable::filter(&self.tolerations, node)?;
        node_name::filter(pod, node)?;
        taint_toleration::filter(&self.tolerations, node)?;
        node_ready::filter(&self.tolerations, node)?;
        node_affinity::filter(&self.node_affinity, node)?;
        node_ports::filter(pod, node)?;
        node_resources_fit::filter(pod, node)?;
        if let Some(s) = &self.spread {
            pod_topology_spread::filter(s, pod, node)?;
        }
        if let Some(s) = &self.affinity {
            inter_pod_affinity::filter(s, snapshot, pod, node)?;
        }
        Ok(())
    }

    /// Keeps cluster-wide counts right when a what-if adds `p` to `node`.
    pub fn add_pod(&mut self, snapshot: &Snapshot, p: &PodInfo, node: &NodeInfo) {
        self.update(snapshot, p, node, 1);
    }

    /// Keeps cluster-wide counts right when a what-if removes `p` from `node`.
    pub fn remove_pod(&mut self, snapshot: &Snapshot, p: &PodInfo, node: &NodeInfo) {
        self.update(snapshot, p, node, -1);
    }

    fn update(&mut self, snapshot: &Snapshot, p: &PodInfo, node: &NodeInfo, delta: i64) {
        if let Some(s) = &mut self.spread {
            s.update(p, node, delta);
        }
        let incoming = self.pod.clone();
        match &mut self.affinity {
            Some(s) => s.update(snapshot, &incoming, p, node, delta),
            None if delta > 0 && p.has_required_anti_affinity() => {
                // A what-if pod with anti-affinity may now repel the incoming one.
                let mut s = inter_pod_affinity::FilterState::empty();
                s.update(snapshot, &incoming, p, node, delta);
                self.affinity = Some(s);
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_normalize_forward_and_reverse() {
        let mut s = vec![0, 5, 10];
        default_normalize(&mut s, false);
        assert_eq!(s, vec![0, 50, 100]);
        let mut r = vec![0, 5, 10];
        default_normalize(&mut r, true);
        assert_eq!(r, vec![100, 50, 0]);
        let mut z = vec![0, 0];
        default_normalize(&mut z, false);
        assert_eq!(z, vec![0, 0]);
    }
}
