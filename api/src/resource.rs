//! Resource types: the key space of a kind (its plural, group and scope, from
//! the registry's kinds table), and turning a client's JSON object of a kind
//! the registry does not know into the key and bytes the store keeps (stored
//! namespaced, plural derived from the kind).

use bytes::Bytes;
use serde_json::{Map, Value};

use crate::registry::kinds::{self, Kind, KINDS};
use crate::registry::prepare;
use crate::store::{KeyPrefix, ResourceKey, Revision, StoreError};

/// One resource type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

fn to_type(k: &Kind) -> ResourceType {
    ResourceType {
        group: k.group.into(),
        version: k.version.into(),
        kind: k.kind.into(),
        plural: k.plural.into(),
        namespaced: k.namespaced,
    }
}

/// English plural of a lower-cased kind, as Kubernetes derives it.
fn pluralize(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if let Some(stem) = lower.strip_suffix('y') {
        if !stem.ends_with(['a', 'e', 'i', 'o', 'u']) {
            return format!("{stem}ies");
        }
    }
    if lower.ends_with('s')
        || lower.ends_with('x')
        || lower.ends_with("ch")
        || lower.ends_with("sh")
    {
        return format!("{lower}es");
    }
    format!("{lower}s")
}

fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

impl ResourceType {
    /// The type of an object with this apiVersion and kind.
    pub fn of(api_version: &str, kind: &str) -> Self {
        let (group, version) = split_api_version(api_version);
        if let Some(known) = kinds::by_kind(group, kind) {
            return ResourceType {
                version: version.into(),
                ..to_type(known)
            };
        }
        ResourceType {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: pluralize(kind),
            namespaced: true,
        }
    }

    /// Resolves what a user typed: `pods`, `pod`, `po`, `Pod`, `deployments.apps`
    /// or `foos.example.com`.
    pub fn by_name(name: &str) -> Result<Self, StoreError> {
        let lower = name.to_ascii_lowercase();
        let (base, group) = match lower.split_once('.') {
            Some((b, g)) => (b, Some(g)),
            None => (lower.as_str(), None),
        };
        let hit = KINDS.iter().find(|k| {
            group.is_none_or(|g| g == k.group)
                && (k.plural == base
                    || k.kind.eq_ignore_ascii_case(base)
                    || k.short.contains(&base))
        });
        match (hit, group) {
            (Some(k), _) => Ok(to_type(k)),
            (None, Some(g)) if !base.is_empty() => Ok(ResourceType {
                group: g.into(),
                version: String::new(),
                kind: String::new(),
                plural: base.into(),
                namespaced: true,
            }),
            _ => Err(StoreError::Invalid(format!(
                "the server doesn't have a resource type {name:?} (use RESOURCE.GROUP for other kinds)"
            ))),
        }
    }

    pub fn key(&self, namespace: Option<&str>, name: &str) -> ResourceKey {
        let namespace = if self.namespaced {
            Some(namespace.unwrap_or("default"))
        } else {
            None
        };
        ResourceKey::new(self.group.clone(), self.plural.clone(), namespace, name)
    }

    /// All objects of this type, in one namespace or (None) all of them.
    pub fn prefix(&self, namespace: Option<&str>) -> KeyPrefix {
        let prefix = KeyPrefix::resource(self.group.clone(), self.plural.clone());
        if self.namespaced {
            prefix.in_namespace(namespace)
        } else {
            prefix
        }
    }
}

/// A parsed client object: its JSON and where it belongs.
pub struct ClientObject {
    pub value: Value,
    pub rtype: ResourceType,
}

fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::Invalid(msg.into())
}

fn meta_mut(value: &mut Value) -> Result<&mut Map<String, Value>, StoreError> {
    value
        .as_object_mut()
        .ok_or_else(|| invalid("the object must be a JSON object"))?
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(|| invalid("metadata must be an object"))
}

fn str_field<'a>(map: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    map.get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

impl ClientObject {
    pub fn parse(json: &[u8]) -> Result<Self, StoreError> {
        let value: Value = serde_json::from_slice(json)
            .map_err(|e| invalid(format!("the object is not valid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| invalid("the object must be a JSON object"))?;
        let api_version =
            str_field(obj, "apiVersion").ok_or_else(|| invalid("the object has no apiVersion"))?;
        let kind = str_field(obj, "kind").ok_or_else(|| invalid("the object has no kind"))?;
        let rtype = ResourceType::of(api_version, kind);
        Ok(Self { value, rtype })
    }

    fn meta(&mut self) -> Result<&mut Map<String, Value>, StoreError> {
        meta_mut(&mut self.value)
    }

    /// Settles name and namespace and returns the key.
    fn place(&mut self) -> Result<ResourceKey, StoreError> {
        let namespaced = self.rtype.namespaced;
        let meta = self.meta()?;
        if str_field(meta, "name").is_none() {
            match str_field(meta, "generateName") {
                Some(prefix) => {
                    let name = format!("{prefix}{}", prepare::random_suffix());
                    meta.insert("name".into(), Value::String(name));
                }
                None => {
                    return Err(invalid(
                        "metadata.name is required (or metadata.generateName)",
                    ))
                }
            }
        }
        if namespaced {
            if str_field(meta, "namespace").is_none() {
                meta.insert("namespace".into(), Value::String("default".into()));
            }
        } else {
            meta.remove("namespace");
        }
        let name = str_field(meta, "name").unwrap_or_default().to_string();
        let ns = str_field(meta, "namespace").map(str::to_string);
        let key = self.rtype.key(ns.as_deref(), &name);
        key.validate()?;
        Ok(key)
    }

    /// For a create: name (or generateName), namespace, uid and
    /// creationTimestamp settled; resourceVersion must not be set.
    pub fn for_create(mut self) -> Result<(ResourceKey, Bytes), StoreError> {
        let key = self.place()?;
        let meta = self.meta()?;
        if str_field(meta, "resourceVersion").is_some() {
            return Err(invalid(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        meta.remove("resourceVersion");
        meta.insert(
            "uid".into(),
            Value::String(uuid::Uuid::new_v4().to_string()),
        );
        if str_field(meta, "creationTimestamp").is_none() {
            let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
            meta.insert("creationTimestamp".into(), Value::String(now));
        }
        Ok((key, self.encode()?))
    }

    /// For an update: the key, the bytes and the revision the client read
    /// (`metadata.resourceVersion`), if any.
    pub fn for_update(mut self) -> Result<(ResourceKey, Bytes, Option<Revision>), StoreError> {
        let key = self.place()?;
        let expected = match str_field(self.meta()?, "resourceVersion") {
            None => None,
            Some(rv) => Some(Revision(rv.parse().map_err(|_| {
                invalid(format!("metadata.resourceVersion {rv:?} is not a number"))
            })?)),
        };
        Ok((key, self.encode()?, expected))
    }

    fn encode(&self) -> Result<Bytes, StoreError> {
        serde_json::to_vec(&self.value)
            .map(Bytes::from)
            .map_err(|e| StoreError::Internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_resolve_to_resources() {
        assert_eq!(
            ResourceType::of("apps/v1", "Deployment").plural,
            "deployments"
        );
        assert!(!ResourceType::of("v1", "Namespace").namespaced);
        assert_eq!(
            ResourceType::of("example.com/v1", "Policy").plural,
            "policies"
        );
        assert_eq!(
            ResourceType::of("example.com/v1", "Gateway").plural,
            "gateways"
        );
        assert_eq!(ResourceType::of("example.com/v1", "Box").plural, "boxes");
        assert_eq!(ResourceType::by_name("po").unwrap().plural, "pods");
        assert_eq!(
            ResourceType::by_name("deployments.apps").unwrap().group,
            "apps"
        );
        assert_eq!(
            ResourceType::by_name("Deployment").unwrap().plural,
            "deployments"
        );
        assert_eq!(
            ResourceType::by_name("foos.example.com").unwrap().group,
            "example.com"
        );
        assert!(ResourceType::by_name("nosuchthing").is_err());
    }

    #[test]
    fn create_settles_identity_and_refuses_bad_objects() {
        let obj = ClientObject::parse(
            br#"{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-"}}"#,
        )
        .unwrap();
        let (key, bytes) = obj.for_create().unwrap();
        assert_eq!(key.namespace.as_deref(), Some("default"));
        assert!(key.name.starts_with("web-") && key.name.len() == 9);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(v["metadata"]["uid"].is_string() && v["metadata"]["creationTimestamp"].is_string());
        for bad in [
            &br#"{"kind":"Pod","metadata":{"name":"a"}}"#[..],
            br#"{"apiVersion":"v1","kind":"Pod","metadata":{}}"#,
            br#"[1,2]"#,
            br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","resourceVersion":"5"}}"#,
        ] {
            let res = ClientObject::parse(bad).and_then(ClientObject::for_create);
            assert!(
                matches!(res, Err(StoreError::Invalid(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
