use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::ResourceKey;

/// etcd's default request size limit; Kubernetes objects stay below it.
pub const MAX_OBJECT_BYTES: usize = 1536 * 1024;

/// A point in the store's history. For the Raft store: the count of
/// transactions applied up to and including the write (an entry of the log
/// may hold many). On the wire it is `metadata.resourceVersion`, a decimal string.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Revision(pub u64);

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// One stored object: its JSON (with `metadata.resourceVersion` already set to
/// `revision`) and the revisions that created and last modified it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    pub key: ResourceKey,
    pub data: Bytes,
    pub revision: Revision,
    pub created: Revision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change, as the watch window keeps it. `prev` is the object before the
/// change (None for Added); the window uses it to answer lists at an older
/// revision. For Deleted, `object` is the last state with its resourceVersion
/// set to the deletion revision, as Kubernetes reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub revision: Revision,
    pub kind: EventType,
    pub object: Arc<Object>,
    pub prev: Option<Arc<Object>>,
}
