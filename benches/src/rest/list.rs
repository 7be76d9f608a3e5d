//! Lists of a namespace holding a fixed number of ConfigMaps (500 by
//! default), a few in flight: the read kube-controllers and kubectl make most.

use std::future::Future;

use crate::balsa_cluster::BalsaClient;
use crate::load::{closed_loop, Throughput};
use crate::system::{object_name, Kv};

use super::client::RestClient;

/// The namespace that holds only the listed objects.
pub const SPACE: &str = "bench-list";

/// A whole linearizable list of a namespace's ConfigMaps.
pub trait Lister: Clone + Send + Sync + 'static {
    /// How many objects the list held, when the client decodes it (the REST
    /// job's client does not: it only reads the answer).
    fn list(&self, space: &str) -> impl Future<Output = anyhow::Result<Option<usize>>> + Send;
}

impl Lister for RestClient {
    async fn list(&self, space: &str) -> anyhow::Result<Option<usize>> {
        self.list_bytes(space).await.map(|_| None)
    }
}

impl Lister for BalsaClient {
    async fn list(&self, space: &str) -> anyhow::Result<Option<usize>> {
        self.list_count(space).await.map(Some)
    }
}

/// Writes `objects` ConfigMaps into [`SPACE`] (64 in flight); every one must
/// succeed.
pub async fn seed<C: Kv>(clients: &[C], objects: usize) -> anyhow::Result<()> {
    let t = closed_loop(clients, 64, objects, |c: C, i| async move {
        c.put(SPACE, &object_name("l", i), true).await.map(drop)
    })
    .await?;
    anyhow::ensure!(
        t.errors == 0,
        "{} of {objects} writes failed (first: {})",
        t.errors,
        t.first_error.unwrap_or_default()
    );
    Ok(())
}

/// `total` lists of [`SPACE`] with `concurrency` in flight; a decoded list
/// that does not hold `objects` items counts as failed.
pub async fn lists<C: Lister>(
    clients: &[C],
    concurrency: usize,
    total: usize,
    objects: usize,
) -> anyhow::Result<Throughput> {
    closed_loop(clients, concurrency, total, move |c: C, _| async move {
        match c.list(SPACE).await? {
            Some(n) if n != objects => anyhow::bail!("the list held {n} objects, not {objects}"),
            _ => Ok(()),
        }
    })
    .await
}
