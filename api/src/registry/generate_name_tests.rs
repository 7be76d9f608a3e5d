//! A generated name that is already taken is drawn again (upstream's
//! RetryGenerateName): the store here refuses the first creates as if
//! their names were taken.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::store::mem::MemStore;
use crate::store::window::WindowConfig;
use crate::store::{
    Fence, KeyPrefix, ListOptions, ListResult, Op, OpResult, WatchOptions, WatchStream,
};

/// Answers AlreadyExists to the first `taken` creates, recording each
/// create's key.
struct Taken {
    real: Arc<MemStore>,
    taken: usize,
    creates: AtomicUsize,
    keys: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Store for Taken {
    async fn get(&self, key: &ResourceKey, read: ReadMode) -> Result<Object, StoreError> {
        self.real.get(key, read).await
    }
    async fn list(&self, p: &KeyPrefix, o: ListOptions) -> Result<ListResult, StoreError> {
        self.real.list(p, o).await
    }
    async fn txn(&self, ops: Vec<Op>) -> Result<(Revision, Vec<OpResult>), StoreError> {
        if let Some(Op::Create { key, .. }) = ops.first() {
            self.keys.lock().unwrap().push(key.to_string());
            if self.creates.fetch_add(1, Ordering::SeqCst) < self.taken {
                return Err(StoreError::AlreadyExists {
                    key: key.to_string(),
                });
            }
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

fn registry(taken: usize) -> (Registry, Arc<Taken>) {
    let store = Arc::new(Taken {
        real: MemStore::new(WindowConfig::default()),
        taken,
        creates: AtomicUsize::new(0),
        keys: Default::default(),
    });
    (Registry::new(store.clone()), store)
}

/// A Namespace: cluster-scoped, so no namespace must exist first.
fn namespace(meta: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta})
}

async fn create(reg: &Registry, meta: Value) -> Result<Written, ApiError> {
    let kind = kinds::by_kind("", "Namespace").expect("Namespace");
    reg.create(kind, None, namespace(meta), &WriteOptions::default())
        .await
}

#[tokio::test]
async fn a_taken_generated_name_is_drawn_again() {
    let (reg, store) = registry(3);
    let w = create(&reg, json!({"generateName": "web-"}))
        .await
        .expect("created");
    let name = w.object["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    let keys = store.keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 4, "three refused, the fourth stored: {keys:?}");
    assert!(keys[3].ends_with(&name), "{keys:?}");
}

#[tokio::test]
async fn generated_names_give_up_after_eight_attempts() {
    let (reg, store) = registry(usize::MAX);
    let e = create(&reg, json!({"generateName": "web-"}))
        .await
        .expect_err("every name taken");
    assert_eq!(e.reason, Reason::AlreadyExists);
    assert_eq!(e.reason.code(), 409);
    assert_eq!(store.creates.load(Ordering::SeqCst), 8);
}

#[tokio::test]
async fn a_name_the_client_chose_is_not_retried() {
    let (reg, store) = registry(1);
    let e = create(&reg, json!({"name": "web", "generateName": "web-"}))
        .await
        .expect_err("taken");
    assert_eq!(e.reason, Reason::AlreadyExists);
    assert_eq!(store.creates.load(Ordering::SeqCst), 1);
}
