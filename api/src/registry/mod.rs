//! The registry: the one place every write and read of a built-in kind goes
//! through, whichever edge it came from (REST or gRPC), so both validate and
//! default identically.
//!
//! ```text
//!  body ─► decode (typed model, unknown fields) ─► for_create / for_update
//!        (identity, defaults, validation, managedFields) ─► Store (CAS)
//! ```
//!
//! `prepare` is pure; this module adds the store round trips: reads for
//! updates and patches, compare-and-swap writes retried on conflict when the
//! client gave no resourceVersion, graceful deletion and finalizers.

mod admission;
pub mod columns;
pub mod error;
pub mod fields;
pub mod immutable;
mod job_policies;
mod job_status;
pub mod kinds;
pub mod limit_range;
mod live_lookup;
mod local_cache;
pub mod names;
mod namespace_gate;
pub mod patch;
pub mod prepare;
pub mod print;
pub mod quantity;
pub mod quota;
pub mod quota_scope;
pub mod rules;
pub mod schema;
pub mod selector;
mod subresources;
pub use subresources::ScaleChange;
mod txn;
pub mod watch;

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

pub use error::{ApiError, Cause, Reason, Subject};
pub use kinds::Kind;
pub use patch::PatchType;
pub use prepare::{FieldValidation, Part};
pub use selector::{FieldSelector, LabelSelector};
pub use watch::{WatchItem, WatchQuery};

use crate::store::{
    DeletePreconditions, Fence, FencedStore, KeyPrefix, ListOptions, Object, Op, ReadMode,
    ResourceKey, Revision, Store, StoreError,
};

/// How many times a write without a client resourceVersion is retried when
/// another writer got in between its read and its compare-and-swap.
const CAS_ATTEMPTS: usize = 16;

#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    /// `?fieldManager=`; kube derives one from the user agent when absent.
    pub manager: String,
    pub validation: FieldValidation,
    /// `?force=true` for server-side apply.
    pub force: bool,
}

/// A write's answer: the object as stored and any warnings for the client.
#[derive(Debug, Clone)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
    /// True when the write created the object (201 rather than 200).
    pub created: bool,
}

#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    /// Orphan, Background or Foreground.
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

/// A list's objects as stored, with where it was read.
#[derive(Debug, Clone)]
pub struct Listed {
    pub items: Vec<Bytes>,
    pub revision: Revision,
    pub continue_token: Option<String>,
}

impl Listed {
    /// `{kind: FooList, apiVersion, metadata}`, without items.
    pub fn envelope(&self, kind: &Kind) -> Value {
        let mut metadata = json!({"resourceVersion": self.revision.to_string()});
        if let Some(token) = &self.continue_token {
            metadata["continue"] = json!(token);
        }
        json!({
            "kind": format!("{}List", kind.kind),
            "apiVersion": kind.api_version(),
            "metadata": metadata,
        })
    }

    /// The whole list as JSON: the envelope with the stored objects spliced
    /// in as they are (a list of 500 objects costs no decoding).
    pub fn to_json(&self, kind: &Kind) -> Vec<u8> {
        let envelope = serde_json::to_vec(&self.envelope(kind)).unwrap_or_default();
        let size = envelope.len() + self.items.iter().map(|b| b.len() + 1).sum::<usize>() + 12;
        let mut out = Vec::with_capacity(size);
        // The envelope is an object: reopen it before its closing brace.
        out.extend_from_slice(&envelope[..envelope.len() - 1]);
        out.extend_from_slice(b",\"items\":[");
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(item);
        }
        out.extend_from_slice(b"]}");
        out
    }
}

#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn Store>,
    /// LimitRange lookups past this replica's state (admission).
    limit_ranges: Arc<live_lookup::LiveLookups>,
    /// Admission's reads of this replica's own state (`local_cache`).
    local: Arc<Local>,
}

/// What admission keeps of this replica's state, per namespace.
struct Local {
    /// Whether the namespace is terminating.
    namespaces: local_cache::LocalCache<bool>,
    quotas: local_cache::LocalCache<Arc<Vec<(Object, Value)>>>,
    limit_ranges: local_cache::LocalCache<Arc<Vec<Value>>>,
}

/// Creates tried for one request whose name the server generates
/// (upstream's RetryGenerateName, on by default since 1.31: 8 in all).
const GENERATE_NAME_ATTEMPTS: usize = 8;

pub fn parse_rv(rv: &str) -> Result<Revision, ApiError> {
    rv.parse()
        .map(Revision)
        .map_err(|_| ApiError::bad_request(format!("Invalid value for resourceVersion: {rv:?}")))
}

pub fn decode_object(obj: &Object) -> Result<Value, ApiError> {
    serde_json::from_slice(&obj.data)
        .map_err(|e| ApiError::internal(format!("stored object {} is not JSON: {e}", obj.key)))
}

/// The object a write of `v` stored, as a read would give it: `v` with the
/// write's `metadata.resourceVersion`, the only change the store makes
/// (`store::canonical`), so the stored bytes are not parsed back. Except
/// where parsing them would not give `v` again: serde_json reads some floats
/// back a bit off their written value, so an object with a float is read from
/// the bytes.
fn as_stored(mut v: Value, stored: &Object) -> Result<Value, ApiError> {
    if has_float(&v) {
        return decode_object(stored);
    }
    let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) else {
        return decode_object(stored);
    };
    meta.insert(
        "resourceVersion".into(),
        Value::String(stored.revision.to_string()),
    );
    debug_assert!(
        decode_object(stored).is_ok_and(|read| read == v),
        "{} as stored differs from the object written",
        stored.key
    );
    Ok(v)
}

/// Puts `new` in place of `current`; whether that changed it.
fn replace(current: &mut Value, new: Value) -> bool {
    if *current == new {
        return false;
    }
    *current = new;
    true
}

fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(items) => items.iter().any(has_float),
        Value::Object(members) => members.values().any(has_float),
        Value::Null | Value::Bool(_) | Value::String(_) => false,
    }
}

fn encode(v: &Value) -> Result<Bytes, ApiError> {
    serde_json::to_vec(v)
        .map(Bytes::from)
        .map_err(|e| ApiError::internal(e.to_string()))
}

impl Registry {
    pub fn new(store: Arc<dyn Store>) -> Self {
        let s = store.as_ref();
        let local = Local {
            namespaces: local_cache::LocalCache::new(s, "", "namespaces"),
            quotas: local_cache::LocalCache::new(s, "", "resourcequotas"),
            limit_ranges: local_cache::LocalCache::new(s, "", "limitranges"),
        };
        Self {
            limit_ranges: Arc::new(live_lookup::LiveLookups::new(live_lookup::LIVE_TTL)),
            local: Arc::new(local),
            store,
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// This registry with every write fenced (see `store::fence`): what a
    /// leader-only control loop's requests are served through.
    pub fn fenced(&self, fence: Fence) -> Self {
        Self {
            store: Arc::new(FencedStore::new(self.store.clone(), fence)),
            limit_ranges: self.limit_ranges.clone(),
            local: self.local.clone(),
        }
    }

    pub fn key(kind: &Kind, ns: Option<&str>, name: &str) -> ResourceKey {
        let ns = if kind.namespaced { ns } else { None };
        ResourceKey::new(kind.group, kind.plural, ns, name)
    }

    pub fn prefix(kind: &Kind, ns: Option<&str>) -> KeyPrefix {
        let p = KeyPrefix::resource(kind.group, kind.plural);
        if kind.namespaced {
            p.in_namespace(ns)
        } else {
            p
        }
    }

    async fn read(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        read: ReadMode,
    ) -> Result<(Object, Value), ApiError> {
        let key = Self::key(kind, ns, name);
        let obj = self
            .store
            .get(&key, read)
            .await
            .map_err(|e| ApiError::from_store(e, prepare::subject(kind, name)))?;
        let v = decode_object(&obj)?;
        Ok((obj, v))
    }

    pub async fn get(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        read: ReadMode,
    ) -> Result<Value, ApiError> {
        Ok(self.read(kind, ns, name, read).await?.1)
    }

    /// Objects may only be created in a namespace that exists and is not
    /// being deleted.
    async fn check_namespace(&self, kind: &Kind, ns: &str) -> Result<(), ApiError> {
        if !kind.namespaced {
            return Ok(());
        }
        let ns_kind = kinds::by_kind("", "Namespace").expect("Namespace is a built-in kind");
        // A local read answers almost always (and is kept until a namespace
        // changes); only a miss needs the round trip.
        let key = Self::key(ns_kind, None, ns);
        let subject = || prepare::subject(ns_kind, ns);
        let local = self
            .local
            .namespaces
            .get_or_read(ns, || async {
                match self.store.get(&key, ReadMode::Local).await {
                    Ok(obj) => namespace_gate::terminating(&obj).map(Some),
                    Err(StoreError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(ApiError::from_store(e, subject())),
                }
            })
            .await?;
        let terminating = match local {
            Some(terminating) => terminating,
            None => {
                let found = self
                    .store
                    .get(&key, ReadMode::Linearizable)
                    .await
                    .map_err(|e| ApiError::from_store(e, subject()))?;
                namespace_gate::terminating(&found)?
            }
        };
        if terminating {
            return Err(ApiError::new(
                Reason::Forbidden,
                format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                ),
            ));
        }
        Ok(())
    }

    pub async fn create(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let (v, warnings) = prepare::decode(kind, body, opts.validation)?;
        if !prepare::generates_name(&v) {
            let v = prepare::for_create(kind, ns, v, &opts.manager)?;
            return self.store_new(kind, v, warnings, opts).await;
        }
        // A generated name may be taken (27^5 suffixes: among 10,000 pods of
        // one ReplicaSet a few creates collide); as upstream's
        // RetryGenerateName, the server draws another, 8 attempts in all.
        let mut attempt = 1;
        loop {
            let new = prepare::for_create(kind, ns, v.clone(), &opts.manager)?;
            match self.store_new(kind, new, warnings.clone(), opts).await {
                Err(e) if e.reason == Reason::AlreadyExists && attempt < GENERATE_NAME_ATTEMPTS => {
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    async fn store_new(
        &self,
        kind: &Kind,
        v: Value,
        warnings: Vec<String>,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let name = prepare::meta_str(&v, "name")
            .unwrap_or_default()
            .to_string();
        let ns = prepare::meta_str(&v, "namespace").map(str::to_string);
        let mut v = v;
        if let (Some(ns), true) = (&ns, kind.namespaced) {
            self.check_namespace(kind, ns).await?;
            self.admit_limits(kind, ns, &mut v).await?;
        }
        let key = Self::key(kind, ns.as_deref(), &name);
        let mut read = ReadMode::Local;
        for _ in 0..CAS_ATTEMPTS {
            // Quota usage is charged in the same batch as the create; a
            // quota that moved since it was read fails the batch, and the
            // next attempt reads it afresh.
            let charges = match (&ns, kind.namespaced) {
                (Some(ns), true) => self.admit_quota(kind, ns, &v, read).await?,
                _ => Vec::new(),
            };
            if opts.dry_run {
                return Ok(Written {
                    object: v,
                    warnings,
                    created: true,
                });
            }
            let charged = !charges.is_empty();
            let mut ops = vec![Op::Create {
                key: key.clone(),
                value: encode(&v)?,
            }];
            ops.extend(charges);
            match self.store.txn(ops).await {
                Ok((_, results)) => {
                    let obj = results.into_iter().next().ok_or_else(|| {
                        ApiError::internal("the store answered a create with no object")
                    })?;
                    return Ok(Written {
                        object: as_stored(v, &obj)?,
                        warnings,
                        created: true,
                    });
                }
                Err(StoreError::Conflict { .. }) if charged => read = ReadMode::Linearizable,
                Err(e) => return Err(ApiError::from_store(e, prepare::subject(kind, &name))),
            }
        }
        Err(ApiError::new(
            Reason::Conflict,
            "the resource quota kept changing; please try again",
        ))
    }

    /// Writes `new` in place of `current` if it is still at its revision
    /// (None when it is not): the caller has made sure `new` differs.
    async fn swap(
        &self,
        kind: &Kind,
        current: &Object,
        new: Value,
    ) -> Result<Option<Value>, ApiError> {
        let name = current.key.name.clone();
        // An object whose deletion waits only on finalizers goes once they are
        // gone; a pod in its grace period stays for its node agent.
        if !new["metadata"]["deletionTimestamp"].is_null()
            && !prepare::finalizers_pending(kind, &new)
            && !prepare::terminating_gracefully(kind, &new)
        {
            let pre = DeletePreconditions {
                uid: None,
                revision: Some(current.revision),
            };
            return match self.store.delete(current.key.clone(), pre).await {
                Ok(obj) => Ok(Some(decode_object(&obj)?)),
                Err(StoreError::Conflict { .. }) => Ok(None),
                Err(e) => Err(ApiError::from_store(e, prepare::subject(kind, &name))),
            };
        }
        match self
            .store
            .update(current.key.clone(), encode(&new)?, Some(current.revision))
            .await
        {
            Ok(obj) => Ok(Some(as_stored(new, &obj)?)),
            Err(StoreError::Conflict { .. }) => Ok(None),
            Err(e) => Err(ApiError::from_store(e, prepare::subject(kind, &name))),
        }
    }

    fn stale(kind: &Kind, name: &str) -> ApiError {
        ApiError::conflict(
            prepare::subject(kind, name),
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// Reads the object, computes the new one with `change`, and swaps it in;
    /// retried on a lost race unless the client pinned a resourceVersion.
    async fn read_modify_write<F>(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        expected: Option<Revision>,
        dry_run: bool,
        mut change: F,
    ) -> Result<Value, ApiError>
    where
        F: FnMut(&Value) -> Result<Value, ApiError>,
    {
        self.read_modify_write_from(kind, ns, name, expected, dry_run, false, |current| {
            let new = change(current)?;
            Ok(replace(current, new))
        })
        .await
    }

    /// `read_modify_write` with a `change` that edits the object read in
    /// place and says whether it changed it (no copy of the object is made),
    /// trying first from this replica's copy when `local_first`
    /// (kube-apiserver's GuaranteedUpdate from its watch cache): the
    /// compare-and-swap on that copy's revision makes a write from a stale
    /// copy fail, and only a write that succeeded is answered from it. Any
    /// other outcome (absent, refused or left unchanged by `change`, swap
    /// lost) is decided again from a linearizable read, so the answer is one
    /// a linearizable read would have given, minus that read's round when the
    /// copy is current.
    #[allow(clippy::too_many_arguments)]
    async fn read_modify_write_from<F>(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        expected: Option<Revision>,
        dry_run: bool,
        local_first: bool,
        mut change: F,
    ) -> Result<Value, ApiError>
    where
        F: FnMut(&mut Value) -> Result<bool, ApiError>,
    {
        if local_first && !dry_run {
            if let Ok((current, mut v)) = self.read(kind, ns, name, ReadMode::Local).await {
                if expected.is_none_or(|e| e == current.revision)
                    && matches!(change(&mut v), Ok(true))
                {
                    if let Some(done) = self.swap(kind, &current, v).await? {
                        return Ok(done);
                    }
                }
            }
        }
        for _ in 0..CAS_ATTEMPTS {
            let (current, mut v) = self.read(kind, ns, name, ReadMode::Linearizable).await?;
            if expected.is_some_and(|e| e != current.revision) {
                return Err(Self::stale(kind, name));
            }
            if !change(&mut v)? || dry_run {
                return Ok(v);
            }
            if let Some(done) = self.swap(kind, &current, v).await? {
                return Ok(done);
            }
            if expected.is_some() {
                return Err(Self::stale(kind, name));
            }
        }
        Err(ApiError::new(
            Reason::Conflict,
            format!("{name}: too many concurrent writers, gave up after {CAS_ATTEMPTS} attempts"),
        ))
    }

    pub async fn update(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        body: Value,
        part: Part,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let (body, warnings) = prepare::decode(kind, body, opts.validation)?;
        let expected = prepare::meta_str(&body, "resourceVersion")
            .map(parse_rv)
            .transpose()?;
        let object = self
            .read_modify_write(kind, ns, name, expected, opts.dry_run, |current| {
                prepare::for_update(kind, current, body.clone(), part, Some(&opts.manager))
            })
            .await?;
        Ok(Written {
            object,
            warnings,
            created: false,
        })
    }

    pub async fn patch(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        (ty, patch): (PatchType, &Value),
        part: Part,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let subject = prepare::subject(kind, name);
        // Server-side apply creates the object when it is absent.
        let absent = ty == PatchType::Apply
            && matches!(
                self.read(kind, ns, name, ReadMode::Linearizable).await,
                Err(ApiError {
                    reason: Reason::NotFound,
                    ..
                })
            );
        if absent {
            let (mut applied, warnings) = prepare::decode(kind, patch.clone(), opts.validation)?;
            if prepare::meta_str(&applied, "name").is_some_and(|n| n != name) {
                return Err(ApiError::bad_request(
                    "the name of the object does not match the name on the URL",
                ));
            }
            applied["metadata"]["name"] = json!(name);
            let mut v = prepare::for_create(kind, ns, applied.clone(), &opts.manager)?;
            // The manager owns what it applied, not the defaults.
            let owned = fields::apply(
                None,
                &applied,
                &opts.manager,
                true,
                &subject,
                &prepare::now_rfc3339(),
            )?;
            v["metadata"]["managedFields"] = owned["metadata"]["managedFields"].clone();
            return match self.store_new(kind, v, warnings, opts).await {
                Err(e) if e.reason == Reason::AlreadyExists => Err(Self::stale(kind, name)),
                other => other,
            };
        }
        let expected = patch["metadata"]["resourceVersion"]
            .as_str()
            .map(parse_rv)
            .transpose()?;
        let mut warnings = Vec::new();
        let object = self
            .read_modify_write(kind, ns, name, expected, opts.dry_run, |current| {
                let patched = match ty {
                    PatchType::Json => patch::json_patch(current, patch)?,
                    PatchType::Merge => patch::merge_patch(current, patch)?,
                    PatchType::StrategicMerge => patch::strategic_merge(current, patch)?,
                    PatchType::Apply => {
                        let (applied, _) = prepare::decode(kind, patch.clone(), opts.validation)?;
                        let merged = fields::apply(
                            Some(current),
                            &applied,
                            &opts.manager,
                            opts.force,
                            &subject,
                            &prepare::now_rfc3339(),
                        )?;
                        let (merged, _) = prepare::decode(kind, merged, FieldValidation::Ignore)?;
                        return prepare::for_update(kind, current, merged, part, None);
                    }
                };
                let (patched, w) = prepare::decode(kind, patched, opts.validation)?;
                warnings = w;
                prepare::for_update(kind, current, patched, part, Some(&opts.manager))
            })
            .await?;
        Ok(Written {
            object,
            warnings,
            created: false,
        })
    }

    /// A list as a JSON value.
    pub async fn list(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        q: &ListQuery,
    ) -> Result<Value, ApiError> {
        let listed = self.list_stored(kind, ns, q).await?;
        let items = listed
            .items
            .iter()
            .map(|b| {
                serde_json::from_slice(b)
                    .map_err(|e| ApiError::internal(format!("a stored object is not JSON: {e}")))
            })
            .collect::<Result<Vec<Value>, _>>()?;
        let mut list = listed.envelope(kind);
        list["items"] = Value::Array(items);
        Ok(list)
    }

    /// The selected objects as stored (their JSON bytes, not re-encoded): an
    /// object is decoded only when a selector has to look into it.
    pub async fn list_stored(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        q: &ListQuery,
    ) -> Result<Listed, ApiError> {
        let mut opts = ListOptions {
            limit: q.limit.filter(|l| *l > 0),
            continue_token: q.continue_token.clone().filter(|t| !t.is_empty()),
            ..Default::default()
        };
        match (
            q.resource_version.as_deref(),
            q.resource_version_match.as_deref(),
        ) {
            (Some(_), _) if opts.continue_token.is_some() => {
                return Err(ApiError::bad_request(
                    "specifying resource version is not allowed when using continue",
                ))
            }
            (None | Some(""), Some(m)) => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch {m:?} is forbidden unless resourceVersion is provided"
                )))
            }
            (None | Some(""), None) => {}
            (Some("0"), _) => opts.read = ReadMode::Local,
            (Some(rv), Some("Exact")) => opts.revision = Some(parse_rv(rv)?),
            (Some(rv), None | Some("NotOlderThan")) => {
                parse_rv(rv)?;
            }
            (Some(_), Some(m)) => {
                return Err(ApiError::bad_request(format!(
                    "resourceVersionMatch must be Exact or NotOlderThan, not {m:?}"
                )))
            }
        }
        let mut prefix = Self::prefix(kind, ns);
        if let Some(name) = q.fields.name() {
            prefix.name = Some(name.to_string());
        }
        let res = self
            .store
            .list(&prefix, opts)
            .await
            .map_err(|e| ApiError::from_store(e, prepare::subject(kind, "")))?;
        let select_all = q.labels.is_empty() && q.fields.is_empty();
        let mut items = Vec::with_capacity(res.items.len());
        for obj in res.items {
            if !select_all {
                let v = decode_object(&obj)?;
                if !(q.labels.matches(&v["metadata"]["labels"]) && q.fields.matches(&v)) {
                    continue;
                }
            }
            items.push(obj.data);
        }
        Ok(Listed {
            items,
            revision: res.revision,
            continue_token: res.continue_token,
        })
    }

    pub async fn delete(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let subject = prepare::subject(kind, name);
        let expected = opts.resource_version.as_deref().map(parse_rv).transpose()?;
        for _ in 0..CAS_ATTEMPTS {
            let (current, v) = self.read(kind, ns, name, ReadMode::Linearizable).await?;
            let uid = v["metadata"]["uid"].as_str().unwrap_or_default();
            if let Some(want) = opts.uid.as_deref().filter(|u| *u != uid) {
                return Err(ApiError::conflict(
                    subject,
                    &format!("Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"),
                ));
            }
            if let Some(want) = expected.filter(|r| *r != current.revision) {
                return Err(ApiError::conflict(
                    subject,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {}",
                        current.revision
                    ),
                ));
            }
            if opts.dry_run {
                return Ok(v);
            }
            let marked = deletion::mark(kind, &v, opts);
            if let Some(marked) = marked {
                if marked == v {
                    return Ok(marked);
                }
                match self.swap(kind, &current, marked).await? {
                    Some(done) => return Ok(done),
                    None => continue,
                }
            }
            let pre = DeletePreconditions {
                uid: Some(uid.to_string()).filter(|u| !u.is_empty()),
                revision: Some(current.revision),
            };
            match self.store.delete(current.key.clone(), pre).await {
                Ok(obj) => return decode_object(&obj),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(e, subject)),
            }
        }
        Err(Self::stale(kind, name))
    }

    /// Deletes every object the query selects; returns the list of them.
    pub async fn delete_collection(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        q: &ListQuery,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let mut list = self.list(kind, ns, q).await?;
        let mut deleted = Vec::new();
        for item in list["items"].as_array().cloned().unwrap_or_default() {
            let name = item["metadata"]["name"].as_str().unwrap_or_default();
            let item_ns = item["metadata"]["namespace"].as_str();
            match self.delete(kind, item_ns, name, opts).await {
                Ok(v) => deleted.push(v),
                Err(e) if e.reason == Reason::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        list["items"] = Value::Array(deleted);
        Ok(list)
    }
}

/// What a delete request does to an object before (or instead of) removing
/// it: graceful pod termination and finalizers.
mod deletion {
    use serde_json::{json, Value};

    use super::{prepare, DeleteOptions, Kind};

    fn add_finalizer(v: &mut Value, f: &str) {
        let list = v["metadata"]["finalizers"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !list.iter().any(|x| x == f) {
            let mut list = list;
            list.push(json!(f));
            v["metadata"]["finalizers"] = Value::Array(list);
        }
    }

    fn later(secs: i64) -> String {
        let t = std::time::SystemTime::now() + std::time::Duration::from_secs(secs.max(0) as u64);
        humantime::format_rfc3339_seconds(t).to_string()
    }

    /// The object marked for deletion, or None to remove it now.
    pub fn mark(kind: &Kind, v: &Value, opts: &DeleteOptions) -> Option<Value> {
        let mut new = v.clone();
        let already = !v["metadata"]["deletionTimestamp"].is_null();
        if !already {
            match opts.propagation.as_deref() {
                Some("Orphan") => add_finalizer(&mut new, "orphan"),
                Some("Foreground") => add_finalizer(&mut new, "foregroundDeletion"),
                _ => {}
            }
        }
        let pending = prepare::finalizers_pending(kind, &new);
        // A pod running on a node gets its grace period: the node agent stops
        // it and then deletes it for good.
        let is_pod = kind.group.is_empty() && kind.kind == "Pod";
        let on_node = v["spec"]["nodeName"]
            .as_str()
            .is_some_and(|n| !n.is_empty());
        let finished = matches!(v["status"]["phase"].as_str(), Some("Succeeded" | "Failed"));
        let grace = opts
            .grace_period
            .or(v["spec"]["terminationGracePeriodSeconds"].as_i64())
            .unwrap_or(30);
        if is_pod && on_node && !finished && grace > 0 {
            let current = v["metadata"]["deletionGracePeriodSeconds"].as_i64();
            if current.is_some_and(|c| c <= grace) {
                return Some(new);
            }
            new["metadata"]["deletionTimestamp"] = json!(later(grace));
            new["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
            return Some(new);
        }
        if pending {
            if !already {
                new["metadata"]["deletionTimestamp"] = json!(prepare::now_rfc3339());
                new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
                if kind.group.is_empty() && kind.kind == "Namespace" {
                    new["status"]["phase"] = json!("Terminating");
                }
            } else if is_pod
                && v["metadata"]["deletionGracePeriodSeconds"]
                    .as_i64()
                    .is_some_and(|g| g > 0)
            {
                // Its grace period is over (grace 0, or it finished) but a
                // finalizer holds it (the job controller's): it goes as soon
                // as the finalizers do, not at some later delete.
                new["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            }
            return Some(new);
        }
        None
    }
}

#[cfg(test)]
mod generate_name_tests;
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spliced_list_is_the_list_document() {
        let cms = kinds::by_kind("", "ConfigMap").expect("ConfigMap");
        let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
        let b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"},
            "data": {"k": "v,\"]}"}});
        let listed = Listed {
            items: vec![encode(&a).unwrap(), encode(&b).unwrap()],
            revision: Revision(42),
            continue_token: Some("tok".into()),
        };
        let parsed: Value = serde_json::from_slice(&listed.to_json(cms)).unwrap();
        assert_eq!(
            parsed,
            json!({"kind": "ConfigMapList", "apiVersion": "v1",
                "metadata": {"resourceVersion": "42", "continue": "tok"},
                "items": [a, b]})
        );
        let empty = Listed {
            items: vec![],
            revision: Revision(1),
            continue_token: None,
        };
        let parsed: Value = serde_json::from_slice(&empty.to_json(cms)).unwrap();
        assert_eq!(parsed["items"], json!([]));
    }

    /// Admission keeps what it read of a namespace and its quotas
    /// (`local_cache`), but a namespace that starts terminating, or a quota
    /// created in it, counts at the very next create.
    #[tokio::test]
    async fn admission_sees_a_namespace_or_quota_change_at_once() {
        let reg = Registry::new(crate::store::mem::MemStore::new(Default::default()));
        let cms = kinds::by_kind("", "ConfigMap").expect("ConfigMap");
        let nss = kinds::by_kind("", "Namespace").expect("Namespace");
        let rqs = kinds::by_kind("", "ResourceQuota").expect("ResourceQuota");
        let opts = WriteOptions::default();
        let cm = |name: &str, ns: &str| {
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": ns}})
        };
        for ns in ["gone", "counted"] {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            reg.create(nss, None, body, &opts).await.expect("namespace");
            for name in ["a", "b"] {
                reg.create(cms, Some(ns), cm(name, ns), &opts)
                    .await
                    .expect("a create in a live namespace");
            }
        }

        reg.delete(nss, None, "gone", &DeleteOptions::default())
            .await
            .expect("delete the namespace");
        let err = reg
            .create(cms, Some("gone"), cm("c", "gone"), &opts)
            .await
            .expect_err("a create in a terminating namespace");
        assert!(err.message.contains("being terminated"), "{}", err.message);

        let quota = json!({"apiVersion": "v1", "kind": "ResourceQuota",
            "metadata": {"name": "q", "namespace": "counted"},
            "spec": {"hard": {"count/configmaps": "5"}}});
        reg.create(rqs, Some("counted"), quota, &opts)
            .await
            .expect("quota");
        let err = reg
            .create(cms, Some("counted"), cm("c", "counted"), &opts)
            .await
            .expect_err("a create the new quota has not counted yet");
        assert!(
            err.message.contains("status unknown for quota: q"),
            "{}",
            err.message
        );
    }

    /// A write answers `as_stored`'s object, built without reading the
    /// stored bytes back: it must be what a read gives, escaped and
    /// non-ASCII text included; an object with a float anywhere is answered
    /// from the bytes.
    #[tokio::test]
    async fn a_write_answers_the_object_a_read_gives() {
        let reg = Registry::new(crate::store::mem::MemStore::new(Default::default()));
        let cms = kinds::by_kind("", "ConfigMap").expect("ConfigMap");
        let nss = kinds::by_kind("", "Namespace").expect("Namespace");
        let opts = WriteOptions::default();
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        reg.create(nss, None, ns, &opts).await.expect("namespace");
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "default",
                "labels": {"app": "web"},
                "annotations": {"q": "\"quoted\"\n\\", "z": "\u{1f600}\u{7f}"}},
            "data": {"k": "v,\"]}\u{7}", "e": "\u{e9}t\u{e9}"}});
        let created = reg
            .create(cms, Some("default"), cm, &opts)
            .await
            .expect("created")
            .object;
        let read = |reg: &Registry| {
            let reg = reg.clone();
            async move {
                reg.get(cms, Some("default"), "c", ReadMode::Linearizable)
                    .await
                    .expect("read")
            }
        };
        assert_eq!(created, read(&reg).await);
        assert!(created["metadata"]["resourceVersion"].is_string());

        let mut changed = created.clone();
        changed["data"]["k"] = json!("w");
        changed["metadata"]["labels"]["n"] = json!("1");
        let updated = reg
            .update(cms, Some("default"), "c", changed, Part::Main, &opts)
            .await
            .expect("updated")
            .object;
        assert_eq!(updated, read(&reg).await);
        assert_ne!(
            updated["metadata"]["resourceVersion"],
            created["metadata"]["resourceVersion"]
        );

        // With a float anywhere, the answer is the stored bytes read back.
        let mut v = json!({"metadata": {"name": "f"}, "x": 0.1, "y": [1, {"z": 2.5e-300}]});
        let key = ResourceKey::new("", "configmaps", Some("default"), "f");
        let data = crate::store::apply::stamp(&key, &encode(&v).unwrap(), Revision(7)).unwrap();
        let stored = Object {
            key,
            data,
            revision: Revision(7),
            created: Revision(7),
        };
        assert!(has_float(&v));
        assert_eq!(
            as_stored(v.clone(), &stored).unwrap(),
            decode_object(&stored).unwrap()
        );
        v["x"] = json!(1);
        assert!(has_float(&v));
        v["y"][1]["z"] = json!(-3);
        assert!(!has_float(&v));
    }

    #[test]
    fn a_forced_delete_of_a_pod_held_by_a_finalizer_ends_its_grace() {
        let pods = kinds::by_kind("", "Pod").expect("Pod");
        let running = json!({"metadata": {"name": "p", "finalizers": ["batch.kubernetes.io/job-tracking"]},
            "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        // First a graceful delete: 30 s for the node agent.
        let marked = deletion::mark(pods, &running, &DeleteOptions::default()).expect("marked");
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
        assert!(prepare::terminating_gracefully(pods, &marked));
        // The agent stopped it and deletes with grace 0: the finalizer keeps
        // it, but no longer as gracefully terminating, so removing the
        // finalizer removes the pod.
        let forced = DeleteOptions {
            grace_period: Some(0),
            ..Default::default()
        };
        let held = deletion::mark(pods, &marked, &forced).expect("held by its finalizer");
        assert_eq!(held["metadata"]["deletionGracePeriodSeconds"], 0);
        assert!(!prepare::terminating_gracefully(pods, &held));
        // Without finalizers the same delete removes it.
        let mut bare = marked.clone();
        bare["metadata"]["finalizers"] = json!([]);
        assert!(deletion::mark(pods, &bare, &forced).is_none());
    }
}
