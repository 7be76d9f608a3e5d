//! The peer gRPC service: Raft RPCs, forwarded writes, read-index and status.
//! Incoming messages pass the fault seam (by sender), then the cluster id
//! check (`identity`), before anything else: a message from another cluster
//! is refused with FAILED_PRECONDITION naming both ids, this member's in the
//! `balsa-cluster-id` metadata, and Raft never sees it.

use std::sync::Arc;

use balsa_api::{Op, StoreError};
use balsa_proto::peer::peer_server::{Peer, PeerServer};
use balsa_proto::peer::{
    MemberStatus, PeerReply, PeerRequest, RaftKind, RaftReply, RaftRequest, StatusRequest,
};
use balsa_proto::WIRE_VERSION;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::codec;
use crate::faults::Verdict;
use crate::identity::{ClusterId, IdentityError, METADATA_KEY};
use crate::replica::Replica;
use crate::types::{NodeId, TypeConfig};

pub struct PeerService {
    replica: Arc<Replica>,
}

pub fn server(replica: Arc<Replica>) -> PeerServer<PeerService> {
    PeerServer::new(PeerService { replica })
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20)
}

fn bad_payload(e: codec::CodecError) -> Status {
    Status::invalid_argument(format!("peer payload: {e}"))
}

fn reply<T: Serialize>(value: &T) -> Result<Vec<u8>, Status> {
    codec::encode(value).map_err(|e| Status::internal(e.to_string()))
}

/// The refusal of a message between two clusters, with this member's id in the
/// metadata for the sender to report.
fn foreign(e: IdentityError, ours: &str) -> Status {
    let mut status = Status::failed_precondition(e.to_string());
    if let Ok(v) = ours.parse() {
        status.metadata_mut().insert(METADATA_KEY, v);
    }
    status
}

impl PeerService {
    /// Admits one message: wire version, fault seam, then cluster id.
    async fn admit(&self, version: u32, from: NodeId, cluster_id: &str) -> Result<(), Status> {
        self.pass(version, from).await?;
        let identity = self.replica.identity();
        identity
            .admit(from, cluster_id)
            .map_err(|e| foreign(e, &identity.wire()))
    }

    /// The wire version and the fault seam.
    async fn pass(&self, version: u32, from: NodeId) -> Result<(), Status> {
        if version != WIRE_VERSION {
            return Err(Status::failed_precondition(format!(
                "peer {from} speaks wire version {version}, this member {WIRE_VERSION}"
            )));
        }
        match self.replica.faults().verdict(from) {
            Verdict::Drop => Err(Status::unavailable(format!(
                "message from {from} dropped by the fault seam"
            ))),
            Verdict::Deliver(Some(d)) => {
                tokio::time::sleep(d).await;
                Ok(())
            }
            Verdict::Deliver(None) => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = request.into_inner();
        self.admit(req.version, req.from, &req.cluster_id).await?;
        let raft = self.replica.raft();
        let payload = match RaftKind::try_from(req.kind) {
            Ok(RaftKind::AppendEntries) => {
                let rpc: AppendEntriesRequest<TypeConfig> =
                    codec::decode(&req.payload).map_err(bad_payload)?;
                self.replica.heard_from_leader();
                reply(&raft.append_entries(rpc).await)?
            }
            Ok(RaftKind::Vote) => {
                let rpc: VoteRequest<NodeId> = codec::decode(&req.payload).map_err(bad_payload)?;
                reply(&raft.vote(rpc).await)?
            }
            Ok(RaftKind::InstallSnapshot) => {
                let rpc: InstallSnapshotRequest<TypeConfig> =
                    codec::decode(&req.payload).map_err(bad_payload)?;
                self.replica.heard_from_leader();
                reply(&raft.install_snapshot(rpc).await)?
            }
            _ => {
                return Err(Status::invalid_argument(format!(
                    "unknown raft message kind {}",
                    req.kind
                )))
            }
        };
        Ok(Response::new(RaftReply {
            payload: payload.into(),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(peer.from = request.get_ref().from))]
    async fn forward(&self, request: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        let req = request.into_inner();
        self.admit(req.version, req.from, &req.cluster_id).await?;
        let ops: Vec<Op> = codec::decode(&req.payload).map_err(bad_payload)?;
        let result = self.replica.leader_write(ops).await;
        Ok(Response::new(PeerReply {
            payload: reply(&result)?.into(),
        }))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(peer.from = request.get_ref().from))]
    async fn read_index(
        &self,
        request: Request<PeerRequest>,
    ) -> Result<Response<PeerReply>, Status> {
        let req = request.into_inner();
        self.admit(req.version, req.from, &req.cluster_id).await?;
        let result: Result<u64, StoreError> = self.replica.leader_read_index().await;
        Ok(Response::new(PeerReply {
            payload: reply(&result)?.into(),
        }))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<MemberStatus>, Status> {
        Ok(Response::new(self.replica.own_status()))
    }

    #[tracing::instrument(level = "debug", skip_all, fields(peer.from = request.get_ref().from))]
    async fn adopt(&self, request: Request<PeerRequest>) -> Result<Response<PeerReply>, Status> {
        let req = request.into_inner();
        self.pass(req.version, req.from).await?;
        let id = ClusterId::parse(&req.cluster_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let identity = self.replica.identity();
        identity.adopt(req.from, id).map_err(|e| match e {
            IdentityError::Mismatch { .. } => foreign(e, &identity.wire()),
            other => Status::internal(other.to_string()),
        })?;
        Ok(Response::new(PeerReply::default()))
    }
}
