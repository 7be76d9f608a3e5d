//! The cluster-level controllers on a real three-master cluster: node
//! lifecycle and taint-based eviction, ServiceAccounts, Endpoints and
//! EndpointSlices, ResourceQuota and LimitRange, disruption budgets. No node
//! agent runs: the tests play the agents (Node status, Lease renewal, pod
//! status) themselves, so they can stop a heartbeat at will.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use balsa_api::client::{Api, Client, DeleteParams, PostParams};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerPort, EndpointAddress, Endpoints, Event, LimitRange,
    LimitRangeItem, LimitRangeSpec, Namespace, Node, NodeCondition, NodeStatus, Pod, PodCondition,
    PodSpec, PodStatus, ResourceQuota, ResourceQuotaSpec, ResourceRequirements, ScopeSelector,
    ScopedResourceSelectorRequirement, Secret, Service, ServiceAccount, ServicePort, ServiceSpec,
    Taint, Toleration,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, MicroTime, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use tokio::task::JoinHandle;

use crate::harness::InProc;

const DEADLINE: Duration = Duration::from_secs(60);
const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
const NOT_READY: &str = "node.kubernetes.io/not-ready";

fn client_of(c: &InProc) -> Client {
    Client::new((0..3).map(|i| c.server(i).api_addr.to_string()).collect()).expect("client")
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    }
}

async fn namespace(client: &Client, name: &str) {
    Api::<Namespace>::all(client.clone())
        .create(
            &Namespace {
                metadata: meta(name),
                ..Default::default()
            },
            &PostParams::default(),
        )
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

fn pod(name: &str, node: Option<&str>, tolerations: Vec<Toleration>) -> Pod {
    Pod {
        metadata: meta(name),
        spec: Some(PodSpec {
            node_name: node.map(str::to_string),
            containers: vec![Container {
                name: "c".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            tolerations: Some(tolerations),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn unreachable_for(secs: Option<i64>) -> Toleration {
    Toleration {
        key: Some(UNREACHABLE.into()),
        operator: Some("Exists".into()),
        effect: Some("NoExecute".into()),
        toleration_seconds: secs,
        value: None,
    }
}

fn ready(status: &str) -> NodeCondition {
    let now = Time(balsa_controllers::pods::now());
    NodeCondition {
        type_: "Ready".into(),
        status: status.into(),
        reason: Some("KubeletReady".into()),
        message: Some("test agent".into()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

/// Posts the node's Ready condition, as its agent would.
async fn post_ready(nodes: &Api<Node>, name: &str, status: &str) {
    eventually("posting node status", || async {
        let mut n = nodes.get(name).await.ok()?;
        n.status = Some(NodeStatus {
            conditions: Some(vec![ready(status)]),
            ..Default::default()
        });
        nodes.replace_status(&n, &PostParams::default()).await.ok()
    })
    .await;
}

/// A stand-in agent: registers the node Ready and renews its Lease every
/// 300 ms while `alive` is set.
async fn fake_agent(client: &Client, name: &str, alive: Arc<AtomicBool>) -> JoinHandle<()> {
    let nodes = Api::<Node>::all(client.clone());
    nodes
        .create(
            &Node {
                metadata: meta(name),
                ..Default::default()
            },
            &PostParams::default(),
        )
        .await
        .expect("create node");
    post_ready(&nodes, name, "True").await;
    let leases = Api::<Lease>::namespaced(client.clone(), "kube-node-lease");
    let lease = Lease {
        metadata: meta(name),
        spec: Some(LeaseSpec {
            holder_identity: Some(name.into()),
            lease_duration_seconds: Some(40),
            renew_time: Some(MicroTime(balsa_controllers::pods::now())),
            ..Default::default()
        }),
    };
    leases
        .create(&lease, &PostParams::default())
        .await
        .expect("create lease");
    let name = name.to_string();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if !alive.load(Ordering::SeqCst) {
                continue;
            }
            if let Ok(mut l) = leases.get(&name).await {
                if let Some(s) = l.spec.as_mut() {
                    s.renew_time = Some(MicroTime(balsa_api::clock::now()));
                }
                let _ = leases.replace(&l, &PostParams::default()).await;
            }
        }
    })
}

fn taints(n: &Node) -> Vec<(String, String)> {
    let mut t: Vec<(String, String)> = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.effect))
        .collect();
    t.sort();
    t
}

fn pair(k: &str, e: &str) -> (String, String) {
    (k.to_string(), e.to_string())
}

/// Deleted, or marked for deletion.
async fn evicted(pods: &Api<Pod>, name: &str) -> bool {
    match pods.get_opt(name).await {
        Ok(None) => true,
        Ok(Some(p)) => p.metadata.deletion_timestamp.is_some(),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_node_is_tainted_and_its_pods_evicted() {
    let c = InProc::start(3, |o| {
        o.controllers.node_lifecycle.grace_period = Duration::from_secs(3);
        o.controllers.node_lifecycle.monitor_period = Duration::from_millis(500);
    })
    .await;
    let client = client_of(&c);
    namespace(&client, "nl").await;
    let nodes = Api::<Node>::all(client.clone());
    let pods = Api::<Pod>::namespaced(client.clone(), "nl");
    let (good_alive, bad_alive) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(true)),
    );
    // Two nodes: with one alone, its zone (and so every zone) would be
    // fully disrupted, and then nothing is evicted.
    let good = fake_agent(&client, "good", good_alive.clone()).await;
    let bad = fake_agent(&client, "bad", bad_alive.clone()).await;

    // DefaultTolerationSeconds admission: 300 s for both taints.
    let pp = PostParams::default();
    let plain = pods
        .create(&pod("plain", Some("bad"), vec![]), &pp)
        .await
        .expect("create pod");
    let tols: BTreeMap<String, (String, Option<i64>)> = plain
        .spec
        .unwrap()
        .tolerations
        .unwrap()
        .into_iter()
        .map(|t| {
            (
                t.key.unwrap_or_default(),
                (t.effect.unwrap_or_default(), t.toleration_seconds),
            )
        })
        .collect();
    assert_eq!(
        tols,
        BTreeMap::from([
            (NOT_READY.to_string(), ("NoExecute".to_string(), Some(300))),
            (
                UNREACHABLE.to_string(),
                ("NoExecute".to_string(), Some(300))
            ),
        ])
    );
    for (name, node, tol) in [
        ("at-once", "bad", Some(0)),
        ("short", "bad", Some(3)),
        ("long", "bad", Some(3600)),
        ("forever", "bad", None),
        ("elsewhere", "good", Some(0)),
    ] {
        pods.create(&pod(name, Some(node), vec![unreachable_for(tol)]), &pp)
            .await
            .expect("create pod");
    }
    // Healthy nodes: no taints, nothing evicted.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for n in ["good", "bad"] {
        assert_eq!(taints(&nodes.get(n).await.unwrap()), vec![], "{n}");
    }
    assert!(!evicted(&pods, "at-once").await);

    // The bad node goes silent.
    bad_alive.store(false, Ordering::SeqCst);
    let n = eventually("the silent node marked Unknown and tainted", || async {
        let n = nodes.get("bad").await.ok()?;
        (taints(&n).len() == 2).then_some(n)
    })
    .await;
    assert_eq!(
        taints(&n),
        vec![
            pair(UNREACHABLE, "NoExecute"),
            pair(UNREACHABLE, "NoSchedule")
        ]
    );
    let cond = n.status.unwrap().conditions.unwrap();
    let r = cond.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(r.status, "Unknown");
    assert_eq!(r.reason.as_deref(), Some("NodeStatusUnknown"));
    assert_eq!(
        r.message.as_deref(),
        Some("Kubelet stopped posting node status.")
    );
    for t in ["MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert!(cond.iter().any(|c| c.type_ == t && c.status == "Unknown"));
    }
    // tolerationSeconds: 0 goes at once, 3 a little later.
    for name in ["at-once", "short"] {
        eventually(&format!("{name} evicted"), || async {
            evicted(&pods, name).await.then_some(())
        })
        .await;
    }
    for name in ["long", "forever", "plain", "elsewhere"] {
        assert!(!evicted(&pods, name).await, "{name} was evicted");
    }
    assert_eq!(taints(&nodes.get("good").await.unwrap()), vec![]);
    // What `kubectl describe` shows: the node's status change (its Events
    // live in `default`) and the eviction on the pod, as upstream words them.
    let recorded = |ns: &'static str, object: &'static str, reason: &'static str| {
        let events = Api::<Event>::namespaced(client.clone(), ns);
        async move {
            events.list().await.ok()?.items.into_iter().find(|e| {
                e.involved_object.name.as_deref() == Some(object)
                    && e.reason.as_deref() == Some(reason)
            })
        }
    };
    let e = eventually("the node's NodeNotReady event", || {
        recorded("default", "bad", "NodeNotReady")
    })
    .await;
    assert_eq!(
        e.message.as_deref(),
        Some("Node bad status is now: NodeNotReady")
    );
    assert_eq!(e.involved_object.kind.as_deref(), Some("Node"));
    let e = eventually("the eviction event", || {
        recorded("nl", "at-once", "TaintManagerEviction")
    })
    .await;
    assert_eq!(
        e.message.as_deref(),
        Some("Marking for deletion Pod nl/at-once")
    );

    // The agent comes back: taints go.
    bad_alive.store(true, Ordering::SeqCst);
    post_ready(&nodes, "bad", "True").await;
    eventually("taints removed", || async {
        taints(&nodes.get("bad").await.ok()?)
            .is_empty()
            .then_some(())
    })
    .await;
    // Ready=False (the agent says so): not-ready taints.
    post_ready(&nodes, "bad", "False").await;
    let n = eventually("not-ready taints", || async {
        let n = nodes.get("bad").await.ok()?;
        (taints(&n).len() == 2).then_some(n)
    })
    .await;
    assert_eq!(
        taints(&n),
        vec![pair(NOT_READY, "NoExecute"), pair(NOT_READY, "NoSchedule")]
    );
    // Admission gave every pod 300 s of not-ready: none goes yet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for name in ["long", "forever", "plain"] {
        assert!(!evicted(&pods, name).await, "{name} was evicted");
    }
    // A NoExecute taint a pod does not tolerate at all evicts it at once.
    eventually("tainting the good node", || async {
        let mut n = nodes.get("good").await.ok()?;
        n.spec.get_or_insert_with(Default::default).taints = Some(vec![Taint {
            key: "dedicated".into(),
            value: Some("db".into()),
            effect: "NoExecute".into(),
            time_added: None,
        }]);
        nodes.replace(&n, &PostParams::default()).await.ok()
    })
    .await;
    eventually("elsewhere evicted by an untolerated taint", || async {
        evicted(&pods, "elsewhere").await.then_some(())
    })
    .await;
    good.abort();
    bad.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_silent_evicts_nothing() {
    let c = InProc::start(3, |o| {
        o.controllers.node_lifecycle.grace_period = Duration::from_secs(2);
        o.controllers.node_lifecycle.monitor_period = Duration::from_millis(500);
    })
    .await;
    let client = client_of(&c);
    namespace(&client, "fd").await;
    let nodes = Api::<Node>::all(client.clone());
    let pods = Api::<Pod>::namespaced(client.clone(), "fd");
    let alive = Arc::new(AtomicBool::new(true));
    let a = fake_agent(&client, "only", alive.clone()).await;
    pods.create(
        &pod("p", Some("only"), vec![unreachable_for(Some(0))]),
        &PostParams::default(),
    )
    .await
    .expect("create pod");
    alive.store(false, Ordering::SeqCst);
    // The only zone is fully disrupted: NoSchedule, but no NoExecute.
    eventually("unreachable NoSchedule", || async {
        let n = nodes.get("only").await.ok()?;
        (taints(&n) == vec![pair(UNREACHABLE, "NoSchedule")]).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        taints(&nodes.get("only").await.unwrap()),
        vec![pair(UNREACHABLE, "NoSchedule")]
    );
    assert!(!evicted(&pods, "p").await);
    a.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_namespace_has_a_default_service_account() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    namespace(&client, "sa").await;
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), "sa");
    let first = eventually("default service account", || async {
        accounts.get_opt("default").await.ok().flatten()
    })
    .await;
    // The built-in namespaces have one too.
    let system = Api::<ServiceAccount>::namespaced(client.clone(), "kube-system");
    eventually("kube-system's", || async {
        system.get_opt("default").await.ok().flatten()
    })
    .await;
    // Deleted: made again.
    accounts
        .delete("default", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("default service account re-created", || async {
        let sa = accounts.get_opt("default").await.ok().flatten()?;
        (sa.metadata.uid != first.metadata.uid).then_some(())
    })
    .await;
    // Pods run as it unless they name another.
    let p = Api::<Pod>::namespaced(client.clone(), "sa")
        .create(&pod("p", None, vec![]), &PostParams::default())
        .await
        .expect("create pod");
    assert_eq!(
        p.spec.unwrap().service_account_name.as_deref(),
        Some("default")
    );
}

fn owned_by(name: &str, owner: &ConfigMap) -> ObjectMeta {
    ObjectMeta {
        owner_references: Some(vec![OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: owner.metadata.name.clone().expect("owner name"),
            uid: owner.metadata.uid.clone().expect("owner uid"),
            ..Default::default()
        }]),
        ..meta(name)
    }
}

fn config_map(metadata: ObjectMeta, value: &str) -> ConfigMap {
    ConfigMap {
        metadata,
        data: Some(BTreeMap::from([("v".to_string(), value.to_string())])),
        ..Default::default()
    }
}

fn secret_data(value: &str) -> Option<BTreeMap<String, ByteString>> {
    Some(BTreeMap::from([(
        "k".to_string(),
        ByteString(value.as_bytes().to_vec()),
    )]))
}

/// A ConfigMap `owner` owning the ConfigMap `{owner}-map` (data v=m) and the
/// Secret `{owner}-secret` (data k=s).
async fn owner_with_dependents(maps: &Api<ConfigMap>, secrets: &Api<Secret>, owner: &str) {
    let pp = PostParams::default();
    let o = maps
        .create(&config_map(meta(owner), "o"), &pp)
        .await
        .expect("owner");
    maps.create(&config_map(owned_by(&format!("{owner}-map"), &o), "m"), &pp)
        .await
        .expect("dependent map");
    let secret = Secret {
        metadata: owned_by(&format!("{owner}-secret"), &o),
        data: secret_data("s"),
        ..Default::default()
    };
    secrets
        .create(&secret, &pp)
        .await
        .expect("dependent secret");
}

/// The garbage collector follows ConfigMaps and Secrets by their metadata
/// alone (upstream's metadata informers); orphaning rewrites only the
/// dependents' ownerReferences, never their data, and a dependent whose owner
/// is deleted in the background goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_map_and_secret_dependents_are_orphaned_whole_or_collected() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    namespace(&client, "gc").await;
    let maps = Api::<ConfigMap>::namespaced(client.clone(), "gc");
    let secrets = Api::<Secret>::namespaced(client.clone(), "gc");

    // Orphan: the dependents stay, unowned, with their data.
    owner_with_dependents(&maps, &secrets, "a").await;
    let orphan = DeleteParams {
        propagation_policy: Some("Orphan".into()),
        ..Default::default()
    };
    maps.delete("a", &orphan).await.expect("delete owner");
    let (map, secret) = eventually("dependents orphaned", || async {
        let map = maps.get_opt("a-map").await.ok().flatten()?;
        let secret = secrets.get_opt("a-secret").await.ok().flatten()?;
        let unowned = |m: &ObjectMeta| m.owner_references.as_ref().is_none_or(|r| r.is_empty());
        (unowned(&map.metadata) && unowned(&secret.metadata)).then_some((map, secret))
    })
    .await;
    assert_eq!(map.data.expect("map data")["v"], "m");
    assert_eq!(secret.data, secret_data("s"));
    eventually("owner gone", || async {
        matches!(maps.get_opt("a").await, Ok(None)).then_some(())
    })
    .await;

    // Background: the dependents go after their owner.
    owner_with_dependents(&maps, &secrets, "b").await;
    maps.delete("b", &DeleteParams::default())
        .await
        .expect("delete owner");
    eventually("dependents collected", || async {
        let map = maps.get_opt("b-map").await.ok()?;
        let secret = secrets.get_opt("b-secret").await.ok()?;
        (map.is_none() && secret.is_none()).then_some(())
    })
    .await;
}

fn web_pod(name: &str, port: i32) -> Pod {
    let mut p = pod(name, Some("good"), vec![]);
    p.metadata.labels = Some(BTreeMap::from([("app".into(), "web".into())]));
    p.spec.as_mut().expect("spec").containers[0].ports = Some(vec![ContainerPort {
        name: Some("web".into()),
        container_port: port,
        ..Default::default()
    }]);
    p
}

/// Sets the pod's IP and Ready condition, as its agent would.
async fn pod_status(pods: &Api<Pod>, name: &str, ip: &str, ready: bool) {
    eventually("posting pod status", || async {
        let mut p = pods.get(name).await.ok()?;
        p.status = Some(PodStatus {
            phase: Some("Running".into()),
            pod_ip: Some(ip.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        pods.replace_status(&p, &PostParams::default()).await.ok()
    })
    .await;
}

fn ips(a: &Option<Vec<EndpointAddress>>) -> Vec<String> {
    a.iter().flatten().map(|a| a.ip.clone()).collect()
}

/// (ip, ready, serving, terminating) of every endpoint in the service's slices.
async fn slice_view(slices: &Api<EndpointSlice>, svc: &str) -> Vec<(String, bool, bool, bool)> {
    let mut out: Vec<(String, bool, bool, bool)> = slices
        .list()
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| {
            s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
                .map(String::as_str)
                == Some(svc)
        })
        .flat_map(|s| s.endpoints)
        .map(|e| {
            let c = e.conditions.unwrap_or_default();
            (
                e.addresses[0].clone(),
                c.ready.unwrap_or(false),
                c.serving.unwrap_or(false),
                c.terminating.unwrap_or(false),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn endpoints_and_slices_follow_pod_readiness() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    namespace(&client, "ep").await;
    let pp = PostParams::default();
    let pods = Api::<Pod>::namespaced(client.clone(), "ep");
    let services = Api::<Service>::namespaced(client.clone(), "ep");
    let endpoints = Api::<Endpoints>::namespaced(client.clone(), "ep");
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), "ep");
    pods.create(&web_pod("a", 8080), &pp).await.expect("pod a");
    pods.create(&web_pod("b", 8080), &pp).await.expect("pod b");
    pods.create(&web_pod("no-ip", 8080), &pp)
        .await
        .expect("pod");
    pod_status(&pods, "a", "10.1.0.1", true).await;
    pod_status(&pods, "b", "10.1.0.2", false).await;
    let svc = services
        .create(
            &Service {
                metadata: meta("web"),
                spec: Some(ServiceSpec {
                    selector: Some(BTreeMap::from([("app".into(), "web".into())])),
                    ports: Some(vec![ServicePort {
                        name: Some("http".into()),
                        port: 80,
                        target_port: Some(IntOrString::String("web".into())),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &pp,
        )
        .await
        .expect("service");
    // A Service without a selector: its Endpoints are the user's.
    services
        .create(
            &Service {
                metadata: meta("manual"),
                spec: Some(ServiceSpec {
                    ports: Some(vec![ServicePort {
                        port: 80,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &pp,
        )
        .await
        .expect("service");

    let ep = eventually("endpoints of web", || async {
        let ep = endpoints.get_opt("web").await.ok().flatten()?;
        let s = ep.subsets.clone()?;
        (s.len() == 1
            && ips(&s[0].addresses) == ["10.1.0.1"]
            && ips(&s[0].not_ready_addresses) == ["10.1.0.2"])
        .then_some(ep)
    })
    .await;
    let subset = &ep.subsets.unwrap()[0];
    let port = &subset.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), 8080));
    let addr = &subset.addresses.as_ref().unwrap()[0];
    assert_eq!(addr.node_name.as_deref(), Some("good"));
    let tr = addr.target_ref.as_ref().unwrap();
    assert_eq!(
        (tr.kind.as_deref(), tr.name.as_deref()),
        (Some("Pod"), Some("a"))
    );

    eventually("slices of web", || async {
        (slice_view(&slices, "web").await
            == vec![
                ("10.1.0.1".into(), true, true, false),
                ("10.1.0.2".into(), false, false, false),
            ])
        .then_some(())
    })
    .await;
    let list = slices.list().await.unwrap().items;
    let s = list
        .iter()
        .find(|s| s.metadata.labels.as_ref().unwrap()["kubernetes.io/service-name"] == "web")
        .unwrap();
    assert_eq!(
        s.metadata.labels.as_ref().unwrap()["endpointslice.kubernetes.io/managed-by"],
        "endpointslice-controller.k8s.io"
    );
    assert!(s.metadata.name.as_deref().unwrap().starts_with("web-"));
    assert_eq!(s.address_type, "IPv4");
    assert_eq!(s.ports.as_ref().unwrap()[0].port, Some(8080));
    let owner = &s.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("Service", svc.metadata.uid.as_deref().unwrap(), Some(true))
    );

    // Readiness flips: b becomes ready, a not.
    pod_status(&pods, "b", "10.1.0.2", true).await;
    pod_status(&pods, "a", "10.1.0.1", false).await;
    eventually("endpoints follow readiness", || async {
        let s = endpoints.get_opt("web").await.ok().flatten()?.subsets?;
        (ips(&s[0].addresses) == ["10.1.0.2"] && ips(&s[0].not_ready_addresses) == ["10.1.0.1"])
            .then_some(())
    })
    .await;
    eventually("slices follow readiness", || async {
        (slice_view(&slices, "web").await
            == vec![
                ("10.1.0.1".into(), false, false, false),
                ("10.1.0.2".into(), true, true, false),
            ])
        .then_some(())
    })
    .await;
    // The selector-less Service got nothing.
    assert!(endpoints.get_opt("manual").await.unwrap().is_none());
    assert!(slice_view(&slices, "manual").await.is_empty());

    // The Service goes: so do its Endpoints and slices.
    services
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete service");
    eventually("endpoints and slices removed", || async {
        let ep = endpoints.get_opt("web").await.ok()?;
        let left = slices.list().await.ok()?.items.len();
        (ep.is_none() && left == 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disruption_budget_status_gates_eviction() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    namespace(&client, "pdb").await;
    let pp = PostParams::default();
    let pods = Api::<Pod>::namespaced(client.clone(), "pdb");
    let pdbs = Api::<PodDisruptionBudget>::namespaced(client.clone(), "pdb");
    for (i, name) in ["db-0", "db-1", "db-2"].into_iter().enumerate() {
        let mut p = web_pod(name, 5432);
        p.metadata.labels = Some(BTreeMap::from([("app".into(), "db".into())]));
        pods.create(&p, &pp).await.expect("pod");
        pod_status(&pods, name, &format!("10.2.0.{i}"), true).await;
    }
    let pdb = pdbs
        .create(
            &PodDisruptionBudget {
                metadata: meta("db"),
                spec: Some(PodDisruptionBudgetSpec {
                    min_available: Some(IntOrString::Int(2)),
                    selector: Some(LabelSelector {
                        match_labels: Some(BTreeMap::from([("app".into(), "db".into())])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &pp,
        )
        .await
        .expect("pdb");
    let st = eventually("pdb status", || async {
        let s = pdbs.get("db").await.ok()?.status?;
        (s.current_healthy == 3).then_some(s)
    })
    .await;
    assert_eq!(
        (st.desired_healthy, st.expected_pods, st.disruptions_allowed),
        (2, 3, 1)
    );
    assert_eq!(st.observed_generation, pdb.metadata.generation);
    let cond = &st.conditions.unwrap()[0];
    assert_eq!(
        (
            cond.type_.as_str(),
            cond.status.as_str(),
            cond.reason.as_str()
        ),
        ("DisruptionAllowed", "True", "SufficientPods")
    );

    // One eviction is allowed; the budget then records it.
    pods.evict("db-0", &DeleteParams::default())
        .await
        .expect("first eviction allowed");
    let st = eventually("pdb after an eviction", || async {
        let s = pdbs.get("db").await.ok()?.status?;
        (s.current_healthy == 2 && s.disruptions_allowed == 0).then_some(s)
    })
    .await;
    let cond = &st.conditions.unwrap()[0];
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "InsufficientPods")
    );
    // The next is refused with 429.
    let err = pods
        .evict("db-1", &DeleteParams::default())
        .await
        .expect_err("a second eviction violates the budget");
    assert_eq!(err.code(), 429, "{err:?}");
    assert_eq!(
        err.message,
        "Cannot evict pod as it would violate the pod's disruption budget."
    );
    assert!(!evicted(&pods, "db-1").await);

    // A new ready pod restores one (expectedPods counts every selected pod
    // with an int minAvailable, the terminating one too, as upstream).
    let mut p = web_pod("db-3", 5432);
    p.metadata.labels = Some(BTreeMap::from([("app".into(), "db".into())]));
    pods.create(&p, &pp).await.expect("pod");
    pod_status(&pods, "db-3", "10.2.0.3", true).await;
    eventually("pdb allows one again", || async {
        let s = pdbs.get("db").await.ok()?.status?;
        (s.current_healthy == 3 && s.disruptions_allowed == 1 && s.expected_pods == 4).then_some(())
    })
    .await;
}

fn sized_pod(name: &str, cpu: Option<&str>) -> Pod {
    let mut p = pod(name, None, vec![]);
    if let Some(cpu) = cpu {
        p.spec.as_mut().expect("spec").containers[0].resources = Some(ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".into(), Quantity(cpu.into()))])),
            limits: Some(BTreeMap::from([("cpu".into(), Quantity(cpu.into()))])),
            ..Default::default()
        });
    }
    p
}

fn hard(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn quota_refuses_over_limit_and_counts_usage() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    namespace(&client, "rq").await;
    let pp = PostParams::default();
    let pods = Api::<Pod>::namespaced(client.clone(), "rq");
    let quotas = Api::<ResourceQuota>::namespaced(client.clone(), "rq");
    let cms = Api::<ConfigMap>::namespaced(client.clone(), "rq");
    quotas
        .create(
            &ResourceQuota {
                metadata: meta("compute"),
                spec: Some(ResourceQuotaSpec {
                    hard: hard(&[
                        ("pods", "3"),
                        ("requests.cpu", "1"),
                        ("count/configmaps", "1"),
                    ]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            &pp,
        )
        .await
        .expect("quota");
    eventually("quota status", || async {
        let s = quotas.get("compute").await.ok()?.status?;
        (s.hard?
            == hard(&[
                ("pods", "3"),
                ("requests.cpu", "1"),
                ("count/configmaps", "1"),
            ])?)
        .then_some(())
    })
    .await;

    // A pod without a cpu request is refused.
    let err = pods
        .create(&sized_pod("bare", None), &pp)
        .await
        .expect_err("no cpu request");
    assert_eq!(err.code(), 403);
    assert_eq!(
        err.message,
        "pods \"bare\" is forbidden: failed quota: compute: must specify requests.cpu"
    );
    pods.create(&sized_pod("a", Some("500m")), &pp)
        .await
        .expect("a fits");
    let err = pods
        .create(&sized_pod("b", Some("600m")), &pp)
        .await
        .expect_err("over cpu");
    assert_eq!(err.code(), 403);
    assert_eq!(
        err.message,
        "pods \"b\" is forbidden: exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=500m, limited: requests.cpu=1"
    );
    // Concurrent creates: exactly the two pods that fit are admitted.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..6 {
        let pods = pods.clone();
        set.spawn(async move {
            pods.create(
                &sized_pod(&format!("c{i}"), Some("100m")),
                &PostParams::default(),
            )
            .await
        });
    }
    let (mut ok, mut refused) = (0, 0);
    while let Some(r) = set.join_next().await {
        match r.expect("task") {
            Ok(_) => ok += 1,
            Err(e) => {
                assert_eq!(e.code(), 403, "{e:?}");
                assert!(
                    e.message
                        .contains("exceeded quota: compute, requested: pods=1"),
                    "{}",
                    e.message
                );
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (2, 4));
    let listed = pods.list().await.expect("list").items.len();
    assert_eq!(listed, 3);
    let st = eventually("usage in status", || async {
        let s = quotas.get("compute").await.ok()?.status?;
        let used = s.used?;
        (used.get("pods")?.0 == "3").then_some(used)
    })
    .await;
    assert_eq!(st["requests.cpu"].0, "700m");

    // Object counts, and usage given back when objects go.
    let cm = |n: &str| ConfigMap {
        metadata: meta(n),
        ..Default::default()
    };
    cms.create(&cm("one"), &pp).await.expect("first configmap");
    let err = cms.create(&cm("two"), &pp).await.expect_err("second");
    assert_eq!(
        err.message,
        "configmaps \"two\" is forbidden: exceeded quota: compute, requested: count/configmaps=1, used: count/configmaps=1, limited: count/configmaps=1"
    );
    cms.delete("one", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("configmap usage released", || async {
        let s = quotas.get("compute").await.ok()?.status?;
        (s.used?.get("count/configmaps")?.0 == "0").then_some(())
    })
    .await;
    cms.create(&cm("two"), &pp).await.expect("fits again");
}

/// Scoped quotas (upstream's pod evaluator): a quota with scopes counts and
/// limits only the pods in its scopes, and no other kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scoped_quotas_count_only_their_pods() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    namespace(&client, "scoped").await;
    let pp = PostParams::default();
    let pods = Api::<Pod>::namespaced(client.clone(), "scoped");
    let quotas = Api::<ResourceQuota>::namespaced(client.clone(), "scoped");
    Api::<PriorityClass>::all(client.clone())
        .create(
            &PriorityClass {
                metadata: meta("high"),
                value: 1000,
                ..Default::default()
            },
            &pp,
        )
        .await
        .expect("priority class");
    let scoped =
        |name: &str, hard_: &[(&str, &str)], scopes: &[&str], sel: Option<ScopeSelector>| {
            ResourceQuota {
                metadata: meta(name),
                spec: Some(ResourceQuotaSpec {
                    hard: hard(hard_),
                    scopes: (!scopes.is_empty())
                        .then(|| scopes.iter().map(|s| s.to_string()).collect()),
                    scope_selector: sel,
                }),
                ..Default::default()
            }
        };
    // A scope that cannot count a resource is refused, as kube-apiserver does.
    let err = quotas
        .create(
            &scoped("bad", &[("requests.cpu", "1")], &["BestEffort"], None),
            &pp,
        )
        .await
        .expect_err("BestEffort pods have no cpu requests");
    assert_eq!(err.code(), 422, "{err:?}");
    assert!(
        err.message.contains(
            "spec.scopes: Invalid value: [\"BestEffort\"]: unsupported scope applied to resource"
        ),
        "{}",
        err.message
    );
    quotas
        .create(
            &scoped("best-effort", &[("pods", "1")], &["BestEffort"], None),
            &pp,
        )
        .await
        .expect("best-effort quota");
    let high = ScopeSelector {
        match_expressions: Some(vec![ScopedResourceSelectorRequirement {
            scope_name: "PriorityClass".into(),
            operator: "In".into(),
            values: Some(vec!["high".into()]),
        }]),
    };
    quotas
        .create(
            &scoped(
                "high",
                &[("pods", "1"), ("requests.cpu", "1")],
                &[],
                Some(high),
            ),
            &pp,
        )
        .await
        .expect("priority quota");
    for q in ["best-effort", "high"] {
        eventually("scoped quota status", || async {
            quotas.get(q).await.ok()?.status?.hard.map(|_| ())
        })
        .await;
    }

    pods.create(&sized_pod("be-1", None), &pp)
        .await
        .expect("first best-effort pod");
    let err = pods
        .create(&sized_pod("be-2", None), &pp)
        .await
        .expect_err("second best-effort pod");
    assert_eq!(err.code(), 403);
    assert_eq!(
        err.message,
        "pods \"be-2\" is forbidden: exceeded quota: best-effort, requested: pods=1, used: pods=1, limited: pods=1"
    );
    // Burstable pods are outside both quotas: neither counts nor limits them
    // (the priority quota's requests.cpu does not ask them for requests).
    for i in 0..3 {
        pods.create(&sized_pod(&format!("burst-{i}"), Some("100m")), &pp)
            .await
            .expect("burstable pods are not in the BestEffort scope");
    }
    let prioritized = |name: &str, cpu: Option<&str>| {
        let mut p = sized_pod(name, cpu);
        p.spec.as_mut().expect("spec").priority_class_name = Some("high".into());
        p
    };
    // (Burstable by its memory request, so outside the BestEffort quota.)
    let mut bare = prioritized("hi-bare", None);
    bare.spec.as_mut().expect("spec").containers[0].resources = Some(ResourceRequirements {
        requests: Some(BTreeMap::from([("memory".into(), Quantity("64Mi".into()))])),
        ..Default::default()
    });
    let err = pods
        .create(&bare, &pp)
        .await
        .expect_err("a pod in the priority scope must declare requests.cpu");
    assert_eq!(
        err.message,
        "pods \"hi-bare\" is forbidden: failed quota: high: must specify requests.cpu"
    );
    pods.create(&prioritized("hi-1", Some("500m")), &pp)
        .await
        .expect("first high pod");
    let err = pods
        .create(&prioritized("hi-2", Some("100m")), &pp)
        .await
        .expect_err("second high pod");
    assert!(
        err.message
            .contains("exceeded quota: high, requested: pods=1"),
        "{}",
        err.message
    );
    // The controller's recount agrees with admission.
    let used = |q: &'static str| {
        let quotas = quotas.clone();
        async move {
            let u = quotas.get(q).await.ok()?.status?.used?;
            Some(
                u.into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect::<BTreeMap<_, _>>(),
            )
        }
    };
    eventually("scoped usage", || async {
        let be = used("best-effort").await?;
        let hi = used("high").await?;
        (be.get("pods")? == "1" && hi.get("pods")? == "1" && hi.get("requests.cpu")? == "500m")
            .then_some(())
    })
    .await;
    pods.delete("be-1", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("best-effort usage released", || async {
        (used("best-effort").await?.get("pods")? == "0").then_some(())
    })
    .await;
    pods.create(&sized_pod("be-2", None), &pp)
        .await
        .expect("fits again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limit_range_defaults_and_bounds() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    namespace(&client, "lr").await;
    let pp = PostParams::default();
    let pods = Api::<Pod>::namespaced(client.clone(), "lr");
    Api::<LimitRange>::namespaced(client.clone(), "lr")
        .create(
            &LimitRange {
                metadata: meta("limits"),
                spec: Some(LimitRangeSpec {
                    limits: vec![LimitRangeItem {
                        type_: "Container".into(),
                        default: hard(&[("cpu", "500m"), ("memory", "256Mi")]),
                        default_request: hard(&[("cpu", "100m")]),
                        max: hard(&[("cpu", "1")]),
                        ..Default::default()
                    }],
                }),
            },
            &pp,
        )
        .await
        .expect("limit range");
    let p = pods
        .create(&sized_pod("plain", None), &pp)
        .await
        .expect("pod");
    let r = p.spec.unwrap().containers[0].resources.clone().unwrap();
    assert_eq!(r.limits, hard(&[("cpu", "500m"), ("memory", "256Mi")]));
    assert_eq!(r.requests, hard(&[("cpu", "100m"), ("memory", "256Mi")]));
    let err = pods
        .create(&sized_pod("big", Some("2")), &pp)
        .await
        .expect_err("over max");
    assert_eq!(err.code(), 403);
    assert_eq!(
        err.message,
        "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
    );
}
