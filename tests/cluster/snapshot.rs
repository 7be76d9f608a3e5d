use std::time::Duration;

use balsa_api::{KeyPrefix, ListOptions, ReadMode, StoreError};

use crate::harness::{configmap, key, InProc, WAIT};

/// A replica that was down while the others snapshotted and purged their logs
/// catches up by receiving a snapshot, then follows the log again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_missed_a_snapshot_catches_up() {
    let mut cluster = InProc::start(3, |o| {
        o.replica.snapshot_every = 40;
        o.replica.keep_after_snapshot = 5;
    })
    .await;
    let leader = cluster.wait_leader(&[]).await;
    let lagger = (leader + 1) % 3;
    cluster.stop(lagger).await;
    let ns = "snap";
    for n in 0..150 {
        let name = format!("o{n}");
        cluster
            .store(leader)
            .create(key(ns, &name), configmap(ns, &name, "1"))
            .await
            .expect("create");
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let m = cluster
            .server(leader)
            .replica
            .raft()
            .metrics()
            .borrow()
            .clone();
        if m.purged.is_some_and(|p| p.index > 100) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "leader never purged its log: {:?}",
            m.purged
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.restart(lagger).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match cluster
            .store(lagger)
            .get(&key(ns, "o149"), ReadMode::Local)
            .await
        {
            Ok(_) => break,
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => panic!("local read on the restarted replica: {e}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the restarted replica did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let snapshot = cluster
        .server(lagger)
        .replica
        .raft()
        .metrics()
        .borrow()
        .snapshot;
    assert!(
        snapshot.is_some(),
        "the replica caught up through a snapshot"
    );
    let listed = cluster
        .store(lagger)
        .list(
            &KeyPrefix::resource("", "configmaps").in_namespace(Some(ns)),
            ListOptions {
                read: ReadMode::Local,
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 150);
    // And it follows the log again afterwards.
    cluster
        .store(leader)
        .create(key(ns, "later"), configmap(ns, "later", "1"))
        .await
        .expect("create");
    let got = cluster
        .store(lagger)
        .get(&key(ns, "later"), ReadMode::Linearizable)
        .await;
    assert!(got.is_ok(), "{got:?}");
    cluster.shutdown().await;
}
