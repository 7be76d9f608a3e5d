//! The controller manager as every master runs it (leader only), against a
//! real three-master cluster: ReplicaSet scaling and deletion order,
//! Deployment rollout and rollback, the garbage collector's policies and
//! namespace deletion. No node agent runs: a fake kubelet in the test marks
//! pods Running and Ready and finishes graceful deletions.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use balsa_api::client::{Api, Client, DeleteParams, Patch, PatchParams, PostParams};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Event, Namespace, Pod, PodCondition, PodSpec, PodStatus, PodTemplateSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use serde_json::json;
use tokio::task::JoinHandle;

use crate::harness::InProc;

pub(crate) const DEADLINE: Duration = Duration::from_secs(40);

pub(crate) fn client_of(c: &InProc) -> Client {
    Client::new((0..3).map(|i| c.server(i).api_addr.to_string()).collect()).expect("client")
}

pub(crate) async fn namespace(client: &Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&ns, &PostParams::default())
        .await
        .expect("create namespace");
}

/// Polls `check` until it answers Some, or fails the test with `what`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("app".to_string(), "web".to_string())])
}

pub(crate) fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels()),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

/// A ReplicaSet `web` of busybox pods labelled as `selector()` picks.
pub(crate) fn replicaset(replicas: i32) -> ReplicaSet {
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector: selector(),
            template: Some(template("busybox")),
            ..Default::default()
        }),
        status: None,
    }
}

pub(crate) fn selector() -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels()),
        ..Default::default()
    }
}

fn active(pods: &[Pod]) -> Vec<&Pod> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn ready_status() -> PodStatus {
    PodStatus {
        phase: Some("Running".into()),
        conditions: Some(vec![PodCondition {
            type_: "Ready".into(),
            status: "True".into(),
            last_transition_time: Some(Time(balsa_controllers::pods::now())),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

async fn mark_ready(pods: &Api<Pod>, pod: &Pod) {
    let mut p = pod.clone();
    p.status = Some(ready_status());
    // A conflict means another change came first: the next pass retries.
    let _ = pods.replace_status(&p, &PostParams::default()).await;
}

/// A stand-in for the node agent in `ns`: pods become Running and Ready,
/// and pods marked for deletion are removed. Counts the most active pods
/// seen at once.
pub(crate) fn fake_kubelet(client: Client, ns: &str, most: Arc<AtomicUsize>) -> JoinHandle<()> {
    let pods = Api::<Pod>::namespaced(client, ns);
    tokio::spawn(async move {
        loop {
            if let Ok(list) = pods.list().await {
                most.fetch_max(active(&list.items).len(), Ordering::SeqCst);
                for p in &list.items {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    if p.metadata.deletion_timestamp.is_some() {
                        let dp = DeleteParams {
                            grace_period_seconds: Some(0),
                            ..Default::default()
                        };
                        let _ = pods.delete(&name, &dp).await;
                    } else if !balsa_controllers::pods::is_ready(p) {
                        mark_ready(&pods, p).await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicaset_scales_ranks_and_orphans() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    namespace(&client, "rs").await;
    let rss = Api::<ReplicaSet>::namespaced(client.clone(), "rs");
    let pods = Api::<Pod>::namespaced(client.clone(), "rs");
    let rs = replicaset(3);
    let rs = rss.create(&rs, &PostParams::default()).await.unwrap();
    let uid = rs.metadata.uid.clone().unwrap();

    let created = eventually("3 pods", || async {
        let list = pods.list().await.ok()?;
        (list.items.len() == 3).then_some(list.items)
    })
    .await;
    for p in &created {
        let r = &p
            .metadata
            .owner_references
            .as_ref()
            .expect("ownerReferences")[0];
        assert_eq!(
            (r.kind.as_str(), r.uid.as_str()),
            ("ReplicaSet", uid.as_str())
        );
        assert_eq!(r.controller, Some(true));
        assert_eq!(r.block_owner_deletion, Some(true));
        assert!(p.metadata.name.as_deref().unwrap().starts_with("web-"));
    }
    // Not more than asked for, after the caches settle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pods.list().await.unwrap().items.len(), 3);

    // Two pods get a node and become ready: the unscheduled one goes first.
    let mut bound = Vec::new();
    for p in &created[..2] {
        let name = p.metadata.name.clone().unwrap();
        let b = pods.bind(&name, None, "node-1").await.unwrap();
        mark_ready(&pods, &b).await;
        bound.push(name);
    }
    let unscheduled = created[2].metadata.name.clone().unwrap();
    eventually("status: 3 replicas, 2 ready and available", || async {
        let s = rss.get("web").await.ok()?.status?;
        (s.replicas == 3
            && s.ready_replicas == Some(2)
            && s.available_replicas == Some(2)
            && s.fully_labeled_replicas == Some(3)
            && s.observed_generation == Some(1))
        .then_some(())
    })
    .await;
    rss.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    eventually("scaled down to 2", || async {
        let list = pods.list().await.ok()?;
        (active(&list.items).len() == 2).then_some(())
    })
    .await;
    assert!(
        pods.get_opt(&unscheduled).await.unwrap().is_none(),
        "the unscheduled pod is deleted first"
    );
    for b in &bound {
        let p = pods.get(b).await.unwrap();
        assert!(p.metadata.deletion_timestamp.is_none(), "{b} kept");
    }
    eventually("status follows", || async {
        let s = rss.get("web").await.ok()?.status?;
        (s.replicas == 2 && s.observed_generation == Some(2)).then_some(())
    })
    .await;

    // Orphan: the ReplicaSet goes, its pods stay without ownerReferences.
    rss.delete(
        "web",
        &DeleteParams {
            propagation_policy: Some("Orphan".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    eventually("orphaned replicaset gone", || async {
        rss.get_opt("web").await.ok()?.is_none().then_some(())
    })
    .await;
    let left = pods.list().await.unwrap().items;
    assert_eq!(left.len(), 2);
    for p in &left {
        assert!(
            p.metadata
                .owner_references
                .as_ref()
                .is_none_or(|r| r.is_empty()),
            "{:?}",
            p.metadata.owner_references
        );
    }
    c.shutdown().await;
}

fn image_of(rs: &ReplicaSet) -> String {
    rs.spec
        .as_ref()
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

fn annotation(rs: &ReplicaSet, key: &str) -> Option<String> {
    rs.metadata.annotations.as_ref()?.get(key).cloned()
}

async fn set_image(deps: &Api<Deployment>, image: &str) {
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
    deps.patch("web", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("patch the deployment's image");
}

/// Waits until the deployment's rollout of `image` is complete as
/// `kubectl rollout status` judges it; returns the ReplicaSets.
async fn rolled_out(deps: &Api<Deployment>, rss: &Api<ReplicaSet>, image: &str) -> Vec<ReplicaSet> {
    eventually(&format!("rollout of {image}"), || async {
        let d = deps.get("web").await.ok()?;
        let s = d.status.clone()?;
        let done = s.observed_generation >= d.metadata.generation
            && s.updated_replicas == Some(3)
            && s.replicas == Some(3)
            && s.available_replicas == Some(3)
            && s.unavailable_replicas == Some(0)
            && s.conditions.iter().flatten().any(|c| {
                c.type_ == "Progressing" && c.reason.as_deref() == Some("NewReplicaSetAvailable")
            });
        let list = rss.list().await.ok()?.items;
        let new_full = list.iter().any(|rs| {
            image_of(rs) == image && rs.spec.as_ref().and_then(|s| s.replicas) == Some(3)
        });
        let old_empty = list
            .iter()
            .filter(|rs| image_of(rs) != image)
            .all(|rs| rs.spec.as_ref().and_then(|s| s.replicas) == Some(0));
        (done && new_full && old_empty).then_some(list)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deployment_rolls_out_back_and_deletes_in_foreground() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    namespace(&client, "dep").await;
    let most = Arc::new(AtomicUsize::new(0));
    let kubelet = fake_kubelet(client.clone(), "dep", most.clone());
    let deps = Api::<Deployment>::namespaced(client.clone(), "dep");
    let rss = Api::<ReplicaSet>::namespaced(client.clone(), "dep");
    let pods = Api::<Pod>::namespaced(client.clone(), "dep");
    let d = Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(3),
            selector: selector(),
            template: template("a"),
            ..Default::default()
        }),
        status: None,
    };
    deps.create(&d, &PostParams::default()).await.unwrap();
    let list = rolled_out(&deps, &rss, "a").await;
    assert_eq!(list.len(), 1);
    let first = list[0].clone();
    assert_eq!(
        annotation(&first, "deployment.kubernetes.io/revision").as_deref(),
        Some("1")
    );
    let hash = first.metadata.labels.as_ref().unwrap()["pod-template-hash"].clone();
    assert_eq!(
        first.metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );

    // a -> b: a new ReplicaSet takes over, never more than 3 + maxSurge (1) pods.
    most.store(0, Ordering::SeqCst);
    set_image(&deps, "b").await;
    let list = rolled_out(&deps, &rss, "b").await;
    assert_eq!(list.len(), 2);
    let second = list.iter().find(|rs| image_of(rs) == "b").unwrap().clone();
    assert_eq!(
        annotation(&second, "deployment.kubernetes.io/revision").as_deref(),
        Some("2")
    );
    let d = deps.get("web").await.unwrap();
    assert_eq!(
        d.metadata.annotations.as_ref().unwrap()["deployment.kubernetes.io/revision"],
        "2"
    );
    let peak = most.load(Ordering::SeqCst);
    assert!(peak <= 4, "{peak} pods at once: beyond maxSurge");

    // What `kubectl describe` shows: the deployment controller's scaling and
    // the replicaset controller's pod creations, as upstream words them.
    let events = Api::<Event>::namespaced(client.clone(), "dep");
    let second_name = second.metadata.name.clone().unwrap();
    let first_name = first.metadata.name.clone().unwrap();
    eventually("controller events recorded", || async {
        let list = events.list().await.ok()?.items;
        let said = |component: &str, object: &str, reason: &str, prefix: &str| {
            list.iter().any(|e| {
                e.source.as_ref().and_then(|s| s.component.as_deref()) == Some(component)
                    && e.involved_object.name.as_deref() == Some(object)
                    && e.reason.as_deref() == Some(reason)
                    && e.message.as_deref().is_some_and(|m| m.starts_with(prefix))
            })
        };
        let scaled_up_first = said(
            "deployment-controller",
            "web",
            "ScalingReplicaSet",
            &format!("Scaled up replica set {first_name} to 3"),
        );
        let scaled_down_first = said(
            "deployment-controller",
            "web",
            "ScalingReplicaSet",
            &format!("Scaled down replica set {first_name} to "),
        );
        let created = said(
            "replicaset-controller",
            &second_name,
            "SuccessfulCreate",
            "Created pod: web-",
        );
        (scaled_up_first && scaled_down_first && created).then_some(())
    })
    .await;
    let running = pods.list().await.unwrap().items;
    for p in active(&running) {
        assert_eq!(
            p.spec.as_ref().unwrap().containers[0].image.as_deref(),
            Some("b")
        );
    }

    // Rollback (what `kubectl rollout undo` writes): the first ReplicaSet is
    // reused with the next revision.
    set_image(&deps, "a").await;
    let list = rolled_out(&deps, &rss, "a").await;
    assert_eq!(list.len(), 2, "no new replicaset on rollback");
    let back = list.iter().find(|rs| image_of(rs) == "a").unwrap();
    assert_eq!(back.metadata.uid, first.metadata.uid);
    assert_eq!(
        annotation(back, "deployment.kubernetes.io/revision").as_deref(),
        Some("3")
    );
    assert_eq!(
        annotation(back, "deployment.kubernetes.io/revision-history").as_deref(),
        Some("1")
    );

    // Foreground: the ReplicaSets and pods go first, then the Deployment.
    deps.delete(
        "web",
        &DeleteParams {
            propagation_policy: Some("Foreground".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    eventually("foreground deletion done", || async {
        let gone = deps.get_opt("web").await.ok()?.is_none();
        if !gone {
            return None;
        }
        // The deployment went last: nothing it owned is left.
        assert!(rss.list().await.ok()?.items.is_empty(), "replicasets left");
        assert!(pods.list().await.ok()?.items.is_empty(), "pods left");
        Some(())
    })
    .await;
    kubelet.abort();
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_namespace_removes_its_objects() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    namespace(&client, "doomed").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "doomed");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("settings".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    cms.create(&cm, &PostParams::default()).await.unwrap();
    let rss = Api::<ReplicaSet>::namespaced(client.clone(), "doomed");
    let rs = replicaset(2);
    rss.create(&rs, &PostParams::default()).await.unwrap();
    let pods = Api::<Pod>::namespaced(client.clone(), "doomed");
    eventually("pods created", || async {
        (pods.list().await.ok()?.items.len() == 2).then_some(())
    })
    .await;

    let nss = Api::<Namespace>::all(client.clone());
    let marked = nss
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        marked.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    eventually("namespace gone", || async {
        nss.get_opt("doomed").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(cms.list().await.unwrap().items.is_empty());
    assert!(rss.list().await.unwrap().items.is_empty());
    assert!(pods.list().await.unwrap().items.is_empty());
    c.shutdown().await;
}

/// The leader dies mid-rollout: the next leader's controllers finish it,
/// never beyond maxSurge (3 + 1 pods at once) and with no pod lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollout_survives_a_leader_kill() {
    let mut c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    namespace(&client, "dep").await;
    let most = Arc::new(AtomicUsize::new(0));
    let kubelet = fake_kubelet(client.clone(), "dep", most.clone());
    let deps = Api::<Deployment>::namespaced(client.clone(), "dep");
    let rss = Api::<ReplicaSet>::namespaced(client.clone(), "dep");
    let pods = Api::<Pod>::namespaced(client.clone(), "dep");
    let d = Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(3),
            // Each new pod waits 2 s to count as available: the rollout
            // takes several seconds, so the kill lands in the middle.
            min_ready_seconds: Some(2),
            selector: selector(),
            template: template("a"),
            ..Default::default()
        }),
        status: None,
    };
    deps.create(&d, &PostParams::default()).await.unwrap();
    rolled_out(&deps, &rss, "a").await;

    most.store(0, Ordering::SeqCst);
    set_image(&deps, "b").await;
    // Wait until the new ReplicaSet has begun, then kill the leader.
    eventually("the rollout of b started", || async {
        let list = rss.list().await.ok()?.items;
        list.iter()
            .any(|rs| {
                image_of(rs) == "b" && rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0
            })
            .then_some(())
    })
    .await;
    let leader = c.wait_leader(&[]).await;
    c.stop(leader).await;
    let list = rolled_out(&deps, &rss, "b").await;
    assert_eq!(list.len(), 2, "one new replicaset, not one per leader");

    let peak = most.load(Ordering::SeqCst);
    assert!(
        peak <= 4,
        "{peak} pods at once: beyond maxSurge across the leader change"
    );
    let running = pods.list().await.unwrap().items;
    let live = active(&running);
    assert_eq!(live.len(), 3, "no pod lost, none extra");
    for p in live {
        assert_eq!(
            p.spec.as_ref().unwrap().containers[0].image.as_deref(),
            Some("b")
        );
    }
    kubelet.abort();
    c.shutdown().await;
}

/// As upstream's updateReplicaSetStatus: a status computed from a copy that
/// went stale (the Deployment controller scaled or annotated the
/// ReplicaSet meanwhile) is written once more onto a fresh copy, keeping
/// the generation it was computed from; a ReplicaSet deleted and created
/// again under the same name is not written.
#[tokio::test]
async fn a_replicaset_status_from_a_stale_copy_is_written_onto_a_fresh_one() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    namespace(&client, "rs-status").await;
    let rss = Api::<ReplicaSet>::namespaced(client.clone(), "rs-status");
    let rs = replicaset(0);
    let stale = rss.create(&rs, &PostParams::default()).await.unwrap();
    let moved = json!({"metadata": {"annotations": {"moved": "yes"}}, "spec": {"replicas": 0, "minReadySeconds": 5}});
    let fresh = rss
        .patch("web", &PatchParams::default(), &Patch::Merge(moved))
        .await
        .unwrap();
    assert_eq!(fresh.metadata.generation, Some(2));
    // The controller reports generation 2 first: then it stays away while
    // the stale copy's status is written.
    eventually("the controller saw generation 2", || async {
        let rs = rss.get("web").await.ok()?;
        (rs.status?.observed_generation == Some(2)).then_some(())
    })
    .await;
    let status = k8s_openapi::api::apps::v1::ReplicaSetStatus {
        replicas: 0,
        observed_generation: stale.metadata.generation,
        ..Default::default()
    };
    let now = balsa_controllers::replicaset::write_status(&rss, &stale, status.clone())
        .await
        .expect("written onto the fresh copy");
    assert_eq!(now.metadata.annotations.unwrap()["moved"], "yes");
    assert_eq!(
        now.status.and_then(|s| s.observed_generation),
        Some(1),
        "the generation acted on, not the fresh one"
    );

    rss.delete("web", &DeleteParams::default()).await.unwrap();
    rss.create(&rs, &PostParams::default()).await.unwrap();
    let e = balsa_controllers::replicaset::write_status(&rss, &stale, status)
        .await
        .expect_err("another ReplicaSet of the same name");
    assert_eq!(e.code(), 409);
}
