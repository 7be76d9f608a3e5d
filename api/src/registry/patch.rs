//! The four patch types kube-apiserver accepts: JSON patch (RFC 6902), JSON
//! merge patch (RFC 7386), strategic merge patch (lists merged by key, with the
//! `$patch`, `$setElementOrder`, `$retainKeys` and `$deleteFromPrimitiveList`
//! directives) and server-side apply (`fields::apply`).

use serde_json::{Map, Value};

use super::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    StrategicMerge,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/json-patch+json" => Some(Self::Json),
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

fn unprocessable(msg: String) -> ApiError {
    ApiError::new(super::error::Reason::Invalid, msg)
}

/// Applies a JSON patch (a list of operations).
pub fn json_patch(doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::bad_request(format!("the JSON patch is malformed: {e}")))?;
    let mut out = doc.clone();
    json_patch::patch(&mut out, &ops)
        .map_err(|e| unprocessable(format!("the JSON patch could not be applied: {e}")))?;
    Ok(out)
}

/// Applies a JSON merge patch: objects merge, `null` deletes, anything else
/// (lists included) replaces.
pub fn merge_patch(doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    if !patch.is_object() {
        return Err(ApiError::bad_request("a merge patch must be a JSON object"));
    }
    let mut out = doc.clone();
    json_patch::merge(&mut out, patch);
    Ok(out)
}

/// The key list items merge by, for lists that merge rather than replace (the
/// `patchMergeKey` tags of the built-in types).
pub fn merge_key(field: &str, items: &[&Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "readinessGates" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "conditions" => Some("type"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        "ownerReferences" => Some("uid"),
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                Some("containerPort")
            } else {
                Some("port")
            }
        }
        _ => None,
    }
}

/// Lists of scalars that merge as sets.
fn merges_as_set(field: &str) -> bool {
    field == "finalizers"
}

/// Applies a strategic merge patch.
pub fn strategic_merge(doc: &Value, patch: &Value) -> Result<Value, ApiError> {
    let (Some(d), Some(p)) = (doc.as_object(), patch.as_object()) else {
        return Err(ApiError::bad_request(
            "a strategic merge patch must be a JSON object",
        ));
    };
    Ok(Value::Object(merge_map(d, p)?))
}

fn merge_map(
    doc: &Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<Map<String, Value>, ApiError> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut out = patch.clone();
            out.remove("$patch");
            return Ok(out);
        }
        Some("delete") => return Ok(Map::new()),
        Some(other) if other != "merge" => {
            return Err(ApiError::bad_request(format!(
                "unknown patch type {other:?} in strategic merge patch"
            )))
        }
        _ => {}
    }
    let mut out = doc.clone();
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (key, pv) in patch {
        if key.starts_with("$setElementOrder/") || key == "$patch" || key == "$retainKeys" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(del)) = (
                out.get_mut(field).and_then(Value::as_array_mut),
                pv.as_array(),
            ) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if pv.is_null() {
            out.remove(key);
            continue;
        }
        let merged = match (out.get(key), pv) {
            (Some(Value::Object(d)), Value::Object(p)) => {
                if p.get("$patch").and_then(Value::as_str) == Some("delete") {
                    out.remove(key);
                    continue;
                }
                Value::Object(merge_map(d, p)?)
            }
            (Some(Value::Array(d)), Value::Array(p)) => merge_list(key, d, p)?,
            (None, Value::Object(p)) => Value::Object(merge_map(&Map::new(), p)?),
            (None, Value::Array(p)) => merge_list(key, &[], p)?,
            (_, other) => other.clone(),
        };
        out.insert(key.clone(), merged);
    }
    for (key, order) in patch {
        if let Some(field) = key.strip_prefix("$setElementOrder/") {
            if let (Some(list), Some(order)) = (out.get_mut(field), order.as_array()) {
                reorder(field, list, order);
            }
        }
    }
    Ok(out)
}

fn item_key<'a>(item: &'a Value, key: &str) -> Option<&'a Value> {
    item.get(key)
}

fn merge_list(field: &str, doc: &[Value], patch: &[Value]) -> Result<Value, ApiError> {
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let kept: Vec<Value> = patch
            .iter()
            .filter(|p| p.get("$patch").is_none())
            .cloned()
            .collect();
        return Ok(Value::Array(kept));
    }
    if merges_as_set(field) {
        let mut out = doc.to_vec();
        for p in patch {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        return Ok(Value::Array(out));
    }
    let refs: Vec<&Value> = doc.iter().chain(patch).collect();
    let Some(key) = merge_key(field, &refs) else {
        return Ok(Value::Array(patch.to_vec()));
    };
    let mut out = doc.to_vec();
    for p in patch {
        let Some(pk) = item_key(p, key) else {
            return Err(ApiError::bad_request(format!(
                "the strategic merge patch for {field:?} has an item without its merge key {key:?}"
            )));
        };
        let pos = out.iter().position(|d| item_key(d, key) == Some(pk));
        let delete = p.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                let merged = match (&out[i], p) {
                    (Value::Object(d), Value::Object(pm)) => Value::Object(merge_map(d, pm)?),
                    _ => p.clone(),
                };
                out[i] = merged;
            }
            (None, false) => {
                let fresh = match p {
                    Value::Object(pm) => Value::Object(merge_map(&Map::new(), pm)?),
                    other => other.clone(),
                };
                out.push(fresh);
            }
        }
    }
    Ok(Value::Array(out))
}

/// `$setElementOrder`: items named in `order` come first, in that order; the
/// rest keep their relative order after them.
fn reorder(field: &str, list: &mut Value, order: &[Value]) {
    let Some(items) = list.as_array_mut() else {
        return;
    };
    let refs: Vec<&Value> = items.iter().chain(order).collect();
    let key = merge_key(field, &refs);
    let ident = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let wanted: Vec<Value> = order.iter().map(&ident).collect();
    let mut ordered: Vec<Value> = Vec::with_capacity(items.len());
    for w in &wanted {
        if let Some(i) = items.iter().position(|x| ident(x) == *w) {
            ordered.push(items.remove(i));
        }
    }
    ordered.append(items);
    *items = ordered;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn deploy() -> Value {
        json!({"metadata":{"name":"web","labels":{"app":"web","tier":"front"},
            "finalizers":["a"]},
            "spec":{"replicas":1,"template":{"spec":{"containers":[
                {"name":"app","image":"nginx:1","env":[{"name":"A","value":"1"}],
                 "ports":[{"containerPort":80}]},
                {"name":"sidecar","image":"envoy:1"}]}}}})
    }

    #[test]
    fn json_patch_applies_and_reports_failures() {
        let out = json_patch(
            &deploy(),
            &json!([{"op":"replace","path":"/spec/replicas","value":3},
                    {"op":"add","path":"/metadata/labels/x","value":"y"}]),
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], 3);
        assert_eq!(out["metadata"]["labels"]["x"], "y");
        let err = json_patch(&deploy(), &json!([{"op":"remove","path":"/spec/nope"}])).unwrap_err();
        assert_eq!(err.code(), 422);
        let err = json_patch(&deploy(), &json!({"op":"remove"})).unwrap_err();
        assert_eq!(err.code(), 400);
        let err = json_patch(
            &deploy(),
            &json!([{"op":"test","path":"/spec/replicas","value":2}]),
        )
        .unwrap_err();
        assert_eq!(err.code(), 422);
    }

    #[test]
    fn merge_patch_replaces_lists_and_deletes_nulls() {
        let out = merge_patch(
            &deploy(),
            &json!({"metadata":{"labels":{"tier":null}},
                "spec":{"template":{"spec":{"containers":[{"name":"only","image":"x"}]}}}}),
        )
        .unwrap();
        assert_eq!(out["metadata"]["labels"], json!({"app":"web"}));
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert!(merge_patch(&deploy(), &json!([1])).is_err());
    }

    #[test]
    fn strategic_merge_merges_lists_by_key() {
        let out = strategic_merge(
            &deploy(),
            &json!({"spec":{"template":{"spec":{"containers":[
                {"name":"app","image":"nginx:2","env":[{"name":"B","value":"2"}]},
                {"name":"new","image":"busybox"}]}}},
                "metadata":{"finalizers":["b"]}}),
        )
        .unwrap();
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs.as_array().unwrap().len(), 3);
        assert_eq!(cs[0]["image"], "nginx:2");
        assert_eq!(
            cs[0]["ports"][0]["containerPort"], 80,
            "unpatched fields stay"
        );
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(cs[1]["name"], "sidecar");
        assert_eq!(cs[2]["name"], "new");
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
    }

    #[test]
    fn strategic_merge_directives() {
        let out = strategic_merge(
            &deploy(),
            &json!({"spec":{"template":{"spec":{
                "$setElementOrder/containers":[{"name":"sidecar"},{"name":"app"}],
                "containers":[{"name":"app","$patch":"delete"}]}}},
                "metadata":{"$deleteFromPrimitiveList/finalizers":["a"],
                    "labels":{"$patch":"replace","only":"this"}}}),
        )
        .unwrap();
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs.as_array().unwrap().len(), 1);
        assert_eq!(cs[0]["name"], "sidecar");
        assert_eq!(out["metadata"]["finalizers"], json!([]));
        assert_eq!(out["metadata"]["labels"], json!({"only":"this"}));

        let out = strategic_merge(
            &deploy(),
            &json!({"spec":{"template":{"spec":{
                "$setElementOrder/containers":[{"name":"sidecar"},{"name":"app"}],
                "containers":[{"name":"app","image":"nginx:3"}]}}}}),
        )
        .unwrap();
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0]["name"], "sidecar");
        assert_eq!(cs[1]["image"], "nginx:3");

        let err = strategic_merge(
            &deploy(),
            &json!({"spec":{"template":{"spec":{"containers":[{"image":"x"}]}}}}),
        )
        .unwrap_err();
        assert_eq!(err.code(), 400);
    }
}
