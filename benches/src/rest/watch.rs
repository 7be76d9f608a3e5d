//! Watch delivery: watchers spread evenly over the three masters while writes
//! are made one at a time through the leader, with the same API as the
//! watchers. Delivery latency runs from just before a write is issued to a
//! watcher receiving its event, reported separately for the watchers on the
//! leader and on the followers.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::stats::{rate, Summary};
use crate::store::watch::receive;
use crate::system::{object_name, put_retrying, Kv, NameStream};

#[derive(Debug, Clone)]
pub struct WatchPlan {
    pub watchers: usize,
    pub writes: usize,
    /// How long to wait for late events after the last write's acknowledgement.
    pub drain: Duration,
}

/// The watchers on one side (the leader, or both followers).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Side {
    pub watchers: usize,
    pub expected: usize,
    /// Distinct (watcher, write) deliveries.
    pub delivered: usize,
    pub missed: usize,
    pub duplicates: usize,
    pub stray: usize,
    pub failed_watchers: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// From just before the write was issued to the watcher receiving it.
    pub from_issue: Summary,
}

#[derive(Debug, Clone, Serialize)]
pub struct WatchResult {
    pub writes: usize,
    pub write_errors: usize,
    pub writes_per_s: f64,
    pub write_latency: Summary,
    pub leader: Side,
    pub followers: Side,
    pub setup_s: f64,
    pub elapsed_s: f64,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} watchers: {}/{} delivered ({} missed, {} duplicates), p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
            self.watchers,
            self.delivered,
            self.expected,
            self.missed,
            self.duplicates,
            self.from_issue.p50_ms,
            self.from_issue.p99_ms,
            self.from_issue.max_ms
        )?;
        if let Some(e) = &self.first_error {
            write!(f, "; {} watchers failed (first: {e})", self.failed_watchers)?;
        }
        Ok(())
    }
}

impl std::fmt::Display for WatchResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} writes ({:.1}/s, p50 {:.2} ms): on the leader {}; on the followers {}",
            self.writes, self.writes_per_s, self.write_latency.p50_ms, self.leader, self.followers
        )
    }
}

/// Runs the job. `members[m]` holds the clients (connections) of master m;
/// watcher w watches through master `w % members.len()`, on its
/// `w / members.len()`-th client round robin. `writer` is a client of the
/// leader, `leader` its index. Writes are named `<prefix>-<i>` in `space`.
pub async fn delivery<C: Kv>(
    writer: &C,
    members: &[Vec<C>],
    leader: usize,
    space: &str,
    prefix: &'static str,
    plan: &WatchPlan,
) -> anyhow::Result<WatchResult> {
    anyhow::ensure!(
        members.iter().all(|m| !m.is_empty()),
        "a master without clients"
    );
    let setup = Instant::now();
    // Every watch starts after this write: what follows is the job's writes.
    let start = writer
        .put(space, &format!("{prefix}-start"), false)
        .await
        .context("the marker write")?;
    let n = members.len();
    let streams: Vec<(usize, NameStream)> = futures::stream::iter(0..plan.watchers)
        .map(|w| {
            let (m, k) = (w % n, w / n);
            let conn = members[m][k % members[m].len()].clone();
            async move {
                let s = conn
                    .watch(space, start)
                    .await
                    .with_context(|| format!("opening watch {w} on master {}", m + 1))?;
                Ok::<_, anyhow::Error>((m, s))
            }
        })
        .buffered(64)
        .try_collect()
        .await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let receivers: Vec<_> = streams
        .into_iter()
        .map(|(m, s)| {
            (
                m,
                tokio::spawn(receive(s, prefix, plan.writes, stop_rx.clone())),
            )
        })
        .collect();
    let setup_s = setup.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut issued = Vec::with_capacity(plan.writes);
    let mut write_latency = Vec::with_capacity(plan.writes);
    let mut write_errors = 0;
    for i in 0..plan.writes {
        let name = object_name(prefix, i);
        let t = Instant::now();
        issued.push(t);
        put_retrying(writer, space, &name, &mut write_errors).await?;
        write_latency.push(t.elapsed());
    }
    let writes_per_s = rate(plan.writes, started.elapsed());

    let deadline = tokio::time::Instant::now() + plan.drain;
    let waited = async {
        for (_, r) in &receivers {
            while !r.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline, waited).await;
    let _ = stop_tx.send(true);

    let mut sides = [Side::default(), Side::default()];
    let mut latencies: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for (m, r) in receivers {
        let got = r.await?;
        let i = usize::from(m != leader);
        let side = &mut sides[i];
        side.watchers += 1;
        side.expected += plan.writes;
        side.delivered += got.deliveries.len();
        for (w, at) in got.deliveries {
            latencies[i].push(at.saturating_duration_since(issued[w as usize]));
        }
        side.duplicates += got.duplicates;
        side.stray += got.stray;
        if let Some(e) = got.error {
            side.failed_watchers += 1;
            side.first_error.get_or_insert(e);
        }
    }
    for (side, l) in sides.iter_mut().zip(latencies.iter_mut()) {
        side.missed = side.expected - side.delivered;
        side.from_issue = Summary::of(l);
    }
    let [leader_side, followers] = sides;
    Ok(WatchResult {
        writes: plan.writes,
        write_errors,
        writes_per_s,
        write_latency: Summary::of(&mut write_latency),
        leader: leader_side,
        followers,
        setup_s,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}
