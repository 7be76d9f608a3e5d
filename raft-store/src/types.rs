use std::fmt;

use balsa_api::{Object, Op, StoreError};
use serde::{Deserialize, Serialize};

pub type NodeId = u64;

/// Where a member listens: the peer (Raft) address and the client API address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub peer_addr: String,
    pub api_addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "peer={} api={}", self.peer_addr, self.api_addr)
    }
}

/// The version of `Command`'s layout. Bump it when the layout changes, and keep
/// decoding the old ones.
pub const COMMAND_VERSION: u16 = 1;

/// One Raft entry's payload: a batch of ops applied atomically.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Command {
    pub version: u16,
    pub ops: Vec<Op>,
}

/// What applying a command gave: the objects written, or why nothing was.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandReply(pub Result<Vec<Object>, StoreError>);

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = CommandReply,
        NodeId = NodeId,
        Node = Member,
        // A file read and written in chunks (`snapshot::file`).
        SnapshotData = crate::snapshot::SnapshotFile,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
