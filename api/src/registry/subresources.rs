//! Subresources with their own shape: `scale` (an autoscaling/v1 Scale over
//! `spec.replicas`), pod `binding` (the scheduler's one-shot assignment) and
//! pod `eviction` (a delete that respects PodDisruptionBudgets).

use serde_json::{json, Value};

use super::error::{ApiError, Cause, Reason};
use super::{
    kinds, parse_rv, prepare, DeleteOptions, Kind, LabelSelector, PatchType, Registry, WriteOptions,
};
use crate::store::ReadMode;

fn scale_of(v: &Value) -> Value {
    let m = &v["metadata"];
    // The Scale's selector is the label selector in its string form.
    let selector = super::columns::selector_string(&v["spec"]["selector"]);
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": v["spec"]["replicas"].as_i64().unwrap_or(0)},
        "status": {"replicas": v["status"]["replicas"].as_i64().unwrap_or(0), "selector": selector},
    })
}

fn require_scale(kind: &Kind) -> Result<(), ApiError> {
    if kind.scale {
        Ok(())
    } else {
        Err(ApiError::new(
            Reason::NotFound,
            format!(
                "the server could not find the requested resource ({}/scale)",
                kind.plural
            ),
        ))
    }
}

impl Registry {
    pub async fn get_scale(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        require_scale(kind)?;
        Ok(scale_of(
            &self.get(kind, ns, name, ReadMode::Linearizable).await?,
        ))
    }

    /// Replaces the Scale (`body`), or patches it (`patch`), and writes the new
    /// replica count to the object.
    pub async fn set_scale(
        &self,
        kind: &Kind,
        ns: Option<&str>,
        name: &str,
        change: ScaleChange<'_>,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        require_scale(kind)?;
        let current = self.get(kind, ns, name, ReadMode::Linearizable).await?;
        let scale = scale_of(&current);
        let new_scale = match change {
            ScaleChange::Replace(body) => body.clone(),
            ScaleChange::Patch(ty, patch) => match ty {
                PatchType::Json => super::patch::json_patch(&scale, patch)?,
                PatchType::Merge | PatchType::StrategicMerge => {
                    super::patch::merge_patch(&scale, patch)?
                }
                PatchType::Apply => {
                    return Err(ApiError::new(
                        Reason::UnsupportedMediaType,
                        "server-side apply is not supported on the scale subresource",
                    ))
                }
            },
        };
        let replicas = match &new_scale["spec"]["replicas"] {
            Value::Number(n) => n.as_i64().unwrap_or(-1),
            Value::Null => 0,
            other => {
                return Err(ApiError::bad_request(format!(
                    "spec.replicas must be an integer, not {other}"
                )))
            }
        };
        if replicas < 0 {
            return Err(ApiError::invalid(
                prepare::subject(kind, name),
                vec![Cause::invalid(
                    "spec.replicas",
                    replicas,
                    "must be greater than or equal to 0",
                )],
            ));
        }
        let expected = new_scale["metadata"]["resourceVersion"]
            .as_str()
            .filter(|rv| Some(*rv) != current["metadata"]["resourceVersion"].as_str())
            .map(parse_rv)
            .transpose()?;
        if expected.is_some() {
            return Err(ApiError::conflict(
                prepare::subject(kind, name),
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        let patch = json!({"spec": {"replicas": replicas}});
        let written = self
            .patch(
                kind,
                ns,
                name,
                (PatchType::Merge, &patch),
                super::Part::Main,
                opts,
            )
            .await?;
        Ok(scale_of(&written.object))
    }

    /// Binds a pod to a node, once: `pods/NAME/binding`. Answers the bound pod.
    pub async fn bind(
        &self,
        ns: Option<&str>,
        name: &str,
        binding: &Value,
        opts: &WriteOptions,
    ) -> Result<Value, ApiError> {
        let pods = kinds::by_kind("", "Pod").expect("Pod is a built-in kind");
        let node = binding["target"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if node.is_empty() {
            return Err(ApiError::invalid(
                prepare::subject(pods, name),
                vec![Cause::required("target.name")],
            ));
        }
        let expected_uid = binding["metadata"]["uid"].as_str().map(str::to_string);
        // The scheduler binds pods it has just seen in this replica's watch:
        // its copy is almost always current, and the swap's revision check
        // keeps a pod from being bound twice whatever the copy.
        let local_first = true;
        // The pod read is changed in place: no copy of it is made.
        self.read_modify_write_from(pods, ns, name, None, opts.dry_run, local_first, |pod| {
            if let Some(uid) = &expected_uid {
                if pod["metadata"]["uid"].as_str() != Some(uid) {
                    return Err(ApiError::conflict(
                        prepare::subject(pods, name),
                        "the pod's uid changed",
                    ));
                }
            }
            if let Some(current) = pod["spec"]["nodeName"].as_str().filter(|n| !n.is_empty()) {
                return Err(ApiError::conflict(
                    prepare::subject(pods, name),
                    &format!("pod {name} is already assigned to node {current:?}"),
                ));
            }
            if !pod["metadata"]["deletionTimestamp"].is_null() {
                return Err(ApiError::conflict(
                    prepare::subject(pods, name),
                    "pod is being deleted",
                ));
            }
            pod["spec"]["nodeName"] = json!(node);
            let mut conditions = match pod["status"]["conditions"].take() {
                Value::Array(items) => items,
                _ => Vec::new(),
            };
            conditions.retain(|c| c["type"] != "PodScheduled");
            conditions.push(json!({"type": "PodScheduled", "status": "True",
                "lastProbeTime": null, "lastTransitionTime": prepare::now_rfc3339()}));
            pod["status"]["conditions"] = Value::Array(conditions);
            // A pod is bound from having no node: it always changes.
            Ok(true)
        })
        .await
    }

    /// Evicts a pod unless a PodDisruptionBudget forbids it now.
    pub async fn evict(
        &self,
        ns: Option<&str>,
        name: &str,
        eviction: &Value,
    ) -> Result<(), ApiError> {
        let pods = kinds::by_kind("", "Pod").expect("Pod is a built-in kind");
        let pdbs = kinds::by_kind("policy", "PodDisruptionBudget").expect("PDB is a built-in kind");
        let pod = self.get(pods, ns, name, ReadMode::Linearizable).await?;
        let budgets = self.list(pdbs, ns, &Default::default()).await?;
        for pdb in budgets["items"].as_array().into_iter().flatten() {
            let selector = LabelSelector::from_object(&pdb["spec"]["selector"]);
            if selector.is_empty() || !selector.matches(&pod["metadata"]["labels"]) {
                continue;
            }
            let allowed = pdb["status"]["disruptionsAllowed"].as_i64().unwrap_or(0);
            if allowed < 1 {
                let mut err = ApiError::new(
                    Reason::TooManyRequests,
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                );
                err.causes.push(Cause {
                    reason: "DisruptionBudget",
                    field: String::new(),
                    message: format!(
                        "The disruption budget {} needs {} healthy pods and has {} currently",
                        pdb["metadata"]["name"].as_str().unwrap_or_default(),
                        pdb["status"]["desiredHealthy"].as_i64().unwrap_or(0),
                        pdb["status"]["currentHealthy"].as_i64().unwrap_or(0),
                    ),
                });
                return Err(err);
            }
            let pdb_name = pdb["metadata"]["name"].as_str().unwrap_or_default();
            let mut status = pdb["status"].clone();
            status["disruptionsAllowed"] = json!(allowed - 1);
            status["disruptedPods"][name] = json!(prepare::now_rfc3339());
            let mut body = pdb.clone();
            body["status"] = status;
            self.update(
                pdbs,
                ns,
                pdb_name,
                body,
                super::Part::Status,
                &WriteOptions {
                    manager: "balsa-eviction".into(),
                    ..Default::default()
                },
            )
            .await?;
        }
        let delete = &eviction["deleteOptions"];
        let opts = DeleteOptions {
            grace_period: delete["gracePeriodSeconds"].as_i64(),
            uid: delete["preconditions"]["uid"].as_str().map(str::to_string),
            resource_version: delete["preconditions"]["resourceVersion"]
                .as_str()
                .map(str::to_string),
            ..Default::default()
        };
        self.delete(pods, ns, name, &opts).await?;
        Ok(())
    }
}

/// A write to the scale subresource.
pub enum ScaleChange<'a> {
    Replace(&'a Value),
    Patch(PatchType, &'a Value),
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    use serde_json::json;

    use super::*;
    use crate::store::hooked::Hooked;
    use crate::store::{Object, ResourceKey, Store, StoreError};

    /// A replica whose local reads lag behind: a `Local` get answers the copy
    /// `freeze` took (or not found); everything else is current.
    struct Lagging {
        store: Arc<Hooked>,
        frozen: Arc<Mutex<HashMap<ResourceKey, Object>>>,
    }

    impl Lagging {
        fn new() -> Self {
            let frozen: Arc<Mutex<HashMap<ResourceKey, Object>>> = Arc::default();
            let copies = frozen.clone();
            let store = Hooked::new().on_get(move |key, read| {
                (read == ReadMode::Local).then(|| {
                    let copies = copies.lock().unwrap();
                    copies
                        .get(key)
                        .cloned()
                        .ok_or_else(|| StoreError::not_found(key))
                })
            });
            Self {
                store: Arc::new(store),
                frozen,
            }
        }

        async fn freeze(&self, key: &ResourceKey) {
            let o = self
                .store
                .real
                .get(key, ReadMode::Linearizable)
                .await
                .unwrap();
            self.frozen.lock().unwrap().insert(key.clone(), o);
        }
    }

    fn binding(name: &str, uid: Option<&str>, node: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": "default", "uid": uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node}})
    }

    /// A registry over a `Lagging` store, with namespace `default`.
    async fn with_default_namespace() -> (Lagging, Registry) {
        let store = Lagging::new();
        let reg = Registry::new(store.store.clone());
        let nss = kinds::by_kind("", "Namespace").unwrap();
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default"}});
        reg.create(nss, None, ns, &WriteOptions::default())
            .await
            .unwrap();
        (store, reg)
    }

    async fn create_pod(reg: &Registry, name: &str) -> Value {
        let pods = kinds::by_kind("", "Pod").unwrap();
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "app"}]}});
        reg.create(pods, Some("default"), pod, &WriteOptions::default())
            .await
            .unwrap()
            .object
    }

    /// A binding sets the node and turns PodScheduled True, replacing the
    /// scheduler's earlier False and keeping every other condition; a dry
    /// run answers the bound pod and stores nothing.
    #[tokio::test]
    async fn a_binding_replaces_the_scheduled_condition_and_keeps_the_rest() {
        let (store, reg) = with_default_namespace().await;
        let pods = kinds::by_kind("", "Pod").unwrap();
        let mut p = create_pod(&reg, "p").await;
        p["status"]["conditions"] = json!([
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"},
            {"type": "ContainersReady", "status": "False"},
        ]);
        reg.update(
            pods,
            Some("default"),
            "p",
            p,
            super::super::Part::Status,
            &WriteOptions::default(),
        )
        .await
        .unwrap();
        let key = Registry::key(pods, Some("default"), "p");
        store.freeze(&key).await;
        let types = |pod: &Value| -> Vec<(String, String)> {
            let field = |c: &Value, f: &str| c[f].as_str().unwrap_or_default().to_string();
            pod["status"]["conditions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (field(c, "type"), field(c, "status")))
                .collect()
        };

        let dry = WriteOptions {
            dry_run: true,
            ..Default::default()
        };
        let planned = reg
            .bind(Some("default"), "p", &binding("p", None, "n1"), &dry)
            .await
            .unwrap();
        assert_eq!(planned["spec"]["nodeName"], "n1");
        let stored = reg
            .get(pods, Some("default"), "p", ReadMode::Linearizable)
            .await
            .unwrap();
        assert!(stored["spec"]["nodeName"].is_null(), "{stored}");

        let bound = reg
            .bind(
                Some("default"),
                "p",
                &binding("p", None, "n1"),
                &WriteOptions::default(),
            )
            .await
            .unwrap();
        let want = vec![
            ("ContainersReady".to_string(), "False".to_string()),
            ("PodScheduled".to_string(), "True".to_string()),
        ];
        assert_eq!(types(&bound), want);
        let stored = reg
            .get(pods, Some("default"), "p", ReadMode::Linearizable)
            .await
            .unwrap();
        assert_eq!(stored["spec"]["nodeName"], "n1");
        assert_eq!(types(&stored), want);
        assert_eq!(stored, bound);
    }

    #[tokio::test]
    async fn a_binding_from_a_stale_local_copy_never_binds_twice() {
        let (store, reg) = with_default_namespace().await;
        let pods = kinds::by_kind("", "Pod").unwrap();
        let p = create_pod(&reg, "p").await;
        let uid = p["metadata"]["uid"].as_str().map(str::to_string);
        store
            .freeze(&Registry::key(pods, Some("default"), "p"))
            .await;
        let opts = WriteOptions::default();

        let bound = reg
            .bind(
                Some("default"),
                "p",
                &binding("p", uid.as_deref(), "n1"),
                &opts,
            )
            .await
            .unwrap();
        assert_eq!(bound["spec"]["nodeName"], "n1");
        // The local copy still shows the pod unbound: the swap on its
        // revision fails, and the linearizable read refuses.
        let again = reg
            .bind(
                Some("default"),
                "p",
                &binding("p", uid.as_deref(), "n2"),
                &opts,
            )
            .await
            .unwrap_err();
        assert_eq!(again.reason, Reason::Conflict);
        assert!(
            again.message.contains("already assigned"),
            "{}",
            again.message
        );
        let now = reg
            .get(pods, Some("default"), "p", ReadMode::Linearizable)
            .await
            .unwrap();
        assert_eq!(now["spec"]["nodeName"], "n1");

        // A pod the local copy does not have yet binds through the
        // linearizable read.
        let q = create_pod(&reg, "q").await;
        let quid = q["metadata"]["uid"].as_str().map(str::to_string);
        let bound = reg
            .bind(
                Some("default"),
                "q",
                &binding("q", quid.as_deref(), "n1"),
                &opts,
            )
            .await
            .unwrap();
        assert_eq!(bound["spec"]["nodeName"], "n1");

        // A stale copy of a pod deleted and created again under the same
        // name: the binding names the new uid and succeeds, the old uid
        // is refused.
        store
            .freeze(&Registry::key(pods, Some("default"), "q"))
            .await;
        let del = DeleteOptions {
            grace_period: Some(0),
            ..Default::default()
        };
        reg.delete(pods, Some("default"), "q", &del).await.unwrap();
        let q2 = create_pod(&reg, "q").await;
        let q2uid = q2["metadata"]["uid"].as_str().map(str::to_string);
        let stale = reg
            .bind(
                Some("default"),
                "q",
                &binding("q", quid.as_deref(), "n2"),
                &opts,
            )
            .await
            .unwrap_err();
        assert_eq!(stale.reason, Reason::Conflict);
        let bound = reg
            .bind(
                Some("default"),
                "q",
                &binding("q", q2uid.as_deref(), "n2"),
                &opts,
            )
            .await
            .unwrap();
        assert_eq!(bound["spec"]["nodeName"], "n2");
    }
}
