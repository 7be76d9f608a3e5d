use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use balsa::cli::{self, Output};
use balsa::node::{self, NodeOptions, RuntimeKind};
use balsa::server::{self, ServerOptions};
use balsa::up::{self, UpOptions};
use balsa_api::store::window::WindowConfig;
use balsa_raft_store::Member;
use clap::{Args, Parser, Subcommand};

/// mimalloc instead of glibc's malloc: a master allocates and frees a few
/// kilobytes per request on many threads. In a profile of a Deployment's
/// create, glibc's malloc and free took ~16% of the machine's CPU, mimalloc's
/// ~10%, and the create ran 35 s -> 28 s.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Balsa: a Kubernetes-compatible control plane whose masters replicate the
/// object store themselves (Raft over RocksDB, no etcd).
#[derive(Parser)]
#[command(name = "balsa", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Clone)]
struct Target {
    /// A master's API address (host:port); default: the cluster file's masters.
    #[arg(long, global = true)]
    server: Option<String>,
    /// Directory of the cluster file written by `balsa up`.
    #[arg(long, global = true, default_value = ".balsa")]
    dir: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run one master replica.
    Server(ServerArgs),
    /// Start a local HA cluster (three masters and a node agent) and keep it
    /// running until Ctrl-C.
    Up {
        #[arg(long, default_value = ".balsa")]
        dir: PathBuf,
        #[arg(long, default_value_t = 3)]
        masters: usize,
        /// Node agents to run (node-1..node-N), each its own process.
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// The agents' container runtime (default: cri when containerd
        /// answers on --cri-socket, else process).
        #[arg(long, value_enum)]
        runtime: Option<RuntimeKind>,
        /// containerd's CRI socket, for the cri runtime.
        #[arg(long, default_value = balsa_node::runtime::cri::DEFAULT_SOCKET)]
        cri_socket: PathBuf,
        /// An extra flag for every node agent (repeatable), e.g.
        /// `--node-arg=--eviction-hard=memory.available<100Mi` on a disk
        /// that is nearly full.
        #[arg(long = "node-arg", allow_hyphen_values = true)]
        node_args: Vec<String>,
    },
    /// Run a node agent (Balsa's kubelet): the pods bound to the node, from any master.
    Node(NodeArgs),
    /// Create or update objects from YAML or JSON (multi-document; `-` for stdin).
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: String,
        #[command(flatten)]
        target: Target,
    },
    /// Show objects.
    Get {
        resource: String,
        name: Option<String>,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short, long, value_enum)]
        output: Option<Output>,
        #[command(flatten)]
        target: Target,
    },
    /// Delete objects by name.
    Delete {
        resource: String,
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(short, long)]
        namespace: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Follow changes to objects.
    Watch {
        resource: String,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Only changes after this revision (default: current objects, then changes).
        #[arg(long)]
        after: Option<u64>,
        #[arg(short, long, value_enum)]
        output: Option<Output>,
        #[command(flatten)]
        target: Target,
    },
    /// Cluster membership and health.
    Cluster {
        #[command(subcommand)]
        command: ClusterCmd,
    },
}

#[derive(Args)]
struct NodeArgs {
    /// The node's name (with --count: the prefix of `<name>-<i>`).
    #[arg(long)]
    name: String,
    /// The masters' gRPC API addresses.
    #[arg(long, value_delimiter = ',', conflicts_with = "cluster")]
    masters: Vec<String>,
    /// A cluster.json written by `balsa up` (the masters are read from it);
    /// default `.balsa/cluster.json` when --masters is not given.
    #[arg(long)]
    cluster: Option<PathBuf>,
    /// The node's directory: pods, their volumes and logs.
    #[arg(long)]
    root: PathBuf,
    #[arg(long, value_enum, default_value = "process")]
    runtime: RuntimeKind,
    /// Sim runtime only: run this many nodes in this process.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Sim runtime only: milliseconds a hollow container takes to start.
    #[arg(long, default_value_t = 0)]
    sim_delay_ms: u64,
    /// The node's InternalIP (and the pods' IP on the process runtime).
    #[arg(long, default_value = "127.0.0.1")]
    host_ip: String,
    /// The port of the node's log endpoint (kubelet's --port), on the
    /// --host-ip; 0 picks a free one. The Node publishes it, so every master
    /// serves `kubectl logs` for this node's pods.
    #[arg(long, default_value_t = 0)]
    log_port: u16,
    /// Cri runtime only: containerd's (any CRI runtime's) socket.
    #[arg(long, default_value = balsa_node::runtime::cri::DEFAULT_SOCKET)]
    cri_socket: PathBuf,
    /// Seconds pods get to stop when the agent shuts down (default: each
    /// pod's terminationGracePeriodSeconds).
    #[arg(long)]
    shutdown_grace: Option<u64>,
    /// On SIGTERM/SIGINT leave the pods running (kubelet's way); an agent
    /// started again on the same --root adopts them.
    #[arg(long)]
    leave_pods_running: bool,
    /// Hard eviction thresholds, kubelet's syntax: `SIGNAL<QUANTITY` or
    /// `SIGNAL<PERCENT%`, comma-separated, for memory.available and
    /// nodefs.available; `0` switches a signal off. Under one, the node
    /// reports MemoryPressure / DiskPressure and evicts a pod per pass.
    #[arg(long, default_value = balsa_node::eviction::threshold::DEFAULT_HARD)]
    eviction_hard: balsa_node::eviction::HardThresholds,
    /// How long a pressure condition stays True after the node was last
    /// under its threshold (kubelet's default 5m).
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    eviction_pressure_transition_period: Duration,
    /// How often the eviction signals are read (kubelet: 10s).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    eviction_monitoring_period: Duration,
    /// Exit when the parent process is gone (used by `balsa up`).
    #[arg(long, hide = true)]
    exit_with_parent: bool,
}

fn node_options(args: NodeArgs) -> anyhow::Result<NodeOptions> {
    let masters = if !args.masters.is_empty() {
        args.masters
    } else {
        let path = args
            .cluster
            .unwrap_or_else(|| PathBuf::from(".balsa/cluster.json"));
        // A cluster.json, or the directory holding one.
        let file = if path.is_dir() {
            balsa::cluster_file::ClusterFile::read(&path)?
        } else {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        };
        file.api_addrs()
    };
    Ok(NodeOptions {
        name: args.name,
        masters,
        root: args.root,
        runtime: args.runtime,
        count: args.count,
        sim_delay: Duration::from_millis(args.sim_delay_ms),
        host_ip: args.host_ip,
        log_port: args.log_port,
        cri_socket: args.cri_socket,
        grace: args.shutdown_grace.map(Duration::from_secs),
        leave_pods: args.leave_pods_running,
        exit_with_parent: args.exit_with_parent,
        eviction_hard: args.eviction_hard,
        eviction_transition: args.eviction_pressure_transition_period,
        eviction_period: args.eviction_monitoring_period,
    })
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Members, roles, term, leader, commit and applied index per member.
    Status {
        #[arg(short, long, value_enum)]
        output: Option<Output>,
        #[command(flatten)]
        target: Target,
    },
    /// Add a running, empty master as a voter (or a learner with --learner).
    Add {
        id: u64,
        peer: String,
        api: String,
        #[arg(long)]
        learner: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a member.
    Remove {
        id: u64,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Args)]
struct ServerArgs {
    #[arg(long)]
    id: u64,
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:7400")]
    peer_listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:7500")]
    api_listen: SocketAddr,
    /// The Kubernetes REST API (kubectl's server).
    #[arg(long, default_value = "127.0.0.1:6443")]
    rest_listen: SocketAddr,
    /// Bootstrap a new cluster of the --member list (or of this server alone).
    #[arg(long, conflicts_with = "join")]
    init: bool,
    /// An initial member: ID=PEER_ADDR,API_ADDR (repeat for each).
    #[arg(long = "member")]
    members: Vec<String>,
    /// With --init: a random nonce given to every initial member of a new
    /// cluster, and only on their first start. They all derive the same cluster
    /// id from it and the --member list; a member started with --init without
    /// it gets a cluster id of its own, which no other member accepts (what a
    /// wiped member restarted with --init must get).
    #[arg(long, requires = "init")]
    init_token: Option<String>,
    /// Join a running cluster through this member's API address.
    #[arg(long)]
    join: Option<String>,
    #[arg(long, default_value_t = 40)]
    heartbeat_ms: u64,
    #[arg(long, default_value_t = 80)]
    election_min_ms: u64,
    #[arg(long, default_value_t = 120)]
    election_max_ms: u64,
    #[arg(long, default_value_t = 10_000)]
    snapshot_every: u64,
    /// Raft entries the leader keeps proposed and not yet applied; writes
    /// that arrive meanwhile wait and share the next entry.
    #[arg(long, default_value_t = balsa_raft_store::proposer::Limits::default().in_flight)]
    proposals_in_flight: usize,
    /// Events kept in the watch window (at least; plus 5 minutes' worth).
    #[arg(long, default_value_t = 100_000)]
    watch_window: usize,
    /// Terminated pods (Succeeded or Failed) kept before the pod garbage
    /// collector deletes the oldest; 0 keeps them all (kube-controller-
    /// manager's flag of the same name).
    #[arg(long, default_value_t = 12_500)]
    terminated_pod_gc_threshold: usize,
    /// A node whose agent renews neither its Lease nor its status for this
    /// long is marked Unknown and tainted unreachable (kube-controller-manager's
    /// --node-monitor-grace-period).
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period_secs: u64,
    /// Nodes per second tainted NoExecute (evicting their pods) in a healthy zone.
    #[arg(long, default_value_t = 0.1)]
    node_eviction_rate: f64,
    /// Shut down when the parent process exits (used by `balsa up`).
    #[arg(long, hide = true)]
    exit_with_parent: bool,
    /// Testing only: re-read this file for faults to inject (see
    /// `balsa::fault_file`; used by the chaos harness).
    #[arg(long, hide = true)]
    fault_file: Option<PathBuf>,
}

fn parse_member(s: &str) -> anyhow::Result<(u64, Member)> {
    let (id, addrs) = s
        .split_once('=')
        .context("expected ID=PEER_ADDR,API_ADDR")?;
    let (peer, api) = addrs
        .split_once(',')
        .context("expected ID=PEER_ADDR,API_ADDR")?;
    let id = id
        .parse()
        .with_context(|| format!("member id {id:?} is not a number"))?;
    Ok((
        id,
        Member {
            peer_addr: peer.into(),
            api_addr: api.into(),
        },
    ))
}

fn server_options(a: ServerArgs) -> anyhow::Result<(ServerOptions, bool, Option<PathBuf>)> {
    let mut opts = ServerOptions::new(a.id, a.data_dir);
    opts.peer_listen = a.peer_listen;
    opts.api_listen = a.api_listen;
    opts.rest_listen = a.rest_listen;
    if a.init {
        opts.init = Some(
            a.members
                .iter()
                .map(|m| parse_member(m))
                .collect::<anyhow::Result<BTreeMap<_, _>>>()?,
        );
    } else if !a.members.is_empty() {
        bail!("--member is only meaningful with --init");
    }
    opts.init_token = a.init_token;
    opts.join = a.join;
    opts.replica.heartbeat = Duration::from_millis(a.heartbeat_ms);
    opts.replica.election_timeout = (
        Duration::from_millis(a.election_min_ms),
        Duration::from_millis(a.election_max_ms),
    );
    opts.replica.snapshot_every = a.snapshot_every;
    if a.proposals_in_flight == 0 {
        bail!("--proposals-in-flight must be at least 1");
    }
    opts.replica.proposals.in_flight = a.proposals_in_flight;
    opts.controllers.pod_gc.terminated_threshold = a.terminated_pod_gc_threshold;
    opts.replica.window = WindowConfig {
        min_events: a.watch_window,
        ..WindowConfig::default()
    };
    opts.controllers.node_lifecycle.grace_period =
        Duration::from_secs(a.node_monitor_grace_period_secs);
    opts.controllers.node_lifecycle.eviction_rate = a.node_eviction_rate;
    Ok((opts, a.exit_with_parent, a.fault_file))
}

/// A panic in any task ends the process: a half-alive replica is worse than a
/// dead one.
fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        std::process::abort();
    }));
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BALSA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Server(args) => {
            abort_on_panic();
            init_tracing();
            let (opts, exit_with_parent, fault_file) = server_options(args)?;
            server::run(opts, exit_with_parent, fault_file).await
        }
        Cmd::Up {
            dir,
            masters,
            nodes,
            runtime,
            cri_socket,
            node_args,
        } => {
            abort_on_panic();
            let binary = std::env::current_exe().context("locating the balsa binary")?;
            let opts = UpOptions {
                dir,
                masters,
                binary,
                server_args: Vec::new(),
                node_args,
            };
            up::run(opts, nodes, runtime, cri_socket).await
        }
        Cmd::Node(args) => {
            abort_on_panic();
            init_tracing();
            node::run(node_options(args)?).await
        }
        Cmd::Apply { file, target } => {
            let docs = cli::read_documents(&file)?;
            let client = cli::connect(target.server.as_deref(), &target.dir).await?;
            cli::apply(&client, docs).await
        }
        Cmd::Get {
            resource,
            name,
            namespace,
            all_namespaces,
            output,
            target,
        } => {
            let client = cli::connect(target.server.as_deref(), &target.dir).await?;
            cli::get(
                &client,
                &resource,
                name.as_deref(),
                namespace.as_deref(),
                all_namespaces,
                output,
            )
            .await
        }
        Cmd::Delete {
            resource,
            names,
            namespace,
            target,
        } => {
            let client = cli::connect(target.server.as_deref(), &target.dir).await?;
            cli::delete(&client, &resource, &names, namespace.as_deref()).await
        }
        Cmd::Watch {
            resource,
            namespace,
            all_namespaces,
            after,
            output,
            target,
        } => {
            let client = cli::connect(target.server.as_deref(), &target.dir).await?;
            cli::watch(
                &client,
                &resource,
                namespace.as_deref(),
                all_namespaces,
                after,
                output,
            )
            .await
        }
        Cmd::Cluster { command } => match command {
            ClusterCmd::Status { output, target } => {
                let client = cli::connect(target.server.as_deref(), &target.dir).await?;
                cli::cluster_status(&client, output).await
            }
            ClusterCmd::Add {
                id,
                peer,
                api,
                learner,
                target,
            } => {
                let client = cli::connect(target.server.as_deref(), &target.dir).await?;
                client.add_member(id, &peer, &api, !learner).await?;
                cli::cluster_status(&client, None).await
            }
            ClusterCmd::Remove { id, target } => {
                let client = cli::connect(target.server.as_deref(), &target.dir).await?;
                client.remove_member(id).await?;
                cli::cluster_status(&client, None).await
            }
        },
    }
}
