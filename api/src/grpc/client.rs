//! A typed client of the Objects and Cluster services.

use balsa_proto::objects::cluster_client::ClusterClient;
use balsa_proto::objects::objects_client::ObjectsClient;
use balsa_proto::objects::{
    AddMemberRequest, BatchReply, BatchRequest, ClusterStatus, ClusterStatusRequest, DeleteRequest,
    GetRequest, ListRequest, ObjectRef, ObjectReply, PatchRequest, RemoveMemberRequest, TxnReply,
    TxnRequest, WatchReply, WatchRequest, WriteRequest,
};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tonic::service::Routes;
use tonic::transport::{Channel, Endpoint};
use tonic::Status;

use super::fence::{attach, LeaseSource};
use super::status::from_status;
use super::transport::Transport;
use crate::store::{ResourceKey, Revision, StoreError};

#[derive(Clone)]
pub struct Client {
    objects: ObjectsClient<Transport>,
    cluster: ClusterClient<Transport>,
    /// Set for a leader-only control loop: every write carries its lease's
    /// fence (see `fence`).
    fence: Option<LeaseSource>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

pub fn object_ref(key: &ResourceKey) -> ObjectRef {
    ObjectRef {
        group: key.group.clone(),
        resource: key.resource.clone(),
        namespace: key.namespace.clone().unwrap_or_default(),
        name: key.name.clone(),
    }
}

/// One page of a list.
pub struct Page {
    pub items: Vec<Bytes>,
    pub revision: Revision,
    pub continue_token: Option<String>,
}

impl Client {
    /// Connects to a master's API address (`host:port`).
    pub async fn connect(addr: &str) -> Result<Self, StoreError> {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(unavailable)?
            .connect_timeout(std::time::Duration::from_secs(2))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| StoreError::Unavailable(format!("connecting to {addr}: {e}")))?;
        Ok(Self::from_channel(channel))
    }

    pub fn from_channel(channel: Channel) -> Self {
        Self::over(Transport::Remote(channel))
    }

    /// A client of this process's own API services (`routes` serves
    /// Objects and Cluster): no connection, no HTTP/2 (see `transport`).
    pub fn local(routes: Routes) -> Self {
        Self::over(Transport::Local(routes))
    }

    fn over(transport: Transport) -> Self {
        Self {
            objects: ObjectsClient::new(transport.clone()).max_decoding_message_size(256 << 20),
            cluster: ClusterClient::new(transport),
            fence: None,
        }
    }

    /// This client with every write fenced by the lease `source` holds.
    pub fn fenced(mut self, source: Option<LeaseSource>) -> Self {
        self.fence = source;
        self
    }

    fn write<T>(&self, req: T) -> Result<tonic::Request<T>, Status> {
        attach(req, self.fence.as_ref())
    }

    pub async fn create(&self, json: Bytes) -> Result<(Bytes, Revision), StoreError> {
        let r = self
            .send_create(WriteRequest {
                object: json,
                ..Default::default()
            })
            .await
            .map_err(|s| from_status(&s))?;
        Ok((r.object, Revision(r.revision)))
    }

    pub async fn update(&self, json: Bytes) -> Result<(Bytes, Revision), StoreError> {
        let r = self
            .send_update(WriteRequest {
                object: json,
                ..Default::default()
            })
            .await
            .map_err(|s| from_status(&s))?;
        Ok((r.object, Revision(r.revision)))
    }

    // The `send_*` calls take the whole request (subresource, field manager,
    // dry run, delete options) and answer the raw gRPC status: the typed client
    // (`crate::client`) reads registry errors out of it.

    pub async fn send_create(&self, req: WriteRequest) -> Result<ObjectReply, Status> {
        Ok(self
            .objects
            .clone()
            .create(self.write(req)?)
            .await?
            .into_inner())
    }

    pub async fn send_update(&self, req: WriteRequest) -> Result<ObjectReply, Status> {
        Ok(self
            .objects
            .clone()
            .update(self.write(req)?)
            .await?
            .into_inner())
    }

    pub async fn send_patch(&self, req: PatchRequest) -> Result<ObjectReply, Status> {
        Ok(self
            .objects
            .clone()
            .patch(self.write(req)?)
            .await?
            .into_inner())
    }

    pub async fn send_delete(&self, req: DeleteRequest) -> Result<ObjectReply, Status> {
        Ok(self
            .objects
            .clone()
            .delete(self.write(req)?)
            .await?
            .into_inner())
    }

    /// An atomic batch: every op applies or none does.
    pub async fn send_txn(&self, req: TxnRequest) -> Result<TxnReply, Status> {
        Ok(self
            .objects
            .clone()
            .txn(self.write(req)?)
            .await?
            .into_inner())
    }

    /// Independent writes in one request, each with its own answer.
    pub async fn send_batch(&self, req: BatchRequest) -> Result<BatchReply, Status> {
        Ok(self
            .objects
            .clone()
            .batch(self.write(req)?)
            .await?
            .into_inner())
    }

    pub async fn send_get(&self, req: GetRequest) -> Result<ObjectReply, Status> {
        Ok(self.objects.clone().get(req).await?.into_inner())
    }

    pub async fn send_list(
        &self,
        req: ListRequest,
    ) -> Result<balsa_proto::objects::ListReply, Status> {
        Ok(self.objects.clone().list(req).await?.into_inner())
    }

    pub async fn send_watch(
        &self,
        req: WatchRequest,
    ) -> Result<tonic::Streaming<WatchReply>, Status> {
        Ok(self.objects.clone().watch(req).await?.into_inner())
    }

    pub async fn get(
        &self,
        key: &ResourceKey,
        local: bool,
    ) -> Result<(Bytes, Revision), StoreError> {
        let req = GetRequest {
            r#ref: Some(object_ref(key)),
            local,
        };
        let r = self
            .objects
            .clone()
            .get(req)
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        Ok((r.object, Revision(r.revision)))
    }

    pub async fn list(
        &self,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
        limit: u64,
        continue_token: Option<String>,
    ) -> Result<Page, StoreError> {
        let req = ListRequest {
            group: group.into(),
            resource: resource.into(),
            namespace: namespace.unwrap_or_default().into(),
            limit,
            continue_token: continue_token.unwrap_or_default(),
            revision: 0,
            local: false,
        };
        let r = self
            .objects
            .clone()
            .list(req)
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        Ok(Page {
            items: r.items,
            revision: Revision(r.revision),
            continue_token: (!r.continue_token.is_empty()).then_some(r.continue_token),
        })
    }

    pub async fn delete(
        &self,
        key: &ResourceKey,
        uid: Option<String>,
        revision: Option<Revision>,
    ) -> Result<(Bytes, Revision), StoreError> {
        let req = DeleteRequest {
            r#ref: Some(object_ref(key)),
            uid: uid.unwrap_or_default(),
            revision: revision.map_or(0, |r| r.0),
            ..Default::default()
        };
        let r = self.send_delete(req).await.map_err(|s| from_status(&s))?;
        Ok((r.object, Revision(r.revision)))
    }

    pub async fn watch(
        &self,
        req: WatchRequest,
    ) -> Result<impl Stream<Item = Result<WatchReply, StoreError>>, StoreError> {
        let stream = self
            .objects
            .clone()
            .watch(req)
            .await
            .map_err(|s| from_status(&s))?
            .into_inner();
        Ok(stream.map(|item| item.map_err(|s| from_status(&s))))
    }

    pub async fn cluster_status(&self) -> Result<ClusterStatus, StoreError> {
        let r = self
            .cluster
            .clone()
            .status(ClusterStatusRequest {})
            .await
            .map_err(|s| from_status(&s))?;
        Ok(r.into_inner())
    }

    pub async fn add_member(
        &self,
        id: u64,
        peer_addr: &str,
        api_addr: &str,
        promote: bool,
    ) -> Result<ClusterStatus, StoreError> {
        let req = AddMemberRequest {
            id,
            peer_addr: peer_addr.into(),
            api_addr: api_addr.into(),
            promote,
        };
        let r = self
            .cluster
            .clone()
            .add_member(req)
            .await
            .map_err(|s| from_status(&s))?;
        Ok(r.into_inner())
    }

    pub async fn remove_member(&self, id: u64) -> Result<ClusterStatus, StoreError> {
        let r = self
            .cluster
            .clone()
            .remove_member(RemoveMemberRequest { id })
            .await
            .map_err(|s| from_status(&s))?;
        Ok(r.into_inner())
    }
}
