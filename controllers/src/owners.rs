//! ownerReferences: the controller reference a workload sets on what it
//! creates, and adoption / release of children by selector (upstream's
//! ControllerRefManager).

use std::sync::Arc;

use balsa_api::client::{Api, Patch, PatchParams, PostParams, Resource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use serde_json::json;

use crate::{selector, Error};

pub const MANAGER: &str = "balsa-controller-manager";

/// The reference a controller puts on its children.
/// How every controller writes: as the controller manager's field manager.
pub fn post_params() -> PostParams {
    PostParams {
        field_manager: MANAGER.into(),
        ..Default::default()
    }
}

pub fn controller_ref<K: Resource>(owner: &K) -> OwnerReference {
    let m = owner.metadata();
    OwnerReference {
        api_version: K::API_VERSION.into(),
        kind: K::KIND.into(),
        name: m.name.clone().unwrap_or_default(),
        uid: m.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The reference with `controller: true`, if any.
pub fn controller_of<C: Resource>(child: &C) -> Option<&OwnerReference> {
    child
        .metadata()
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// What an owner does with the children in its namespace.
#[derive(Debug)]
pub struct Claim<C> {
    /// Controlled by the owner and selected: its children.
    pub owned: Vec<Arc<C>>,
    /// Selected, without a controller: to adopt.
    pub adopt: Vec<Arc<C>>,
    /// Controlled by the owner but no longer selected: to release.
    pub release: Vec<Arc<C>>,
}

/// Sorts `children` (already in the owner's namespace) for an owner with
/// `uid` and `sel`. An owner being deleted adopts nothing. Children of
/// other owners may be left out of `children` ([`claimable`]).
pub fn claim<C: Resource>(
    uid: &str,
    sel: &LabelSelector,
    deleting: bool,
    children: Vec<Arc<C>>,
) -> Claim<C> {
    let mut out = Claim {
        owned: vec![],
        adopt: vec![],
        release: vec![],
    };
    for c in children {
        let selected = || selector::matches(sel, c.metadata().labels.as_ref());
        match controller_of(&*c) {
            Some(r) if r.uid == uid => {
                if selected() {
                    out.owned.push(c);
                } else if c.metadata().deletion_timestamp.is_none() {
                    out.release.push(c);
                }
            }
            // Another owner's: not even looked at (most of a namespace's
            // children, in a rollout).
            Some(_) => {}
            None => {
                if !deleting && c.metadata().deletion_timestamp.is_none() && selected() {
                    out.adopt.push(c);
                }
            }
        }
    }
    out
}

/// Whether `child` is one [`claim`] may sort for the owner with `uid`:
/// controlled by it, or by nothing (an orphan to adopt).
pub fn claimable<C: Resource>(child: &C, uid: &str) -> bool {
    controller_of(child).is_none_or(|r| r.uid == uid)
}

/// Claims `children` for `owner` and writes the outcome: releases the owned
/// ones its selector no longer matches, adopts the matching orphans.
/// Answers what the owner controls now (adopted ones included).
pub async fn claim_and_write<P: Resource, C: Resource>(
    api: &Api<C>,
    owner: &P,
    sel: &LabelSelector,
    deleting: bool,
    children: Vec<Arc<C>>,
) -> Result<Vec<Arc<C>>, Error> {
    let uid = owner.metadata().uid.clone().unwrap_or_default();
    let claim = claim(&uid, sel, deleting, children);
    let mut owned = claim.owned;
    for c in &claim.release {
        release(api, c, &uid).await?;
    }
    for c in &claim.adopt {
        owned.push(Arc::new(adopt(api, c, controller_ref(owner)).await?));
    }
    Ok(owned)
}

/// Writes `refs` as the child's ownerReferences, only if the child is still
/// at the version the decision was made on.
async fn set_refs<C: Resource>(
    api: &Api<C>,
    child: &C,
    refs: Vec<OwnerReference>,
) -> Result<C, Error> {
    let name = child.metadata().name.clone().unwrap_or_default();
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": child.metadata().resource_version,
    }});
    api.patch(&name, &PatchParams::apply(MANAGER), &Patch::Merge(patch))
        .await
        .map_err(Error::api("patching ownerReferences of", name))
}

pub async fn adopt<C: Resource>(
    api: &Api<C>,
    child: &C,
    owner: OwnerReference,
) -> Result<C, Error> {
    let mut refs = child
        .metadata()
        .owner_references
        .clone()
        .unwrap_or_default();
    refs.retain(|r| r.uid != owner.uid);
    refs.push(owner);
    set_refs(api, child, refs).await
}

/// Removes the reference to `owner_uid` from the child.
pub async fn release<C: Resource>(api: &Api<C>, child: &C, owner_uid: &str) -> Result<C, Error> {
    let mut refs = child
        .metadata()
        .owner_references
        .clone()
        .unwrap_or_default();
    refs.retain(|r| r.uid != owner_uid);
    set_refs(api, child, refs).await
}
