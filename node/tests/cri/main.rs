//! Pod workers on the `cri` runtime against a real containerd that the test
//! starts itself (see `containerd.rs`): busybox pods from a local image, their
//! logs, exec probes, restarts, image pull failures and teardown.
//!
//! Needs root and `scripts/setup` (containerd, runc, busybox-static, CNI
//! plugins); fails saying so otherwise.

mod containerd;

use std::sync::Arc;
use std::time::{Duration, Instant};

use balsa_node::backoff::BackoffConfig;
use balsa_node::events::Emitter;
use balsa_node::logs::{self, LogOptions};
use balsa_node::runtime::Runtime;
use balsa_node::{PodHandle, PodWorker, StaticObjects, WorkerConfig};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use serde_json::json;

use containerd::{Containerd, BUSYBOX_IMAGE};

const T: Duration = Duration::from_secs(60);

fn config() -> WorkerConfig {
    WorkerConfig {
        node_name: "node-1".into(),
        host_ip: "127.0.0.1".into(),
        backoff: BackoffConfig {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(2),
            reset_after: Duration::from_secs(60),
        },
        probe_unit: Duration::from_millis(200),
        retry: Duration::from_millis(300),
        node_cpu_millis: 2000,
        node_memory_bytes: 4 << 30,
        node_ephemeral_bytes: 10 << 30,
    }
}

fn pod(value: serde_json::Value) -> Pod {
    let mut pod: Pod = serde_json::from_value(value).expect("pod json");
    let name = pod.metadata.name.clone().unwrap_or_default();
    pod.metadata.namespace = Some("default".into());
    pod.metadata.uid = Some(format!("uid-{name}-{}", std::process::id()));
    pod
}

async fn wait_for(handle: &PodHandle, what: &str, pred: impl Fn(&PodStatus) -> bool) -> PodStatus {
    let mut rx = handle.status();
    let deadline = Instant::now() + T;
    loop {
        {
            let st = rx.borrow_and_update().clone();
            if pred(&st) {
                return st;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || tokio::time::timeout(left, rx.changed()).await.is_err() {
            let st = rx.borrow().clone();
            panic!(
                "timed out waiting for {what}; last status: {}",
                serde_json::to_string_pretty(&st).unwrap_or_default()
            );
        }
    }
}

fn container<'a>(st: &'a PodStatus, name: &str) -> Option<&'a ContainerStatus> {
    st.container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == name)
}

fn waiting_reason(st: &PodStatus, name: &str) -> Option<String> {
    container(st, name)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

fn ready(st: &PodStatus) -> bool {
    st.conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busybox_pods_run_restart_fail_to_pull_and_go_away_under_containerd() {
    let mut containerd = Containerd::start().await.expect("starting containerd");
    let node_root = containerd.dir.path().join("node");
    let runtime = Arc::new(containerd.runtime(&node_root));
    let version = runtime.version().await.expect("CRI version");
    assert!(version.starts_with("containerd "), "{version}");
    let (emitter, _events) = Emitter::channel(4096);
    let worker = PodWorker::new(
        runtime.clone(),
        Arc::new(StaticObjects::new()),
        emitter,
        config(),
    );

    // A long-running pod: env, an emptyDir mount, a memory limit, an exec
    // readiness probe that passes once the command made its file.
    let web = worker.spawn(pod(json!({
        "metadata": {"name": "web"},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "volumes": [{"name": "scratch", "emptyDir": {}}],
            "containers": [{
                "name": "c", "image": BUSYBOX_IMAGE,
                "command": ["sh", "-c",
                    "echo hello from cri; echo \"greeting=$GREETING\"; echo kept > /data/file; cat /data/file; \
                     sleep 1; touch /tmp/ready; exec sleep 1000"],
                "env": [{"name": "GREETING", "value": "hi"}],
                "volumeMounts": [{"name": "scratch", "mountPath": "/data"}],
                "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
                "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 1}
            }]
        }
    })));
    // A container that exits: restarted, each restart counted.
    let crash = worker.spawn(pod(json!({
        "metadata": {"name": "crash"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": BUSYBOX_IMAGE,
            "command": ["sh", "-c", "echo attempt; exit 3"]
        }]}
    })));
    // An image no registry has (nothing is reachable here) and one the
    // policy forbids pulling.
    let missing = worker.spawn(pod(json!({
        "metadata": {"name": "missing"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": "localhost/no-such-image:1", "command": ["true"]
        }]}
    })));
    let never = worker.spawn(pod(json!({
        "metadata": {"name": "never"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": "localhost/no-such-image:1", "imagePullPolicy": "Never",
            "command": ["true"]
        }]}
    })));

    // Over its memory limit: the kernel's OOM killer, reported by containerd.
    let oom = worker.spawn(pod(json!({
        "metadata": {"name": "oom"},
        "spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": BUSYBOX_IMAGE,
            "command": ["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"],
            "resources": {"limits": {"memory": "20Mi"}}
        }]}
    })));

    let st = wait_for(&web, "web Running and Ready", |s| {
        s.phase.as_deref() == Some("Running") && ready(s)
    })
    .await;
    let ip = st.pod_ip.clone().unwrap_or_default();
    assert!(
        ip.starts_with("10.") && ip != "127.0.0.1",
        "the pod IP comes from the sandbox's network: {ip}"
    );
    let c = container(&st, "c").expect("status of c");
    assert!(
        c.container_id
            .as_deref()
            .is_some_and(|id| id.starts_with("cri://")),
        "{c:?}"
    );
    // containerd wrote the log where the agent reads it.
    let path = runtime.log_path(web.key(), "c", 0);
    let log = logs::read(&path, &LogOptions::default())
        .await
        .expect("reading the log");
    let log = String::from_utf8_lossy(&log);
    assert_eq!(
        log.lines().take(3).collect::<Vec<_>>(),
        ["hello from cri", "greeting=hi", "kept"],
        "log at {}",
        path.display()
    );

    // Another runtime on the same containerd (an agent after a restart)
    // finds the pod's sandbox and the running container by their labels.
    let again = containerd.runtime(&node_root);
    let before = containerd.counts().await.expect("CRI lists");
    let sandbox = again.create_sandbox(web.key()).await.expect("sandbox");
    assert_eq!(sandbox.ip, ip, "the same sandbox");
    assert_eq!(containerd.counts().await.expect("CRI lists").0, before.0);
    let id = balsa_node::runtime::ContainerId(
        c.container_id.as_deref().unwrap_or_default()["cri://".len()..].to_string(),
    );
    let out = again
        .exec(
            &id,
            &["cat".into(), "/data/file".into()],
            Duration::from_secs(10),
        )
        .await
        .expect("exec through the other runtime");
    assert_eq!((out.exit_code, out.output.as_str()), (Some(0), "kept\n"));
    let out = again
        .exec(
            &id,
            &["sh".into(), "-c".into(), "exit 7".into()],
            Duration::from_secs(10),
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, Some(7));
    // Past its timeout an exec has no exit code (a probe counts it failed).
    let out = again
        .exec(&id, &["sleep".into(), "30".into()], Duration::from_secs(1))
        .await
        .expect("exec that times out");
    assert_eq!(out.exit_code, None, "{out:?}");

    let st = wait_for(&oom, "OOMKilled", |s| {
        container(s, "c").is_some_and(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some()
        })
    })
    .await;
    let t = container(&st, "c")
        .and_then(|c| c.state.as_ref()?.terminated.clone())
        .expect("terminated");
    assert_eq!(
        (t.reason.as_deref(), t.exit_code),
        (Some("OOMKilled"), 137),
        "{t:?}"
    );
    assert_eq!(st.phase.as_deref(), Some("Failed"));

    let st = wait_for(&crash, "two restarts", |s| {
        container(s, "c").is_some_and(|c| c.restart_count >= 2)
    })
    .await;
    let last = container(&st, "c")
        .and_then(|c| c.last_state.as_ref())
        .and_then(|l| l.terminated.clone())
        .expect("lastState.terminated");
    assert_eq!(last.exit_code, 3, "{last:?}");
    // The previous instance's log outlives its container (`logs --previous`).
    let previous = logs::read(
        &runtime.log_path(crash.key(), "c", 1),
        &LogOptions::default(),
    )
    .await
    .expect("previous log");
    assert_eq!(String::from_utf8_lossy(&previous), "attempt\n");
    assert_eq!(last.reason.as_deref(), Some("Error"), "{last:?}");

    wait_for(&missing, "ErrImagePull", |s| {
        waiting_reason(s, "c").as_deref() == Some("ErrImagePull")
    })
    .await;
    let st = wait_for(&missing, "ImagePullBackOff", |s| {
        waiting_reason(s, "c").as_deref() == Some("ImagePullBackOff")
    })
    .await;
    let msg = container(&st, "c")
        .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.message.clone())
        .unwrap_or_default();
    assert_eq!(msg, "Back-off pulling image \"localhost/no-such-image:1\"");
    assert_eq!(st.phase.as_deref(), Some("Pending"));
    wait_for(&never, "ErrImageNeverPull", |s| {
        waiting_reason(s, "c").as_deref() == Some("ErrImageNeverPull")
    })
    .await;
    // The failing pulls did not stop the agent serving the running pod.
    let st = web.status().borrow().clone();
    assert!(ready(&st), "web still ready: {st:?}");
    assert_eq!(container(&st, "c").map(|c| c.restart_count), Some(0));

    let (sandboxes, containers) = containerd.counts().await.expect("CRI lists");
    // A sandbox per pod that still runs or waits (oom's pod has finished:
    // its sandbox went with it, as kubelet's does); web's container at least
    // (the worker removes an instance once it ended; crash's may be between
    // two).
    assert!(
        sandboxes == 4 && containers >= 1,
        "{sandboxes} {containers}"
    );
    for handle in [web, crash, missing, never, oom] {
        let key = handle.key().clone();
        handle.terminate(Some(Duration::from_secs(2)));
        tokio::time::timeout(T, handle.finished())
            .await
            .expect("pod worker finished");
        assert!(
            !node_root.join("pods").join(&key.uid).exists(),
            "pod directory of {key} removed"
        );
    }
    assert_eq!(
        containerd.counts().await.expect("CRI lists"),
        (0, 0),
        "deleting the pods removed their containers and sandboxes"
    );
    containerd.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_pod_network_pods_use_the_hosts() {
    let mut containerd = Containerd::start_with(false)
        .await
        .expect("starting containerd");
    let node_root = containerd.dir.path().join("node");
    let runtime = Arc::new(containerd.runtime(&node_root));
    assert!(!runtime.network_ready().await.expect("CRI status"));
    let (emitter, _events) = Emitter::channel(256);
    let worker = PodWorker::new(
        runtime.clone(),
        Arc::new(StaticObjects::new()),
        emitter,
        config(),
    );
    // The network namespace's identity, as the container will print it.
    let host_netns = std::fs::read_link("/proc/self/ns/net").expect("our netns");
    let hostnet = worker.spawn(pod(json!({
        "metadata": {"name": "hostnet"},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
            "name": "c", "image": BUSYBOX_IMAGE,
            "command": ["sh", "-c", "readlink /proc/self/ns/net; exec sleep 1000"]
        }]}
    })));
    let st = wait_for(&hostnet, "Running", |s| {
        s.phase.as_deref() == Some("Running")
    })
    .await;
    assert_eq!(st.pod_ip.as_deref(), Some("127.0.0.1"), "the host's IP");
    let path = runtime.log_path(hostnet.key(), "c", 0);
    let deadline = Instant::now() + T;
    let log = loop {
        let log = logs::read(&path, &LogOptions::default())
            .await
            .expect("log");
        if !log.is_empty() || Instant::now() > deadline {
            break String::from_utf8_lossy(&log).trim().to_string();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        log,
        host_netns.display().to_string(),
        "the host's network namespace"
    );
    hostnet.terminate(Some(Duration::from_secs(1)));
    tokio::time::timeout(T, hostnet.finished())
        .await
        .expect("pod worker finished");
    assert_eq!(containerd.counts().await.expect("CRI lists"), (0, 0));
    containerd.cleanup().await;
}
