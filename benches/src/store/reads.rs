//! Job 4: linearizable reads with 64 in flight, of the objects the sequential
//! write job made.

use super::writes::{SEQUENTIAL, SPACE};
use crate::load::{closed_loop, Throughput};
use crate::system::{object_name, Kv};

/// Reads `total` times, cycling over the `written` objects of the sequential job.
pub async fn reads<C: Kv>(
    clients: &[C],
    concurrency: usize,
    total: usize,
    written: usize,
) -> anyhow::Result<Throughput> {
    anyhow::ensure!(written > 0, "nothing to read");
    closed_loop(
        clients,
        concurrency,
        total,
        move |client: C, i| async move {
            client
                .get(SPACE, &object_name(SEQUENTIAL, i % written))
                .await
        },
    )
    .await
}
