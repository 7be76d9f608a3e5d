//! The node agent on the `cri` runtime against a real containerd (its own,
//! started by the test; see `node/tests/cri/containerd.rs`) and a real
//! master: a bound busybox pod runs with a pod IP from the sandbox, its log
//! is where the agent reads logs, and deleting the pod removes its
//! containers and sandbox before the object goes.

use std::sync::Arc;
use std::time::Duration;

use balsa_api::client::{Api, Client, DeleteParams, PostParams};
use balsa_node::agent::{Agent, AgentConfig};
use balsa_node::logs::{self, LogOptions};
use balsa_node::runtime::{PodKey, Runtime};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use serde_json::json;

use crate::harness::{InProc, WAIT};

#[path = "../../node/tests/cri/containerd.rs"]
mod containerd;

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    // Image unpacking and sandbox networking on a loaded machine.
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {:?}",
            WAIT * 3
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_on_cri_runs_a_busybox_pod_and_removes_it_on_delete() {
    // The agent's own account, shown only if the test fails: under load in
    // CI the pod once did not become Ready within the minute.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("info,balsa_node=debug")
        .try_init();
    let mut ctrd = containerd::Containerd::start()
        .await
        .expect("starting containerd");
    let c = InProc::start(1, |_| {}).await;
    let client = Client::new(vec![c.server(0).api_addr.to_string()]).expect("client");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    eventually("the default namespace", || async {
        namespaces.get_opt("default").await.ok().flatten()
    })
    .await;
    let node = "node-cri";
    let root = ctrd.dir.path().join("node");
    let runtime = Arc::new(ctrd.runtime(&root));
    let mut config = AgentConfig::new(
        node,
        vec![c.server(0).api_addr.to_string()],
        &root,
        runtime.clone(),
    );
    crate::harness::without_pressure(&mut config);
    let agent = Agent::start(config).await.expect("agent");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "box", "namespace": "default"},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 2,
            "containers": [{
                "name": "main", "image": containerd::BUSYBOX_IMAGE,
                "command": ["sh", "-c", "echo started in $HOSTNAME; touch /tmp/ok; exec sleep 1000"],
                "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ok"]}, "periodSeconds": 1}
            }]
        }
    }))
    .expect("pod");
    let created = pods
        .create(&pod, &PostParams::default())
        .await
        .expect("create");
    let running = eventually("box Running and Ready", || async {
        let p = pods.get_opt("box").await.ok().flatten()?;
        let st = p.status.as_ref()?;
        let ready = st
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        (st.phase.as_deref() == Some("Running") && ready).then_some(p)
    })
    .await;
    let st = running.status.expect("status");
    let ip = st.pod_ip.unwrap_or_default();
    assert!(ip.starts_with("10."), "pod IP from the CNI network: {ip}");
    let cs = &st.container_statuses.expect("container statuses")[0];
    assert!(
        cs.container_id
            .as_deref()
            .is_some_and(|id| id.starts_with("cri://")),
        "{cs:?}"
    );

    let key = PodKey {
        namespace: "default".into(),
        name: "box".into(),
        uid: created.metadata.uid.clone().expect("uid"),
    };
    let log = logs::read(&runtime.log_path(&key, "main", 0), &LogOptions::default())
        .await
        .expect("log");
    assert_eq!(String::from_utf8_lossy(&log), "started in box\n");
    let (sandboxes, containers) = ctrd.counts().await.expect("CRI lists");
    assert_eq!((sandboxes, containers), (1, 1));

    pods.delete("box", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("box gone", || async {
        matches!(pods.get_opt("box").await, Ok(None)).then_some(())
    })
    .await;
    assert_eq!(
        ctrd.counts().await.expect("CRI lists"),
        (0, 0),
        "the pod's container and sandbox are gone with it"
    );

    agent.stop(Some(Duration::from_secs(1))).await;
    c.shutdown().await;
    ctrd.cleanup().await;
}
