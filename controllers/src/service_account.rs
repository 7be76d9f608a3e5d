//! The ServiceAccount controller: every active namespace has a ServiceAccount
//! named `default`, created with the namespace and again if deleted (upstream
//! `serviceaccount-controller`). Pods without `serviceAccountName` get
//! `default` from the registry's admission.

use std::sync::Arc;

use balsa_api::client::{Action, Api, Client, ObjectKey, Store};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::Error;

pub const DEFAULT: &str = "default";

pub struct Ctx {
    pub client: Client,
    pub accounts: Store<ServiceAccount>,
}

/// The namespace a change to a ServiceAccount named `default` concerns.
pub fn namespace_of(sa: &ServiceAccount) -> Vec<ObjectKey> {
    match (
        sa.metadata.name.as_deref(),
        sa.metadata.namespace.as_deref(),
    ) {
        (Some(DEFAULT), Some(ns)) => vec![ObjectKey::new(None, ns)],
        _ => vec![],
    }
}

/// Whether `ns` should have a `default` account and does not.
pub fn missing(ns: &Namespace, accounts: &Store<ServiceAccount>) -> bool {
    let Some(name) = ns.metadata.name.as_deref() else {
        return false;
    };
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    !terminating && accounts.get(&ObjectKey::new(Some(name), DEFAULT)).is_none()
}

pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if !missing(&ns, &ctx.accounts) {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name.clone().unwrap_or_default();
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT.into()),
            namespace: Some(name.clone()),
            ..Default::default()
        },
        ..Default::default()
    };
    let pp = crate::owners::post_params();
    match Api::<ServiceAccount>::namespaced(ctx.client.clone(), &name)
        .create(&sa, &pp)
        .await
    {
        Ok(_) => tracing::info!(namespace = %name, "created the default service account"),
        // Already there (the cache lags), or the namespace is going away.
        Err(e) if e.code() == 409 || e.code() == 403 || e.code() == 404 => {}
        Err(e) => return Err(Error::api("creating default service account in", name)(e)),
    }
    Ok(Action::await_change())
}
