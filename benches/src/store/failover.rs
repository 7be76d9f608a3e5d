//! Job 6: a steady stream of writes (each retried against the next member on
//! failure) while the leader is SIGKILLed; the figure is the longest interval
//! without a successful write acknowledgement around the kill. The killed
//! member is then restarted and must catch up before the next round.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::system::{object_name, Kv, System};

const SPACE: &str = "failover";

#[derive(Debug, Clone)]
pub struct FailoverPlan {
    pub rounds: usize,
    /// Writers, each with one write in flight.
    pub writers: usize,
    /// Steady writing before the kill.
    pub before: Duration,
    /// Writing after the kill (extended, up to `recover_within`, until a write
    /// succeeds).
    pub after: Duration,
    pub recover_within: Duration,
    /// A write attempt taking longer fails and is retried on the next member.
    pub attempt_timeout: Duration,
    pub rejoin_within: Duration,
    /// Print every write attempt that ended from the kill to just after the gap.
    pub trace: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// 1-based member number that was killed.
    pub killed: usize,
    /// Longest interval without an acknowledgement, among the acknowledgements
    /// from 1 s before the kill to the end of the round.
    pub max_gap_ms: f64,
    /// From the kill to the first acknowledgement that came after it.
    pub kill_to_first_ack_ms: f64,
    pub acks_before_kill: usize,
    pub acks_after_kill: usize,
    pub failed_attempts: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_failure: Option<String>,
    pub rejoin_s: f64,
}

impl std::fmt::Display for Round {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "killed member {}: longest gap {:.1} ms, kill -> first ack {:.1} ms, {} acks before / {} after, \
             {} failed attempts, rejoined in {:.2}s",
            self.killed,
            self.max_gap_ms,
            self.kill_to_first_ack_ms,
            self.acks_before_kill,
            self.acks_after_kill,
            self.failed_attempts,
            self.rejoin_s
        )?;
        if let Some(e) = &self.first_failure {
            write!(f, " (first failure: {e})")?;
        }
        Ok(())
    }
}

fn print_attempts(
    writers: &[Writer],
    killed: usize,
    wall: std::time::SystemTime,
    at: Instant,
    until: Instant,
) {
    let ms = |t: Instant| {
        if t >= at {
            (t - at).as_secs_f64() * 1000.0
        } else {
            -((at - t).as_secs_f64() * 1000.0)
        }
    };
    let mut lines: Vec<(Instant, String)> = writers
        .iter()
        .enumerate()
        .flat_map(|(w, r)| r.attempts.iter().map(move |a| (w, a)))
        .filter(|(_, (_, _, end, _))| *end >= at && *end <= until)
        .map(|(w, (member, start, end, error))| {
            let what = error.as_deref().unwrap_or("ok");
            let line = format!(
                "    writer {w:>2} -> member {}: {:>8.1} .. {:>8.1} ms  {what}",
                member + 1,
                ms(*start),
                ms(*end)
            );
            (*end, line)
        })
        .collect();
    lines.sort_by_key(|(end, _)| *end);
    println!(
        "  attempts ending after the kill of member {} at {} UTC (times from the kill):",
        killed + 1,
        utc_time_of_day(wall)
    );
    for (_, line) in lines {
        println!("{line}");
    }
}

/// `hh:mm:ss.mmm` of a wall-clock time, as servers' UTC log lines show it.
fn utc_time_of_day(t: std::time::SystemTime) -> String {
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
        % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// The longest interval between consecutive times in `acks` (sorted) that ends
/// at or after `from`.
pub fn longest_gap(acks: &[Instant], from: Instant) -> Duration {
    acks.windows(2)
        .filter(|w| w[1] >= from)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}

/// The newest acknowledgement of any writer.
type Latest = Arc<std::sync::Mutex<Option<Instant>>>;

fn last_ack(latest: &Latest) -> Option<Instant> {
    latest.lock().map_or(None, |l| *l)
}

struct Writer {
    acks: Vec<Instant>,
    failures: usize,
    first_failure: Option<String>,
    /// With `trace`: every attempt (member, start, end, error if it failed).
    attempts: Vec<(usize, Instant, Instant, Option<String>)>,
}

async fn write_until_stopped<C: Kv>(
    clients: Vec<C>,
    w: usize,
    round: usize,
    attempt_timeout: Duration,
    trace: bool,
    stop: Arc<AtomicBool>,
    latest: Latest,
) -> Writer {
    let mut out = Writer {
        acks: Vec::new(),
        failures: 0,
        first_failure: None,
        attempts: Vec::new(),
    };
    let mut member = w % clients.len();
    let prefix = format!("r{round}w{w}");
    let mut n = 0;
    'writes: while !stop.load(Ordering::Relaxed) {
        let name = object_name(&prefix, n);
        n += 1;
        let mut attempt = 0;
        loop {
            if stop.load(Ordering::Relaxed) {
                break 'writes;
            }
            let started = Instant::now();
            let result = tokio::time::timeout(
                attempt_timeout,
                clients[member].put(SPACE, &name, attempt > 0),
            )
            .await;
            let error = match result {
                Ok(Ok(_)) => {
                    let now = Instant::now();
                    if trace {
                        out.attempts.push((member, started, now, None));
                    }
                    out.acks.push(now);
                    if let Ok(mut l) = latest.lock() {
                        *l = Some(now);
                    }
                    break;
                }
                Ok(Err(e)) => format!("{e:#}"),
                Err(_) => format!("timed out after {attempt_timeout:?}"),
            };
            out.failures += 1;
            if trace {
                out.attempts
                    .push((member, started, Instant::now(), Some(error.clone())));
            }
            out.first_failure.get_or_insert(error);
            attempt += 1;
            member = (member + 1) % clients.len();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    out
}

pub async fn round<S: System>(
    sys: &mut S,
    plan: &FailoverPlan,
    round: usize,
) -> anyhow::Result<Round> {
    let mut clients = Vec::with_capacity(sys.members());
    for i in 0..sys.members() {
        clients.push(sys.client(i).await?);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let latest: Latest = Arc::default();
    let writers: Vec<_> = (0..plan.writers)
        .map(|w| {
            let (clients, stop, latest) = (clients.clone(), stop.clone(), latest.clone());
            tokio::spawn(write_until_stopped(
                clients,
                w,
                round,
                plan.attempt_timeout,
                plan.trace,
                stop,
                latest,
            ))
        })
        .collect();
    tokio::time::sleep(plan.before).await;
    let leader = sys.leader().await;
    let killed_at = Instant::now();
    let killed_wall = std::time::SystemTime::now();
    let killed = match leader {
        Ok(leader) => sys.kill(leader).await.map(|()| leader),
        Err(e) => Err(e),
    };
    let killed = match killed {
        Ok(k) => k,
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            for w in writers {
                let _ = w.await;
            }
            return Err(e.context("finding and killing the leader"));
        }
    };
    tokio::time::sleep(plan.after).await;
    // `after` may be shorter than the outage: keep writing until one succeeds.
    let recover_deadline = killed_at + plan.recover_within;
    while last_ack(&latest) < Some(killed_at) && Instant::now() < recover_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let ended = Instant::now();
    let mut results = Vec::with_capacity(writers.len());
    for w in writers {
        results.push(w.await?);
    }
    let mut acks: Vec<Instant> = results
        .iter()
        .flat_map(|r| r.acks.iter().copied())
        .collect();
    acks.sort_unstable();
    let failed_attempts = results.iter().map(|r| r.failures).sum();
    let first_failure = results.iter().find_map(|r| r.first_failure.clone());
    let after_kill: Vec<Instant> = acks.iter().copied().filter(|&a| a >= killed_at).collect();
    let window_start = killed_at
        .checked_sub(Duration::from_secs(1))
        .unwrap_or(killed_at);
    let mut max_gap = longest_gap(&acks, window_start);
    let first_after = after_kill.first().copied();
    if first_after.is_none() {
        // No recovery seen: the gap is at least until the end of the round.
        let last = acks.last().copied().unwrap_or(killed_at);
        max_gap = max_gap.max(ended.saturating_duration_since(last));
    }
    if plan.trace {
        print_attempts(
            &results,
            killed,
            killed_wall,
            killed_at,
            killed_at + max_gap + Duration::from_millis(200),
        );
    }
    let rejoin_started = Instant::now();
    let rejoin = sys.restart(killed, plan.rejoin_within).await;
    let rejoin_s = rejoin_started.elapsed().as_secs_f64();
    rejoin?;
    if first_after.is_none() {
        anyhow::bail!(
            "no write succeeded within {:?} of killing the leader",
            plan.recover_within
        );
    }
    Ok(Round {
        killed: killed + 1,
        max_gap_ms: max_gap.as_secs_f64() * 1000.0,
        kill_to_first_ack_ms: first_after.map_or(0.0, |a| (a - killed_at).as_secs_f64() * 1000.0),
        acks_before_kill: acks.len() - after_kill.len(),
        acks_after_kill: after_kill.len(),
        failed_attempts,
        first_failure,
        rejoin_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_of_day() {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(86_400_000 * 3 + 3_723_045);
        assert_eq!(utc_time_of_day(t), "01:02:03.045");
    }

    #[test]
    fn longest_gap_counts_only_gaps_ending_in_the_window() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let acks = [at(0), at(500), at(510), at(900), at(920)];
        assert_eq!(longest_gap(&acks, at(0)), Duration::from_millis(500));
        assert_eq!(longest_gap(&acks, at(600)), Duration::from_millis(390));
        assert_eq!(longest_gap(&acks, at(2000)), Duration::ZERO);
        assert_eq!(longest_gap(&[], at(0)), Duration::ZERO);
    }
}
