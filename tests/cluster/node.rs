//! The node agent against a real three-master cluster: the assignment stream
//! on the wire (snapshot, changes, resume), and an in-process agent on the
//! process runtime running a bound pod, finishing its graceful deletion, and
//! keeping it running across the loss of the master its stream is on.

use std::sync::Arc;
use std::time::Duration;

use balsa_api::client::{Api, Client, DeleteParams, Patch, PatchParams, PostParams};
use balsa_api::registry::Reason;
use balsa_node::agent::{Agent, AgentConfig, LEASE_NAMESPACE};
use balsa_node::{ProcessRuntime, SimRuntime};
use balsa_proto::node::node_agent_client::NodeAgentClient;
use balsa_proto::node::{
    agent_message, master_message, AgentMessage, ChangeType, Hello, MasterMessage,
};
use balsa_proto::NODE_STREAM_VERSION;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Event, Namespace, Node, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;
use tonic::Streaming;

use crate::harness::{InProc, WAIT};

fn client_of(c: &InProc) -> Client {
    let addrs = (0..c.servers.len())
        .filter(|i| c.servers[*i].is_some())
        .map(|i| c.server(i).api_addr.to_string())
        .collect();
    Client::new(addrs).expect("client")
}

fn pod(name: &str, node: &str, script: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            termination_grace_period_seconds: Some(5),
            containers: vec![Container {
                name: "main".into(),
                image: Some("busybox".into()),
                command: Some(vec!["sh".into(), "-c".into(), script.into()]),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

/// Waits for the `default` namespace (the masters create it after start).
async fn default_namespace(client: &Client) {
    let api: Api<Namespace> = Api::all(client.clone());
    eventually("the default namespace", || async {
        api.get_opt("default").await.ok().flatten()
    })
    .await;
}

/// Polls `f` until it returns `Some`, up to `WAIT`.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn attach(
    addr: &str,
    node: &str,
    after: Option<u64>,
) -> (
    Streaming<MasterMessage>,
    tokio::sync::mpsc::Sender<AgentMessage>,
) {
    let mut client = NodeAgentClient::connect(format!("http://{addr}"))
        .await
        .expect("dial");
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(AgentMessage {
        message: Some(agent_message::Message::Hello(Hello {
            version: NODE_STREAM_VERSION,
            node_name: node.into(),
            after,
        })),
    })
    .await
    .expect("hello");
    let stream = client
        .attach(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("attach")
        .into_inner();
    (stream, tx)
}

/// The next message that is not a Progress.
async fn next(s: &mut Streaming<MasterMessage>) -> master_message::Message {
    loop {
        let m = tokio::time::timeout(WAIT, s.message())
            .await
            .expect("a message in time")
            .expect("stream ok")
            .expect("stream open")
            .message
            .expect("a message");
        if !matches!(m, master_message::Message::Progress(_)) {
            return m;
        }
    }
}

fn name_of(json: &[u8]) -> String {
    let p: Pod = serde_json::from_slice(json).expect("pod json");
    p.metadata.name.unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn assignment_stream_sends_a_snapshot_then_changes_and_resumes() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    default_namespace(&client).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    pods.create(&pod("a", "n1", "true"), &pp).await.expect("a");
    pods.create(&pod("b", "n2", "true"), &pp).await.expect("b");
    let addr = c.server(1).api_addr.to_string();

    let (mut s, _tx) = attach(&addr, "n1", None).await;
    let snap = match next(&mut s).await {
        master_message::Message::Snapshot(snap) => snap,
        other => panic!("expected a snapshot first, got {other:?}"),
    };
    assert_eq!(snap.version, NODE_STREAM_VERSION);
    let names: Vec<String> = snap.pods.iter().map(|p| name_of(p)).collect();
    assert_eq!(names, ["a"], "only n1's pods");

    pods.create(&pod("other", "n2", "true"), &pp)
        .await
        .expect("other");
    pods.create(&pod("c", "n1", "true"), &pp).await.expect("c");
    let added = match next(&mut s).await {
        master_message::Message::Change(ch) => ch,
        other => panic!("expected a change, got {other:?}"),
    };
    assert_eq!(added.r#type, ChangeType::Added as i32);
    assert_eq!(name_of(&added.pod), "c");
    assert!(added.revision > snap.revision);
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        ..Default::default()
    };
    pods.delete("c", &dp).await.expect("delete c");
    let deleted = match next(&mut s).await {
        master_message::Message::Change(ch) => ch,
        other => panic!("expected a change, got {other:?}"),
    };
    assert_eq!(deleted.r#type, ChangeType::Deleted as i32);
    assert_eq!(name_of(&deleted.pod), "c");
    drop(s);

    // On another master, after the ADDED: only what followed, no snapshot.
    let other = c.server(2).api_addr.to_string();
    let (mut s, _tx) = attach(&other, "n1", Some(added.revision)).await;
    match next(&mut s).await {
        master_message::Message::Change(ch) => {
            assert_eq!(ch.r#type, ChangeType::Deleted as i32);
            assert_eq!(ch.revision, deleted.revision);
        }
        other => panic!("expected the deletion, got {other:?}"),
    }
    // A hello in an unknown version is refused.
    let mut raw = NodeAgentClient::connect(format!("http://{other}"))
        .await
        .expect("dial");
    let bad = AgentMessage {
        message: Some(agent_message::Message::Hello(Hello {
            version: 999,
            node_name: "n1".into(),
            after: None,
        })),
    };
    let err = raw
        .attach(tokio_stream::iter([bad]))
        .await
        .expect_err("an unknown version is refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    c.shutdown().await;
}

fn running_container(p: &Pod) -> Option<(String, i32)> {
    let status = p.status.as_ref()?;
    let ready = status
        .conditions
        .as_ref()?
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    let cs = status.container_statuses.as_ref()?.first()?;
    let running = cs.state.as_ref()?.running.is_some();
    (status.phase.as_deref() == Some("Running") && ready && running).then(|| {
        (
            cs.container_id.clone().unwrap_or_default(),
            cs.restart_count,
        )
    })
}

async fn wait_running(pods: &Api<Pod>, name: &str) -> (String, i32) {
    eventually(&format!("pod {name} Running and Ready"), || async {
        pods.get_opt(name)
            .await
            .ok()
            .flatten()
            .and_then(|p| running_container(&p))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agent_runs_bound_pods_and_survives_losing_its_master() {
    let mut c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    default_namespace(&client).await;
    let root = tempfile::tempdir().expect("root");
    let node = "node-a";
    let masters: Vec<String> = (0..3).map(|i| c.server(i).api_addr.to_string()).collect();
    let runtime = Arc::new(ProcessRuntime::new(root.path(), "127.0.0.1"));
    let mut config = AgentConfig::new(node, masters.clone(), root.path(), runtime);
    config.heartbeat = Duration::from_millis(500);
    crate::harness::without_pressure(&mut config);
    let agent = Agent::start(config).await.expect("agent");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    pods.create(&pod("web", node, "echo hi; sleep 1000"), &pp)
        .await
        .expect("create web");
    let (container, restarts) = wait_running(&pods, "web").await;
    assert!(!container.is_empty(), "a containerID");
    assert_eq!(restarts, 0);
    // The agent's status writes carry the uid as a precondition: one meant
    // for another incarnation of the pod is refused.
    let stale =
        Patch::Merge(json!({"metadata": {"uid": "another"}, "status": {"phase": "Failed"}}));
    let refused = pods
        .patch_status("web", &PatchParams::default(), &stale)
        .await
        .expect_err("a stale uid is refused");
    assert_eq!(refused.reason, Reason::Conflict);

    // The Node and its Lease, renewed.
    let nodes: Api<Node> = Api::all(client.clone());
    let n = eventually("the Node", || async {
        nodes.get_opt(node).await.ok().flatten()
    })
    .await;
    let status = n.status.expect("node status");
    let conditions: Vec<(String, String)> = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect();
    for t in ["Ready", "MemoryPressure", "DiskPressure", "PIDPressure"] {
        assert!(
            conditions.iter().any(|(ty, _)| ty == t),
            "{t} in {conditions:?}"
        );
    }
    assert!(status.capacity.expect("capacity").contains_key("pods"));
    assert_eq!(
        n.metadata.labels.expect("labels")["kubernetes.io/hostname"],
        node
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let renewed = || async {
        leases
            .get_opt(node)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.renew_time)
    };
    let first = eventually("the Lease", renewed).await;
    eventually("the Lease renewed", || async {
        renewed().await.filter(|t| t.0 > first.0)
    })
    .await;

    // Events from the worker, written as kubelet's.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    eventually("a Started event for web", || async {
        let list = events.list().await.ok()?;
        list.items.into_iter().find(|e| {
            e.involved_object.name.as_deref() == Some("web")
                && e.reason.as_deref() == Some("Started")
                && e.source.as_ref().and_then(|s| s.host.as_deref()) == Some(node)
        })
    })
    .await;

    // Lose the master the stream is on: the pod keeps running as it was and a
    // newly bound pod still starts.
    let stream = agent.stream();
    let on = stream.borrow().master.clone().expect("attached");
    let i = masters
        .iter()
        .position(|m| *m == on)
        .expect("a known master");
    let lost_at = tokio::time::Instant::now();
    c.stop(i).await;
    let mut watch = stream.clone();
    let moved = tokio::time::timeout(
        WAIT,
        watch.wait_for(|s| s.master.as_ref().is_some_and(|m| *m != on)),
    )
    .await
    .expect("re-attached in time")
    .expect("agent alive")
    .clone();
    let took = lost_at.elapsed();
    eprintln!(
        "stream moved from {on} to {:?} {took:?} after its master stopped",
        moved.master
    );
    assert!(took < Duration::from_secs(3), "re-attached after {took:?}");
    assert!(moved.attached >= 2);
    let client = client_of(&c);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(&pod("after", node, "sleep 1000"), &pp)
        .await
        .expect("create after");
    wait_running(&pods, "after").await;
    let (same, restarts) = wait_running(&pods, "web").await;
    assert_eq!(same, container, "the same container, not started again");
    assert_eq!(restarts, 0);

    // Deleting a pod stops it gracefully, then the agent deletes the object.
    pods.delete("web", &DeleteParams::default())
        .await
        .expect("delete web");
    eventually("web gone", || async {
        matches!(pods.get_opt("web").await, Ok(None)).then_some(())
    })
    .await;
    eventually("a Killing event for web", || async {
        let list = events.list().await.ok()?;
        list.items.into_iter().find(|e| {
            e.involved_object.name.as_deref() == Some("web")
                && e.reason.as_deref() == Some("Killing")
        })
    })
    .await;

    agent.stop(Some(Duration::from_secs(1))).await;
    c.shutdown().await;
}

/// A plain HTTP/1.1 GET (the REST API); (status code, body with chunked
/// transfer decoded).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (code, body.to_string());
    }
    let mut rest = body;
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    (code, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_master_serves_logs_of_an_agent_attached_elsewhere() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    default_namespace(&client).await;
    let root = tempfile::tempdir().expect("root");
    let node = "node-logs";
    // Attached to master 0 only.
    let masters = vec![c.server(0).api_addr.to_string()];
    let runtime = Arc::new(ProcessRuntime::new(root.path(), "127.0.0.1"));
    let mut config = AgentConfig::new(node, masters, root.path(), runtime);
    config.heartbeat = Duration::from_millis(500);
    crate::harness::without_pressure(&mut config);
    let listener = balsa::listeners::bind_node_logs("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("log listener");
    let port = listener.local_addr().expect("port").port();
    let agent = Agent::start_with_logs(config, Some(listener))
        .await
        .expect("agent");

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    pods.create(
        &pod("chatty", node, "echo hello; echo world; sleep 1000"),
        &PostParams::default(),
    )
    .await
    .expect("create");
    wait_running(&pods, "chatty").await;
    // The Node publishes where its log endpoint is.
    let nodes: Api<Node> = Api::all(client.clone());
    eventually("the kubelet endpoint on the Node", || async {
        let n = nodes.get_opt(node).await.ok().flatten()?;
        let published = n.status?.daemon_endpoints?.kubelet_endpoint?.port;
        (published == i32::from(port)).then_some(())
    })
    .await;
    for i in [1, 2] {
        let rest = c.server(i).rest_addr;
        let got = eventually(&format!("logs from master {i}"), || async {
            let (code, body) = http_get(rest, "/api/v1/namespaces/default/pods/chatty/log").await;
            (code == 200 && body == "hello\nworld\n").then_some(body)
        })
        .await;
        assert_eq!(got, "hello\nworld\n");
        let (code, body) = http_get(
            rest,
            "/api/v1/namespaces/default/pods/chatty/log?tailLines=1",
        )
        .await;
        assert_eq!((code, body.as_str()), (200, "world\n"));
    }
    let (code, body) = http_get(
        c.server(2).rest_addr,
        "/api/v1/namespaces/default/pods/chatty/log?container=other",
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("container other is not valid for pod chatty"),
        "{body}"
    );

    // A hollow (sim) container writes nothing: an empty log, not an error.
    let sim_root = tempfile::tempdir().expect("sim root");
    let sim: Arc<dyn balsa_node::Runtime> =
        Arc::new(SimRuntime::new(sim_root.path(), Duration::ZERO));
    let mut sim_config = AgentConfig::new(
        "node-sim",
        vec![c.server(1).api_addr.to_string()],
        sim_root.path(),
        sim,
    );
    crate::harness::without_pressure(&mut sim_config);
    let listener = balsa::listeners::bind_node_logs("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("log listener");
    let sim_agent = Agent::start_with_logs(sim_config, Some(listener))
        .await
        .expect("sim agent");
    pods.create(
        &pod("hollow", "node-sim", "ignored"),
        &PostParams::default(),
    )
    .await
    .expect("create hollow");
    wait_running(&pods, "hollow").await;
    let (code, body) = eventually("the sim node's endpoint", || async {
        let got = http_get(
            c.server(0).rest_addr,
            "/api/v1/namespaces/default/pods/hollow/log",
        )
        .await;
        (got.0 != 503).then_some(got)
    })
    .await;
    assert_eq!((code, body.as_str()), (200, ""));
    sim_agent.stop(Some(Duration::from_secs(5))).await;

    agent.stop(Some(Duration::from_secs(5))).await;
    c.shutdown().await;
}

/// A `balsa node` process (a real one: the test kills it with SIGKILL).
fn node_process(
    masters: &[String],
    root: &std::path::Path,
    name: &str,
    extra: &[&str],
) -> tokio::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(root.join("agent.log"))
        .expect("agent log");
    tokio::process::Command::new(env!("CARGO_BIN_EXE_balsa"))
        .args(["node", "--name", name, "--masters", &masters.join(",")])
        .arg("--root")
        .arg(root)
        .args(["--shutdown-grace", "5"])
        // No pressure eviction (see harness::without_pressure).
        .args(["--eviction-hard", ""])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("balsa node")
}

/// Kills the process groups of the pods a test started, whatever happens
/// to the test (they outlive their agent by design).
struct KillGroups(Vec<i32>);

impl Drop for KillGroups {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_agent_adopts_its_running_pods() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    default_namespace(&client).await;
    let root = tempfile::tempdir().expect("root");
    let node = "node-adopt";
    let masters: Vec<String> = (0..3).map(|i| c.server(i).api_addr.to_string()).collect();
    let mut agent = node_process(&masters, root.path(), node, &[]);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    // `$$$$` is the shell's `$$` once the API's `$(VAR)` expansion has run.
    let script = "echo $$$$ > pid; echo start; while true; do if [ -e tick ]; then rm tick; echo tick; fi; sleep 0.2; done";
    pods.create(&pod("keeper", node, script), &pp)
        .await
        .expect("create keeper");
    pods.create(&pod("doomed", node, "echo $$$$ > pid; sleep 1000"), &pp)
        .await
        .expect("create doomed");
    wait_running(&pods, "keeper").await;
    wait_running(&pods, "doomed").await;
    let container_root = |p: &Pod| {
        root.path()
            .join("pods")
            .join(p.metadata.uid.as_deref().expect("uid"))
            .join("containers/main/root")
    };
    let keeper = pods.get("keeper").await.expect("keeper");
    let doomed = pods.get("doomed").await.expect("doomed");
    let read_pid = |dir: std::path::PathBuf| async move {
        eventually("the pid file", || async {
            std::fs::read_to_string(dir.join("pid"))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
        })
        .await
    };
    let keeper_pid = read_pid(container_root(&keeper)).await;
    let doomed_pid = read_pid(container_root(&doomed)).await;
    let _guard = KillGroups(vec![keeper_pid, doomed_pid]);
    let port_of = |n: Node| n.status?.daemon_endpoints?.kubelet_endpoint.map(|e| e.port);
    let nodes: Api<Node> = Api::all(client.clone());
    let first_port = eventually("the first agent's endpoint", || async {
        port_of(nodes.get_opt(node).await.ok()??)
    })
    .await;

    // SIGKILL: nothing of the agent's shutdown runs; the pods go on.
    agent.kill().await.expect("SIGKILL the agent");
    assert!(alive(keeper_pid) && alive(doomed_pid));
    // A pod deleted while no agent runs is stopped when one comes back.
    pods.delete(
        "doomed",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("force-delete doomed");

    let agent = node_process(&masters, root.path(), node, &["--leave-pods-running"]);
    let second_port = eventually("the new agent's endpoint on the Node", || async {
        let port = port_of(nodes.get_opt(node).await.ok()??)?;
        (port != first_port).then_some(port)
    })
    .await;
    eventually("the deleted pod's process stopped", || async {
        (!alive(doomed_pid)).then_some(())
    })
    .await;
    // The same process, read on into the same log file.
    std::fs::write(container_root(&keeper).join("tick"), b"").expect("tick");
    eventually("the line written after the restart in the log", || async {
        let (code, body) = http_get(
            c.server(1).rest_addr,
            "/api/v1/namespaces/default/pods/keeper/log",
        )
        .await;
        (code == 200 && body == "start\ntick\n").then_some(())
    })
    .await;
    assert!(alive(keeper_pid), "the adopted process still runs");
    let now = pods.get("keeper").await.expect("keeper");
    let (before, after) = (
        keeper.status.clone().expect("status"),
        now.status.expect("status"),
    );
    assert_eq!(after.phase.as_deref(), Some("Running"));
    assert_eq!(after.start_time, before.start_time);
    let (b, a) = (
        &before.container_statuses.expect("before")[0],
        &after.container_statuses.expect("after")[0],
    );
    assert_eq!(a.container_id, b.container_id, "not started again");
    assert_eq!(a.restart_count, b.restart_count);
    assert_eq!(a.state, b.state, "still the same running instance");
    assert!(a.ready);

    // A clean stop with --leave-pods-running leaves it too, for the next.
    let sigterm = |agent: &tokio::process::Child| {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(agent.id().expect("pid") as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
    };
    let mut agent = agent;
    sigterm(&agent);
    let exited = tokio::time::timeout(WAIT, agent.wait()).await;
    assert!(matches!(exited, Ok(Ok(s)) if s.success()), "{exited:?}");
    assert!(alive(keeper_pid), "left running");
    let mut agent = node_process(&masters, root.path(), node, &[]);
    eventually("the third agent's endpoint on the Node", || async {
        let port = port_of(nodes.get_opt(node).await.ok()??)?;
        (port != second_port).then_some(())
    })
    .await;
    std::fs::write(container_root(&keeper).join("tick"), b"").expect("tick");
    eventually("the second tick in the log", || async {
        let (code, body) = http_get(
            c.server(2).rest_addr,
            "/api/v1/namespaces/default/pods/keeper/log",
        )
        .await;
        (code == 200 && body == "start\ntick\ntick\n").then_some(())
    })
    .await;
    let again = pods.get("keeper").await.expect("keeper");
    assert_eq!(
        again
            .status
            .expect("status")
            .container_statuses
            .expect("cs")[0]
            .container_id,
        a.container_id
    );

    // A clean stop without the flag stops the adopted pod.
    sigterm(&agent);
    let _ = tokio::time::timeout(WAIT, agent.wait()).await;
    eventually("the adopted process stopped with its agent", || async {
        (!alive(keeper_pid)).then_some(())
    })
    .await;
    c.shutdown().await;
}

fn with_resources(mut p: Pod, requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Pod {
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let list = |l: &[(&str, &str)]| {
        (!l.is_empty()).then(|| {
            l.iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect()
        })
    };
    if let Some(spec) = p.spec.as_mut() {
        spec.containers[0].resources = Some(ResourceRequirements {
            requests: list(requests),
            limits: list(limits),
            ..Default::default()
        });
    }
    p
}

fn evicted(p: &Pod) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Failed") && s.reason.as_deref() == Some("Evicted")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_under_memory_pressure_evicts_best_effort_first_and_keeps_serving() {
    let c = InProc::start(3, |_| {}).await;
    let client = client_of(&c);
    default_namespace(&client).await;
    let root = tempfile::tempdir().expect("root");
    let node = "node-pressure";
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    // Bound before the agent starts: its first snapshot holds all three.
    let guaranteed = with_resources(
        pod("guaranteed", node, "sleep 1000"),
        &[("cpu", "100m"), ("memory", "64Mi")],
        &[("cpu", "100m"), ("memory", "64Mi")],
    );
    let burstable = with_resources(
        pod("burstable", node, "sleep 1000"),
        &[("memory", "1Gi")],
        &[],
    );
    for p in [
        guaranteed,
        burstable,
        pod("best-effort", node, "sleep 1000"),
    ] {
        pods.create(&p, &pp).await.expect("create");
    }
    let masters: Vec<String> = (0..3).map(|i| c.server(i).api_addr.to_string()).collect();
    let runtime = Arc::new(ProcessRuntime::new(root.path(), "127.0.0.1"));
    let mut config = AgentConfig::new(node, masters, root.path(), runtime);
    config.heartbeat = Duration::from_millis(500);
    // A threshold this machine is certainly under.
    config.thresholds.hard = "memory.available<100Ti".parse().expect("threshold");
    config.eviction.period = Duration::from_secs(2);
    let agent = Agent::start(config).await.expect("agent");

    // The BestEffort pod goes first, while the others still run.
    let (first, others) = eventually("the first eviction", || async {
        let list = pods.list().await.ok()?;
        let first = list.items.iter().find(|p| evicted(p))?.clone();
        Some((first, list.items))
    })
    .await;
    assert_eq!(first.metadata.name.as_deref(), Some("best-effort"));
    for p in &others {
        if p.metadata.name != first.metadata.name {
            assert!(!evicted(p), "{:?} evicted with the first", p.metadata.name);
        }
    }
    let status = first.status.expect("status");
    let message = status.message.expect("a message");
    assert!(
        message.starts_with(
            "The node was low on resource: memory. Threshold quantity: 100Ti, available: "
        ),
        "{message}"
    );
    assert!(
        status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "DisruptionTarget"
                && c.status == "True"
                && c.reason.as_deref() == Some("TerminationByKubelet")),
        "a DisruptionTarget condition"
    );

    // The condition on the Node, and the event.
    let nodes: Api<Node> = Api::all(client.clone());
    eventually("MemoryPressure True", || async {
        let n = nodes.get_opt(node).await.ok().flatten()?;
        n.status?.conditions?.into_iter().find(|c| {
            c.type_ == "MemoryPressure"
                && c.status == "True"
                && c.reason.as_deref() == Some("KubeletHasInsufficientMemory")
        })
    })
    .await;
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let event = eventually("an Evicted event", || async {
        let list = events.list().await.ok()?;
        list.items.into_iter().find(|e| {
            e.involved_object.name.as_deref() == Some("best-effort")
                && e.reason.as_deref() == Some("Evicted")
        })
    })
    .await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(event.message.as_deref(), Some(message.as_str()));

    // The pressure stays, so the others follow, one per pass; the agent
    // keeps serving: its stream, its Lease and graceful deletions.
    eventually("every pod evicted", || async {
        let list = pods.list().await.ok()?;
        (list.items.len() == 3 && list.items.iter().all(evicted)).then_some(())
    })
    .await;
    assert!(agent.stream().borrow().master.is_some(), "still attached");
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let renewed = || async {
        leases
            .get_opt(node)
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec?.renew_time)
    };
    let before = eventually("the Lease", renewed).await;
    eventually("the Lease renewed", || async {
        renewed().await.filter(|t| t.0 > before.0)
    })
    .await;
    pods.delete("best-effort", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("the evicted pod deleted", || async {
        matches!(pods.get_opt("best-effort").await, Ok(None)).then_some(())
    })
    .await;
    agent.stop(Some(Duration::from_secs(1))).await;
    c.shutdown().await;
}
