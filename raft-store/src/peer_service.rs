//! The peer gRPC service: Raft RPCs, forwarded writes, read-index and status.
//! Incoming messages pass the fault seam (by sender) before anything else.

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

impl PeerService {
    async fn admit(&self, version: u32, from: NodeId) -> Result<(), Status> {
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
        self.admit(req.version, req.from).await?;
        let raft = self.replica.raft();
        let payload = match RaftKind::try_from(req.kind) {
            Ok(RaftKind::AppendEntries) => {
                let rpc: AppendEntriesRequest<TypeConfig> =
                    codec::decode(&req.payload).map_err(bad_payload)?;
                reply(&raft.append_entries(rpc).await)?
            }
            Ok(RaftKind::Vote) => {
                let rpc: VoteRequest<NodeId> = codec::decode(&req.payload).map_err(bad_payload)?;
                reply(&raft.vote(rpc).await)?
            }
            Ok(RaftKind::InstallSnapshot) => {
                let rpc: InstallSnapshotRequest<TypeConfig> =
                    codec::decode(&req.payload).map_err(bad_payload)?;
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
        self.admit(req.version, req.from).await?;
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
        self.admit(req.version, req.from).await?;
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
}
