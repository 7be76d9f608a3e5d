//! ControllerRevisions: the template history DaemonSets and StatefulSets
//! keep (upstream `pkg/controller/history` and the daemon / statefulset
//! controllers' use of it), which `kubectl rollout history|undo` read.
//!
//! ```text
//!  parent's template ──patch──► data {"spec":{"template":{..,"$patch":"replace"}}}
//!    └─ an owned revision with equal data: reuse it; not the newest? give it
//!    │  the next revision number (a rollback)
//!    └─ none: create `<parent>-<hash>` with the next number; a name taken by
//!    │  other data: bump status.collisionCount and try again
//!    └─ prune: old revisions no live pod uses, oldest first, beyond
//!       revisionHistoryLimit (default 10)
//! ```

use std::sync::Arc;

use balsa_api::client::{Api, DeleteParams, Resource};
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::{json, Value};

use crate::owners::{self};
use crate::Error;

/// The label naming a pod's (and a revision's) template hash.
pub const HASH_LABEL: &str = "controller-revision-hash";

/// What `kubectl rollout undo` applies as a strategic-merge patch: the whole
/// template, replacing the parent's.
pub fn patch_of(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_else(|_| json!({}));
    if let Some(m) = t.as_object_mut() {
        m.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

fn fnv1a(h: u32, bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(h, |h, b| (h ^ *b as u32).wrapping_mul(16_777_619))
}

/// A stable short hash of `data` and the collision count (FNV-1a, spelt
/// with upstream's SafeEncodeString alphabet so names look alike).
pub fn hash(data: &Value, collision_count: Option<i32>) -> String {
    let body = serde_json::to_vec(data).unwrap_or_default();
    let mut h = fnv1a(2_166_136_261, &body);
    if let Some(c) = collision_count {
        h = fnv1a(h, c.to_string().as_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string()
        .bytes()
        .map(|b| ALPHABET[b as usize % ALPHABET.len()] as char)
        .collect()
}

/// The revision's hash: its label, else the name's suffix after the parent.
pub fn hash_of(cr: &ControllerRevision) -> String {
    cr.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(HASH_LABEL).cloned())
        .unwrap_or_default()
}

pub fn data_of(cr: &ControllerRevision) -> Option<&Value> {
    cr.data.as_ref().map(|d| &d.0)
}

/// The template a revision records, for pods of an old revision.
pub fn template_of(cr: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = data_of(cr)?.get("spec")?.get("template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

/// A new revision of `parent` (not yet created).
pub fn revision_for<P: Resource>(
    parent: &P,
    template: &PodTemplateSpec,
    number: i64,
    collision_count: Option<i32>,
) -> ControllerRevision {
    let data = patch_of(template);
    let h = hash(&data, collision_count);
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(HASH_LABEL.into(), h.clone());
    let m = parent.metadata();
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(format!("{}-{h}", m.name.clone().unwrap_or_default())),
            namespace: m.namespace.clone(),
            labels: Some(labels),
            owner_references: Some(vec![owners::controller_ref(parent)]),
            ..Default::default()
        },
        data: Some(RawExtension(data)),
        revision: number,
    }
}

/// The next revision number after `revisions`.
pub fn next_number(revisions: &[Arc<ControllerRevision>]) -> i64 {
    revisions.iter().map(|r| r.revision).max().unwrap_or(0) + 1
}

/// Old revisions to delete: not `keep` (current / update), not used by a
/// live pod (`in_use` says by hash or name), oldest first, so that at most
/// `limit` such old ones remain.
pub fn to_prune<'a>(
    revisions: &'a [Arc<ControllerRevision>],
    keep: &[&str],
    in_use: impl Fn(&ControllerRevision) -> bool,
    limit: i32,
) -> Vec<&'a Arc<ControllerRevision>> {
    let mut old: Vec<&Arc<ControllerRevision>> = revisions
        .iter()
        .filter(|r| !keep.contains(&r.metadata.name.as_deref().unwrap_or_default()))
        .filter(|r| !in_use(r))
        .collect();
    let limit = limit.max(0) as usize;
    if old.len() <= limit {
        return vec![];
    }
    old.sort_by_key(|r| r.revision);
    let n = old.len() - limit;
    old.truncate(n);
    old
}

/// What `current` found or made: the revision for the parent's template, and
/// whether the parent's collisionCount must go up first (then retry).
pub enum Current {
    Found(Box<ControllerRevision>),
    Collision,
}

/// The revision for `template` among the parent's `owned` revisions, reused
/// (renumbered when it is not the newest: a rollback) or created.
pub async fn current<P: Resource>(
    api: &Api<ControllerRevision>,
    parent: &P,
    template: &PodTemplateSpec,
    owned: &[Arc<ControllerRevision>],
    collision_count: Option<i32>,
) -> Result<Current, Error> {
    let data = patch_of(template);
    let next = next_number(owned);
    let mut equal: Vec<&Arc<ControllerRevision>> =
        owned.iter().filter(|r| data_of(r) == Some(&data)).collect();
    equal.sort_by_key(|r| r.revision);
    if let Some(newest) = equal.last() {
        // Duplicates (a stale cache's double create) go; the newest stays.
        for dup in &equal[..equal.len() - 1] {
            delete(api, dup).await?;
        }
        let mut cr = (***newest).clone();
        if cr.revision < next - 1 {
            cr.revision = next;
            let name = cr.metadata.name.clone().unwrap_or_default();
            cr = api
                .replace(&cr, &owners::post_params())
                .await
                .map_err(Error::api("renumbering revision", name))?;
        }
        return Ok(Current::Found(Box::new(cr)));
    }
    let cr = revision_for(parent, template, next, collision_count);
    let name = cr.metadata.name.clone().unwrap_or_default();
    match api.create(&cr, &owners::post_params()).await {
        Ok(cr) => {
            tracing::info!(revision = %name, number = next, "created controller revision");
            Ok(Current::Found(Box::new(cr)))
        }
        Err(e) if e.code() == 409 => {
            let existing = api
                .get(&name)
                .await
                .map_err(Error::api("reading revision", name.clone()))?;
            let ours = owners::controller_of(&existing)
                .is_some_and(|r| Some(&r.uid) == parent.metadata().uid.as_ref());
            if ours && data_of(&existing) == Some(&data) {
                // Our own create the cache has not shown yet.
                return Ok(Current::Found(Box::new(existing)));
            }
            Ok(Current::Collision)
        }
        Err(e) => Err(Error::api("creating revision", name)(e)),
    }
}

pub async fn delete(api: &Api<ControllerRevision>, cr: &ControllerRevision) -> Result<(), Error> {
    let name = cr.metadata.name.clone().unwrap_or_default();
    let dp = DeleteParams {
        uid: cr.metadata.uid.clone(),
        ..Default::default()
    };
    match api.delete(&name, &dp).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == 404 || e.code() == 409 => Ok(()),
        Err(e) => Err(Error::api("deleting revision", name)(e)),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    use super::*;

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "x".to_string())].into()),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    fn parent() -> DaemonSet {
        DaemonSet {
            metadata: ObjectMeta {
                name: Some("ds".into()),
                namespace: Some("ns".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn data_is_a_replacing_template_patch() {
        let d = patch_of(&template("a"));
        assert_eq!(d["spec"]["template"]["$patch"], "replace");
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "a");
        let cr = revision_for(&parent(), &template("a"), 3, None);
        assert_eq!(cr.revision, 3);
        assert_eq!(template_of(&cr), Some(template("a")));
        let h = hash_of(&cr);
        assert_eq!(cr.metadata.name, Some(format!("ds-{h}")));
        assert_eq!(cr.metadata.labels.as_ref().unwrap()["app"], "x");
        let owner = &cr.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("DaemonSet", Some(true))
        );
    }

    #[test]
    fn hash_is_stable_and_changes_with_template_and_collisions() {
        let a = patch_of(&template("a"));
        assert_eq!(hash(&a, None), hash(&a, None));
        assert_ne!(hash(&a, None), hash(&patch_of(&template("b")), None));
        assert_ne!(hash(&a, None), hash(&a, Some(1)));
        assert!(hash(&a, None)
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }

    #[test]
    fn prune_keeps_limit_current_and_in_use() {
        let revs: Vec<Arc<ControllerRevision>> = (1..=6)
            .map(|i| {
                let mut cr = revision_for(&parent(), &template(&format!("i{i}")), i, None);
                cr.metadata.name = Some(format!("r{i}"));
                Arc::new(cr)
            })
            .collect();
        let names = |v: Vec<&Arc<ControllerRevision>>| -> Vec<String> {
            v.iter().map(|r| r.metadata.name.clone().unwrap()).collect()
        };
        // r6 is current, r2 still has a pod: of r1, r3, r4, r5 keep 2.
        let gone = to_prune(
            &revs,
            &["r6"],
            |r| r.metadata.name.as_deref() == Some("r2"),
            2,
        );
        assert_eq!(names(gone), ["r1", "r3"]);
        assert!(to_prune(&revs, &["r6"], |_| false, 10).is_empty());
        assert_eq!(names(to_prune(&revs, &["r6"], |_| false, 0)).len(), 5);
        assert_eq!(next_number(&revs), 7);
        assert_eq!(next_number(&[]), 1);
    }
}
