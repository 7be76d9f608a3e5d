//! One master replica: the Raft node, its state machine, and the `Store` port
//! on top. Writes go to the leader (forwarded over the peer channel from a
//! follower); linearizable reads take a read-index from the leader (shared by
//! concurrent reads: see `read_index`), wait until this replica has applied
//! that far, and then read locally. Every wait is bounded by `request_timeout`,
//! so a replica without quorum answers Unavailable instead of hanging.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use balsa_api::store::apply;
use balsa_api::{
    Fence, KeyPrefix, Lease, ListOptions, ListResult, Object, Op, OpResult, ReadMode, ResourceKey,
    Revision, Store, StoreError, WatchOptions, WatchStream,
};
use balsa_proto::peer::MemberStatus;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{Config, ServerState, SnapshotPolicy};
use tokio::time::Instant;

use crate::config::ReplicaConfig;
use crate::faults::Faults;
use crate::identity::{ClusterId, Identity, IdentityError};
use crate::layout::{CF_RAFT, KEY_COMMITTED};
use crate::leader_probe;
use crate::lease;
use crate::log_store::{LogError, LogStore};
use crate::network::{Links, Network, PeerLink};
use crate::proposer::{self, Proposer};
use crate::read_index::ReadIndexBatch;
use crate::route::{fatal, forward_route, Route};
use crate::state_machine::{SmShared, StateMachine};
use crate::types::{Command, LogId, Member, NodeId, Raft};
use crate::{codec, db};

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Open(#[from] db::OpenError),
    #[error("the Raft log is damaged; refusing to start: {0}")]
    Log(#[from] LogError),
    #[error("opening the state machine: {0}")]
    StateMachine(#[source] crate::types::StorageError),
    #[error("raft configuration: {0}")]
    Config(#[from] openraft::ConfigError),
    #[error("starting raft: {0}")]
    Start(String),
    #[error("initializing the cluster: {0}")]
    Initialize(String),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(
        "the data dir holds Raft state but no cluster id (written by a Balsa \
         before cluster ids); start this member on an empty data dir and add it \
         back, or bootstrap a new cluster"
    )]
    NoClusterId,
}

pub struct Replica {
    id: NodeId,
    me: Member,
    raft: Raft,
    sm: Arc<SmShared>,
    db: Arc<rocksdb::DB>,
    config: ReplicaConfig,
    faults: Faults,
    identity: Identity,
    /// One peer channel per member, for forwarded writes and read-index
    /// calls (a channel per request would cost a connection per request).
    links: Links,
    /// In touch with a leader (see `fresh`): watches get bookmarks only then.
    fresh: tokio::sync::watch::Receiver<bool>,
    /// See `leadership`.
    leading: tokio::sync::watch::Receiver<Option<Lease>>,
    /// Leadership confirmations (`read_index_here`), one per batch of the
    /// reads here and the ReadIndex calls of followers (see `read_index`).
    confirms: ReadIndexBatch<Route<u64>>,
    /// Read indexes for the reads made here: one confirmation or one forwarded
    /// ReadIndex call per batch.
    read_indexes: ReadIndexBatch<Result<u64, StoreError>>,
    /// Groups the writes made at this leader into entries (see `proposer`).
    proposer: Proposer,
    /// When a leader last spoke to this member (see `leader_probe`).
    contact: Arc<leader_probe::Contact>,
}

/// Whether this replica knows a leader it is in touch with: a running leader,
/// or a follower or learner that has one. A partitioned follower campaigns
/// (a candidate knows no leader); a stopped one is shut down.
fn fresh(m: &openraft::RaftMetrics<NodeId, Member>) -> bool {
    m.running_state.is_ok()
        && m.current_leader.is_some()
        && matches!(
            m.state,
            ServerState::Leader | ServerState::Follower | ServerState::Learner
        )
}

/// Follows the Raft metrics into a flag; false for good once Raft stops.
fn follow<T: PartialEq + Send + Sync + 'static>(
    mut metrics: tokio::sync::watch::Receiver<openraft::RaftMetrics<NodeId, Member>>,
    f: impl Fn(&openraft::RaftMetrics<NodeId, Member>) -> T + Send + 'static,
    stopped: T,
) -> tokio::sync::watch::Receiver<T> {
    let (tx, rx) = tokio::sync::watch::channel(f(&metrics.borrow()));
    tokio::spawn(async move {
        while metrics.changed().await.is_ok() {
            let now = f(&metrics.borrow());
            tx.send_if_modified(|v| {
                let changed = *v != now;
                *v = now;
                changed
            });
        }
        tx.send_replace(stopped);
    });
    rx
}

fn not_committed(timeout: Duration) -> StoreError {
    StoreError::Unavailable(format!(
        "the write was not committed within {timeout:?} (no quorum?); it may still be applied"
    ))
}

/// Where a failed `client_write` leaves its writes.
fn write_failed<T>(e: RaftError<NodeId, ClientWriteError<NodeId, Member>>) -> Route<T> {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => forward_route(&f),
        RaftError::APIError(e) => Route::Done(Err(StoreError::Internal(e.to_string()))),
        RaftError::Fatal(f) => Route::Done(Err(fatal(f))),
    }
}

/// Proposes one entry of the proposer's (see `proposer`) and answers each
/// of its transactions.
async fn propose(raft: Raft, cmd: Command, timeout: Duration) -> Vec<proposer::Outcome> {
    let txns = cmd.txns.len();
    let all = |route: proposer::Outcome| vec![route; txns];
    match tokio::time::timeout(timeout, raft.client_write(cmd)).await {
        Err(_) => all(Route::Done(Err(not_committed(timeout)))),
        Ok(Ok(resp)) => resp.data.0.into_iter().map(Route::Done).collect(),
        Ok(Err(e)) => all(write_failed(e)),
    }
}

fn stopping() -> StoreError {
    StoreError::Unavailable("replica is shutting down".into())
}

const RETRY: Duration = Duration::from_millis(20);

impl Replica {
    /// Opens the data dir and starts the Raft node (not yet part of a cluster
    /// unless the data dir already was).
    pub async fn open(
        config: ReplicaConfig,
        me: Member,
        faults: Faults,
    ) -> Result<Arc<Self>, ReplicaError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            ReplicaError::Start(format!("creating {}: {e}", config.data_dir.display()))
        })?;
        let db = db::open(&config.data_dir.join("db"))?;
        let log = LogStore::open(db.clone())?;
        let sm = StateMachine::open(db.clone(), config.data_dir.clone(), config.window.clone())
            .map_err(ReplicaError::StateMachine)?;
        let shared = sm.shared();
        let identity = Identity::load(config.id, db.clone())?;
        let raft_config = Config {
            cluster_name: "balsa".into(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election_timeout.0.as_millis() as u64,
            election_timeout_max: config.election_timeout.1.as_millis() as u64,
            // Snapshots are triggered by `snapshot_schedule`, at points
            // staggered per member.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: config.keep_after_snapshot,
            install_snapshot_timeout: 2_000,
            snapshot_max_chunk_size: config.snapshot_chunk,
            ..Default::default()
        }
        .validate()?;
        // Links of its own: their connections run on the runtime that made
        // them, and the Raft network's must stay on the raft thread.
        let network = Network {
            links: Links::new(config.id, faults.clone(), identity.clone()),
        };
        let links = Links::new(config.id, faults.clone(), identity.clone());
        let raft = Raft::new(config.id, Arc::new(raft_config), network, log, sm)
            .await
            .map_err(|e| ReplicaError::Start(e.to_string()))?;
        // Every path that gives a member Raft state sets its cluster id first.
        if identity.get().is_none() && raft.is_initialized().await.unwrap_or(false) {
            let _ = raft.shutdown().await;
            return Err(ReplicaError::NoClusterId);
        }
        crate::snapshot_schedule::spawn(raft.clone(), config.id, config.snapshot_every);
        // The followers of the metrics run here, on the Raft thread that
        // publishes them (on every pass of its loop): the API's runtime is
        // woken only when a flag changes.
        let fresh = follow(raft.metrics(), fresh, false);
        let leading = lease::follow(raft.metrics(), shared.window());
        let contact = Arc::new(leader_probe::Contact::default());
        leader_probe::spawn(
            raft.clone(),
            config.id,
            contact.clone(),
            leader_probe::Timing {
                heartbeat: config.heartbeat,
                // openraft 0.9's leader lease is the longest election timeout.
                lease: config.election_timeout.1,
            },
        );
        let proposer = Proposer::spawn(config.proposals, {
            let (raft, timeout) = (raft.clone(), config.request_timeout);
            move |cmd| propose(raft.clone(), cmd, timeout)
        });
        Ok(Arc::new_cyclic(|me_ref: &std::sync::Weak<Self>| {
            let (this, again) = (me_ref.clone(), me_ref.clone());
            let confirms = ReadIndexBatch::spawn("leader", move || {
                let this = this.clone();
                async move {
                    match this.upgrade() {
                        Some(r) => r.read_index_here(Instant::now() + r.timeout()).await,
                        None => Route::Done(Err(stopping())),
                    }
                }
            });
            let read_indexes = ReadIndexBatch::spawn("replica", move || {
                let this = again.clone();
                async move {
                    match this.upgrade() {
                        Some(r) => r.read_index_round().await,
                        None => Err(stopping()),
                    }
                }
            });
            Self {
                id: config.id,
                me,
                raft,
                sm: shared,
                db,
                config,
                faults,
                identity,
                links,
                fresh,
                leading,
                confirms,
                read_indexes,
                proposer,
                contact,
            }
        }))
    }

    /// Bootstraps a new cluster of fixed membership. A replica that is already
    /// part of a cluster ignores this (restarts with `--init` are harmless).
    ///
    /// The cluster id is set first (see `identity`): derived from `token` and
    /// `members` when a token is given, so that every initial member started
    /// with the same token agrees; random otherwise, which only suits a
    /// one-member cluster (or a member that must not match any other). A
    /// member that already has an id keeps it.
    pub async fn initialize(
        &self,
        members: BTreeMap<NodeId, Member>,
        token: Option<&str>,
    ) -> Result<(), ReplicaError> {
        let wanted = match token {
            Some(t) => ClusterId::derive(t, &members),
            None => ClusterId::random(),
        };
        match self.identity.get() {
            Some(id) if token.is_some() && id != wanted => {
                tracing::warn!(cluster.id = %id, "this member already has a cluster id; the init token is ignored");
            }
            Some(_) => {}
            None => {
                if token.is_none() && members.len() > 1 {
                    tracing::warn!(
                        members = members.len(),
                        "--init of several members without an init token: this member gets a \
                         random cluster id that no other member shares (right for a member \
                         whose data was lost; a new cluster needs the same --init-token on \
                         every initial member)"
                    );
                }
                self.identity.adopt(self.id, wanted)?;
            }
        }
        if self
            .raft
            .is_initialized()
            .await
            .map_err(|e| ReplicaError::Initialize(e.to_string()))?
        {
            return Ok(());
        }
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            Err(RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ReplicaError::Initialize(e.to_string())),
        }
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Called for each message from a leader that passed the fault seam and
    /// the identity check (see `leader_probe`).
    pub fn heard_from_leader(&self) {
        self.contact.heard();
    }

    /// Elections this member started because its leader's process was gone
    /// (see `leader_probe`).
    pub fn fast_campaigns(&self) -> u64 {
        self.contact.campaigns()
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The controller lease (see `lease`): controllers and the scheduler act
    /// only while it is held, and their writes are fenced by its term. The
    /// sender ends with the Raft node.
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<Option<Lease>> {
        self.leading.clone()
    }

    /// A fenced write is proposed here or nowhere: forwarding it would hand
    /// the new leader a write decided under the old one's lease.
    async fn write_fenced(
        &self,
        ops: Vec<Op>,
        fence: Fence,
    ) -> Result<(Revision, Vec<OpResult>), StoreError> {
        let held = lease::leading_term(&self.raft.metrics().borrow());
        if held != Some(fence.term) {
            let now = match held {
                Some(t) => format!("member {} now leads in term {t}", self.id),
                None => format!("member {} no longer leads", self.id),
            };
            return Err(fence.refused(&now));
        }
        // Leadership lost while queued: the proposal is refused and not
        // forwarded. Not caught here: leadership lost and won back in a
        // later term while the write waits in the proposer's queue (a whole
        // election); its entry would carry the later term.
        match self.write_here(ops, Instant::now() + self.timeout()).await {
            Route::Done(r) => r,
            Route::Leader(..) | Route::NoLeader => {
                Err(fence.refused(&format!("member {} lost the leadership", self.id)))
            }
        }
    }

    /// Why the Raft node stopped on its own, if it did: a storage error
    /// (a failed log sync, a full disk) is fatal to openraft. Such a replica
    /// can no longer replicate or answer linearizable reads and must not go on
    /// serving local reads of a state that no longer advances: its owner
    /// exits (see `balsa server`).
    pub fn fatal_error(&self) -> Option<String> {
        match &self.raft.metrics().borrow().running_state {
            Ok(()) => None,
            Err(e) => Some(e.to_string()),
        }
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// This member's cluster id and the mismatches it saw.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        self.sm.close().await;
    }

    fn timeout(&self) -> Duration {
        self.config.request_timeout
    }

    fn link(&self, target: NodeId, member: &Member) -> Result<PeerLink, StoreError> {
        self.links
            .get(target, &member.peer_addr)
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    /// The leader's API address, when known.
    fn leader_api(&self) -> Option<String> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        let api = m
            .membership_config
            .nodes()
            .find(|(id, _)| **id == leader)
            .map(|(_, n)| n.api_addr.clone());
        api
    }

    /// A write, if this replica is the leader.
    async fn write_here(
        &self,
        ops: Vec<Op>,
        deadline: Instant,
    ) -> Route<(Revision, Vec<OpResult>)> {
        match tokio::time::timeout_at(deadline, self.proposer.propose(ops)).await {
            Err(_) => Route::Done(Err(not_committed(self.timeout()))),
            Ok(Err(_)) => Route::Done(Err(stopping())),
            Ok(Ok(outcome)) => outcome,
        }
    }

    /// Commits an empty entry (a read barrier), if this replica is the
    /// leader: its index.
    async fn barrier_here(&self, deadline: Instant) -> Route<u64> {
        let write = self.raft.client_write(Command::default());
        match tokio::time::timeout_at(deadline, write).await {
            Err(_) => Route::Done(Err(not_committed(self.timeout()))),
            Ok(Ok(resp)) => Route::Done(Ok(resp.log_id.index)),
            Ok(Err(e)) => write_failed(e),
        }
    }

    /// Called by the peer service for a follower's forwarded write.
    pub async fn leader_write(
        &self,
        ops: Vec<Op>,
    ) -> Result<(Revision, Vec<OpResult>), StoreError> {
        let route = self.write_here(ops, Instant::now() + self.timeout()).await;
        self.leader_only(route)
    }

    /// The answer of a request made to this replica as the leader: a peer that
    /// reached a former leader learns where to go instead.
    fn leader_only<T>(&self, route: Route<T>) -> Result<T, StoreError> {
        match route {
            Route::Done(r) => r,
            Route::Leader(..) | Route::NoLeader => Err(self.not_leader()),
        }
    }

    /// The index a linearizable read must wait for, if this replica is the leader.
    async fn read_index_here(&self, deadline: Instant) -> Route<u64> {
        match tokio::time::timeout_at(deadline, self.raft.get_read_log_id()).await {
            Err(_) => Route::Done(Err(StoreError::Unavailable(format!(
                "leadership not confirmed within {:?} (no quorum?)",
                self.timeout()
            )))),
            Ok(Ok((read, _))) => Route::Done(Ok(read.map_or(0, |l: LogId| l.index))),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                forward_route(&f)
            }
            // openraft bounds the leadership check by the heartbeat interval, which
            // a loaded machine can miss; committing an empty entry in this term
            // proves leadership too, and its index is a valid read index.
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
                self.barrier_here(deadline).await
            }
            Ok(Err(RaftError::Fatal(f))) => Route::Done(Err(fatal(f))),
        }
    }

    /// A leadership confirmation shared with the other reads that arrived
    /// before it started (see `read_index`).
    async fn confirmed_read_index(&self, deadline: Instant) -> Route<u64> {
        match tokio::time::timeout_at(deadline, self.confirms.join()).await {
            Ok(Ok(route)) => route,
            Ok(Err(_)) => Route::Done(Err(stopping())),
            Err(_) => Route::Done(Err(StoreError::Unavailable(format!(
                "leadership not confirmed within {:?} (no quorum?)",
                self.timeout()
            )))),
        }
    }

    pub async fn leader_read_index(&self) -> Result<u64, StoreError> {
        let route = self
            .confirmed_read_index(Instant::now() + self.timeout())
            .await;
        self.leader_only(route)
    }

    /// One round of `read_indexes`: a confirmation here, or one ReadIndex
    /// call to the leader. Every read here waits for this round, so one call
    /// to a leader that went silent (partitioned) must not hold them for the
    /// whole request timeout: each attempt gets a quarter of it, and
    /// `at_leader` retries (at the new leader once one is known).
    async fn read_index_round(&self) -> Result<u64, StoreError> {
        let attempt = self.timeout() / 4;
        self.at_leader(
            true,
            |deadline| self.confirmed_read_index(deadline),
            |mut link, t| async move { link.call(false, &(), t.min(attempt)).await },
        )
        .await
    }

    /// Runs a leader-only request here or at the leader, retrying while the
    /// leadership moves, until the deadline. A request that is not `idempotent`
    /// is retried only when it surely never reached the leader; otherwise its
    /// outcome is unknown and the caller is told so.
    async fn at_leader<T, Here, HereFut, There, ThereFut>(
        &self,
        idempotent: bool,
        here: Here,
        there: There,
    ) -> Result<T, StoreError>
    where
        Here: Fn(Instant) -> HereFut,
        HereFut: std::future::Future<Output = Route<T>>,
        There: Fn(PeerLink, Duration) -> ThereFut,
        ThereFut:
            std::future::Future<Output = Result<Result<T, StoreError>, crate::network::PeerError>>,
    {
        let deadline = Instant::now() + self.timeout();
        loop {
            let last_error = match here(deadline).await {
                Route::Done(r) => return r,
                Route::NoLeader => "no leader is elected".to_string(),
                Route::Leader(id, member) => {
                    let remaining = deadline.saturating_duration_since(Instant::now());
                    match there(self.link(id, &member)?, remaining).await {
                        Ok(Err(StoreError::NotLeader { .. })) => {
                            format!("member {id} is no longer the leader")
                        }
                        Ok(r) => return r,
                        Err(e) if idempotent || e.surely_undelivered() => {
                            format!("leader {id} unreachable: {e}")
                        }
                        Err(e) => {
                            return Err(StoreError::Unavailable(format!(
                                "forwarding to leader {id} failed after sending ({e}); \
                                 the write may still be applied"
                            )))
                        }
                    }
                }
            };
            if Instant::now() + RETRY >= deadline {
                return Err(StoreError::Unavailable(format!(
                    "{last_error} (gave up after {:?})",
                    self.timeout()
                )));
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Waits until this replica has applied everything acknowledged so far.
    async fn read_barrier(&self) -> Result<Revision, StoreError> {
        let index = match tokio::time::timeout(self.timeout(), self.read_indexes.join()).await {
            Ok(Ok(index)) => index?,
            Ok(Err(_)) => return Err(stopping()),
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "no read index within {:?} (no quorum?)",
                    self.timeout()
                )))
            }
        };
        let mut applied = self.sm.applied_index();
        let reached = tokio::time::timeout(self.timeout(), applied.wait_for(|i| *i >= index))
            .await
            .map(|r| r.map(|_| ()));
        match reached {
            // Everything up to the read index is in the window (it is
            // pushed before the index is published), maybe more.
            Ok(Ok(())) => Ok(self.sm.window().current()),
            Ok(Err(_)) => Err(StoreError::Unavailable("replica is shutting down".into())),
            Err(_) => Err(StoreError::Unavailable(format!(
                "replica did not apply up to the read index {index} within {:?}",
                self.timeout()
            ))),
        }
    }

    async fn barrier(&self, read: ReadMode) -> Result<(), StoreError> {
        match read {
            ReadMode::Linearizable => self.read_barrier().await.map(|_| ()),
            ReadMode::Local => Ok(()),
        }
    }

    fn committed_index(&self) -> u64 {
        let bytes = self
            .db
            .get_cf(db::cf(&self.db, CF_RAFT), KEY_COMMITTED)
            .ok()
            .flatten();
        bytes
            .and_then(|b| codec::decode::<Option<LogId>>(&b).ok())
            .flatten()
            .map_or(0, |l| l.index)
    }

    /// This member's own view.
    pub fn own_status(&self) -> MemberStatus {
        let m = self.raft.metrics().borrow().clone();
        let voter = m.membership_config.voter_ids().any(|v| v == self.id);
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Candidate => "candidate",
            ServerState::Follower if voter => "follower",
            ServerState::Follower | ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        MemberStatus {
            id: self.id,
            peer_addr: self.me.peer_addr.clone(),
            api_addr: self.me.api_addr.clone(),
            role: role.into(),
            term: m.current_term,
            leader: m.current_leader.unwrap_or(0),
            commit_index: self.committed_index(),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            last_log_index: m.last_log_index.unwrap_or(0),
            voter,
            error: m
                .running_state
                .as_ref()
                .err()
                .map_or_else(String::new, |e| format!("raft has stopped: {e}")),
            cluster_id: self.identity.wire(),
            cluster_mismatch: self.identity.last_mismatch().unwrap_or_default(),
        }
    }

    /// Every member's view, asked over the peer channel (unreachable members are
    /// listed with the error).
    pub async fn cluster_status(&self) -> Vec<MemberStatus> {
        let members: Vec<(NodeId, Member)> = {
            let m = self.raft.metrics().borrow().clone();
            m.membership_config
                .nodes()
                .map(|(id, n)| (*id, n.clone()))
                .collect()
        };
        let asks = members.into_iter().map(|(id, member)| async move {
            if id == self.id {
                return self.own_status();
            }
            let answer = match self.link(id, &member) {
                Ok(mut link) => link
                    .status(Duration::from_millis(500))
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            answer.unwrap_or_else(|error| MemberStatus {
                id,
                peer_addr: member.peer_addr.clone(),
                api_addr: member.api_addr.clone(),
                role: "unreachable".into(),
                error,
                ..Default::default()
            })
        });
        futures::future::join_all(asks).await
    }

    fn not_leader(&self) -> StoreError {
        StoreError::NotLeader {
            leader: self.leader_api(),
        }
    }

    fn voters(&self) -> BTreeSet<NodeId> {
        let voters = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .voter_ids()
            .collect();
        voters
    }

    fn membership_error(
        &self,
        e: RaftError<NodeId, ClientWriteError<NodeId, Member>>,
    ) -> StoreError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => self.not_leader(),
            other => StoreError::Unavailable(other.to_string()),
        }
    }

    /// Adds a member as a learner, and with `promote` makes it a voter. Leader only.
    /// The member is told the cluster id first: an empty member takes it, one
    /// of another cluster refuses and nothing is changed.
    pub async fn add_member(
        &self,
        id: NodeId,
        member: Member,
        promote: bool,
    ) -> Result<(), StoreError> {
        let ours = self
            .identity
            .get()
            .ok_or_else(|| StoreError::Unavailable("this member has no cluster id yet".into()))?;
        let mut link = self.link(id, &member)?;
        match link.adopt(ours, Duration::from_secs(2)).await {
            Ok(()) => {}
            Err(crate::network::PeerError::ForeignCluster(e)) => {
                return Err(StoreError::Invalid(format!(
                    "member {id} cannot be added: {e}"
                )))
            }
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "member {id} at {} was not told the cluster id: {e}",
                    member.peer_addr
                )))
            }
        }
        self.raft
            .add_learner(id, member, true)
            .await
            .map_err(|e| self.membership_error(e))?;
        if promote {
            let mut voters = self.voters();
            voters.insert(id);
            self.raft
                .change_membership(voters, false)
                .await
                .map_err(|e| self.membership_error(e))?;
        }
        Ok(())
    }

    /// Removes a member from the cluster. Leader only.
    pub async fn remove_member(&self, id: NodeId) -> Result<(), StoreError> {
        let mut voters = self.voters();
        if !voters.remove(&id) {
            return Err(StoreError::NotFound {
                key: format!("member {id}"),
            });
        }
        self.raft
            .change_membership(voters, false)
            .await
            .map_err(|e| self.membership_error(e))?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for Replica {
    #[tracing::instrument(level = "debug", skip_all, fields(raft.id = self.id, object.ref = %key, ?read))]
    async fn get(&self, key: &ResourceKey, read: ReadMode) -> Result<Object, StoreError> {
        key.validate()?;
        self.barrier(read).await?;
        self.sm.get(key)?.ok_or_else(|| StoreError::not_found(key))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(raft.id = self.id, object.prefix = ?prefix, read = ?opts.read))]
    async fn list(&self, prefix: &KeyPrefix, opts: ListOptions) -> Result<ListResult, StoreError> {
        prefix.validate()?;
        self.barrier(opts.read).await?;
        self.sm.list(prefix, &opts)
    }

    #[tracing::instrument(level = "debug", skip_all, fields(
        raft.id = self.id,
        ops = ops.len(),
        object.ref = %ops.first().map(|op| op.key().to_string()).unwrap_or_default(),
    ))]
    async fn txn(&self, ops: Vec<Op>) -> Result<(Revision, Vec<OpResult>), StoreError> {
        apply::precheck(&ops)?;
        self.at_leader(
            false,
            |deadline| self.write_here(ops.clone(), deadline),
            |mut link, t| {
                let ops = ops.clone();
                async move { link.call(true, &ops, t).await }
            },
        )
        .await
    }

    async fn txn_fenced(
        &self,
        ops: Vec<Op>,
        fence: Fence,
    ) -> Result<(Revision, Vec<OpResult>), StoreError> {
        apply::precheck(&ops)?;
        self.write_fenced(ops, fence).await
    }

    async fn watch(
        &self,
        prefix: &KeyPrefix,
        opts: WatchOptions,
    ) -> Result<WatchStream, StoreError> {
        balsa_api::store::watch::watch(
            self.sm.window(),
            prefix.clone(),
            opts,
            Some(self.fresh.clone()),
        )
    }

    async fn revision(&self, read: ReadMode) -> Result<Revision, StoreError> {
        match read {
            ReadMode::Linearizable => self.read_barrier().await,
            ReadMode::Local => Ok(self.sm.window().current()),
        }
    }

    fn resource_changes(
        &self,
        group: &str,
        resource: &str,
    ) -> Option<tokio::sync::watch::Receiver<Revision>> {
        Some(self.sm.window().subscribe_resource(group, resource))
    }
}
