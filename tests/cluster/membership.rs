use std::time::Duration;

use balsa_api::grpc::client::Client;
use balsa_api::{ReadMode, StoreError};

use crate::harness::{configmap, key, InProc, WAIT};

async fn eventually_local(cluster: &InProc, i: usize, name: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match cluster
            .store(i)
            .get(&key("members", name), ReadMode::Local)
            .await
        {
            Ok(_) => return,
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => panic!("local read on replica {}: {e}", i + 1),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica {} never got {name}",
            i + 1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An empty replica joins a running cluster as a voter (through a follower,
/// which redirects it to the leader), receives the existing data, and a member
/// is removed online; writes keep committing throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_join_and_leave_online() {
    let mut cluster = InProc::start(3, |_| {}).await;
    let leader = cluster.wait_leader(&[]).await;
    let ns = "members";
    cluster
        .store(leader)
        .create(key(ns, "before"), configmap(ns, "before", "1"))
        .await
        .expect("write");

    let follower = (leader + 1) % 3;
    let newcomer = cluster.join(follower).await;
    assert!(
        cluster.voters(leader).contains(&(newcomer as u64 + 1)),
        "the newcomer is a voter"
    );
    eventually_local(&cluster, newcomer, "before").await;
    cluster
        .store(newcomer)
        .create(key(ns, "via-newcomer"), configmap(ns, "via-newcomer", "1"))
        .await
        .expect("write");

    // Remove one of the original followers through the Cluster service.
    let leaving = (leader + 2) % 3;
    let client = Client::connect(&cluster.server(leader).api_addr.to_string())
        .await
        .expect("connect");
    let status = client
        .remove_member(leaving as u64 + 1)
        .await
        .expect("remove member");
    assert!(
        status.members.iter().all(|m| m.id != leaving as u64 + 1),
        "removed from the status"
    );
    assert!(!cluster.voters(leader).contains(&(leaving as u64 + 1)));
    cluster.stop(leaving).await;
    cluster
        .store(leader)
        .create(key(ns, "after"), configmap(ns, "after", "1"))
        .await
        .expect("write after removal");
    eventually_local(&cluster, newcomer, "after").await;
    let err = client.remove_member(99).await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    cluster.shutdown().await;
}
