//! The on-disk layout, in one place. Per replica, under its data dir:
//!
//! `db/`, the main RocksDB (log and Raft state):
//!
//! | column family | key | value |
//! |---|---|---|
//! | `log` | log index, u64 big-endian | `codec::encode_checked(Entry)` |
//! | `raft` | `vote`, `committed`, `purged` | `codec::encode(..)` |
//! | `raft` | `cluster_id` | the cluster's UUID, 16 bytes (see `identity`) |
//! | `objects`, `sm` | empty: where the state machine lived before `sm/` (moved out at first open, `snapshot::migrate`) | |
//!
//! `sm/gen-N/`, the state machine's RocksDB (one generation: a snapshot
//! install swaps in a new one; `snapshot::state_dir` owns `sm/`):
//!
//! | column family | key | value |
//! |---|---|---|
//! | `objects` | `ResourceKey::encode()` | `created u64 BE | revision u64 BE | JSON` |
//! | `sm` | `applied`, `membership`, `revision` | `codec::encode(..)` |
//!
//! `sm/snap-N.snap`, the newest snapshot (`snapshot::archive`), and
//! `sm/current`, the manifest naming both.

use balsa_api::{Object, ResourceKey, Revision, StoreError};
use bytes::Bytes;

pub const CF_LOG: &str = "log";
pub const CF_RAFT: &str = "raft";
pub const CF_OBJECTS: &str = "objects";
pub const CF_SM: &str = "sm";
/// The main database's families (`objects` and `sm` kept for data dirs
/// written before the state machine had its own database).
pub const ALL_CFS: [&str; 4] = [CF_LOG, CF_RAFT, CF_OBJECTS, CF_SM];
/// The state machine database's families.
pub const SM_CFS: [&str; 2] = [CF_OBJECTS, CF_SM];

pub const KEY_VOTE: &[u8] = b"vote";
pub const KEY_COMMITTED: &[u8] = b"committed";
pub const KEY_PURGED: &[u8] = b"purged";
/// Written once, before the member takes any Raft traffic (`identity`).
pub const KEY_CLUSTER_ID: &[u8] = b"cluster_id";
pub const KEY_APPLIED: &[u8] = b"applied";
pub const KEY_MEMBERSHIP: &[u8] = b"membership";
/// The newest revision applied (written with `applied`). Absent in a state
/// machine written when a revision was its entry's log index: the applied
/// index is then the revision.
pub const KEY_REVISION: &[u8] = b"revision";

pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

pub fn log_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

pub fn encode_object(obj: &Object) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + obj.data.len());
    out.extend(obj.created.0.to_be_bytes());
    out.extend(obj.revision.0.to_be_bytes());
    out.extend_from_slice(&obj.data);
    out
}

pub fn decode_object(key: &[u8], value: &[u8]) -> Result<Object, StoreError> {
    let key = ResourceKey::decode(key)?;
    if value.len() < 16 {
        return Err(StoreError::Internal(format!(
            "stored object {key} is truncated ({} bytes)",
            value.len()
        )));
    }
    let (created, rest) = value.split_at(8);
    let (revision, data) = rest.split_at(8);
    let u64_of = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
    Ok(Object {
        key,
        data: Bytes::copy_from_slice(data),
        revision: Revision(u64_of(revision)),
        created: Revision(u64_of(created)),
    })
}
