//! Cluster identity over real sockets: a peer message from another cluster is
//! refused before Raft sees it, and a member of another cluster cannot be
//! added. (A wiped member restarted with `--init`, as real processes, is in
//! `processes`.)

use std::collections::BTreeMap;
use std::time::Duration;

use balsa::server::{self, ServerOptions};
use balsa_api::{Op, StoreError};
use balsa_proto::peer::peer_client::PeerClient;
use balsa_proto::peer::{PeerRequest, RaftKind, RaftRequest};
use balsa_proto::WIRE_VERSION;
use balsa_raft_store::identity::METADATA_KEY;
use balsa_raft_store::types::TypeConfig;
use balsa_raft_store::{codec, ClusterId, Faults, Member};
use openraft::raft::AppendEntriesRequest;
use openraft::Vote;
use tonic::Code;

use crate::harness::{InProc, WAIT};

/// An AppendEntries from a "leader" (node 9) of a far higher term, under
/// `cluster_id`: were it handled, the receiver would take that term.
fn append(term: u64, cluster_id: &str) -> RaftRequest {
    let rpc = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(term, 9),
        prev_log_id: None,
        entries: Vec::new(),
        leader_commit: None,
    };
    RaftRequest {
        version: WIRE_VERSION,
        from: 9,
        kind: RaftKind::AppendEntries as i32,
        payload: codec::encode(&rpc).expect("encode").into(),
        cluster_id: cluster_id.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_message_from_another_cluster_is_refused_before_raft() {
    let cluster = InProc::start(3, |_| {}).await;
    let leader = cluster.wait_leader(&[]).await;
    let target = cluster.server((leader + 1) % 3);
    let ours = target.replica.identity().wire();
    assert!(!ours.is_empty(), "an initialized member has a cluster id");
    for i in 0..3 {
        assert_eq!(
            cluster.server(i).replica.identity().wire(),
            ours,
            "members bootstrapped with one token agree on the id"
        );
    }
    let term = || target.replica.raft().metrics().borrow().current_term;
    let high = term() + 1_000;
    let mut client = PeerClient::connect(format!("http://{}", target.peer_addr))
        .await
        .expect("connect");

    let foreign = ClusterId::random().to_string();
    for refused in [foreign.as_str(), ""] {
        let err = client
            .raft(append(high, refused))
            .await
            .expect_err("a message of another cluster is refused");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains(&ours), "{}", err.message());
        if !refused.is_empty() {
            assert!(err.message().contains(refused), "{}", err.message());
        }
        assert_eq!(
            err.metadata()
                .get(METADATA_KEY)
                .and_then(|v| v.to_str().ok()),
            Some(ours.as_str()),
            "the receiver names its id for the sender to report"
        );
    }
    let err = client
        .forward(PeerRequest {
            version: WIRE_VERSION,
            from: 9,
            payload: codec::encode(&Vec::<Op>::new()).expect("encode").into(),
            cluster_id: foreign.clone(),
        })
        .await
        .expect_err("a forwarded write of another cluster is refused");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(term() < high, "Raft never saw the refused messages");
    assert!(
        target
            .replica
            .own_status()
            .cluster_mismatch
            .contains(&foreign),
        "the member reports the mismatch"
    );

    // The very same message under this cluster's id does reach Raft (so the
    // id is what kept it out): the receiver takes the higher term.
    client
        .raft(append(high, &ours))
        .await
        .expect("a message of this cluster is handled");
    let deadline = tokio::time::Instant::now() + WAIT;
    while term() < high {
        assert!(tokio::time::Instant::now() < deadline, "term never moved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.shutdown().await;
}

/// Adding a member that belongs to another cluster fails and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_member_of_another_cluster_cannot_be_added() {
    let cluster = InProc::start(3, |_| {}).await;
    let leader = cluster.wait_leader(&[]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut o = ServerOptions::new(4, dir.path().join("stranger"));
    o.init = Some(BTreeMap::new());
    let stranger = server::start(o, Faults::default())
        .await
        .expect("a one-member cluster of its own");
    let member = Member {
        peer_addr: stranger.peer_addr.to_string(),
        api_addr: stranger.api_addr.to_string(),
    };
    let err = cluster
        .server(leader)
        .replica
        .add_member(4, member, false)
        .await
        .expect_err("a member of another cluster");
    assert!(
        matches!(&err, StoreError::Invalid(m) if m.contains("cluster id mismatch")),
        "{err}"
    );
    let nodes: Vec<u64> = cluster
        .server(leader)
        .replica
        .raft()
        .metrics()
        .borrow()
        .membership_config
        .nodes()
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(nodes, [1, 2, 3], "the membership is unchanged");
    stranger.stop().await;
    cluster.shutdown().await;
}
