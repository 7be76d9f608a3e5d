//! The chaos harness: start a real Balsa cluster, break it on purpose, record
//! what every client saw, and check the record.
//!
//! ```text
//!  cluster (processes, netns or loopback) ◄── nemesis (kill, pause, partition, loss)
//!        ▲                    │
//!   workload (registers,      └─► watches on every replica
//!   lists, watches)                    │
//!        └──────► history (ops, watch sessions, faults) ──► checkers ──► report
//! ```
//!
//! Module rules: `history` and `check` are pure (no IO, no clock of their own)
//! so checkers run on hand-written histories in unit tests; `cluster`,
//! `workload` and `nemesis` do the IO; `run` wires one run together. This
//! crate is dev-only and may depend on anything in the workspace.

pub mod check;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod report;
pub mod run;
pub mod workload;
