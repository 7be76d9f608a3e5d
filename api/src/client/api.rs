//! `Api<K>`: one kind's objects, typed with the k8s-openapi models, through
//! the registry on any master (the same defaults and validation as the REST
//! API).

use std::future::Future;
use std::marker::PhantomData;

use balsa_proto::objects::{
    batch_op, BatchOp, DeleteRequest, GetRequest, ListRequest, ObjectReply, PatchRequest,
    PatchType as WirePatchType, WatchRequest, WriteRequest,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tonic::Status;

use super::endpoints::Client;
use crate::grpc::client::{object_ref, Client as Channel};
use crate::grpc::status::api_from_status;
use crate::registry::{kinds, ApiError};
use crate::store::{ResourceKey, Revision};

/// What a typed object must be: a k8s-openapi resource with ObjectMeta.
pub trait Resource:
    k8s_openapi::Resource
    + k8s_openapi::Metadata<Ty = ObjectMeta>
    + Serialize
    + DeserializeOwned
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<K> Resource for K where
    K: k8s_openapi::Resource
        + k8s_openapi::Metadata<Ty = ObjectMeta>
        + Serialize
        + DeserializeOwned
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Every object of a kind, read at one revision.
#[derive(Debug, Clone)]
pub struct ObjectList<K> {
    pub items: Vec<K>,
    pub revision: Revision,
}

#[derive(Debug, Clone, Default)]
pub struct PostParams {
    pub dry_run: bool,
    /// For managedFields; "balsa" when empty.
    pub field_manager: String,
}

#[derive(Debug, Clone, Default)]
pub struct PatchParams {
    pub dry_run: bool,
    pub field_manager: String,
    /// Server-side apply only: take over fields other managers own.
    pub force: bool,
}

impl PatchParams {
    pub fn apply(manager: &str) -> Self {
        Self {
            field_manager: manager.into(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone)]
pub enum Patch {
    Json(Value),
    Merge(Value),
    Strategic(Value),
    Apply(Value),
}

#[derive(Debug, Clone, Default)]
pub struct DeleteParams {
    /// Unset: the object's own grace period (pods); 0 deletes at once.
    pub grace_period_seconds: Option<i64>,
    /// "Orphan", "Background" or "Foreground".
    pub propagation_policy: Option<String>,
    pub uid: Option<String>,
    pub revision: Option<Revision>,
}

pub struct Api<K> {
    client: Client,
    namespace: Option<String>,
    group: &'static str,
    plural: &'static str,
    namespaced: bool,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Api<K> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            namespace: self.namespace.clone(),
            group: self.group,
            plural: self.plural,
            namespaced: self.namespaced,
            kind: PhantomData,
        }
    }
}

fn decode<K: DeserializeOwned>(bytes: &[u8]) -> Result<K, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::internal(format!(
            "the master answered an object this client cannot read: {e}"
        ))
    })
}

impl<K: Resource> Api<K> {
    /// Objects in every namespace (or the cluster-scoped kind's objects).
    pub fn all(client: Client) -> Self {
        let kind = kinds::by_kind(K::GROUP, K::KIND);
        Self {
            client,
            namespace: None,
            group: K::GROUP,
            plural: K::URL_PATH_SEGMENT,
            namespaced: kind.is_none_or(|k| k.namespaced),
            kind: PhantomData,
        }
    }

    /// Objects in one namespace.
    pub fn namespaced(client: Client, namespace: &str) -> Self {
        Self {
            namespace: Some(namespace.to_string()),
            ..Self::all(client)
        }
    }

    /// The same kind in another namespace.
    pub fn within(&self, namespace: &str) -> Self {
        Self::namespaced(self.client.clone(), namespace)
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    pub fn is_namespaced(&self) -> bool {
        self.namespaced
    }

    pub(crate) fn watch_request(&self, after: Option<Revision>, bookmark_ms: u32) -> WatchRequest {
        WatchRequest {
            group: self.group.into(),
            resource: self.plural.into(),
            namespace: self.namespace.clone().unwrap_or_default(),
            name: String::new(),
            after: after.map(|r| r.0),
            bookmark_interval_ms: bookmark_ms,
        }
    }

    fn key(&self, name: &str) -> Result<ResourceKey, ApiError> {
        let ns = if self.namespaced {
            Some(self.namespace.as_deref().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{} {name:?}: a namespaced kind needs Api::namespaced",
                    self.plural
                ))
            })?)
        } else {
            None
        };
        Ok(ResourceKey::new(self.group, self.plural, ns, name))
    }

    /// The object as JSON, in this Api's namespace unless it names one.
    fn body(&self, obj: &K) -> Result<bytes::Bytes, ApiError> {
        let mut v = serde_json::to_value(obj)
            .map_err(|e| ApiError::bad_request(format!("the object cannot be encoded: {e}")))?;
        if let (true, Some(ns)) = (self.namespaced, &self.namespace) {
            if v["metadata"]["namespace"].is_null() {
                v["metadata"]["namespace"] = json!(ns);
            }
        }
        serde_json::to_vec(&v)
            .map(Into::into)
            .map_err(|e| ApiError::bad_request(format!("the object cannot be encoded: {e}")))
    }

    /// Runs one call on the current master; a transport failure moves the
    /// client to the next master. With `retry`, the call is made once more
    /// there (for reads, which are safe to repeat).
    async fn call<T, F, Fut>(&self, retry: bool, f: F) -> Result<T, ApiError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let attempts = if retry { 2 } else { 1 };
        let mut last = None;
        for _ in 0..attempts {
            let channel = self.client.channel().await?;
            match f(channel).await {
                Ok(v) => return Ok(v),
                Err(s) => {
                    self.client.failed(&s);
                    let transport = super::endpoints::is_transport(&s);
                    last = Some(api_from_status(&s));
                    if !transport {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| ApiError::internal("no attempt was made")))
    }

    pub async fn get(&self, name: &str) -> Result<K, ApiError> {
        self.get_from(name, false).await
    }

    /// The object as the replica answering has applied it, without a
    /// read-index round trip (`resourceVersion=0`): possibly a little stale.
    pub async fn get_local(&self, name: &str) -> Result<K, ApiError> {
        self.get_from(name, true).await
    }

    async fn get_from(&self, name: &str, local: bool) -> Result<K, ApiError> {
        let r = object_ref(&self.key(name)?);
        let reply = self
            .call(true, |c| {
                let r = r.clone();
                async move {
                    c.send_get(GetRequest {
                        r#ref: Some(r),
                        local,
                    })
                    .await
                }
            })
            .await?;
        decode(&reply.object)
    }

    /// `None` when there is no such object.
    pub async fn get_opt(&self, name: &str) -> Result<Option<K>, ApiError> {
        match self.get(name).await {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.code() == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every object (in this Api's namespace), page by page at one revision.
    pub async fn list(&self) -> Result<ObjectList<K>, ApiError> {
        self.list_decoded(decode).await
    }

    /// As `list`, without each object's managedFields (for a cache; see
    /// `managed_fields`).
    pub async fn list_for_cache(&self) -> Result<ObjectList<K>, ApiError> {
        self.list_decoded(|b| decode(&super::managed_fields::without_managed_fields(b)))
            .await
    }

    async fn list_decoded(
        &self,
        decode: impl Fn(&[u8]) -> Result<K, ApiError>,
    ) -> Result<ObjectList<K>, ApiError> {
        let mut items = Vec::new();
        let mut token = String::new();
        loop {
            let req = ListRequest {
                group: self.group.into(),
                resource: self.plural.into(),
                namespace: self.namespace.clone().unwrap_or_default(),
                limit: 500,
                continue_token: token.clone(),
                revision: 0,
                local: false,
            };
            let page = self
                .call(true, |c| {
                    let req = req.clone();
                    async move { c.send_list(req).await }
                })
                .await?;
            for item in &page.items {
                items.push(decode(item)?);
            }
            if page.continue_token.is_empty() {
                return Ok(ObjectList {
                    items,
                    revision: Revision(page.revision),
                });
            }
            token = page.continue_token;
        }
    }

    async fn write(
        &self,
        create: bool,
        obj: &K,
        subresource: &str,
        pp: &PostParams,
    ) -> Result<K, ApiError> {
        decode(
            &self
                .send_write(create, obj, subresource, pp, false)
                .await?
                .object,
        )
    }

    fn write_request(
        &self,
        obj: &K,
        subresource: &str,
        pp: &PostParams,
        revision_only: bool,
    ) -> Result<WriteRequest, ApiError> {
        Ok(WriteRequest {
            object: self.body(obj)?,
            subresource: subresource.into(),
            field_manager: pp.field_manager.clone(),
            dry_run: pp.dry_run,
            revision_only,
        })
    }

    async fn send_write(
        &self,
        create: bool,
        obj: &K,
        subresource: &str,
        pp: &PostParams,
        revision_only: bool,
    ) -> Result<ObjectReply, ApiError> {
        let req = self.write_request(obj, subresource, pp, revision_only)?;
        self.call(false, |c| {
            let req = req.clone();
            async move {
                if create {
                    c.send_create(req).await
                } else {
                    c.send_update(req).await
                }
            }
        })
        .await
    }

    pub async fn create(&self, obj: &K, pp: &PostParams) -> Result<K, ApiError> {
        self.write(true, obj, "", pp).await
    }

    /// `create`, answering only the revision the object was created at: the
    /// master does not encode the object, nor the caller decode it.
    pub async fn create_revision(&self, obj: &K, pp: &PostParams) -> Result<u64, ApiError> {
        Ok(self.send_write(true, obj, "", pp, true).await?.revision)
    }

    /// Replaces the object; with `metadata.resourceVersion` set, only if it
    /// is still at that version (409 Conflict otherwise).
    pub async fn replace(&self, obj: &K, pp: &PostParams) -> Result<K, ApiError> {
        self.write(false, obj, "", pp).await
    }

    /// Replaces the status only (the status subresource).
    pub async fn replace_status(&self, obj: &K, pp: &PostParams) -> Result<K, ApiError> {
        self.write(false, obj, "status", pp).await
    }

    async fn send_patch(
        &self,
        name: &str,
        subresource: &str,
        pp: &PatchParams,
        patch: &Patch,
    ) -> Result<K, ApiError> {
        let reply = self
            .patch_reply(name, subresource, pp, patch, false)
            .await?;
        decode(&reply.object)
    }

    fn patch_request(
        &self,
        name: &str,
        subresource: &str,
        pp: &PatchParams,
        patch: &Patch,
        revision_only: bool,
    ) -> Result<PatchRequest, ApiError> {
        let (ty, body) = match patch {
            Patch::Json(v) => (WirePatchType::Json, v),
            Patch::Merge(v) => (WirePatchType::Merge, v),
            Patch::Strategic(v) => (WirePatchType::Strategic, v),
            Patch::Apply(v) => (WirePatchType::Apply, v),
        };
        Ok(PatchRequest {
            r#ref: Some(object_ref(&self.key(name)?)),
            r#type: ty as i32,
            patch: serde_json::to_vec(body).unwrap_or_default().into(),
            subresource: subresource.into(),
            field_manager: pp.field_manager.clone(),
            force: pp.force,
            dry_run: pp.dry_run,
            revision_only,
        })
    }

    async fn patch_reply(
        &self,
        name: &str,
        subresource: &str,
        pp: &PatchParams,
        patch: &Patch,
        revision_only: bool,
    ) -> Result<ObjectReply, ApiError> {
        let req = self.patch_request(name, subresource, pp, patch, revision_only)?;
        self.call(false, |c| {
            let req = req.clone();
            async move { c.send_patch(req).await }
        })
        .await
    }

    /// `create_revision` as an op for a [`Batcher`](super::Batcher).
    pub fn create_op(&self, obj: &K, pp: &PostParams) -> Result<BatchOp, ApiError> {
        Ok(BatchOp {
            op: Some(batch_op::Op::Create(self.write_request(obj, "", pp, true)?)),
        })
    }

    /// `patch_status_revision` as an op for a [`Batcher`](super::Batcher).
    pub fn patch_status_op(
        &self,
        name: &str,
        pp: &PatchParams,
        patch: &Patch,
    ) -> Result<BatchOp, ApiError> {
        Ok(BatchOp {
            op: Some(batch_op::Op::Patch(
                self.patch_request(name, "status", pp, patch, true)?,
            )),
        })
    }

    pub async fn patch(&self, name: &str, pp: &PatchParams, patch: &Patch) -> Result<K, ApiError> {
        self.send_patch(name, "", pp, patch).await
    }

    pub async fn patch_status(
        &self,
        name: &str,
        pp: &PatchParams,
        patch: &Patch,
    ) -> Result<K, ApiError> {
        self.send_patch(name, "status", pp, patch).await
    }

    /// `patch`, answering only the revision the patched object was written
    /// at (nothing encoded or decoded for the answer).
    pub async fn patch_revision(
        &self,
        name: &str,
        pp: &PatchParams,
        patch: &Patch,
    ) -> Result<u64, ApiError> {
        Ok(self.patch_reply(name, "", pp, patch, true).await?.revision)
    }

    /// `patch_status`, answering only the revision.
    pub async fn patch_status_revision(
        &self,
        name: &str,
        pp: &PatchParams,
        patch: &Patch,
    ) -> Result<u64, ApiError> {
        Ok(self
            .patch_reply(name, "status", pp, patch, true)
            .await?
            .revision)
    }

    /// Deletes the object, or marks it for deletion (finalizers, a pod's
    /// grace period): the answer is the object's last or marked state.
    pub async fn delete(&self, name: &str, dp: &DeleteParams) -> Result<K, ApiError> {
        let req = DeleteRequest {
            r#ref: Some(object_ref(&self.key(name)?)),
            uid: dp.uid.clone().unwrap_or_default(),
            revision: dp.revision.map_or(0, |r| r.0),
            grace_period_seconds: dp.grace_period_seconds,
            propagation_policy: dp.propagation_policy.clone().unwrap_or_default(),
        };
        let reply = self
            .call(false, |c| {
                let req = req.clone();
                async move { c.send_delete(req).await }
            })
            .await?;
        decode(&reply.object)
    }
}

impl Api<Pod> {
    /// Binds the pod to a node (`pods/NAME/binding`); a pod is bound once:
    /// binding one that already has a node is a 409 Conflict. With `uid`,
    /// only that incarnation of the pod is bound.
    pub async fn bind(&self, name: &str, uid: Option<&str>, node: &str) -> Result<Pod, ApiError> {
        decode(&self.post_binding(name, uid, node, false).await?.object)
    }

    /// `bind`, answering only the revision the binding was written at: no
    /// pod decoded, for a caller that learns the bound pod from its watch
    /// (the scheduler).
    pub async fn bind_revision(
        &self,
        name: &str,
        uid: Option<&str>,
        node: &str,
    ) -> Result<u64, ApiError> {
        Ok(self.post_binding(name, uid, node, true).await?.revision)
    }

    async fn post_binding(
        &self,
        name: &str,
        uid: Option<&str>,
        node: &str,
        revision_only: bool,
    ) -> Result<ObjectReply, ApiError> {
        let key = self.key(name)?;
        let binding = binding(name, key.namespace.as_deref(), uid, node);
        self.create_subresource("binding", &binding, revision_only)
            .await
    }

    /// Evicts the pod unless a PodDisruptionBudget forbids it now (429).
    pub async fn evict(&self, name: &str, dp: &DeleteParams) -> Result<(), ApiError> {
        let key = self.key(name)?;
        let eviction = json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": key.namespace},
            "deleteOptions": {
                "gracePeriodSeconds": dp.grace_period_seconds,
                "preconditions": {"uid": dp.uid},
            },
        });
        self.create_subresource("eviction", &eviction, true).await?;
        Ok(())
    }

    async fn create_subresource(
        &self,
        sub: &str,
        body: &Value,
        revision_only: bool,
    ) -> Result<ObjectReply, ApiError> {
        let req = WriteRequest {
            object: serde_json::to_vec(body).unwrap_or_default().into(),
            subresource: sub.into(),
            revision_only,
            ..Default::default()
        };
        self.call(false, |c| {
            let req = req.clone();
            async move { c.send_create(req).await }
        })
        .await
    }
}

/// A `Binding` of pod `name` (of incarnation `uid`, when given) to `node`.
fn binding(name: &str, namespace: Option<&str>, uid: Option<&str>, node: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace, "uid": uid},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    })
}
