//! The pure part of a write: from a client's object (and the stored one, for an
//! update) to the object to store. No IO here, so every rule is unit-testable.

use serde_json::{json, Map, Value};

use super::error::{ApiError, Cause, Subject};
use super::kinds::Kind;
use super::names;
use super::schema::{prune, unknown_fields};

/// `?fieldValidation=`: what to do with fields the model does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    /// Refuse the request.
    Strict,
    /// Drop them and say so in a `Warning` header (kubectl's default).
    #[default]
    Warn,
    /// Drop them silently.
    Ignore,
}

impl FieldValidation {
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "Strict" => Ok(Self::Strict),
            "Warn" | "" => Ok(Self::Warn),
            "Ignore" => Ok(Self::Ignore),
            other => Err(ApiError::bad_request(format!(
                "fieldValidation must be one of Ignore, Warn or Strict, not {other:?}"
            ))),
        }
    }
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The resource: everything but status (for kinds with a status subresource).
    Main,
    /// The `status` subresource: only status.
    Status,
}

pub fn subject(kind: &Kind, name: &str) -> Subject {
    Subject {
        group: kind.group.into(),
        resource: kind.plural.into(),
        kind: kind.kind.into(),
        name: name.into(),
    }
}

pub fn meta(v: &Value) -> &Value {
    &v["metadata"]
}

pub fn meta_str<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v["metadata"][field].as_str().filter(|s| !s.is_empty())
}

fn meta_mut(v: &mut Value) -> &mut Map<String, Value> {
    if !v["metadata"].is_object() {
        v["metadata"] = json!({});
    }
    v["metadata"]
        .as_object_mut()
        .expect("metadata was just made an object")
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// Checks that the body is an object of `kind` (filling apiVersion and kind
/// when absent, as kube-apiserver does from the URL), decodes it through the
/// typed model and deals with unknown fields. Returns warnings for `Warn`.
pub fn decode(
    kind: &Kind,
    mut v: Value,
    validation: FieldValidation,
) -> Result<(Value, Vec<String>), ApiError> {
    let Some(map) = v.as_object_mut() else {
        return Err(ApiError::bad_request(format!(
            "the body of the request was not a {} object",
            kind.kind
        )));
    };
    let api_version = kind.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), json!(api_version));
        }
        Some(given) if given != api_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({given}) does not match the expected API version ({api_version})"
            )));
        }
        Some(_) => {}
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), json!(kind.kind));
        }
        Some(given) if given != kind.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({given}) does not match the expected kind ({})",
                kind.kind
            )));
        }
        Some(_) => {}
    }
    if map.get("metadata").is_none_or(Value::is_null) {
        map.insert("metadata".into(), json!({}));
    }
    let kept = (kind.model)(&v)
        .map_err(|e| ApiError::bad_request(format!("error decoding {} object: {e}", kind.kind)))?;
    let unknown = unknown_fields(&v, &kept);
    let mut warnings = Vec::new();
    if !unknown.is_empty() {
        match validation {
            FieldValidation::Strict => {
                let list: Vec<String> = unknown
                    .iter()
                    .map(|f| format!("unknown field {f:?}"))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    list.join(", ")
                )));
            }
            FieldValidation::Warn => {
                warnings.extend(unknown.iter().map(|f| format!("unknown field {f:?}")));
            }
            FieldValidation::Ignore => {}
        }
        prune(&mut v, &unknown);
    }
    Ok((v, warnings))
}

fn check_metadata(kind: &Kind, v: &Value, out: &mut Vec<Cause>) {
    let m = meta(v);
    match m["name"].as_str() {
        Some(name) if !name.is_empty() => {
            if let Err(why) = (kind.rules.name)(name) {
                out.push(Cause::invalid("metadata.name", format!("{name:?}"), &why));
            }
        }
        _ => out.push(Cause {
            message: "name or generateName is required".into(),
            ..Cause::required("metadata.name")
        }),
    }
    for (k, val) in m["labels"].as_object().into_iter().flatten() {
        if let Err(why) = names::qualified_name(k) {
            out.push(Cause::invalid("metadata.labels", format!("{k:?}"), &why));
        }
        let s = val.as_str().unwrap_or_default();
        if let Err(why) = names::label_value(s) {
            out.push(Cause::invalid("metadata.labels", format!("{s:?}"), &why));
        }
    }
    let mut total = 0;
    for (k, val) in m["annotations"].as_object().into_iter().flatten() {
        if let Err(why) = names::qualified_name(k) {
            out.push(Cause::invalid(
                "metadata.annotations",
                format!("{k:?}"),
                &why,
            ));
        }
        total += k.len() + val.as_str().map_or(0, str::len);
    }
    if total > 256 * 1024 {
        out.push(Cause {
            reason: "FieldValueTooLong",
            field: "metadata.annotations".into(),
            message: "Too long: must have at most 262144 bytes".into(),
        });
    }
    if kind.namespaced {
        if let Some(ns) = m["namespace"].as_str() {
            if let Err(why) = names::dns1123_label(ns) {
                out.push(Cause::invalid(
                    "metadata.namespace",
                    format!("{ns:?}"),
                    &why,
                ));
            }
        }
    }
}

/// The kind's rules for `v`, and for an update what it may not change from
/// `old`.
fn validate(kind: &Kind, old: Option<&Value>, v: &Value) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    check_metadata(kind, v, &mut causes);
    (kind.rules.validate)(v, &mut causes);
    if let Some(old) = old {
        (kind.rules.update)(old, v, &mut causes);
    }
    if causes.is_empty() {
        return Ok(());
    }
    let name = meta_str(v, "name")
        .or(meta_str(v, "generateName"))
        .unwrap_or_default();
    Err(ApiError::invalid(subject(kind, name), causes))
}

/// Settles the namespace: the URL's wins, a different one in the body is an
/// error, cluster-scoped kinds have none.
fn settle_namespace(kind: &Kind, url_ns: Option<&str>, v: &mut Value) -> Result<(), ApiError> {
    let m = meta_mut(v);
    if !kind.namespaced {
        m.remove("namespace");
        return Ok(());
    }
    let body_ns = m
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    let ns = match (url_ns, body_ns) {
        (Some(u), Some(b)) if u != b => return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        (Some(u), _) => u.to_string(),
        (None, Some(b)) => b.to_string(),
        (None, None) => "default".to_string(),
    };
    m.insert("namespace".into(), json!(ns));
    Ok(())
}

/// Whether the server names the object: no name, a generateName prefix.
pub fn generates_name(v: &Value) -> bool {
    meta_str(v, "name").is_none() && meta_str(v, "generateName").is_some()
}

/// The object to create: identity, defaults and validation settled.
pub fn for_create(
    kind: &Kind,
    url_ns: Option<&str>,
    mut v: Value,
    manager: &str,
) -> Result<Value, ApiError> {
    settle_namespace(kind, url_ns, &mut v)?;
    let m = meta_mut(&mut v);
    let has_name = m
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    if !has_name {
        if let Some(prefix) = m.get("generateName").and_then(Value::as_str) {
            let name = format!("{prefix}{}", random_suffix());
            m.insert("name".into(), json!(name));
        }
    }
    if let Some(rv) = m.get("resourceVersion").and_then(Value::as_str) {
        if !rv.is_empty() {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
    }
    for field in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        m.remove(field);
    }
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(now_rfc3339()));
    if kind.status {
        m.insert("generation".into(), json!(1));
        // A new object's status is the system's to write (nodes report theirs).
        if kind.kind != "Node" {
            if let Some(map) = v.as_object_mut() {
                map.remove("status");
            }
        }
    } else {
        m.remove("generation");
    }
    (kind.rules.defaults)(&mut v);
    if is_daemon_set(kind) {
        super::rules::daemon_set_template_generation(None, &mut v);
    }
    validate(kind, None, &v)?;
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    super::fields::record_update(None, &mut v, manager, "", &now_rfc3339());
    Ok(v)
}

/// The object to store for an update of `part` of `current` with `body`.
pub fn for_update(
    kind: &Kind,
    current: &Value,
    mut body: Value,
    part: Part,
    manager: Option<&str>,
) -> Result<Value, ApiError> {
    let name = meta_str(current, "name").unwrap_or_default().to_string();
    let sub = || subject(kind, &name);
    if let Some(given) = meta_str(&body, "name") {
        if given != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )));
        }
    }
    if let (Some(given), Some(uid)) = (meta_str(&body, "uid"), meta_str(current, "uid")) {
        if given != uid {
            return Err(ApiError::conflict(
                sub(),
                &format!(
                    "Precondition failed: UID in precondition: {given}, UID in object meta: {uid}"
                ),
            ));
        }
    }
    let mut new = match part {
        Part::Main => {
            if kind.status {
                body["status"] = current["status"].clone();
                if body["status"].is_null() {
                    if let Some(map) = body.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
            body
        }
        Part::Status => {
            let mut new = current.clone();
            new["status"] = body["status"].take();
            new
        }
    };
    // Identity and system fields are the server's, whatever the body says.
    let cm = meta(current).clone();
    let m = meta_mut(&mut new);
    m.insert("name".into(), json!(name));
    for field in [
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ] {
        match cm.get(field) {
            Some(val) => m.insert(field.into(), val.clone()),
            None => m.remove(field),
        };
    }
    if part == Part::Main && kind.status && spec_of(&new) != spec_of(current) {
        let gen = cm["generation"].as_i64().unwrap_or(0) + 1;
        meta_mut(&mut new).insert("generation".into(), json!(gen));
    }
    (kind.rules.defaults)(&mut new);
    if is_daemon_set(kind) && part == Part::Main {
        super::rules::daemon_set_template_generation(Some(current), &mut new);
    }
    validate(kind, Some(current), &new)?;
    // Managed fields are the server's record; what the client sent back is
    // replaced by it (server-side apply settles them itself: manager None).
    if manager.is_some() {
        copy_managed(current, &mut new);
    }
    if let Some(rv) = meta_str(current, "resourceVersion") {
        // Unchanged objects stay unchanged, down to the managed fields.
        let mut same = new.clone();
        meta_mut(&mut same).insert("resourceVersion".into(), json!(rv));
        if same == *current {
            return Ok(same);
        }
    }
    let subresource = match part {
        Part::Main => "",
        Part::Status => "status",
    };
    if let Some(manager) = manager {
        super::fields::record_update(
            Some(current),
            &mut new,
            manager,
            subresource,
            &now_rfc3339(),
        );
    }
    Ok(new)
}

fn is_daemon_set(kind: &Kind) -> bool {
    kind.group == "apps" && kind.kind == "DaemonSet"
}

/// Whether deleting `v` still waits on finalizers (a namespace's own
/// `spec.finalizers` included).
pub fn finalizers_pending(kind: &Kind, v: &Value) -> bool {
    let non_empty = |f: &Value| f.as_array().is_some_and(|a| !a.is_empty());
    non_empty(&v["metadata"]["finalizers"])
        || (kind.group.is_empty()
            && kind.kind == "Namespace"
            && non_empty(&v["spec"]["finalizers"]))
}

/// Whether `v` is a pod in its graceful termination: marked for deletion with
/// a grace period the node agent is still honouring. It stays until the agent
/// (or a delete with grace 0) removes it.
pub fn terminating_gracefully(kind: &Kind, v: &Value) -> bool {
    kind.group.is_empty()
        && kind.kind == "Pod"
        && !v["metadata"]["deletionTimestamp"].is_null()
        && v["metadata"]["deletionGracePeriodSeconds"]
            .as_i64()
            .is_some_and(|g| g > 0)
}

/// Everything but metadata and status: what `generation` counts changes of.
fn spec_of(v: &Value) -> Map<String, Value> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn copy_managed(from: &Value, to: &mut Value) {
    let managed = meta(from).get("managedFields").cloned();
    let m = meta_mut(to);
    match managed {
        Some(mf) => m.insert("managedFields".into(), mf),
        None => m.remove("managedFields"),
    };
}

/// Five characters from Kubernetes' generateName alphabet (no vowels, no
/// look-alikes).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::kinds::by_kind;

    fn deployment() -> Value {
        json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},
            "spec":{"selector":{"matchLabels":{"app":"web"}},
                "template":{"metadata":{"labels":{"app":"web"}},
                    "spec":{"containers":[{"name":"c","image":"nginx:1"}]}}},
            "status":{"replicas":9}})
    }

    #[test]
    fn create_settles_identity_defaults_and_drops_status() {
        let kind = by_kind("apps", "Deployment").unwrap();
        let (v, warnings) = decode(kind, deployment(), FieldValidation::Strict).unwrap();
        assert!(warnings.is_empty());
        let v = for_create(kind, Some("prod"), v, "test").unwrap();
        assert_eq!(v["metadata"]["namespace"], "prod");
        assert_eq!(v["metadata"]["generation"], 1);
        assert!(v["metadata"]["uid"].is_string());
        assert!(v["status"].is_null());
        assert_eq!(v["spec"]["replicas"], 1);
        assert_eq!(v["metadata"]["managedFields"][0]["manager"], "test");
    }

    #[test]
    fn decode_refuses_other_kinds_and_reports_unknown_fields() {
        let kind = by_kind("apps", "Deployment").unwrap();
        let mut other = deployment();
        other["apiVersion"] = json!("apps/v2");
        assert_eq!(
            decode(kind, other, FieldValidation::Warn)
                .unwrap_err()
                .code(),
            400
        );
        let mut extra = deployment();
        extra["spec"]["replicaz"] = json!(2);
        let err = decode(kind, extra.clone(), FieldValidation::Strict).unwrap_err();
        assert_eq!(
            err.message,
            "strict decoding error: unknown field \"spec.replicaz\""
        );
        let (v, warnings) = decode(kind, extra.clone(), FieldValidation::Warn).unwrap();
        assert_eq!(warnings, vec!["unknown field \"spec.replicaz\""]);
        assert!(v["spec"]["replicaz"].is_null());
        let (_, warnings) = decode(kind, extra, FieldValidation::Ignore).unwrap();
        assert!(warnings.is_empty());
        let bare = json!({"metadata":{"name":"x"},"spec":{"selector":{},"template":{}}});
        let (v, _) = decode(kind, bare, FieldValidation::Strict).unwrap();
        assert_eq!(v["kind"], "Deployment");
    }

    #[test]
    fn names_are_validated_with_the_kinds_rule() {
        let ns = by_kind("", "Namespace").unwrap();
        let err = for_create(ns, None, json!({"metadata":{"name":"a.b"}}), "t").unwrap_err();
        assert_eq!(err.code(), 422);
        assert!(
            err.message
                .starts_with("Namespace \"a.b\" is invalid: metadata.name"),
            "{}",
            err.message
        );
        let cm = by_kind("", "ConfigMap").unwrap();
        let err = for_create(cm, None, json!({"metadata":{}}), "t").unwrap_err();
        assert_eq!(err.causes[0].field, "metadata.name");
        let v = for_create(cm, None, json!({"metadata":{"generateName":"x-"}}), "t").unwrap();
        assert!(v["metadata"]["name"].as_str().unwrap().starts_with("x-"));
        let err = for_create(
            cm,
            Some("a"),
            json!({"metadata":{"name":"x","namespace":"b"}}),
            "t",
        )
        .unwrap_err();
        assert_eq!(err.code(), 400);
        let err = for_create(
            cm,
            None,
            json!({"metadata":{"name":"x","labels":{"a":"b c"}}}),
            "t",
        )
        .unwrap_err();
        assert_eq!(err.causes[0].field, "metadata.labels");
    }

    #[test]
    fn update_keeps_status_bumps_generation_and_noop_keeps_everything() {
        let kind = by_kind("apps", "Deployment").unwrap();
        let (v, _) = decode(kind, deployment(), FieldValidation::Strict).unwrap();
        let mut current = for_create(kind, None, v, "a").unwrap();
        current["metadata"]["resourceVersion"] = json!("5");
        current["status"] = json!({"replicas": 1});

        let mut body = current.clone();
        body["status"] = json!({"replicas": 7});
        let same = for_update(kind, &current, body, Part::Main, Some("b")).unwrap();
        assert_eq!(
            same, current,
            "a status change through the main resource is a no-op"
        );

        let mut body = current.clone();
        body["spec"]["replicas"] = json!(3);
        body["metadata"]["uid"] = Value::Null;
        let new = for_update(kind, &current, body, Part::Main, Some("b")).unwrap();
        assert_eq!(new["metadata"]["generation"], 2);
        assert_eq!(new["metadata"]["uid"], current["metadata"]["uid"]);
        assert_eq!(new["status"]["replicas"], 1);

        let mut body = current.clone();
        body["status"] = json!({"replicas": 4});
        body["spec"]["replicas"] = json!(9);
        let new = for_update(kind, &current, body, Part::Status, Some("b")).unwrap();
        assert_eq!(new["status"]["replicas"], 4);
        assert_eq!(new["spec"]["replicas"], 1);
        assert_eq!(new["metadata"]["generation"], 1);

        let mut body = current.clone();
        body["metadata"]["uid"] = json!("other");
        assert_eq!(
            for_update(kind, &current, body, Part::Main, Some("b"))
                .unwrap_err()
                .code(),
            409
        );
    }

    #[test]
    fn daemon_set_template_generation_counts_template_changes() {
        let kind = by_kind("apps", "DaemonSet").unwrap();
        let mut ds = deployment();
        ds["kind"] = json!("DaemonSet");
        ds["status"] = Value::Null;
        ds["metadata"]["annotations"] = json!({"deprecated.daemonset.template.generation": "7"});
        let (v, _) = decode(kind, ds, FieldValidation::Strict).unwrap();
        let mut current = for_create(kind, None, v, "a").unwrap();
        let gen = |v: &Value| {
            v["metadata"]["annotations"]["deprecated.daemonset.template.generation"].clone()
        };
        assert_eq!(gen(&current), "1", "the client cannot set it");
        current["metadata"]["resourceVersion"] = json!("5");

        // A change outside the template keeps it, whatever the body says.
        let mut body = current.clone();
        body["spec"]["minReadySeconds"] = json!(5);
        body["metadata"]["annotations"] = json!({});
        let new = for_update(kind, &current, body, Part::Main, Some("b")).unwrap();
        assert_eq!(gen(&new), "1");
        assert_eq!(new["metadata"]["generation"], 2);

        let mut body = current.clone();
        body["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
        let new = for_update(kind, &current, body, Part::Main, Some("b")).unwrap();
        assert_eq!(gen(&new), "2");
        assert_eq!(new["metadata"]["generation"], 2);
    }
}
