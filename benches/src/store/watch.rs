//! Job 5: many watchers on one prefix while writes are made one at a time.
//! Delivery latency runs from just before a write is issued to a watcher
//! receiving its event; every watcher should see every write once.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::stats::{rate, Summary};
use crate::system::{object_index, object_name, put_retrying, Kv, NameStream, System};

/// Watched space (Balsa namespace / etcd prefix) and the names written in it.
const SPACE: &str = "watch";
const PREFIX: &str = "w";

#[derive(Debug, Clone)]
pub struct WatchPlan {
    pub watchers: usize,
    pub writes: usize,
    /// Watch streams per HTTP/2 connection (Balsa's server allows 200).
    pub streams_per_connection: usize,
    /// How long to wait for late events after the last write's acknowledgement.
    pub drain: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct WatchResult {
    pub watchers: usize,
    pub writes: usize,
    pub connections: usize,
    pub expected: usize,
    /// Distinct (watcher, write) deliveries.
    pub delivered: usize,
    pub missed: usize,
    pub duplicates: usize,
    /// Events for names the job did not write.
    pub stray: usize,
    /// Watchers whose stream failed or ended early.
    pub failed_watchers: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    pub write_errors: usize,
    pub writes_per_s: f64,
    /// From just before the write was issued to the watcher receiving it.
    pub from_issue: Summary,
    /// From the write's acknowledgement (0 when the event came first).
    pub from_ack: Summary,
    pub write_latency: Summary,
    pub setup_s: f64,
    pub elapsed_s: f64,
}

impl std::fmt::Display for WatchResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} watchers x {} writes: {}/{} delivered ({} missed, {} duplicates), delivery from issue p50 {:.2} ms \
             p99 {:.2} ms max {:.2} ms; from ack p50 {:.2} ms p99 {:.2} ms; writes {:.1}/s",
            self.watchers,
            self.writes,
            self.delivered,
            self.expected,
            self.missed,
            self.duplicates,
            self.from_issue.p50_ms,
            self.from_issue.p99_ms,
            self.from_issue.max_ms,
            self.from_ack.p50_ms,
            self.from_ack.p99_ms,
            self.writes_per_s
        )?;
        if let Some(e) = &self.first_error {
            write!(f, "; {} watchers failed (first: {e})", self.failed_watchers)?;
        }
        Ok(())
    }
}

pub(crate) struct Received {
    /// (write index, when it arrived), first delivery of each write only.
    pub deliveries: Vec<(u32, Instant)>,
    pub duplicates: usize,
    pub stray: usize,
    pub error: Option<String>,
}

/// Reads one watch until it has seen each of the names `<prefix>-<i>`, i <
/// `writes`, or `stop` is set, noting when each first arrived.
pub(crate) async fn receive(
    mut stream: NameStream,
    prefix: &'static str,
    writes: usize,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Received {
    let mut seen = vec![false; writes];
    let mut out = Received {
        deliveries: Vec::with_capacity(writes),
        duplicates: 0,
        stray: 0,
        error: None,
    };
    while out.deliveries.len() < writes {
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(names)) => {
                    let now = Instant::now();
                    for name in names {
                        match object_index(prefix, &name) {
                            Some(i) if i < writes => {
                                if std::mem::replace(&mut seen[i], true) {
                                    out.duplicates += 1;
                                } else {
                                    out.deliveries.push((i as u32, now));
                                }
                            }
                            _ => out.stray += 1,
                        }
                    }
                }
                Some(Err(e)) => {
                    out.error = Some(format!("{e:#}"));
                    break;
                }
                None => {
                    out.error = Some("the watch stream ended".into());
                    break;
                }
            },
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    out
}

pub async fn fanout<S: System>(sys: &S, plan: &WatchPlan) -> anyhow::Result<WatchResult> {
    let setup = Instant::now();
    let leader = sys.leader().await?;
    let writer = sys.client(leader).await?;
    // Every watch starts after this write: what follows is the job's writes.
    let start = writer
        .put("bench", "watch-start", false)
        .await
        .context("the marker write")?;
    let connections = plan.watchers.div_ceil(plan.streams_per_connection.max(1));
    let mut conns = Vec::with_capacity(connections);
    for c in 0..connections {
        conns.push(sys.client(c % sys.members()).await?);
    }
    let streams: Vec<NameStream> = futures::stream::iter(0..plan.watchers)
        .map(|w| {
            let conn = conns[w % connections].clone();
            async move {
                conn.watch(SPACE, start)
                    .await
                    .with_context(|| format!("opening watch {w}"))
            }
        })
        .buffered(64)
        .try_collect()
        .await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let receivers: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(receive(s, PREFIX, plan.writes, stop_rx.clone())))
        .collect();
    let setup_s = setup.elapsed().as_secs_f64();

    let started = Instant::now();
    let mut issued = Vec::with_capacity(plan.writes);
    let mut acked = Vec::with_capacity(plan.writes);
    let mut write_latency = Vec::with_capacity(plan.writes);
    let mut write_errors = 0;
    for i in 0..plan.writes {
        let name = object_name(PREFIX, i);
        let t = Instant::now();
        issued.push(t);
        put_retrying(&writer, SPACE, &name, &mut write_errors).await?;
        let done = Instant::now();
        acked.push(done);
        write_latency.push(done - t);
    }
    let writes_per_s = rate(plan.writes, started.elapsed());

    // Wait for the watchers to see everything, or for the drain time to pass.
    let deadline = tokio::time::Instant::now() + plan.drain;
    let waited = async {
        for r in &receivers {
            while !r.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let _ = tokio::time::timeout_at(deadline, waited).await;
    let _ = stop_tx.send(true);
    let mut from_issue = Vec::with_capacity(plan.watchers * plan.writes);
    let mut from_ack = Vec::with_capacity(plan.watchers * plan.writes);
    let (mut duplicates, mut stray, mut failed_watchers, mut first_error) = (0, 0, 0, None);
    for r in receivers {
        let got = r.await?;
        for (i, at) in got.deliveries {
            from_issue.push(at.saturating_duration_since(issued[i as usize]));
            from_ack.push(at.saturating_duration_since(acked[i as usize]));
        }
        duplicates += got.duplicates;
        stray += got.stray;
        if let Some(e) = got.error {
            failed_watchers += 1;
            first_error.get_or_insert(e);
        }
    }
    let expected = plan.watchers * plan.writes;
    let delivered = from_issue.len();
    Ok(WatchResult {
        watchers: plan.watchers,
        writes: plan.writes,
        connections,
        expected,
        delivered,
        missed: expected - delivered,
        duplicates,
        stray,
        failed_watchers,
        first_error,
        write_errors,
        writes_per_s,
        from_issue: Summary::of(&mut from_issue),
        from_ack: Summary::of(&mut from_ack),
        write_latency: Summary::of(&mut write_latency),
        setup_s,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}
