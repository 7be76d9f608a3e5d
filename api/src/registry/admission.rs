//! Admission that reads other objects: LimitRange defaults and bounds for
//! new pods, then ResourceQuota. A create that a quota counts is charged
//! in the same atomic batch as the create itself:
//!
//! ```text
//!  read quotas (rev Q_i each) ─► check used + delta <= hard ─► txn [
//!      Create object,
//!      Update quota_i status.used += delta  (only if still at Q_i) ]
//!  a quota moved meanwhile: the batch fails whole and is retried
//! ```
//!
//! So two concurrent creates can never both take the last unit of a
//! quota: one of them finds the quota moved and re-reads it.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::error::{ApiError, Reason};
use super::kinds::{self, Kind};
use super::{decode_object, encode, limit_range, prepare, quota, quota_scope, Registry};
use crate::store::{ListOptions, Op, ReadMode};

fn forbidden(kind: &Kind, name: &str, why: &str) -> ApiError {
    let subject = prepare::subject(kind, name);
    let what = subject.qualified();
    let message = if name.is_empty() {
        format!("{what} is forbidden: {why}")
    } else {
        format!("{what} {name:?} is forbidden: {why}")
    };
    ApiError::new(Reason::Forbidden, message).about(subject)
}

impl Registry {
    async fn list_in(
        &self,
        kind: &Kind,
        ns: &str,
        read: ReadMode,
    ) -> Result<Vec<(crate::store::Object, Value)>, ApiError> {
        let list = self
            .store
            .list(
                &Self::prefix(kind, Some(ns)),
                ListOptions {
                    read,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| ApiError::from_store(e, prepare::subject(kind, "")))?;
        list.items
            .into_iter()
            .map(|o| {
                let v = decode_object(&o)?;
                Ok((o, v))
            })
            .collect()
    }

    /// LimitRange admission: defaults and bounds for a new pod.
    pub(super) async fn admit_limits(
        &self,
        kind: &Kind,
        ns: &str,
        v: &mut Value,
    ) -> Result<(), ApiError> {
        if !(kind.group.is_empty() && kind.plural == "pods") {
            return Ok(());
        }
        let lr = kinds::by_kind("", "LimitRange").expect("LimitRange is a built-in kind");
        // This replica's own state first; when it has none, a linearizable
        // read, as upstream's LimitRanger does a live lookup on a cache miss
        // (a LimitRange just created through another master must apply),
        // remembered for a while so that pods in a namespace without one do
        // not each pay a read-index round.
        let local = self
            .local
            .limit_ranges
            .get_or_read(ns, || async {
                let local = self.list_in(lr, ns, ReadMode::Local).await?;
                Ok::<_, ApiError>(Some(Arc::new(
                    local.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
                )))
            })
            .await?
            .unwrap_or_default();
        let ranges: Arc<Vec<Value>> = if !local.is_empty() {
            local
        } else if let Some(found) = self.limit_ranges.get(ns, Instant::now()) {
            found
        } else {
            let live = self.list_in(lr, ns, ReadMode::Linearizable).await?;
            let found: Arc<Vec<Value>> = Arc::new(live.into_iter().map(|(_, v)| v).collect());
            self.limit_ranges.put(ns, found.clone(), Instant::now());
            found
        };
        let name = prepare::meta_str(v, "name").unwrap_or_default().to_string();
        limit_range::admit_pod(v, &ranges).map_err(|why| forbidden(kind, &name, &why))
    }

    /// ResourceQuota admission: the quota updates to commit with the create
    /// of `v`, or why it may not be created.
    pub(super) async fn admit_quota(
        &self,
        kind: &Kind,
        ns: &str,
        v: &Value,
        read: ReadMode,
    ) -> Result<Vec<Op>, ApiError> {
        let rq = kinds::by_kind("", "ResourceQuota").expect("ResourceQuota is a built-in kind");
        let list =
            || async { Ok::<_, ApiError>(Some(Arc::new(self.list_in(rq, ns, read).await?))) };
        let quotas = match read {
            ReadMode::Local => self.local.quotas.get_or_read(ns, list).await?,
            ReadMode::Linearizable => list().await?,
        }
        .unwrap_or_default();
        if quotas.is_empty() {
            return Ok(Vec::new());
        }
        let name = prepare::meta_str(v, "name").unwrap_or_default().to_string();
        let delta = quota::usage(kind, v);
        let mut ops = Vec::new();
        for (obj, q) in quotas.iter() {
            if !quota_scope::matches(q, kind, v) {
                continue;
            }
            let hard = quota::hard_of(q);
            let qname = obj.key.name.clone();
            if kind.group.is_empty() && kind.plural == "pods" {
                if let Some(why) = quota::missing_compute(v, &hard) {
                    return Err(forbidden(
                        kind,
                        &name,
                        &format!("failed quota: {qname}: {why}"),
                    ));
                }
            }
            let mut touched: Vec<&String> =
                delta.keys().filter(|k| hard.contains_key(*k)).collect();
            if touched.is_empty() {
                continue;
            }
            touched.sort();
            // The controller has not computed this quota's usage yet.
            if !q["status"]["hard"].is_object() {
                let names: Vec<&str> = touched.iter().map(|s| s.as_str()).collect();
                return Err(forbidden(
                    kind,
                    &name,
                    &format!(
                        "status unknown for quota: {qname}, resources: {}",
                        names.join(",")
                    ),
                ));
            }
            let used = quota::used_of(q);
            let new = quota::charge(&qname, &hard, &used, &delta)
                .map_err(|why| forbidden(kind, &name, &why))?;
            let mut body = q.clone();
            body["status"]["used"] = quota::to_json(&new);
            ops.push(Op::Update {
                key: obj.key.clone(),
                value: encode(&body)?,
                expected: Some(obj.revision),
            });
        }
        Ok(ops)
    }
}
