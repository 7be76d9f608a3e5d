//! The DaemonSet and StatefulSet controllers on a real three-master cluster
//! with Node objects only (the scheduler in the masters binds pods to them);
//! a fake kubelet in the test marks bound pods Running and Ready and
//! finishes graceful deletions. Orderings and budgets are checked on the
//! recorded watch history, never on timing.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use balsa_api::client::watcher::{self, watcher};
use balsa_api::client::{Api, Client, DeleteParams, Event, Patch, PatchParams, PostParams};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, StatefulSet};
use k8s_openapi::api::core::v1::{
    Event as CoreEvent, Namespace, Node, PersistentVolumeClaim, Pod, PodCondition, PodStatus,
    ResourceQuota,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::harness::InProc;

const DEADLINE: Duration = Duration::from_secs(60);

fn client_of(c: &InProc) -> Client {
    Client::new((0..3).map(|i| c.server(i).api_addr.to_string()).collect()).expect("client")
}

async fn namespace(client: &Client, name: &str) {
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
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
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

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// A Ready node; `extra` is merged into it (labels, taints).
async fn node(client: &Client, name: &str, extra: Value) {
    let mut obj = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "capacity": {"cpu": "8", "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": "8", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    });
    merge(&mut obj, extra);
    let n: Node = serde_json::from_value(obj).expect("node");
    let api = Api::<Node>::all(client.clone());
    let mut created = api
        .create(&n, &PostParams::default())
        .await
        .expect("create node");
    if created.status != n.status {
        created.status = n.status.clone();
        api.replace_status(&created, &PostParams::default())
            .await
            .expect("node status");
    }
}

async fn patch_node(client: &Client, name: &str, patch: Value) {
    Api::<Node>::all(client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .expect("patch node");
}

/// Waits for an Event on `object` in `ns` from `component` with `reason`
/// whose message starts with `prefix` (what `kubectl describe` lists), and
/// returns its message.
async fn said(
    client: &Client,
    ns: &str,
    component: &str,
    object: &str,
    reason: &str,
    prefix: &str,
) -> String {
    let events = Api::<CoreEvent>::namespaced(client.clone(), ns);
    let what = format!("{component} event {reason} {prefix:?} on {object}");
    eventually(&what, || async {
        events.list().await.ok()?.items.into_iter().find_map(|e| {
            let message = e.message.unwrap_or_default();
            (e.source.and_then(|s| s.component).as_deref() == Some(component)
                && e.involved_object.name.as_deref() == Some(object)
                && e.reason.as_deref() == Some(reason)
                && message.starts_with(prefix))
            .then_some(message)
        })
    })
    .await
}

/// A ResourceQuota of `pods` pods in `ns`, once its status shows `used`
/// pods (admission checks against it).
async fn pod_quota(client: &Client, ns: &str, pods: &str, used: &str) {
    let quotas = Api::<ResourceQuota>::namespaced(client.clone(), ns);
    let q: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "pods"},
        "spec": {"hard": {"pods": pods}},
    }))
    .expect("quota");
    quotas
        .create(&q, &PostParams::default())
        .await
        .expect("quota");
    eventually("quota usage counted", || async {
        let s = quotas.get("pods").await.ok()?.status?;
        (s.used?.get("pods")?.0 == used).then_some(())
    })
    .await;
}

fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.node_name.clone().filter(|n| !n.is_empty())
}

fn label<'a>(p: &'a Pod, key: &str) -> Option<&'a str> {
    p.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

fn name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

fn live(pods: &[Pod]) -> Vec<&Pod> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn ready(p: &Pod) -> bool {
    balsa_controllers::pods::phase(p) == "Running" && balsa_controllers::pods::is_ready(p)
}

/// A stand-in for the node agents in `ns`: bound pods (every pod, with
/// `bound_only` false) become Running and Ready; pods marked for deletion
/// are removed.
fn fake_kubelet(client: Client, ns: &str, bound_only: bool) -> JoinHandle<()> {
    let pods = Api::<Pod>::namespaced(client, ns);
    tokio::spawn(async move {
        loop {
            if let Ok(list) = pods.list().await {
                for p in &list.items {
                    if p.metadata.deletion_timestamp.is_some() {
                        let dp = DeleteParams {
                            grace_period_seconds: Some(0),
                            ..Default::default()
                        };
                        let _ = pods.delete(&name(p), &dp).await;
                    } else if !ready(p) && (!bound_only || node_of(p).is_some()) {
                        let mut p = p.clone();
                        p.status = Some(PodStatus {
                            phase: Some("Running".into()),
                            conditions: Some(vec![PodCondition {
                                type_: "Ready".into(),
                                status: "True".into(),
                                last_transition_time: Some(Time(balsa_controllers::pods::now())),
                                ..Default::default()
                            }]),
                            ..Default::default()
                        });
                        let _ = pods.replace_status(&p, &PostParams::default()).await;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// Every pod event in `ns` from now on, in the store's order.
struct History {
    events: Arc<Mutex<Vec<Event<Pod>>>>,
    task: JoinHandle<()>,
}

impl History {
    async fn start(client: &Client, ns: &str) -> Self {
        let api = Api::<Pod>::namespaced(client.clone(), ns);
        let events = Arc::new(Mutex::new(Vec::new()));
        let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
        let out = events.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()));
            let mut listed = Some(listed_tx);
            while let Some(e) = stream.next().await {
                match e {
                    Ok(Event::InitDone) => {
                        if let Some(tx) = listed.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Init) => assert!(listed.is_some(), "the pod watch re-listed"),
                    Ok(Event::Progress(_)) => {}
                    Ok(e) => out.lock().expect("history lock").push(e),
                    Err(_) => {}
                }
            }
        });
        listed_rx.await.expect("pod watch listed");
        Self { events, task }
    }

    /// Replays the history: `check` sees each event and the pods as they
    /// were just before it (the initial list included).
    fn replay(&self, mut check: impl FnMut(&Event<Pod>, &BTreeMap<String, Pod>)) {
        let mut state: BTreeMap<String, Pod> = BTreeMap::new();
        for e in self.events.lock().expect("history lock").iter() {
            check(e, &state);
            match e {
                Event::InitApply(p) | Event::Apply(p) => {
                    state.insert(name(p), p.clone());
                }
                Event::Delete(p) => {
                    state.remove(&name(p));
                }
                _ => {}
            }
        }
    }
}

impl Drop for History {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn daemonset(name: &str, image: &str, extra: Value) -> DaemonSet {
    let mut obj = json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]},
            },
        },
    });
    merge(&mut obj, extra);
    serde_json::from_value(obj).expect("daemonset")
}

fn statefulset(name: &str, image: &str, extra: Value) -> StatefulSet {
    let mut obj = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": 3,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "c", "image": image}]},
            },
        },
    });
    merge(&mut obj, extra);
    serde_json::from_value(obj).expect("statefulset")
}

async fn set_image<K: balsa_api::client::Resource>(api: &Api<K>, name: &str, image: &str) {
    let patch =
        json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": image}]}}}});
    api.patch(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .expect("set image");
}

fn image(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// DaemonSet `name`'s pods by node, once every eligible node in `want` has
/// exactly one Ready pod bound to it and the others none.
async fn daemon_pods_on(pods: &Api<Pod>, app: &str, want: &[&str]) -> BTreeMap<String, Pod> {
    let want: BTreeMap<String, ()> = want.iter().map(|n| (n.to_string(), ())).collect();
    eventually(&format!("{app} pods on exactly {want:?}"), || async {
        let list = pods.list().await.ok()?;
        let mine: Vec<&Pod> = list
            .items
            .iter()
            .filter(|p| label(p, "app") == Some(app))
            .collect();
        if mine.iter().any(|p| p.metadata.deletion_timestamp.is_some()) {
            return None;
        }
        let by_node: BTreeMap<String, Pod> = mine
            .iter()
            .filter(|p| ready(p))
            .filter_map(|p| Some((node_of(p)?, (*p).clone())))
            .collect();
        let nodes: BTreeMap<String, ()> = by_node.keys().map(|n| (n.clone(), ())).collect();
        (mine.len() == want.len() && nodes == want).then_some(by_node)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daemonset_follows_nodes_taints_and_selectors() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    namespace(&client, "ds").await;
    let _kubelet = fake_kubelet(client.clone(), "ds", true);
    let dss = Api::<DaemonSet>::namespaced(client.clone(), "ds");
    let pods = Api::<Pod>::namespaced(client.clone(), "ds");
    node(&client, "a", json!({})).await;
    node(&client, "b", json!({})).await;
    dss.create(
        &daemonset("agent", "busybox:1", json!({})),
        &PostParams::default(),
    )
    .await
    .unwrap();

    let placed = daemon_pods_on(&pods, "agent", &["a", "b"]).await;
    let p = &placed["a"];
    // Pinned to its node through node affinity, for the scheduler to bind.
    let terms = &p
        .spec
        .as_ref()
        .unwrap()
        .affinity
        .as_ref()
        .unwrap()
        .node_affinity
        .as_ref()
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()
        .node_selector_terms;
    let field = &terms[0].match_fields.as_ref().unwrap()[0];
    assert_eq!(
        (
            field.key.as_str(),
            field.operator.as_str(),
            field.values.clone()
        ),
        ("metadata.name", "In", Some(vec!["a".to_string()]))
    );
    let tolerations = p.spec.as_ref().unwrap().tolerations.clone().unwrap();
    for (key, effect) in [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ] {
        let t = tolerations
            .iter()
            .find(|t| t.key.as_deref() == Some(key))
            .unwrap_or_else(|| panic!("no toleration for {key}: {tolerations:?}"));
        assert_eq!(t.effect.as_deref(), Some(effect));
        assert_eq!(t.operator.as_deref(), Some("Exists"));
        assert_eq!(t.toleration_seconds, None, "{key}: daemon pods never leave");
    }
    assert_eq!(label(p, "pod-template-generation"), Some("1"));
    assert!(label(p, "controller-revision-hash").is_some());
    let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("DaemonSet", Some(true))
    );
    eventually("status of 2 nodes", || async {
        let ds = dss.get("agent").await.ok()?;
        let s = ds.status?;
        (s.desired_number_scheduled == 2
            && s.current_number_scheduled == 2
            && s.number_ready == 2
            && s.number_available == Some(2)
            && s.updated_number_scheduled == Some(2)
            && s.number_unavailable == Some(0)
            && s.number_misscheduled == 0
            && s.observed_generation == ds.metadata.generation)
            .then_some(())
    })
    .await;

    // A node tainted against the pod gets none; a plain new one gets one.
    node(
        &client,
        "tainted",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]}}),
    )
    .await;
    node(&client, "c", json!({})).await;
    daemon_pods_on(&pods, "agent", &["a", "b", "c"]).await;

    // Cordoned: the daemon pod still lands there (it tolerates unschedulable).
    patch_node(
        &client,
        "a",
        json!({"spec": {"unschedulable": true, "taints": [
        {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}}),
    )
    .await;
    let old = name(&placed["a"]);
    pods.delete(&old, &DeleteParams::default()).await.unwrap();
    let again = daemon_pods_on(&pods, "agent", &["a", "b", "c"]).await;
    assert_ne!(name(&again["a"]), old, "a new pod on the cordoned node");

    // An untolerated NoExecute taint evicts; a removed node loses its pod.
    patch_node(
        &client,
        "b",
        json!({"spec": {"taints": [{"key": "evict", "effect": "NoExecute"}]}}),
    )
    .await;
    Api::<Node>::all(client.clone())
        .delete("c", &DeleteParams::default())
        .await
        .unwrap();
    daemon_pods_on(&pods, "agent", &["a"]).await;
    eventually("desired 1 after taint and removal", || async {
        let s = dss.get("agent").await.ok()?.status?;
        (s.desired_number_scheduled == 1 && s.number_ready == 1).then_some(())
    })
    .await;

    // nodeSelector: only labelled nodes, following the label.
    let gpu = daemonset(
        "gpu",
        "busybox:1",
        json!({"spec": {"template": {"spec": {"nodeSelector": {"kind": "gpu"}}}}}),
    );
    dss.create(&gpu, &PostParams::default()).await.unwrap();
    eventually("gpu status: nothing desired", || async {
        let s = dss.get("gpu").await.ok()?.status?;
        (s.desired_number_scheduled == 0 && s.observed_generation == Some(1)).then_some(())
    })
    .await;
    patch_node(
        &client,
        "tainted",
        json!({"metadata": {"labels": {"kind": "gpu"}}}),
    )
    .await;
    patch_node(
        &client,
        "a",
        json!({"metadata": {"labels": {"kind": "gpu"}}}),
    )
    .await;
    // "tainted" is labelled but its NoSchedule taint is not tolerated.
    daemon_pods_on(&pods, "gpu", &["a"]).await;
    patch_node(
        &client,
        "a",
        json!({"metadata": {"labels": {"kind": null}}}),
    )
    .await;
    daemon_pods_on(&pods, "gpu", &[]).await;
    let list = pods.list().await.unwrap();
    assert!(
        !list
            .items
            .iter()
            .any(|p| node_of(p).as_deref() == Some("tainted")),
        "a pod on the tainted node"
    );

    // What `kubectl describe ds` lists, worded as daemonset-controller does.
    let component = "daemonset-controller";
    said(
        &client,
        "ds",
        component,
        "agent",
        "SuccessfulCreate",
        "Created pod: agent-",
    )
    .await;
    // b's pod evicted by the taint, c's gone with its node.
    said(
        &client,
        "ds",
        component,
        "agent",
        "SuccessfulDelete",
        "Deleted pod: agent-",
    )
    .await;
    said(
        &client,
        "ds",
        component,
        "gpu",
        "SuccessfulDelete",
        "Deleted pod: gpu-",
    )
    .await;
    // A create the API refuses (over quota) is told as FailedCreate.
    pod_quota(&client, "ds", "1", "1").await;
    node(&client, "d", json!({})).await;
    let refused = said(
        &client,
        "ds",
        component,
        "agent",
        "FailedCreate",
        "Error creating: ",
    )
    .await;
    assert!(refused.contains("exceeded quota"), "{refused}");
}

/// Nodes without a Ready, not-deleting pod of `app`, replayed over the
/// history: the most seen at once.
fn most_unavailable(h: &History, app: &str, nodes: &[&str]) -> usize {
    let mut most = 0;
    h.replay(|e, state| {
        if matches!(e, Event::InitApply(_)) {
            return;
        }
        let up: HashSet<String> = state
            .values()
            .filter(|p| label(p, "app") == Some(app))
            .filter(|p| p.metadata.deletion_timestamp.is_none() && ready(p))
            .filter_map(node_of)
            .collect();
        most = most.max(nodes.iter().filter(|n| !up.contains(**n)).count());
    });
    most
}

async fn revisions_of(client: &Client, ns: &str, owner: &str) -> Vec<ControllerRevision> {
    let mut v: Vec<ControllerRevision> = Api::<ControllerRevision>::namespaced(client.clone(), ns)
        .list()
        .await
        .expect("list revisions")
        .items
        .into_iter()
        .filter(|r| {
            r.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.name == owner && o.controller == Some(true))
        })
        .collect();
    v.sort_by_key(|r| r.revision);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daemonset_rolling_update_within_max_unavailable_then_on_delete() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    namespace(&client, "roll").await;
    let _kubelet = fake_kubelet(client.clone(), "roll", true);
    let dss = Api::<DaemonSet>::namespaced(client.clone(), "roll");
    let pods = Api::<Pod>::namespaced(client.clone(), "roll");
    let nodes = ["n1", "n2", "n3", "n4"];
    for n in nodes {
        node(&client, n, json!({})).await;
    }
    dss.create(
        &daemonset("web", "busybox:1", json!({})),
        &PostParams::default(),
    )
    .await
    .unwrap();
    daemon_pods_on(&pods, "web", &nodes).await;

    let history = History::start(&client, "roll").await;
    set_image(&dss, "web", "busybox:2").await;
    let rolled = eventually("all 4 pods at busybox:2", || async {
        let list = pods.list().await.ok()?;
        let l = live(&list.items);
        // The live pods: an old one may still be terminating.
        (l.len() == 4 && l.iter().all(|p| image(p) == "busybox:2" && ready(p)))
            .then(|| l.into_iter().cloned().collect::<Vec<Pod>>())
    })
    .await;
    assert!(rolled
        .iter()
        .all(|p| label(p, "pod-template-generation") == Some("2")));
    let most = most_unavailable(&history, "web", &nodes);
    assert_eq!(
        most, 1,
        "maxUnavailable 1 (default): at most one node without a ready pod"
    );
    eventually("rolled status", || async {
        let ds = dss.get("web").await.ok()?;
        let s = ds.status?;
        (s.updated_number_scheduled == Some(4)
            && s.number_available == Some(4)
            && s.observed_generation == ds.metadata.generation)
            .then_some(())
    })
    .await;
    let revs = revisions_of(&client, "roll", "web").await;
    assert_eq!(revs.iter().map(|r| r.revision).collect::<Vec<_>>(), [1, 2]);
    let hash = revs[1].metadata.labels.as_ref().unwrap()["controller-revision-hash"].clone();
    assert!(rolled
        .iter()
        .all(|p| label(p, "controller-revision-hash") == Some(hash.as_str())));

    // maxUnavailable 2: two nodes may be down at once, never three.
    let history = History::start(&client, "roll").await;
    let patch = json!({"spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": 2}},
        "template": {"spec": {"containers": [{"name": "c", "image": "busybox:3"}]}}}});
    dss.patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    eventually("all 4 pods at busybox:3", || async {
        let list = pods.list().await.ok()?;
        let l = live(&list.items);
        (l.len() == 4 && l.iter().all(|p| image(p) == "busybox:3" && ready(p))).then_some(())
    })
    .await;
    let most = most_unavailable(&history, "web", &nodes);
    assert!((1..=2).contains(&most), "maxUnavailable 2, saw {most}");

    // OnDelete: a new template replaces only the pods deleted by hand.
    let patch = json!({"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": null},
        "template": {"spec": {"containers": [{"name": "c", "image": "busybox:4"}]}}}});
    dss.patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    eventually("OnDelete observed: nothing updated", || async {
        let ds = dss.get("web").await.ok()?;
        let s = ds.status?;
        (s.observed_generation == ds.metadata.generation && s.updated_number_scheduled == Some(0))
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let list = pods.list().await.unwrap();
    assert!(
        live(&list.items).iter().all(|p| image(p) == "busybox:3"),
        "OnDelete replaced pods by itself"
    );
    let victim = live(&list.items)
        .into_iter()
        .find(|p| node_of(p).as_deref() == Some("n2"))
        .unwrap()
        .clone();
    pods.delete(&name(&victim), &DeleteParams::default())
        .await
        .unwrap();
    let after = daemon_pods_on(&pods, "web", &nodes).await;
    assert_eq!(image(&after["n2"]), "busybox:4");
    for n in ["n1", "n3", "n4"] {
        assert_eq!(image(&after[n]), "busybox:3");
    }
    eventually("one updated", || async {
        let s = dss.get("web").await.ok()?.status?;
        (s.updated_number_scheduled == Some(1)).then_some(())
    })
    .await;

    // maxSurge 1, maxUnavailable 0: a new pod starts beside the old one,
    // which goes once the new one is ready; no node is ever without one.
    let history = History::start(&client, "roll").await;
    let patch = json!({"spec": {"updateStrategy": {"type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "template": {"spec": {"containers": [{"name": "c", "image": "busybox:5"}]}}}});
    dss.patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    eventually("all 4 pods at busybox:5", || async {
        let list = pods.list().await.ok()?;
        let l = live(&list.items);
        (l.len() == 4 && l.iter().all(|p| image(p) == "busybox:5" && ready(p))).then_some(())
    })
    .await;
    assert_eq!(most_unavailable(&history, "web", &nodes), 0);
    let mut most_pods = 0;
    history.replay(|_, state| {
        let n = state
            .values()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        most_pods = most_pods.max(n);
    });
    assert_eq!(most_pods, 5, "one surge pod at a time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn controller_revisions_dedup_roll_back_and_prune() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    namespace(&client, "hist").await;
    let dss = Api::<DaemonSet>::namespaced(client.clone(), "hist");
    // No nodes: no pods hold old revisions, so only the limit keeps them.
    dss.create(
        &daemonset("web", "img:a", json!({"spec": {"revisionHistoryLimit": 2}})),
        &PostParams::default(),
    )
    .await
    .unwrap();
    let images = |revs: &[ControllerRevision]| -> Vec<(i64, String)> {
        revs.iter()
            .map(|r| {
                let t = balsa_controllers::history::template_of(r).unwrap();
                (
                    r.revision,
                    t.spec.unwrap().containers[0].image.clone().unwrap(),
                )
            })
            .collect()
    };
    let want = |v: &[(i64, &str)]| -> Vec<(i64, String)> {
        v.iter().map(|(n, i)| (*n, i.to_string())).collect()
    };
    let settled = |expected: Vec<(i64, String)>| {
        let client = client.clone();
        async move {
            eventually(&format!("revisions {expected:?}"), || async {
                let revs = revisions_of(&client, "hist", "web").await;
                (images(&revs) == expected).then_some(revs)
            })
            .await
        }
    };
    settled(want(&[(1, "img:a")])).await;
    for img in ["img:b", "img:c", "img:d"] {
        set_image(&dss, "web", img).await;
        // One step at a time, so each template gets its revision.
        let n = match img {
            "img:b" => 2,
            "img:c" => 3,
            _ => 4,
        };
        eventually("revision made", || async {
            let revs = revisions_of(&client, "hist", "web").await;
            revs.iter().any(|r| r.revision == n).then_some(())
        })
        .await;
    }
    // Limit 2: the current one and two old ones.
    let revs = settled(want(&[(2, "img:b"), (3, "img:c"), (4, "img:d")])).await;

    // `kubectl rollout undo --to-revision=3`: the revision's data as a
    // strategic-merge patch. Its revision is reused with the next number.
    let data = revs[1].data.clone().unwrap().0;
    assert_eq!(data["spec"]["template"]["$patch"], "replace");
    let rolled = dss
        .patch("web", &PatchParams::default(), &Patch::Strategic(data))
        .await
        .unwrap();
    assert_eq!(
        rolled.metadata.annotations.as_ref().unwrap()["deprecated.daemonset.template.generation"],
        "5"
    );
    let after = settled(want(&[(2, "img:b"), (4, "img:d"), (5, "img:c")])).await;
    assert_eq!(
        after[2].metadata.name, revs[1].metadata.name,
        "the same revision object"
    );
    assert_eq!(after[2].metadata.uid, revs[1].metadata.uid);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statefulset_ordered_ready_in_order_with_claims_and_scales_down_in_reverse() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    namespace(&client, "sts").await;
    node(&client, "n", json!({})).await;
    let history = History::start(&client, "sts").await;
    let _kubelet = fake_kubelet(client.clone(), "sts", true);
    let sets = Api::<StatefulSet>::namespaced(client.clone(), "sts");
    let pods = Api::<Pod>::namespaced(client.clone(), "sts");
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "sts");
    let set = statefulset(
        "db",
        "busybox:1",
        json!({"spec": {"volumeClaimTemplates": [{
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        }]}}),
    );
    sets.create(&set, &PostParams::default()).await.unwrap();

    let done = eventually("3 ready, rollout complete", || async {
        let s = sets.get("db").await.ok()?;
        let st = s.status.clone()?;
        (st.ready_replicas == Some(3)
            && st.replicas == 3
            && st.available_replicas == Some(3)
            && st.current_replicas == Some(3)
            && st.updated_replicas == Some(3)
            && st.current_revision.is_some()
            && st.current_revision == st.update_revision
            && st.observed_generation == s.metadata.generation)
            .then_some(st)
    })
    .await;

    // Each pod was created only once the one before was Running and Ready.
    let mut created = Vec::new();
    history.replay(|e, state| {
        if let Event::Apply(p) = e {
            let n = name(p);
            if !state.contains_key(&n) {
                let ord: usize = n.strip_prefix("db-").unwrap().parse().unwrap();
                if ord > 0 {
                    let prev = state.get(&format!("db-{}", ord - 1));
                    assert!(
                        prev.is_some_and(ready),
                        "{n} created before db-{} was ready",
                        ord - 1
                    );
                }
                created.push(n);
            }
        }
    });
    assert_eq!(created, ["db-0", "db-1", "db-2"]);

    let list = pods.list().await.unwrap();
    for p in &list.items {
        let n = name(p);
        let ord = n.strip_prefix("db-").unwrap();
        assert_eq!(
            label(p, "statefulset.kubernetes.io/pod-name"),
            Some(n.as_str())
        );
        assert_eq!(label(p, "apps.kubernetes.io/pod-index"), Some(ord));
        assert_eq!(
            label(p, "controller-revision-hash"),
            done.update_revision.as_deref()
        );
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some(n.as_str()));
        assert_eq!(spec.subdomain.as_deref(), Some("db"));
        let vol = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "data")
            .expect("data volume");
        assert_eq!(
            vol.persistent_volume_claim.as_ref().unwrap().claim_name,
            format!("data-db-{ord}")
        );
        let claim = claims.get(&format!("data-db-{ord}")).await.expect("claim");
        assert_eq!(claim.metadata.labels.as_ref().unwrap()["app"], "db");
        assert_eq!(claim.status.unwrap().phase.as_deref(), Some("Pending"));
        // The claim existed before its pod.
        let c_rv: u64 = claim.metadata.resource_version.unwrap().parse().unwrap();
        let p_rv: u64 = history
            .events
            .lock()
            .unwrap()
            .iter()
            .find_map(|e| match e {
                Event::Apply(q) if name(q) == n => {
                    q.metadata.resource_version.as_ref()?.parse().ok()
                }
                _ => None,
            })
            .unwrap();
        assert!(c_rv < p_rv, "claim data-db-{ord} after its pod");
    }

    // Scale down: db-2 goes, and only once it is gone does db-1.
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    eventually("1 pod left", || async {
        let list = pods.list().await.ok()?;
        let names: Vec<String> = list.items.iter().map(name).collect();
        (names == ["db-0"]).then_some(())
    })
    .await;
    let mut marked = Vec::new();
    history.replay(|e, state| {
        if let Event::Apply(p) = e {
            if p.metadata.deletion_timestamp.is_some()
                && state
                    .get(&name(p))
                    .is_some_and(|q| q.metadata.deletion_timestamp.is_none())
            {
                if name(p) == "db-1" {
                    assert!(
                        !state.contains_key("db-2"),
                        "db-1 deleted while db-2 was still there"
                    );
                }
                marked.push(name(p));
            }
        }
    });
    assert_eq!(marked, ["db-2", "db-1"]);
    // Retain (the default): the claims stay.
    for ord in 0..3 {
        claims
            .get(&format!("data-db-{ord}"))
            .await
            .expect("claim retained");
    }
    eventually("status after scale down", || async {
        let s = sets.get("db").await.ok()?.status?;
        (s.replicas == 1 && s.ready_replicas == Some(1)).then_some(())
    })
    .await;

    // What `kubectl describe sts` lists, worded as statefulset-controller does.
    let component = "statefulset-controller";
    for (reason, message) in [
        (
            "SuccessfulCreate",
            "create Claim data-db-0 Pod db-0 in StatefulSet db success",
        ),
        (
            "SuccessfulCreate",
            "create Pod db-0 in StatefulSet db successful",
        ),
        (
            "SuccessfulCreate",
            "create Pod db-2 in StatefulSet db successful",
        ),
        (
            "SuccessfulDelete",
            "delete Pod db-2 in StatefulSet db successful",
        ),
        (
            "SuccessfulDelete",
            "delete Pod db-1 in StatefulSet db successful",
        ),
    ] {
        said(&client, "sts", component, "db", reason, message).await;
    }
    // A pod the API refuses (over quota): FailedCreate with the error.
    pod_quota(&client, "sts", "1", "1").await;
    sets.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 2}})),
    )
    .await
    .unwrap();
    let refused = said(
        &client,
        "sts",
        component,
        "db",
        "FailedCreate",
        "create Pod db-1 in StatefulSet db failed error: ",
    )
    .await;
    assert!(refused.contains("exceeded quota"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statefulset_parallel_start_ordinal_and_partitioned_rolling_update() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    namespace(&client, "par").await;
    node(&client, "n", json!({})).await;
    let sets = Api::<StatefulSet>::namespaced(client.clone(), "par");
    let pods = Api::<Pod>::namespaced(client.clone(), "par");
    let set = statefulset(
        "web",
        "busybox:1",
        json!({"spec": {
            "podManagementPolicy": "Parallel",
            "ordinals": {"start": 1},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}},
            "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"},
            "volumeClaimTemplates": [{"metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}],
        }}),
    );
    sets.create(&set, &PostParams::default()).await.unwrap();
    // Parallel: all three exist before any is ready (no kubelet yet).
    eventually("3 pods without any ready", || async {
        let list = pods.list().await.ok()?;
        let mut names: Vec<String> = list.items.iter().map(name).collect();
        names.sort();
        (names == ["web-1", "web-2", "web-3"]).then_some(())
    })
    .await;
    assert!(!pods.list().await.unwrap().items.iter().any(ready));
    let _kubelet = fake_kubelet(client.clone(), "par", false);
    let first = eventually("3 ready", || async {
        let s = sets.get("web").await.ok()?.status?;
        (s.ready_replicas == Some(3) && s.current_revision == s.update_revision).then_some(s)
    })
    .await;

    // Partition 2 from start 1: only web-3 is updated.
    let history = History::start(&client, "par").await;
    set_image(&sets, "web", "busybox:2").await;
    let partial = eventually("partitioned rollout", || async {
        let s = sets.get("web").await.ok()?;
        let st = s.status.clone()?;
        (st.updated_replicas == Some(1)
            && st.ready_replicas == Some(3)
            && st.observed_generation == s.metadata.generation)
            .then_some(st)
    })
    .await;
    assert_eq!(partial.current_revision, first.current_revision);
    assert_ne!(partial.update_revision, partial.current_revision);
    assert_eq!(partial.current_replicas, Some(2));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let list = pods.list().await.unwrap();
    for p in &list.items {
        let want = if name(p) == "web-3" {
            "busybox:2"
        } else {
            "busybox:1"
        };
        assert_eq!(image(p), want, "{}", name(p));
    }

    // Partition 0: the rest, highest ordinal first, one at a time.
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}})),
    )
    .await
    .unwrap();
    let end = eventually("rollout complete", || async {
        let st = sets.get("web").await.ok()?.status?;
        (st.updated_replicas == Some(3)
            && st.ready_replicas == Some(3)
            && st.current_revision == st.update_revision)
            .then_some(st)
    })
    .await;
    assert_eq!(end.update_revision, partial.update_revision);
    let mut marked = Vec::new();
    history.replay(|e, state| {
        if let Event::Apply(p) = e {
            if p.metadata.deletion_timestamp.is_some()
                && state
                    .get(&name(p))
                    .is_some_and(|q| q.metadata.deletion_timestamp.is_none())
            {
                // Every other pod was Ready when one was taken down.
                for (n, q) in state {
                    if *n != name(p) {
                        assert!(
                            ready(q) && q.metadata.deletion_timestamp.is_none(),
                            "{} deleted while {n} was not ready",
                            name(p)
                        );
                    }
                }
                marked.push(name(p));
            }
        }
    });
    assert_eq!(marked, ["web-3", "web-2", "web-1"]);
    let list = pods.list().await.unwrap();
    assert!(list.items.iter().all(|p| image(p) == "busybox:2"));

    // whenScaled: Delete: the claims of removed pods go with them.
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "par");
    let claim_names = || async {
        let mut v: Vec<String> = claims
            .list()
            .await
            .ok()?
            .items
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect();
        v.sort();
        Some(v)
    };
    assert_eq!(
        claim_names().await.unwrap(),
        ["data-web-1", "data-web-2", "data-web-3"]
    );
    sets.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    eventually("claims of scaled-away pods deleted", || async {
        (claim_names().await? == ["data-web-1"]).then_some(())
    })
    .await;
    // whenDeleted: Delete: the rest go with the set.
    sets.delete("web", &DeleteParams::default()).await.unwrap();
    eventually("claims deleted with the set", || async {
        claim_names().await?.is_empty().then_some(())
    })
    .await;
}
