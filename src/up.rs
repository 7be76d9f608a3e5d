//! `balsa up`: a local three-master HA cluster in one command. Starts the
//! masters as separate processes on loopback, waits for a leader and a committed
//! write, writes `cluster.json`, starts the node agents (`balsa node`
//! processes, one per node), and stops them all on Ctrl-C. Run again on the
//! same directory, it resumes the same cluster (same ids, ports and data).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use balsa_api::grpc::client::Client;
use balsa_api::resource::ResourceType;
use balsa_api::StoreError;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::cluster_file::{ClusterFile, MemberEntry};
use crate::node::RuntimeKind;

#[derive(Debug, Clone)]
pub struct UpOptions {
    pub dir: PathBuf,
    pub masters: usize,
    /// The `balsa` binary to start the masters with.
    pub binary: PathBuf,
    /// Extra flags for every `balsa server`.
    pub server_args: Vec<String>,
    /// Extra flags for every `balsa node` (`start_agents`).
    pub node_args: Vec<String>,
}

pub struct Cluster {
    pub file: ClusterFile,
    children: Vec<Child>,
}

/// `n` distinct free loopback ports: every listener is held until all are
/// chosen, so the kernel cannot hand the same port out twice.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    held.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// The members to run: those of an earlier run in `dir`, or new ones.
fn plan(opts: &UpOptions) -> anyhow::Result<Vec<MemberEntry>> {
    if ClusterFile::path(&opts.dir).exists() {
        let file = ClusterFile::read(&opts.dir)?;
        if file.members.len() != opts.masters {
            bail!(
                "{} holds a cluster of {} masters, not {}; use another --dir",
                opts.dir.display(),
                file.members.len(),
                opts.masters
            );
        }
        let mut members = file.members;
        let missing = members.iter().filter(|m| m.rest.is_empty()).count();
        let mut ports = free_ports(missing)?.into_iter();
        for m in members.iter_mut().filter(|m| m.rest.is_empty()) {
            m.rest = format!("127.0.0.1:{}", ports.next().expect("one port per member"));
        }
        return Ok(members);
    }
    let ports = free_ports(3 * opts.masters)?;
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    Ok((0..opts.masters)
        .map(|i| {
            let id = i as u64 + 1;
            MemberEntry {
                id,
                pid: 0,
                peer: addr(3 * i),
                api: addr(3 * i + 1),
                rest: addr(3 * i + 2),
                data_dir: opts.dir.join(format!("master-{id}")),
                log: opts.dir.join(format!("master-{id}.log")),
            }
        })
        .collect())
}

/// Starts master `m`. `token` (the init token of a new cluster) is given only
/// to masters started for the first time: a master restarted on a wiped data
/// dir must not derive the cluster's id again (see
/// `balsa_raft_store::identity`).
fn spawn(
    opts: &UpOptions,
    m: &MemberEntry,
    all: &[MemberEntry],
    token: Option<&str>,
) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&m.log)
        .with_context(|| format!("opening {}", m.log.display()))?;
    let mut cmd = Command::new(&opts.binary);
    cmd.arg("server")
        .args(["--id", &m.id.to_string()])
        .arg("--data-dir")
        .arg(&m.data_dir)
        .args([
            "--peer-listen",
            &m.peer,
            "--api-listen",
            &m.api,
            "--rest-listen",
            &m.rest,
            "--init",
            "--exit-with-parent",
        ]);
    for other in all {
        cmd.args([
            "--member",
            &format!("{}={},{}", other.id, other.peer, other.api),
        ]);
    }
    if let Some(token) = token {
        cmd.args(["--init-token", token]);
    }
    cmd.args(&opts.server_args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true);
    cmd.spawn()
        .with_context(|| format!("starting master {}", m.id))
}

/// Starts (or resumes) the cluster and returns once a write has committed.
///
/// A new cluster's ports are chosen free but bound only by the masters, so
/// another process can take one in between; then that master cannot listen,
/// and the whole new cluster is started again on other ports.
pub async fn start(opts: &UpOptions) -> anyhow::Result<Cluster> {
    const ATTEMPTS: usize = 3;
    let fresh = !ClusterFile::path(&opts.dir).exists();
    let mut attempt = 1;
    loop {
        match start_once(opts).await {
            Err((e, Some(mut cluster)))
                if fresh
                    && attempt < ATTEMPTS
                    && format!("{e:#}").contains("Address already in use") =>
            {
                tracing::warn!(error = %e, attempt, "a port was taken; starting on other ports");
                for i in 0..cluster.children.len() {
                    let _ = cluster.kill(i).await;
                }
                for m in &cluster.file.members {
                    let _ = std::fs::remove_dir_all(&m.data_dir);
                    let _ = std::fs::remove_file(&m.log);
                }
                let _ = std::fs::remove_file(ClusterFile::path(&opts.dir));
                attempt += 1;
            }
            Ok(cluster) => return Ok(cluster),
            Err((e, _)) => return Err(e),
        }
    }
}

/// One try of `start`; on failure, the cluster as far as it got.
async fn start_once(opts: &UpOptions) -> Result<Cluster, (anyhow::Error, Option<Cluster>)> {
    let no_cluster = |e: anyhow::Error| (e, None);
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("creating {}", opts.dir.display()))
        .map_err(no_cluster)?;
    // A new cluster (no cluster.json yet): one init token for its masters.
    let token =
        (!ClusterFile::path(&opts.dir).exists()).then(balsa_raft_store::identity::new_init_token);
    let mut members = plan(opts).map_err(no_cluster)?;
    let mut children = Vec::new();
    for i in 0..members.len() {
        let child = spawn(opts, &members[i], &members, token.as_deref()).map_err(no_cluster)?;
        members[i].pid = child.id().unwrap_or(0);
        children.push(child);
    }
    let mut cluster = Cluster {
        file: ClusterFile::new(members),
        children,
    };
    let ready = async {
        cluster.file.write(&opts.dir)?;
        write_kubeconfig(&opts.dir, &cluster.file)?;
        cluster.wait_ready(Duration::from_secs(30)).await
    };
    match ready.await {
        Ok(()) => Ok(cluster),
        Err(e) => Err((e, Some(cluster))),
    }
}

impl Cluster {
    /// Waits until some master accepts and commits a write and every master
    /// answers (a quorum commits without the last one: one that could not
    /// start must not pass unnoticed).
    async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let mut last_error = String::from("no master answered");
        let mut committed = false;
        while Instant::now() < deadline {
            for (i, child) in self.children.iter_mut().enumerate() {
                if let Some(status) = child.try_wait()? {
                    let m = &self.file.members[i];
                    let log = std::fs::read_to_string(&m.log).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(5).collect();
                    let tail: Vec<&str> = tail.into_iter().rev().collect();
                    bail!(
                        "master {} exited ({status}) while starting; the end of {}:\n{}",
                        m.id,
                        m.log.display(),
                        tail.join("\n")
                    );
                }
            }
            for addr in self.file.api_addrs() {
                if committed {
                    break;
                }
                match commit_marker(&addr).await {
                    Ok(()) => committed = true,
                    Err(e) => last_error = format!("{addr}: {e}"),
                }
            }
            if committed {
                match self.every_master_answers().await {
                    Ok(()) => return Ok(()),
                    Err(e) => last_error = e,
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        bail!("the cluster was not ready within {within:?}: {last_error}")
    }

    async fn every_master_answers(&self) -> Result<(), String> {
        for addr in self.file.api_addrs() {
            let client = Client::connect(&addr)
                .await
                .map_err(|e| format!("{addr}: {e}"))?;
            client
                .cluster_status()
                .await
                .map_err(|e| format!("{addr}: {e}"))?;
        }
        Ok(())
    }

    /// Stops every master: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        for child in &self.children {
            if let Some(pid) = child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
        for child in &mut self.children {
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }

    /// SIGKILLs master `i` (an index into `file.members`) and reaps it.
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        self.children[i].kill().await.context("killing a master")
    }

    /// SIGTERMs master `i` and waits up to `within` for it to exit.
    pub async fn terminate(
        &mut self,
        i: usize,
        within: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let child = &mut self.children[i];
        let pid = child.id().context("the master has already exited")?;
        kill(Pid::from_raw(pid as i32), Signal::SIGTERM)?;
        tokio::time::timeout(within, child.wait())
            .await
            .with_context(|| {
                format!(
                    "master {} did not exit within {within:?} of SIGTERM",
                    self.file.members[i].id
                )
            })?
            .context("waiting for the master")
    }

    /// SIGSTOPs or SIGCONTs master `i`.
    pub fn pause(&self, i: usize, paused: bool) -> anyhow::Result<()> {
        let pid = self.children[i].id().context("the master has exited")?;
        let signal = if paused {
            Signal::SIGSTOP
        } else {
            Signal::SIGCONT
        };
        kill(Pid::from_raw(pid as i32), signal)?;
        Ok(())
    }

    /// Starts master `i` again with the same id, addresses and data (no init
    /// token: on a wiped data dir it bootstraps a cluster of its own, which
    /// the others refuse).
    pub fn respawn(&mut self, i: usize, opts: &UpOptions) -> anyhow::Result<()> {
        let child = spawn(opts, &self.file.members[i], &self.file.members, None)?;
        self.file.members[i].pid = child.id().unwrap_or(0);
        self.children[i] = child;
        self.file.write(&opts.dir)
    }

    /// The first master that has exited, with its status.
    pub fn exited(&mut self) -> Option<(u64, std::process::ExitStatus)> {
        for (i, child) in self.children.iter_mut().enumerate() {
            if let Ok(Some(status)) = child.try_wait() {
                return Some((self.file.members[i].id, status));
            }
        }
        None
    }
}

/// Writes (creates or updates) the `balsa-up` ConfigMap in `kube-system`.
async fn commit_marker(addr: &str) -> Result<(), StoreError> {
    let client = Client::connect(addr).await?;
    let key = ResourceType::of("v1", "ConfigMap").key(Some("kube-system"), "balsa-up");
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    let fresh = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "balsa-up", "namespace": "kube-system"},
        "data": {"lastStart": now},
    });
    match client.get(&key, false).await {
        Ok((bytes, _)) => {
            let mut current: serde_json::Value =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Internal(e.to_string()))?;
            current["data"] = fresh["data"].clone();
            client
                .update(serde_json::to_vec(&current).unwrap_or_default().into())
                .await?;
        }
        Err(StoreError::NotFound { .. }) => {
            client
                .create(serde_json::to_vec(&fresh).unwrap_or_default().into())
                .await?;
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

pub const KUBECONFIG: &str = "kubeconfig";

/// A kubeconfig for kubectl and the Kubernetes clients, pointing at the first
/// master's REST API (any master serves the whole API).
fn write_kubeconfig(dir: &Path, file: &ClusterFile) -> anyhow::Result<()> {
    let server = file
        .members
        .first()
        .map(|m| format!("http://{}", m.rest))
        .context("the cluster has no members")?;
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: balsa
  cluster:
    server: {server}
users:
- name: balsa
  user: {{}}
contexts:
- name: balsa
  context:
    cluster: balsa
    user: balsa
    namespace: default
current-context: balsa
"
    );
    let path = dir.join(KUBECONFIG);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

pub fn print_members(file: &ClusterFile, dir: &Path, elapsed: Duration) {
    println!(
        "Balsa cluster ready in {:.2}s ({} masters)",
        elapsed.as_secs_f64(),
        file.members.len()
    );
    println!(
        "{:<4} {:<8} {:<22} {:<22} {:<22} LOG",
        "ID", "PID", "KUBERNETES API", "GRPC API", "PEER"
    );
    for m in &file.members {
        println!(
            "{:<4} {:<8} {:<22} {:<22} {:<22} {}",
            m.id,
            m.pid,
            format!("http://{}", m.rest),
            m.api,
            m.peer,
            m.log.display()
        );
    }
    println!("cluster file: {}", ClusterFile::path(dir).display());
    let kubeconfig = dir.join(KUBECONFIG);
    let kubeconfig = std::fs::canonicalize(&kubeconfig).unwrap_or(kubeconfig);
    println!("kubectl:      export KUBECONFIG={}", kubeconfig.display());
    println!("try: balsa cluster status --dir {}", dir.display());
}

/// The node agents `balsa up` runs beside the masters, one process each.
pub struct Agents {
    children: Vec<(String, Child)>,
}

/// Starts `nodes` agents named `node-<i>`, each with its root directory
/// (`<dir>/node-<i>`) and log (`<dir>/node-<i>.log`), attached to the
/// masters of `<dir>/cluster.json`.
pub fn start_agents(
    opts: &UpOptions,
    nodes: usize,
    runtime: RuntimeKind,
    cri_socket: &Path,
) -> anyhow::Result<Agents> {
    let mut children = Vec::new();
    for i in 1..=nodes {
        let name = format!("node-{i}");
        let log_path = opts.dir.join(format!("{name}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let mut cmd = Command::new(&opts.binary);
        cmd.args(["node", "--name", &name, "--runtime", runtime.as_str()])
            .arg("--cluster")
            .arg(ClusterFile::path(&opts.dir))
            .arg("--root")
            .arg(opts.dir.join(&name))
            .args(["--shutdown-grace", "5", "--exit-with-parent"])
            .arg("--cri-socket")
            .arg(cri_socket)
            .args(&opts.node_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting node agent {name}"))?;
        children.push((name, child));
    }
    Ok(Agents { children })
}

impl Agents {
    /// SIGTERM (the agents stop their pods), then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        for (_, child) in &self.children {
            if let Some(pid) = child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
        for (_, child) in &mut self.children {
            if tokio::time::timeout(grace, child.wait()).await.is_err() {
                let _ = child.kill().await;
            }
        }
    }

    /// The first agent that has exited, with its status.
    pub fn exited(&mut self) -> Option<(String, std::process::ExitStatus)> {
        for (name, child) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                return Some((name.clone(), status));
            }
        }
        None
    }
}

/// The runtime `balsa up` gives its agents: the one asked for, else `cri`
/// when something answers on the CRI socket (containerd), else `process`;
/// with the reason, for the user.
pub fn choose_runtime(asked: Option<RuntimeKind>, cri_socket: &Path) -> (RuntimeKind, String) {
    match asked {
        Some(kind) => (kind, "as asked".into()),
        None if balsa_node::runtime::cri::socket_answers(cri_socket) => (
            RuntimeKind::Cri,
            format!("containerd answers on {}", cri_socket.display()),
        ),
        None => (
            RuntimeKind::Process,
            format!(
                "no containerd socket at {}; --runtime cri --cri-socket PATH to use one",
                cri_socket.display()
            ),
        ),
    }
}

/// Runs `balsa up` until Ctrl-C / SIGTERM, with `nodes` node agents.
pub async fn run(
    opts: UpOptions,
    nodes: usize,
    runtime: Option<RuntimeKind>,
    cri_socket: PathBuf,
) -> anyhow::Result<()> {
    let (runtime, why) = choose_runtime(runtime, &cri_socket);
    let started = Instant::now();
    let mut cluster = start(&opts).await?;
    print_members(&cluster.file, &opts.dir, started.elapsed());
    let mut agents = start_agents(&opts, nodes, runtime, &cri_socket)?;
    if nodes > 0 {
        println!(
            "node agents:  {nodes} (node-1..node-{nodes}) on the {} runtime ({why}); logs in {}/node-<i>.log",
            runtime.as_str(),
            opts.dir.display()
        );
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut reported = std::collections::HashSet::new();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tick.tick() => {
                if let Some((id, status)) = cluster.exited() {
                    if reported.insert(id.to_string()) {
                        eprintln!("master {id} exited ({status}); the others keep serving");
                    }
                }
                if let Some((name, status)) = agents.exited() {
                    if reported.insert(name.clone()) {
                        eprintln!("node agent {name} exited ({status}); see its log");
                    }
                }
            }
        }
    }
    println!("stopping the cluster");
    // Agents first, while the masters can still take their last writes.
    agents.stop(Duration::from_secs(10)).await;
    cluster.stop(Duration::from_secs(10)).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_picks_cri_only_when_a_socket_answers() {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("containerd.sock");
        let (kind, why) = choose_runtime(None, &socket);
        assert_eq!(kind, RuntimeKind::Process);
        assert!(why.contains("no containerd socket"), "{why}");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        assert_eq!(choose_runtime(None, &socket).0, RuntimeKind::Cri);
        assert_eq!(
            choose_runtime(Some(RuntimeKind::Process), &socket).0,
            RuntimeKind::Process
        );
    }

    #[test]
    fn free_ports_are_distinct() {
        // Ports released one by one may be handed out again; held ones not.
        let ports = free_ports(200).expect("ports");
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
    }
}
