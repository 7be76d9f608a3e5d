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

/// Members snapshot at staggered points (see `snapshot_schedule`), so they do
/// not all stall building a snapshot at the same moment; each still purges
/// its log behind its own snapshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_snapshot_at_staggered_points() {
    use balsa_raft_store::snapshot_schedule::next_point;
    const EVERY: u64 = 60;
    let cluster = InProc::start(3, |o| {
        o.replica.snapshot_every = EVERY;
        o.replica.keep_after_snapshot = 5;
    })
    .await;
    let leader = cluster.wait_leader(&[]).await;
    let ns = "stagger";
    for n in 0..200 {
        let name = format!("o{n}");
        cluster
            .store(leader)
            .create(key(ns, &name), configmap(ns, &name, "1"))
            .await
            .expect("create");
    }
    let metrics = |i: usize| cluster.server(i).replica.raft().metrics().borrow().clone();
    let applied = metrics(leader).last_applied.map_or(0, |l| l.index);
    // Wait until each member has built the snapshot of its last point at or
    // below `applied`.
    let deadline = tokio::time::Instant::now() + WAIT;
    let snapshots = loop {
        let snaps: Vec<(u64, u64)> = (0..3)
            .map(|i| {
                let m = metrics(i);
                let id = i as u64 + 1;
                let last_point = next_point(id, EVERY, applied) - EVERY;
                (m.snapshot.map_or(0, |l| l.index), last_point)
            })
            .collect();
        if snaps.iter().all(|(snap, point)| snap >= point) {
            break snaps;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "members did not snapshot at their points: {snaps:?} (applied {applied})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("applied {applied}; (snapshot, point) per member: {snapshots:?}");
    for a in 0..3 {
        for b in a + 1..3 {
            let gap = snapshots[a].0.abs_diff(snapshots[b].0);
            assert!(
                gap >= EVERY / 6,
                "members {} and {} snapshot too close together: {snapshots:?}",
                a + 1,
                b + 1
            );
        }
        let purged = metrics(a).purged.map_or(0, |l| l.index);
        assert!(
            purged + 5 + EVERY >= snapshots[a].0 && purged > 0,
            "member {} purged its log behind its snapshot: purged {purged}, {snapshots:?}",
            a + 1
        );
    }
    cluster.shutdown().await;
}
