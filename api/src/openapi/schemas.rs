//! The schema side of an OpenAPI document: every definition reachable from a
//! set of kinds, in the shape kube-apiserver publishes them.
//!
//! k8s-openapi's models give the types and descriptions; this module adds what
//! they lack and clients read: the `x-kubernetes-group-version-kind` of each
//! top-level kind, the `...List` kinds, the list-merge extensions
//! (`extensions::FIELDS`), and the few types kube-apiserver describes
//! differently (int-or-string, quantity, `metadata` never required).
//!
//! Definitions come out with refs in one neutral form (`#/$defs/NAME`, what
//! schemars writes); `Dialect` rewrites them per document kind.

use k8s_openapi::api::{autoscaling::v1::Scale, core::v1::Binding, policy::v1::Eviction};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, Patch, Status};
use schemars::SchemaGenerator;
use serde_json::{json, Map, Value};

use super::extensions;
use crate::registry::Kind;

/// A group-version-kind as the extension spells it.
pub(super) fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

/// Schema names, before rewriting into a document's ref form.
pub(super) const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
pub(super) const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
pub(super) const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
pub(super) const SCALE: &str = "io.k8s.api.autoscaling.v1.Scale";
pub(super) const BINDING: &str = "io.k8s.api.core.v1.Binding";
pub(super) const EVICTION: &str = "io.k8s.api.policy.v1.Eviction";
const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";

/// The neutral ref to a definition.
pub(super) fn neutral_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/$defs/{name}") })
}

/// The schema name of a kind's list: `io.k8s.api.apps.v1.DeploymentList`.
pub(super) fn list_name(kind: &Kind) -> String {
    format!("{}List", kind.schema_name())
}

/// Every definition the operations on `kinds` refer to, keyed by schema name,
/// with the Kubernetes extensions in place and refs in neutral form.
pub(super) fn definitions(kinds: &[&Kind]) -> Map<String, Value> {
    let mut g = SchemaGenerator::default();
    for k in kinds {
        (k.schema)(&mut g);
    }
    // Request and response bodies of the operations every resource has.
    g.subschema_for::<Patch>();
    g.subschema_for::<Status>();
    g.subschema_for::<DeleteOptions>();
    if kinds.iter().any(|k| k.scale) {
        g.subschema_for::<Scale>();
    }
    if kinds.iter().any(|k| is_pod(k)) {
        g.subschema_for::<Binding>();
        g.subschema_for::<Eviction>();
    }
    let mut defs = g.take_definitions(false);

    for k in kinds {
        let name = k.schema_name();
        if let Some(schema) = defs.get_mut(&name).and_then(Value::as_object_mut) {
            // k8s-openapi makes `metadata` a required field of every kind (its
            // Rust type is not an Option); kube-apiserver does not require it.
            if let Some(required) = schema.get_mut("required").and_then(Value::as_array_mut) {
                required.retain(|f| f != "metadata");
                if required.is_empty() {
                    schema.remove("required");
                }
            }
            schema.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([gvk(k.group, k.version, k.kind)]),
            );
        }
        defs.insert(list_name(k), list_schema(k));
    }
    for (name, group, version, kind) in [
        (STATUS, "", "v1", "Status"),
        (SCALE, "autoscaling", "v1", "Scale"),
        (BINDING, "", "v1", "Binding"),
        (EVICTION, "policy", "v1", "Eviction"),
    ] {
        if let Some(schema) = defs.get_mut(name).and_then(Value::as_object_mut) {
            schema.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([gvk(group, version, kind)]),
            );
        }
    }
    // DeleteOptions is accepted by every group-version, and says so.
    if let Some(schema) = defs.get_mut(DELETE_OPTIONS).and_then(Value::as_object_mut) {
        let mut gvs: Vec<(&str, &str)> = kinds.iter().map(|k| (k.group, k.version)).collect();
        gvs.dedup();
        let list: Vec<Value> = gvs
            .into_iter()
            .map(|(g, v)| gvk(g, v, "DeleteOptions"))
            .collect();
        schema.insert("x-kubernetes-group-version-kind".into(), Value::Array(list));
    }
    retype_scalars(&mut defs);
    extensions::apply(&mut defs);
    defs
}

pub(super) fn is_pod(k: &Kind) -> bool {
    k.group.is_empty() && k.kind == "Pod"
}

/// `DeploymentList` and friends: k8s-openapi has one generic `List<T>`, while
/// kube-apiserver names a list type per kind.
fn list_schema(k: &Kind) -> Value {
    let mut items = neutral_ref(&k.schema_name());
    let mut meta = neutral_ref(LIST_META);
    meta["description"] = "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata".into();
    if let Some(o) = items.as_object_mut() {
        o.insert("default".into(), json!({}));
    }
    json!({
        "description": format!("{}List is a list of {} objects.", k.kind, k.kind),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
                "type": "string",
            },
            "items": {
                "description": format!("List of {}.", k.plural),
                "type": "array",
                "items": items,
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
                "type": "string",
            },
            "metadata": meta,
        },
        "required": ["items"],
        "x-kubernetes-group-version-kind": [gvk(k.group, k.version, &format!("{}List", k.kind))],
    })
}

/// k8s-openapi describes int-or-string and quantity by the extension alone;
/// kube-apiserver also gives them a type, which kubectl's client-side
/// validation and `explain` read.
fn retype_scalars(defs: &mut Map<String, Value>) {
    for (name, format) in [
        (
            "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
            Some("int-or-string"),
        ),
        ("io.k8s.apimachinery.pkg.api.resource.Quantity", None),
    ] {
        if let Some(schema) = defs.get_mut(name).and_then(Value::as_object_mut) {
            schema.remove("x-kubernetes-int-or-string");
            schema.insert("type".into(), "string".into());
            if let Some(f) = format {
                schema.insert("format".into(), f.into());
            }
        }
    }
}

/// Where a document keeps its definitions, and so what its refs look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    /// Swagger 2.0: `#/definitions/X`; a ref's siblings (its description)
    /// stay beside it, as kube-apiserver writes them.
    V2,
    /// OpenAPI 3.0: `#/components/schemas/X`; a ref with siblings becomes
    /// `allOf: [ref]` plus the siblings, because 3.0 ignores a ref's siblings.
    V3,
}

impl Dialect {
    fn prefix(self) -> &'static str {
        match self {
            Dialect::V2 => "#/definitions/",
            Dialect::V3 => "#/components/schemas/",
        }
    }

    /// The ref to `name` in this dialect.
    pub(super) fn reference(self, name: &str) -> Value {
        json!({ "$ref": format!("{}{name}", self.prefix()) })
    }

    /// Rewrites every neutral ref in `v` into this dialect.
    pub(super) fn rewrite(self, v: &mut Value) {
        match v {
            Value::Object(map) => {
                for child in map.values_mut() {
                    self.rewrite(child);
                }
                let Some(Value::String(r)) = map.get_mut("$ref") else {
                    return;
                };
                if let Some(name) = r.strip_prefix("#/$defs/") {
                    *r = format!("{}{}", self.prefix(), name);
                }
                if self == Dialect::V3 && map.len() > 1 {
                    if let Some(r) = map.remove("$ref") {
                        map.insert("allOf".into(), json!([{ "$ref": r }]));
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| self.rewrite(i)),
            _ => {}
        }
    }
}
