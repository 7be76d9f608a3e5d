//! A generated name that is already taken is drawn again (upstream's
//! RetryGenerateName): the store here refuses the first creates as if
//! their names were taken.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::json;

use super::*;
use crate::store::hooked::Hooked;
use crate::store::Op;

/// What the store saw: every create's key, and how many there were.
#[derive(Default)]
struct Creates {
    count: AtomicUsize,
    keys: Mutex<Vec<String>>,
}

/// A registry whose store answers AlreadyExists to the first `taken`
/// creates, as if their names were taken.
fn registry(taken: usize) -> (Registry, Arc<Creates>) {
    let seen = Arc::new(Creates::default());
    let creates = seen.clone();
    let store = Hooked::new().on_txn(move |ops| {
        let Some(Op::Create { key, .. }) = ops.first() else {
            return None;
        };
        creates.keys.lock().unwrap().push(key.to_string());
        (creates.count.fetch_add(1, Ordering::SeqCst) < taken).then(|| StoreError::AlreadyExists {
            key: key.to_string(),
        })
    });
    (Registry::new(Arc::new(store)), seen)
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
    assert_eq!(store.count.load(Ordering::SeqCst), 8);
}

#[tokio::test]
async fn a_name_the_client_chose_is_not_retried() {
    let (reg, store) = registry(1);
    let e = create(&reg, json!({"name": "web", "generateName": "web-"}))
        .await
        .expect_err("taken");
    assert_eq!(e.reason, Reason::AlreadyExists);
    assert_eq!(store.count.load(Ordering::SeqCst), 1);
}
