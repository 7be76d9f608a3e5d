//! The target row: new objects created at a fixed rate (1,000 a second) for a
//! fixed time, open loop, latency from each create's intended start.

use std::time::Duration;

use crate::load::{open_loop, OpenLoop};
use crate::store::writes::SPACE;
use crate::system::{object_name, Kv};

/// Creates `<prefix>-<i>` in `bench` at `per_s` a second for `duration`.
pub async fn fixed_rate<C: Kv>(
    clients: &[C],
    per_s: f64,
    duration: Duration,
    prefix: &str,
) -> anyhow::Result<OpenLoop> {
    let prefix: std::sync::Arc<str> = prefix.into();
    open_loop(clients, per_s, duration, move |c: C, i| {
        let name = object_name(&prefix, i);
        async move { c.put(SPACE, &name, false).await.map(drop) }
    })
    .await
}
