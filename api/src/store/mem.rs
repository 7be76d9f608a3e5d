//! The in-memory store: the reference implementation of the port, for tests and
//! for components that need a store without replication.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::apply::{self, ObjectSource};
use super::list::{self, OrderedSource};
use super::window::{WatchWindow, WindowConfig};
use super::{
    Fence, KeyPrefix, ListOptions, ListResult, Object, Op, OpResult, ReadMode, ResourceKey,
    Revision, Store, StoreError, WatchOptions, WatchStream,
};

pub struct MemStore {
    objects: Mutex<BTreeMap<Vec<u8>, Arc<Object>>>,
    window: Arc<WatchWindow>,
}

struct Objects<'a>(&'a BTreeMap<Vec<u8>, Arc<Object>>);

impl ObjectSource for Objects<'_> {
    fn get_object(&self, key: &ResourceKey) -> Result<Option<Arc<Object>>, StoreError> {
        Ok(self.0.get(&key.encode()).cloned())
    }
}

impl OrderedSource for Objects<'_> {
    fn scan<'a>(
        &'a self,
        prefix: &[u8],
        from: &[u8],
    ) -> Box<dyn Iterator<Item = Result<Object, StoreError>> + 'a> {
        let prefix = prefix.to_vec();
        Box::new(
            self.0
                .range(from.to_vec()..)
                .take_while(move |(k, _)| k.starts_with(&prefix))
                .map(|(_, o)| Ok((**o).clone())),
        )
    }
}

impl MemStore {
    pub fn new(config: WindowConfig) -> Arc<Self> {
        Arc::new(Self {
            objects: Mutex::new(BTreeMap::new()),
            window: WatchWindow::new(config, Revision(0)),
        })
    }

    fn objects(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Arc<Object>>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl Store for MemStore {
    async fn get(&self, key: &ResourceKey, _read: ReadMode) -> Result<Object, StoreError> {
        key.validate()?;
        Objects(&self.objects())
            .get_object(key)?
            .map(|o| (*o).clone())
            .ok_or_else(|| StoreError::not_found(key))
    }

    async fn list(&self, prefix: &KeyPrefix, opts: ListOptions) -> Result<ListResult, StoreError> {
        let objects = self.objects();
        let plan = list::plan(&self.window.read(), prefix, &opts)?;
        list::run(&Objects(&objects), plan, prefix, opts.limit)
    }

    async fn txn(&self, ops: Vec<Op>) -> Result<(Revision, Vec<OpResult>), StoreError> {
        apply::precheck(&ops)?;
        let mut objects = self.objects();
        let mut window = self.window.write();
        let rev = Revision(window.current().0 + 1);
        let applied = apply::apply(&Objects(&objects), rev, &ops)?;
        for (key, obj) in applied.writes {
            match obj {
                Some(obj) => objects.insert(key.encode(), obj),
                None => objects.remove(&key.encode()),
            };
        }
        window.push(rev, applied.events);
        Ok((rev, applied.results))
    }

    /// One store alone never changes hands: every fence holds.
    async fn txn_fenced(
        &self,
        ops: Vec<Op>,
        _fence: Fence,
    ) -> Result<(Revision, Vec<OpResult>), StoreError> {
        self.txn(ops).await
    }

    async fn watch(
        &self,
        prefix: &KeyPrefix,
        opts: WatchOptions,
    ) -> Result<WatchStream, StoreError> {
        super::watch::watch(self.window.clone(), prefix.clone(), opts, None)
    }

    async fn revision(&self, _read: ReadMode) -> Result<Revision, StoreError> {
        Ok(self.window.current())
    }

    fn resource_changes(&self, group: &str, resource: &str) -> Option<watch::Receiver<Revision>> {
        Some(self.window.subscribe_resource(group, resource))
    }
}
