//! The kube-rs client (`kube` 5.x) unmodified: `kube::runtime::watcher`
//! through a follower sees every acknowledged write, in order, while the
//! leader is SIGKILLed under it.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use balsa_api::grpc::client::Client as GrpcClient;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::watcher::{self, Event};

use crate::Kube;

const NS: &str = "kube-rs";
const WRITES: usize = 120;
/// Acknowledged writes before the leader is killed.
const KILL_AFTER: usize = 40;

/// The index (into the member list) of the leader, as the masters report it.
async fn leader_index(k: &Kube) -> usize {
    let cluster = k.cluster.as_ref().expect("cluster running");
    for _ in 0..200 {
        for addr in cluster.file.api_addrs() {
            let Ok(c) = GrpcClient::connect(&addr).await else {
                continue;
            };
            if let Ok(status) = c.cluster_status().await {
                let members = &cluster.file.members;
                if let Some(i) = members.iter().position(|m| m.id == status.leader) {
                    return i;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader reported");
}

fn configmap(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some([("n".to_string(), name.to_string())].into()),
        ..Default::default()
    }
}

/// Creates `name`, retrying through the election. Returns whether the create
/// was acknowledged (AlreadyExists after a retry means an earlier attempt
/// committed, so it counts as acknowledged too).
async fn create_acked(api: &Api<ConfigMap>, name: &str) -> bool {
    for attempt in 0..200 {
        match api.create(&PostParams::default(), &configmap(name)).await {
            Ok(_) => return true,
            Err(kube::Error::Api(s)) if s.code == 409 && attempt > 0 => return true,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kube_rs_watcher_misses_nothing_across_a_leader_kill() {
    let mut k = Kube::start().await;
    let leader = leader_index(&k).await;
    let members = &k.cluster.as_ref().unwrap().file.members;
    let follower = (leader + 1) % members.len();
    let url = format!("http://{}", members[follower].rest);
    let config = kube::Config::new(url.parse().expect("url"));
    let client = kube::Client::try_from(config).expect("kube client");

    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(NS.into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .expect("namespace created");
    let api = Api::<ConfigMap>::namespaced(client.clone(), NS);

    // What the watcher saw: names, and every out-of-order revision.
    let seen = Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let disorder = Arc::new(Mutex::new(Vec::<String>::new()));
    let watch = {
        let (seen, disorder) = (seen.clone(), disorder.clone());
        let stream = watcher::watcher(api.clone(), watcher::Config::default());
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            let mut last: u64 = 0;
            while let Some(event) = stream.next().await {
                let Ok(event) = event else {
                    // The watcher retries by itself when polled again.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let (cm, live) = match event {
                    Event::Apply(cm) => (cm, true),
                    Event::InitApply(cm) => (cm, false),
                    Event::Init | Event::InitDone | Event::Delete(_) => continue,
                };
                let name = cm.metadata.name.clone().unwrap_or_default();
                let rv: u64 = cm
                    .metadata
                    .resource_version
                    .as_deref()
                    .and_then(|v| v.parse().ok())
                    .expect("numeric resourceVersion");
                // A live event must come after everything seen before it.
                if live && rv <= last {
                    disorder
                        .lock()
                        .unwrap()
                        .push(format!("{name} at {rv} after {last}"));
                }
                last = last.max(rv);
                seen.lock().unwrap().insert(name);
            }
        })
    };

    let mut acked = Vec::new();
    let mut unacked = 0;
    for i in 0..WRITES {
        let name = format!("cm-{i:04}");
        if create_acked(&api, &name).await {
            acked.push(name);
        } else {
            unacked += 1;
        }
        if acked.len() == KILL_AFTER && i + 1 == acked.len() + unacked {
            k.cluster
                .as_mut()
                .unwrap()
                .kill(leader)
                .await
                .expect("SIGKILL the leader");
        }
    }
    assert!(
        acked.len() > KILL_AFTER,
        "writes stopped after the leader kill: {} acknowledged",
        acked.len()
    );

    // Every acknowledged write reaches the watcher.
    let mut missing = Vec::new();
    for _ in 0..600 {
        missing = {
            let seen = seen.lock().unwrap();
            acked
                .iter()
                .filter(|n| !seen.contains(*n))
                .cloned()
                .collect()
        };
        if missing.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watch.abort();
    let events = seen.lock().unwrap().len();
    eprintln!(
        "kube-rs watcher: {} creates acknowledged, {unacked} not; {events} objects seen",
        acked.len()
    );
    assert!(missing.is_empty(), "the watcher missed {missing:?}");
    let disorder = disorder.lock().unwrap().clone();
    assert!(disorder.is_empty(), "out of order: {disorder:?}");
    k.stop().await;
}
