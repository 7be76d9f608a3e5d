//! Checkers over a recorded [`History`](crate::history::History). Each one is
//! a pure function from the history to its findings, so it runs the same on a
//! live run and on a history file, and unit tests feed it hand-written
//! histories that must trip every kind of violation it knows.

pub mod durability;
pub mod linearizable;
pub mod lists;
pub mod liveness;
pub mod register;
pub mod storage;
pub mod truth;
pub mod watch;
pub mod wgl;

use serde::Serialize;

use crate::history::History;

/// One broken promise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// The checker that found it.
    pub checker: &'static str,
    /// A short stable name: `stale-read`, `gap`, `lost-write`, ...
    pub kind: &'static str,
    pub detail: String,
}

impl Violation {
    pub fn new(checker: &'static str, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            checker,
            kind,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}/{}] {}", self.checker, self.kind, self.detail)
    }
}

/// What every checker found, and how much it could check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Findings {
    pub violations: Vec<Violation>,
    /// Keys the linearizability search ran out of time on.
    pub unknown_keys: Vec<String>,
    pub ops_checked: usize,
    pub watch_events_checked: usize,
    pub lists_checked: usize,
    pub lists_skipped: usize,
}

/// Limits for the checkers that search.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Time the linearizability search may spend on one key.
    pub per_key: std::time::Duration,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            per_key: std::time::Duration::from_secs(20),
        }
    }
}

/// Runs every checker.
pub fn all(history: &History, budget: Budget) -> Findings {
    let truth = truth::Truth::build(history);
    let mut f = Findings {
        violations: truth.anomalies.clone(),
        ..Default::default()
    };
    let lin = linearizable::check(history, budget);
    f.ops_checked = lin.ops_checked;
    f.unknown_keys = lin.unknown_keys;
    f.violations.extend(lin.violations);
    let w = watch::check(history, &truth);
    f.watch_events_checked = w.events_checked;
    f.violations.extend(w.violations);
    let l = lists::check(history, &truth);
    f.lists_checked = l.checked;
    f.lists_skipped = l.skipped;
    f.violations.extend(l.violations);
    f.violations.extend(durability::check(history, &truth));
    f.violations.extend(storage::check(history));
    f
}
