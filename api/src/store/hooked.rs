//! A store for tests: the in-memory store, except where a test's hook
//! answers a read or a batch itself (a replica whose local copy lags, a
//! generated name that is taken).

use std::sync::Arc;

use super::mem::MemStore;
use super::window::WindowConfig;
use super::{
    Fence, KeyPrefix, ListOptions, ListResult, Object, Op, OpResult, ReadMode, ResourceKey,
    Revision, Store, StoreError, WatchOptions, WatchStream,
};

/// Answers a get instead of the store, or passes (None).
type GetHook =
    Box<dyn Fn(&ResourceKey, ReadMode) -> Option<Result<Object, StoreError>> + Send + Sync>;
/// Refuses a batch instead of the store applying it, or passes (None).
type TxnHook = Box<dyn Fn(&[Op]) -> Option<StoreError> + Send + Sync>;

pub struct Hooked {
    pub real: Arc<MemStore>,
    get: Option<GetHook>,
    txn: Option<TxnHook>,
}

impl Default for Hooked {
    fn default() -> Self {
        Self {
            real: MemStore::new(WindowConfig::default()),
            get: None,
            txn: None,
        }
    }
}

impl Hooked {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn on_get(
        mut self,
        f: impl Fn(&ResourceKey, ReadMode) -> Option<Result<Object, StoreError>> + Send + Sync + 'static,
    ) -> Self {
        self.get = Some(Box::new(f));
        self
    }

    pub fn on_txn(
        mut self,
        f: impl Fn(&[Op]) -> Option<StoreError> + Send + Sync + 'static,
    ) -> Self {
        self.txn = Some(Box::new(f));
        self
    }
}

#[async_trait::async_trait]
impl Store for Hooked {
    async fn get(&self, key: &ResourceKey, read: ReadMode) -> Result<Object, StoreError> {
        if let Some(answer) = self.get.as_ref().and_then(|h| h(key, read)) {
            return answer;
        }
        self.real.get(key, read).await
    }
    async fn list(&self, p: &KeyPrefix, o: ListOptions) -> Result<ListResult, StoreError> {
        self.real.list(p, o).await
    }
    async fn txn(&self, ops: Vec<Op>) -> Result<(Revision, Vec<OpResult>), StoreError> {
        if let Some(e) = self.txn.as_ref().and_then(|h| h(&ops)) {
            return Err(e);
        }
        self.real.txn(ops).await
    }
    async fn txn_fenced(
        &self,
        ops: Vec<Op>,
        fence: Fence,
    ) -> Result<(Revision, Vec<OpResult>), StoreError> {
        self.real.txn_fenced(ops, fence).await
    }
    async fn watch(&self, p: &KeyPrefix, o: WatchOptions) -> Result<WatchStream, StoreError> {
        self.real.watch(p, o).await
    }
    async fn revision(&self, read: ReadMode) -> Result<Revision, StoreError> {
        self.real.revision(read).await
    }
}
