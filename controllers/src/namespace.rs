//! The namespace controller: a namespace marked for deletion (phase
//! Terminating, set by the registry) is emptied of every namespaced object,
//! then loses its `kubernetes` finalizer, and the registry removes it.
//!
//! Objects are listed and deleted generically over the registry's kinds
//! table with the raw gRPC client, so a new built-in kind is covered
//! without a change here. Objects that wait on their own finalizers or a
//! pod's grace period keep the namespace until they are gone.

use std::sync::Arc;
use std::time::Duration;

use balsa_api::client::{Action, Api, Client};
use balsa_api::grpc::client::Client as Raw;
use balsa_api::registry::kinds::KINDS;
use balsa_api::store::StoreError;
use balsa_api::ResourceKey;
use k8s_openapi::api::core::v1::Namespace;

use crate::Error;

pub const FINALIZER: &str = "kubernetes";

pub struct Ctx {
    pub client: Client,
}

fn store_err(step: &str, e: StoreError) -> Error {
    Error::Invalid(format!("{step}: {e}"))
}

/// Deletes what is left in `ns`; returns how many objects remain.
async fn empty(raw: &Raw, ns: &str) -> Result<usize, Error> {
    let mut left = 0;
    for kind in KINDS.iter().filter(|k| k.namespaced) {
        let mut token = None;
        loop {
            let page = raw
                .list(kind.group, kind.plural, Some(ns), 500, token)
                .await
                .map_err(|e| store_err(&format!("listing {} in {ns}", kind.plural), e))?;
            for item in &page.items {
                let v: serde_json::Value = serde_json::from_slice(item).unwrap_or_default();
                let Some(name) = v["metadata"]["name"].as_str() else {
                    continue;
                };
                left += 1;
                if !v["metadata"]["deletionTimestamp"].is_null() {
                    continue;
                }
                let uid = v["metadata"]["uid"].as_str().map(str::to_string);
                let key = ResourceKey::new(kind.group, kind.plural, Some(ns), name);
                match raw.delete(&key, uid, None).await {
                    Ok(_) | Err(StoreError::NotFound { .. }) | Err(StoreError::Conflict { .. }) => {
                    }
                    Err(e) => {
                        return Err(store_err(
                            &format!("deleting {} {ns}/{name}", kind.plural),
                            e,
                        ))
                    }
                }
            }
            match page.continue_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
    }
    Ok(left)
}

pub async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name.clone().unwrap_or_default();
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if !finalizers.iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let raw = ctx
        .client
        .raw()
        .await
        .map_err(Error::api("reaching the store to empty namespace", &name))?;
    let left = empty(&raw, &name).await?;
    if left > 0 {
        tracing::info!(namespace = %name, left, "waiting for the namespace's objects to go");
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let mut done = (*ns).clone();
    if let Some(spec) = done.spec.as_mut() {
        spec.finalizers = Some(finalizers.into_iter().filter(|f| f != FINALIZER).collect());
    }
    let api = Api::<Namespace>::all(ctx.client.clone());
    match api.replace(&done, &crate::owners::post_params()).await {
        Ok(_) => {}
        Err(e) if e.code() == 404 => {}
        Err(e) => return Err(Error::api("finalizing namespace", name)(e)),
    }
    tracing::info!(namespace = %name, "namespace emptied and finalized");
    Ok(Action::await_change())
}
