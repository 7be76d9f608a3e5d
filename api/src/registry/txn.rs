//! The ops of an atomic batch (the gRPC `Txn`), prepared as single writes
//! are: validated and defaulted by the kind's strategy, updates checked
//! against what is stored, deletes marked instead when finalizers or a pod's
//! grace period say so. Nothing is written here; the store applies all the
//! ops or none, each pinned to the revision it was prepared from, so a batch
//! that raced another writer fails with a Conflict rather than overwriting it.
//! A create's ResourceQuota charges ride in the batch too; two creates
//! charging the same quota would each charge it from the same usage, so such
//! a batch is refused (split it into single creates).

use serde_json::Value;

use super::{
    deletion, encode, parse_rv, prepare, ApiError, DeleteOptions, Kind, Part, Registry,
    WriteOptions,
};
use crate::store::{DeletePreconditions, Op, ReadMode};

impl Registry {
    /// A create of `body`, as [`Registry::create`] would store it (LimitRange
    /// defaults applied), then the quota charges to commit with it.
    pub async fn txn_create(
        &self,
        kind: &Kind,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Vec<Op>, ApiError> {
        let ns = body["metadata"]["namespace"].as_str().map(str::to_string);
        let (v, _warnings) = prepare::decode(kind, body, opts.validation)?;
        let mut v = prepare::for_create(kind, ns.as_deref(), v, &opts.manager)?;
        let name = prepare::meta_str(&v, "name")
            .unwrap_or_default()
            .to_string();
        let ns = prepare::meta_str(&v, "namespace").map(str::to_string);
        let mut charges = Vec::new();
        if let (Some(ns), true) = (&ns, kind.namespaced) {
            self.check_namespace(kind, ns).await?;
            self.admit_limits(kind, ns, &mut v).await?;
            charges = self
                .admit_quota(kind, ns, &v, ReadMode::Linearizable)
                .await?;
        }
        let mut ops = vec![Op::Create {
            key: Self::key(kind, ns.as_deref(), &name),
            value: encode(&v)?,
        }];
        ops.extend(charges);
        Ok(ops)
    }

    /// Refuses a batch whose ops write one object twice (two quota charges
    /// computed from the same usage would lose one of them).
    pub fn txn_check(ops: &[Op]) -> Result<(), ApiError> {
        let mut seen = std::collections::HashSet::new();
        for op in ops {
            let key = match op {
                Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key,
            };
            if !seen.insert(key) {
                return Err(ApiError::bad_request(format!(
                    "a batch may write {}/{} once; this one writes it twice (two creates charging one ResourceQuota do): split it",
                    key.resource, key.name
                )));
            }
        }
        Ok(())
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
        let name = prepare::meta_str(&body, "name")
            .unwrap_or_default()
            .to_string();
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
                &format!(
                    "Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"
                ),
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
