//! Balsa's wire contracts: the peer (Raft) service between masters and the
//! Objects and Cluster services clients use. Generated code only; this crate
//! depends on nothing of ours.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// Modules mirror the proto packages, as the generated cross-package paths expect.
pub mod balsa {
    pub mod peer {
        pub mod v1 {
            tonic::include_proto!("balsa.peer.v1");
        }
    }
    pub mod objects {
        pub mod v1 {
            tonic::include_proto!("balsa.objects.v1");
        }
    }
}

pub use balsa::objects::v1 as objects;
pub use balsa::peer::v1 as peer;

/// The version marker every Raft and peer payload carries.
pub const WIRE_VERSION: u32 = 1;
