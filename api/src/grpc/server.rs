//! The Objects service: Kubernetes-style JSON objects over gRPC, backed by any
//! `Store`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use balsa_proto::objects::objects_server::{Objects, ObjectsServer};
use balsa_proto::objects::{
    batch_op, batch_result, txn_op, BatchError, BatchOp, BatchReply, BatchRequest, BatchResult,
    DeleteRequest, EventType as WireEventType, GetRequest, ListReply, ListRequest, ObjectRef,
    ObjectReply, PatchRequest, PatchType as WirePatchType, TxnReply, TxnRequest, WatchReply,
    WatchRequest, WriteRequest,
};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::status::{api_to_status, to_status};
use crate::registry::{
    kinds, ApiError, DeleteOptions, Kind, Part, PatchType, Registry, ScaleChange, WriteOptions,
};
use crate::resource::ClientObject;
use crate::store::{
    DeletePreconditions, EventType, KeyPrefix, ListOptions, Object, Op, ReadMode, ResourceKey,
    Revision, Store, StoreError, WatchEvent, WatchOptions,
};

/// Built-in kinds are written through the registry (the same validation and
/// defaults as the REST API); other kinds are stored as given. Reads and
/// watches go to the store directly: they return what was stored.
pub struct ObjectsService {
    store: Arc<dyn Store>,
    registry: Registry,
}

pub fn server(registry: Registry) -> ObjectsServer<ObjectsService> {
    let store = registry.store().clone();
    ObjectsServer::new(ObjectsService { store, registry })
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(256 << 20)
}

/// What a write request is served through: the service's own store and
/// registry, or fenced ones when it carries a fence (see `fence`).
struct Scope {
    store: Arc<dyn Store>,
    registry: Registry,
}

impl ObjectsService {
    fn scope(&self, md: &tonic::metadata::MetadataMap) -> Result<Scope, Status> {
        Ok(match super::fence::read(md)? {
            None => Scope {
                store: self.store.clone(),
                registry: self.registry.clone(),
            },
            Some(fence) => {
                let registry = self.registry.fenced(fence);
                Scope {
                    store: registry.store().clone(),
                    registry,
                }
            }
        })
    }
}

fn reply(obj: Object) -> Response<ObjectReply> {
    Response::new(ObjectReply {
        revision: obj.revision.0,
        object: obj.data,
    })
}

fn status(e: StoreError) -> Status {
    to_status(&e)
}

fn key_of(r: Option<ObjectRef>) -> Result<ResourceKey, Status> {
    let r = r.ok_or_else(|| Status::invalid_argument("ref is required"))?;
    let key = ResourceKey::new(
        r.group,
        r.resource,
        (!r.namespace.is_empty()).then_some(r.namespace.as_str()),
        r.name,
    );
    key.validate().map_err(status)?;
    Ok(key)
}

fn delete_op(req: DeleteRequest) -> Result<Op, Status> {
    Ok(Op::Delete {
        key: key_of(req.r#ref)?,
        preconditions: DeletePreconditions {
            uid: (!req.uid.is_empty()).then_some(req.uid),
            revision: (req.revision != 0).then_some(Revision(req.revision)),
        },
    })
}

fn create_op(json: &[u8]) -> Result<Op, StoreError> {
    let (key, value) = ClientObject::parse(json)?.for_create()?;
    Ok(Op::Create { key, value })
}

fn update_op(json: &[u8]) -> Result<Op, StoreError> {
    let (key, value, expected) = ClientObject::parse(json)?.for_update()?;
    Ok(Op::Update {
        key,
        value,
        expected,
    })
}

fn read_mode(local: bool) -> ReadMode {
    if local {
        ReadMode::Local
    } else {
        ReadMode::Linearizable
    }
}

fn prefix_of(
    group: String,
    resource: String,
    namespace: String,
    name: String,
) -> Result<KeyPrefix, Status> {
    let prefix = KeyPrefix {
        group,
        resource,
        namespace: (!namespace.is_empty()).then_some(namespace),
        name: (!name.is_empty()).then_some(name),
    };
    prefix.validate().map_err(status)?;
    Ok(prefix)
}

fn wire_event(e: &WatchEvent) -> WatchReply {
    match e {
        WatchEvent::Event(ev) => WatchReply {
            r#type: match ev.kind {
                EventType::Added => WireEventType::Added,
                EventType::Modified => WireEventType::Modified,
                EventType::Deleted => WireEventType::Deleted,
            } as i32,
            object: ev.object.data.clone(),
            revision: ev.revision.0,
        },
        WatchEvent::Bookmark(rev) => WatchReply {
            r#type: WireEventType::Bookmark as i32,
            object: Default::default(),
            revision: rev.0,
        },
    }
}

/// The built-in kind of a client's JSON object, with the object parsed.
fn builtin(json: &[u8]) -> Option<(&'static Kind, serde_json::Value)> {
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    let group = v["apiVersion"]
        .as_str()?
        .rsplit_once('/')
        .map_or("", |(g, _)| g);
    let kind = kinds::by_kind(group, v["kind"].as_str()?)?;
    Some((kind, v))
}

fn api_status(e: ApiError) -> Status {
    api_to_status(&e)
}

fn pod_kind() -> &'static Kind {
    kinds::by_kind("", "Pod").expect("Pod is a built-in kind")
}

/// A subresource write on a kind that has no such subresource.
fn no_subresource(kind: &Kind, sub: &str) -> Status {
    Status::invalid_argument(format!(
        "{} has no subresource {sub:?} that can be written this way",
        kind.plural
    ))
}

/// Namespace and name from an object's metadata.
fn named(v: &serde_json::Value) -> (Option<String>, String) {
    let meta = &v["metadata"];
    (
        meta["namespace"].as_str().map(str::to_string),
        meta["name"].as_str().unwrap_or_default().to_string(),
    )
}

fn writer(manager: String, dry_run: bool) -> WriteOptions {
    WriteOptions {
        manager: if manager.is_empty() {
            "balsa".into()
        } else {
            manager
        },
        dry_run,
        ..Default::default()
    }
}

/// A pod subresource created by POST in Kubernetes: `binding` or `eviction`.
/// The body (a Binding or an Eviction) names the pod.
async fn create_pod_subresource(
    registry: &Registry,
    sub: &str,
    json: &[u8],
    opts: &WriteOptions,
    revision_only: bool,
) -> Result<Response<ObjectReply>, Status> {
    let v: serde_json::Value = serde_json::from_slice(json)
        .map_err(|e| Status::invalid_argument(format!("the object is not JSON: {e}")))?;
    let (ns, name) = named(&v);
    if name.is_empty() {
        return Err(Status::invalid_argument(format!(
            "a {sub} names its pod in metadata.name"
        )));
    }
    match sub {
        "binding" => {
            let pod = registry
                .bind(ns.as_deref(), &name, &v, opts)
                .await
                .map_err(api_status)?;
            Ok(written(&pod, revision_only))
        }
        "eviction" => {
            registry
                .evict(ns.as_deref(), &name, &v)
                .await
                .map_err(api_status)?;
            Ok(Response::new(ObjectReply::default()))
        }
        other => Err(no_subresource(pod_kind(), other)),
    }
}

fn patch_type(ty: i32) -> Result<PatchType, Status> {
    match WirePatchType::try_from(ty) {
        Ok(WirePatchType::Json) => Ok(PatchType::Json),
        Ok(WirePatchType::Merge) => Ok(PatchType::Merge),
        Ok(WirePatchType::Strategic) => Ok(PatchType::StrategicMerge),
        Ok(WirePatchType::Apply) => Ok(PatchType::Apply),
        _ => Err(Status::invalid_argument(
            "a patch's type must be JSON, MERGE, STRATEGIC or APPLY",
        )),
    }
}

/// A patch document: JSON, or YAML for server-side apply.
fn patch_body(ty: PatchType, body: &[u8]) -> Result<serde_json::Value, Status> {
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(e) if ty != PatchType::Apply => Err(Status::invalid_argument(format!(
            "the patch is not valid JSON: {e}"
        ))),
        Err(_) => std::str::from_utf8(body)
            .map_err(|_| Status::invalid_argument("the apply patch is not UTF-8"))
            .and_then(|text| {
                serde_saphyr::from_str(text).map_err(|e| {
                    Status::invalid_argument(format!("the apply patch is not valid YAML: {e}"))
                })
            }),
    }
}

/// The answer to a write of `v`: its revision, and the object itself unless
/// the caller asked for the revision only (then it is not encoded at all).
fn written(v: &serde_json::Value, revision_only: bool) -> Response<ObjectReply> {
    let revision = v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or(0);
    let object = if revision_only {
        Default::default()
    } else {
        serde_json::to_vec(v).unwrap_or_default().into()
    };
    Response::new(ObjectReply { revision, object })
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchReply, Status>> + Send>>;

/// The most ops one Batch may carry.
pub const MAX_BATCH_OPS: usize = 1_000;

/// `inner` as a request of its own, with the batch's metadata (its fence).
fn part_of<T>(md: &tonic::metadata::MetadataMap, inner: T) -> Request<T> {
    let mut req = Request::new(inner);
    *req.metadata_mut() = md.clone();
    req
}

fn batch_result(outcome: Result<Response<ObjectReply>, Status>) -> BatchResult {
    BatchResult {
        result: Some(match outcome {
            Ok(reply) => batch_result::Result::Ok(reply.into_inner()),
            Err(s) => batch_result::Result::Error(BatchError {
                code: s.code() as i32,
                message: s.message().to_string(),
                details: s.details().to_vec().into(),
            }),
        }),
    }
}

impl ObjectsService {
    async fn batch_op(&self, md: &tonic::metadata::MetadataMap, op: BatchOp) -> BatchResult {
        let outcome = match op.op {
            Some(batch_op::Op::Create(w)) => self.create(part_of(md, w)).await,
            Some(batch_op::Op::Update(w)) => self.update(part_of(md, w)).await,
            Some(batch_op::Op::Patch(p)) => self.patch(part_of(md, p)).await,
            None => Err(Status::invalid_argument(
                "a batch op must be create, update or patch",
            )),
        };
        batch_result(outcome)
    }
}

#[tonic::async_trait]
impl Objects for ObjectsService {
    async fn create(
        &self,
        request: Request<WriteRequest>,
    ) -> Result<Response<ObjectReply>, Status> {
        let scope = self.scope(request.metadata())?;
        let req = request.into_inner();
        let opts = writer(req.field_manager, req.dry_run);
        let json = req.object;
        if !req.subresource.is_empty() {
            return create_pod_subresource(
                &scope.registry,
                &req.subresource,
                &json,
                &opts,
                req.revision_only,
            )
            .await;
        }
        if let Some((kind, v)) = builtin(&json) {
            let ns = v["metadata"]["namespace"].as_str().map(str::to_string);
            let w = scope
                .registry
                .create(kind, ns.as_deref(), v, &opts)
                .await
                .map_err(api_status)?;
            return Ok(written(&w.object, req.revision_only));
        }
        if opts.dry_run {
            return Err(Status::invalid_argument(
                "dry run is only for built-in kinds",
            ));
        }
        let Op::Create { key, value } = create_op(&json).map_err(status)? else {
            unreachable!("create_op makes creates")
        };
        scope
            .store
            .create(key, value)
            .await
            .map(reply)
            .map_err(status)
    }

    async fn update(
        &self,
        request: Request<WriteRequest>,
    ) -> Result<Response<ObjectReply>, Status> {
        let scope = self.scope(request.metadata())?;
        let req = request.into_inner();
        let opts = writer(req.field_manager, req.dry_run);
        let json = req.object;
        if let Some((kind, v)) = builtin(&json) {
            let part = match req.subresource.as_str() {
                "" => Part::Main,
                "status" if kind.status => Part::Status,
                other => return Err(no_subresource(kind, other)),
            };
            let (ns, name) = named(&v);
            let w = scope
                .registry
                .update(kind, ns.as_deref(), &name, v, part, &opts)
                .await
                .map_err(api_status)?;
            return Ok(written(&w.object, req.revision_only));
        }
        if !req.subresource.is_empty() || opts.dry_run {
            return Err(Status::invalid_argument(
                "subresources and dry run are only for built-in kinds",
            ));
        }
        let Op::Update {
            key,
            value,
            expected,
        } = update_op(&json).map_err(status)?
        else {
            unreachable!("update_op makes updates")
        };
        scope
            .store
            .update(key, value, expected)
            .await
            .map(reply)
            .map_err(status)
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<ObjectReply>, Status> {
        let req = request.into_inner();
        let key = key_of(req.r#ref)?;
        self.store
            .get(&key, read_mode(req.local))
            .await
            .map(reply)
            .map_err(status)
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListReply>, Status> {
        let req = request.into_inner();
        let prefix = prefix_of(req.group, req.resource, req.namespace, String::new())?;
        let opts = ListOptions {
            limit: (req.limit > 0).then_some(req.limit as usize),
            continue_token: (!req.continue_token.is_empty()).then_some(req.continue_token),
            revision: (req.revision > 0).then_some(Revision(req.revision)),
            read: read_mode(req.local),
        };
        let page = self.store.list(&prefix, opts).await.map_err(status)?;
        Ok(Response::new(ListReply {
            items: page.items.into_iter().map(|o| o.data).collect(),
            revision: page.revision.0,
            continue_token: page.continue_token.unwrap_or_default(),
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteRequest>,
    ) -> Result<Response<ObjectReply>, Status> {
        let scope = self.scope(request.metadata())?;
        let req = request.into_inner();
        let grace_period = req.grace_period_seconds;
        let propagation = Some(req.propagation_policy.clone()).filter(|p| !p.is_empty());
        if let Some(p) = &propagation {
            if !["Orphan", "Background", "Foreground"].contains(&p.as_str()) {
                return Err(Status::invalid_argument(format!(
                    "propagationPolicy: Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
                )));
            }
        }
        let Op::Delete { key, preconditions } = delete_op(req)? else {
            unreachable!("delete_op makes deletes")
        };
        if let Some(kind) = kinds::by_resource(&key.group, &key.resource) {
            let opts = DeleteOptions {
                uid: preconditions.uid,
                resource_version: preconditions.revision.map(|r| r.to_string()),
                grace_period,
                propagation,
                ..Default::default()
            };
            let v = scope
                .registry
                .delete(kind, key.namespace.as_deref(), &key.name, &opts)
                .await
                .map_err(api_status)?;
            return Ok(written(&v, false));
        }
        scope
            .store
            .delete(key, preconditions)
            .await
            .map(reply)
            .map_err(status)
    }

    async fn patch(&self, request: Request<PatchRequest>) -> Result<Response<ObjectReply>, Status> {
        let scope = self.scope(request.metadata())?;
        let req = request.into_inner();
        let key = key_of(req.r#ref)?;
        let kind = kinds::by_resource(&key.group, &key.resource).ok_or_else(|| {
            Status::invalid_argument(format!(
                "{} is not a built-in kind; only those can be patched",
                key.resource
            ))
        })?;
        let ty = patch_type(req.r#type)?;
        let patch = patch_body(ty, &req.patch)?;
        if ty == PatchType::Apply && req.field_manager.is_empty() {
            return Err(Status::invalid_argument(
                "fieldManager: Required value: is required for apply patch",
            ));
        }
        let mut opts = writer(req.field_manager, req.dry_run);
        if req.force && ty != PatchType::Apply {
            return Err(Status::invalid_argument(
                "force may only be used with server-side apply",
            ));
        }
        opts.force = req.force;
        let ns = key.namespace.as_deref();
        let part = match req.subresource.as_str() {
            "" => Part::Main,
            "status" if kind.status => Part::Status,
            "scale" if kind.scale => {
                let scale = scope
                    .registry
                    .set_scale(kind, ns, &key.name, ScaleChange::Patch(ty, &patch), &opts)
                    .await
                    .map_err(api_status)?;
                return Ok(written(&scale, req.revision_only));
            }
            other => return Err(no_subresource(kind, other)),
        };
        let w = scope
            .registry
            .patch(kind, ns, &key.name, (ty, &patch), part, &opts)
            .await
            .map_err(api_status)?;
        Ok(written(&w.object, req.revision_only))
    }

    async fn txn(&self, request: Request<TxnRequest>) -> Result<Response<TxnReply>, Status> {
        let scope = self.scope(request.metadata())?;
        let opts = writer(String::new(), false);
        let mut ops = Vec::new();
        let mut charges = Vec::new();
        for op in request.into_inner().ops {
            ops.push(match op.op {
                Some(txn_op::Op::Create(json)) => match builtin(&json) {
                    Some((kind, v)) => {
                        let mut create = scope
                            .registry
                            .txn_create(kind, v, &opts)
                            .await
                            .map_err(api_status)?;
                        // The create first (its object is the reply's),
                        // its quota charges after every op.
                        charges.extend(create.split_off(1));
                        create.remove(0)
                    }
                    None => create_op(&json).map_err(status)?,
                },
                Some(txn_op::Op::Update(json)) => match builtin(&json) {
                    Some((kind, v)) => scope
                        .registry
                        .txn_update(kind, v, &opts)
                        .await
                        .map_err(api_status)?,
                    None => update_op(&json).map_err(status)?,
                },
                Some(txn_op::Op::Delete(d)) => {
                    let Op::Delete { key, preconditions } = delete_op(d)? else {
                        unreachable!("delete_op makes deletes")
                    };
                    match kinds::by_resource(&key.group, &key.resource) {
                        Some(kind) => scope
                            .registry
                            .txn_delete(kind, key.namespace.as_deref(), &key.name, preconditions)
                            .await
                            .map_err(api_status)?,
                        None => Op::Delete { key, preconditions },
                    }
                }
                None => {
                    return Err(Status::invalid_argument(
                        "a txn op must be create, update or delete",
                    ))
                }
            });
        }
        let asked = ops.len();
        ops.extend(charges);
        Registry::txn_check(&ops).map_err(api_status)?;
        let (rev, mut objects) = scope.store.txn(ops).await.map_err(status)?;
        objects.truncate(asked);
        Ok(Response::new(TxnReply {
            revision: rev.0,
            objects: objects.into_iter().map(|o| o.data).collect(),
        }))
    }

    async fn batch(&self, request: Request<BatchRequest>) -> Result<Response<BatchReply>, Status> {
        let (md, _, req) = request.into_parts();
        if req.ops.len() > MAX_BATCH_OPS {
            return Err(Status::invalid_argument(format!(
                "a batch carries at most {MAX_BATCH_OPS} ops, not {}",
                req.ops.len()
            )));
        }
        // All at once: the writes reach the store together and are proposed
        // to Raft together.
        let results =
            futures::future::join_all(req.ops.into_iter().map(|op| self.batch_op(&md, op))).await;
        Ok(Response::new(BatchReply { results }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let req = request.into_inner();
        let prefix = prefix_of(req.group, req.resource, req.namespace, req.name)?;
        let bookmark_interval = (req.bookmark_interval_ms > 0)
            .then(|| Duration::from_millis(req.bookmark_interval_ms.into()));
        // Without a starting revision: the current objects as ADDED first, all at
        // one revision, then the changes after it.
        let (initial, after) = match req.after {
            Some(after) => (Vec::new(), Revision(after)),
            None => {
                let mut items = Vec::new();
                let mut opts = ListOptions::default();
                let rev = loop {
                    let page = self
                        .store
                        .list(&prefix, opts.clone())
                        .await
                        .map_err(status)?;
                    items.extend(page.items);
                    match page.continue_token {
                        Some(t) => opts.continue_token = Some(t),
                        None => break page.revision,
                    }
                };
                let initial: Vec<_> = items
                    .into_iter()
                    .map(|o| WatchReply {
                        r#type: WireEventType::Added as i32,
                        revision: o.revision.0,
                        object: o.data,
                    })
                    .collect();
                (initial, rev)
            }
        };
        let events = self
            .store
            .watch(
                &prefix,
                WatchOptions {
                    after,
                    bookmark_interval,
                },
            )
            .await
            .map_err(status)?;
        let live = events.map(|item| item.map(|e| wire_event(&e)).map_err(status));
        let stream = futures::stream::iter(initial.into_iter().map(Ok)).chain(live);
        Ok(Response::new(Box::pin(stream)))
    }
}
