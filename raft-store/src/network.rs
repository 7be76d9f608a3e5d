//! The peer transport over tonic: openraft's network client, plus the Forward
//! and ReadIndex calls a follower makes to the leader. Every message passes the
//! fault seam first and carries this member's cluster id; a peer that refuses
//! it as another cluster's is reported once (`identity`) and treated as
//! unreachable.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use balsa_proto::peer::peer_client::PeerClient;
use balsa_proto::peer::{PeerRequest, RaftKind, RaftReply, StatusRequest};
use balsa_proto::WIRE_VERSION;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::Vote;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::codec;
use crate::faults::{Faults, Verdict};
use crate::identity::{ClusterId, Identity, IdentityError, METADATA_KEY};
use crate::raft_call::{RaftCall, RaftCodec};
use crate::types::{LogId, Member, NodeId, TypeConfig};

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("message to {0} dropped by the fault seam")]
    Dropped(NodeId),
    #[error("invalid peer address {addr}: {source}")]
    Address {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("peer call failed: {}: {}", .0.code(), .0.message())]
    Call(#[from] tonic::Status),
    #[error("peer payload: {0}")]
    Codec(#[from] codec::CodecError),
    /// The peer belongs to another cluster (or to none yet) and refused the
    /// message before handling it.
    #[error("{0}")]
    ForeignCluster(#[source] IdentityError),
}

impl PeerError {
    /// True when the request certainly never reached the peer's handler, so a
    /// non-idempotent request may be retried elsewhere.
    pub fn surely_undelivered(&self) -> bool {
        match self {
            PeerError::Dropped(_) | PeerError::Address { .. } | PeerError::ForeignCluster(_) => {
                true
            }
            PeerError::Call(s) => {
                s.code() == tonic::Code::Unavailable
                    && (s.message().contains("connect") || s.message().contains("fault seam"))
            }
            PeerError::Codec(_) => false,
        }
    }
}

/// A client to one peer; the channel connects lazily and reconnects by itself.
#[derive(Clone)]
pub struct PeerLink {
    from: NodeId,
    target: NodeId,
    client: PeerClient<Channel>,
    /// The same channel, for the Raft call with its own codec (`raft_call`).
    raw: tonic::client::Grpc<Channel>,
    faults: Faults,
    identity: Identity,
}

/// The largest peer message sent or received (a snapshot chunk, a batch).
const MAX_MESSAGE: usize = 256 << 20;

pub fn channel(addr: &str) -> Result<Channel, PeerError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|source| PeerError::Address {
            addr: addr.to_string(),
            source,
        })?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10));
    Ok(endpoint.connect_lazy())
}

impl PeerLink {
    pub fn new(
        from: NodeId,
        target: NodeId,
        addr: &str,
        faults: Faults,
        identity: Identity,
    ) -> Result<Self, PeerError> {
        let channel = channel(addr)?;
        let client = PeerClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let raw = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        Ok(Self {
            from,
            target,
            client,
            raw,
            faults,
            identity,
        })
    }

    /// A call's outcome, with a refusal by a member of another cluster told
    /// apart (its receiver names its own id in the metadata).
    fn answer<T>(&self, r: Result<tonic::Response<T>, tonic::Status>) -> Result<T, PeerError> {
        match r {
            Ok(resp) => Ok(resp.into_inner()),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                match s.metadata().get(METADATA_KEY) {
                    Some(theirs) => Err(PeerError::ForeignCluster(
                        self.identity
                            .refused_by(self.target, theirs.to_str().unwrap_or("<unreadable>")),
                    )),
                    None => Err(PeerError::Call(s)),
                }
            }
            Err(s) => Err(PeerError::Call(s)),
        }
    }

    async fn pass_seam(&self) -> Result<(), PeerError> {
        match self.faults.verdict(self.target) {
            Verdict::Drop => Err(PeerError::Dropped(self.target)),
            Verdict::Deliver(None) => Ok(()),
            Verdict::Deliver(Some(d)) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
        }
    }

    async fn raft<Req: Serialize + Send + Sync + 'static, Resp: DeserializeOwned>(
        &mut self,
        kind: RaftKind,
        req: Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        self.pass_seam().await?;
        let call = RaftCall::new(WIRE_VERSION, self.from, kind, self.identity.wire(), req)?;
        let codec = call.codec();
        let mut request = tonic::Request::new(call);
        request.set_timeout(timeout);
        let reply = self.raft_call(request, codec).await;
        Ok(codec::decode(&self.answer(reply)?.payload)?)
    }

    /// `Peer/Raft` as the generated client calls it, with `raft_call`'s codec.
    async fn raft_call<Req: Serialize + Send + Sync + 'static>(
        &mut self,
        mut request: tonic::Request<RaftCall<Req>>,
        codec: RaftCodec<Req>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        self.raw
            .ready()
            .await
            .map_err(|e| tonic::Status::unknown(format!("Service was not ready: {e}")))?;
        request
            .extensions_mut()
            .insert(tonic::GrpcMethod::new("balsa.peer.v1.Peer", "Raft"));
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/balsa.peer.v1.Peer/Raft");
        self.raw.unary(request, path, codec).await
    }

    /// A Forward or ReadIndex call: the payload and reply are codec-encoded.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &mut self,
        forward: bool,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        self.pass_seam().await?;
        let mut request = tonic::Request::new(PeerRequest {
            version: WIRE_VERSION,
            from: self.from,
            payload: codec::encode(req)?.into(),
            cluster_id: self.identity.wire(),
        });
        request.set_timeout(timeout);
        let reply = if forward {
            self.client.forward(request).await
        } else {
            self.client.read_index(request).await
        };
        Ok(codec::decode(&self.answer(reply)?.payload)?)
    }

    /// Tells the peer (a member being added) this cluster's id, `id`: it takes
    /// it if it has none, and refuses if it belongs to another cluster.
    pub async fn adopt(&mut self, id: ClusterId, timeout: Duration) -> Result<(), PeerError> {
        self.pass_seam().await?;
        let mut request = tonic::Request::new(PeerRequest {
            version: WIRE_VERSION,
            from: self.from,
            payload: Default::default(),
            cluster_id: id.to_string(),
        });
        request.set_timeout(timeout);
        let reply = self.client.adopt(request).await;
        self.answer(reply).map(|_| ())
    }

    pub async fn status(
        &mut self,
        timeout: Duration,
    ) -> Result<balsa_proto::peer::MemberStatus, PeerError> {
        self.pass_seam().await?;
        let mut request = tonic::Request::new(StatusRequest {});
        request.set_timeout(timeout);
        Ok(self.client.status(request).await?.into_inner())
    }

    fn rpc_error<E: std::error::Error>(&self, e: PeerError) -> RPCError<NodeId, Member, E> {
        match &e {
            PeerError::Dropped(_) | PeerError::Address { .. } | PeerError::ForeignCluster(_) => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            PeerError::Call(s) if s.code() == tonic::Code::Unavailable => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            _ => RPCError::Network(NetworkError::new(&e)),
        }
    }
}

/// The most bytes of values one AppendEntries carries (beyond its first entry).
pub const APPEND_BYTES: usize = 512 << 10;

/// `rpc` with only as many of its entries as fit in `budget` bytes (always
/// the first), and the log id of the last one kept if any were left out.
pub fn within_budget(
    mut rpc: AppendEntriesRequest<TypeConfig>,
    budget: usize,
) -> (AppendEntriesRequest<TypeConfig>, Option<LogId>) {
    let mut used = 0;
    let keep = rpc
        .entries
        .iter()
        .position(|e| {
            used += crate::log_tail::size_of(e);
            used > budget
        })
        .map_or(rpc.entries.len(), |over| over.max(1));
    if keep == rpc.entries.len() {
        return (rpc, None);
    }
    rpc.entries.truncate(keep);
    let last = rpc.entries.last().map(|e| e.log_id);
    (rpc, last)
}

/// One link per peer, shared by the clients made from one set: the Raft
/// network's (the replication streams, and openraft's leadership checks for
/// reads, which make a client per check) or the replica's (forwarded writes
/// and read-index calls). A link per client cost a TCP connection and an
/// HTTP/2 handshake per linearizable read, on the raft thread at both ends:
/// ~1,200 connections in one full sim job. A link's connection runs on the
/// runtime that made it, so each runtime keeps its own set.
#[derive(Clone)]
pub struct Links {
    from: NodeId,
    faults: Faults,
    identity: Identity,
    by_peer: Arc<Mutex<HashMap<NodeId, (String, PeerLink)>>>,
}

impl Links {
    pub fn new(from: NodeId, faults: Faults, identity: Identity) -> Self {
        Self {
            from,
            faults,
            identity,
            by_peer: Arc::default(),
        }
    }

    /// The link to `target` at `addr` (a new one when its address changed).
    pub fn get(&self, target: NodeId, addr: &str) -> Result<PeerLink, PeerError> {
        let mut links = self.by_peer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, link)) = links.get(&target) {
            if at == addr {
                return Ok(link.clone());
            }
        }
        let link = PeerLink::new(
            self.from,
            target,
            addr,
            self.faults.clone(),
            self.identity.clone(),
        )?;
        links.insert(target, (addr.to_string(), link.clone()));
        Ok(link)
    }
}

/// Makes a `Peer` per replication target.
#[derive(Clone)]
pub struct Network {
    pub links: Links,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Self::Network {
        RaftPeer {
            peer: self.links.get(target, &node.peer_addr),
            in_flight: None,
        }
    }
}

pub struct RaftPeer {
    peer: Result<PeerLink, PeerError>,
    /// The AppendEntries sent last, while the follower has not answered it.
    in_flight: Option<InFlight>,
}

/// An AppendEntries on its way, in a task of its own: openraft stops waiting
/// for an answer after one heartbeat interval (40 ms by default), but a
/// loaded follower's fsync and apply, or a longer round trip between
/// masters, can take more. Given up on, the request used to be cancelled
/// and the same range sent again (encoded, carried and decoded once more),
/// and a peer further away than the heartbeat interval was never reached at
/// all. The request now goes on until `APPEND_DEADLINE`; the next call
/// waits for its answer first and, when it covers the entries asked for,
/// answers with it, so one AppendEntries per follower is in flight and each
/// entry crosses once. (openraft's leadership checks for reads use clients
/// of their own, so they always send afresh.)
struct InFlight {
    vote: Vote<NodeId>,
    /// The last log id the request brings the follower to (its prev_log_id
    /// when it carries no entries).
    last: Option<LogId>,
    reply: tokio::task::JoinHandle<AppendResult>,
}

/// How long an AppendEntries may take: a follower that vanished without a
/// reset is tried again after this.
const APPEND_DEADLINE: Duration = Duration::from_millis(500);

type RaftResult<T, E = openraft::error::Infallible> = Result<T, RaftError<NodeId, E>>;
type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<NodeId, Member, RaftError<NodeId, E>>>;
type AppendResult = RpcResult<AppendEntriesResponse<NodeId>>;

async fn send<Req, Resp, E>(
    peer: &mut PeerLink,
    kind: RaftKind,
    req: Req,
    timeout: Duration,
) -> RpcResult<Resp, E>
where
    Req: Serialize + Send + Sync + 'static,
    Resp: DeserializeOwned,
    E: std::error::Error + DeserializeOwned,
{
    let reply: Result<RaftResult<Resp, E>, PeerError> = peer.raft(kind, req, timeout).await;
    match reply {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(remote)) => Err(RPCError::RemoteError(RemoteError::new(peer.target, remote))),
        Err(e) => Err(peer.rpc_error(e)),
    }
}

/// How the follower would answer `rpc` now that an earlier AppendEntries
/// from the same leader brought it to `acked`, when that covers any of
/// `rpc`'s entries: it holds them up to there. openraft then sends what is
/// left at once.
pub fn answered_by(
    rpc: &AppendEntriesRequest<TypeConfig>,
    acked: LogId,
) -> Option<AppendEntriesResponse<NodeId>> {
    let held = rpc
        .entries
        .partition_point(|e| e.log_id.index <= acked.index);
    match held {
        0 => None,
        n if n == rpc.entries.len() => Some(AppendEntriesResponse::Success),
        n => Some(AppendEntriesResponse::PartialSuccess(Some(
            rpc.entries[n - 1].log_id,
        ))),
    }
}

impl RaftPeer {
    fn link<E: std::error::Error>(
        &mut self,
    ) -> Result<&mut PeerLink, RPCError<NodeId, Member, RaftError<NodeId, E>>> {
        self.peer
            .as_mut()
            .map_err(|e| RPCError::Unreachable(Unreachable::new(e)))
    }

    /// Waits for the AppendEntries in flight, if any, and says up to where
    /// it brought the follower when that was for `vote`.
    async fn settle(&mut self, vote: &Vote<NodeId>) -> Option<LogId> {
        let sent = self.in_flight.as_mut()?;
        // Cancelled here (openraft gave up waiting), the request stays in flight.
        let reply = (&mut sent.reply).await;
        let sent = self.in_flight.take()?;
        if &sent.vote != vote {
            return None;
        }
        match reply {
            Ok(Ok(AppendEntriesResponse::Success)) => sent.last,
            Ok(Ok(AppendEntriesResponse::PartialSuccess(upto))) => upto,
            _ => None,
        }
    }
}

impl Drop for RaftPeer {
    fn drop(&mut self) {
        // A replication session that ends (a new term, a member removed) has
        // nothing more to say with it.
        if let Some(sent) = &self.in_flight {
            sent.reply.abort();
        }
    }
}

impl RaftNetwork<TypeConfig> for RaftPeer {
    /// Answers from the previous AppendEntries when it brought the follower
    /// past `rpc`'s start (see `InFlight`); otherwise sends at most
    /// `APPEND_BYTES` of entries (at least one): a follower far behind
    /// would otherwise be sent up to `max_payload_entries` whole entries
    /// (each up to a proposer's worth of writes) at once. The rest goes in
    /// the next call (`PartialSuccess`).
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        if let Some(answer) = self
            .settle(&rpc.vote)
            .await
            .and_then(|acked| answered_by(&rpc, acked))
        {
            return Ok(answer);
        }
        let (rpc, cut_after) = within_budget(rpc, APPEND_BYTES);
        let mut peer = self.link()?.clone();
        let (vote, last) = (
            rpc.vote,
            rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id),
        );
        let reply = tokio::spawn(async move {
            send(&mut peer, RaftKind::AppendEntries, rpc, APPEND_DEADLINE).await
        });
        let sent = self.in_flight.insert(InFlight { vote, last, reply });
        let reply = (&mut sent.reply).await;
        self.in_flight = None;
        let resp = reply.map_err(|e| RPCError::Network(NetworkError::new(&e)))??;
        Ok(match (resp, cut_after) {
            (AppendEntriesResponse::Success, Some(last)) => {
                AppendEntriesResponse::PartialSuccess(Some(last))
            }
            (resp, _) => resp,
        })
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>,
    > {
        send(
            self.link()?,
            RaftKind::InstallSnapshot,
            rpc,
            option.hard_ttl(),
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        send(self.link()?, RaftKind::Vote, rpc, option.hard_ttl()).await
    }
}

#[cfg(test)]
mod tests {
    use balsa_api::{Op, ResourceKey};
    use bytes::Bytes;
    use openraft::{CommittedLeaderId, EntryPayload, Vote};

    use super::*;
    use crate::types::{Command, Entry};

    /// An entry at `index` whose one write holds `bytes` of value.
    fn entry(index: u64, bytes: usize) -> Entry {
        let op = Op::Create {
            key: ResourceKey::new("", "configmaps", Some("default"), format!("o{index}")),
            value: Bytes::from(vec![b'x'; bytes]),
        };
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command {
                txns: vec![vec![op]],
            }),
        }
    }

    fn request(sizes: &[usize]) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: sizes
                .iter()
                .enumerate()
                .map(|(i, s)| entry(i as u64 + 1, *s))
                .collect(),
        }
    }

    fn indexes(rpc: &AppendEntriesRequest<TypeConfig>) -> Vec<u64> {
        rpc.entries.iter().map(|e| e.log_id.index).collect()
    }

    #[test]
    fn an_append_carries_whole_entries_up_to_its_budget() {
        // Each entry weighs its value plus 64 bytes of overhead.
        let (rpc, cut) = within_budget(request(&[100, 100, 100]), 1000);
        assert_eq!((indexes(&rpc), cut), (vec![1, 2, 3], None));
        let (rpc, cut) = within_budget(request(&[400, 400, 400]), 1000);
        assert_eq!(indexes(&rpc), vec![1, 2]);
        assert_eq!(cut.map(|l| l.index), Some(2));
        // An entry larger than the budget still goes, alone.
        let (rpc, cut) = within_budget(request(&[5000, 10]), 1000);
        assert_eq!(indexes(&rpc), vec![1]);
        assert_eq!(cut.map(|l| l.index), Some(1));
        // A heartbeat has nothing to cut.
        let (rpc, cut) = within_budget(request(&[]), 1000);
        assert_eq!((indexes(&rpc), cut), (vec![], None));
    }

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    #[test]
    fn an_earlier_append_answers_for_the_entries_it_brought() {
        let rpc = request(&[10, 10, 10]);
        assert_eq!(
            answered_by(&rpc, log_id(2)),
            Some(AppendEntriesResponse::PartialSuccess(Some(log_id(2))))
        );
        assert_eq!(
            answered_by(&rpc, log_id(3)),
            Some(AppendEntriesResponse::Success)
        );
        assert_eq!(
            answered_by(&rpc, log_id(9)),
            Some(AppendEntriesResponse::Success)
        );
        // Nothing it carries acknowledged, or nothing carried: it goes.
        let mut behind = request(&[10, 10]);
        behind.prev_log_id = Some(log_id(0));
        assert_eq!(answered_by(&behind, log_id(0)), None);
        assert_eq!(answered_by(&request(&[]), log_id(5)), None);
    }
}
