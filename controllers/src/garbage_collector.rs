//! The garbage collector: the ownerReferences graph over the kinds it
//! caches, and the three deletion policies.
//!
//! ```text
//!  caches of every informed kind ──► snapshot: Node {uid, refs, finalizers}
//!    └─ decide(nodes) (pure) ──► Delete dependent (Background|Foreground)
//!                                Unlink dependent from owners
//!                                RemoveFinalizer of owner (orphan |
//!                                  foregroundDeletion once no blocking
//!                                  dependent is left)
//!    └─ apply: a dependent is deleted only after its owners are read back
//!       from the API as gone (the caches of two kinds may disagree)
//! ```
//!
//! Dependents whose owners are all gone (or deleted in the foreground) are
//! deleted; dependents with some live owner lose the references to the gone
//! ones. Owners outside the informed kinds are never judged gone.
//!
//! A scan looks only at the objects `decide` can act on (those with owner
//! references or being deleted) and at the owners they name, looked up by
//! name in the dependent's namespace as upstream's collector resolves them:
//! an object with neither is inert, and the caches hold every ConfigMap,
//! Secret and Pod, so a scan over everything would cost every write of
//! those kinds a walk of all of them.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use balsa_api::client::{
    Api, DeleteParams, Informer, Leadership, ObjectKey, Patch, PatchParams, Resource, Store,
};
use balsa_api::registry::ApiError;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use serde_json::json;
use tokio::sync::Notify;

use crate::owners::MANAGER;

pub const ORPHAN: &str = "orphan";
pub const FOREGROUND: &str = "foregroundDeletion";

/// One object as the collector sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
    pub resource_version: Option<String>,
    pub owners: Vec<OwnerReference>,
    pub finalizers: Vec<String>,
    pub deleting: bool,
}

/// (apiVersion, kind)
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Kind {
    pub api_version: String,
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Every owner is gone or deleted in the foreground.
    Delete {
        node: Node,
        foreground: bool,
    },
    /// Some owner lives: drop the references to the others.
    Unlink {
        node: Node,
        owner_uids: Vec<String>,
    },
    RemoveFinalizer {
        node: Node,
        finalizer: &'static str,
    },
}

/// What to do, from a snapshot of every informed object.
pub fn decide(nodes: &[Node], informed: &HashSet<Kind>) -> Vec<Decision> {
    let by_uid: HashMap<&str, &Node> = nodes.iter().map(|n| (n.uid.as_str(), n)).collect();
    let mut dependents: HashMap<&str, Vec<&Node>> = HashMap::new();
    for n in nodes {
        for r in &n.owners {
            dependents.entry(r.uid.as_str()).or_default().push(n);
        }
    }
    let mut out = Vec::new();
    for n in nodes {
        let deps = dependents
            .get(n.uid.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        // An owner being deleted with a policy.
        if n.deleting && n.finalizers.iter().any(|f| f == ORPHAN) {
            let mut linked = false;
            for d in deps {
                linked = true;
                out.push(Decision::Unlink {
                    node: (*d).clone(),
                    owner_uids: vec![n.uid.clone()],
                });
            }
            if !linked {
                out.push(Decision::RemoveFinalizer {
                    node: n.clone(),
                    finalizer: ORPHAN,
                });
            }
            continue;
        }
        if n.deleting && n.finalizers.iter().any(|f| f == FOREGROUND) {
            let blocking = deps.iter().any(|d| {
                d.owners
                    .iter()
                    .any(|r| r.uid == n.uid && r.block_owner_deletion == Some(true))
            });
            if !blocking {
                out.push(Decision::RemoveFinalizer {
                    node: n.clone(),
                    finalizer: FOREGROUND,
                });
            }
        }
        // A dependent: judge its owners.
        if n.owners.is_empty() || n.deleting {
            continue;
        }
        let (mut solid, mut gone, mut waiting) = (vec![], vec![], vec![]);
        for r in &n.owners {
            let kind = Kind {
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
            };
            match by_uid.get(r.uid.as_str()) {
                Some(o) if o.deleting && o.finalizers.iter().any(|f| f == FOREGROUND) => {
                    waiting.push(r.uid.clone())
                }
                Some(o) if o.deleting && o.finalizers.iter().any(|f| f == ORPHAN) => {
                    // The orphan pass unlinks it.
                    solid.push(r.uid.clone())
                }
                Some(_) => solid.push(r.uid.clone()),
                None if informed.contains(&kind) => gone.push(r.uid.clone()),
                None => solid.push(r.uid.clone()),
            }
        }
        if !solid.is_empty() {
            if !gone.is_empty() || !waiting.is_empty() {
                let mut uids = gone;
                uids.extend(waiting);
                out.push(Decision::Unlink {
                    node: n.clone(),
                    owner_uids: uids,
                });
            }
            continue;
        }
        let has_dependents = !deps.is_empty();
        out.push(Decision::Delete {
            node: n.clone(),
            foreground: !waiting.is_empty() && has_dependents,
        });
    }
    out
}

/// `candidates` plus the live owners they reference that are not among
/// them, found by `lookup(kind, namespace, name)` in the dependent's
/// namespace (then cluster-wide, for a cluster-scoped owner). An owner found
/// under that name with another uid is a different object: the reference's
/// owner is gone. Everything `decide` reads of objects outside this set is
/// that they are inert, so it decides the same as over every object.
pub fn with_owners(
    candidates: Vec<Node>,
    lookup: impl Fn(&Kind, Option<&str>, &str) -> Option<Node>,
) -> Vec<Node> {
    let mut known: HashSet<String> = candidates.iter().map(|n| n.uid.clone()).collect();
    let mut owners = Vec::new();
    for n in &candidates {
        for r in &n.owners {
            if known.contains(&r.uid) {
                continue;
            }
            let kind = Kind {
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
            };
            let found = lookup(&kind, n.namespace.as_deref(), &r.name)
                .filter(|o| o.uid == r.uid)
                .or_else(|| {
                    n.namespace.as_ref()?;
                    lookup(&kind, None, &r.name).filter(|o| o.uid == r.uid)
                });
            if let Some(owner) = found {
                known.insert(owner.uid.clone());
                owners.push(owner);
            }
        }
    }
    let mut out = candidates;
    out.extend(owners);
    out
}

// ---- the runtime side --------------------------------------------------

type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One informed kind: its cache and its API, behind one object-safe face.
pub trait Graph: Send + Sync {
    fn kind(&self) -> Kind;
    /// The cached objects `decide` may act on: those with owner references
    /// or a deletion timestamp.
    fn candidates(&self) -> Vec<Node>;
    /// The cached object of this name, if any.
    fn node(&self, ns: Option<&str>, name: &str) -> Option<Node>;
    fn ready(&self) -> bool;
    /// The uid of the live object, None if there is none.
    fn live_uid<'a>(
        &'a self,
        ns: Option<&'a str>,
        name: &'a str,
    ) -> BoxFut<'a, Result<Option<String>, ApiError>>;
    fn delete<'a>(&'a self, node: &'a Node, policy: &'a str) -> BoxFut<'a, Result<(), ApiError>>;
    fn patch<'a>(
        &'a self,
        node: &'a Node,
        patch: serde_json::Value,
    ) -> BoxFut<'a, Result<(), ApiError>>;
}

pub struct Typed<K: Resource> {
    store: Store<K>,
    api: Api<K>,
}

impl<K: Resource> Typed<K> {
    pub fn new(informer: &Informer<K>, api: Api<K>) -> Self {
        Self {
            store: informer.store(),
            api,
        }
    }

    fn node_of(&self, o: &K) -> Node {
        let m = o.metadata();
        Node {
            kind: self.kind(),
            namespace: m.namespace.clone(),
            name: m.name.clone().unwrap_or_default(),
            uid: m.uid.clone().unwrap_or_default(),
            resource_version: m.resource_version.clone(),
            owners: m.owner_references.clone().unwrap_or_default(),
            finalizers: m.finalizers.clone().unwrap_or_default(),
            deleting: m.deletion_timestamp.is_some(),
        }
    }

    fn api_for(&self, ns: Option<&str>) -> Api<K> {
        match ns {
            Some(ns) => self.api.within(ns),
            None => self.api.clone(),
        }
    }
}

impl<K: Resource> Graph for Typed<K> {
    fn kind(&self) -> Kind {
        Kind {
            api_version: K::API_VERSION.into(),
            kind: K::KIND.into(),
        }
    }

    fn candidates(&self) -> Vec<Node> {
        self.store
            .filter(|o| {
                let m = o.metadata();
                m.deletion_timestamp.is_some()
                    || m.owner_references.as_ref().is_some_and(|r| !r.is_empty())
            })
            .iter()
            .map(|o| self.node_of(o))
            .collect()
    }

    fn node(&self, ns: Option<&str>, name: &str) -> Option<Node> {
        self.store
            .get(&ObjectKey::new(ns, name))
            .map(|o| self.node_of(&o))
    }

    fn ready(&self) -> bool {
        self.store.is_ready()
    }

    fn live_uid<'a>(
        &'a self,
        ns: Option<&'a str>,
        name: &'a str,
    ) -> BoxFut<'a, Result<Option<String>, ApiError>> {
        Box::pin(async move {
            Ok(self
                .api_for(ns)
                .get_opt(name)
                .await?
                .and_then(|o| o.metadata().uid.clone()))
        })
    }

    fn delete<'a>(&'a self, node: &'a Node, policy: &'a str) -> BoxFut<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let dp = DeleteParams {
                uid: Some(node.uid.clone()),
                propagation_policy: Some(policy.into()),
                ..Default::default()
            };
            match self
                .api_for(node.namespace.as_deref())
                .delete(&node.name, &dp)
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if e.code() == 404 || e.code() == 409 => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    fn patch<'a>(
        &'a self,
        node: &'a Node,
        patch: serde_json::Value,
    ) -> BoxFut<'a, Result<(), ApiError>> {
        Box::pin(async move {
            match self
                .api_for(node.namespace.as_deref())
                .patch(
                    &node.name,
                    &PatchParams::apply(MANAGER),
                    &Patch::Merge(patch),
                )
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if e.code() == 404 => Ok(()),
                Err(e) => Err(e),
            }
        })
    }
}

/// Runs the collector over `graphs` while leading, scanning after changes
/// (`wake`) and at least every few seconds.
pub async fn run(graphs: Vec<Arc<dyn Graph>>, wake: Arc<Notify>, leadership: Leadership) {
    let by_kind: BTreeMap<Kind, Arc<dyn Graph>> =
        graphs.iter().map(|g| (g.kind(), g.clone())).collect();
    let informed: HashSet<Kind> = by_kind.keys().cloned().collect();
    loop {
        leadership.wait_for(true).await;
        if !graphs.iter().all(|g| g.ready()) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let began = std::time::Instant::now();
        let candidates: Vec<Node> = graphs.iter().flat_map(|g| g.candidates()).collect();
        let nodes = with_owners(candidates, |kind, ns, name| {
            by_kind.get(kind).and_then(|g| g.node(ns, name))
        });
        let decisions = decide(&nodes, &informed);
        let took = began.elapsed();
        let mut failed = false;
        for d in &decisions {
            if !leadership.is_leader() {
                break;
            }
            if let Err(e) = apply(d, &by_kind).await {
                tracing::warn!(error = %e, decision = ?short(d), "garbage collection step failed");
                failed = true;
            }
        }
        // Wait for the next change, or look again soon after a failure or a
        // step whose effect the caches have not shown yet.
        let pause = if failed || !decisions.is_empty() {
            Duration::from_millis(500)
        } else {
            Duration::from_secs(10)
        };
        // A pass costs O(every cached object): after a change, wait at least
        // ten times as long as deciding took, so a stream of changes (pods
        // starting at 1,000/s) costs the leader ~10% of a core, not all of it.
        let settle = Duration::from_millis(20).max(took * 10);
        tokio::select! {
            _ = wake.notified() => tokio::time::sleep(settle).await,
            _ = tokio::time::sleep(pause) => {}
            _ = leadership.wait_for(false) => {}
        }
    }
}

fn short(d: &Decision) -> String {
    let (what, n) = match d {
        Decision::Delete { node, .. } => ("delete", node),
        Decision::Unlink { node, .. } => ("unlink", node),
        Decision::RemoveFinalizer { node, .. } => ("finalize", node),
    };
    format!(
        "{what} {} {}/{}",
        n.kind.kind,
        n.namespace.as_deref().unwrap_or(""),
        n.name
    )
}

async fn apply(d: &Decision, graphs: &BTreeMap<Kind, Arc<dyn Graph>>) -> Result<(), ApiError> {
    let graph = |k: &Kind| graphs.get(k).cloned();
    match d {
        Decision::Delete { node, foreground } => {
            // Confirm with the API that no owner lives (another kind's cache
            // may lag behind this one's).
            for r in &node.owners {
                let k = Kind {
                    api_version: r.api_version.clone(),
                    kind: r.kind.clone(),
                };
                let Some(g) = graph(&k) else { return Ok(()) };
                if let Some(uid) = g.live_uid(node.namespace.as_deref(), &r.name).await? {
                    if uid == r.uid {
                        // Alive: if it is being deleted in the foreground, that
                        // is what we expect; otherwise leave the dependent.
                        let waiting = g.node(node.namespace.as_deref(), &r.name).is_some_and(|n| {
                            n.uid == uid
                                && n.deleting
                                && n.finalizers.iter().any(|f| f == FOREGROUND)
                        });
                        if !waiting {
                            return Ok(());
                        }
                    }
                }
            }
            let Some(g) = graph(&node.kind) else {
                return Ok(());
            };
            let policy = if *foreground {
                "Foreground"
            } else {
                "Background"
            };
            tracing::info!(kind = %node.kind.kind, object = %node.name, policy, "deleting dependent whose owners are gone");
            g.delete(node, policy).await
        }
        Decision::Unlink { node, owner_uids } => {
            let Some(g) = graph(&node.kind) else {
                return Ok(());
            };
            let refs: Vec<&OwnerReference> = node
                .owners
                .iter()
                .filter(|r| !owner_uids.contains(&r.uid))
                .collect();
            g.patch(node, json!({"metadata": {"ownerReferences": refs, "resourceVersion": node.resource_version}}))
                .await
        }
        Decision::RemoveFinalizer { node, finalizer } => {
            let Some(g) = graph(&node.kind) else {
                return Ok(());
            };
            let rest: Vec<&String> = node.finalizers.iter().filter(|f| f != finalizer).collect();
            g.patch(
                node,
                json!({"metadata": {"finalizers": rest, "resourceVersion": node.resource_version}}),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(k: &str) -> Kind {
        Kind {
            api_version: if k == "Pod" { "v1" } else { "apps/v1" }.into(),
            kind: k.into(),
        }
    }

    fn node(k: &str, uid: &str, owners: &[(&str, &str, bool)]) -> Node {
        Node {
            kind: kind(k),
            namespace: Some("ns".into()),
            name: uid.into(),
            uid: uid.into(),
            resource_version: Some("1".into()),
            owners: owners
                .iter()
                .map(|(k, u, block)| OwnerReference {
                    api_version: kind(k).api_version,
                    kind: k.to_string(),
                    name: u.to_string(),
                    uid: u.to_string(),
                    controller: Some(true),
                    block_owner_deletion: Some(*block),
                })
                .collect(),
            finalizers: vec![],
            deleting: false,
        }
    }

    fn deleting(mut n: Node, f: &str) -> Node {
        n.deleting = true;
        n.finalizers = vec![f.into()];
        n
    }

    fn informed() -> HashSet<Kind> {
        ["Pod", "ReplicaSet", "Deployment"]
            .into_iter()
            .map(kind)
            .collect()
    }

    fn names(ds: &[Decision]) -> Vec<String> {
        let mut v: Vec<String> = ds.iter().map(short).collect();
        v.sort();
        v
    }

    #[test]
    fn dangling_dependents_are_deleted_in_background() {
        let nodes = vec![
            node("ReplicaSet", "rs", &[("Deployment", "gone", true)]),
            node("Pod", "p", &[("ReplicaSet", "rs", true)]),
            // An owner of a kind not informed on is never judged gone.
            node("Pod", "q", &[("Job", "j", true)]),
        ];
        let ds = decide(&nodes, &informed());
        assert_eq!(ds.len(), 1);
        assert!(matches!(&ds[0], Decision::Delete { node, foreground: false } if node.uid == "rs"));
    }

    #[test]
    fn a_live_owner_keeps_the_dependent_and_loses_the_gone_ones() {
        let nodes = vec![
            node("ReplicaSet", "rs", &[]),
            node(
                "Pod",
                "p",
                &[("ReplicaSet", "rs", true), ("ReplicaSet", "gone", false)],
            ),
        ];
        let ds = decide(&nodes, &informed());
        assert_eq!(ds.len(), 1);
        assert!(
            matches!(&ds[0], Decision::Unlink { node, owner_uids } if node.uid == "p" && owner_uids == &["gone"])
        );
    }

    #[test]
    fn foreground_waits_for_blocking_dependents() {
        let d = deleting(node("Deployment", "d", &[]), FOREGROUND);
        let rs = node("ReplicaSet", "rs", &[("Deployment", "d", true)]);
        let pod = node("Pod", "p", &[("ReplicaSet", "rs", true)]);
        let ds = decide(&[d.clone(), rs, pod], &informed());
        // The RS has dependents of its own: deleted in the foreground too;
        // the deployment keeps its finalizer.
        assert_eq!(names(&ds), ["delete ReplicaSet ns/rs"]);
        assert!(matches!(
            &ds[0],
            Decision::Delete {
                foreground: true,
                ..
            }
        ));
        // RS gone: nothing blocks the deployment any more.
        let ds = decide(std::slice::from_ref(&d), &informed());
        assert_eq!(names(&ds), ["finalize Deployment ns/d"]);
        // A non-blocking dependent does not hold the owner but is deleted.
        let loose = node("Pod", "loose", &[("Deployment", "d", false)]);
        let ds = decide(&[d, loose], &informed());
        assert_eq!(
            names(&ds),
            ["delete Pod ns/loose", "finalize Deployment ns/d"]
        );
    }

    #[test]
    fn orphan_unlinks_then_finalizes() {
        let rs = deleting(node("ReplicaSet", "rs", &[]), ORPHAN);
        let pod = node("Pod", "p", &[("ReplicaSet", "rs", true)]);
        let ds = decide(&[rs.clone(), pod], &informed());
        assert_eq!(names(&ds), ["unlink Pod ns/p"]);
        let ds = decide(&[rs], &informed());
        assert_eq!(names(&ds), ["finalize ReplicaSet ns/rs"]);
    }

    /// Deciding over the candidates and their owners gives what deciding
    /// over every object gives, and leaves inert objects out.
    #[test]
    fn candidates_with_their_owners_decide_as_everything_does() {
        let with = |mut n: Node, uid: &str| {
            n.uid = uid.into();
            n
        };
        let everything = vec![
            node("Deployment", "d", &[]),
            node("ReplicaSet", "rs", &[("Deployment", "d", true)]),
            node(
                "Pod",
                "p",
                &[("ReplicaSet", "rs", true), ("ReplicaSet", "gone", false)],
            ),
            // Named like an owner but another object (recreated): the
            // reference's owner is gone.
            with(node("ReplicaSet", "old", &[]), "new-uid"),
            node("Pod", "q", &[("ReplicaSet", "old", true)]),
            // An owner deleted with the orphan policy, and one in the foreground.
            deleting(node("ReplicaSet", "o", &[]), ORPHAN),
            node("Pod", "r", &[("ReplicaSet", "o", true)]),
            deleting(node("Deployment", "f", &[]), FOREGROUND),
            node("ReplicaSet", "s", &[("Deployment", "f", true)]),
            // Inert objects: no owners, not deleting, nobody's owner.
            node("Pod", "lonely", &[]),
            node("ReplicaSet", "idle", &[]),
        ];
        let candidates: Vec<Node> = everything
            .iter()
            .filter(|n| n.deleting || !n.owners.is_empty())
            .cloned()
            .collect();
        let lookup = |k: &Kind, ns: Option<&str>, name: &str| {
            everything
                .iter()
                .find(|n| &n.kind == k && n.namespace.as_deref() == ns && n.name == name)
                .cloned()
        };
        let relevant = with_owners(candidates, lookup);
        let mut uids: Vec<&str> = relevant.iter().map(|n| n.uid.as_str()).collect();
        uids.sort();
        assert_eq!(uids, ["d", "f", "o", "p", "q", "r", "rs", "s"]);
        let all = decide(&everything, &informed());
        assert_eq!(names(&decide(&relevant, &informed())), names(&all));
        assert_eq!(
            names(&all),
            [
                "delete Pod ns/q",
                "delete ReplicaSet ns/s",
                "unlink Pod ns/p",
                "unlink Pod ns/r"
            ]
        );
    }
}
