//! The [`ObjectSource`] of a live node: ConfigMaps and Secrets read from the
//! API when a pod starts (its env and volumes are written once, at start).

use async_trait::async_trait;
use balsa_api::client::{Api, Client};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};

use crate::objects::{ObjectSource, SourceError};

pub struct ApiObjects {
    client: Client,
}

impl ApiObjects {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl ObjectSource for ApiObjects {
    async fn config_map(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ConfigMap>, SourceError> {
        Api::<ConfigMap>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| SourceError(e.to_string()))
    }

    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, SourceError> {
        Api::<Secret>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| SourceError(e.to_string()))
    }
}
