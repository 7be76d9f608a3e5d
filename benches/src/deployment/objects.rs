//! The Deployment the benchmark runs, its template change, and a read of its
//! ReplicaSets.

use anyhow::Context;
use balsa_api::grpc::client::Client;
use serde::Deserialize;
use serde_json::{json, Value};

pub const NAMESPACE: &str = "deploy";
pub const DEPLOYMENT: &str = "web";
const IMAGE: &str = "registry.k8s.io/pause:3.10";
const NEW_IMAGE: &str = "registry.k8s.io/pause:3.9";

/// `replicas` of one pause container, RollingUpdate with maxSurge and
/// maxUnavailable 25% (the Kubernetes defaults, written out).
pub fn deployment(replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": DEPLOYMENT}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": {"app": DEPLOYMENT}},
                "spec": {"containers": [{"name": "app", "image": IMAGE}]},
            },
        },
    })
}

/// A merge patch changing the template's image (`kubectl set image`).
pub fn new_template() -> Value {
    json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": NEW_IMAGE}
    ]}}}})
}

#[derive(Deserialize)]
struct RsView {
    metadata: Meta,
    #[serde(default)]
    spec: Option<RsSpec>,
    #[serde(default)]
    status: Option<RsStatus>,
}

#[derive(Deserialize)]
struct Meta {
    name: String,
}

#[derive(Deserialize)]
struct RsSpec {
    #[serde(default)]
    replicas: Option<i64>,
}

#[derive(Deserialize)]
struct RsStatus {
    #[serde(default)]
    replicas: i64,
}

/// Every ReplicaSet in the namespace: name, spec.replicas, status.replicas.
pub async fn replicasets(client: &Client) -> anyhow::Result<Vec<(String, i64, i64)>> {
    let page = client
        .list("apps", "replicasets", Some(NAMESPACE), 0, None)
        .await?;
    page.items
        .iter()
        .map(|item| {
            let r: RsView = serde_json::from_slice(item).context("decoding a replicaset")?;
            Ok((
                r.metadata.name,
                r.spec.and_then(|s| s.replicas).unwrap_or(1),
                r.status.map_or(0, |s| s.replicas),
            ))
        })
        .collect()
}
