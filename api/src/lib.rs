//! The object model and the storage port.
//!
//! `api` owns what every Balsa store must mean: resource keys, revisions, the
//! `Store` trait with its error enum, the write semantics (`apply`), the watch
//! window every replica serves watches from, an in-memory store, the one
//! conformance suite every store implementation runs, and the decoding of
//! Kubernetes protobuf request bodies into JSON (`k8s_protobuf`). It must not
//! depend on openraft or RocksDB (only `raft-store` names them); it may depend
//! on `proto` for the gRPC service and client and the Kubernetes schema.
//!
//! Module rules: `store::apply` is pure (a map and a batch in, events out); IO
//! lives in the implementations and the gRPC edges.

pub mod client;
pub mod clock;
pub mod conformance;
pub mod cron;
pub mod grpc;
pub mod k8s_protobuf;
pub mod openapi;
pub mod registry;
pub mod resource;
pub mod rest;
pub mod store;

pub use store::{
    DeletePreconditions, Event, EventType, Fence, KeyPrefix, Lease, ListOptions, ListResult,
    Object, Op, OpResult, ReadMode, ResourceKey, Revision, Store, StoreError, WatchEvent,
    WatchOptions, WatchStream,
};
