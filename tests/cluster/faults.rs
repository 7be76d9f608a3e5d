use std::time::Duration;

use balsa_api::{ReadMode, StoreError};

use crate::harness::{configmap, key, InProc, WAIT};

/// Partition the leader with the transport seam: the others elect a new leader
/// that serves; the old one can no longer commit or serve linearizable reads,
/// and says so within its request timeout instead of hanging. After healing,
/// the old leader catches up and its uncommitted write is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_leader_is_replaced_and_cannot_commit() {
    let cluster = InProc::start(3, |o| o.replica.request_timeout = Duration::from_secs(2)).await;
    let old = cluster.wait_leader(&[]).await;
    let ns = "partition";
    cluster
        .store(old)
        .create(key(ns, "before"), configmap(ns, "before", "1"))
        .await
        .expect("write before");

    cluster.isolate(old);
    let new = cluster.wait_leader(&[old]).await;
    assert_ne!(new, old);
    let after = cluster
        .store(new)
        .create(key(ns, "after"), configmap(ns, "after", "1"))
        .await;
    after.expect("the new leader commits");

    let lost = tokio::time::timeout(
        Duration::from_secs(10),
        cluster
            .store(old)
            .create(key(ns, "lost"), configmap(ns, "lost", "1")),
    )
    .await
    .expect("the old leader answers within its request timeout");
    assert!(
        matches!(lost, Err(StoreError::Unavailable(_))),
        "old leader write: {lost:?}"
    );
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        cluster
            .store(old)
            .get(&key(ns, "before"), ReadMode::Linearizable),
    )
    .await
    .expect("the old leader answers within its request timeout");
    assert!(
        matches!(read, Err(StoreError::Unavailable(_))),
        "old leader read: {read:?}"
    );

    cluster.heal();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match cluster
            .store(old)
            .get(&key(ns, "after"), ReadMode::Local)
            .await
        {
            Ok(_) => break,
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => panic!("local read on the healed replica: {e}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the healed replica did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone = cluster
        .store(old)
        .get(&key(ns, "lost"), ReadMode::Linearizable)
        .await;
    assert!(
        matches!(gone, Err(StoreError::NotFound { .. })),
        "the uncommitted write must not appear: {gone:?}"
    );
    cluster.shutdown().await;
}

/// Replicas whose timeouts alone would take 6-7 s to replace a leader.
async fn slow_timeouts() -> InProc {
    InProc::start(3, |o| {
        o.replica.heartbeat = Duration::from_millis(100);
        o.replica.election_timeout = (Duration::from_secs(2), Duration::from_secs(3));
    })
    .await
}

fn fast_campaigns(cluster: &InProc, except: usize) -> u64 {
    (0..3)
        .filter(|i| *i != except)
        .map(|i| cluster.server(i).replica.fast_campaigns())
        .sum()
}

/// A leader whose process is gone (its peer port refuses connections) is
/// replaced as soon as the followers' leader lease allows a vote, not after
/// a further election timeout: a follower campaigns because of it, and the
/// new leader serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_leader_is_replaced_by_a_follower_that_saw_its_port_refuse() {
    let mut cluster = slow_timeouts().await;
    let old = cluster.wait_leader(&[]).await;
    cluster.stop(old).await;
    let new = cluster.wait_leader(&[old]).await;
    // Usually one; two when the dying leader's last heartbeat reached the
    // followers a turn apart and the first campaign met an unexpired lease.
    assert!(
        fast_campaigns(&cluster, old) >= 1,
        "a follower campaigned because the leader's port refused"
    );
    let ns = "probe";
    cluster
        .store(new)
        .create(key(ns, "after"), configmap(ns, "after", "1"))
        .await
        .expect("the new leader commits");
    cluster.shutdown().await;
}

/// A leader that is alive but unreachable through Raft (partitioned by the
/// transport seam) still accepts connections: the followers wait out the
/// normal timeouts and never campaign because of the probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_leader_that_still_listens_is_not_probed_away() {
    let cluster = slow_timeouts().await;
    let old = cluster.wait_leader(&[]).await;
    cluster.isolate(old);
    let new = cluster.wait_leader(&[old]).await;
    assert_ne!(new, old);
    assert_eq!(fast_campaigns(&cluster, old), 0);
    cluster.heal();
    cluster.shutdown().await;
}

/// A follower further away than the heartbeat interval (openraft 0.9 waits
/// one heartbeat interval for an AppendEntries' answer) still replicates:
/// with the other follower cut off, the leader's writes commit through it.
/// The request goes on after openraft stops waiting for it; it used to be
/// cancelled and sent again, and never arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_further_away_than_a_heartbeat_still_replicates() {
    // Election timeouts far above the delay: no one campaigns meanwhile.
    let cluster = InProc::start(3, |o| {
        o.replica.election_timeout = (Duration::from_secs(2), Duration::from_secs(3));
    })
    .await;
    let leader = cluster.wait_leader(&[]).await;
    let id = |i: usize| i as u64 + 1;
    let mut followers = (0..3).filter(|i| *i != leader);
    let (far, cut) = (followers.next().unwrap(), followers.next().unwrap());
    cluster.faults[leader].partition([id(cut)]);
    cluster.faults[cut].partition([id(leader)]);
    let heartbeat = cluster.opts[leader].replica.heartbeat;
    cluster.faults[leader].delay(id(far), heartbeat * 3);
    let ns = "far";
    for i in 0..5 {
        let name = format!("w{i}");
        tokio::time::timeout(
            Duration::from_secs(10),
            cluster
                .store(leader)
                .create(key(ns, &name), configmap(ns, &name, "1")),
        )
        .await
        .expect("the leader answers within its request timeout")
        .expect("the write commits through the far follower");
    }
    cluster.heal();
    cluster.shutdown().await;
}
