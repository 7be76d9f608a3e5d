//! The scheduler inside the masters, on a real three-master cluster with Node
//! objects only (no agents): placement (cordon, taints, anti-affinity,
//! topology spread), what an unschedulable pod shows, preemption, and a
//! leader change with no pod bound twice.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use balsa_api::client::watcher::{self, watcher};
use balsa_api::client::{Api, Client, Event, PostParams};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event as KubeEvent, Node, Pod};
use serde_json::{json, Value};

use crate::harness::{InProc, WAIT};

const NS: &str = "default";

fn client_of(c: &InProc) -> Client {
    Client::new(
        (0..c.servers.len())
            .filter(|i| c.servers[*i].is_some())
            .map(|i| c.server(i).api_addr.to_string())
            .collect(),
    )
    .expect("client")
}

/// A Ready node with `cpu` cores, 8Gi and 110 pods; `extra` is merged into
/// the object (labels, spec.taints, spec.unschedulable).
async fn node(client: &Client, name: &str, cpu: &str, extra: Value) {
    let mut obj = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {
            "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
        },
    });
    merge(&mut obj, extra);
    let n: Node = serde_json::from_value(obj).expect("node");
    let api = Api::<Node>::all(client.clone());
    let created = api
        .create(&n, &PostParams::default())
        .await
        .expect("create node");
    if created.status != n.status {
        // The registry may drop status on create: set it through the subresource.
        let mut with_status = created;
        with_status.status = n.status.clone();
        api.replace_status(&with_status, &PostParams::default())
            .await
            .expect("node status");
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

/// A pod with one container; `extra` is merged into it.
async fn pod(client: &Client, name: &str, extra: Value) -> Pod {
    let mut obj = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    });
    merge(&mut obj, extra);
    let p: Pod = serde_json::from_value(obj).expect("pod");
    Api::<Pod>::namespaced(client.clone(), NS)
        .create(&p, &PostParams::default())
        .await
        .expect("create pod")
}

fn cpu(c: &str) -> Value {
    json!({"spec": {"containers": [{"name": "c", "image": "busybox",
        "resources": {"requests": {"cpu": c}}}]}})
}

fn node_name(p: &Pod) -> Option<String> {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

/// Polls until `check` gives a value, or fails with `what`.
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every named pod is bound; pod → node.
async fn bound(client: &Client, names: &[String]) -> BTreeMap<String, String> {
    let api = Api::<Pod>::namespaced(client.clone(), NS);
    until("pods to be bound", || {
        let api = api.clone();
        async move {
            let pods = api.list().await.ok()?.items;
            let placed: BTreeMap<String, String> = pods
                .iter()
                .filter_map(|p| Some((p.metadata.name.clone()?, node_name(p)?)))
                .filter(|(n, _)| names.contains(n))
                .collect();
            (placed.len() == names.len()).then_some(placed)
        }
    })
    .await
}

/// The pod's PodScheduled condition once it is False: (reason, message).
async fn unschedulable(client: &Client, name: &str) -> (String, String) {
    let api = Api::<Pod>::namespaced(client.clone(), NS);
    until("PodScheduled=False", || {
        let api = api.clone();
        async move {
            let p = api.get(name).await.ok()?;
            let c = p
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
            Some((c.reason.unwrap_or_default(), c.message.unwrap_or_default()))
        }
    })
    .await
}

async fn events_for(client: &Client, pod: &str) -> Vec<KubeEvent> {
    Api::<KubeEvent>::namespaced(client.clone(), NS)
        .list()
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(pod))
        .collect()
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cordoned_node_gets_nothing() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    node(&client, "open", "4", json!({})).await;
    node(
        &client,
        "cordoned",
        "64",
        json!({"spec": {"unschedulable": true}}),
    )
    .await;
    let pods = names("p", 8);
    for p in &pods {
        pod(&client, p, cpu("100m")).await;
    }
    let placed = bound(&client, &pods).await;
    assert!(
        placed.values().all(|n| n == "open"),
        "a cordoned node got pods: {placed:?}"
    );
    // `kubectl describe pod` shows where it went and who put it there.
    let evs = until("a Scheduled event", || {
        let client = client.clone();
        async move {
            let evs = events_for(&client, "p-0").await;
            evs.into_iter()
                .find(|e| e.reason.as_deref() == Some("Scheduled"))
        }
    })
    .await;
    assert_eq!(
        evs.message.as_deref(),
        Some("Successfully assigned default/p-0 to open")
    );
    assert_eq!(evs.type_.as_deref(), Some("Normal"));
    assert_eq!(
        evs.source.and_then(|s| s.component).as_deref(),
        Some("default-scheduler")
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn taints_and_tolerations() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    node(
        &client,
        "gpu",
        "64",
        json!({"metadata": {"labels": {"kind": "gpu"}},
               "spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
    )
    .await;
    node(&client, "plain", "4", json!({})).await;
    let plain = names("plain", 5);
    for p in &plain {
        pod(&client, p, json!({})).await;
    }
    let tolerating = names("tol", 3);
    let toleration = json!({"spec": {
        "nodeSelector": {"kind": "gpu"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
    }});
    for p in &tolerating {
        pod(&client, p, toleration.clone()).await;
    }
    let placed = bound(&client, &plain).await;
    assert!(placed.values().all(|n| n == "plain"), "{placed:?}");
    let placed = bound(&client, &tolerating).await;
    assert!(placed.values().all(|n| n == "gpu"), "{placed:?}");
    // Wanting the tainted node without tolerating it: nowhere to go.
    pod(
        &client,
        "intolerant",
        json!({"spec": {"nodeSelector": {"kind": "gpu"}}}),
    )
    .await;
    let (reason, message) = unschedulable(&client, "intolerant").await;
    assert_eq!(reason, "Unschedulable");
    assert!(
        message.starts_with(
            "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, \
             1 node(s) had untolerated taint {dedicated: gpu}."
        ),
        "{message}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn anti_affinity_and_topology_spread_place_pods_across_zones() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    let mut zone_of = HashMap::new();
    for z in ["a", "b", "c"] {
        for i in 0..2 {
            let name = format!("n-{z}{i}");
            node(
                &client,
                &name,
                "8",
                json!({"metadata": {"labels": {"topology.kubernetes.io/zone": z}}}),
            )
            .await;
            zone_of.insert(name, z.to_string());
        }
    }
    // One database per zone, required.
    let anti = json!({
        "metadata": {"labels": {"app": "db"}},
        "spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {"app": "db"}},
            "topologyKey": "topology.kubernetes.io/zone",
        }]}}},
    });
    let dbs = names("db", 3);
    for p in &dbs {
        pod(&client, p, anti.clone()).await;
        // One at a time: each must see the previous one placed.
    }
    let placed = bound(&client, &dbs).await;
    let mut zones: Vec<&String> = placed.values().map(|n| &zone_of[n]).collect();
    zones.sort();
    assert_eq!(zones, ["a", "b", "c"], "{placed:?}");
    pod(&client, "db-3", anti.clone()).await;
    let (_, message) = unschedulable(&client, "db-3").await;
    // The existing pods' terms are checked first, as upstream does.
    assert!(
        message.starts_with(
            "0/6 nodes are available: 6 node(s) didn't satisfy existing pods anti-affinity rules."
        ),
        "{message}"
    );

    // Nine web pods spread with maxSkew 1: three per zone.
    let spread = json!({
        "metadata": {"labels": {"app": "web"}},
        "spec": {"topologySpreadConstraints": [{
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "web"}},
        }]},
    });
    let webs = names("web", 9);
    for p in &webs {
        pod(&client, p, spread.clone()).await;
    }
    let placed = bound(&client, &webs).await;
    let mut per_zone: BTreeMap<&str, usize> = BTreeMap::new();
    for n in placed.values() {
        *per_zone.entry(zone_of[n].as_str()).or_default() += 1;
    }
    assert_eq!(
        per_zone,
        BTreeMap::from([("a", 3), ("b", 3), ("c", 3)]),
        "{placed:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pod_that_fits_nowhere_says_why_and_runs_once_room_appears() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    node(&client, "small-1", "2", json!({})).await;
    node(&client, "small-2", "2", json!({})).await;
    pod(&client, "huge", cpu("4")).await;
    let (reason, message) = unschedulable(&client, "huge").await;
    assert_eq!(reason, "Unschedulable");
    // More than any node's allocatable: preemption cannot help (upstream
    // marks that Unresolvable).
    let expected = "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are \
                    available: 2 Preemption is not helpful for scheduling.";
    assert_eq!(message, expected);
    let ev = until("a FailedScheduling event", || {
        let client = client.clone();
        async move {
            events_for(&client, "huge")
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("FailedScheduling"))
        }
    })
    .await;
    assert_eq!(ev.message.as_deref(), Some(expected));
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(
        ev.involved_object.kind.as_deref(),
        Some("Pod"),
        "{:?}",
        ev.involved_object
    );
    assert!(ev.count.unwrap_or(0) >= 1);
    let p = Api::<Pod>::namespaced(client.clone(), NS)
        .get("huge")
        .await
        .unwrap();
    assert_eq!(node_name(&p), None);
    // A node grows but not enough: the retry fails the same way, and the
    // event is counted again rather than repeated (as client-go's recorder).
    let nodes = Api::<Node>::all(client.clone());
    let mut grown = nodes.get("small-1").await.unwrap();
    let status = grown.status.as_mut().unwrap();
    for list in [&mut status.allocatable, &mut status.capacity] {
        list.as_mut().unwrap().insert(
            "cpu".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("3".into()),
        );
    }
    nodes
        .replace_status(&grown, &PostParams::default())
        .await
        .unwrap();
    let counted = until("the FailedScheduling event counted twice", || {
        let client = client.clone();
        async move {
            let evs: Vec<_> = events_for(&client, "huge")
                .await
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("FailedScheduling"))
                .collect();
            (evs.iter().any(|e| e.count >= Some(2))).then_some(evs)
        }
    })
    .await;
    assert_eq!(counted.len(), 1, "one event, counted: {counted:?}");
    // A node with room appears: the pod is retried on that event (no
    // polling) and lands there.
    node(&client, "big", "8", json!({})).await;
    let placed = bound(&client, &["huge".to_string()]).await;
    assert_eq!(placed["huge"], "big");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preemption_evicts_the_lowest_priority_pod() {
    // There is no Priority admission plugin yet (priorityClassName is not
    // resolved), so the pods carry spec.priority directly.
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    node(&client, "only", "3", json!({})).await;
    let with = |prio: i32, c: &str| {
        let mut v = cpu(c);
        merge(
            &mut v,
            json!({"spec": {"priority": prio, "terminationGracePeriodSeconds": 0}}),
        );
        v
    };
    pod(&client, "low", with(1, "1")).await;
    pod(&client, "mid", with(5, "1")).await;
    pod(&client, "mid2", with(5, "1")).await;
    bound(
        &client,
        &["low".to_string(), "mid".to_string(), "mid2".to_string()],
    )
    .await;
    pod(&client, "high", with(10, "1")).await;
    let placed = bound(&client, &["high".to_string()]).await;
    assert_eq!(placed["high"], "only");
    let api = Api::<Pod>::namespaced(client.clone(), NS);
    assert!(
        api.get_opt("low").await.unwrap().is_none(),
        "the lowest-priority pod was preempted"
    );
    for survivor in ["mid", "mid2"] {
        let p = api.get(survivor).await.unwrap();
        assert_eq!(node_name(&p).as_deref(), Some("only"));
        assert!(p.metadata.deletion_timestamp.is_none());
    }
    let evs = events_for(&client, "low").await;
    assert!(
        evs.iter().any(|e| e.reason.as_deref() == Some("Preempted")),
        "{evs:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_leader_continues_and_no_pod_is_bound_twice() {
    let mut c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    for i in 0..4 {
        node(&client, &format!("n{i}"), "64", json!({})).await;
    }
    // Every node assignment the watch shows, per pod.
    let seen: Arc<Mutex<HashMap<String, Vec<String>>>> = Default::default();
    let watch = {
        let seen = seen.clone();
        let api = Api::<Pod>::namespaced(client.clone(), NS);
        tokio::spawn(async move {
            let config = watcher::Config {
                bookmark_interval: Duration::from_millis(300),
                ..Default::default()
            };
            let mut events = std::pin::pin!(watcher(api, config));
            while let Some(e) = events.next().await {
                if let Ok(Event::Apply(p) | Event::InitApply(p)) = e {
                    if let (Some(name), Some(n)) = (p.metadata.name.clone(), node_name(&p)) {
                        let mut s = seen.lock().unwrap();
                        let list = s.entry(name).or_default();
                        if list.last() != Some(&n) {
                            list.push(n);
                        }
                    }
                }
            }
        })
    };
    // Many at once, so the leader is stopped while its scheduler is still
    // binding (bindings in flight are cut off with it).
    let before = names("before", 80);
    futures::future::join_all(before.iter().map(|p| pod(&client, p, cpu("10m")))).await;
    let leader = c.wait_leader(&[]).await;
    until("some pods bound", || {
        let seen = seen.clone();
        async move { (seen.lock().unwrap().len() >= 5).then_some(()) }
    })
    .await;
    c.stop(leader).await;
    c.wait_leader(&[leader]).await;
    let client = client_of(&c);
    let after = names("after", 40);
    for p in &after {
        pod(&client, p, cpu("10m")).await;
    }
    let all: Vec<String> = before.iter().chain(&after).cloned().collect();
    bound(&client, &all).await;
    // Let the watch catch up, then check every pod got one node, once.
    until("the watch to see every binding", || {
        let seen = seen.clone();
        let n = all.len();
        async move { (seen.lock().unwrap().len() == n).then_some(()) }
    })
    .await;
    watch.abort();
    let seen = seen.lock().unwrap().clone();
    for name in &all {
        assert_eq!(seen[name].len(), 1, "{name} was bound to {:?}", seen[name]);
    }
    // Scheduled events: at most one per pod (a binding answered OK once).
    let evs = Api::<KubeEvent>::namespaced(client.clone(), NS)
        .list()
        .await
        .unwrap()
        .items;
    let mut per_pod: HashMap<String, i32> = HashMap::new();
    for e in evs
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Scheduled"))
    {
        *per_pod
            .entry(e.involved_object.name.clone().unwrap_or_default())
            .or_default() += e.count.unwrap_or(1);
    }
    assert!(per_pod.values().all(|n| *n == 1), "{per_pod:?}");
    c.shutdown().await;
}
