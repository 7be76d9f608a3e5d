//! The conformance suite of the storage port. Every `Store` implementation runs
//! it (in-memory here, the 3-replica Raft store in `raft-store`). Each case works
//! in its own namespace, so one store can run them all. A case panics with a
//! message naming what broke.

#![allow(clippy::unwrap_used)] // a test suite: failing loudly is its job

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};

use crate::store::{
    DeletePreconditions, EventType, KeyPrefix, ListOptions, Op, ReadMode, ResourceKey, Revision,
    Store, StoreError, WatchEvent, WatchOptions, WatchStream, MAX_OBJECT_BYTES,
};

/// What the store under test was configured with.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    /// The watch window's size in events (a small one lets the suite test 410).
    pub window_events: usize,
}

pub async fn run_all(store: Arc<dyn Store>, setup: Setup) {
    let s = store.as_ref();
    create_get(s).await;
    update_cas(s).await;
    delete_preconditions(s).await;
    txn_is_atomic(s).await;
    list_pages_are_consistent(s).await;
    list_by_namespace(s).await;
    watch_is_ordered_and_complete(s).await;
    bad_input_writes_nothing(s).await;
    concurrent_cas_loses_nothing(store.clone()).await;
    expired_and_bookmarks(s, setup).await;
    resource_changes_follow_writes(s).await;
}

pub fn key(ns: &str, name: &str) -> ResourceKey {
    ResourceKey::new("", "configmaps", Some(ns), name)
}

pub fn configmap(ns: &str, name: &str, value: &str) -> Bytes {
    let v = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{ns}-{name}")},
        "data": {"v": value},
    });
    Bytes::from(serde_json::to_vec(&v).expect("json"))
}

fn value_of(data: &[u8]) -> Value {
    serde_json::from_slice(data).expect("stored objects are JSON")
}

fn data_v(data: &[u8]) -> String {
    value_of(data)["data"]["v"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn prefix(ns: &str) -> KeyPrefix {
    KeyPrefix::resource("", "configmaps").in_namespace(Some(ns))
}

async fn create_get(s: &dyn Store) {
    let ns = "conf-create";
    let created = s
        .create(key(ns, "a"), configmap(ns, "a", "1"))
        .await
        .expect("create");
    let rv = value_of(&created.data)["metadata"]["resourceVersion"].clone();
    assert_eq!(
        rv,
        json!(created.revision.to_string()),
        "resourceVersion is the revision"
    );
    let got = s
        .get(&key(ns, "a"), ReadMode::Linearizable)
        .await
        .expect("get");
    assert_eq!(
        got, created,
        "a linearizable get sees the acknowledged create"
    );
    let err = s
        .create(key(ns, "a"), configmap(ns, "a", "2"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
    let err = s
        .get(&key(ns, "missing"), ReadMode::Linearizable)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

async fn update_cas(s: &dyn Store) {
    let ns = "conf-update";
    let v1 = s
        .create(key(ns, "a"), configmap(ns, "a", "1"))
        .await
        .expect("create");
    let v2 = s
        .update(key(ns, "a"), configmap(ns, "a", "2"), Some(v1.revision))
        .await
        .expect("update at the current revision");
    assert!(v2.revision > v1.revision);
    assert_eq!(v2.created, v1.created);
    let err = s
        .update(key(ns, "a"), configmap(ns, "a", "3"), Some(v1.revision))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { .. }),
        "stale revision: {err}"
    );
    let same = s
        .update(key(ns, "a"), configmap(ns, "a", "2"), None)
        .await
        .expect("no-op update");
    assert_eq!(
        same.revision, v2.revision,
        "a no-op update keeps the revision"
    );
    let err = s
        .update(key(ns, "missing"), configmap(ns, "missing", "1"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

async fn delete_preconditions(s: &dyn Store) {
    let ns = "conf-delete";
    let obj = s
        .create(key(ns, "a"), configmap(ns, "a", "1"))
        .await
        .expect("create");
    let wrong_uid = DeletePreconditions {
        uid: Some("other".into()),
        revision: None,
    };
    let err = s.delete(key(ns, "a"), wrong_uid).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let wrong_rev = DeletePreconditions {
        uid: None,
        revision: Some(Revision(obj.revision.0 + 1_000_000)),
    };
    let err = s.delete(key(ns, "a"), wrong_rev).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    let right = DeletePreconditions {
        uid: Some(format!("uid-{ns}-a")),
        revision: Some(obj.revision),
    };
    let deleted = s.delete(key(ns, "a"), right).await.expect("delete");
    assert!(
        deleted.revision > obj.revision,
        "a delete has its own revision"
    );
    let err = s
        .get(&key(ns, "a"), ReadMode::Linearizable)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    let err = s
        .delete(key(ns, "a"), DeletePreconditions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

async fn txn_is_atomic(s: &dyn Store) {
    let ns = "conf-txn";
    s.create(key(ns, "x"), configmap(ns, "x", "1"))
        .await
        .expect("create");
    let err = s
        .txn(vec![
            Op::Create {
                key: key(ns, "a"),
                value: configmap(ns, "a", "1"),
            },
            Op::Create {
                key: key(ns, "x"),
                value: configmap(ns, "x", "2"),
            },
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::AlreadyExists { .. }), "{err}");
    let err = s
        .get(&key(ns, "a"), ReadMode::Linearizable)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { .. }),
        "a failed batch wrote nothing: {err}"
    );
    let (rev, results) = s
        .txn(vec![
            Op::Create {
                key: key(ns, "a"),
                value: configmap(ns, "a", "1"),
            },
            Op::Update {
                key: key(ns, "x"),
                value: configmap(ns, "x", "2"),
                expected: None,
            },
        ])
        .await
        .expect("batch");
    assert_eq!(results.len(), 2);
    assert!(
        results.iter().all(|o| o.revision == rev),
        "one batch, one revision"
    );
}

async fn list_all(s: &dyn Store, p: &KeyPrefix, limit: usize) -> (Vec<String>, Vec<Revision>) {
    let mut names = Vec::new();
    let mut revs = Vec::new();
    let mut opts = ListOptions {
        limit: Some(limit),
        ..Default::default()
    };
    loop {
        let page = s.list(p, opts.clone()).await.expect("list");
        names.extend(
            page.items
                .iter()
                .map(|o| format!("{}={}", o.key.name, data_v(&o.data))),
        );
        revs.push(page.revision);
        match page.continue_token {
            Some(t) => opts.continue_token = Some(t),
            None => return (names, revs),
        }
    }
}

async fn list_pages_are_consistent(s: &dyn Store) {
    let ns = "conf-list";
    for n in ["a", "b", "c", "d", "e"] {
        s.create(key(ns, n), configmap(ns, n, "1"))
            .await
            .expect("create");
    }
    let first = s
        .list(
            &prefix(ns),
            ListOptions {
                limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .expect("first page");
    let names: Vec<_> = first.items.iter().map(|o| o.key.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let token = first.continue_token.clone().expect("more pages");
    // Writes between pages must not show in later pages.
    s.delete(key(ns, "c"), DeletePreconditions::default())
        .await
        .expect("delete c");
    s.update(key(ns, "d"), configmap(ns, "d", "2"), None)
        .await
        .expect("update d");
    s.create(key(ns, "f"), configmap(ns, "f", "1"))
        .await
        .expect("create f");
    let second = s
        .list(
            &prefix(ns),
            ListOptions {
                limit: Some(10),
                continue_token: Some(token),
                ..Default::default()
            },
        )
        .await
        .expect("second page");
    let names: Vec<_> = second
        .items
        .iter()
        .map(|o| format!("{}={}", o.key.name, data_v(&o.data)))
        .collect();
    assert_eq!(
        names,
        ["c=1", "d=1", "e=1"],
        "the second page is at the first page's revision"
    );
    assert_eq!(second.revision, first.revision);
    assert!(second.continue_token.is_none());
    let (now, _) = list_all(s, &prefix(ns), 2).await;
    assert_eq!(now, ["a=1", "b=1", "d=2", "e=1", "f=1"]);
    let exact = s
        .list(
            &prefix(ns),
            ListOptions {
                revision: Some(first.revision),
                ..Default::default()
            },
        )
        .await
        .expect("list at an exact revision");
    assert_eq!(exact.items.len(), 5);
    let err = s
        .list(
            &prefix(ns),
            ListOptions {
                continue_token: Some("garbage".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
}

async fn list_by_namespace(s: &dyn Store) {
    for ns in ["conf-ns-1", "conf-ns-2"] {
        s.create(key(ns, "a"), configmap(ns, "a", "1"))
            .await
            .expect("create");
    }
    let one = s
        .list(&prefix("conf-ns-1"), ListOptions::default())
        .await
        .expect("list");
    assert_eq!(one.items.len(), 1);
    let all = s
        .list(
            &KeyPrefix::resource("", "configmaps"),
            ListOptions::default(),
        )
        .await
        .expect("list all namespaces");
    let in_both = all
        .items
        .iter()
        .filter(|o| {
            o.key
                .namespace
                .as_deref()
                .is_some_and(|n| n.starts_with("conf-ns-"))
        })
        .count();
    assert_eq!(in_both, 2);
}

pub async fn next_event(w: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(10), w.next())
        .await
        .expect("a watch event within 10 s")
        .expect("the watch stream stays open")
        .expect("no watch error")
}

async fn watch_is_ordered_and_complete(s: &dyn Store) {
    let ns = "conf-watch";
    let start = s.revision(ReadMode::Linearizable).await.expect("revision");
    let mut w = s
        .watch(
            &prefix(ns),
            WatchOptions {
                after: start,
                bookmark_interval: None,
            },
        )
        .await
        .expect("watch");
    let a = s
        .create(key(ns, "a"), configmap(ns, "a", "1"))
        .await
        .expect("create");
    s.create(key("conf-other", "a"), configmap("conf-other", "a", "1"))
        .await
        .expect("create");
    let a2 = s
        .update(key(ns, "a"), configmap(ns, "a", "2"), None)
        .await
        .expect("update");
    let d = s
        .delete(key(ns, "a"), DeletePreconditions::default())
        .await
        .expect("delete");
    let mut seen = Vec::new();
    for _ in 0..3 {
        match next_event(&mut w).await {
            WatchEvent::Event(e) => seen.push((e.kind, e.revision, e.object.revision)),
            WatchEvent::Bookmark(_) => {}
        }
    }
    assert_eq!(
        seen,
        [
            (EventType::Added, a.revision, a.revision),
            (EventType::Modified, a2.revision, a2.revision),
            (EventType::Deleted, d.revision, d.revision),
        ],
        "events in revision order, only this namespace, deletes at their own revision"
    );
    // A second watch from the same start replays the same sequence.
    let mut again = s
        .watch(
            &prefix(ns),
            WatchOptions {
                after: start,
                bookmark_interval: None,
            },
        )
        .await
        .expect("watch again");
    for (kind, rev, _) in &seen {
        match next_event(&mut again).await {
            WatchEvent::Event(e) => assert_eq!((&e.kind, &e.revision), (kind, rev)),
            WatchEvent::Bookmark(b) => panic!("unexpected bookmark {b}"),
        }
    }
}

async fn bad_input_writes_nothing(s: &dyn Store) {
    let ns = "conf-bad";
    let cases: Vec<(ResourceKey, Bytes)> = vec![
        (key(ns, "a/b"), configmap(ns, "a", "1")),
        (key(ns, "a"), Bytes::from_static(b"{not json")),
        (key(ns, "a"), configmap(ns, "other-name", "1")),
        (
            key(ns, "a"),
            configmap(ns, "a", &"x".repeat(MAX_OBJECT_BYTES + 1)),
        ),
    ];
    for (k, v) in cases {
        let err = s.create(k, v).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Invalid(_) | StoreError::TooLarge { .. }),
            "bad input gets Invalid or TooLarge, got {err}"
        );
    }
    let listed = s
        .list(&prefix(ns), ListOptions::default())
        .await
        .expect("list");
    assert!(listed.items.is_empty(), "nothing was written");
}

async fn concurrent_cas_loses_nothing(store: Arc<dyn Store>) {
    let ns = "conf-cas";
    store
        .create(key(ns, "counter"), configmap(ns, "counter", "0"))
        .await
        .expect("create");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                loop {
                    let cur = store
                        .get(&key(ns, "counter"), ReadMode::Linearizable)
                        .await
                        .expect("get");
                    let n: u64 = data_v(&cur.data).parse().expect("a number");
                    let next = configmap(ns, "counter", &(n + 1).to_string());
                    match store
                        .update(key(ns, "counter"), next, Some(cur.revision))
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("CAS update failed: {e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer task");
    }
    let end = store
        .get(&key(ns, "counter"), ReadMode::Linearizable)
        .await
        .expect("get");
    assert_eq!(data_v(&end.data), "40", "every successful CAS counted once");
}

async fn expired_and_bookmarks(s: &dyn Store, setup: Setup) {
    let ns = "conf-expire";
    let start = s
        .create(key(ns, "w"), configmap(ns, "w", "1"))
        .await
        .expect("create")
        .revision;
    let mut w = s
        .watch(
            &prefix(ns),
            WatchOptions {
                after: start,
                bookmark_interval: Some(Duration::from_millis(200)),
            },
        )
        .await
        .expect("watch with bookmarks");
    let page = s
        .list(
            &prefix("conf-list"),
            ListOptions {
                limit: Some(1),
                ..Default::default()
            },
        )
        .await
        .expect("list");
    let old_token = page
        .continue_token
        .expect("conf-list has more than one item");
    // Push `start` out of the window with writes elsewhere.
    let mut last = start;
    for i in 0..setup.window_events + 5 {
        let n = format!("f{i}");
        last = s
            .create(key("conf-filler", &n), configmap("conf-filler", &n, "1"))
            .await
            .expect("filler")
            .revision;
    }
    // A lagging replica may still hold `start`; wait until it has applied the
    // fillers (a linearizable read) before expecting 410.
    s.revision(ReadMode::Linearizable)
        .await
        .expect("read barrier");
    let err = s
        .watch(
            &prefix(ns),
            WatchOptions {
                after: start,
                bookmark_interval: None,
            },
        )
        .await
        .err()
        .expect("a watch from a compacted revision fails");
    assert!(
        matches!(err, StoreError::Expired { .. }),
        "410 Expired, got {err}"
    );
    let err = s
        .list(
            &prefix("conf-list"),
            ListOptions {
                continue_token: Some(old_token),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Expired { .. }),
        "an expired continue token: {err}"
    );
    // The idle watcher's bookmarks moved forward: resuming from one works.
    let mut bookmark = start;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while bookmark < last {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no bookmark reached {last}"
        );
        match next_event(&mut w).await {
            WatchEvent::Bookmark(b) => {
                assert!(b >= bookmark, "bookmarks never go backwards");
                bookmark = b;
            }
            WatchEvent::Event(e) => panic!("unexpected event at {}", e.revision),
        }
    }
    drop(w);
    let mut resumed = s
        .watch(
            &prefix(ns),
            WatchOptions {
                after: bookmark,
                bookmark_interval: None,
            },
        )
        .await
        .expect("a watch resumed from a bookmark is not expired");
    let upd = s
        .update(key(ns, "w"), configmap(ns, "w", "2"), None)
        .await
        .expect("update");
    match next_event(&mut resumed).await {
        WatchEvent::Event(e) => assert_eq!(e.revision, upd.revision),
        WatchEvent::Bookmark(b) => panic!("unexpected bookmark {b}"),
    }
}

/// Waits until `changes` shows `rev` or later; what it shows then.
async fn changes_reach(
    changes: &mut tokio::sync::watch::Receiver<Revision>,
    rev: Revision,
) -> Revision {
    let reached = changes.wait_for(|at| *at >= rev);
    match tokio::time::timeout(Duration::from_secs(10), reached).await {
        Ok(Ok(at)) => *at,
        Ok(Err(_)) => panic!("the store dropped its changes of a resource"),
        Err(_) => panic!("the changes of a resource never reached {rev}"),
    }
}

/// `resource_changes` moves to a write of its resource once a local read
/// sees that write, and stays put while other resources are written.
async fn resource_changes_follow_writes(s: &dyn Store) {
    let ns = "conf-changes";
    let Some(mut changes) = s.resource_changes("", "configmaps") else {
        return;
    };
    let created = s
        .create(key(ns, "a"), configmap(ns, "a", "1"))
        .await
        .expect("create");
    let at = changes_reach(&mut changes, created.revision).await;
    assert_eq!(at, created.revision, "the change is the write's revision");
    let got = s
        .get(&key(ns, "a"), ReadMode::Local)
        .await
        .expect("a local get once the change shows");
    assert_eq!(got.revision, created.revision);

    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "s", "namespace": ns, "uid": "uid-conf-changes-s"},
    });
    let mut secrets = s
        .resource_changes("", "secrets")
        .expect("a store that follows one resource follows all");
    let secret = s
        .create(
            ResourceKey::new("", "secrets", Some(ns), "s"),
            Bytes::from(serde_json::to_vec(&secret).unwrap()),
        )
        .await
        .expect("create a secret");
    changes_reach(&mut secrets, secret.revision).await;
    assert_eq!(
        *changes.borrow(),
        at,
        "a secret's write moved the configmaps' changes"
    );
}
