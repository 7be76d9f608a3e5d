use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Event, Fence, KeyPrefix, Object, ResourceKey, Revision, StoreError};

/// How fresh a read must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// Reflects every write acknowledged before the read began (read-index).
    #[default]
    Linearizable,
    /// Whatever this replica has applied (`resourceVersion=0` in Kubernetes).
    Local,
}

#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub limit: Option<usize>,
    /// The token a previous page returned; the page is served at that page's
    /// revision.
    pub continue_token: Option<String>,
    /// Serve the list at exactly this revision (must still be in the window).
    pub revision: Option<Revision>,
    pub read: ReadMode,
}

#[derive(Debug, Clone)]
pub struct ListResult {
    pub items: Vec<Object>,
    /// The revision the list was served at.
    pub revision: Revision,
    pub continue_token: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletePreconditions {
    pub uid: Option<String>,
    pub revision: Option<Revision>,
}

/// One write of a batch. A batch applies whole or not at all, at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Create {
        key: ResourceKey,
        value: Bytes,
    },
    /// Replace the object; with `expected`, only if it is still at that revision.
    Update {
        key: ResourceKey,
        value: Bytes,
        expected: Option<Revision>,
    },
    Delete {
        key: ResourceKey,
        preconditions: DeletePreconditions,
    },
}

impl Op {
    pub fn key(&self) -> &ResourceKey {
        match self {
            Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

/// The outcome of one op: the object as written (for a delete, its last state
/// with the deletion's revision).
pub type OpResult = Object;

#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Deliver events with a revision greater than this one.
    pub after: Revision,
    /// Send a bookmark after this long without an event.
    pub bookmark_interval: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    Event(Event),
    /// Every event up to and including this revision has been delivered.
    Bookmark(Revision),
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

/// The object store every Balsa component writes through.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    async fn get(&self, key: &ResourceKey, read: ReadMode) -> Result<Object, StoreError>;

    async fn list(&self, prefix: &KeyPrefix, opts: ListOptions) -> Result<ListResult, StoreError>;

    /// Applies the ops atomically at one new revision; results are in op order.
    async fn txn(&self, ops: Vec<Op>) -> Result<(Revision, Vec<OpResult>), StoreError>;

    /// `txn` on behalf of a leader-only control loop (see `fence`): refused
    /// with `StoreError::Fenced` unless the store's leadership is still the
    /// one the fence names when the batch is proposed.
    async fn txn_fenced(
        &self,
        ops: Vec<Op>,
        fence: Fence,
    ) -> Result<(Revision, Vec<OpResult>), StoreError>;

    async fn watch(
        &self,
        prefix: &KeyPrefix,
        opts: WatchOptions,
    ) -> Result<WatchStream, StoreError>;

    /// The newest revision this store has applied (after a read-index when
    /// linearizable).
    async fn revision(&self, read: ReadMode) -> Result<Revision, StoreError>;

    /// Moves to the revision of each write of `group`/`resource` this
    /// replica applies (or to where its state was replaced), once that
    /// write can be read locally: while it stays put, a `Local` read of that
    /// resource made after it last moved answers the same. (Before the
    /// first write after the call it shows no particular revision.) What a
    /// cache of this replica's own objects checks; `None` when the store
    /// cannot say (the cache then reads every time).
    fn resource_changes(&self, group: &str, resource: &str) -> Option<watch::Receiver<Revision>> {
        let _ = (group, resource);
        None
    }

    async fn create(&self, key: ResourceKey, value: Bytes) -> Result<Object, StoreError> {
        single(self.txn(vec![Op::Create { key, value }]).await)
    }

    async fn update(
        &self,
        key: ResourceKey,
        value: Bytes,
        expected: Option<Revision>,
    ) -> Result<Object, StoreError> {
        single(
            self.txn(vec![Op::Update {
                key,
                value,
                expected,
            }])
            .await,
        )
    }

    async fn delete(
        &self,
        key: ResourceKey,
        preconditions: DeletePreconditions,
    ) -> Result<Object, StoreError> {
        single(self.txn(vec![Op::Delete { key, preconditions }]).await)
    }
}

fn single(res: Result<(Revision, Vec<OpResult>), StoreError>) -> Result<Object, StoreError> {
    res?.1
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Internal("a one-op batch returned no result".into()))
}
