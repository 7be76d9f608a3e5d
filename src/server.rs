//! `balsa server`: one master replica. Binds its listeners, opens the store,
//! serves the peer and client gRPC services, bootstraps (`--init`) or joins
//! (`--join`), and on SIGTERM/SIGINT shuts everything down in order.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use balsa_api::client::Leadership;
use balsa_api::grpc::client::Client;
use balsa_api::registry::Registry;
use balsa_api::{Store, StoreError};
use balsa_raft_store::{Faults, Member, Replica, ReplicaConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::Routes;

use crate::bootstrap;
use crate::control;
use crate::fault_file;
use crate::listeners::{incoming, rest_incoming, Listeners};
use crate::raft_runtime::RaftRuntime;

#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub peer_listen: SocketAddr,
    pub api_listen: SocketAddr,
    /// The Kubernetes REST API.
    pub rest_listen: SocketAddr,
    /// Bootstrap a new cluster with these members (empty: just this one).
    pub init: Option<BTreeMap<u64, Member>>,
    /// With `init`: the nonce every initial member is given, from which they
    /// all derive the same cluster id (see `balsa_raft_store::identity`).
    /// Give it only to members started for the first time: without it, a
    /// member gets a cluster id of its own.
    pub init_token: Option<String>,
    /// API address of a running member to join through.
    pub join: Option<String>,
    /// Id, data dir, Raft timings, snapshots, watch window, request timeout.
    pub replica: ReplicaConfig,
    /// The controller manager's flags (node monitor grace period, ...).
    pub controllers: balsa_controllers::manager::Options,
}

impl ServerOptions {
    pub fn new(id: u64, data_dir: PathBuf) -> Self {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            peer_listen: loopback,
            api_listen: loopback,
            rest_listen: loopback,
            init: None,
            init_token: None,
            join: None,
            replica: ReplicaConfig::new(id, data_dir),
            controllers: Default::default(),
        }
    }
}

/// A started master. Dropping it does not stop it: call `stop`.
pub struct RunningServer {
    pub replica: Arc<Replica>,
    pub peer_addr: SocketAddr,
    pub api_addr: SocketAddr,
    pub rest_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    /// The scheduler and the controller manager (`control::spawn`), acting
    /// only while this master leads; stopped first on stop.
    control: control::Control,
    /// Consensus's own thread (`raft_runtime`); dropped last.
    raft_runtime: RaftRuntime,
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

pub async fn start(opts: ServerOptions, faults: Faults) -> anyhow::Result<RunningServer> {
    let listeners = Listeners::bind(opts.peer_listen, opts.api_listen, opts.rest_listen).await?;
    let (peer_addr, api_addr, rest_addr) = listeners.addrs()?;
    let me = Member {
        peer_addr: peer_addr.to_string(),
        api_addr: api_addr.to_string(),
    };
    let (id, data_dir) = (opts.replica.id, opts.replica.data_dir.clone());
    let controllers = opts.controllers.clone();
    let raft_runtime = RaftRuntime::new(id).context("starting the raft thread")?;
    raft_runtime.watch_stalls(opts.replica.heartbeat);
    let replica = raft_runtime
        .run(Replica::open(opts.replica, me.clone(), faults))
        .await?
        .with_context(|| format!("opening replica {id} in {}", data_dir.display()))?;

    let (stop, stop_rx) = watch::channel(false);
    // The peer server answers heartbeats: it runs beside the Raft core, its
    // listener registered with the raft thread's reactor.
    let peer_listener = listeners.peer.into_std()?;
    let peer_service = balsa_raft_store::peer_service::server(replica.clone());
    let peer_stop = stopped(stop_rx.clone());
    let peer = raft_runtime.handle().spawn(async move {
        let listener = tokio::net::TcpListener::from_std(peer_listener)?;
        tonic::transport::Server::builder()
            .add_service(peer_service)
            .serve_with_incoming_shutdown(incoming(listener), peer_stop)
            .await?;
        anyhow::Ok(())
    });
    let store: Arc<dyn Store> = replica.clone();
    let registry = Registry::new(store);
    // The services this master's own control loops call, in process; the
    // listener serves the same ones and the node streams.
    let own_api = Routes::new(balsa_api::grpc::server::server(registry.clone()))
        .add_service(balsa_raft_store::cluster_service::server(replica.clone()));
    let api = tonic::transport::Server::builder()
        .add_routes(own_api.clone())
        .add_service(balsa_api::grpc::node_stream::server(
            registry.clone(),
            stop_rx.clone(),
        ))
        .serve_with_incoming_shutdown(incoming(listeners.api), stopped(stop_rx.clone()));
    let rest = axum::serve(
        rest_incoming(listeners.rest),
        balsa_api::rest::router(registry.clone()),
    )
    .with_graceful_shutdown(stopped(stop_rx.clone()));
    let tasks = vec![
        tokio::spawn(async move { peer.await? }),
        tokio::spawn(async move { Ok(api.await?) }),
        tokio::spawn(async move { Ok(rest.await?) }),
        tokio::spawn(bootstrap::namespaces(registry, stopped(stop_rx))),
    ];

    if let Some(members) = opts.init {
        let members = if members.is_empty() {
            BTreeMap::from([(id, me.clone())])
        } else {
            members
        };
        if !members.contains_key(&id) {
            bail!("--init members do not include this server's id {}", id);
        }
        replica
            .initialize(members, opts.init_token.as_deref())
            .await?;
    }
    if let Some(via) = &opts.join {
        join(&replica, &me, via).await?;
    }
    let control = control::spawn(
        id,
        balsa_api::client::Client::local(own_api, api_addr.to_string()),
        Leadership::new(replica.leadership()),
        controllers,
    )
    .context("starting the scheduler's thread")?;
    tracing::info!(member.id = id, %peer_addr, %api_addr, %rest_addr, "master serving");
    Ok(RunningServer {
        replica,
        raft_runtime,
        peer_addr,
        api_addr,
        rest_addr,
        stop,
        tasks,
        control,
    })
}

/// Asks the cluster (through `via`, following redirects to the leader) to add
/// this replica as a voter. Already a member: nothing to do. The member adding
/// it tells it the cluster id first (`Adopt`), before any Raft message, so
/// it refuses Raft traffic until then.
async fn join(replica: &Replica, me: &Member, via: &str) -> anyhow::Result<()> {
    if replica.raft().is_initialized().await? {
        return Ok(());
    }
    let mut target = via.to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async {
            let client = Client::connect(&target).await?;
            client
                .add_member(replica.id(), &me.peer_addr, &me.api_addr, true)
                .await
        };
        match attempt.await {
            Ok(_) => return Ok(()),
            Err(StoreError::NotLeader {
                leader: Some(leader),
            }) => target = leader,
            Err(e) if tokio::time::Instant::now() > deadline => {
                bail!("joining the cluster through {via}: {e}")
            }
            Err(e) => {
                tracing::info!(error = %e, "join not accepted yet; retrying");
                target = via.to_string();
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

impl RunningServer {
    /// Stops serving and shuts the Raft node down. Open streams (watches) get
    /// `GRACE` to finish before they are cut.
    pub async fn stop(mut self) {
        const GRACE: Duration = Duration::from_secs(2);
        self.control.stop();
        let _ = self.stop.send(true);
        self.replica.shutdown().await;
        for mut t in self.tasks {
            if tokio::time::timeout(GRACE, &mut t).await.is_err() {
                t.abort();
            }
        }
        // Last: what is left on the raft thread (replication streams of a
        // node that is shutting down) is cancelled, not waited for; the
        // thread itself is, until it has let go of the store.
        self.raft_runtime.shutdown(GRACE).await;
    }

    /// Why this master can no longer serve, if it cannot: a serving task
    /// ended on its own, or the Raft node stopped on a storage error (a
    /// replica whose log cannot be written must not stay up answering local
    /// reads from a state that no longer advances).
    pub fn failed(&self) -> Option<String> {
        // The bootstrap task (last) ends once its work is done.
        let serving = &self.tasks[..self.tasks.len() - 1];
        if serving.iter().any(|t| t.is_finished()) {
            return Some("a server task stopped unexpectedly".into());
        }
        self.replica
            .fatal_error()
            .map(|e| format!("the store stopped: {e}"))
    }
}

/// Runs a master until SIGTERM/SIGINT (or, with `exit_with_parent`, until the
/// process that started it is gone).
pub async fn run(
    opts: ServerOptions,
    exit_with_parent: bool,
    fault_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let parent = std::os::unix::process::parent_id();
    let faults = Faults::default();
    let fault_task = fault_file.map(|path| {
        tracing::warn!(path = %path.display(), "faults are injected from a file (testing only)");
        tokio::spawn(fault_file::follow(path, faults.clone()))
    });
    let server = start(opts, faults).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => {
                if exit_with_parent && std::os::unix::process::parent_id() != parent {
                    tracing::warn!("parent process is gone; shutting down");
                    break;
                }
                if let Some(why) = server.failed() {
                    tracing::error!(reason = %why, "exiting");
                    bail!("{why}");
                }
            }
        }
    }
    tracing::info!("shutting down");
    if let Some(t) = fault_task {
        t.abort();
    }
    server.stop().await;
    Ok(())
}
