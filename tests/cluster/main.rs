//! Multi-replica tests on real sockets: in-process replicas (each with its own
//! RocksDB and gRPC servers on loopback port 0) for the store's semantics and
//! the transport seam, and real `balsa server` processes for SIGKILL and
//! whole-cluster restarts; node agents (in-process) against them.

mod client;
mod cluster_controllers;
mod controllers;
mod cri;
mod faults;
mod fencing;
mod harness;
mod identity;
mod job_policies;
mod jobs;
mod membership;
mod node;
mod processes;
mod scheduler;
mod sets;
mod snapshot;
mod store;
