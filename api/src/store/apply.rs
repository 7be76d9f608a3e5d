//! The write semantics every store shares: a batch of ops against the current
//! objects gives either one error and no change, or the new objects and the
//! events they make. Pure: the caller owns the storage and the revision.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use super::canonical::Stampable;
use super::{
    DeletePreconditions, Event, EventType, Object, Op, ResourceKey, Revision, StoreError,
    MAX_OBJECT_BYTES,
};

/// Read access to the objects as they are before the batch. Shared: the
/// object a change replaces is its event's `prev`, and a source that still
/// holds it (a recent event, an earlier write of the batch) hands out the
/// same allocation instead of a copy.
pub trait ObjectSource {
    fn get_object(&self, key: &ResourceKey) -> Result<Option<Arc<Object>>, StoreError>;
}

/// What a successful batch does: results in op order, the writes to make
/// (`None` deletes) and the events to publish.
#[derive(Debug, Default)]
pub struct Applied {
    pub results: Vec<Object>,
    pub writes: Vec<(ResourceKey, Option<Arc<Object>>)>,
    pub events: Vec<Event>,
}

/// Checks what can be checked without the current state, so that a bad request
/// is refused before it is replicated.
pub fn precheck(ops: &[Op]) -> Result<(), StoreError> {
    check_keys(ops)?;
    for op in ops {
        if let Op::Create { key, value } | Op::Update { key, value, .. } = op {
            // The size after stamping is checked at apply; here only what
            // the object is.
            prepare(key, value)?;
        }
    }
    Ok(())
}

fn check_keys(ops: &[Op]) -> Result<(), StoreError> {
    if ops.is_empty() {
        return Err(StoreError::Invalid("a batch needs at least one op".into()));
    }
    let mut seen = std::collections::HashSet::new();
    for op in ops {
        let key = op.key();
        key.validate()?;
        if !seen.insert(key) {
            return Err(StoreError::Invalid(format!(
                "{key} appears twice in one batch"
            )));
        }
    }
    Ok(())
}

/// Applies `ops` at revision `rev`. On error nothing is to be written.
pub fn apply(source: &impl ObjectSource, rev: Revision, ops: &[Op]) -> Result<Applied, StoreError> {
    check_keys(ops)?;
    let mut out = Applied::default();
    // Ops of a batch touch distinct keys (precheck), so each sees the state
    // before the batch.
    for op in ops {
        let key = op.key();
        let current = source.get_object(key)?;
        match op {
            Op::Create { value, .. } => {
                if current.is_some() {
                    return Err(StoreError::AlreadyExists {
                        key: key.to_string(),
                    });
                }
                let obj = Arc::new(Object {
                    key: key.clone(),
                    data: stamp(key, value, rev)?,
                    revision: rev,
                    created: rev,
                });
                out.push(rev, EventType::Added, obj, None);
            }
            Op::Update {
                value, expected, ..
            } => {
                let Some(current) = current else {
                    return Err(StoreError::not_found(key));
                };
                if let Some(expected) = expected {
                    if *expected != current.revision {
                        return Err(modified_conflict(key));
                    }
                }
                // An update that changes nothing keeps the old revision and makes
                // no event, as Kubernetes requires.
                let mut v = prepare(key, value)?;
                if v.at(key, current.revision)? == current.data {
                    out.results.push((*current).clone());
                    continue;
                }
                let obj = Arc::new(Object {
                    key: key.clone(),
                    data: v.at(key, rev)?,
                    revision: rev,
                    created: current.created,
                });
                out.push(rev, EventType::Modified, obj, Some(current));
            }
            Op::Delete { preconditions, .. } => {
                let Some(current) = current else {
                    return Err(StoreError::not_found(key));
                };
                check_delete(key, &current, preconditions)?;
                let last = Arc::new(Object {
                    data: stamp(key, &current.data, rev)?,
                    revision: rev,
                    ..(*current).clone()
                });
                out.results.push((*last).clone());
                out.writes.push((key.clone(), None));
                out.events.push(Event {
                    revision: rev,
                    kind: EventType::Deleted,
                    object: last,
                    prev: Some(current),
                });
            }
        }
    }
    Ok(out)
}

impl Applied {
    fn push(
        &mut self,
        rev: Revision,
        kind: EventType,
        obj: Arc<Object>,
        prev: Option<Arc<Object>>,
    ) {
        self.results.push((*obj).clone());
        self.writes.push((obj.key.clone(), Some(obj.clone())));
        self.events.push(Event {
            revision: rev,
            kind,
            object: obj,
            prev,
        });
    }
}

fn modified_conflict(key: &ResourceKey) -> StoreError {
    StoreError::Conflict {
        key: key.to_string(),
        reason: "the object has been modified; please apply your changes to the latest version and try again".into(),
    }
}

fn check_delete(
    key: &ResourceKey,
    current: &Object,
    pre: &DeletePreconditions,
) -> Result<(), StoreError> {
    if let Some(rev) = pre.revision {
        if rev != current.revision {
            return Err(StoreError::Conflict {
                key: key.to_string(),
                reason: format!(
                    "Precondition failed: ResourceVersion in precondition: {rev}, ResourceVersion in object meta: {}",
                    current.revision
                ),
            });
        }
    }
    if let Some(uid) = &pre.uid {
        let actual = uid_of(&current.data);
        if actual.as_deref() != Some(uid.as_str()) {
            return Err(StoreError::Conflict {
                key: key.to_string(),
                reason: format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    actual.unwrap_or_default()
                ),
            });
        }
    }
    Ok(())
}

/// `metadata.uid` of a stored object, if it has one.
pub fn uid_of(data: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(data).ok()?;
    v.get("metadata")?.get("uid")?.as_str().map(str::to_string)
}

/// Checks that `value` is a JSON object whose metadata names `key`, sets its
/// `metadata.resourceVersion` to `rev` and returns the canonical encoding.
pub fn stamp(key: &ResourceKey, value: &[u8], rev: Revision) -> Result<Bytes, StoreError> {
    prepare(key, value)?.at(key, rev)
}

/// An object checked and ready to be stamped at a revision: canonical bytes
/// are spliced (`canonical`), anything else is parsed and re-encoded. Both
/// give the same bytes (see `canonical`), so which one a replica takes never
/// shows.
enum Prepared<'a> {
    Canonical(Stampable<'a>),
    Parsed(Value),
}

fn prepare<'a>(key: &ResourceKey, value: &'a [u8]) -> Result<Prepared<'a>, StoreError> {
    if value.len() > MAX_OBJECT_BYTES {
        return Err(too_large(key, value.len()));
    }
    Ok(match Stampable::scan(key, value) {
        Some(s) => Prepared::Canonical(s),
        None => Prepared::Parsed(checked(key, value)?),
    })
}

impl Prepared<'_> {
    /// The canonical encoding at revision `rev`.
    fn at(&mut self, key: &ResourceKey, rev: Revision) -> Result<Bytes, StoreError> {
        let data = match self {
            Prepared::Canonical(s) => s.at(rev),
            Prepared::Parsed(v) => encode_at(v, rev)?,
        };
        if data.len() > MAX_OBJECT_BYTES {
            return Err(too_large(key, data.len()));
        }
        Ok(data)
    }
}

/// `value` parsed, if it is a JSON object whose metadata names `key`.
fn checked(key: &ResourceKey, value: &[u8]) -> Result<Value, StoreError> {
    if value.len() > MAX_OBJECT_BYTES {
        return Err(too_large(key, value.len()));
    }
    let mut v: Value = serde_json::from_slice(value)
        .map_err(|e| StoreError::Invalid(format!("{key}: object is not valid JSON: {e}")))?;
    let meta = v
        .as_object_mut()
        .ok_or_else(|| StoreError::Invalid(format!("{key}: object must be a JSON object")))?
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()))
        .as_object_mut()
        .ok_or_else(|| StoreError::Invalid(format!("{key}: metadata must be an object")))?;
    match meta.get("name").and_then(Value::as_str) {
        Some(name) if name == key.name => {}
        other => {
            return Err(StoreError::Invalid(format!(
                "{key}: metadata.name is {other:?}, the key names {:?}",
                key.name
            )))
        }
    }
    let ns = meta.get("namespace").and_then(Value::as_str);
    if ns.is_some() && ns != key.namespace.as_deref() {
        return Err(StoreError::Invalid(format!(
            "{key}: metadata.namespace {ns:?} does not match the key's namespace {:?}",
            key.namespace
        )));
    }
    Ok(v)
}

/// The canonical encoding of a `checked` object at revision `rev`.
fn encode_at(v: &mut Value, rev: Revision) -> Result<Bytes, StoreError> {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rev.to_string()));
    }
    let data = serde_json::to_vec(v).map_err(|e| StoreError::Internal(e.to_string()))?;
    Ok(Bytes::from(data))
}

fn too_large(key: &ResourceKey, size: usize) -> StoreError {
    StoreError::TooLarge {
        key: key.to_string(),
        size,
        limit: MAX_OBJECT_BYTES,
    }
}

#[derive(Default)]
pub struct MapSource(pub HashMap<ResourceKey, Object>);

impl ObjectSource for MapSource {
    fn get_object(&self, key: &ResourceKey) -> Result<Option<Arc<Object>>, StoreError> {
        Ok(self.0.get(key).cloned().map(Arc::new))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ResourceKey {
        ResourceKey::new("", "configmaps", Some("default"), name)
    }

    fn cm(name: &str, v: &str) -> Bytes {
        Bytes::from(format!(
            r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"{name}"}},"data":{{"k":"{v}"}}}}"#
        ))
    }

    #[test]
    fn a_failing_op_fails_the_whole_batch() {
        let mut src = MapSource::default();
        let a = apply(
            &src,
            Revision(5),
            &[Op::Create {
                key: key("a"),
                value: cm("a", "1"),
            }],
        )
        .unwrap();
        src.0.insert(key("a"), a.results[0].clone());
        let err = apply(
            &src,
            Revision(6),
            &[
                Op::Create {
                    key: key("b"),
                    value: cm("b", "1"),
                },
                Op::Create {
                    key: key("a"),
                    value: cm("a", "2"),
                },
            ],
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::AlreadyExists { .. }));
    }

    #[test]
    fn resource_version_is_the_revision_and_noop_update_keeps_it() {
        let mut src = MapSource::default();
        let a = apply(
            &src,
            Revision(7),
            &[Op::Create {
                key: key("a"),
                value: cm("a", "1"),
            }],
        )
        .unwrap();
        let obj = a.results[0].clone();
        let v: Value = serde_json::from_slice(&obj.data).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "7");
        src.0.insert(key("a"), obj);
        let same = apply(
            &src,
            Revision(9),
            &[Op::Update {
                key: key("a"),
                value: cm("a", "1"),
                expected: None,
            }],
        )
        .unwrap();
        assert_eq!(same.results[0].revision, Revision(7));
        assert!(same.events.is_empty() && same.writes.is_empty());
    }

    /// Old log entries hold whatever bytes their writer sent: canonical or
    /// not, stamping gives what parsing, setting and re-encoding gave before
    /// the splice existed, so replaying them writes the same objects.
    #[test]
    fn stamping_any_encoding_gives_the_parsed_encoding() {
        let k = key("a");
        for text in [
            r#"{"kind":"ConfigMap","metadata":{"name":"a"},"data":{"k":"v"}}"#,
            r#"{"metadata":{"name":"a","namespace":"default","resourceVersion":"3"}}"#,
            r#"{ "metadata" : { "name" : "a" , "uid" : "u" } }"#,
            r#"{"z":1,"metadata":{"uid":"u","name":"a","resourceVersion":7}}"#,
            r#"{"metadata":{"name":"a"},"x":"\/é","f":1.50,"e":1e3,"m":-0}"#,
            r#"{"metadata":{"name":"a"},"spec":{"metadata":{"resourceVersion":"1"}}}"#,
            r#"{"a":1,"a":2,"metadata":{"name":"a"}}"#,
        ] {
            let mut v: Value = serde_json::from_slice(text.as_bytes()).unwrap();
            v["metadata"]["resourceVersion"] = Value::String("12".into());
            let parsed = serde_json::to_vec(&v).unwrap();
            let stamped = stamp(&k, text.as_bytes(), Revision(12)).unwrap();
            assert_eq!(stamped, parsed, "{text}");
            // Stamping stored (canonical) bytes again, as a delete does.
            let again = stamp(&k, &stamped, Revision(13)).unwrap();
            v["metadata"]["resourceVersion"] = Value::String("13".into());
            assert_eq!(again, serde_json::to_vec(&v).unwrap(), "{text}");
        }
    }

    #[test]
    fn names_must_match_and_size_is_bounded() {
        let src = MapSource::default();
        let err = apply(
            &src,
            Revision(1),
            &[Op::Create {
                key: key("a"),
                value: cm("b", "1"),
            }],
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        let big = "x".repeat(MAX_OBJECT_BYTES);
        let err = apply(
            &src,
            Revision(1),
            &[Op::Create {
                key: key("a"),
                value: cm("a", &big),
            }],
        )
        .unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { .. }), "{err}");
        let err = apply(
            &src,
            Revision(1),
            &[Op::Create {
                key: key("a"),
                value: Bytes::from("{"),
            }],
        )
        .unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }
}
