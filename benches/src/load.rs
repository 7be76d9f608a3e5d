//! Load generators. Closed loop: `concurrency` workers, each with one request
//! in flight at a time, share `total` operations. Open loop: operations start
//! on a fixed schedule whatever the server does, and latency runs from each
//! operation's intended start, so a stall is charged to every operation that
//! should have started during it (no coordinated omission).

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

/// What an open-loop run did.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLoop {
    pub target_per_s: f64,
    pub duration_s: f64,
    pub scheduled: usize,
    pub ops: usize,
    pub errors: usize,
    /// Successful operations over the time from the first intended start to
    /// the last completion.
    pub achieved_per_s: f64,
    /// From each operation's intended start to its completion.
    pub latency: Summary,
    /// From the moment the request was actually issued to its completion.
    pub service: Summary,
    /// The longest the scheduler itself was late issuing an operation (the
    /// load generator's own stall, not the server's).
    pub max_issue_lag_ms: f64,
    pub max_in_flight: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl std::fmt::Display for OpenLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} ops at {:.0}/s for {:.0}s: achieved {:.1} ops/s, from intended start p50 {:.2} ms, \
             p99 {:.2} ms, max {:.2} ms (service p99 {:.2} ms), {} errors, {} max in flight, issue lag max {:.2} ms",
            self.ops,
            self.scheduled,
            self.target_per_s,
            self.duration_s,
            self.achieved_per_s,
            self.latency.p50_ms,
            self.latency.p99_ms,
            self.latency.max_ms,
            self.service.p99_ms,
            self.errors,
            self.max_in_flight,
            self.max_issue_lag_ms
        )?;
        if let Some(e) = &self.first_error {
            write!(f, " (first: {e})")?;
        }
        Ok(())
    }
}

/// Starts `op(client, i)` at `per_s` per second for `duration`, operation i at
/// `start + i / per_s`, each in its own task (so a slow reply never delays the
/// next start); operation i uses `clients[i % clients.len()]`.
pub async fn open_loop<C, F, Fut>(
    clients: &[C],
    per_s: f64,
    duration: Duration,
    op: F,
) -> anyhow::Result<OpenLoop>
where
    C: Clone + Send + 'static,
    F: Fn(C, usize) -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    anyhow::ensure!(!clients.is_empty() && per_s > 0.0, "no clients or no rate");
    let total = (per_s * duration.as_secs_f64()).round() as usize;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    let mut outcomes = Outcomes::with_capacity(total);
    let mut max_issue_lag = Duration::ZERO;
    // A little head room so the first operations are not already late.
    let start = Instant::now() + Duration::from_millis(20);
    for i in 0..total {
        let intended = start + Duration::from_secs_f64(i as f64 / per_s);
        tokio::time::sleep_until(intended.into()).await;
        max_issue_lag = max_issue_lag.max(intended.elapsed());
        let fut = op(clients[i % clients.len()].clone(), i);
        let (in_flight, max_in_flight) = (in_flight.clone(), max_in_flight.clone());
        tasks.spawn(async move {
            let now = in_flight.fetch_add(1, Ordering::Relaxed) + 1;
            max_in_flight.fetch_max(now, Ordering::Relaxed);
            let issued = Instant::now();
            let r = tokio::time::timeout(OP_TIMEOUT, fut).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            Outcome {
                intended,
                issued,
                done: Instant::now(),
                result: r
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out after {OP_TIMEOUT:?}"))),
            }
        });
        // Reap finished operations as we go so the set stays small.
        while let Some(joined) = tasks.try_join_next() {
            outcomes.add(joined?);
        }
    }
    while let Some(joined) = tasks.join_next().await {
        outcomes.add(joined?);
    }
    let ops = outcomes.latency.len();
    Ok(OpenLoop {
        target_per_s: per_s,
        duration_s: duration.as_secs_f64(),
        scheduled: total,
        ops,
        errors: outcomes.errors,
        achieved_per_s: rate(ops, outcomes.last.saturating_duration_since(start)),
        latency: Summary::of(&mut outcomes.latency),
        service: Summary::of(&mut outcomes.service),
        max_issue_lag_ms: crate::stats::ms(max_issue_lag),
        max_in_flight: max_in_flight.load(Ordering::Relaxed),
        first_error: outcomes.first_error,
    })
}

struct Outcome {
    intended: Instant,
    issued: Instant,
    done: Instant,
    result: anyhow::Result<()>,
}

struct Outcomes {
    latency: Vec<Duration>,
    service: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    last: Instant,
}

impl Outcomes {
    fn with_capacity(n: usize) -> Self {
        Self {
            latency: Vec::with_capacity(n),
            service: Vec::with_capacity(n),
            errors: 0,
            first_error: None,
            last: Instant::now(),
        }
    }

    fn add(&mut self, o: Outcome) {
        self.last = self.last.max(o.done);
        match o.result {
            Ok(()) => {
                self.latency.push(o.done - o.intended);
                self.service.push(o.done - o.issued);
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }
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

    #[tokio::test]
    async fn open_loop_keeps_its_schedule() {
        let op = |_c: (), i: usize| async move {
            // Slower than the interval: a closed loop of one would fall behind.
            tokio::time::sleep(Duration::from_millis(5)).await;
            if i % 10 == 9 {
                anyhow::bail!("op {i} fails");
            }
            Ok(())
        };
        let started = Instant::now();
        let o = open_loop(&[()], 1_000.0, Duration::from_millis(200), op)
            .await
            .expect("runs");
        assert_eq!(o.scheduled, 200);
        assert_eq!((o.ops, o.errors), (180, 20));
        assert!(o.first_error.is_some());
        assert!(o.max_in_flight > 1, "operations overlapped");
        assert!(o.latency.p50_ms >= 5.0 && o.service.p50_ms >= 5.0);
        // All 200 start within ~200 ms, not 200 x 5 ms.
        assert!(started.elapsed() < Duration::from_millis(800), "{o}");
    }
}
