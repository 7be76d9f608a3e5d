//! Where pods' ConfigMaps and Secrets come from: a small port the agent will
//! back with the API client's cache, and [`StaticObjects`] for tests and the
//! simulated node.

use std::collections::HashMap;
use std::sync::RwLock;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SourceError(pub String);

/// Read access to the objects a pod's env and volumes refer to. `Ok(None)`
/// means "does not exist" (kubelet's NotFound); `Err` is any other failure.
#[async_trait]
pub trait ObjectSource: Send + Sync + 'static {
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, SourceError>;
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, SourceError>;
}

/// An in-memory [`ObjectSource`].
#[derive(Default)]
pub struct StaticObjects {
    config_maps: RwLock<HashMap<(String, String), ConfigMap>>,
    secrets: RwLock<HashMap<(String, String), Secret>>,
}

fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_else(|| "default".into()),
        meta.name.clone().unwrap_or_default(),
    )
}

impl StaticObjects {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn put_config_map(&self, cm: ConfigMap) {
        self.config_maps
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key(&cm.metadata), cm);
    }

    pub fn put_secret(&self, secret: Secret) {
        self.secrets
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key(&secret.metadata), secret);
    }
}

#[async_trait]
impl ObjectSource for StaticObjects {
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, SourceError> {
        let map = self.config_maps.read().unwrap_or_else(|e| e.into_inner());
        Ok(map.get(&(namespace.to_string(), name.to_string())).cloned())
    }

    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, SourceError> {
        let map = self.secrets.read().unwrap_or_else(|e| e.into_inner());
        Ok(map.get(&(namespace.to_string(), name.to_string())).cloned())
    }
}
