//! A pod's volumes as directories under its sandbox (`<pod dir>/volumes/<name>`),
//! and each container's mounts of them.
//!
//! Supported: `emptyDir` (medium ignored: always disk), `configMap`, `secret`,
//! `projected` (configMap, secret and downwardAPI sources), `downwardAPI`,
//! `hostPath` (with its `type` checks). Files are written once, when the pod
//! starts; later changes to a ConfigMap are not propagated (kubelet's atomic
//! `..data` swap is not implemented). A failure carries kubelet's
//! `MountVolume.SetUp failed for volume "v" : ...` message; the pod stays in
//! `ContainerCreating` and the worker retries.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Pod, Volume};
use k8s_openapi::ByteString;

use crate::env::{self, Downward};
use crate::objects::ObjectSource;
use crate::runtime::Mount;

/// Volume name → its directory (or file, for a `hostPath` file) on this machine.
pub type VolumePaths = HashMap<String, PathBuf>;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
    SetUp { volume: String, message: String },
    #[error("unable to attach or mount volumes: container {container:?} mounts volume {volume:?} that the pod does not define")]
    Undefined { container: String, volume: String },
    #[error("preparing subPath {sub_path:?} of volume {volume:?}: {message}")]
    SubPath {
        volume: String,
        sub_path: String,
        message: String,
    },
}

fn setup_err(volume: &str, message: impl std::fmt::Display) -> VolumeError {
    VolumeError::SetUp {
        volume: volume.to_string(),
        message: message.to_string(),
    }
}

/// A relative path with no `..`: what `items[].path` may be.
fn safe_join(dir: &Path, rel: &str) -> Option<PathBuf> {
    let rel = Path::new(rel);
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| dir.join(rel))
}

fn write_file(dir: &Path, rel: &str, content: &[u8], mode: i32) -> Result<(), String> {
    let path = safe_join(dir, rel).ok_or_else(|| format!("invalid path {rel:?}"))?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::write(&path, content).map_err(|e| e.to_string())?;
    std::fs::set_permissions(
        &path,
        std::fs::Permissions::from_mode((mode & 0o777) as u32),
    )
    .map_err(|e| e.to_string())
}

/// Files of a key → bytes source, through `items` when given.
fn project(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: i32,
    missing_key: impl Fn(&str) -> String,
    optional: bool,
) -> Result<(), String> {
    match items {
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(content) => {
                        write_file(dir, &item.path, content, item.mode.unwrap_or(default_mode))?
                    }
                    None if optional => {}
                    None => return Err(missing_key(&item.key)),
                }
            }
        }
        None => {
            for (k, content) in data {
                write_file(dir, k, content, default_mode)?;
            }
        }
    }
    Ok(())
}

fn config_map_bytes(cm: &k8s_openapi::api::core::v1::ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = cm
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    for (k, ByteString(v)) in cm.binary_data.iter().flatten() {
        out.insert(k.clone(), v.clone());
    }
    out
}

/// What a configMap or secret volume (or projected source) names.
struct Projection<'a> {
    name: &'a str,
    items: Option<&'a Vec<KeyToPath>>,
    mode: i32,
    optional: bool,
}

/// A ConfigMap's keys as files; a missing ConfigMap is an error unless optional.
async fn project_config_map(
    source: &dyn ObjectSource,
    ns: &str,
    dir: &Path,
    p: Projection<'_>,
) -> Result<(), String> {
    match source
        .config_map(ns, p.name)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(obj) => project(
            dir,
            &config_map_bytes(&obj),
            p.items,
            p.mode,
            |k| format!("configmap references non-existent config key: {k}"),
            p.optional,
        ),
        None if p.optional => Ok(()),
        None => Err(format!("configmap {:?} not found", p.name)),
    }
}

/// A Secret's keys as files; a missing Secret is an error unless optional.
async fn project_secret(
    source: &dyn ObjectSource,
    ns: &str,
    dir: &Path,
    p: Projection<'_>,
) -> Result<(), String> {
    match source.secret(ns, p.name).await.map_err(|e| e.to_string())? {
        Some(obj) => project(
            dir,
            &env::secret_data(&obj),
            p.items,
            p.mode,
            |k| format!("references non-existent secret key: {k}"),
            p.optional,
        ),
        None if p.optional => Ok(()),
        None => Err(format!("secret {:?} not found", p.name)),
    }
}

async fn downward_files(
    pod: &Pod,
    dir: &Path,
    items: &[DownwardAPIVolumeFile],
    default_mode: i32,
    downward: &Downward,
) -> Result<(), String> {
    for item in items {
        let value = if let Some(field) = &item.field_ref {
            env::field_value(pod, field, downward).map_err(|e| e.to_string())?
        } else if let Some(res) = &item.resource_field_ref {
            env::resource_value(pod, None, res, downward).map_err(|e| e.to_string())?
        } else {
            String::new()
        };
        write_file(
            dir,
            &item.path,
            value.as_bytes(),
            item.mode.unwrap_or(default_mode),
        )?;
    }
    Ok(())
}

/// Create every volume of `pod` under `pod_dir/volumes`.
pub async fn prepare(
    pod: &Pod,
    pod_dir: &Path,
    source: &dyn ObjectSource,
    downward: &Downward,
) -> Result<VolumePaths, VolumeError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut paths = VolumePaths::new();
    let volumes: &[Volume] = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default();
    for v in volumes {
        let name = v.name.as_str();
        let err = |m: String| setup_err(name, m);
        if let Some(host) = &v.host_path {
            let path = PathBuf::from(&host.path);
            let kind = host.type_.as_deref().unwrap_or("");
            let meta = std::fs::metadata(&path);
            match kind {
                "DirectoryOrCreate" if meta.is_err() => {
                    std::fs::create_dir_all(&path).map_err(|e| err(e.to_string()))?;
                    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755));
                }
                "FileOrCreate" if meta.is_err() => {
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
                    }
                    std::fs::write(&path, b"").map_err(|e| err(e.to_string()))?;
                }
                "Directory" if !meta.as_ref().is_ok_and(|m| m.is_dir()) => {
                    return Err(err(format!(
                        "hostPath type check failed: {} is not a directory",
                        host.path
                    )))
                }
                "File" if !meta.as_ref().is_ok_and(|m| m.is_file()) => {
                    return Err(err(format!(
                        "hostPath type check failed: {} is not a file",
                        host.path
                    )))
                }
                _ => {}
            }
            paths.insert(name.to_string(), path);
            continue;
        }
        let dir = pod_dir.join("volumes").join(name);
        std::fs::create_dir_all(&dir)
            .map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
        if v.empty_dir.is_some() || v.persistent_volume_claim.is_some() {
            // The medium (Memory) is ignored: a directory on disk. A claim
            // has no provisioner to bind it yet (it stays Pending): the pod
            // runs on a scratch directory that lives as long as the pod.
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777));
        } else if let Some(cm) = &v.config_map {
            let p = Projection {
                name: &cm.name,
                items: cm.items.as_ref(),
                mode: cm.default_mode.unwrap_or(0o644),
                optional: cm.optional.unwrap_or(false),
            };
            project_config_map(source, ns, &dir, p).await.map_err(err)?;
        } else if let Some(s) = &v.secret {
            let p = Projection {
                name: s.secret_name.as_deref().unwrap_or_default(),
                items: s.items.as_ref(),
                mode: s.default_mode.unwrap_or(0o644),
                optional: s.optional.unwrap_or(false),
            };
            project_secret(source, ns, &dir, p).await.map_err(err)?;
        } else if let Some(d) = &v.downward_api {
            let mode = d.default_mode.unwrap_or(0o644);
            downward_files(
                pod,
                &dir,
                d.items.as_deref().unwrap_or_default(),
                mode,
                downward,
            )
            .await
            .map_err(err)?;
        } else if let Some(p) = &v.projected {
            let mode = p.default_mode.unwrap_or(0o644);
            for src in p.sources.iter().flatten() {
                if let Some(cm) = &src.config_map {
                    let p = Projection {
                        name: &cm.name,
                        items: cm.items.as_ref(),
                        mode,
                        optional: cm.optional.unwrap_or(false),
                    };
                    project_config_map(source, ns, &dir, p).await.map_err(err)?;
                } else if let Some(s) = &src.secret {
                    let p = Projection {
                        name: &s.name,
                        items: s.items.as_ref(),
                        mode,
                        optional: s.optional.unwrap_or(false),
                    };
                    project_secret(source, ns, &dir, p).await.map_err(err)?;
                } else if let Some(d) = &src.downward_api {
                    downward_files(
                        pod,
                        &dir,
                        d.items.as_deref().unwrap_or_default(),
                        mode,
                        downward,
                    )
                    .await
                    .map_err(err)?;
                }
                // serviceAccountToken / clusterTrustBundle: no token issuer yet.
            }
        } else {
            return Err(err("volume type not supported by this node".to_string()));
        }
        paths.insert(name.to_string(), dir);
    }
    Ok(paths)
}

/// A container's mounts: each `volumeMount` resolved to its volume's path
/// (joined with `subPath`, which is created when missing, as kubelet does).
pub fn mounts(container: &Container, volumes: &VolumePaths) -> Result<Vec<Mount>, VolumeError> {
    let mut out = Vec::new();
    for m in container.volume_mounts.iter().flatten() {
        let base = volumes.get(&m.name).ok_or_else(|| VolumeError::Undefined {
            container: container.name.clone(),
            volume: m.name.clone(),
        })?;
        let host_path = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            None => base.clone(),
            Some(sub) => {
                let sub_err = |message: String| VolumeError::SubPath {
                    volume: m.name.clone(),
                    sub_path: sub.to_string(),
                    message,
                };
                let path = safe_join(base, sub)
                    .ok_or_else(|| sub_err("must be a relative path without ..".into()))?;
                if !path.exists() {
                    std::fs::create_dir_all(&path).map_err(|e| sub_err(e.to_string()))?;
                }
                path
            }
        };
        out.push(Mount {
            container_path: m.mount_path.clone(),
            host_path,
            read_only: m.read_only.unwrap_or(false),
        });
    }
    Ok(out)
}
