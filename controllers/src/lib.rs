//! The controller manager: kube-controller-manager's reconcilers over Balsa's
//! controller runtime (`balsa_api::client`), acting only while this master
//! leads.
//!
//! Owns: the control loops that turn desired state (ReplicaSets, Deployments,
//! DaemonSets, StatefulSets, ControllerRevisions, Jobs, CronJobs,
//! ownerReferences, namespace deletion, finished Jobs' TTLs, pods nothing will
//! finish) into API writes. Must depend only on
//! `balsa-api` (never on the store, the scheduler or the node agent: they meet
//! only through API objects).
//!
//! Module rules: one controller per file; a controller's decisions are pure
//! functions of cached objects (unit-tested beside them) and its reconcile
//! applies them through `Api<K>`; `manager` is the only place that builds
//! informers and starts controllers.

pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoint_slice;
pub mod endpoints;
mod error;
pub mod garbage_collector;
pub mod history;
pub mod job;
pub mod manager;
pub mod namespace;
pub mod node_fit;
pub mod node_lifecycle;
pub mod own_writes;
pub mod owners;
pub mod pod_gc;
pub mod pods;
pub mod replicaset;
pub mod resource_quota;
pub mod selector;
pub mod service_account;
pub mod service_pods;
pub mod statefulset;
pub mod taint_eviction;
pub mod taints;
pub mod ttl_after_finished;

pub use error::Error;
