//! A closed-loop load generator: `concurrency` workers, each with one request
//! in flight at a time, share `total` operations.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::stats::{rate, Summary};

/// An operation taking longer than this counts as failed.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub concurrency: usize,
    pub connections: usize,
    pub ops: usize,
    pub errors: usize,
    pub elapsed_s: f64,
    pub ops_per_s: f64,
    pub latency: Summary,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl std::fmt::Display for Throughput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ops in {:.2}s = {:.1} ops/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} errors",
            self.ops,
            self.elapsed_s,
            self.ops_per_s,
            self.latency.p50_ms,
            self.latency.p99_ms,
            self.latency.max_ms,
            self.errors
        )?;
        if let Some(e) = &self.first_error {
            write!(f, " (first: {e})")?;
        }
        Ok(())
    }
}

/// Runs `op(client, i)` for every i in 0..total; worker w uses
/// `clients[w % clients.len()]`. Throughput counts successful operations over
/// the wall time of the whole run.
pub async fn closed_loop<C, F, Fut>(
    clients: &[C],
    concurrency: usize,
    total: usize,
    op: F,
) -> anyhow::Result<Throughput>
where
    C: Clone + Send + 'static,
    F: Fn(C, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    anyhow::ensure!(
        !clients.is_empty() && concurrency > 0,
        "no clients or no concurrency"
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let (client, next, op) = (clients[w % clients.len()].clone(), next.clone(), op.clone());
        workers.spawn(async move {
            let mut latencies = Vec::with_capacity(total / concurrency + 1);
            let mut errors = 0;
            let mut first_error = None;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                match tokio::time::timeout(OP_TIMEOUT, op(client.clone(), i)).await {
                    Ok(Ok(())) => latencies.push(t.elapsed()),
                    Ok(Err(e)) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                    Err(_) => {
                        errors += 1;
                        first_error
                            .get_or_insert_with(|| format!("timed out after {OP_TIMEOUT:?}"));
                    }
                }
            }
            (latencies, errors, first_error)
        });
    }
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    let mut first_error = None;
    while let Some(joined) = workers.join_next().await {
        let (l, e, f) = joined?;
        latencies.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let elapsed = started.elapsed();
    let ops = latencies.len();
    Ok(Throughput {
        concurrency,
        connections: clients.len(),
        ops,
        errors,
        elapsed_s: elapsed.as_secs_f64(),
        ops_per_s: rate(ops, elapsed),
        latency: Summary::of(&mut latencies),
        first_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_operation_runs_once() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let op = {
            let seen = seen.clone();
            move |_c: (), i: usize| {
                let seen = seen.clone();
                async move {
                    seen.lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))?
                        .push(i);
                    if i % 10 == 9 {
                        anyhow::bail!("op {i} fails");
                    }
                    Ok(())
                }
            }
        };
        let t = closed_loop(&[(), ()], 8, 100, op).await.expect("runs");
        let mut seen = seen.lock().expect("lock").clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
        assert_eq!((t.ops, t.errors), (90, 10));
        assert!(t.first_error.is_some());
    }
}
