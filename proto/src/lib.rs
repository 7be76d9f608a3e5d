//! Balsa's wire contracts: the peer (Raft) service between masters, the
//! Objects and Cluster services clients use, the NodeAgent stream to node
//! agents, the CRI subset node agents speak to containerd, and the schema of the Kubernetes kinds kubectl may send as protobuf. Generated code and descriptors only; this
//! crate depends on nothing of ours.

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
    pub mod node {
        pub mod v1 {
            tonic::include_proto!("balsa.node.v1");
        }
    }
}

/// The Kubernetes Container Runtime Interface (the subset the node agent's
/// `cri` runtime uses), under upstream's package name so any CRI runtime
/// (containerd) accepts it.
pub mod runtime {
    pub mod v1 {
        tonic::include_proto!("runtime.v1");
    }
}

pub use balsa::node::v1 as node;
pub use balsa::objects::v1 as objects;
pub use balsa::peer::v1 as peer;
pub use runtime::v1 as cri;

/// Kubernetes' own protobuf schema (API 1.32), as data rather than code.
pub mod k8s {
    /// An encoded `google.protobuf.FileDescriptorSet` of the `generated.proto`
    /// files for core/v1, apps/v1, batch/v1, coordination/v1, discovery/v1,
    /// events/v1, autoscaling/v1 and v2, networking/v1, policy/v1, scheduling/v1
    /// and rbac/v1, with their imports. Messages carry upstream's names, e.g.
    /// `k8s.io.api.apps.v1.Deployment`. Built by `build.rs`.
    pub const DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/k8s_descriptor_set.bin"));
}

/// The version marker every Raft and peer payload carries.
pub const WIRE_VERSION: u32 = 1;

/// The node-agent stream's protocol version (`Hello.version`).
pub const NODE_STREAM_VERSION: u32 = 1;
