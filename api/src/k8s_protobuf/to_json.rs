//! A decoded Kubernetes message as Kubernetes' JSON.
//!
//! Field names are the .proto names, which go-to-protobuf takes from the JSON
//! tags, so they are the JSON names but for one (`RENAMED`); structs Go embeds
//! inline are fields in protobuf and are flattened back (`INLINE`). Most types
//! map one to one (repeated → array, map → object, int64 → number, bytes →
//! base64 like Go's `encoding/json`); a few apimachinery types have their own
//! JSON form and are written here as their Go `MarshalJSON` writes them. Empty
//! string fields are left out (see `is_unset_string`).

use base64::Engine as _;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MapKey, ReflectMessage, Value};
use serde_json::Value as Json;

use super::ProtobufError;

const QUANTITY: &str = "k8s.io.apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "k8s.io.apimachinery.pkg.util.intstr.IntOrString";
const TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime";
const DURATION: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.Duration";
const FIELDS_V1: &str = "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1";
const RAW_EXTENSION: &str = "k8s.io.apimachinery.pkg.runtime.RawExtension";

/// The JSON of one message: an object of its present fields, or a special
/// type's own form.
pub(super) fn message(msg: &DynamicMessage) -> Result<Json, ProtobufError> {
    match msg.descriptor().full_name() {
        QUANTITY => Ok(quantity(msg)),
        INT_OR_STRING => int_or_string(msg),
        // Go's zero Time marshals to zero bytes, which decode to a message
        // without `seconds`; its JSON is null. Upstream keeps seconds only.
        TIME => Ok(match msg.has_field_by_name("seconds") {
            true => Json::String(rfc3339(int(msg, "seconds"), None)),
            false => Json::Null,
        }),
        MICRO_TIME => Ok(match msg.has_field_by_name("seconds") {
            true => Json::String(rfc3339(int(msg, "seconds"), Some(int(msg, "nanos")))),
            false => Json::Null,
        }),
        DURATION => Ok(Json::String(go_duration(int(msg, "duration")))),
        FIELDS_V1 => embedded_json(msg, "Raw"),
        RAW_EXTENSION => embedded_json(msg, "raw"),
        _ => {
            let mut out = serde_json::Map::new();
            for (field, value) in msg.fields() {
                if is_unset_string(&field, value) {
                    continue;
                }
                if is_inline(&field) {
                    if let Json::Object(inner) = self::value(value)? {
                        out.extend(inner);
                    }
                    continue;
                }
                let name = json_name(&field);
                let json = self::value(value).map_err(|e| e.within(name))?;
                out.insert(name.to_owned(), json);
            }
            Ok(Json::Object(out))
        }
    }
}

/// Go structs embedded with `json:",inline"`: protobuf nests them in a field
/// (name, message type), JSON spreads their fields into the parent. The
/// complete list for the packages in the descriptor (upstream 1.32 types.go).
const INLINE: &[(&str, &str)] = &[
    (
        "localObjectReference",
        "k8s.io.api.core.v1.LocalObjectReference",
    ),
    ("volumeSource", "k8s.io.api.core.v1.VolumeSource"),
    (
        "persistentVolumeSource",
        "k8s.io.api.core.v1.PersistentVolumeSource",
    ),
    ("handler", "k8s.io.api.core.v1.ProbeHandler"),
    (
        "ephemeralContainerCommon",
        "k8s.io.api.core.v1.EphemeralContainerCommon",
    ),
    (
        "ingressRuleValue",
        "k8s.io.api.networking.v1.IngressRuleValue",
    ),
];

/// The one field in those packages whose proto name is not its JSON name.
const RENAMED: &[(&str, &str)] = &[(
    "k8s.io.api.networking.v1.IngressClassParametersReference.aPIGroup",
    "apiGroup",
)];

fn is_inline(field: &FieldDescriptor) -> bool {
    let Kind::Message(ty) = field.kind() else {
        return false;
    };
    INLINE
        .iter()
        .any(|&(name, t)| name == field.name() && t == ty.full_name())
}

fn json_name(field: &FieldDescriptor) -> &str {
    RENAMED
        .iter()
        .find(|(full, _)| *full == field.full_name())
        .map_or(field.name(), |(_, json)| json)
}

/// Strings whose `""` differs from unset: pointers where Kubernetes gives the
/// empty string a meaning of its own ("no class", not "the default class").
const EMPTY_STRING_IS_A_VALUE: &[&str] = &[
    "k8s.io.api.core.v1.PersistentVolumeClaimSpec.storageClassName",
    "k8s.io.api.core.v1.PersistentVolumeClaimSpec.volumeAttributesClassName",
    "k8s.io.api.core.v1.PersistentVolumeSpec.storageClassName",
    "k8s.io.api.core.v1.PersistentVolumeSpec.volumeAttributesClassName",
];

/// gogo-protobuf writes every non-pointer string field, set or not, where Go's
/// JSON (`omitempty`) leaves `""` out and Kubernetes reads `""` as unset.
/// Keeping them would store `"schedulerName": ""`, `"type": ""` where
/// defaulting looks for an absent key. (Zero numbers and `false` stay: for
/// pointer fields such as `replicas` they are values, and the schema does not
/// say which fields are pointers.)
fn is_unset_string(field: &FieldDescriptor, value: &Value) -> bool {
    matches!(value, Value::String(s) if s.is_empty())
        && !EMPTY_STRING_IS_A_VALUE.contains(&field.full_name())
}

fn value(v: &Value) -> Result<Json, ProtobufError> {
    Ok(match v {
        Value::Bool(b) => Json::Bool(*b),
        Value::I32(n) => Json::from(*n),
        Value::I64(n) => Json::from(*n),
        Value::U32(n) => Json::from(*n),
        Value::U64(n) => Json::from(*n),
        // Kubernetes' schema has no floats; this is for completeness.
        Value::F32(n) => Json::from(f64::from(*n)),
        Value::F64(n) => Json::from(*n),
        Value::EnumNumber(n) => Json::from(*n),
        Value::String(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Value::Message(m) => message(m)?,
        Value::List(items) => Json::Array(items.iter().map(value).collect::<Result<_, _>>()?),
        Value::Map(entries) => {
            let mut out = serde_json::Map::new();
            for (k, v) in entries {
                let key = map_key(k);
                let json = value(v).map_err(|e| e.within(&key))?;
                out.insert(key, json);
            }
            Json::Object(out)
        }
    })
}

fn map_key(k: &MapKey) -> String {
    match k {
        MapKey::String(s) => s.clone(),
        MapKey::Bool(b) => b.to_string(),
        MapKey::I32(n) => n.to_string(),
        MapKey::I64(n) => n.to_string(),
        MapKey::U32(n) => n.to_string(),
        MapKey::U64(n) => n.to_string(),
    }
}

/// The canonical string the sender parsed; an empty Quantity is zero.
fn quantity(msg: &DynamicMessage) -> Json {
    match string(msg, "string") {
        s if s.is_empty() => Json::String("0".into()),
        s => Json::String(s),
    }
}

fn int_or_string(msg: &DynamicMessage) -> Result<Json, ProtobufError> {
    match int(msg, "type") {
        0 => Ok(Json::from(int(msg, "intVal"))),
        1 => Ok(Json::String(string(msg, "strVal"))),
        t => Err(ProtobufError::Field {
            path: String::new(),
            reason: format!("IntOrString type {t} is neither 0 (int) nor 1 (string)"),
        }),
    }
}

/// RawExtension and FieldsV1 carry JSON as bytes; empty is null, as in Go.
fn embedded_json(msg: &DynamicMessage, field: &str) -> Result<Json, ProtobufError> {
    let raw = match msg.get_field_by_name(field).as_deref() {
        Some(Value::Bytes(b)) => b.clone(),
        _ => Default::default(),
    };
    if raw.is_empty() {
        return Ok(Json::Null);
    }
    serde_json::from_slice(&raw).map_err(|e| ProtobufError::Field {
        path: String::new(),
        reason: format!("{} does not hold JSON: {e}", msg.descriptor().name()),
    })
}

fn int(msg: &DynamicMessage, field: &str) -> i64 {
    match msg.get_field_by_name(field).as_deref() {
        Some(Value::I64(n)) => *n,
        Some(Value::I32(n)) => i64::from(*n),
        _ => 0,
    }
}

fn string(msg: &DynamicMessage, field: &str) -> String {
    match msg.get_field_by_name(field).as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

impl ProtobufError {
    /// Prefixes a field error's path with the field it was found under.
    fn within(self, field: &str) -> Self {
        match self {
            ProtobufError::Field { path, reason } if path.is_empty() => ProtobufError::Field {
                path: field.to_owned(),
                reason,
            },
            ProtobufError::Field { path, reason } => ProtobufError::Field {
                path: format!("{field}.{path}"),
                reason,
            },
            other => other,
        }
    }
}

/// UTC RFC 3339 as Go's `time.RFC3339` (`2024-01-02T03:04:05Z`), or with
/// `nanos`, `RFC3339Micro`-style six fractional digits (nanoseconds truncated).
fn rfc3339(seconds: i64, nanos: Option<i64>) -> String {
    let (seconds, frac) = match nanos {
        None => (seconds, String::new()),
        Some(n) => {
            // Go's time.Unix normalises nanos outside [0, 1e9) into seconds.
            let s = seconds.saturating_add(n.div_euclid(1_000_000_000));
            (s, format!(".{:06}", n.rem_euclid(1_000_000_000) / 1_000))
        }
    };
    let (days, secs) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}{frac}Z")
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard
/// Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Nanoseconds as Go's `time.Duration.String()`: `1h0m0s`, `1m30s`, `1.5s`,
/// `1.5ms`, `2µs`, `0s`.
fn go_duration(nanos: i64) -> String {
    let sign = if nanos < 0 { "-" } else { "" };
    let u = nanos.unsigned_abs();
    if u == 0 {
        return "0s".into();
    }
    let text = if u < 1_000_000_000 {
        // Under a second Go switches to the largest unit below it.
        let (prec, unit) = match u {
            ..1_000 => (0, "ns"),
            1_000..1_000_000 => (3, "µs"),
            _ => (6, "ms"),
        };
        let (whole, frac) = split_decimal(u, prec);
        format!("{whole}{frac}{unit}")
    } else {
        let (secs, frac) = split_decimal(u, 9);
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        match (h, secs / 60) {
            (1.., _) => format!("{h}h{m}m{s}{frac}s"),
            (0, 1..) => format!("{m}m{s}{frac}s"),
            (0, 0) => format!("{s}{frac}s"),
        }
    };
    format!("{sign}{text}")
}

/// `u / 10^prec` and its fractional digits as `.ddd` without trailing zeros
/// (empty when there are none).
fn split_decimal(u: u64, prec: u32) -> (u64, String) {
    let p = 10u64.pow(prec);
    let frac = u % p;
    if frac == 0 {
        return (u / p, String::new());
    }
    let digits = format!("{frac:0width$}", width = prec as usize);
    (u / p, format!(".{}", digits.trim_end_matches('0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_format_as_go_rfc3339() {
        assert_eq!(rfc3339(0, None), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_704_164_645, None), "2024-01-02T03:04:05Z");
        assert_eq!(rfc3339(951_782_400, None), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(-1, None), "1969-12-31T23:59:59Z");
        assert_eq!(
            rfc3339(1_704_164_645, Some(123_456_789)),
            "2024-01-02T03:04:05.123456Z"
        );
        assert_eq!(
            rfc3339(1_704_164_645, Some(0)),
            "2024-01-02T03:04:05.000000Z"
        );
        assert_eq!(rfc3339(253_402_300_799, None), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn durations_format_as_go() {
        let s = 1_000_000_000;
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(3600 * s), "1h0m0s");
        assert_eq!(go_duration(90 * s), "1m30s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(1_500_000), "1.5ms");
        assert_eq!(go_duration(2_000), "2µs");
        assert_eq!(go_duration(7), "7ns");
        assert_eq!(go_duration(-(5 * s)), "-5s");
        assert_eq!(go_duration(26 * 3600 * s + 3 * s + 1), "26h0m3.000000001s");
        assert_eq!(go_duration(i64::MIN), "-2562047h47m16.854775808s");
    }
}
