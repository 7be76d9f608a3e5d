//! The one table of built-in kinds: names, scope, subresources, typed model,
//! per-kind rules (defaults, validation) and printer columns. Adding a kind is
//! adding a row.

use k8s_openapi::api::{
    apps::v1 as apps, autoscaling::v2 as autoscaling, batch::v1 as batch,
    coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
    events::v1 as events, policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as scheduling,
    storage::v1 as storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::columns::{self, Column};
use super::rules::{self, Rules};
use super::schema::{round_trip, DecodeError};

/// One built-in kind and how the registry treats it.
pub struct Kind {
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    pub short: &'static [&'static str],
    /// `kubectl get all` shows the kinds in category `all`.
    pub categories: &'static [&'static str],
    /// Has a `status` subresource: the main resource ignores status changes, the
    /// subresource ignores everything else, and spec changes bump generation.
    pub status: bool,
    /// Has a `scale` subresource over `spec.replicas`.
    pub scale: bool,
    /// Decodes through the typed model and back.
    pub model: fn(&Value) -> Result<Value, DecodeError>,
    /// The OpenAPI schema of the typed model.
    pub schema: fn(&mut SchemaGenerator) -> Schema,
    pub rules: Rules,
    pub columns: &'static [Column],
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.api_version(), self.kind)
    }
}

impl Kind {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn singular(&self) -> String {
        self.kind.to_ascii_lowercase()
    }

    /// The schema name Kubernetes uses: `io.k8s.api.apps.v1.Deployment`.
    pub fn schema_name(&self) -> String {
        let mut g = SchemaGenerator::default();
        let schema = (self.schema)(&mut g);
        schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.rsplit('/').next())
            .map(str::to_string)
            .unwrap_or_else(|| self.kind.to_string())
    }
}

fn model<K: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, DecodeError> {
    round_trip::<K>(v)
}

fn schema<K: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<K>()
}

/// Defaults for a row; rows override what differs.
macro_rules! kind {
    ($ty:ty, $group:expr, $version:expr, $kind:expr, $plural:expr, $namespaced:expr
     $(, $field:ident = $value:expr)* $(,)?) => {
        #[allow(clippy::needless_update)]
        Kind {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            namespaced: $namespaced,
            model: model::<$ty>,
            schema: schema::<$ty>,
            $($field: $value,)*
            ..Kind {
                group: "",
                version: "",
                kind: "",
                plural: "",
                namespaced: true,
                short: &[],
                categories: &[],
                status: false,
                scale: false,
                model: model::<Value>,
                schema: schema::<Value>,
                rules: rules::NONE,
                columns: columns::DEFAULT,
            }
        }
    };
}

pub static KINDS: &[Kind] = &[
    kind!(
        core::Namespace,
        "",
        "v1",
        "Namespace",
        "namespaces",
        false,
        short = &["ns"],
        status = true,
        rules = rules::NAMESPACE,
        columns = columns::NAMESPACE
    ),
    kind!(
        core::Node,
        "",
        "v1",
        "Node",
        "nodes",
        false,
        short = &["no"],
        status = true,
        rules = rules::NODE,
        columns = columns::NODE
    ),
    kind!(
        core::Pod,
        "",
        "v1",
        "Pod",
        "pods",
        true,
        short = &["po"],
        categories = &["all"],
        status = true,
        rules = rules::POD,
        columns = columns::POD
    ),
    kind!(
        core::Service,
        "",
        "v1",
        "Service",
        "services",
        true,
        short = &["svc"],
        categories = &["all"],
        status = true,
        rules = rules::SERVICE,
        columns = columns::SERVICE
    ),
    kind!(
        core::Endpoints,
        "",
        "v1",
        "Endpoints",
        "endpoints",
        true,
        short = &["ep"],
        columns = columns::ENDPOINTS
    ),
    kind!(
        core::ConfigMap,
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        true,
        short = &["cm"],
        rules = rules::CONFIG_MAP,
        columns = columns::CONFIG_MAP
    ),
    kind!(
        core::Secret,
        "",
        "v1",
        "Secret",
        "secrets",
        true,
        rules = rules::SECRET,
        columns = columns::SECRET
    ),
    kind!(
        core::Event,
        "",
        "v1",
        "Event",
        "events",
        true,
        short = &["ev"],
        rules = rules::EVENT,
        columns = columns::EVENT
    ),
    kind!(
        core::ServiceAccount,
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        true,
        short = &["sa"]
    ),
    kind!(
        core::ResourceQuota,
        "",
        "v1",
        "ResourceQuota",
        "resourcequotas",
        true,
        short = &["quota"],
        status = true,
        rules = rules::RESOURCE_QUOTA
    ),
    kind!(
        core::LimitRange,
        "",
        "v1",
        "LimitRange",
        "limitranges",
        true,
        short = &["limits"]
    ),
    kind!(
        core::PersistentVolume,
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        false,
        short = &["pv"],
        status = true
    ),
    kind!(
        core::PersistentVolumeClaim,
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
        short = &["pvc"],
        status = true,
        rules = rules::PERSISTENT_VOLUME_CLAIM,
        columns = columns::PERSISTENT_VOLUME_CLAIM
    ),
    kind!(
        apps::Deployment,
        "apps",
        "v1",
        "Deployment",
        "deployments",
        true,
        short = &["deploy"],
        categories = &["all"],
        status = true,
        scale = true,
        rules = rules::DEPLOYMENT,
        columns = columns::DEPLOYMENT
    ),
    kind!(
        apps::ReplicaSet,
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        true,
        short = &["rs"],
        categories = &["all"],
        status = true,
        scale = true,
        rules = rules::REPLICA_SET,
        columns = columns::REPLICA_SET
    ),
    kind!(
        apps::DaemonSet,
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        true,
        short = &["ds"],
        categories = &["all"],
        status = true,
        rules = rules::DAEMON_SET,
        columns = columns::DAEMON_SET
    ),
    kind!(
        apps::StatefulSet,
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        true,
        short = &["sts"],
        categories = &["all"],
        status = true,
        scale = true,
        rules = rules::STATEFUL_SET,
        columns = columns::STATEFUL_SET
    ),
    kind!(
        apps::ControllerRevision,
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        true,
        columns = columns::CONTROLLER_REVISION
    ),
    kind!(
        batch::Job,
        "batch",
        "v1",
        "Job",
        "jobs",
        true,
        categories = &["all"],
        status = true,
        rules = rules::JOB,
        columns = columns::JOB
    ),
    kind!(
        batch::CronJob,
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        true,
        short = &["cj"],
        categories = &["all"],
        status = true,
        rules = rules::CRON_JOB,
        columns = columns::CRON_JOB
    ),
    kind!(
        coordination::Lease,
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        true
    ),
    kind!(
        discovery::EndpointSlice,
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        true
    ),
    kind!(
        events::Event,
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        true,
        short = &["ev"]
    ),
    kind!(
        autoscaling::HorizontalPodAutoscaler,
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        true,
        short = &["hpa"],
        categories = &["all"],
        status = true
    ),
    kind!(
        policy::PodDisruptionBudget,
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        true,
        short = &["pdb"],
        status = true
    ),
    kind!(
        scheduling::PriorityClass,
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        false,
        short = &["pc"]
    ),
    kind!(
        rbac::Role,
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        true
    ),
    kind!(
        rbac::RoleBinding,
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true
    ),
    kind!(
        rbac::ClusterRole,
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        false
    ),
    kind!(
        rbac::ClusterRoleBinding,
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false
    ),
    kind!(
        storage::StorageClass,
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        false,
        short = &["sc"]
    ),
    kind!(
        apiextensions::CustomResourceDefinition,
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        false,
        short = &["crd", "crds"],
        status = true
    ),
];

/// The kind served at `group`/`plural`.
pub fn by_resource(group: &str, plural: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .find(|k| k.group == group && k.plural == plural)
}

/// The kind named `kind` in `group`.
pub fn by_kind(group: &str, kind: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.group == group && k.kind == kind)
}

/// The group versions served, in discovery order (core first).
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for k in KINDS {
        if !out.contains(&(k.group, k.version)) {
            out.push((k.group, k.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_consistent() {
        for k in KINDS {
            let obj = serde_json::json!({"apiVersion": k.api_version(), "kind": k.kind,
                "metadata": {"name": "x"}});
            // Every model accepts a minimal object of its own kind ...
            let kept = (k.model)(&obj).unwrap_or_else(|e| panic!("{}: {e}", k.kind));
            assert_eq!(kept["kind"], k.kind);
            // ... and refuses another kind's.
            let other = serde_json::json!({"apiVersion": "v1", "kind": "Nope", "metadata": {}});
            assert!((k.model)(&other).is_err(), "{}", k.kind);
            assert!(
                k.schema_name().starts_with("io.k8s."),
                "{}",
                k.schema_name()
            );
            assert_eq!(by_resource(k.group, k.plural).map(|x| x.kind), Some(k.kind));
        }
    }
}
