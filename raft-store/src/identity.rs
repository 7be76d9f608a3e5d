//! Cluster identity: which cluster this member belongs to, so that a member
//! of another cluster cannot disturb this one.
//!
//! Why: a member whose data dir is wiped and that is started again with
//! `--init` bootstraps a *new* cluster with the same member ids and
//! addresses. Without an identity its peers would take its Raft messages as
//! their own (its ever-growing candidate terms depose their leader; a vote
//! from a member that forgot its vote breaks Raft's safety). So every peer
//! message carries the sender's cluster id, and a receiver of another cluster
//! refuses it before Raft sees it (`peer_service`); the sender treats such a
//! peer as unreachable (`network`).
//!
//! Where an id comes from, once, persisted in the `raft` column family
//! (`layout::KEY_CLUSTER_ID`) before the member takes any Raft traffic:
//!
//! * `--init` with an init token: the id is derived from the token and the
//!   init membership (ids and addresses), so every initial member started with
//!   the same token and `--member` list computes the same id independently,
//!   with no message exchanged and no dependence on who calls openraft's
//!   `initialize` first (each of them does). The token is a random nonce chosen
//!   once by whoever starts the new cluster (`balsa up`, the chaos harness, an
//!   operator), like etcd's `--initial-cluster-token`, and handed only to
//!   members being started for the first time.
//! * `--init` without a token: a random (v4) id. A member wiped and started
//!   again with `--init` gets one of these (or a token-derived id under a new
//!   token) and so never matches the cluster it used to belong to: it reports
//!   the mismatch and stays out.
//! * `--join` / `balsa cluster add`: the member adding it sends its id first
//!   (`Adopt` peer RPC): an empty member takes it, a member of another cluster
//!   refuses and the add fails.
//!
//! A member with neither refuses every Raft message (it waits to be added).
//! A restarted member reads its id back.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use rocksdb::DB;

use crate::db::{cf, synced};
use crate::layout::{CF_RAFT, KEY_CLUSTER_ID};
use crate::types::{Member, NodeId};

/// The gRPC metadata key under which a refusing receiver names its own
/// cluster id (empty when it has none yet).
pub const METADATA_KEY: &str = "balsa-cluster-id";

/// A cluster's identity: a UUID, on the wire as its hyphenated text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClusterId(uuid::Uuid);

impl ClusterId {
    /// A fresh random (v4) id.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4())
    }

    /// The id of a cluster bootstrapped with `token` and `members`: a 128-bit
    /// FNV-1a hash of both (spelled out here, so that it never changes with a
    /// library or compiler version), shaped as a UUID.
    pub fn derive(token: &str, members: &BTreeMap<NodeId, Member>) -> Self {
        let mut h = Fnv128::new();
        h.field(b"balsa-cluster-id/v1");
        h.field(token.as_bytes());
        for (id, m) in members {
            h.field(&id.to_be_bytes());
            h.field(m.peer_addr.as_bytes());
            h.field(m.api_addr.as_bytes());
        }
        Self(uuid::Uuid::from_u128(h.0))
    }

    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        uuid::Uuid::parse_str(s)
            .map(Self)
            .map_err(|e| IdentityError::Malformed(format!("{s:?}: {e}")))
    }

    fn from_bytes(b: &[u8]) -> Result<Self, IdentityError> {
        let bytes: [u8; 16] = b
            .try_into()
            .map_err(|_| IdentityError::Malformed(format!("{} stored bytes", b.len())))?;
        Ok(Self(uuid::Uuid::from_bytes(bytes)))
    }
}

/// A fresh random init token, for whoever starts a new cluster (`balsa up`,
/// the chaos harness) to hand to every initial member, once.
pub fn new_init_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.hyphenated())
    }
}

/// FNV-1a over length-prefixed fields (so `("ab","c")` and `("a","bc")` differ).
struct Fnv128(u128);

impl Fnv128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;

    fn new() -> Self {
        Self(Self::OFFSET)
    }

    fn bytes(&mut self, b: &[u8]) {
        for byte in b {
            self.0 ^= u128::from(*byte);
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    fn field(&mut self, b: &[u8]) {
        self.bytes(&(b.len() as u64).to_be_bytes());
        self.bytes(b);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("reading the stored cluster id: {0}")]
    Read(#[source] rocksdb::Error),
    #[error("persisting the cluster id: {0}")]
    Write(#[source] rocksdb::Error),
    #[error("malformed cluster id {0}")]
    Malformed(String),
    /// Two ends of a peer message (or an add) belong to different clusters.
    #[error(
        "cluster id mismatch: member {peer} belongs to cluster {theirs}, \
         member {me} to cluster {ours}"
    )]
    Mismatch {
        peer: NodeId,
        theirs: String,
        me: NodeId,
        ours: String,
    },
}

/// This member's cluster id (if it has one yet) and the mismatches seen.
/// Cheap to clone; shared by the replica, its network and its peer service.
#[derive(Clone)]
pub struct Identity(Arc<Inner>);

struct Inner {
    me: NodeId,
    db: Arc<DB>,
    id: RwLock<Option<ClusterId>>,
    /// (peer, its cluster id) pairs already logged: a refused peer is logged
    /// once, not at every heartbeat.
    reported: Mutex<HashSet<(NodeId, String)>>,
    last_mismatch: Mutex<Option<String>>,
}

/// How a `name` shows in messages when a member has no id yet.
fn shown(id: &str) -> &str {
    if id.is_empty() {
        "<none yet>"
    } else {
        id
    }
}

impl Identity {
    /// Reads the stored id, if any.
    pub fn load(me: NodeId, db: Arc<DB>) -> Result<Self, IdentityError> {
        let stored = db
            .get_cf(cf(&db, CF_RAFT), KEY_CLUSTER_ID)
            .map_err(IdentityError::Read)?;
        let id = stored.map(|b| ClusterId::from_bytes(&b)).transpose()?;
        Ok(Self(Arc::new(Inner {
            me,
            db,
            id: RwLock::new(id),
            reported: Mutex::default(),
            last_mismatch: Mutex::default(),
        })))
    }

    pub fn get(&self) -> Option<ClusterId> {
        *self.0.id.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The id as sent in peer messages; empty when there is none yet.
    pub fn wire(&self) -> String {
        self.get().map(|id| id.to_string()).unwrap_or_default()
    }

    /// Takes `id` as this member's cluster id (persisted, synced) if it has
    /// none; agrees if it is the same; refuses if it already belongs to
    /// another cluster.
    pub fn adopt(&self, from: NodeId, id: ClusterId) -> Result<(), IdentityError> {
        let mut current = self.0.id.write().unwrap_or_else(|e| e.into_inner());
        match *current {
            Some(ours) if ours == id => Ok(()),
            Some(ours) => Err(IdentityError::Mismatch {
                peer: from,
                theirs: id.to_string(),
                me: self.0.me,
                ours: ours.to_string(),
            }),
            None => {
                self.0
                    .db
                    .put_cf_opt(
                        cf(&self.0.db, CF_RAFT),
                        KEY_CLUSTER_ID,
                        id.0.as_bytes(),
                        &synced(),
                    )
                    .map_err(IdentityError::Write)?;
                tracing::info!(raft.id = self.0.me, cluster.id = %id, "cluster id set");
                *current = Some(id);
                Ok(())
            }
        }
    }

    /// The receiver's check of one incoming peer message from `from`, which
    /// says it belongs to cluster `theirs`. A member without an id yet refuses
    /// everything.
    pub fn admit(&self, from: NodeId, theirs: &str) -> Result<(), IdentityError> {
        let ours = self.wire();
        if !ours.is_empty() && ours == theirs {
            return Ok(());
        }
        let e = IdentityError::Mismatch {
            peer: from,
            theirs: shown(theirs).to_string(),
            me: self.0.me,
            ours: shown(&ours).to_string(),
        };
        self.report(from, theirs, &e, "refusing its peer messages");
        Err(e)
    }

    /// The sender's side: `peer` refused a message because it belongs to
    /// cluster `theirs`.
    pub fn refused_by(&self, peer: NodeId, theirs: &str) -> IdentityError {
        let e = IdentityError::Mismatch {
            peer,
            theirs: shown(theirs).to_string(),
            me: self.0.me,
            ours: shown(&self.wire()).to_string(),
        };
        self.report(peer, theirs, &e, "treating it as unreachable");
        e
    }

    fn report(&self, peer: NodeId, theirs: &str, e: &IdentityError, action: &str) {
        let note = e.to_string();
        let first = self
            .0
            .reported
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((peer, theirs.to_string()));
        if first {
            tracing::error!(raft.id = self.0.me, peer.id = peer, error = %note, "{action}");
        } else {
            tracing::debug!(raft.id = self.0.me, peer.id = peer, error = %note, "{action}");
        }
        *self
            .0
            .last_mismatch
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(note);
    }

    /// The last mismatch seen (either direction), for the member's status.
    pub fn last_mismatch(&self) -> Option<String> {
        self.0
            .last_mismatch
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(peer1: &str) -> BTreeMap<NodeId, Member> {
        [1, 2, 3]
            .into_iter()
            .map(|id| {
                let peer = if id == 1 {
                    peer1.to_string()
                } else {
                    format!("127.0.0.1:740{id}")
                };
                let api = format!("127.0.0.1:750{id}");
                (
                    id,
                    Member {
                        peer_addr: peer,
                        api_addr: api,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn derived_ids_agree_only_on_token_and_membership() {
        let m = members("127.0.0.1:7401");
        let a = ClusterId::derive("t1", &m);
        assert_eq!(a, ClusterId::derive("t1", &m), "deterministic");
        assert_ne!(a, ClusterId::derive("t2", &m), "another token");
        assert_ne!(
            a,
            ClusterId::derive("t1", &members("127.0.0.1:7409")),
            "another membership"
        );
        assert_ne!(ClusterId::random(), ClusterId::random());
        assert_eq!(ClusterId::parse(&a.to_string()).expect("parse"), a);
        // Pinned: the derivation must never change under a running cluster's
        // members (a restarted member reads its id back, but a member started
        // later with the same token must compute the same id).
        // (Value computed independently, by a Python FNV-1a.)
        assert_eq!(
            ClusterId::derive("token", &BTreeMap::new()).to_string(),
            "91ad2fd3-1370-3c05-9155-c158085ed48a"
        );
    }

    #[test]
    fn adopt_admit_and_persist() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = crate::db::open(dir.path()).expect("open");
        let ident = Identity::load(2, db.clone()).expect("load");
        assert_eq!(ident.get(), None);
        // No id yet: every message is refused.
        assert!(ident.admit(1, "").is_err());
        let id = ClusterId::random();
        assert!(ident.admit(1, &id.to_string()).is_err());
        ident.adopt(1, id).expect("adopt");
        ident.adopt(1, id).expect("the same id again");
        let other = ClusterId::random();
        let e = ident.adopt(1, other).expect_err("another cluster's id");
        assert!(e.to_string().contains(&other.to_string()), "{e}");
        assert!(e.to_string().contains(&id.to_string()), "{e}");
        ident.admit(1, &id.to_string()).expect("same cluster");
        let e = ident
            .admit(3, &other.to_string())
            .expect_err("other cluster");
        assert!(matches!(e, IdentityError::Mismatch { peer: 3, .. }), "{e}");
        assert!(ident
            .last_mismatch()
            .is_some_and(|m| m.contains(&other.to_string())));
        drop(ident);
        let again = Identity::load(2, db).expect("reload");
        assert_eq!(again.get(), Some(id), "the id survives a restart");
    }
}
