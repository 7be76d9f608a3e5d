//! The `balsa` binary's library: the one place that wires the replicated store,
//! the API services and (later) controllers and scheduler together. `main.rs`
//! only parses flags and calls in here; tests call the same functions.

pub mod bootstrap;
pub mod cli;
pub mod cluster_file;
pub mod control;
pub mod fault_file;
pub mod listeners;
pub mod node;
pub mod raft_runtime;
pub mod server;
pub mod up;
