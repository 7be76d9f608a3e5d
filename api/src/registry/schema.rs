//! Checking an object against its kind's typed model (k8s-openapi): wrong types
//! are refused with the field path, and fields the model does not know are found
//! by comparing the object with its typed round trip.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Why an object does not fit its kind's model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Dotted path with `[i]` for list items; empty for the whole object.
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// Decodes `v` as `K` and serializes it back: what the model keeps of `v`.
/// The path to a field that does not decode is tracked only once decoding
/// has failed (tracking it costs every write that decodes, which is nearly
/// all of them).
pub fn round_trip<K: DeserializeOwned + Serialize>(v: &Value) -> Result<Value, DecodeError> {
    let typed = match K::deserialize(v) {
        Ok(typed) => typed,
        Err(_) => serde_path_to_error::deserialize::<_, K>(v).map_err(|e| {
            let path = e.path().to_string();
            DecodeError {
                field: if path == "." { String::new() } else { path },
                message: e.into_inner().to_string(),
            }
        })?,
    };
    serde_json::to_value(&typed).map_err(|e| DecodeError {
        field: String::new(),
        message: e.to_string(),
    })
}

/// Paths of fields in `input` that `kept` (its typed round trip) lost. Nulls
/// are not fields. Maps with free keys (labels, data) survive the round trip
/// whole, so only schema fields are ever reported.
pub fn unknown_fields(input: &Value, kept: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(input, kept, String::new(), &mut out);
    out
}

fn walk(input: &Value, kept: &Value, path: String, out: &mut Vec<String>) {
    match (input, kept) {
        (Value::Object(i), Value::Object(k)) => {
            for (name, value) in i {
                if value.is_null() {
                    continue;
                }
                let child = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                match k.get(name) {
                    Some(kv) => walk(value, kv, child, out),
                    None => out.push(child),
                }
            }
        }
        (Value::Array(i), Value::Array(k)) => {
            for (n, (iv, kv)) in i.iter().zip(k).enumerate() {
                walk(iv, kv, format!("{path}[{n}]"), out);
            }
        }
        _ => {}
    }
}

/// Removes the fields at `paths` (as `unknown_fields` reports them).
pub fn prune(value: &mut Value, paths: &[String]) {
    for path in paths {
        remove_path(value, path);
    }
}

fn remove_path(value: &mut Value, path: &str) {
    let mut cur = value;
    let segments = split_path(path);
    let Some((last, parents)) = segments.split_last() else {
        return;
    };
    for seg in parents {
        let next = match seg {
            Segment::Field(f) => cur.get_mut(f.as_str()),
            Segment::Index(i) => cur.get_mut(*i),
        };
        match next {
            Some(v) => cur = v,
            None => return,
        }
    }
    if let (Segment::Field(f), Some(map)) = (last, cur.as_object_mut()) {
        map.remove(f.as_str());
    }
}

enum Segment {
    Field(String),
    Index(usize),
}

fn split_path(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (name, rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Segment::Field(name.to_string()));
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            if let Ok(i) = idx.trim_end_matches(']').parse() {
                out.push(Segment::Index(i));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::Deployment;
    use serde_json::json;

    use super::*;

    #[test]
    fn wrong_types_name_the_field() {
        let bad = json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"a"},
            "spec":{"replicas":"three","selector":{}, "template":{}}});
        let err = round_trip::<Deployment>(&bad).unwrap_err();
        assert_eq!(err.field, "spec.replicas");
        assert!(err.message.contains("invalid type"), "{err}");
    }

    #[test]
    fn unknown_fields_are_found_and_pruned() {
        let mut input = json!({"apiVersion":"apps/v1","kind":"Deployment",
            "metadata":{"name":"a","labels":{"x":"y"},"bogus":1},
            "spec":{"selector":{"matchLabels":{"app":"a"}},"replicaz":3,
                "template":{"spec":{"containers":[{"name":"c","image":"i","imagePolicy":"x"}]}}}});
        let kept = round_trip::<Deployment>(&input).unwrap();
        let unknown = unknown_fields(&input, &kept);
        assert_eq!(
            unknown,
            vec![
                "metadata.bogus",
                "spec.replicaz",
                "spec.template.spec.containers[0].imagePolicy"
            ]
        );
        prune(&mut input, &unknown);
        let kept = round_trip::<Deployment>(&input).unwrap();
        assert!(unknown_fields(&input, &kept).is_empty());
        assert_eq!(input["metadata"]["labels"]["x"], "y");
    }
}
