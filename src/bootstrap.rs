//! What a new cluster holds before anyone writes: the namespaces Kubernetes
//! always has. Every master tries; the first create wins and the others find
//! them there, so a restarted or lone master needs nothing special.

use std::time::Duration;

use balsa_api::registry::{kinds, Reason, Registry, WriteOptions};
use balsa_api::ReadMode;
use serde_json::json;

pub const NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// Creates the system namespaces, retrying until there is a leader to accept
/// them or `stop` resolves.
pub async fn namespaces(
    registry: Registry,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let work = async {
        let kind = kinds::by_kind("", "Namespace").expect("Namespace is a built-in kind");
        let opts = WriteOptions {
            manager: "balsa-bootstrap".into(),
            ..Default::default()
        };
        for ns in NAMESPACES {
            let mut backoff = Duration::from_millis(50);
            loop {
                if registry.get(kind, None, ns, ReadMode::Local).await.is_ok() {
                    break;
                }
                let body =
                    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                match registry.create(kind, None, body, &opts).await {
                    Ok(_) => break,
                    Err(e) if e.reason == Reason::AlreadyExists => break,
                    Err(e) => {
                        tracing::debug!(namespace = ns, error = %e, "system namespace not created yet");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = work => tracing::debug!("system namespaces present"),
        _ = stop => {}
    }
    Ok(())
}
