//! A container's environment as kubelet computes it: `envFrom` sources in
//! order, then `env` entries (later names replace earlier ones), each `env`
//! value `$(VAR)`-expanded against the variables defined before it; then
//! `command` and `args` expanded against the result. Also the downward API
//! values shared with `downwardAPI` volumes.
//!
//! Errors carry kubelet's messages (`configmap "x" not found`, `couldn't find
//! key k in ConfigMap ns/x`): the worker shows them as the container's
//! `CreateContainerConfigError`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ObjectFieldSelector, Pod, ResourceFieldSelector};

use crate::objects::{ObjectSource, SourceError};
use crate::quantity;

/// Facts about the pod and node that the downward API exposes and the pod
/// object may not carry yet.
#[derive(Clone, Debug, Default)]
pub struct Downward {
    pub pod_ip: String,
    pub host_ip: String,
    pub node_name: String,
    /// Node allocatable, the value of a `limits.*` resource field the
    /// container does not set.
    pub node_cpu_millis: u64,
    pub node_memory_bytes: u64,
    pub node_ephemeral_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKey {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKey {
        key: String,
        namespace: String,
        name: String,
    },
    #[error("unsupported fieldPath: {0}")]
    FieldPath(String),
    #[error("unsupported container resource: {0}")]
    Resource(String),
    #[error("container {0:?} not found in the pod")]
    NoSuchContainer(String),
    #[error("reading {what}: {source}")]
    Source {
        what: String,
        #[source]
        source: SourceError,
    },
}

/// kubelet's `$(VAR)` expansion: `$(NAME)` becomes the value when `lookup`
/// knows it and stays as written otherwise; `$$` is a literal `$` (so
/// `$$(NAME)` stays `$(NAME)`); any other `$` is kept.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(close) => {
                        let name = &rest[1..close];
                        match lookup(name) {
                            Some(value) => out.push_str(&value),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        close + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    out.push('$');
                    // The next character is copied by the checkpoint below.
                    0
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    if checkpoint < bytes.len() {
        out.push_str(&input[checkpoint..]);
    }
    out
}

/// Ordered name → value pairs; setting an existing name replaces its value
/// in place.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnvList(pub Vec<(String, String)>);

impl EnvList {
    pub fn set(&mut self, name: String, value: String) {
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Environment variable names as the API validates them for `envFrom` keys
/// (invalid keys are skipped, as kubelet does).
fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// The container's environment. See the module doc for the order.
pub async fn resolve(
    pod: &Pod,
    container: &Container,
    source: &dyn ObjectSource,
    downward: &Downward,
) -> Result<EnvList, EnvError> {
    let ns = namespace(pod);
    let mut env = EnvList::default();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        if let Some(r) = &from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            match get_config_map(source, ns, &r.name).await? {
                Some(cm) => {
                    for (k, v) in cm.data.into_iter().flatten() {
                        let name = format!("{prefix}{k}");
                        if valid_env_name(&name) {
                            env.set(name, v);
                        }
                    }
                }
                None if optional => {}
                None => return Err(EnvError::ConfigMapNotFound(r.name.clone())),
            }
        }
        if let Some(r) = &from.secret_ref {
            let optional = r.optional.unwrap_or(false);
            match get_secret(source, ns, &r.name).await? {
                Some(secret) => {
                    for (k, v) in secret_data(&secret) {
                        let name = format!("{prefix}{k}");
                        if valid_env_name(&name) {
                            env.set(name, String::from_utf8_lossy(&v).into_owned());
                        }
                    }
                }
                None if optional => {}
                None => return Err(EnvError::SecretNotFound(r.name.clone())),
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = match &var.value_from {
            None => {
                let literal = var.value.as_deref().unwrap_or("");
                expand(literal, |name| env.get(name).map(str::to_string))
            }
            Some(from) => {
                if let Some(sel) = &from.config_map_key_ref {
                    let optional = sel.optional.unwrap_or(false);
                    match get_config_map(source, ns, &sel.name).await? {
                        Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&sel.key)) {
                            Some(v) => v.clone(),
                            None if optional => continue,
                            None => {
                                return Err(EnvError::ConfigMapKey {
                                    key: sel.key.clone(),
                                    namespace: ns.into(),
                                    name: sel.name.clone(),
                                })
                            }
                        },
                        None if optional => continue,
                        None => return Err(EnvError::ConfigMapNotFound(sel.name.clone())),
                    }
                } else if let Some(sel) = &from.secret_key_ref {
                    let optional = sel.optional.unwrap_or(false);
                    match get_secret(source, ns, &sel.name).await? {
                        Some(secret) => match secret_data(&secret).remove(&sel.key) {
                            Some(v) => String::from_utf8_lossy(&v).into_owned(),
                            None if optional => continue,
                            None => {
                                return Err(EnvError::SecretKey {
                                    key: sel.key.clone(),
                                    namespace: ns.into(),
                                    name: sel.name.clone(),
                                })
                            }
                        },
                        None if optional => continue,
                        None => return Err(EnvError::SecretNotFound(sel.name.clone())),
                    }
                } else if let Some(field) = &from.field_ref {
                    field_value(pod, field, downward)?
                } else if let Some(res) = &from.resource_field_ref {
                    resource_value(pod, Some(&container.name), res, downward)?
                } else {
                    String::new()
                }
            }
        };
        env.set(var.name.clone(), value);
    }
    Ok(env)
}

/// `command` and `args` with `$(VAR)` expanded against `env`.
pub fn expand_command(container: &Container, env: &EnvList) -> (Vec<String>, Vec<String>) {
    let lookup = |name: &str| env.get(name).map(str::to_string);
    let map = |list: &Option<Vec<String>>| {
        list.iter()
            .flatten()
            .map(|s| expand(s, lookup))
            .collect::<Vec<_>>()
    };
    (map(&container.command), map(&container.args))
}

async fn get_config_map(
    source: &dyn ObjectSource,
    ns: &str,
    name: &str,
) -> Result<Option<k8s_openapi::api::core::v1::ConfigMap>, EnvError> {
    source
        .config_map(ns, name)
        .await
        .map_err(|source| EnvError::Source {
            what: format!("configmap {ns}/{name}"),
            source,
        })
}

async fn get_secret(
    source: &dyn ObjectSource,
    ns: &str,
    name: &str,
) -> Result<Option<k8s_openapi::api::core::v1::Secret>, EnvError> {
    source
        .secret(ns, name)
        .await
        .map_err(|source| EnvError::Source {
            what: format!("secret {ns}/{name}"),
            source,
        })
}

/// A Secret's data, `stringData` merged over `data` (the API server does that
/// on write; objects from elsewhere may still carry it).
pub(crate) fn secret_data(
    secret: &k8s_openapi::api::core::v1::Secret,
) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

/// Go's `%q`-style `key="value"` lines, sorted, for whole-map fields.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of a downward API `fieldRef`.
pub fn field_value(
    pod: &Pod,
    field: &ObjectFieldSelector,
    downward: &Downward,
) -> Result<String, EnvError> {
    let meta = &pod.metadata;
    let path = field.field_path.as_str();
    let subscript = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('['))
            .and_then(|rest| rest.strip_suffix(']'))
            .map(|k| k.trim_matches(|c| c == '\'' || c == '"').to_string())
    };
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => namespace(pod).to_string(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_else(|| downward.node_name.clone()),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => downward.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => downward.host_ip.clone(),
        _ => {
            if let Some(k) = subscript("metadata.labels") {
                meta.labels
                    .as_ref()
                    .and_then(|m| m.get(&k).cloned())
                    .unwrap_or_default()
            } else if let Some(k) = subscript("metadata.annotations") {
                meta.annotations
                    .as_ref()
                    .and_then(|m| m.get(&k).cloned())
                    .unwrap_or_default()
            } else {
                return Err(EnvError::FieldPath(path.to_string()));
            }
        }
    };
    Ok(value)
}

/// The value of a downward API `resourceFieldRef`, divided (rounding up) by
/// its divisor. An unset limit reads as the node's allocatable.
pub fn resource_value(
    pod: &Pod,
    default_container: Option<&str>,
    sel: &ResourceFieldSelector,
    downward: &Downward,
) -> Result<String, EnvError> {
    let name = sel
        .container_name
        .as_deref()
        .filter(|n| !n.is_empty())
        .or(default_container)
        .unwrap_or("");
    let spec = pod.spec.as_ref();
    let container = spec
        .into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .find(|c| c.name == name)
        .ok_or_else(|| EnvError::NoSuchContainer(name.to_string()))?;
    let resources = container.resources.as_ref();
    let (kind, resource) = sel
        .resource
        .split_once('.')
        .ok_or_else(|| EnvError::Resource(sel.resource.clone()))?;
    let list = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return Err(EnvError::Resource(sel.resource.clone())),
    };
    let set = list.and_then(|l| l.get(resource)).and_then(quantity::value);
    let divisor = sel
        .divisor
        .as_ref()
        .and_then(quantity::value)
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    let value = match (resource, set, kind) {
        (_, Some(v), _) => v,
        ("cpu", None, "limits") => downward.node_cpu_millis as f64 / 1000.0,
        ("memory", None, "limits") => downward.node_memory_bytes as f64,
        ("ephemeral-storage", None, "limits") => downward.node_ephemeral_bytes as f64,
        ("cpu" | "memory" | "ephemeral-storage", None, _) => 0.0,
        (r, None, _) if r.starts_with("hugepages-") => 0.0,
        _ => return Err(EnvError::Resource(sel.resource.clone())),
    };
    // CPU is compared in milli-units, as kubelet does, so 250m / 1 is "1".
    let out = if resource == "cpu" {
        ((value * 1000.0).round() / (divisor * 1000.0).round()).ceil()
    } else {
        (value / divisor).ceil()
    };
    Ok(format!("{}", out as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<String> {
        match name {
            "A" => Some("alpha".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expansion_follows_kubelet() {
        assert_eq!(expand("$(A)", lookup), "alpha");
        assert_eq!(expand("x-$(A)-y", lookup), "x-alpha-y");
        assert_eq!(expand("$(MISSING)", lookup), "$(MISSING)");
        assert_eq!(expand("$$(A)", lookup), "$(A)");
        assert_eq!(expand("$$", lookup), "$");
        assert_eq!(expand("$A $", lookup), "$A $");
        assert_eq!(expand("$(A", lookup), "$(A");
        assert_eq!(expand("$(EMPTY)z", lookup), "z");
        assert_eq!(expand("héllo $(A)", lookup), "héllo alpha");
        assert_eq!(expand("", lookup), "");
    }
}
