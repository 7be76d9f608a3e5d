//! Real `balsa server` processes, started the way `balsa up` starts them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use balsa::up::{self, Cluster, UpOptions};
use balsa_api::grpc::client::Client;
use balsa_api::resource::ResourceType;
use balsa_api::StoreError;

fn options(dir: &std::path::Path) -> UpOptions {
    UpOptions {
        dir: dir.to_path_buf(),
        masters: 3,
        binary: env!("CARGO_BIN_EXE_balsa").into(),
        server_args: Vec::new(),
        node_args: Vec::new(),
    }
}

fn object(name: &str) -> bytes::Bytes {
    let v = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "durable"},
        "data": {"payload": "x".repeat(200)},
    });
    serde_json::to_vec(&v).expect("json").into()
}

/// Starts the cluster and the namespace the tests write to (objects need an
/// existing namespace, as in Kubernetes).
async fn start(opts: &UpOptions) -> Cluster {
    let cluster = up::start(opts).await.expect("cluster up");
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "durable"}});
    let clients = clients(&cluster).await;
    for attempt in 0..100 {
        let c = &clients[attempt % clients.len()];
        match c
            .create(serde_json::to_vec(&ns).expect("json").into())
            .await
        {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => return cluster,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    panic!("could not create the test namespace");
}

/// A client per master, waiting for (re)started masters to listen.
async fn clients(cluster: &Cluster) -> Vec<Client> {
    let mut out = Vec::new();
    for addr in cluster.file.api_addrs() {
        let mut attempts = 0;
        loop {
            match Client::connect(&addr).await {
                Ok(c) => break out.push(c),
                Err(e) if attempts == 200 => panic!("connect to {addr}: {e}"),
                Err(_) => attempts += 1,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    out
}

/// Index (into the member list) of the leader, as the cluster reports it.
async fn leader_index(cluster: &Cluster, clients: &[Client]) -> usize {
    for _ in 0..200 {
        for c in clients {
            if let Ok(status) = c.cluster_status().await {
                if let Some(i) = cluster
                    .file
                    .members
                    .iter()
                    .position(|m| m.id == status.leader)
                {
                    return i;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no leader reported");
}

/// Creates `name` through any master, retrying elsewhere on failure. Returns
/// whether the create was acknowledged (an AlreadyExists after a retry means an
/// earlier attempt committed).
async fn create_acked(clients: &[Client], first: usize, name: &str) -> bool {
    for attempt in 0..30 {
        let c = &clients[(first + attempt) % clients.len()];
        match c.create(object(name)).await {
            Ok(_) => return true,
            Err(StoreError::AlreadyExists { .. }) if attempt > 0 => return true,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    false
}

/// Every name must be readable from every master's own state.
async fn assert_everywhere(clients: &[Client], names: &[String]) {
    let rtype = ResourceType::of("v1", "ConfigMap");
    for (i, c) in clients.iter().enumerate() {
        for name in names {
            let key = rtype.key(Some("durable"), name);
            let mut found = false;
            for _ in 0..400 {
                match c.get(&key, true).await {
                    Ok(_) => {
                        found = true;
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            assert!(
                found,
                "acknowledged write {name} is missing on master {}",
                i + 1
            );
        }
    }
}

/// SIGKILL the leader during a stream of concurrent writes: every
/// acknowledged write is present afterwards on every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_the_leader_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = options(dir.path());
    let mut cluster = start(&opts).await;
    let clients = clients(&cluster).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (clients, acked, stop) = (clients.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w{w}-{n}");
                if create_acked(&clients, w, &name).await {
                    acked.lock().expect("lock").push(name);
                }
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let leader = leader_index(&cluster, &clients).await;
    let before_kill = acked.lock().expect("lock").len();
    cluster.kill(leader).await.expect("SIGKILL the leader");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let names = acked.lock().expect("lock").clone();
    assert!(before_kill > 0, "writes were acknowledged before the kill");
    assert!(
        names.len() > before_kill,
        "writes were acknowledged after the kill"
    );
    cluster
        .respawn(leader, &opts)
        .expect("restart the killed master");
    let clients = self::clients(&cluster).await;
    assert_everywhere(&clients, &names).await;
    cluster.stop(Duration::from_secs(5)).await;
}

/// This member's own entry in a cluster status it answered.
fn own(status: &balsa_proto::objects::ClusterStatus, id: u64) -> balsa_proto::peer::MemberStatus {
    status
        .members
        .iter()
        .find(|m| m.id == id)
        .cloned()
        .unwrap_or_default()
}

/// A member whose data dir is wiped and that is started again with `--init`
/// (as `balsa up` and the chaos harness restart a master) bootstraps a cluster
/// of its own: the other two refuse its messages and it refuses theirs. They
/// keep their leader serving every write, nothing acknowledged is lost, their
/// term does not follow its campaigns, and it reports the mismatch and never
/// leads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_wiped_member_restarted_with_init_cannot_disturb_its_old_cluster() {
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = options(dir.path());
    let mut cluster = start(&opts).await;
    let clients = clients(&cluster).await;
    let leader = leader_index(&cluster, &clients).await;
    let wiped = (leader + 1) % 3;
    let wiped_id = cluster.file.members[wiped].id;
    let before = clients[leader].cluster_status().await.expect("status");
    let leader_id = cluster.file.members[leader].id;
    let cluster_id = own(&before, leader_id).cluster_id;
    assert!(!cluster_id.is_empty(), "the cluster has an id");
    assert!(
        before.members.iter().all(|m| m.cluster_id == cluster_id),
        "a fresh `balsa up` agrees on one id: {before:?}"
    );
    let term_before = own(&before, leader_id).term;

    // Writers go through the two members that stay.
    let survivors: Vec<Client> = (0..3)
        .filter(|i| *i != wiped)
        .map(|i| clients[i].clone())
        .collect();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..2 {
        let (clients, acked, stop) = (survivors.clone(), acked.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("i{w}-{n}");
                if create_acked(&clients, w, &name).await {
                    acked.lock().expect("lock").push(name);
                }
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_wipe = acked.lock().expect("lock").len();

    cluster.kill(wiped).await.expect("SIGKILL");
    let data_dir = cluster.file.members[wiped].data_dir.clone();
    std::fs::remove_dir_all(&data_dir).expect("wipe the data dir");
    cluster
        .respawn(wiped, &opts)
        .expect("start it again with --init");
    let stranger = self::clients(&cluster).await.remove(wiped);

    // It reports the mismatch (it refuses the leader's heartbeats, and its
    // campaigns are refused), and never leads; the others never follow it.
    // Watched until its campaigns have run its term well past the others'
    // (so that a survivor that heard them would show it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut reported = String::new();
    let mut stranger_term = 0;
    let mut polls = 0;
    while tokio::time::Instant::now() < deadline
        && (reported.is_empty() || polls < 20 || stranger_term <= term_before + 5)
    {
        polls += 1;
        if let Ok(s) = stranger.cluster_status().await {
            let me = own(&s, wiped_id);
            assert_ne!(me.role, "leader", "the wiped member leads: {me:?}");
            stranger_term = me.term;
            if !me.cluster_mismatch.is_empty() {
                assert_ne!(me.cluster_id, cluster_id, "it got an id of its own");
                reported = me.cluster_mismatch;
            }
        }
        for c in &survivors {
            if let Ok(s) = c.cluster_status().await {
                assert_ne!(s.leader, wiped_id, "a survivor follows the wiped member");
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        reported.contains(&cluster_id),
        "the wiped member names the cluster it is refused by: {reported:?}"
    );

    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let names = acked.lock().expect("lock").clone();
    assert!(before_wipe > 0, "writes were acknowledged before the wipe");
    assert!(
        names.len() > before_wipe,
        "writes were acknowledged after the wiped member came back"
    );
    let after = survivors[0].cluster_status().await.expect("status");
    let (leader_after, term_after) = (after.leader, own(&after, after.leader).term);
    println!(
        "leader {leader_id} term {term_before} before; leader {leader_after} term {term_after} \
         after; {} writes acknowledged",
        names.len()
    );
    assert_ne!(leader_after, wiped_id);
    let stranger_term = own(&stranger.cluster_status().await.expect("status"), wiped_id)
        .term
        .max(stranger_term);
    println!("the wiped member's own term: {stranger_term}");
    assert!(
        stranger_term > term_before + 5,
        "the wiped member campaigned ({stranger_term}), so a survivor that heard it would show"
    );
    // A survivor that took a vote request of its would have taken its term
    // (and deposed the leader). Ordinary elections on a loaded machine may
    // still move the survivors' term a little: printed above.
    assert!(
        term_after < stranger_term,
        "the survivors' term went from {term_before} to {term_after}, past the wiped \
         member's {stranger_term}"
    );
    assert_everywhere(&survivors, &names).await;
    cluster.stop(Duration::from_secs(5)).await;
}

/// Kill every master at once and start them again: nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarting_every_replica_keeps_every_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = options(dir.path());
    let mut cluster = start(&opts).await;
    let clients = clients(&cluster).await;
    let mut names = Vec::new();
    for n in 0..60 {
        let name = format!("r{n}");
        assert!(
            create_acked(&clients, n, &name).await,
            "write {name} acknowledged"
        );
        names.push(name);
    }
    for i in 0..3 {
        cluster.kill(i).await.expect("SIGKILL");
    }
    drop(clients);
    for i in 0..3 {
        cluster.respawn(i, &opts).expect("restart");
    }
    let clients = self::clients(&cluster).await;
    assert_everywhere(&clients, &names).await;
    cluster.stop(Duration::from_secs(5)).await;
}

/// SIGTERM shuts a master down cleanly and promptly, even with a watch open on
/// it; the others keep serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_stops_a_master_cleanly_with_a_watch_open() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = options(dir.path());
    let mut cluster = start(&opts).await;
    let clients = clients(&cluster).await;
    let req = balsa_proto::objects::WatchRequest {
        group: String::new(),
        resource: "configmaps".into(),
        namespace: "durable".into(),
        name: String::new(),
        after: None,
        bookmark_interval_ms: 0,
    };
    let mut watch = Box::pin(clients[0].watch(req).await.expect("watch"));
    assert!(create_acked(&clients, 1, "seen").await);
    let first = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("an event");
    assert!(first.is_some_and(|e| e.is_ok()), "the watch delivers");
    let status = cluster
        .terminate(0, Duration::from_secs(10))
        .await
        .expect("exits after SIGTERM");
    assert!(status.success(), "clean exit, got {status}");
    let rest = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(item) = watch.next().await {
            if item.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(rest.is_ok(), "the open watch ends when its master stops");
    assert!(
        create_acked(&clients[1..], 0, "after-stop").await,
        "the others keep serving"
    );
    cluster.stop(Duration::from_secs(5)).await;
}

/// Runs the `balsa` binary against the cluster in `dir`; its stdout.
fn balsa_cli(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_balsa"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("run balsa");
    assert!(
        out.status.success(),
        "balsa {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_verbs_go_through_the_registry_and_print_like_kubectl() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cluster = start(&options(dir.path())).await;
    let manifest = dir.path().join("web.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: durable\n\
         spec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n\
         \x20   metadata:\n      labels: {app: web}\n    spec:\n      containers:\n\
         \x20     - name: nginx\n        image: nginx:1.27\n",
    )
    .expect("manifest");
    let path = manifest.to_str().expect("path");
    assert!(balsa_cli(dir.path(), &["apply", "-f", path]).contains("deployment.apps/web created"));

    // The registry defaulted it (as kubectl would see): the strategy is there.
    let json: serde_json::Value = serde_json::from_str(&balsa_cli(
        dir.path(),
        &["get", "deploy", "web", "-n", "durable", "-o", "json"],
    ))
    .expect("json");
    assert_eq!(json["spec"]["strategy"]["type"], "RollingUpdate");

    // The default output has the kind's printer columns, kubectl-style.
    let table = balsa_cli(dir.path(), &["get", "deployments", "-n", "durable"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "{table}"
    );
    assert!(
        table.lines().nth(1).unwrap_or_default().starts_with("web "),
        "{table}"
    );
    let wide = balsa_cli(dir.path(), &["get", "deployments", "-A", "-o", "wide"]);
    assert!(wide.starts_with("NAMESPACE "), "{wide}");
    assert!(
        wide.contains("nginx:1.27") && wide.contains("app=web"),
        "{wide}"
    );
    cluster.stop(Duration::from_secs(5)).await;
}
