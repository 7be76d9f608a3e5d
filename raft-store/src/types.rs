use std::fmt;

use balsa_api::{Object, Op, Revision, StoreError};
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

/// The version of `Command`'s layout, written first in every command. Bump
/// it when the layout changes, and keep decoding the old ones.
///
/// 1: one transaction (`Vec<Op>`; none = a read barrier).
/// 2: independent transactions (`Vec<Vec<Op>>`; none = a read barrier).
pub const COMMAND_VERSION: u16 = 2;

/// One Raft entry's payload: transactions from any number of clients, applied
/// in order, each atomically and at its own revision; one failing does not
/// affect the others. An entry with none is a read barrier (it only proves
/// leadership). The leader groups concurrent writes this way (`proposer`), so
/// that one log append and one fsync carry many of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    pub txns: Vec<Vec<Op>>,
}

impl Command {
    /// Every op of every transaction.
    pub fn ops(&self) -> impl Iterator<Item = &Op> {
        self.txns.iter().flatten()
    }
}

impl Serialize for Command {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (COMMAND_VERSION, &self.txns).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Command {
    /// Reads the version, then the layout it names; a version this replica
    /// does not know fails the decode (the entry is then unreadable here,
    /// and the replica stops instead of skipping a write its peers apply).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Versioned;
        impl<'de> serde::de::Visitor<'de> for Versioned {
            type Value = Command;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a command: its layout version, then its transactions")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Command, A::Error> {
                use serde::de::Error;
                let version: u16 = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                let txns = match version {
                    1 => {
                        let ops: Vec<Op> = seq
                            .next_element()?
                            .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                        if ops.is_empty() { Vec::new() } else { vec![ops] }
                    }
                    2 => seq
                        .next_element()?
                        .ok_or_else(|| A::Error::invalid_length(1, &self))?,
                    v => {
                        return Err(A::Error::custom(format!(
                            "command version {v} is unknown to this replica (written by a newer Balsa?)"
                        )))
                    }
                };
                Ok(Command { txns })
            }
        }
        d.deserialize_tuple(2, Versioned)
    }
}

/// What applying a command gave, per transaction in order: its revision and
/// the objects written, or why nothing was.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandReply(pub Vec<Result<(Revision, Vec<Object>), StoreError>>);

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

#[cfg(test)]
mod tests {
    use balsa_api::ResourceKey;
    use bytes::Bytes;

    use super::*;
    use crate::codec;

    fn create(name: &str) -> Op {
        Op::Create {
            key: ResourceKey::new("", "configmaps", Some("default"), name),
            value: Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn commands_round_trip_with_their_transactions() {
        let cmd = Command {
            txns: vec![vec![create("a"), create("b")], vec![create("c")]],
        };
        let back: Command = codec::decode(&codec::encode(&cmd).unwrap()).unwrap();
        assert_eq!(back, cmd);
        let barrier: Command = codec::decode(&codec::encode(&Command::default()).unwrap()).unwrap();
        assert!(barrier.txns.is_empty());
    }

    /// Layout 1 as it was written: `struct { version: u16, ops: Vec<Op> }`.
    #[derive(Serialize)]
    struct V1 {
        version: u16,
        ops: Vec<Op>,
    }

    #[test]
    fn version_1_commands_still_decode_as_one_transaction() {
        let old = codec::encode(&V1 {
            version: 1,
            ops: vec![create("a"), create("b")],
        })
        .unwrap();
        let cmd: Command = codec::decode(&old).unwrap();
        assert_eq!(cmd.txns, vec![vec![create("a"), create("b")]]);
        let old_barrier = codec::encode(&V1 {
            version: 1,
            ops: vec![],
        })
        .unwrap();
        let cmd: Command = codec::decode(&old_barrier).unwrap();
        assert!(cmd.txns.is_empty());
    }

    #[test]
    fn an_unknown_version_does_not_decode() {
        let newer = codec::encode(&V1 {
            version: 99,
            ops: vec![create("a")],
        })
        .unwrap();
        let err = codec::decode::<Command>(&newer).unwrap_err();
        assert!(
            err.to_string().contains("command version 99 is unknown"),
            "{err}"
        );
    }
}
