//! Balsa's wire contracts: the peer (Raft) service between masters and the
//! Objects and Cluster services clients use. Generated code only; this crate
//! depends on nothing of ours.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

pub mod peer {
    tonic::include_proto!("balsa.peer.v1");
}

pub mod objects {
    tonic::include_proto!("balsa.objects.v1");
}

/// The version marker every Raft and peer payload carries.
pub const WIRE_VERSION: u32 = 1;
