//! The report of one run: what was done (ops by kind and outcome, faults by
//! kind), what the checkers found, and how long each fault kept the cluster
//! from committing. Written as `report.json`, a plain-text `summary.txt`
//! (also printed), and `timeline.html`: operations per client and watch
//! sessions per watcher over time, faults shaded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::check::liveness::{self, Gap};
use crate::check::Findings;
use crate::history::{Call, History, Outcome, NEVER};
use crate::nemesis::Fault;

pub struct Inputs<'a> {
    pub run_id: String,
    pub netns: bool,
    pub firewall: Option<String>,
    pub ready_after: Duration,
    pub duration: Duration,
    pub check_time: Duration,
    pub skipped_faults: Vec<Fault>,
    pub interrupted: bool,
    pub converge_error: Option<String>,
    pub crashed: Vec<(u64, String)>,
    pub history: &'a History,
    pub findings: Findings,
}

#[derive(Debug, Serialize)]
pub struct GapSummary {
    pub kind: String,
    pub count: usize,
    pub median_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub run_id: String,
    pub network: String,
    pub ready_after_s: f64,
    pub duration_s: f64,
    pub check_time_s: f64,
    pub interrupted: bool,
    /// ops by call, then by outcome (ok / fail / unknown).
    pub ops: BTreeMap<String, BTreeMap<&'static str, usize>>,
    pub watch_sessions: usize,
    pub watch_events: usize,
    pub faults: BTreeMap<String, usize>,
    pub skipped_faults: Vec<Fault>,
    pub gaps: Vec<Gap>,
    pub gap_summary: Vec<GapSummary>,
    pub acked_writes: usize,
    pub acked_writes_lost: usize,
    pub findings: Findings,
    pub converge_error: Option<String>,
    pub crashed: Vec<(u64, String)>,
    #[serde(skip)]
    timeline: String,
}

fn call_name(c: &Call) -> &'static str {
    match c {
        Call::Create { .. } => "create",
        Call::Update {
            expected: Some(_), ..
        } => "cas-update",
        Call::Update { expected: None, .. } => "update",
        Call::Delete { .. } => "delete",
        Call::Read => "read",
        Call::List => "list",
    }
}

fn outcome_name(o: &Outcome) -> &'static str {
    match o {
        Outcome::Ok(_) => "ok",
        Outcome::Fail { .. } => "fail",
        Outcome::Unknown { .. } => "unknown",
    }
}

impl Report {
    pub fn build(i: Inputs<'_>) -> Self {
        let h = i.history;
        let mut ops: BTreeMap<String, BTreeMap<&'static str, usize>> = BTreeMap::new();
        for o in &h.ops {
            *ops.entry(call_name(&o.call).into())
                .or_default()
                .entry(outcome_name(&o.outcome))
                .or_default() += 1;
        }
        let mut faults: BTreeMap<String, usize> = BTreeMap::new();
        for f in &h.faults {
            *faults.entry(f.kind.clone()).or_default() += 1;
        }
        let gaps = liveness::gaps(h);
        let gap_summary = faults
            .keys()
            .filter_map(|k| {
                liveness::summary(&gaps, k).map(|(median_ms, max_ms, count)| GapSummary {
                    kind: k.clone(),
                    count,
                    median_ms,
                    max_ms,
                })
            })
            .collect();
        let acked_writes = h.ops.iter().filter(|o| o.written_rev().is_some()).count();
        let acked_writes_lost = i
            .findings
            .violations
            .iter()
            .filter(|v| v.kind == "lost-write")
            .count();
        let network = match (i.netns, &i.firewall) {
            (true, Some(fw)) => format!("netns ({fw})"),
            (true, None) => "netns".into(),
            (false, _) => "loopback".into(),
        };
        let timeline = timeline(h);
        Report {
            run_id: i.run_id,
            network,
            ready_after_s: i.ready_after.as_secs_f64(),
            duration_s: i.duration.as_secs_f64(),
            check_time_s: i.check_time.as_secs_f64(),
            interrupted: i.interrupted,
            ops,
            watch_sessions: h.watches.len(),
            watch_events: i.findings.watch_events_checked,
            faults,
            skipped_faults: i.skipped_faults,
            gaps,
            gap_summary,
            acked_writes,
            acked_writes_lost,
            findings: i.findings,
            converge_error: i.converge_error,
            crashed: i.crashed,
            timeline,
        }
    }

    /// No violation, the cluster converged, and no master died on its own.
    pub fn passed(&self) -> bool {
        self.findings.violations.is_empty()
            && self.converge_error.is_none()
            && self.crashed.is_empty()
    }

    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ =
            writeln!(
            s,
            "run {} on {}: {:.1} s of workload (cluster ready in {:.2} s), checked in {:.1} s{}",
            self.run_id,
            self.network,
            self.duration_s,
            self.ready_after_s,
            self.check_time_s,
            if self.interrupted { " (interrupted)" } else { "" }
        );
        let total: usize = self.ops.values().flat_map(|m| m.values()).sum();
        let _ = writeln!(
            s,
            "ops: {total} ({} checked for linearizability)",
            self.findings.ops_checked
        );
        for (call, by) in &self.ops {
            let parts: Vec<String> = by.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(s, "  {call:<11} {}", parts.join(", "));
        }
        let _ = writeln!(
            s,
            "watches: {} sessions, {} events; lists checked {} (skipped {})",
            self.watch_sessions,
            self.watch_events,
            self.findings.lists_checked,
            self.findings.lists_skipped
        );
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        let _ = writeln!(
            s,
            "faults: {}",
            if faults.is_empty() {
                "none".into()
            } else {
                faults.join(", ")
            }
        );
        if !self.skipped_faults.is_empty() {
            let names: Vec<&str> = self.skipped_faults.iter().map(|f| f.name()).collect();
            let _ = writeln!(s, "  skipped (no network namespaces): {}", names.join(", "));
        }
        for g in &self.gap_summary {
            let _ = writeln!(
                s,
                "  write gap after {:<17} median {:>7.0} ms, max {:>7.0} ms (n={})",
                g.kind, g.median_ms, g.max_ms, g.count
            );
        }
        let _ = writeln!(
            s,
            "acknowledged writes: {}, lost: {}",
            self.acked_writes, self.acked_writes_lost
        );
        if !self.findings.unknown_keys.is_empty() {
            let _ = writeln!(
                s,
                "linearizability UNKNOWN (search budget spent) on keys: {}",
                self.findings.unknown_keys.join(", ")
            );
        }
        if let Some(e) = &self.converge_error {
            let _ = writeln!(s, "DID NOT CONVERGE: {e}");
        }
        for (id, status) in &self.crashed {
            let _ = writeln!(s, "MASTER {id} DIED ON ITS OWN: {status}");
        }
        let _ = writeln!(s, "violations: {}", self.findings.violations.len());
        for v in self.findings.violations.iter().take(30) {
            let _ = writeln!(s, "  {v}");
        }
        let _ = writeln!(
            s,
            "verdict: {}",
            if self.passed() { "PASS" } else { "FAIL" }
        );
        s
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join("summary.txt"), self.summary())?;
        std::fs::write(dir.join("timeline.html"), &self.timeline)?;
        Ok(())
    }
}

/// An HTML page with one SVG: a row per client (ops as ticks coloured by
/// outcome), a row per watcher (sessions as bars), faults shaded across.
fn timeline(h: &History) -> String {
    const W: f64 = 1400.0;
    const LEFT: f64 = 90.0;
    const ROW: f64 = 14.0;
    let end = h
        .ops
        .iter()
        .map(|o| o.complete)
        .chain(h.watches.iter().map(|w| w.end))
        .filter(|&t| t != NEVER)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let x = |t: u64| LEFT + (t.min(end as u64) as f64 / end) * (W - LEFT - 10.0);
    let clients: std::collections::BTreeSet<u32> = h.ops.iter().map(|o| o.client).collect();
    let watchers: std::collections::BTreeSet<u32> = h.watches.iter().map(|w| w.watcher).collect();
    let rows = clients.len() + watchers.len();
    let height = 40.0 + ROW * rows as f64 + 30.0;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="monospace" font-size="10">"#
    );
    for f in &h.faults {
        let (x0, x1) = (x(f.start), x(f.end).max(x(f.start) + 2.0));
        let _ = write!(
            svg,
            r##"<rect x="{x0:.1}" y="20" width="{:.1}" height="{:.1}" fill="#f5c0c0" opacity="0.6"><title>{} {:?} {}</title></rect><text x="{x0:.1}" y="14">{}</text>"##,
            x1 - x0,
            ROW * rows as f64,
            f.kind,
            f.targets,
            f.note,
            f.kind
        );
    }
    let mut y = 20.0;
    for c in &clients {
        let _ = write!(svg, r#"<text x="2" y="{:.1}">client {c}</text>"#, y + 10.0);
        for o in h.ops.iter().filter(|o| o.client == *c) {
            let colour = match o.outcome {
                Outcome::Ok(_) => "#2a9d3a",
                Outcome::Fail { .. } => "#e09020",
                Outcome::Unknown { .. } => "#d02020",
            };
            let (x0, x1) = (x(o.invoke), x(o.complete));
            let _ = write!(
                svg,
                r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"/>"#,
                y + 2.0,
                (x1 - x0).max(0.8),
                ROW - 4.0
            );
        }
        y += ROW;
    }
    for w in &watchers {
        let _ = write!(svg, r#"<text x="2" y="{:.1}">watch {w}</text>"#, y + 10.0);
        for s in h.watches.iter().filter(|s| s.watcher == *w) {
            let (x0, x1) = (x(s.start), x(s.end));
            let _ = write!(
                svg,
                r##"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#3070c0"><title>member {} after {} ({} items): {}</title></rect>"##,
                y + 3.0,
                (x1 - x0).max(1.0),
                ROW - 6.0,
                s.replica,
                s.after,
                s.items.len(),
                s.ended.replace('<', "&lt;")
            );
        }
        y += ROW;
    }
    let _ = write!(
        svg,
        r#"<text x="{LEFT}" y="{:.1}">0 s</text><text x="{:.1}" y="{:.1}">{:.1} s</text></svg>"#,
        y + 16.0,
        W - 60.0,
        y + 16.0,
        end / 1e9
    );
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>balsa chaos timeline</title></head><body>\
         <p>Ops per client (green ok, orange failed, red unknown), watch sessions per watcher (blue), faults shaded.</p>{svg}</body></html>"
    )
}
