//! The Cluster gRPC service: members, roles and indexes, and online membership
//! change (add learner, promote, remove).

use std::sync::Arc;

use balsa_api::grpc::status::to_status;
use balsa_proto::objects::cluster_server::{Cluster, ClusterServer};
use balsa_proto::objects::{
    AddMemberRequest, ClusterStatus, ClusterStatusRequest, RemoveMemberRequest,
};
use tonic::{Request, Response, Status};

use crate::replica::Replica;
use crate::types::Member;

pub struct ClusterService {
    replica: Arc<Replica>,
}

pub fn server(replica: Arc<Replica>) -> ClusterServer<ClusterService> {
    ClusterServer::new(ClusterService { replica })
}

impl ClusterService {
    async fn status(&self) -> ClusterStatus {
        let members = self.replica.cluster_status().await;
        let leader = self.replica.own_status().leader;
        ClusterStatus { members, leader }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(
        &self,
        _r: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        Ok(Response::new(ClusterService::status(self).await))
    }

    async fn add_member(
        &self,
        request: Request<AddMemberRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        let req = request.into_inner();
        if req.id == 0 || req.peer_addr.is_empty() || req.api_addr.is_empty() {
            return Err(Status::invalid_argument(
                "a member needs a non-zero id, a peer address and an API address",
            ));
        }
        let member = Member {
            peer_addr: req.peer_addr,
            api_addr: req.api_addr,
        };
        tracing::info!(member.id = req.id, %member, promote = req.promote, "adding member");
        self.replica
            .add_member(req.id, member, req.promote)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(ClusterService::status(self).await))
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<ClusterStatus>, Status> {
        let id = request.into_inner().id;
        tracing::info!(member.id = id, "removing member");
        self.replica
            .remove_member(id)
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(ClusterService::status(self).await))
    }
}
