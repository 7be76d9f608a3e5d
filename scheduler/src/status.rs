//! What a filter says about a node, and what a failed scheduling attempt
//! says about the cluster (`FitError`, kube-scheduler's message format).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The plugins of the default profile this crate implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Plugin {
    NodeUnschedulable,
    NodeName,
    TaintToleration,
    NodeReady,
    NodeAffinity,
    NodePorts,
    NodeResourcesFit,
    PodTopologySpread,
    InterPodAffinity,
    BalancedAllocation,
    ImageLocality,
}

impl Plugin {
    pub fn name(self) -> &'static str {
        match self {
            Plugin::NodeUnschedulable => "NodeUnschedulable",
            Plugin::NodeName => "NodeName",
            Plugin::TaintToleration => "TaintToleration",
            Plugin::NodeReady => "NodeReady",
            Plugin::NodeAffinity => "NodeAffinity",
            Plugin::NodePorts => "NodePorts",
            Plugin::NodeResourcesFit => "NodeResourcesFit",
            Plugin::PodTopologySpread => "PodTopologySpread",
            Plugin::InterPodAffinity => "InterPodAffinity",
            Plugin::BalancedAllocation => "NodeResourcesBalancedAllocation",
            Plugin::ImageLocality => "ImageLocality",
        }
    }
}

impl fmt::Display for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Could change by preempting pods on the node.
    Unschedulable,
    /// Preemption would not help on this node.
    UnschedulableAndUnresolvable,
}

/// A filter's rejection of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub code: Code,
    pub plugin: Plugin,
    pub reasons: Vec<String>,
}

impl Status {
    pub fn unschedulable(plugin: Plugin, reason: impl Into<String>) -> Status {
        Status {
            code: Code::Unschedulable,
            plugin,
            reasons: vec![reason.into()],
        }
    }

    pub fn unresolvable(plugin: Plugin, reason: impl Into<String>) -> Status {
        Status {
            code: Code::UnschedulableAndUnresolvable,
            plugin,
            reasons: vec![reason.into()],
        }
    }
}

pub type FilterResult = Result<(), Status>;

/// Why no node fits a pod. `Display` is kube-scheduler's message:
/// `0/5 nodes are available: 2 node(s) had untolerated taint {k: v}, 3 Insufficient cpu.`
/// (each "count reason" string sorted as a string, as upstream does).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FitError {
    pub num_all_nodes: usize,
    /// Set when the pod failed before any node was looked at (e.g. an invalid
    /// selector); then per-node reasons are not listed.
    pub pre_filter_msg: Option<String>,
    /// Reason → number of nodes that gave it.
    pub reasons: BTreeMap<String, usize>,
    /// Node name → the status that rejected it.
    pub node_statuses: BTreeMap<String, Status>,
    /// The plugins that rejected some node: which cluster events may help.
    pub unschedulable_plugins: BTreeSet<Plugin>,
    /// Appended after the reasons: what preemption found (upstream's
    /// PostFilter message, e.g. `preemption: 0/3 nodes are available: ...`).
    pub post_filter_msg: Option<String>,
}

impl FitError {
    pub fn record(&mut self, node: &str, status: Status) {
        for r in &status.reasons {
            *self.reasons.entry(r.clone()).or_insert(0) += 1;
        }
        self.unschedulable_plugins.insert(status.plugin);
        self.node_statuses.insert(node.to_string(), status);
    }
}

impl fmt::Display for FitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0/{} nodes are available:", self.num_all_nodes)?;
        if let Some(msg) = &self.pre_filter_msg {
            write!(f, " {msg}.")?;
        } else {
            self.fmt_reasons(f)?;
        }
        if let Some(msg) = &self.post_filter_msg {
            write!(f, " {msg}.")?;
        }
        Ok(())
    }
}

impl FitError {
    fn fmt_reasons(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(reason, n)| format!("{n} {reason}"))
            .collect();
        parts.sort();
        if !parts.is_empty() {
            write!(f, " {}.", parts.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for FitError {}

/// Why `schedule` returned no node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("no nodes available to schedule pods")]
    NoNodesAvailable,
    #[error(transparent)]
    Unschedulable(Box<FitError>),
}

impl ScheduleError {
    /// The plugins whose verdict a cluster event could change (all, when the
    /// cluster had no nodes).
    pub fn unschedulable_plugins(&self) -> BTreeSet<Plugin> {
        match self {
            ScheduleError::NoNodesAvailable => BTreeSet::new(),
            ScheduleError::Unschedulable(fe) => fe.unschedulable_plugins.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_error_format_matches_upstream() {
        let mut fe = FitError {
            num_all_nodes: 5,
            ..Default::default()
        };
        for n in ["a", "b", "c"] {
            fe.record(
                n,
                Status::unschedulable(Plugin::NodeResourcesFit, "Insufficient cpu"),
            );
        }
        for n in ["d", "e"] {
            fe.record(
                n,
                Status::unresolvable(
                    Plugin::TaintToleration,
                    "node(s) had untolerated taint {k: v}",
                ),
            );
        }
        assert_eq!(
            fe.to_string(),
            "0/5 nodes are available: 2 node(s) had untolerated taint {k: v}, 3 Insufficient cpu."
        );
        assert_eq!(
            fe.unschedulable_plugins.iter().copied().collect::<Vec<_>>(),
            vec![Plugin::TaintToleration, Plugin::NodeResourcesFit]
        );
    }

    #[test]
    fn one_node_many_reasons_and_string_sort() {
        let mut fe = FitError {
            num_all_nodes: 12,
            ..Default::default()
        };
        for i in 0..10 {
            fe.record(
                &format!("n{i}"),
                Status::unschedulable(Plugin::NodePorts, "b"),
            );
        }
        fe.record(
            "x",
            Status {
                code: Code::Unschedulable,
                plugin: Plugin::NodeResourcesFit,
                reasons: vec!["Insufficient cpu".into(), "Insufficient memory".into()],
            },
        );
        // Upstream sorts the "count reason" strings: "10 b" < "1 Insufficient..." is false,
        // '1','0' vs '1',' ': ' ' sorts first.
        assert_eq!(
            fe.to_string(),
            "0/12 nodes are available: 1 Insufficient cpu, 1 Insufficient memory, 10 b."
        );
    }

    #[test]
    fn pre_filter_message_and_no_nodes() {
        let fe = FitError {
            num_all_nodes: 3,
            pre_filter_msg: Some("invalid selector: x".into()),
            ..Default::default()
        };
        assert_eq!(
            fe.to_string(),
            "0/3 nodes are available: invalid selector: x."
        );
        assert_eq!(
            ScheduleError::NoNodesAvailable.to_string(),
            "no nodes available to schedule pods"
        );
    }
}
