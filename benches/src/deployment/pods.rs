//! The pods as a watch on a follower sees them: when each first appeared,
//! got its node, and turned Ready, and when it was marked for deletion. This
//! is where the time goes when the Deployment is slow: creates (the
//! ReplicaSet controller), binds (the scheduler), Ready (the node agents'
//! status writes), each per second.
//!
//! ```text
//!  follower ══ Watch pods (after rev) ══► decode the few fields below
//!     └─ Timeline (one owner task; the run reads a copy at its end)
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use balsa_api::grpc::client::Client;
use balsa_proto::objects::{EventType, WatchRequest};
use futures::StreamExt;
use serde::Deserialize;
use tokio::task::JoinHandle;

use super::sim_nodes::{is_true, Condition};

#[derive(Deserialize)]
struct PodView {
    metadata: Meta,
    #[serde(default)]
    spec: Option<Spec>,
    #[serde(default)]
    status: Option<Status>,
}

#[derive(Deserialize)]
struct Meta {
    name: String,
    #[serde(rename = "deletionTimestamp", default)]
    deletion_timestamp: Option<String>,
}

#[derive(Deserialize)]
struct Spec {
    #[serde(rename = "nodeName", default)]
    node_name: Option<String>,
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    conditions: Vec<Condition>,
}

/// One pod's moments, as the watch first showed them.
#[derive(Debug, Clone, Copy, Default)]
pub struct PodTimes {
    pub seen: Option<Instant>,
    pub bound: Option<Instant>,
    pub ready: Option<Instant>,
    /// Marked for deletion (or deleted).
    pub gone: Option<Instant>,
}

/// Every pod of the run by name.
pub type Timeline = HashMap<String, PodTimes>;

pub struct PodWatch {
    times: Arc<Mutex<Timeline>>,
    task: JoinHandle<anyhow::Result<()>>,
    /// One moment on both clocks, to turn the timeline's instants into
    /// wall-clock times (the logs' clock).
    anchor: (Instant, SystemTime),
}

impl PodWatch {
    /// Watches the pods of `namespace` after revision `after`.
    pub async fn start(client: &Client, namespace: &str, after: u64) -> anyhow::Result<Self> {
        let stream = client
            .watch(WatchRequest {
                group: String::new(),
                resource: "pods".into(),
                namespace: namespace.into(),
                name: String::new(),
                after: Some(after),
                bookmark_interval_ms: 0,
            })
            .await
            .context("watching pods")?;
        let times: Arc<Mutex<Timeline>> = Arc::default();
        let t = times.clone();
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                let item = item.context("pod watch")?;
                if item.r#type == EventType::Bookmark as i32 {
                    continue;
                }
                let now = Instant::now();
                let pod: PodView =
                    serde_json::from_slice(&item.object).context("decoding a pod")?;
                let mut map = t.lock().map_err(|_| anyhow!("poisoned"))?;
                let e = map.entry(pod.metadata.name).or_default();
                e.seen.get_or_insert(now);
                let node = pod.spec.and_then(|s| s.node_name);
                if node.is_some_and(|n| !n.is_empty()) {
                    e.bound.get_or_insert(now);
                }
                if pod.status.is_some_and(|s| is_true(&s.conditions, "Ready")) {
                    e.ready.get_or_insert(now);
                }
                if item.r#type == EventType::Deleted as i32
                    || pod.metadata.deletion_timestamp.is_some()
                {
                    e.gone.get_or_insert(now);
                }
            }
            Err(anyhow!("the pod watch ended"))
        });
        Ok(Self {
            times,
            task,
            anchor: (Instant::now(), SystemTime::now()),
        })
    }

    /// Writes `name,seen,bound,ready,gone` per pod, each in Unix
    /// milliseconds (empty when the watch never saw it).
    pub fn write_csv(&self, path: &Path) -> anyhow::Result<()> {
        let timeline = self.times.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let (i0, w0) = self.anchor;
        let unix_ms = |t: Option<Instant>| {
            t.map(|t| {
                let wall = if t >= i0 {
                    w0 + t.duration_since(i0)
                } else {
                    w0 - i0.duration_since(t)
                };
                let ms = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
                format!("{:.1}", ms.as_secs_f64() * 1e3)
            })
            .unwrap_or_default()
        };
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        writeln!(out, "name,seen_ms,bound_ms,ready_ms,gone_ms")?;
        for (name, t) in &timeline {
            writeln!(
                out,
                "{name},{},{},{},{}",
                unix_ms(t.seen),
                unix_ms(t.bound),
                unix_ms(t.ready),
                unix_ms(t.gone)
            )?;
        }
        out.flush()
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    /// Pods seen, bound, Ready (and not gone) so far.
    pub fn counts(&self) -> (usize, usize, usize) {
        let map = self.times.lock().unwrap_or_else(|p| p.into_inner());
        let seen = map.len();
        let bound = map.values().filter(|t| t.bound.is_some()).count();
        let ready = map
            .values()
            .filter(|t| t.ready.is_some() && t.gone.is_none())
            .count();
        (seen, bound, ready)
    }

    /// A copy of the timeline; an error if the watch failed.
    pub fn snapshot(&self) -> anyhow::Result<Timeline> {
        if self.task.is_finished() {
            return Err(anyhow!("the pod watch stopped early"));
        }
        Ok(self.times.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How many of `instants` fall in each second from `from`, up to `to`.
pub fn per_second(
    instants: impl Iterator<Item = Instant>,
    from: Instant,
    to: Instant,
) -> Vec<usize> {
    let len = to.saturating_duration_since(from).as_secs() as usize + 1;
    let mut out = vec![0; len];
    for t in instants {
        if t >= from && t <= to {
            out[t.saturating_duration_since(from).as_secs() as usize] += 1;
        }
    }
    out
}

/// The latencies from `a` to `b` of the pods having both.
pub fn latencies(
    timeline: &Timeline,
    a: impl Fn(&PodTimes) -> Option<Instant>,
    b: impl Fn(&PodTimes) -> Option<Instant>,
) -> Vec<Duration> {
    timeline
        .values()
        .filter_map(|t| Some(b(t)?.saturating_duration_since(a(t)?)))
        .collect()
}

/// The most pods alive at once between `from` and `to`: seen and not yet
/// marked for deletion (the pods a rolling update's maxSurge bounds; a
/// terminating pod no longer counts, as upstream's ReplicaSet status).
pub fn peak_live(timeline: &Timeline, from: Instant, to: Instant) -> usize {
    // +1 when a pod appears, -1 when it goes; at equal instants the goings
    // first, so a replacement never counts twice.
    let mut steps: Vec<(Instant, i64)> = Vec::new();
    for t in timeline.values() {
        let Some(seen) = t.seen else { continue };
        steps.push((seen, 1));
        if let Some(gone) = t.gone {
            steps.push((gone, -1));
        }
    }
    steps.sort();
    let (mut live, mut peak) = (0i64, 0i64);
    for (at, step) in steps {
        live += step;
        if at > to {
            break;
        }
        if at >= from {
            peak = peak.max(live);
        }
    }
    // Alive at `from` without a step inside the window.
    let at_from = timeline
        .values()
        .filter(|t| t.seen.is_some_and(|s| s <= from) && t.gone.is_none_or(|g| g > from))
        .count() as i64;
    peak.max(at_from) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_second_buckets_from_the_start() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let counts = per_second(
            [at(10), at(999), at(1000), at(2500)].into_iter(),
            t0,
            at(2600),
        );
        assert_eq!(counts, [2, 1, 1]);
    }

    #[test]
    fn peak_live_counts_pods_between_appearing_and_going() {
        let t0 = Instant::now();
        let at = |ms| Some(t0 + Duration::from_millis(ms));
        let pod = |seen, gone| PodTimes {
            seen,
            gone,
            ..PodTimes::default()
        };
        let timeline: Timeline = [
            ("old-1", pod(at(0), at(500))),
            ("old-2", pod(at(0), at(900))),
            ("new-1", pod(at(400), None)),
            ("new-2", pod(at(500), None)),
            ("new-3", pod(at(950), None)),
        ]
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
        // 400-500 ms: old-1, old-2, new-1; at 500 old-1 goes as new-2 comes.
        assert_eq!(peak_live(&timeline, t0, t0 + Duration::from_secs(1)), 3);
        // Only after 900 ms: new-1, new-2, new-3.
        assert_eq!(
            peak_live(
                &timeline,
                t0 + Duration::from_millis(960),
                t0 + Duration::from_secs(1)
            ),
            3
        );
        // Before anything new: the two old pods.
        assert_eq!(peak_live(&timeline, t0, t0 + Duration::from_millis(100)), 2);
    }
}
