//! The operation side of an OpenAPI document: for each kind, the REST
//! operations Balsa serves, described once and rendered as Swagger 2.0 or
//! OpenAPI 3.0.
//!
//! kubectl reads these, not just the schemas: `explain` finds a resource's
//! kind from the `x-kubernetes-group-version-kind` of the operations on its
//! paths, and `apply` / `create` / `replace` send `fieldValidation` only when
//! a PATCH operation of that kind lists it (every PATCH of the kind, since
//! kubectl stops at the first one it meets, subresources included).

use serde_json::{json, Map, Value};

use super::schemas::{self, Dialect, BINDING, DELETE_OPTIONS, EVICTION, PATCH, SCALE, STATUS};
use crate::registry::Kind;

/// The patch content types kube-apiserver accepts.
pub const PATCH_CONTENT_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
    "application/apply-patch+yaml",
];

/// What Balsa answers with.
const PRODUCES: &[&str] = &["application/json"];
const PRODUCES_LIST: &[&str] = &["application/json", "application/json;stream=watch"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    fn key(self) -> &'static str {
        match self {
            Method::Get => "get",
            Method::Post => "post",
            Method::Put => "put",
            Method::Patch => "patch",
            Method::Delete => "delete",
        }
    }
}

/// A query parameter: name, type, description.
type Param = (&'static str, &'static str, &'static str);

const DRY_RUN: Param = (
    "dryRun",
    "string",
    "When present, modifications are not persisted. Valid values: All.",
);
const FIELD_MANAGER: Param = (
    "fieldManager",
    "string",
    "The name of the actor making the change, recorded in managedFields. Required for apply patches (application/apply-patch+yaml).",
);
const FIELD_VALIDATION: Param = (
    "fieldValidation",
    "string",
    "How the server treats unknown and duplicate fields in the body: Ignore (drop them silently), Warn (drop them with a warning, the default) or Strict (refuse the request).",
);
const FORCE: Param = (
    "force",
    "boolean",
    "Apply patches only: take ownership of fields other managers own instead of failing with a conflict.",
);

const WRITE: &[Param] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION];
const PATCH_PARAMS: &[Param] = &[DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION, FORCE];
const DELETE: &[Param] = &[
    DRY_RUN,
    (
        "gracePeriodSeconds",
        "integer",
        "Seconds before the object is deleted; zero deletes at once.",
    ),
    (
        "orphanDependents",
        "boolean",
        "Deprecated: use propagationPolicy.",
    ),
    (
        "propagationPolicy",
        "string",
        "Whether and how dependents are garbage collected: Orphan, Background or Foreground.",
    ),
];
const LIST: &[Param] = &[
    (
        "allowWatchBookmarks",
        "boolean",
        "Watch only: ask for BOOKMARK events.",
    ),
    (
        "continue",
        "string",
        "The continue token of the previous page of a chunked list.",
    ),
    (
        "fieldSelector",
        "string",
        "Restricts the list to objects whose fields match.",
    ),
    (
        "labelSelector",
        "string",
        "Restricts the list to objects whose labels match.",
    ),
    (
        "limit",
        "integer",
        "The most objects to return; the list metadata's continue token fetches the rest.",
    ),
    (
        "resourceVersion",
        "string",
        "The resource version the list or watch is served from.",
    ),
    (
        "resourceVersionMatch",
        "string",
        "How resourceVersion applies to a list: Exact or NotOlderThan.",
    ),
    (
        "sendInitialEvents",
        "boolean",
        "Watch only: start with synthetic ADDED events for the current objects, then a bookmark.",
    ),
    (
        "timeoutSeconds",
        "integer",
        "Ends the list or watch call after this many seconds.",
    ),
    (
        "watch",
        "boolean",
        "Stream changes (added, modified, deleted) instead of listing.",
    ),
];
const LOG: &[Param] = &[
    (
        "container",
        "string",
        "The container to read the log of; needed when the pod has several.",
    ),
    ("follow", "boolean", "Stream the log as it grows."),
    (
        "previous",
        "boolean",
        "Read the log of the previous, terminated instance of the container.",
    ),
    (
        "sinceSeconds",
        "integer",
        "Only lines newer than this many seconds.",
    ),
    ("tailLines", "integer", "Only this many lines from the end."),
    (
        "timestamps",
        "boolean",
        "Prefix each line with its RFC3339 timestamp.",
    ),
];

/// What a request carries.
#[derive(Debug, Clone, Copy)]
enum Body {
    None,
    /// An object of this schema, in any supported content type.
    Object(&'static str),
    /// A patch in one of `PATCH_CONTENT_TYPES`.
    Patch,
    /// Optional `DeleteOptions`.
    Delete,
}

/// What a successful answer carries.
#[derive(Debug, Clone)]
enum Answer {
    Object(String),
    List(String),
    Text,
}

/// One operation, before rendering into a dialect.
#[derive(Debug, Clone)]
struct Operation {
    path: String,
    method: Method,
    id: String,
    description: String,
    /// `x-kubernetes-action`: get, list, post, put, patch, delete, connect.
    action: &'static str,
    gvk: (&'static str, &'static str, &'static str),
    query: &'static [Param],
    body: Body,
    answer: Answer,
    codes: &'static [(&'static str, &'static str)],
    tag: String,
}

const OK: (&str, &str) = ("200", "OK");
const CREATED: (&str, &str) = ("201", "Created");
const ACCEPTED: (&str, &str) = ("202", "Accepted");

/// `rbac.authorization.k8s.io` → `RbacAuthorization`; the core group is `Core`.
fn group_camel(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    group
        .trim_end_matches(".k8s.io")
        .split('.')
        .map(|part| {
            let mut c = part.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// `apps_v1`, `core_v1`, `rbacAuthorization_v1`.
fn tag(group: &str, version: &str) -> String {
    let g = group_camel(group);
    let mut c = g.chars();
    let lower = c
        .next()
        .map(|f| f.to_ascii_lowercase().to_string() + c.as_str())
        .unwrap_or_default();
    format!("{lower}_{version}")
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// The operations on one kind, upstream's naming: `patchAppsV1NamespacedDeployment`.
fn operations(k: &'static Kind) -> Vec<Operation> {
    let prefix = if k.group.is_empty() {
        format!("/api/{}", k.version)
    } else {
        format!("/apis/{}/{}", k.group, k.version)
    };
    let scope = if k.namespaced { "Namespaced" } else { "" };
    let collection = if k.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", k.plural)
    } else {
        format!("{prefix}/{}", k.plural)
    };
    let item = format!("{collection}/{{name}}");
    let id_stem = format!("{}{}", group_camel(k.group), capitalize(k.version));
    let id = |verb: &str, suffix: &str| format!("{verb}{id_stem}{scope}{}{suffix}", k.kind);
    let gvk = (k.group, k.version, k.kind);
    let tag = tag(k.group, k.version);
    let name = k.schema_name();
    let object = || Answer::Object(name.clone());
    let op = |path: &str,
              method: Method,
              id: String,
              description: String,
              action: &'static str,
              query: &'static [Param],
              body: Body,
              answer: Answer,
              codes: &'static [(&'static str, &'static str)]| Operation {
        path: path.to_string(),
        method,
        id,
        description,
        action,
        gvk,
        query,
        body,
        answer,
        codes,
        tag: tag.clone(),
    };
    // The request body schemas must be 'static; the kind's own is looked up
    // by name at render time through `Body::Object(KIND)`.
    let mut ops = vec![
        op(
            &collection,
            Method::Get,
            id("list", ""),
            format!("list or watch objects of kind {}", k.kind),
            "list",
            LIST,
            Body::None,
            Answer::List(schemas::list_name(k)),
            &[OK],
        ),
        op(
            &collection,
            Method::Post,
            id("create", ""),
            format!("create a {}", k.kind),
            "post",
            WRITE,
            Body::Object(KIND),
            object(),
            &[OK, CREATED, ACCEPTED],
        ),
        op(
            &item,
            Method::Get,
            id("read", ""),
            format!("read the specified {}", k.kind),
            "get",
            &[],
            Body::None,
            object(),
            &[OK],
        ),
        op(
            &item,
            Method::Put,
            id("replace", ""),
            format!("replace the specified {}", k.kind),
            "put",
            WRITE,
            Body::Object(KIND),
            object(),
            &[OK, CREATED],
        ),
        op(
            &item,
            Method::Patch,
            id("patch", ""),
            format!("partially update the specified {}", k.kind),
            "patch",
            PATCH_PARAMS,
            Body::Patch,
            object(),
            &[OK, CREATED],
        ),
        op(
            &item,
            Method::Delete,
            id("delete", ""),
            format!("delete a {}", k.kind),
            "delete",
            DELETE,
            Body::Delete,
            Answer::Object(STATUS.into()),
            &[OK, ACCEPTED],
        ),
    ];
    if k.namespaced {
        ops.push(op(
            &format!("{prefix}/{}", k.plural),
            Method::Get,
            format!("list{id_stem}{}ForAllNamespaces", k.kind),
            format!("list or watch objects of kind {}", k.kind),
            "list",
            LIST,
            Body::None,
            Answer::List(schemas::list_name(k)),
            &[OK],
        ));
    }
    if k.status {
        let path = format!("{item}/status");
        ops.extend([
            op(
                &path,
                Method::Get,
                id("read", "Status"),
                format!("read status of the specified {}", k.kind),
                "get",
                &[],
                Body::None,
                object(),
                &[OK],
            ),
            op(
                &path,
                Method::Put,
                id("replace", "Status"),
                format!("replace status of the specified {}", k.kind),
                "put",
                WRITE,
                Body::Object(KIND),
                object(),
                &[OK, CREATED],
            ),
            op(
                &path,
                Method::Patch,
                id("patch", "Status"),
                format!("partially update status of the specified {}", k.kind),
                "patch",
                PATCH_PARAMS,
                Body::Patch,
                object(),
                &[OK, CREATED],
            ),
        ]);
    }
    if k.scale {
        let path = format!("{item}/scale");
        let scale = ("autoscaling", "v1", "Scale");
        let mut scale_ops = vec![
            op(
                &path,
                Method::Get,
                id("read", "Scale"),
                format!("read scale of the specified {}", k.kind),
                "get",
                &[],
                Body::None,
                Answer::Object(SCALE.into()),
                &[OK],
            ),
            op(
                &path,
                Method::Put,
                id("replace", "Scale"),
                format!("replace scale of the specified {}", k.kind),
                "put",
                WRITE,
                Body::Object(SCALE),
                Answer::Object(SCALE.into()),
                &[OK, CREATED],
            ),
            op(
                &path,
                Method::Patch,
                id("patch", "Scale"),
                format!("partially update scale of the specified {}", k.kind),
                "patch",
                PATCH_PARAMS,
                Body::Patch,
                Answer::Object(SCALE.into()),
                &[OK, CREATED],
            ),
        ];
        scale_ops.iter_mut().for_each(|o| o.gvk = scale);
        ops.extend(scale_ops);
    }
    if schemas::is_pod(k) {
        let mut binding = op(
            &format!("{item}/binding"),
            Method::Post,
            id("create", "Binding"),
            "create binding of a Pod".into(),
            "post",
            WRITE,
            Body::Object(BINDING),
            Answer::Object(BINDING.into()),
            &[OK, CREATED, ACCEPTED],
        );
        binding.gvk = ("", "v1", "Binding");
        let mut eviction = op(
            &format!("{item}/eviction"),
            Method::Post,
            id("create", "Eviction"),
            "create eviction of a Pod".into(),
            "post",
            WRITE,
            Body::Object(EVICTION),
            Answer::Object(EVICTION.into()),
            &[OK, CREATED, ACCEPTED],
        );
        eviction.gvk = ("policy", "v1", "Eviction");
        let log = op(
            &format!("{item}/log"),
            Method::Get,
            id("read", "Log"),
            "read log of the specified Pod".into(),
            "get",
            LOG,
            Body::None,
            Answer::Text,
            &[OK],
        );
        ops.extend([binding, eviction, log]);
    }
    ops
}

/// Stands for "the kind's own schema" in `Body::Object`.
const KIND: &str = "";

/// The `paths` object for `kinds` in `dialect`.
pub(super) fn render(kinds: &[&'static Kind], dialect: Dialect) -> Value {
    let mut paths = Map::new();
    for k in kinds {
        let own = k.schema_name();
        for op in operations(k) {
            let item = paths
                .entry(op.path.clone())
                .or_insert_with(|| json!({ "parameters": path_params(&op.path, k, dialect) }));
            let rendered = match dialect {
                Dialect::V2 => render_v2(&op, &own),
                Dialect::V3 => render_v3(&op, &own),
            };
            if let Some(item) = item.as_object_mut() {
                item.insert(op.method.key().into(), rendered);
            }
        }
    }
    Value::Object(paths)
}

fn query_param(p: &Param, dialect: Dialect) -> Value {
    let (name, ty, description) = *p;
    match dialect {
        Dialect::V2 => json!({"description": description, "in": "query", "name": name,
            "type": ty, "uniqueItems": true}),
        Dialect::V3 => json!({"description": description, "in": "query", "name": name,
            "schema": {"type": ty, "uniqueItems": true}}),
    }
}

/// Path-level parameters: the path's placeholders and `pretty`.
fn path_params(path: &str, k: &Kind, dialect: Dialect) -> Value {
    let mut out = Vec::new();
    let placeholders = [
        ("name", format!("name of the {}", k.kind)),
        (
            "namespace",
            "object name and auth scope, such as for teams and projects".to_string(),
        ),
    ];
    for (name, description) in placeholders {
        if !path.contains(&format!("{{{name}}}")) {
            continue;
        }
        out.push(match dialect {
            Dialect::V2 => json!({"description": description, "in": "path", "name": name,
                "required": true, "type": "string", "uniqueItems": true}),
            Dialect::V3 => json!({"description": description, "in": "path", "name": name,
                "required": true, "schema": {"type": "string", "uniqueItems": true}}),
        });
    }
    out.push(query_param(
        &(
            "pretty",
            "string",
            "If 'true', the output is pretty printed.",
        ),
        dialect,
    ));
    Value::Array(out)
}

fn body_schema(name: &'static str, own: &str) -> String {
    if name == KIND {
        own.to_string()
    } else {
        name.to_string()
    }
}

fn answer_schema(answer: &Answer, dialect: Dialect) -> Value {
    match answer {
        Answer::Object(name) | Answer::List(name) => dialect.reference(name),
        Answer::Text => json!({"type": "string"}),
    }
}

fn answer_types(answer: &Answer) -> &'static [&'static str] {
    match answer {
        Answer::Object(_) => PRODUCES,
        Answer::List(_) => PRODUCES_LIST,
        Answer::Text => &["text/plain"],
    }
}

fn extensions(op: &Operation, out: &mut Map<String, Value>) {
    out.insert("x-kubernetes-action".into(), op.action.into());
    let (g, v, k) = op.gvk;
    out.insert(
        "x-kubernetes-group-version-kind".into(),
        schemas::gvk(g, v, k),
    );
}

fn render_v3(op: &Operation, own: &str) -> Value {
    let mut out = Map::new();
    out.insert("description".into(), op.description.clone().into());
    out.insert("operationId".into(), op.id.clone().into());
    if !op.query.is_empty() {
        let params: Vec<Value> = op
            .query
            .iter()
            .map(|p| query_param(p, Dialect::V3))
            .collect();
        out.insert("parameters".into(), params.into());
    }
    let body = |schema: &str, types: &[&str], required: bool| {
        let content: Map<String, Value> = types
            .iter()
            .map(|t| {
                (
                    t.to_string(),
                    json!({"schema": Dialect::V3.reference(schema)}),
                )
            })
            .collect();
        let mut b = json!({ "content": content });
        if required {
            b["required"] = true.into();
        }
        b
    };
    match op.body {
        Body::None => {}
        Body::Object(name) => {
            out.insert(
                "requestBody".into(),
                body(&body_schema(name, own), &["*/*"], true),
            );
        }
        Body::Patch => {
            out.insert("requestBody".into(), body(PATCH, PATCH_CONTENT_TYPES, true));
        }
        Body::Delete => {
            out.insert("requestBody".into(), body(DELETE_OPTIONS, &["*/*"], false));
        }
    }
    let schema = answer_schema(&op.answer, Dialect::V3);
    let mut responses = Map::new();
    for (code, description) in op.codes {
        let content: Map<String, Value> = answer_types(&op.answer)
            .iter()
            .map(|t| (t.to_string(), json!({ "schema": schema })))
            .collect();
        responses.insert(
            code.to_string(),
            json!({"description": description, "content": content}),
        );
    }
    responses.insert("401".into(), json!({"description": "Unauthorized"}));
    out.insert("responses".into(), responses.into());
    out.insert("tags".into(), json!([op.tag]));
    extensions(op, &mut out);
    Value::Object(out)
}

fn render_v2(op: &Operation, own: &str) -> Value {
    let mut out = Map::new();
    out.insert("description".into(), op.description.clone().into());
    out.insert("operationId".into(), op.id.clone().into());
    let consumes: &[&str] = match op.body {
        Body::Patch => PATCH_CONTENT_TYPES,
        _ => &["*/*"],
    };
    out.insert("consumes".into(), json!(consumes));
    out.insert("produces".into(), json!(answer_types(&op.answer)));
    out.insert("schemes".into(), json!(["https"]));
    let mut params: Vec<Value> = Vec::new();
    let body = |schema: &str, required: bool| {
        json!({"in": "body", "name": "body", "required": required,
            "schema": Dialect::V2.reference(schema)})
    };
    match op.body {
        Body::None => {}
        Body::Object(name) => params.push(body(&body_schema(name, own), true)),
        Body::Patch => params.push(body(PATCH, true)),
        Body::Delete => params.push(body(DELETE_OPTIONS, false)),
    }
    params.extend(op.query.iter().map(|p| query_param(p, Dialect::V2)));
    if !params.is_empty() {
        out.insert("parameters".into(), params.into());
    }
    let schema = answer_schema(&op.answer, Dialect::V2);
    let mut responses = Map::new();
    for (code, description) in op.codes {
        responses.insert(
            code.to_string(),
            json!({"description": description, "schema": schema}),
        );
    }
    responses.insert("401".into(), json!({"description": "Unauthorized"}));
    out.insert("responses".into(), responses.into());
    out.insert("tags".into(), json!([op.tag]));
    extensions(op, &mut out);
    Value::Object(out)
}
