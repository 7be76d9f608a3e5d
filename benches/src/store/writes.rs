//! Jobs 1-3: writes of new 256-byte objects, one at a time and with 64 and 256
//! in flight.

use crate::load::{closed_loop, Throughput};
use crate::system::{object_name, Kv};

/// The space every throughput job writes to and reads from.
pub const SPACE: &str = "bench";

/// Names written by the sequential job (the read job reads them back).
pub const SEQUENTIAL: &str = "seq";

/// Writes `total` new objects `<prefix>-<i>` with `concurrency` in flight,
/// spread over `clients`.
pub async fn writes<C: Kv>(
    clients: &[C],
    concurrency: usize,
    total: usize,
    prefix: &str,
) -> anyhow::Result<Throughput> {
    let prefix: std::sync::Arc<str> = prefix.into();
    closed_loop(clients, concurrency, total, move |client: C, i| {
        let prefix = prefix.clone();
        async move {
            client
                .put(SPACE, &object_name(&prefix, i), false)
                .await
                .map(drop)
        }
    })
    .await
}
