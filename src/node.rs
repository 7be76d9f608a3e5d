//! `balsa node`: a node agent (Balsa's kubelet), or with `--count N` on the
//! sim runtime, N hollow nodes in one process for scale tests. Runs until
//! SIGTERM/SIGINT, then stops its pods.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use balsa_node::agent::{Agent, AgentConfig};
use balsa_node::eviction::{HardThresholds, MachineSignals, Shared, SignalSource};
use balsa_node::{CriRuntime, ProcessRuntime, Runtime, SimRuntime};

use crate::listeners;

/// How long one reading of the eviction signals serves sim nodes sharing a
/// process (kubelet reads them every 10 s).
const SHARED_SIGNALS_AGE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeKind {
    /// Each container's command as a supervised local process.
    Process,
    /// Hollow containers: nothing runs, pods become Running after a delay.
    Sim,
    /// containerd (any CRI runtime) over its CRI socket (`--cri-socket`).
    Cri,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Process => "process",
            RuntimeKind::Sim => "sim",
            RuntimeKind::Cri => "cri",
        }
    }
}

#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub name: String,
    /// The masters' gRPC API addresses.
    pub masters: Vec<String>,
    pub root: PathBuf,
    pub runtime: RuntimeKind,
    /// Sim only: this many nodes, named `<name>-<i>` (1-based).
    pub count: usize,
    /// Sim only: how long a hollow container takes to start.
    pub sim_delay: Duration,
    pub host_ip: String,
    /// The log endpoint's port on `host_ip` (0: any free one).
    pub log_port: u16,
    /// Cri only: the CRI runtime's socket.
    pub cri_socket: PathBuf,
    /// Stop pods with this grace on shutdown (each pod's own when `None`).
    pub grace: Option<Duration>,
    /// On SIGTERM/SIGINT leave the pods running (a later agent on the same
    /// root adopts them) instead of stopping them.
    pub leave_pods: bool,
    /// Exit when the process that started this one is gone (`balsa up`).
    pub exit_with_parent: bool,
    /// Hard eviction thresholds (`--eviction-hard`).
    pub eviction_hard: HardThresholds,
    /// `--eviction-pressure-transition-period`.
    pub eviction_transition: Duration,
    /// How often the eviction signals are read.
    pub eviction_period: Duration,
}

fn runtime(opts: &NodeOptions, root: &std::path::Path) -> anyhow::Result<Arc<dyn Runtime>> {
    Ok(match opts.runtime {
        RuntimeKind::Process => Arc::new(ProcessRuntime::new(root, opts.host_ip.clone())),
        RuntimeKind::Sim => Arc::new(SimRuntime::new(root, opts.sim_delay)),
        RuntimeKind::Cri => {
            let socket = &opts.cri_socket;
            if !balsa_node::runtime::cri::socket_answers(socket) {
                bail!(
                    "the cri runtime: nothing answers on {} (is containerd running? --cri-socket names another socket)",
                    socket.display()
                );
            }
            Arc::new(CriRuntime::new(socket, root, opts.host_ip.clone())?)
        }
    })
}

/// The agents' configurations: one, or `count` sim nodes.
pub fn configs(opts: &NodeOptions) -> anyhow::Result<Vec<AgentConfig>> {
    if opts.masters.is_empty() {
        bail!("no masters: pass --masters host:port,... or --cluster PATH");
    }
    if opts.count == 0 {
        bail!("--count must be at least 1");
    }
    if opts.count > 1 && opts.runtime != RuntimeKind::Sim {
        bail!("--count is for the sim runtime: real runtimes run one node per process");
    }
    if opts.count > 1 && opts.log_port != 0 {
        bail!("--log-port with --count: the nodes cannot share one port; leave it 0");
    }
    let names: Vec<String> = if opts.count == 1 {
        vec![opts.name.clone()]
    } else {
        (1..=opts.count)
            .map(|i| format!("{}-{i}", opts.name))
            .collect()
    };
    // Sim nodes share one machine and (under `--root`) one filesystem: one
    // reading of the eviction signals a second serves them all, instead of
    // each of a thousand nodes reading /proc and statvfs every period.
    let signals: Option<Arc<dyn SignalSource>> = (opts.count > 1).then(|| {
        let machine = MachineSignals::new(opts.root.clone());
        Arc::new(Shared::new(machine, SHARED_SIGNALS_AGE)) as Arc<dyn SignalSource>
    });
    names
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            let root = if opts.count == 1 {
                opts.root.clone()
            } else {
                opts.root.join(&name)
            };
            let rt = runtime(opts, &root)?;
            let mut c = AgentConfig::new(name, spread(&opts.masters, i), root, rt);
            c.host_ip = opts.host_ip.clone();
            c.thresholds.hard = opts.eviction_hard.clone();
            c.eviction.transition = opts.eviction_transition;
            c.eviction.period = opts.eviction_period;
            c.eviction.source = signals.clone();
            // Hollow pods use nothing: evicting them frees nothing.
            c.eviction.evict = opts.runtime != RuntimeKind::Sim;
            Ok(c)
        })
        .collect()
}

/// The masters in the order node `i` tries them: starting at master
/// `i mod n`, so many nodes in one process spread their streams and API
/// calls over the masters, as kubelets behind a load balancer do, instead
/// of all landing on the first (which would serve every stream and forward
/// every status write). Each node still fails over to all of them.
fn spread(masters: &[String], i: usize) -> Vec<String> {
    let mut order = masters.to_vec();
    if !order.is_empty() {
        order.rotate_left(i % masters.len());
    }
    order
}

pub async fn run(opts: NodeOptions) -> anyhow::Result<()> {
    let parent = std::os::unix::process::parent_id();
    let mut agents = Vec::new();
    let ip: std::net::IpAddr = opts
        .host_ip
        .parse()
        .with_context(|| format!("--host-ip {:?} is not an IP address", opts.host_ip))?;
    for config in configs(&opts)? {
        let name = config.node_name.clone();
        let logs = listeners::bind_node_logs((ip, opts.log_port).into()).await?;
        agents.push(
            Agent::start_with_logs(config, Some(logs))
                .await
                .with_context(|| format!("starting node {name}"))?,
        );
    }
    tracing::info!(
        nodes = agents.len(),
        runtime = opts.runtime.as_str(),
        masters = ?opts.masters,
        "node agents running"
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                if opts.exit_with_parent && std::os::unix::process::parent_id() != parent {
                    tracing::warn!("parent process is gone; shutting down");
                    break;
                }
            }
        }
    }
    if opts.leave_pods {
        tracing::info!("stopping node agents, leaving their pods running");
        futures::future::join_all(agents.into_iter().map(|a| a.leave())).await;
    } else {
        tracing::info!("stopping node agents and their pods");
        futures::future::join_all(agents.into_iter().map(|a| a.stop(opts.grace))).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(count: usize) -> NodeOptions {
        NodeOptions {
            name: "sim".into(),
            masters: vec!["127.0.0.1:1".into()],
            root: std::env::temp_dir().join("balsa-node-configs-test"),
            runtime: RuntimeKind::Sim,
            count,
            sim_delay: Duration::ZERO,
            host_ip: "127.0.0.1".into(),
            log_port: 0,
            cri_socket: PathBuf::new(),
            grace: None,
            leave_pods: false,
            exit_with_parent: false,
            eviction_hard: HardThresholds::default(),
            eviction_transition: Duration::from_secs(300),
            eviction_period: Duration::from_secs(10),
        }
    }

    #[test]
    fn sim_nodes_in_one_process_share_one_reading_of_the_machine() {
        let many = configs(&sim(3)).unwrap();
        let first = many[0].eviction.source.clone().expect("a shared source");
        for c in &many {
            let source = c.eviction.source.as_ref().expect("a shared source");
            assert!(Arc::ptr_eq(source, &first));
        }
        let one = configs(&sim(1)).unwrap();
        assert!(
            one[0].eviction.source.is_none(),
            "a single node reads its own"
        );
    }

    #[test]
    fn nodes_start_at_successive_masters_and_keep_every_master() {
        let masters: Vec<String> = ["a:1", "b:2", "c:3"].map(String::from).to_vec();
        let firsts: Vec<String> = (0..5).map(|i| spread(&masters, i)[0].clone()).collect();
        assert_eq!(firsts, ["a:1", "b:2", "c:3", "a:1", "b:2"]);
        assert_eq!(spread(&masters, 1), ["b:2", "c:3", "a:1"]);
        assert_eq!(spread(&masters[..1], 7), ["a:1"]);
    }
}
