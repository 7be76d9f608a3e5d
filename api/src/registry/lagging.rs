//! A test double: a replica whose local reads lag behind. A `Local` get
//! answers the copy `freeze` took (or not found); everything else, writes
//! included, is the current store. Counts linearizable reads, to tell which
//! path a write took.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::store::mem::MemStore;
use crate::store::window::WindowConfig;
use crate::store::{
    KeyPrefix, ListOptions, ListResult, Object, Op, OpResult, ReadMode, ResourceKey, Revision,
    Store, StoreError, WatchOptions, WatchStream,
};

pub struct Lagging {
    real: Arc<MemStore>,
    frozen: Mutex<HashMap<ResourceKey, Object>>,
    linearizable_reads: AtomicUsize,
}

impl Lagging {
    pub fn new() -> Self {
        Self {
            real: MemStore::new(WindowConfig::default()),
            frozen: Mutex::new(HashMap::new()),
            linearizable_reads: AtomicUsize::new(0),
        }
    }

    /// From now on the local copy of `key` is the current object, until the
    /// next `freeze`.
    pub async fn freeze(&self, key: &ResourceKey) {
        let o = self.real.get(key, ReadMode::Linearizable).await.unwrap();
        self.frozen.lock().unwrap().insert(key.clone(), o);
    }

    /// Linearizable gets so far.
    pub fn linearizable_reads(&self) -> usize {
        self.linearizable_reads.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Store for Lagging {
    async fn get(&self, key: &ResourceKey, read: ReadMode) -> Result<Object, StoreError> {
        match read {
            ReadMode::Local => self
                .frozen
                .lock()
                .unwrap()
                .get(key)
                .cloned()
                .ok_or_else(|| StoreError::not_found(key)),
            ReadMode::Linearizable => {
                self.linearizable_reads.fetch_add(1, Ordering::SeqCst);
                self.real.get(key, read).await
            }
        }
    }
    async fn list(&self, p: &KeyPrefix, o: ListOptions) -> Result<ListResult, StoreError> {
        self.real.list(p, o).await
    }
    async fn txn(&self, ops: Vec<Op>) -> Result<(Revision, Vec<OpResult>), StoreError> {
        self.real.txn(ops).await
    }
    async fn watch(&self, p: &KeyPrefix, o: WatchOptions) -> Result<WatchStream, StoreError> {
        self.real.watch(p, o).await
    }
    async fn revision(&self, read: ReadMode) -> Result<Revision, StoreError> {
        self.real.revision(read).await
    }
}
