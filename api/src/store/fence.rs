//! Fencing the writes of leader-only control loops. Leadership is the
//! controller lease (see `client::leader`): a controller or the scheduler acts
//! under one `Lease`, and each write it makes carries that lease's `Fence`. A
//! store that replicates refuses a fenced write unless it is proposed by the
//! leader of exactly that term, so a deposed leader's in-flight and queued
//! writes fail instead of being forwarded to the new leader and applied next
//! to the new leader's own (upstream fences with the leader-election lease).
//!
//! ```text
//!  control loop ──write + Fence(term)──► its master's API ──► FencedStore::txn
//!                                                                └─► Store::txn_fenced
//!                                                                      (Raft: refused unless
//!                                                                       leading in `term`)
//! ```

use std::sync::Arc;

use tokio::sync::watch;

use super::{
    KeyPrefix, ListOptions, ListResult, Object, Op, OpResult, ReadMode, ResourceKey, Revision,
    Store, StoreError, WatchOptions, WatchStream,
};

/// The leadership a leader-only loop acts under: the Raft term it leads in,
/// and the revision this replica had applied when it took over (every write
/// committed by earlier leaders is at or below it, so caches that reached it
/// miss nothing an earlier leader did).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub term: u64,
    pub revision: Revision,
}

/// What a write carries: the term its decision was made under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub term: u64,
}

impl Lease {
    pub fn fence(&self) -> Fence {
        Fence { term: self.term }
    }
}

impl Fence {
    /// The answer to a write whose lease is gone.
    pub fn refused(&self, now: &str) -> StoreError {
        StoreError::Fenced(format!(
            "the write was decided by a controller leading in term {}, but {now}; \
             a deposed leader's writes are refused",
            self.term
        ))
    }
}

/// A store whose every write is fenced: what the API serves a request that
/// carries a fence through.
pub struct FencedStore {
    inner: Arc<dyn Store>,
    fence: Fence,
}

impl FencedStore {
    pub fn new(inner: Arc<dyn Store>, fence: Fence) -> Self {
        Self { inner, fence }
    }
}

#[async_trait::async_trait]
impl Store for FencedStore {
    async fn get(&self, key: &ResourceKey, read: ReadMode) -> Result<Object, StoreError> {
        self.inner.get(key, read).await
    }

    async fn list(&self, prefix: &KeyPrefix, opts: ListOptions) -> Result<ListResult, StoreError> {
        self.inner.list(prefix, opts).await
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<(Revision, Vec<OpResult>), StoreError> {
        self.inner.txn_fenced(ops, self.fence).await
    }

    async fn txn_fenced(
        &self,
        ops: Vec<Op>,
        fence: Fence,
    ) -> Result<(Revision, Vec<OpResult>), StoreError> {
        if fence != self.fence {
            return Err(fence.refused(&format!(
                "this request is fenced by term {}",
                self.fence.term
            )));
        }
        self.inner.txn_fenced(ops, fence).await
    }

    async fn watch(
        &self,
        prefix: &KeyPrefix,
        opts: WatchOptions,
    ) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, opts).await
    }

    async fn revision(&self, read: ReadMode) -> Result<Revision, StoreError> {
        self.inner.revision(read).await
    }

    fn resource_changes(&self, group: &str, resource: &str) -> Option<watch::Receiver<Revision>> {
        self.inner.resource_changes(group, resource)
    }
}
