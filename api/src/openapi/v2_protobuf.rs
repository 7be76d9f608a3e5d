//! `/openapi/v2` in the form kubectl asks for it
//! (`Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf`):
//! gnostic's `openapi.v2.Document` message.
//!
//! kubectl parses the answer as protobuf whatever its Content-Type says (a
//! JSON body fails with "proto: cannot parse invalid wire-format data"; 404
//! and 406 fail with "failed to download openapi"), and it only reads
//! `definitions`: it validates on the client, with these schemas, the
//! documents it cannot leave to the server (`kind: List` files, kinds missing
//! from the v3 documents). So only `swagger`, `info` and `definitions` are
//! encoded; the paths stay in the JSON form.
//!
//! Field numbers (gnostic `openapiv2/OpenAPIv2.proto`): Document{swagger 1,
//! info 2, definitions 9}; Info{title 1, version 2}; Definitions and
//! Properties{additional_properties 1: NamedSchema{name 1, value 2}};
//! Schema{_ref 1, format 2, title 3, description 4, required 19,
//! additional_properties 21: {schema 1 | boolean 2}, type 22: {value 1},
//! items 23: {schema 1}, all_of 24, properties 25, vendor_extension 31:
//! NamedAny{name 1, value 2: Any{yaml 2}}}.

use serde_json::Value;

const LEN: u64 = 2;
const VARINT: u64 = 0;

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
    varint(out, field << 3 | LEN);
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn string(out: &mut Vec<u8>, field: u64, s: &str) {
    if !s.is_empty() {
        bytes(out, field, s.as_bytes());
    }
}

fn boolean(out: &mut Vec<u8>, field: u64, b: bool) {
    varint(out, field << 3 | VARINT);
    out.push(u8::from(b));
}

/// `Document` with the definitions of the Swagger 2.0 JSON document `doc`.
pub(super) fn encode(doc: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    string(&mut out, 1, doc["swagger"].as_str().unwrap_or("2.0"));
    let mut info = Vec::new();
    string(
        &mut info,
        1,
        doc["info"]["title"].as_str().unwrap_or_default(),
    );
    string(
        &mut info,
        2,
        doc["info"]["version"].as_str().unwrap_or_default(),
    );
    bytes(&mut out, 2, &info);
    if let Some(defs) = doc["definitions"].as_object() {
        bytes(&mut out, 9, &named_schemas(defs));
    }
    out
}

/// A `Definitions` or `Properties` message: `repeated NamedSchema` at 1.
fn named_schemas(map: &serde_json::Map<String, Value>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, schema) in map {
        let mut named = Vec::new();
        string(&mut named, 1, name);
        bytes(&mut named, 2, &schema_message(schema));
        bytes(&mut out, 1, &named);
    }
    out
}

fn schema_message(s: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let Some(map) = s.as_object() else {
        return out;
    };
    let str_field = |key: &str| map.get(key).and_then(Value::as_str).unwrap_or_default();
    string(&mut out, 1, str_field("$ref"));
    string(&mut out, 2, str_field("format"));
    string(&mut out, 3, str_field("title"));
    string(&mut out, 4, str_field("description"));
    for r in map
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        string(&mut out, 19, r.as_str().unwrap_or_default());
    }
    match map.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            let mut item = Vec::new();
            boolean(&mut item, 2, *b);
            bytes(&mut out, 21, &item);
        }
        Some(schema @ Value::Object(_)) => {
            let mut item = Vec::new();
            bytes(&mut item, 1, &schema_message(schema));
            bytes(&mut out, 21, &item);
        }
        _ => {}
    }
    match map.get("type") {
        Some(Value::String(t)) => {
            let mut item = Vec::new();
            string(&mut item, 1, t);
            bytes(&mut out, 22, &item);
        }
        Some(Value::Array(ts)) => {
            let mut item = Vec::new();
            ts.iter()
                .filter_map(Value::as_str)
                .for_each(|t| string(&mut item, 1, t));
            bytes(&mut out, 22, &item);
        }
        _ => {}
    }
    if let Some(items) = map.get("items") {
        let mut item = Vec::new();
        bytes(&mut item, 1, &schema_message(items));
        bytes(&mut out, 23, &item);
    }
    for sub in map
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        bytes(&mut out, 24, &schema_message(sub));
    }
    if let Some(props) = map.get("properties").and_then(Value::as_object) {
        bytes(&mut out, 25, &named_schemas(props));
    }
    for (name, value) in map.iter().filter(|(k, _)| k.starts_with("x-")) {
        // gnostic keeps extension values as YAML text; JSON is YAML.
        let mut any = Vec::new();
        string(&mut any, 2, &value.to_string());
        let mut named = Vec::new();
        string(&mut named, 1, name);
        bytes(&mut named, 2, &any);
        bytes(&mut out, 31, &named);
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn schemas_encode_field_by_field() {
        // Schema{type: TypeItem{value: ["string"]}}; keys past field 15 take two bytes.
        assert_eq!(
            schema_message(&json!({"type": "string"})),
            [0xb2, 0x01, 8, 10, 6, b's', b't', b'r', b'i', b'n', b'g']
        );
        // Schema{_ref: "#/definitions/X"}
        let r = schema_message(&json!({"$ref": "#/definitions/X"}));
        assert_eq!(&r[..2], [1 << 3 | 2, 15]);
        // additionalProperties: false → {boolean: false}
        assert_eq!(
            schema_message(&json!({"additionalProperties": false})),
            [0xaa, 0x01, 2, 2 << 3, 0]
        );
        let x = schema_message(&json!({"x-a": 1}));
        assert_eq!(&x[..2], [0xfa, 0x01]);
    }

    #[test]
    fn long_lengths_are_varints() {
        let mut out = Vec::new();
        string(&mut out, 4, &"d".repeat(300));
        assert_eq!(&out[..3], [4 << 3 | 2, 0xac, 0x02]);
        assert_eq!(out.len(), 303);
    }
}
