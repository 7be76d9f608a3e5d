//! The ops of an atomic batch (the gRPC `Txn`), prepared as single writes
//! are: validated and defaulted by the kind's strategy, updates checked
//! against what is stored, deletes marked instead when finalizers or a pod's
//! grace period say so. Nothing is written here; the store applies all the
//! ops or none, each pinned to the revision it was prepared from, so a batch
//! that raced another writer fails with a Conflict rather than overwriting it.

use serde_json::Value;

use super::{
    deletion, encode, parse_rv, prepare, ApiError, DeleteOptions, Kind, Part, Registry,
    WriteOptions,
};
use crate::store::{DeletePreconditions, Op, ReadMode};

impl Registry {
    /// A create of `body`, as [`Registry::create`] would store it.
    pub async fn txn_create(
        &self,
        kind: &Kind,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Op, ApiError> {
        let ns = body["metadata"]["namespace"].as_str().map(str::to_string);
        let (v, _warnings) = prepare::decode(kind, body, opts.validation)?;
        let v = prepare::for_create(kind, ns.as_deref(), v, &opts.manager)?;
        let name = prepare::meta_str(&v, "name").unwrap_or_default();
        let ns = prepare::meta_str(&v, "namespace");
        if let Some(ns) = ns {
            self.check_namespace(kind, ns).await?;
        }
        Ok(Op::Create {
            key: Self::key(kind, ns, name),
            value: encode(&v)?,
        })
    }

    /// An update to `body`, as [`Registry::update`] would store it, pinned to
    /// the body's resourceVersion (or, without one, to the stored object's).
    pub async fn txn_update(
        &self,
        kind: &Kind,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Op, ApiError> {
        let (body, _warnings) = prepare::decode(kind, body, opts.validation)?;
        let name = prepare::meta_str(&body, "name").unwrap_or_default().to_string();
        let ns = prepare::meta_str(&body, "namespace").map(str::to_string);
        let expected = prepare::meta_str(&body, "resourceVersion")
            .map(parse_rv)
            .transpose()?;
        let (current, current_v) = self
            .read(kind, ns.as_deref(), &name, ReadMode::Linearizable)
            .await?;
        if expected.is_some_and(|e| e != current.revision) {
            return Err(Self::stale(kind, &name));
        }
        let new = prepare::for_update(kind, &current_v, body, Part::Main, Some(&opts.manager))?;
        // As a single update: the last finalizer of a deleted object gone
        // means the object goes.
        if !new["metadata"]["deletionTimestamp"].is_null()
            && !prepare::finalizers_pending(kind, &new)
            && !prepare::terminating_gracefully(kind, &new)
        {
            return Ok(Op::Delete {
                key: current.key,
                preconditions: DeletePreconditions {
                    uid: None,
                    revision: Some(current.revision),
                },
            });
        }
        Ok(Op::Update {
            key: current.key,
            value: encode(&new)?,
            expected: Some(current.revision),
        })
    }

    /// A delete of `name`, as [`Registry::delete`] would do it: an update
    /// that marks the object when finalizers or a grace period hold it.
    pub async fn txn_delete(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        preconditions: DeletePreconditions,
    ) -> Result<Op, ApiError> {
        let (current, v) = self.read(kind, ns, name, ReadMode::Linearizable).await?;
        let subject = prepare::subject(kind, name);
        let uid = v["metadata"]["uid"].as_str().unwrap_or_default();
        if let Some(want) = preconditions.uid.as_deref().filter(|u| *u != uid) {
            return Err(ApiError::conflict(
                subject,
                &format!("Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"),
            ));
        }
        if let Some(want) = preconditions.revision.filter(|r| *r != current.revision) {
            return Err(ApiError::conflict(
                subject,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {}",
                    current.revision
                ),
            ));
        }
        if let Some(marked) = deletion::mark(kind, &v, &DeleteOptions::default()) {
            return Ok(Op::Update {
                key: current.key,
                value: encode(&marked)?,
                expected: Some(current.revision),
            });
        }
        Ok(Op::Delete {
            key: current.key,
            preconditions: DeletePreconditions {
                uid: Some(uid.to_string()).filter(|u| !u.is_empty()),
                revision: Some(current.revision),
            },
        })
    }
}
