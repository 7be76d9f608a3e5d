//! The typed client and the controller runtime against a real three-master
//! cluster: registry semantics through gRPC, a watcher that survives the
//! leader's death without missing or repeating an event, and a controller
//! that acts only while leading.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use balsa_api::client::{
    watcher, Action, Api, Client, Controller, DeleteParams, Event, Informer, Leadership, Patch,
    PatchParams, PostParams,
};
use balsa_api::registry::Reason;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;
use tokio::sync::watch;

use crate::harness::{InProc, WAIT};

fn client_of(c: &InProc, order: &[usize]) -> Client {
    Client::new(
        order
            .iter()
            .map(|i| c.server(*i).api_addr.to_string())
            .collect(),
    )
    .expect("client")
}

fn meta(ns: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: ns.map(str::to_string),
        name: Some(name.into()),
        ..Default::default()
    }
}

fn cm(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: meta(None, name),
        data: Some(BTreeMap::from([("v".to_string(), value.to_string())])),
        ..Default::default()
    }
}

async fn namespace(client: &Client, name: &str) {
    let ns = Namespace {
        metadata: meta(None, name),
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&ns, &PostParams::default())
        .await
        .expect("create namespace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn typed_client_speaks_the_registry() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c, &[1, 2, 0]);
    namespace(&client, "typed").await;
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "typed");

    let created = cms
        .create(&cm("one", "a"), &PostParams::default())
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some(), "the registry set a uid");
    assert!(created.metadata.creation_timestamp.is_some());
    let got = cms.get("one").await.unwrap();
    assert_eq!(got.data.as_ref().unwrap()["v"], "a");

    // Optimistic concurrency: a replace at a stale resourceVersion is a 409.
    let mut fresh = got.clone();
    fresh.data = Some(BTreeMap::from([("v".into(), "b".into())]));
    let updated = cms.replace(&fresh, &PostParams::default()).await.unwrap();
    let stale = cms
        .replace(&fresh, &PostParams::default())
        .await
        .unwrap_err();
    assert_eq!(stale.reason, Reason::Conflict, "{stale:?}");
    assert_eq!(stale.code(), 409);

    // Patches of every type go through the registry.
    let merged = cms
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"w": "x"}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.data.as_ref().unwrap()["w"], "x");
    assert_ne!(
        merged.metadata.resource_version,
        updated.metadata.resource_version
    );
    let applied = cms
        .patch(
            "two",
            &PatchParams::apply("tester"),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "two", "namespace": "typed"}, "data": {"k": "v"}})),
        )
        .await
        .unwrap();
    let managers: Vec<_> = applied
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["tester"]);

    // Validation errors come back with kube-apiserver's reason and causes.
    let bad = cms
        .create(&cm("Not_A_Name", "a"), &PostParams::default())
        .await
        .unwrap_err();
    assert_eq!(bad.reason, Reason::Invalid, "{bad:?}");
    assert_eq!(bad.causes[0].field, "metadata.name");
    let missing = cms.get("nope").await.unwrap_err();
    assert_eq!(missing.code(), 404);
    assert_eq!(cms.get_opt("nope").await.unwrap(), None);
    // Dry run stores nothing.
    cms.create(
        &cm("dry", "a"),
        &PostParams {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(cms.get_opt("dry").await.unwrap(), None);

    let list = cms.list().await.unwrap();
    let names: Vec<_> = list
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    assert_eq!(names, ["one", "two"]);
    assert!(list.revision.0 > 0);

    // Pods: bind once, status through the status subresource, graceful delete.
    let pods = Api::<Pod>::namespaced(client.clone(), "typed");
    let pod = Pod {
        metadata: meta(None, "p"),
        spec: Some(PodSpec {
            containers: vec![k8s_openapi::api::core::v1::Container {
                name: "c".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod = pods.create(&pod, &PostParams::default()).await.unwrap();
    let uid = pod.metadata.uid.clone();
    let bound = pods.bind("p", uid.as_deref(), "node-1").await.unwrap();
    assert_eq!(
        bound.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node-1")
    );
    let again = pods.bind("p", None, "node-2").await.unwrap_err();
    assert_eq!(
        again.reason,
        Reason::Conflict,
        "a pod is bound once: {again:?}"
    );
    // The scheduler's binding answers the revision the pod was bound at.
    let mut other = pod.clone();
    other.metadata = meta(None, "q");
    pods.create(&other, &PostParams::default()).await.unwrap();
    let rev = pods.bind_revision("q", None, "node-2").await.unwrap();
    let q = pods.get("q").await.unwrap();
    assert_eq!(q.metadata.resource_version, Some(rev.to_string()));
    assert_eq!(q.spec.unwrap().node_name.as_deref(), Some("node-2"));
    let again = pods.bind_revision("q", None, "node-1").await.unwrap_err();
    assert_eq!(again.reason, Reason::Conflict, "{again:?}");

    let mut running = bound.clone();
    running.status = Some(PodStatus {
        phase: Some("Running".into()),
        ..Default::default()
    });
    running.spec.as_mut().unwrap().node_name = Some("elsewhere".into());
    let written = pods
        .replace_status(&running, &PostParams::default())
        .await
        .unwrap();
    assert_eq!(written.status.unwrap().phase.as_deref(), Some("Running"));
    assert_eq!(
        written.spec.unwrap().node_name.as_deref(),
        Some("node-1"),
        "a status write leaves the spec alone"
    );
    // A bound pod is deleted gracefully: marked first, then removed at grace 0.
    let marked = pods.delete("p", &DeleteParams::default()).await.unwrap();
    assert!(
        marked.metadata.deletion_timestamp.is_some(),
        "{:?} {:?}",
        marked.spec.as_ref().map(|s| &s.node_name),
        marked.status
    );
    pods.delete(
        "p",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(pods.get_opt("p").await.unwrap().is_none());
    c.shutdown().await;
}

/// Writes `n` ConfigMaps named `w{i}` one after another, retrying each until
/// it is stored (across a leader change).
async fn write_all(api: Api<ConfigMap>, n: usize) {
    for i in 0..n {
        let name = format!("w{i}");
        loop {
            match api.create(&cm(&name, "v"), &PostParams::default()).await {
                Ok(_) => break,
                Err(e) if e.reason == Reason::AlreadyExists => break,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watcher_follows_across_a_leader_kill() {
    let mut c = InProc::start(3, |_| {}).await;
    let leader = c.wait_leader(&[]).await;
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    // The watcher talks to the leader first, so killing it cuts its stream.
    let watch_client = client_of(&c, &[leader, others[0], others[1]]);
    let write_client = client_of(&c, &[others[0], others[1], leader]);
    namespace(&write_client, "w").await;

    let seen: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let inits = Arc::new(AtomicUsize::new(0));
    let watch = {
        let (seen, inits) = (seen.clone(), inits.clone());
        let api = Api::<ConfigMap>::namespaced(watch_client, "w");
        tokio::spawn(async move {
            let config = watcher::Config {
                bookmark_interval: Duration::from_millis(300),
                ..Default::default()
            };
            let mut events = std::pin::pin!(watcher::watcher(api, config));
            while let Some(e) = events.next().await {
                let rv = |c: &ConfigMap| {
                    c.metadata
                        .resource_version
                        .as_deref()
                        .unwrap_or("0")
                        .parse()
                        .unwrap_or(0)
                };
                match e {
                    Ok(Event::Init) => {
                        inits.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Event::Apply(c) | Event::InitApply(c)) => seen
                        .lock()
                        .unwrap()
                        .push((c.metadata.name.clone().unwrap(), rv(&c))),
                    Err(e) => eprintln!("watch error: {e:?}"),
                    _ => {}
                }
            }
        })
    };
    let n = 200;
    let writer = tokio::spawn(write_all(
        Api::<ConfigMap>::namespaced(write_client.clone(), "w"),
        n,
    ));
    // Kill the leader once a part of the writes is in.
    let deadline = tokio::time::Instant::now() + WAIT;
    while seen.lock().unwrap().len() < n / 4 {
        assert!(tokio::time::Instant::now() < deadline, "watch saw nothing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    c.stop(leader).await;
    writer.await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let names: HashSet<String> = seen
            .lock()
            .unwrap()
            .iter()
            .map(|(n, _)| n.clone())
            .collect();
        if names.len() == n {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watcher saw {} of {n} objects after the leader kill",
            names.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watch.abort();
    let seen = seen.lock().unwrap().clone();
    // One list at the start; the resume after the kill was a watch from the
    // last revision on another master, not a relist: every event once, in
    // revision order.
    assert_eq!(inits.load(Ordering::SeqCst), 1, "no relist was needed");
    assert_eq!(seen.len(), n, "each object exactly once: {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0].1 < w[1].1),
        "revisions strictly increase: {seen:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn controller_reconciles_only_while_leading() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c, &[0, 1, 2]);
    namespace(&client, "ctl").await;
    let api = Api::<ConfigMap>::namespaced(client.clone(), "ctl");
    let informer = Informer::new(api.clone());
    let lease = |term| {
        Some(balsa_api::Lease {
            term,
            revision: balsa_api::Revision(0),
        })
    };
    let (lead_tx, lead_rx) = watch::channel(lease(1));
    let attempts = Arc::new(AtomicUsize::new(0));
    // Leases begun, each counted once its caches are synced.
    let leases = Arc::new(AtomicUsize::new(0));
    let counted = leases.clone();
    let controller = Controller::new("marker", &informer)
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .on_lease(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
    let reconcile = {
        let attempts = attempts.clone();
        move |cm: Arc<ConfigMap>, api: Arc<Api<ConfigMap>>| {
            let attempts = attempts.clone();
            async move {
                let name = cm.metadata.name.clone().unwrap_or_default();
                // "flaky" fails twice before it succeeds: retried with backoff.
                if name == "flaky" && attempts.fetch_add(1, Ordering::SeqCst) < 2 {
                    return Err("not yet".to_string());
                }
                if cm.data.as_ref().is_some_and(|d| d.contains_key("seen")) {
                    return Ok(Action::await_change());
                }
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"data": {"seen": "yes"}})),
                )
                .await
                .map_err(|e| e.to_string())?;
                Ok(Action::await_change())
            }
        }
    };
    let run = {
        let informer = informer.clone();
        let api = Arc::new(api.clone());
        tokio::spawn(async move {
            tokio::join!(
                informer.run(),
                controller.run(reconcile, api, Leadership::new(lead_rx))
            );
        })
    };
    let seen = |name: &'static str| {
        let api = api.clone();
        async move {
            api.get(name)
                .await
                .ok()
                .and_then(|c| c.data)
                .is_some_and(|d| d.contains_key("seen"))
        }
    };
    let wait_seen = |name: &'static str| async move {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !seen(name).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} never reconciled"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    api.create(&cm("a", "1"), &PostParams::default())
        .await
        .unwrap();
    api.create(&cm("flaky", "1"), &PostParams::default())
        .await
        .unwrap();
    wait_seen("a").await;
    wait_seen("flaky").await;
    // The cache keeps objects without their managedFields; the API has them.
    let key = balsa_api::client::ObjectKey::new(Some("ctl"), "a");
    let cached = informer.store().get(&key).expect("cached");
    assert_eq!(cached.metadata.managed_fields, None);
    assert!(api
        .get("a")
        .await
        .unwrap()
        .metadata
        .managed_fields
        .is_some());
    // Two failures, then success (and one more reconcile of its own patch).
    assert!(attempts.load(Ordering::SeqCst) >= 3);

    // Not leading: a new object is left alone.
    lead_tx.send_replace(None);
    api.create(&cm("b", "1"), &PostParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!seen("b").await, "reconciled while not leading");
    // Leading again: everything is reconciled once more, "b" included.
    lead_tx.send_replace(lease(2));
    wait_seen("b").await;
    assert_eq!(leases.load(Ordering::SeqCst), 2, "two leases began");

    // A lease that began at a revision the caches have not reached: nothing
    // is reconciled until they have (a new leader's informers may lag its
    // log), then everything is.
    const GAP: u64 = 20;
    lead_tx.send_replace(None);
    api.create(&cm("c", "1"), &PostParams::default())
        .await
        .unwrap();
    let now = c
        .store(0)
        .revision(balsa_api::ReadMode::Linearizable)
        .await
        .unwrap();
    lead_tx.send_replace(Some(balsa_api::Lease {
        term: 3,
        revision: balsa_api::Revision(now.0 + GAP),
    }));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!seen("c").await, "reconciled from a cache behind the lease");
    assert_eq!(leases.load(Ordering::SeqCst), 2, "began before its caches");
    for i in 0..GAP {
        let other = Api::<ConfigMap>::namespaced(client.clone(), "default");
        other
            .create(&cm(&format!("filler-{i}"), "1"), &PostParams::default())
            .await
            .unwrap();
    }
    wait_seen("c").await;
    assert_eq!(leases.load(Ordering::SeqCst), 3);
    run.abort();
    c.shutdown().await;
}

/// The gRPC Txn validates and defaults each op as a single write would, and
/// applies all of them or none.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn txn_goes_through_the_registry() {
    use balsa_api::grpc::client::Client as Grpc;
    use balsa_api::grpc::status::api_from_status;
    use balsa_proto::objects::{txn_op, DeleteRequest, ObjectRef, TxnOp, TxnRequest};
    use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaSpec};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c, &[0, 1, 2]);
    namespace(&client, "txn").await;
    let grpc = Grpc::connect(&c.server(1).api_addr.to_string())
        .await
        .expect("connect");
    let create = |ns: &str, name: &str| TxnOp {
        op: Some(txn_op::Op::Create(
            serde_json::to_vec(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": ns}, "data": {"k": name}}))
            .unwrap()
            .into(),
        )),
    };
    let txn = |ops: Vec<TxnOp>| grpc.send_txn(TxnRequest { ops });
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "txn");

    // One invalid op (a name that is no DNS subdomain) fails the batch.
    let err = txn(vec![create("txn", "a"), create("txn", "Bad_Name")])
        .await
        .expect_err("an invalid name is refused");
    let err = api_from_status(&err);
    assert_eq!(err.reason, Reason::Invalid, "{}", err.message);
    assert!(cms.get_opt("a").await.unwrap().is_none(), "nothing stored");
    // So does a missing namespace.
    let err = txn(vec![create("txn", "a"), create("nope", "b")])
        .await
        .expect_err("objects need their namespace");
    assert_eq!(api_from_status(&err).reason, Reason::NotFound);
    assert!(cms.get_opt("a").await.unwrap().is_none(), "nothing stored");

    // A good batch is stored as creates are: uid, creationTimestamp.
    let reply = txn(vec![create("txn", "a"), create("txn", "b")])
        .await
        .expect("batch");
    assert_eq!(reply.objects.len(), 2);
    for o in &reply.objects {
        let v: serde_json::Value = serde_json::from_slice(o).unwrap();
        assert!(v["metadata"]["uid"].is_string(), "{v}");
        assert!(v["metadata"]["creationTimestamp"].is_string(), "{v}");
    }
    let a = cms.get("a").await.unwrap();

    // An update at a stale resourceVersion is a Conflict.
    let mut stale = serde_json::to_value(&a).unwrap();
    stale["apiVersion"] = json!("v1");
    stale["kind"] = json!("ConfigMap");
    stale["data"]["k"] = json!("changed");
    let mut moved = a.clone();
    moved.data = Some(BTreeMap::from([("k".to_string(), "moved".to_string())]));
    cms.replace(&moved, &PostParams::default()).await.unwrap();
    let err = txn(vec![TxnOp {
        op: Some(txn_op::Op::Update(
            serde_json::to_vec(&stale).unwrap().into(),
        )),
    }])
    .await
    .expect_err("stale update");
    assert_eq!(api_from_status(&err).reason, Reason::Conflict);

    // A delete of an object held by a finalizer marks it, as a single delete does.
    let held = ConfigMap {
        metadata: ObjectMeta {
            name: Some("held".into()),
            finalizers: Some(vec!["example.com/hold".into()]),
            ..Default::default()
        },
        ..Default::default()
    };
    cms.create(&held, &PostParams::default()).await.unwrap();
    txn(vec![TxnOp {
        op: Some(txn_op::Op::Delete(DeleteRequest {
            r#ref: Some(ObjectRef {
                group: String::new(),
                resource: "configmaps".into(),
                namespace: "txn".into(),
                name: "held".into(),
            }),
            ..Default::default()
        })),
    }])
    .await
    .expect("delete in a batch");
    let held = cms
        .get("held")
        .await
        .expect("still there: a finalizer holds it");
    assert!(held.metadata.deletion_timestamp.is_some());

    // Quota admission applies: a create is charged in the same batch, and a
    // batch that would charge one quota twice is refused rather than
    // undercounted.
    let quotas = Api::<ResourceQuota>::namespaced(client.clone(), "txn");
    let quota = ResourceQuota {
        metadata: meta(None, "cms"),
        spec: Some(ResourceQuotaSpec {
            hard: Some(BTreeMap::from([(
                "count/configmaps".to_string(),
                Quantity("10".into()),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    quotas.create(&quota, &PostParams::default()).await.unwrap();
    let mut used = None;
    for _ in 0..600 {
        let q = quotas.get("cms").await.unwrap();
        used = q
            .status
            .and_then(|s| s.used)
            .and_then(|u| u.get("count/configmaps").cloned());
        if used.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before: i64 = used
        .expect("the quota controller fills status")
        .0
        .parse()
        .unwrap();
    let err = txn(vec![create("txn", "q1"), create("txn", "q2")])
        .await
        .expect_err("two charges of one quota in a batch");
    assert_eq!(api_from_status(&err).reason, Reason::BadRequest);
    assert!(cms.get_opt("q1").await.unwrap().is_none(), "nothing stored");
    txn(vec![create("txn", "q1")])
        .await
        .expect("one charged create");
    let q = quotas.get("cms").await.unwrap();
    let after: i64 = q.status.unwrap().used.unwrap()["count/configmaps"]
        .0
        .parse()
        .unwrap();
    assert_eq!(after, before + 1, "charged with the create");
    c.shutdown().await;
}

/// A watch event the typed watcher cannot decode is not skipped: the
/// watcher re-lists (and keeps failing while the object stays unreadable,
/// as client-go's reflector) instead of resuming after it with a cache
/// that silently lacks the change.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_undecodable_event_makes_the_watcher_relist_not_skip_it() {
    use crate::harness::{configmap, key};

    let c = InProc::start(1, |_| {}).await;
    let client = client_of(&c, &[0]);
    namespace(&client, "undecodable").await;
    let api = Api::<ConfigMap>::namespaced(client, "undecodable");
    api.create(&cm("x", "1"), &PostParams::default())
        .await
        .unwrap();
    let cached: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let (inits, errors) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let watch = {
        let (cached, inits, errors) = (cached.clone(), inits.clone(), errors.clone());
        let config = watcher::Config {
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
            ..Default::default()
        };
        let api = api.clone();
        tokio::spawn(async move {
            let mut events = std::pin::pin!(watcher::watcher(api, config));
            while let Some(e) = events.next().await {
                match e {
                    Ok(Event::Init) => {
                        inits.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(Event::Apply(c) | Event::InitApply(c)) => {
                        let v = c.data.and_then(|d| d.get("v").cloned());
                        cached
                            .lock()
                            .unwrap()
                            .insert(c.metadata.name.unwrap(), v.unwrap_or_default());
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {}
                }
            }
        })
    };
    let value = |name: &str| cached.lock().unwrap().get(name).cloned();
    let wait_for = |name: &'static str, want: &'static str| {
        let value = &value;
        async move {
            let deadline = tokio::time::Instant::now() + WAIT;
            while value(name).as_deref() != Some(want) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "{name} never became {want}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for("x", "1").await;
    assert_eq!(inits.load(Ordering::SeqCst), 1);

    // Past the registry, straight into the store: "v" is not a string.
    let store = c.store(0);
    let current = store
        .get(&key("undecodable", "x"), balsa_api::ReadMode::Linearizable)
        .await
        .unwrap();
    let bad = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "x", "namespace": "undecodable"}, "data": {"v": 2}});
    store
        .update(
            key("undecodable", "x"),
            serde_json::to_vec(&bad).unwrap().into(),
            Some(current.revision),
        )
        .await
        .unwrap();
    api.create(&cm("y", "1"), &PostParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        errors.load(Ordering::SeqCst) > 0,
        "the bad event was reported"
    );
    assert_eq!(
        value("y"),
        None,
        "a later event was delivered past the unreadable one"
    );

    // Readable again: a re-list brings both.
    let current = store
        .get(&key("undecodable", "x"), balsa_api::ReadMode::Linearizable)
        .await
        .unwrap();
    store
        .update(
            key("undecodable", "x"),
            configmap("undecodable", "x", "3"),
            Some(current.revision),
        )
        .await
        .unwrap();
    wait_for("x", "3").await;
    wait_for("y", "1").await;
    assert!(inits.load(Ordering::SeqCst) >= 2, "re-listed");
    watch.abort();
    c.shutdown().await;
}
