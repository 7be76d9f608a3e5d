//! The replicated object store: openraft over RocksDB, implementing the storage
//! port of `api`. This crate is the only one that names openraft or RocksDB.
//!
//! ```text
//!  Store::txn ─► Replica ──(follower: Forward to leader)──► Proposer (groups writes)
//!                                                              │ Raft::client_write:
//!                                                              │ append (fsync) + replicate
//!                                                              ▼
//!                      StateMachine::apply ─► RocksDB objects ─┬─► WatchWindow ─► watches
//!                                                              └─► reply (a revision per write)
//! ```
//!
//! Module rules: `layout` owns every on-disk key; `codec` owns every byte format
//! (each with a version marker); `faults` is the only seam tests and the chaos
//! harness use to disturb peer traffic; `failpoints` (real only with the
//! `failpoints` feature) is the one that disturbs the disk; `identity` decides
//! which cluster a member belongs to, and every peer message is checked
//! against it before Raft sees it.

// openraft's StorageError (what its storage traits return) is large; boxing it
// at every call would only hide that.
#![allow(clippy::result_large_err)]

pub mod cluster_service;
pub mod codec;
pub mod config;
pub mod db;
pub mod failpoints;
pub mod faults;
pub mod identity;
pub mod layout;
pub mod leader_probe;
pub mod lease;
pub mod log_store;
pub mod log_tail;
pub mod network;
pub mod peer_service;
pub mod proposer;
mod raft_call;
pub mod read_index;
pub mod replica;
pub mod route;
pub mod snapshot;
pub mod snapshot_schedule;
pub mod state_machine;
pub mod types;

pub use config::ReplicaConfig;
pub use faults::Faults;
pub use identity::ClusterId;
pub use replica::Replica;
pub use types::{Member, NodeId};
