//! Resource keys and their one byte layout: `group/resource/namespace/name`, with
//! `core` for the legacy group and an empty namespace segment for cluster-scoped
//! objects. Four segments always, so a key parses back without knowing the kind.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::StoreError;

const CORE_GROUP: &str = "core";
const MAX_SEGMENT: usize = 253;

/// Where one object lives: group/resource/namespace/name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceKey {
    /// API group, "" for the core (legacy) group.
    pub group: String,
    /// Lower-case plural resource name, e.g. `pods`.
    pub resource: String,
    /// `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    pub name: String,
}

/// A set of keys: all objects of a resource, optionally in one namespace,
/// optionally one name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyPrefix {
    pub group: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

fn check_segment(what: &str, s: &str) -> Result<(), StoreError> {
    if s.is_empty() {
        return Err(StoreError::Invalid(format!("{what} must not be empty")));
    }
    if s.len() > MAX_SEGMENT {
        return Err(StoreError::Invalid(format!(
            "{what} {s:?} is longer than {MAX_SEGMENT} characters"
        )));
    }
    if s.contains(['/', '\0']) || s == "." || s == ".." {
        return Err(StoreError::Invalid(format!(
            "{what} {s:?} may not contain '/' or NUL, nor be '.' or '..'"
        )));
    }
    Ok(())
}

fn group_segment(group: &str) -> &str {
    if group.is_empty() {
        CORE_GROUP
    } else {
        group
    }
}

impl ResourceKey {
    pub fn new(
        group: impl Into<String>,
        resource: impl Into<String>,
        namespace: Option<&str>,
        name: impl Into<String>,
    ) -> Self {
        Self {
            group: group.into(),
            resource: resource.into(),
            namespace: namespace.map(str::to_string),
            name: name.into(),
        }
    }

    /// Checks every segment; a key that passes encodes and parses back to itself.
    pub fn validate(&self) -> Result<(), StoreError> {
        if !self.group.is_empty() {
            check_segment("group", &self.group)?;
        }
        check_segment("resource", &self.resource)?;
        if let Some(ns) = &self.namespace {
            check_segment("namespace", ns)?;
        }
        check_segment("name", &self.name)
    }

    pub fn encode(&self) -> Vec<u8> {
        format!(
            "{}/{}/{}/{}",
            group_segment(&self.group),
            self.resource,
            self.namespace.as_deref().unwrap_or(""),
            self.name
        )
        .into_bytes()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let s = std::str::from_utf8(bytes)
            .map_err(|_| StoreError::Invalid("key is not UTF-8".into()))?;
        let parts: Vec<&str> = s.split('/').collect();
        let [group, resource, namespace, name] = parts[..] else {
            return Err(StoreError::Invalid(format!("malformed key {s:?}")));
        };
        let key = Self {
            group: if group == CORE_GROUP { "" } else { group }.to_string(),
            resource: resource.to_string(),
            namespace: (!namespace.is_empty()).then(|| namespace.to_string()),
            name: name.to_string(),
        };
        key.validate()?;
        Ok(key)
    }

    pub fn prefix(&self) -> KeyPrefix {
        KeyPrefix {
            group: self.group.clone(),
            resource: self.resource.clone(),
            namespace: self.namespace.clone(),
            name: Some(self.name.clone()),
        }
    }
}

impl fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resource = if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        match &self.namespace {
            Some(ns) => write!(f, "{resource} {ns}/{}", self.name),
            None => write!(f, "{resource} {}", self.name),
        }
    }
}

impl KeyPrefix {
    pub fn resource(group: impl Into<String>, resource: impl Into<String>) -> Self {
        Self {
            group: group.into(),
            resource: resource.into(),
            namespace: None,
            name: None,
        }
    }

    pub fn in_namespace(mut self, namespace: Option<&str>) -> Self {
        self.namespace = namespace.map(str::to_string);
        self
    }

    pub fn validate(&self) -> Result<(), StoreError> {
        if !self.group.is_empty() {
            check_segment("group", &self.group)?;
        }
        check_segment("resource", &self.resource)?;
        if let Some(ns) = &self.namespace {
            check_segment("namespace", ns)?;
        }
        if let Some(name) = &self.name {
            check_segment("name", name)?;
        }
        Ok(())
    }

    /// The byte prefix every matching key starts with. A name prefix is exact
    /// (`matches` checks the whole key), so it is only used to narrow scans.
    pub fn encode(&self) -> Vec<u8> {
        let mut s = format!("{}/{}/", group_segment(&self.group), self.resource);
        if let Some(ns) = &self.namespace {
            s.push_str(ns);
            s.push('/');
            if let Some(name) = &self.name {
                s.push_str(name);
            }
        }
        s.into_bytes()
    }

    pub fn matches(&self, key: &ResourceKey) -> bool {
        self.group == key.group
            && self.resource == key.resource
            && (self.namespace.is_none() || self.namespace == key.namespace)
            && (self.name.is_none() || self.name.as_ref() == Some(&key.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_sort_by_namespace_then_name() {
        let a = ResourceKey::new("", "pods", Some("default"), "a");
        let b = ResourceKey::new("apps", "deployments", Some("kube-system"), "b");
        let c = ResourceKey::new("", "nodes", None, "n1");
        for k in [&a, &b, &c] {
            assert_eq!(&ResourceKey::decode(&k.encode()).unwrap(), k);
        }
        let prefix = KeyPrefix::resource("", "pods").in_namespace(Some("default"));
        assert!(a.encode().starts_with(&prefix.encode()));
        assert!(prefix.matches(&a));
        let other_ns = KeyPrefix::resource("", "pods").in_namespace(Some("defaul"));
        assert!(!a.encode().starts_with(&other_ns.encode()));
    }

    #[test]
    fn malformed_segments_are_rejected() {
        for bad in ["", "a/b", "..", "x\0y"] {
            let key = ResourceKey::new("", "pods", Some("default"), bad);
            assert!(
                matches!(key.validate(), Err(StoreError::Invalid(_))),
                "{bad:?}"
            );
        }
        assert!(ResourceKey::decode(b"core/pods/default").is_err());
    }
}
