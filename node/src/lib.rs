//! balsa-node: what runs pods on one machine.
//!
//! ```text
//!   desired pods ──► PodWorker (one task per pod) ──► Runtime (process | sim | cri)
//!   (agent loop)       │ env, volumes, probes,            │ processes, cgroups,
//!                      │ restarts, back-off, kill         │ CRI-format logs
//!                      ▼
//!                PodStatus (watch) + PodEvents (bounded) ──► agent loop ──► API
//! ```
//!
//! The crate owns the pod lifecycle as kubelet defines it (phases, conditions,
//! container states and reasons, probes, crash-loop back-off, graceful
//! termination), the container runtimes, the machine's capacity and node
//! status, and the agent loop (`agent`): the assignment stream from the
//! masters, the API writes (pod statuses, events, Node, Lease), and the log
//! endpoint the masters call for `pods/log`. Only `agent` talks to the
//! masters; the rest is driven by it and by tests. A restarted agent adopts
//! the containers still running ([`runtime::Runtime::recover`]).
//!
//! Rules: it may depend only on `balsa-api` and `balsa-proto` among our crates
//! (never on controllers or the scheduler). Kubernetes-level decisions live in
//! the worker and the pure modules (`status`, `backoff`, `env`, `eviction`);
//! runtimes only run what they are handed. Nothing here blocks a tokio thread
//! on IO that can hang (process waits, probes) and every process started is
//! reaped and its group killed.

pub mod agent;
pub mod backoff;
pub mod clock;
pub mod env;
pub mod events;
pub mod eviction;
pub mod logs;
pub mod machine;
pub mod objects;
pub mod pods;
pub mod probe;
pub mod qos;
pub mod quantity;
pub mod runtime;
pub mod status;
pub mod volumes;
pub mod worker;

pub use objects::{ObjectSource, StaticObjects};
pub use pods::PodManager;
pub use runtime::cri::CriRuntime;
pub use runtime::process::ProcessRuntime;
pub use runtime::sim::SimRuntime;
pub use runtime::{Runtime, RuntimeError};
pub use worker::{PodEvent, PodHandle, PodWorker, WorkerConfig};
