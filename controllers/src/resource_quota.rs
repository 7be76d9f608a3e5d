//! The ResourceQuota controller: `status.hard` mirrors `spec.hard` and
//! `status.used` is recomputed from the objects in the namespace, with the
//! same arithmetic the registry's admission charges creates with
//! (`balsa_api::registry::quota`). Admission only adds; this is what gives
//! usage back when objects go.
//!
//! The status write carries the quota's resourceVersion, so a create
//! charged by admission after the quota was read fails it (conflict) and
//! the next pass counts that object too.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use balsa_api::client::{Action, Api, Client, ObjectKey, Resource, Store};
use balsa_api::grpc::client::Client as Raw;
use balsa_api::registry::kinds::KINDS;
use balsa_api::registry::quantity::Quantity;
use balsa_api::registry::quota::{self, Usage};
use balsa_api::registry::quota_scope;
use k8s_openapi::api::core::v1::{ResourceQuota, ResourceQuotaStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as KQuantity;

use crate::Error;

/// Kinds without an informer here (Deployments, Jobs, ...) are recounted
/// this often.
pub const RESYNC: Duration = Duration::from_secs(15);

pub struct Ctx {
    pub client: Client,
}

/// Maps a change to an object to the quotas of its namespace.
pub fn in_namespace<C: Resource>(
    quotas: &Store<ResourceQuota>,
) -> impl Fn(&C) -> Vec<ObjectKey> + Send + 'static {
    let quotas = quotas.clone();
    move |o: &C| {
        let ns = o.metadata().namespace.as_deref();
        quotas
            .filter(|q| q.metadata.namespace.as_deref() == ns)
            .iter()
            .map(|q| ObjectKey::of(&**q))
            .collect()
    }
}

/// What the objects in `ns` that `quota` counts (of the kinds `hard` cares
/// about, within its scopes) use.
async fn used_in(
    raw: &Raw,
    ns: &str,
    quota: &serde_json::Value,
    hard: &Usage,
) -> Result<Usage, Error> {
    let names: BTreeSet<String> = hard.keys().cloned().collect();
    let mut used: Usage = hard
        .keys()
        .map(|k| (k.clone(), Quantity::default()))
        .collect();
    for kind in KINDS
        .iter()
        .filter(|k| k.namespaced && quota::tracks(&names, k) && quota_scope::counts_kind(quota, k))
    {
        let mut token = None;
        loop {
            let page = raw
                .list(kind.group, kind.plural, Some(ns), 500, token)
                .await
                .map_err(|e| Error::Invalid(format!("listing {} in {ns}: {e}", kind.plural)))?;
            for item in &page.items {
                let v: serde_json::Value = serde_json::from_slice(item).unwrap_or_default();
                if !quota_scope::matches(quota, kind, &v) {
                    continue;
                }
                for (k, q) in quota::usage(kind, &v) {
                    if let Some(u) = used.get_mut(&k) {
                        *u = u.plus(q);
                    }
                }
            }
            match page.continue_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
    }
    Ok(used)
}

fn to_k8s(u: &Usage) -> std::collections::BTreeMap<String, KQuantity> {
    u.iter()
        .map(|(k, v)| (k.clone(), KQuantity(v.to_string())))
        .collect()
}

pub async fn reconcile(rq: Arc<ResourceQuota>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let key = ObjectKey::of(&*rq);
    let ns = rq.metadata.namespace.clone().unwrap_or_default();
    let v = serde_json::to_value(&*rq).map_err(|e| Error::Invalid(e.to_string()))?;
    let hard = quota::hard_of(&v);
    let raw = ctx.client.raw().await.map_err(Error::api(
        "reaching the store to count the usage of",
        key.to_string(),
    ))?;
    let used = used_in(&raw, &ns, &v, &hard).await?;
    let status = ResourceQuotaStatus {
        hard: Some(to_k8s(&hard)),
        used: Some(to_k8s(&used)),
    };
    // Compare by value: "1000m" and "1" are the same usage.
    let same = rq.status.as_ref().is_some_and(|s| {
        let parse = |m: &Option<std::collections::BTreeMap<String, KQuantity>>| -> Usage {
            m.iter()
                .flatten()
                .filter_map(|(k, q)| Some((k.clone(), Quantity::parse(&q.0)?)))
                .collect()
        };
        parse(&s.hard) == hard && parse(&s.used) == used
    });
    if !same {
        let mut new = (*rq).clone();
        new.status = Some(status);
        Api::<ResourceQuota>::namespaced(ctx.client.clone(), &ns)
            .replace_status(&new, &crate::owners::post_params())
            .await
            .map_err(Error::api("updating status of", key.to_string()))?;
    }
    Ok(Action::requeue(RESYNC))
}
