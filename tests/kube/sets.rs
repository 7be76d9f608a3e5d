//! `kubectl rollout status|history|undo` for DaemonSets and StatefulSets
//! against a `balsa up` cluster. No node agent runs: the test adds a Node
//! object and plays the kubelet (bound pods become Running and Ready,
//! deleted ones go) through the gRPC client.

use std::time::Duration;

use balsa_api::client::{Api, Client, DeleteParams, PostParams};
use k8s_openapi::api::core::v1::{Node, Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::{kubectl_in, Kube};

const MANIFESTS: &str = "apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent, namespace: sets}
spec:
  selector: {matchLabels: {app: agent}}
  template:
    metadata: {labels: {app: agent}}
    spec:
      containers:
      - {name: app, image: 'busybox:1.36', command: [sleep, '3600']}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: sets}
spec:
  replicas: 2
  serviceName: db
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - {name: app, image: 'busybox:1.36', command: [sleep, '3600']}
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Gi}}
";

fn kubelet(client: Client, ns: &str) -> JoinHandle<()> {
    let pods = Api::<Pod>::namespaced(client, ns);
    tokio::spawn(async move {
        loop {
            if let Ok(list) = pods.list().await {
                for p in list.items {
                    let name = p.metadata.name.clone().unwrap_or_default();
                    let bound = p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some();
                    if p.metadata.deletion_timestamp.is_some() {
                        let dp = DeleteParams {
                            grace_period_seconds: Some(0),
                            ..Default::default()
                        };
                        let _ = pods.delete(&name, &dp).await;
                    } else if bound && !balsa_controllers::pods::is_ready(&p) {
                        let mut p = p;
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
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

impl Kube {
    fn run_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = kubectl_in(&self.kubeconfig, self.dir.path(), args, stdin, &[]);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            out.status.success(),
            "kubectl {} failed:\nstdout: {stdout}\nstderr: {stderr}",
            args.join(" ")
        );
        stdout
    }
}

fn has(out: &str, want: &str) {
    assert!(out.contains(want), "expected {want:?} in:\n{out}");
}

/// The REVISION column of `kubectl rollout history`.
fn revisions(out: &str) -> Vec<String> {
    out.lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_rollout_daemonset_and_statefulset() {
    let k = Kube::start().await;
    let members = &k.cluster.as_ref().expect("cluster").file.members;
    let client = Client::new(members.iter().map(|m| m.api.clone()).collect()).expect("client");
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "node-x"},
        "status": {
            "allocatable": {"cpu": "8", "memory": "8Gi", "pods": "110"},
            "capacity": {"cpu": "8", "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }))
    .expect("node");
    let api = Api::<Node>::all(client.clone());
    let mut created = api
        .create(&node, &PostParams::default())
        .await
        .expect("node");
    created.status = node.status.clone();
    api.replace_status(&created, &PostParams::default())
        .await
        .expect("node status");
    let _kubelet = kubelet(client.clone(), "sets");
    k.run_ok(&["create", "namespace", "sets"], None);
    k.run_ok(&["apply", "-f", "-"], Some(MANIFESTS));
    let with = |args: &[&'static str]| -> Vec<&'static str> {
        let mut v = args.to_vec();
        v.extend_from_slice(&["-n", "sets"]);
        v
    };

    for (what, done) in [
        ("ds/agent", "daemon set \"agent\" successfully rolled out"),
        // partition defaults to 0, so kubectl reports a partitioned rollout
        // (as against Kubernetes).
        (
            "sts/db",
            "partitioned roll out complete: 2 new pods have been updated",
        ),
    ] {
        let status = ["rollout", "status", what, "--timeout=120s"];
        has(&k.run_ok(&with(&status), None), done);
        let image = ["set", "image", what, "app=busybox:1.37"];
        k.run_ok(&with(&image), None);
        has(&k.run_ok(&with(&status), None), done);
        let history = k.run_ok(&with(&["rollout", "history", what]), None);
        assert_eq!(revisions(&history), ["1", "2"], "{history}");
        let undo = k.run_ok(&with(&["rollout", "undo", what]), None);
        has(&undo, "rolled back");
        has(&k.run_ok(&with(&status), None), done);
        let history = k.run_ok(&with(&["rollout", "history", what]), None);
        assert_eq!(revisions(&history), ["2", "3"], "{history}");
        let image = k.run_ok(
            &with(&[
                "get",
                what,
                "-o",
                "jsonpath={.spec.template.spec.containers[0].image}",
            ]),
            None,
        );
        assert_eq!(image, "busybox:1.36");
    }

    // `kubectl describe` lists the controllers' events on each set, worded
    // and attributed as kube-controller-manager's (written asynchronously).
    for (what, wants) in [
        (
            "ds/agent",
            &[
                "daemonset-controller",
                "SuccessfulCreate",
                "Created pod: agent-",
                "SuccessfulDelete",
                "Deleted pod: agent-",
            ][..],
        ),
        (
            "sts/db",
            &[
                "statefulset-controller",
                "create Claim data-db-0 Pod db-0 in StatefulSet db success",
                "create Pod db-1 in StatefulSet db successful",
                "delete Pod db-1 in StatefulSet db successful",
            ][..],
        ),
    ] {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let out = k.run_ok(&with(&["describe", what]), None);
            if wants.iter().all(|w| out.contains(w)) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: expected {wants:?} among the events in:\n{out}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    let pods = k.run_ok(&["get", "pods", "-n", "sets", "-o", "wide"], None);
    for p in ["db-0", "db-1", "agent-"] {
        has(&pods, p);
    }
    let get = k.run_ok(
        &["get", "ds,sts,controllerrevisions,pvc", "-n", "sets"],
        None,
    );
    for want in [
        "daemonset.apps/agent",
        "statefulset.apps/db",
        "data-db-0",
        "data-db-1",
        "Pending",
        "CONTROLLER",
    ] {
        has(&get, want);
    }
    k.stop().await;
}
