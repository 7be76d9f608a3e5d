use std::time::Duration;

use balsa_api::conformance::{next_event, run_all, Setup};
use balsa_api::store::window::WindowConfig;
use balsa_api::{DeletePreconditions, KeyPrefix, ReadMode, Revision, WatchEvent, WatchOptions};

use crate::harness::{configmap, key, InProc};

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
    let mut watches = Vec::new();
    for i in 0..3 {
        let opts = WatchOptions {
            after: start,
            bookmark_interval: None,
        };
        watches.push(cluster.store(i).watch(&prefix, opts).await.expect("watch"));
    }
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
