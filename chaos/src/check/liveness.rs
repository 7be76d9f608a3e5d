//! Liveness: for each fault, the longest stretch during which no write (and,
//! separately, no read) succeeded (writes: the probes', when the run has
//! probes, since a workload client stuck on one request sends no other), measured from the fault's start until it
//! was healed plus a settling time (or the next fault, if that comes first).
//! A fault that does not disturb the cluster shows about one op's latency.

use serde::Serialize;

use crate::history::{Call, FaultRecord, History, Outcome, Time};

/// After a fault is healed, how long its effects still count.
pub const SETTLE: Time = 3_000_000_000;

#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    pub kind: String,
    pub targets: Vec<u64>,
    pub start: Time,
    pub write_gap_ms: f64,
    pub read_gap_ms: f64,
    /// No success at all until the window ended.
    pub open: bool,
}

fn longest_gap(from: Time, to: Time, completions: &[Time]) -> (Time, bool) {
    let mut last = from;
    let mut longest = 0;
    let mut any = false;
    for &c in completions.iter().filter(|&&c| c > from && c <= to) {
        longest = longest.max(c - last);
        last = c;
        any = true;
    }
    if !any {
        return (to - from, true);
    }
    (longest, false)
}

fn window(f: &FaultRecord, next: Option<&FaultRecord>, run_end: Time) -> (Time, Time) {
    let mut end = f.end.saturating_add(SETTLE).min(run_end);
    if let Some(n) = next {
        end = end.min(n.start.max(f.end));
    }
    (f.start, end.max(f.start))
}

pub fn gaps(h: &History) -> Vec<Gap> {
    let mut writes: Vec<Time> = if h.probes.is_empty() {
        h.ops
            .iter()
            .filter(|o| o.call.is_write() && matches!(o.outcome, Outcome::Ok(_)))
            .map(|o| o.complete)
            .collect()
    } else {
        h.probes
            .iter()
            .filter(|p| p.ok)
            .map(|p| p.complete)
            .collect()
    };
    let mut reads: Vec<Time> = h
        .ops
        .iter()
        .filter(|o| {
            matches!(o.call, Call::Read | Call::List) && matches!(o.outcome, Outcome::Ok(_))
        })
        .map(|o| o.complete)
        .collect();
    writes.sort_unstable();
    reads.sort_unstable();
    let run_end = h
        .ops
        .iter()
        .map(|o| o.complete)
        .filter(|&c| c != crate::history::NEVER)
        .max()
        .unwrap_or(0);
    let mut faults: Vec<&FaultRecord> = h.faults.iter().collect();
    faults.sort_by_key(|f| f.start);
    let mut out = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        let (from, to) = window(f, faults.get(i + 1).copied(), run_end);
        let (w, open) = longest_gap(from, to, &writes);
        let (r, _) = longest_gap(from, to, &reads);
        out.push(Gap {
            kind: f.kind.clone(),
            targets: f.targets.clone(),
            start: f.start,
            write_gap_ms: w as f64 / 1e6,
            read_gap_ms: r as f64 / 1e6,
            open,
        });
    }
    out
}

/// Median and maximum of the write gaps of faults of one kind.
pub fn summary(gaps: &[Gap], kind: &str) -> Option<(f64, f64, usize)> {
    let mut v: Vec<f64> = gaps
        .iter()
        .filter(|g| g.kind == kind)
        .map(|g| g.write_gap_ms)
        .collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    Some((median, v[v.len() - 1], v.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::truth::tests::{create, ok_write, op};

    const MS: Time = 1_000_000;

    #[test]
    fn the_gap_is_the_longest_stretch_without_a_commit() {
        let mut h = History::default();
        for (i, t) in [100, 110, 120, 700, 710, 720].iter().enumerate() {
            let v = format!("w{i}");
            h.ops.push(op(
                i as u64,
                "a",
                create(&v),
                t * MS - MS,
                t * MS,
                ok_write(i as u64 + 1),
            ));
        }
        h.faults.push(FaultRecord {
            kind: "kill-leader".into(),
            targets: vec![1],
            start: 115 * MS,
            end: 400 * MS,
            note: String::new(),
        });
        let g = gaps(&h);
        assert_eq!(g.len(), 1);
        assert!((g[0].write_gap_ms - 580.0).abs() < 1e-6, "{:?}", g[0]);
        assert!(!g[0].open);
        assert_eq!(summary(&g, "kill-leader").map(|s| s.2), Some(1));
    }
}
