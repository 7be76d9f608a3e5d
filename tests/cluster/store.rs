use std::time::Duration;

use balsa_api::conformance::{next_event, run_all, Setup};
use balsa_api::store::window::WindowConfig;
use balsa_api::{DeletePreconditions, KeyPrefix, ReadMode, Revision, WatchEvent, WatchOptions};

use crate::harness::{configmap, key, InProc};

/// A watch on `prefix` from `after` on each of the three replicas.
async fn watch_every_replica(
    cluster: &InProc,
    prefix: &KeyPrefix,
    after: Revision,
) -> Vec<balsa_api::WatchStream> {
    let mut watches = Vec::new();
    for i in 0..3 {
        let opts = WatchOptions {
            after,
            bookmark_interval: None,
        };
        watches.push(cluster.store(i).watch(prefix, opts).await.expect("watch"));
    }
    watches
}

/// The storage port's conformance suite, through a follower (so every write is
/// forwarded and every read takes a read-index from the leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_store_conforms_through_a_follower() {
    let setup = Setup { window_events: 64 };
    let cluster = InProc::start(3, |o| {
        o.replica.window = WindowConfig::events(setup.window_events)
    })
    .await;
    let leader = cluster.wait_leader(&[]).await;
    let follower = (leader + 1) % 3;
    run_all(cluster.store(follower), setup).await;
    cluster.shutdown().await;
}

/// Writes through all replicas at once; every replica's watch yields the same
/// events, in strictly increasing revision order, none twice, none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_replica_watches_the_same_history() {
    let cluster = InProc::start(3, |_| {}).await;
    let prefix = KeyPrefix::resource("", "configmaps");
    let start = cluster
        .store(0)
        .revision(ReadMode::Linearizable)
        .await
        .expect("revision");
    let mut watches = watch_every_replica(&cluster, &prefix, start).await;
    let mut writers = Vec::new();
    for w in 0..3 {
        let store = cluster.store(w);
        writers.push(tokio::spawn(async move {
            let ns = format!("hist-{w}");
            let mut last = Revision(0);
            let mut count = 0;
            for n in 0..20 {
                let name = format!("o{n}");
                last = last.max(
                    store
                        .create(key(&ns, &name), configmap(&ns, &name, "1"))
                        .await
                        .expect("create")
                        .revision,
                );
                last = last.max(
                    store
                        .update(key(&ns, &name), configmap(&ns, &name, "2"), None)
                        .await
                        .expect("update")
                        .revision,
                );
                count += 2;
                if n % 4 == 0 {
                    last = last.max(
                        store
                            .delete(key(&ns, &name), DeletePreconditions::default())
                            .await
                            .expect("delete")
                            .revision,
                    );
                    count += 1;
                }
            }
            (last, count)
        }));
    }
    let mut last = Revision(0);
    let mut total = 0;
    for w in writers {
        let (l, c) = w.await.expect("writer");
        last = last.max(l);
        total += c;
    }
    let mut histories = Vec::new();
    for w in &mut watches {
        let mut seen = Vec::new();
        while seen.last().is_none_or(|(rev, _, _)| *rev < last) {
            match next_event(w).await {
                WatchEvent::Event(e) => seen.push((e.revision, e.kind, e.object.key.clone())),
                WatchEvent::Bookmark(_) => {}
            }
        }
        assert!(
            seen.windows(2).all(|p| p[0].0 < p[1].0),
            "revisions strictly increase"
        );
        assert_eq!(seen.len(), total, "one event per acknowledged write");
        histories.push(seen);
    }
    assert_eq!(histories[0], histories[1]);
    assert_eq!(histories[0], histories[2]);
    // A watch that ends and resumes from a revision sees exactly what followed it.
    let mid = histories[0][total / 2].0;
    let mut resumed = cluster
        .store(2)
        .watch(
            &prefix,
            WatchOptions {
                after: mid,
                bookmark_interval: Some(Duration::from_secs(60)),
            },
        )
        .await
        .expect("resume");
    for expected in histories[0].iter().filter(|(rev, _, _)| *rev > mid) {
        match next_event(&mut resumed).await {
            WatchEvent::Event(e) => {
                assert_eq!((e.revision, e.kind, e.object.key.clone()), expected.clone())
            }
            WatchEvent::Bookmark(b) => panic!("unexpected bookmark {b}"),
        }
    }
    cluster.shutdown().await;
}

/// Concurrent writes at the leader share Raft entries (the proposer groups
/// them), yet each is its own transaction: it succeeds or fails alone and
/// gets a revision of its own, and every replica's watch yields one event per
/// acknowledged write at that revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_entries_but_not_revisions() {
    const WRITERS: usize = 120;
    let cluster = InProc::start(3, |_| {}).await;
    let leader = cluster.wait_leader(&[]).await;
    let prefix = KeyPrefix::resource("", "configmaps").in_namespace(Some("batched"));
    let start = cluster
        .store(leader)
        .revision(ReadMode::Linearizable)
        .await
        .expect("revision");
    let mut watches = watch_every_replica(&cluster, &prefix, start).await;
    let index = |c: &InProc| {
        c.server(leader)
            .replica
            .raft()
            .metrics()
            .borrow()
            .last_log_index
    };
    let entries_before = index(&cluster).unwrap_or(0);
    // Two writers per name: exactly one create of each wins; the winner
    // then updates its object at the revision it got, the loser at a
    // stale one (0), which must fail alone.
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = cluster.store(leader);
        writers.push(tokio::spawn(async move {
            let name = format!("o{}", w / 2);
            let mut acked = Vec::new();
            let expected = match store
                .create(key("batched", &name), configmap("batched", &name, "1"))
                .await
            {
                Ok(o) => {
                    acked.push((o.revision, name.clone()));
                    o.revision
                }
                Err(balsa_api::StoreError::AlreadyExists { .. }) => Revision(0),
                Err(e) => panic!("create {name}: {e}"),
            };
            let updated = store
                .update(
                    key("batched", &name),
                    configmap("batched", &name, &format!("from-{w}")),
                    Some(expected),
                )
                .await;
            match (expected, updated) {
                (Revision(0), Err(balsa_api::StoreError::Conflict { .. })) => {}
                (Revision(0), other) => panic!("a stale update of {name} gave {other:?}"),
                (_, Ok(o)) => acked.push((o.revision, name.clone())),
                (_, Err(e)) => panic!("update {name}: {e}"),
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    let entries = index(&cluster).unwrap_or(0) - entries_before;
    assert_eq!(acked.len(), WRITERS, "one create and one update per name");
    assert!(
        (entries as usize) < acked.len() / 2,
        "{} writes took {entries} entries: concurrent writes share entries",
        acked.len()
    );
    acked.sort();
    assert!(
        acked.windows(2).all(|p| p[0].0 < p[1].0),
        "every write has a revision of its own"
    );
    for w in &mut watches {
        let mut seen = Vec::new();
        while seen.len() < acked.len() {
            match next_event(w).await {
                WatchEvent::Event(e) => seen.push((e.revision, e.object.key.name.clone())),
                WatchEvent::Bookmark(_) => {}
            }
        }
        assert_eq!(
            seen, acked,
            "one event per acknowledged write, at its revision"
        );
    }
    cluster.shutdown().await;
}
