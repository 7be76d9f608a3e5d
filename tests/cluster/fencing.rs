//! Raft leadership is the controller lease: a write a control loop made
//! while its master led is refused once that master no longer leads in the
//! same term, rather than forwarded to the new leader next to the new
//! leader's own writes; and a ReplicaSet scaling up while its leader is cut
//! off never has more live pods than it asks for.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use balsa_api::client::{watcher, Api, Client, Event, Patch, PatchParams, PostParams};
use balsa_proto::objects::objects_client::ObjectsClient;
use balsa_proto::objects::WriteRequest;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use openraft::ServerState;
use serde_json::json;
use tokio::task::JoinHandle;
use tonic::metadata::MetadataValue;

use crate::controllers::{
    client_of, eventually, fake_kubelet, namespace, replicaset, selector, template,
};
use crate::harness::InProc;

/// The header a leader-only control loop's writes carry (its Raft term).
const FENCE_HEADER: &str = "balsa-fence-term";

fn term_of(c: &InProc, i: usize) -> u64 {
    c.server(i).replica.raft().metrics().borrow().current_term
}

/// Creates a ConfigMap through replica `i`'s gRPC API, fenced by `term`.
async fn create_fenced(c: &InProc, i: usize, name: &str, term: u64) -> Result<(), tonic::Status> {
    let addr = format!("http://{}", c.server(i).api_addr);
    let mut objects = ObjectsClient::connect(addr).await.expect("connect");
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"}, "data": {"k": "v"}});
    let mut req = tonic::Request::new(WriteRequest {
        object: serde_json::to_vec(&body).expect("JSON").into(),
        ..Default::default()
    });
    req.metadata_mut()
        .insert(FENCE_HEADER, MetadataValue::from(term));
    objects.create(req).await.map(|_| ())
}

async fn exists(c: &InProc, name: &str) -> bool {
    let running = c.servers.iter().flatten();
    let client = Client::new(running.map(|s| s.api_addr.to_string()).collect()).expect("client");
    let api = Api::<ConfigMap>::namespaced(client, "default");
    api.get_opt(name).await.expect("read").is_some()
}

/// Whether replica `i` leads and has applied an entry of its own term (its
/// controllers act only then).
fn holds_lease(c: &InProc, i: usize) -> bool {
    let m = c.server(i).replica.raft().metrics().borrow().clone();
    m.state == ServerState::Leader
        && m.last_applied.map(|l| l.leader_id.term) == Some(m.current_term)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fenced_write_is_refused_unless_its_term_still_leads() {
    let mut c = InProc::start(3, |_| {}).await;
    let leader = c.wait_leader(&[]).await;
    let follower = (leader + 1) % 3;
    eventually("the leader's lease", || async {
        holds_lease(&c, leader).then_some(())
    })
    .await;
    let term = term_of(&c, leader);

    // At the leader of its term: written.
    create_fenced(&c, leader, "at-leader", term)
        .await
        .expect("a write fenced by the current term, at the leader");
    assert!(exists(&c, "at-leader").await);

    // At a follower: refused, never forwarded (a deposed leader's master is
    // a follower by the time its queued writes go out).
    let e = create_fenced(&c, follower, "at-follower", term)
        .await
        .expect_err("a fenced write at a follower is not forwarded");
    assert_eq!(e.code(), tonic::Code::Aborted, "{e:?}");
    assert!(!exists(&c, "at-follower").await);

    // The leader goes: its term's writes are refused at the new leader too,
    // and the new term's are written.
    c.stop(leader).await;
    let next = c.wait_leader(&[leader]).await;
    let new_term = term_of(&c, next);
    assert!(new_term > term);
    eventually("the new leader's lease", || async {
        holds_lease(&c, next).then_some(())
    })
    .await;
    let e = create_fenced(&c, next, "old-term", term)
        .await
        .expect_err("a write of the old term at the new leader");
    assert_eq!(e.code(), tonic::Code::Aborted, "{e:?}");
    assert!(!exists(&c, "old-term").await);
    create_fenced(&c, next, "new-term", new_term)
        .await
        .expect("a write of the new term at the new leader");

    // Unfenced writes are forwarded from a follower as before.
    let other = (0..3).find(|i| *i != leader && *i != next).unwrap();
    let cms = Api::<ConfigMap>::namespaced(
        Client::new(vec![c.server(other).api_addr.to_string()]).unwrap(),
        "default",
    );
    let cm = serde_json::from_value(json!({"metadata": {"name": "plain"}})).unwrap();
    cms.create(&cm, &PostParams::default())
        .await
        .expect("an unfenced write through a follower");
    c.shutdown().await;
}

/// Heals the partition, waits for the old leader to step down and the pods
/// to settle; the most live pods seen at once, and how many live now.
async fn heal_and_settle(c: &InProc, leader: usize, live: &Mutex<Live>) -> (usize, usize) {
    c.heal();
    eventually("the old leader to step down", || async {
        let state = c.server(leader).replica.raft().metrics().borrow().state;
        (state != ServerState::Leader).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let l = live.lock().expect("live pods");
    (l.most, l.count())
}

/// The pods of a namespace as a watch shows them (live: not being deleted;
/// and their image), and the most live ones seen at once.
#[derive(Default)]
struct Live {
    pods: BTreeMap<String, (bool, String)>,
    most: usize,
}

impl Live {
    fn count(&self) -> usize {
        self.pods.values().filter(|(live, _)| *live).count()
    }

    fn count_of(&self, image: &str) -> usize {
        let of = |(live, i): &&(bool, String)| *live && i == image;
        self.pods.values().filter(of).count()
    }

    /// Follows namespace `ns` through every master but `leader`: the one
    /// about to be cut off would show only its own, frozen, state.
    fn follow(c: &InProc, leader: usize, ns: &str) -> (Arc<Mutex<Live>>, JoinHandle<()>) {
        let live = Arc::new(Mutex::new(Live::default()));
        let others = (0..3).filter(|i| *i != leader);
        let others = others.map(|i| c.server(i).api_addr.to_string()).collect();
        let pods = Api::<Pod>::namespaced(Client::new(others).expect("client"), ns);
        let out = live.clone();
        let task = tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher(pods, Default::default()));
            while let Some(e) = events.next().await {
                let mut l = out.lock().expect("live pods");
                match e {
                    Ok(Event::Apply(p) | Event::InitApply(p)) => {
                        let name = p.metadata.name.clone().unwrap_or_default();
                        let image = p.spec.as_ref().and_then(|s| s.containers[0].image.clone());
                        let live = p.metadata.deletion_timestamp.is_none();
                        l.pods.insert(name, (live, image.unwrap_or_default()));
                    }
                    Ok(Event::Delete(p)) => {
                        l.pods.remove(&p.metadata.name.clone().unwrap_or_default());
                    }
                    _ => {}
                }
                l.most = l.most.max(l.count());
            }
        });
        (live, task)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replicaset_scaling_up_across_a_leader_partition_never_exceeds_its_replicas() {
    const REPLICAS: usize = 300;
    // Writes wait long enough for the partition to heal (the old leader's
    // queued creates are still pending then, as on a loaded machine).
    let c = InProc::start(3, |o| o.replica.request_timeout = Duration::from_secs(20)).await;
    let client = client_of(&c);
    namespace(&client, "fence").await;
    let leader = c.wait_leader(&[]).await;
    let (live, watch) = Live::follow(&c, leader, "fence");
    let rss = Api::<ReplicaSet>::namespaced(client.clone(), "fence");
    rss.create(&replicaset(REPLICAS as i32), &PostParams::default())
        .await
        .expect("create the ReplicaSet");
    // Mid-way through the slow-start batches, the leader is cut off with a
    // batch of creates in flight; another master takes over and creates the
    // rest; then the old leader rejoins, and whatever it still had queued
    // must not add pods.
    eventually("the scale-up under way", || async {
        (live.lock().unwrap().count() >= 15).then_some(())
    })
    .await;
    c.isolate(leader);
    let next = c.wait_leader(&[leader]).await;
    assert_ne!(next, leader);
    eventually(
        "the new leader's controllers to create every pod",
        || async { (live.lock().unwrap().count() >= REPLICAS).then_some(()) },
    )
    .await;
    // The old leader learns the new term and steps down; then the pods
    // settle at the ReplicaSet's count and stay there.
    let (most, now) = heal_and_settle(&c, leader, &live).await;
    eprintln!("most live pods at once: {most} for {REPLICAS} replicas ({now} live now)");
    assert!(
        most <= REPLICAS,
        "{most} live pods at once for a ReplicaSet of {REPLICAS}: a deposed leader's creates were applied"
    );
    eventually("the pods to settle at the ReplicaSet's count", || async {
        (live.lock().expect("live pods").count() == REPLICAS).then_some(())
    })
    .await;
    watch.abort();
    c.shutdown().await;
}

/// A rolling update (maxSurge 25%, maxUnavailable 25%) whose leader is cut
/// off mid-way: the new leader's controllers finish it, and the pods never
/// exceed replicas + maxSurge.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_across_a_leader_partition_stays_within_max_surge() {
    const REPLICAS: usize = 200;
    const SURGE: usize = REPLICAS / 4;
    let c = InProc::start(3, |o| o.replica.request_timeout = Duration::from_secs(20)).await;
    let client = client_of(&c);
    namespace(&client, "roll").await;
    let leader = c.wait_leader(&[]).await;
    let (live, watch) = Live::follow(&c, leader, "roll");
    // Pods become ready (and graceful deletions finish), so the rollout can
    // move on.
    let kubelet = fake_kubelet(client.clone(), "roll", Default::default());
    let deps = Api::<Deployment>::namespaced(client.clone(), "roll");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": REPLICAS,
            "selector": selector(),
            "template": template("v1"),
            "strategy": {"type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
        },
    }))
    .expect("a Deployment");
    deps.create(&d, &PostParams::default())
        .await
        .expect("create the Deployment");
    eventually("every v1 pod", || async {
        (live.lock().expect("live pods").count_of("v1") == REPLICAS).then_some(())
    })
    .await;
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "v2"}]}}}});
    deps.patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("roll out v2");
    eventually("the rollout under way", || async {
        (live.lock().expect("live pods").count_of("v2") >= 15).then_some(())
    })
    .await;
    c.isolate(leader);
    let next = c.wait_leader(&[leader]).await;
    assert_ne!(next, leader);
    eventually("the new leader to finish the rollout", || async {
        let l = live.lock().expect("live pods");
        (l.count_of("v2") == REPLICAS && l.count() == REPLICAS).then_some(())
    })
    .await;
    let (most, now) = heal_and_settle(&c, leader, &live).await;
    eprintln!(
        "most live pods at once: {most} for {REPLICAS} replicas + {SURGE} surge ({now} live now)"
    );
    assert!(
        most <= REPLICAS + SURGE,
        "{most} live pods at once for {REPLICAS} replicas and a maxSurge of {SURGE}"
    );
    eventually("the pods to settle at the new template", || async {
        let l = live.lock().expect("live pods");
        (l.count_of("v2") == REPLICAS && l.count() == REPLICAS).then_some(())
    })
    .await;
    kubelet.abort();
    watch.abort();
    c.shutdown().await;
}
