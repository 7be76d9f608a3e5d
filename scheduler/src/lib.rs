//! The scheduler's pure core: which node a pod should run on.
//!
//! `scheduler` owns kube-scheduler's semantics for Balsa: the cluster
//! `Snapshot` (nodes, assigned and assumed pods, precomputed requests, ports,
//! images), the default profile's filter and score plugins, the scheduling
//! cycle (`Scheduler::schedule`), the scheduling queue (active, backoff,
//! unschedulable) and preemption's victim selection. It depends only on the
//! Kubernetes object model (`k8s-openapi`), never on the store, the network
//! or other controllers; it meets them through API objects.
//!
//! Module rules: nothing here does IO, sleeps or reads a clock. Time comes in
//! as `Instant` arguments, randomness as an `Rng`, cluster state as a
//! `Snapshot`; decisions go out as return values. A thin async driver feeds
//! watch events in (`Snapshot::upsert_*`, `SchedulingQueue::on_event`) and
//! turns results into bindings. Bad input (an unparsable quantity, an unknown
//! operator) is a `FitError` or an error value with a clear message, never a
//! panic. One plugin per file under `plugins/`.
//!
//! The IO lives in one module at the edge: `driver` (informers, the owner
//! task, bindings, status and preemption writes and Events, only while
//! leading). Nothing else may touch the network.

pub mod core;
pub mod domain_counts;
pub mod driver;
pub mod plugins;
pub mod pod_info;
pub mod preemption;
pub mod quantity;
pub mod queue;
pub mod resources;
pub mod selector;
pub mod snapshot;
pub mod status;
pub mod toleration;

#[cfg(test)]
mod testutil;

pub use crate::core::{
    num_feasible_nodes_to_find, schedule, ScheduleResult, Scheduler, SchedulerConfig,
};
pub use pod_info::{pod_priority, pod_uid, PodInfo, DEFAULT_SCHEDULER_NAME};
pub use snapshot::{NodeInfo, Snapshot, SnapshotError};
pub use status::{Code, FitError, Plugin, ScheduleError, Status};
