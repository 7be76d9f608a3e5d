//! The store's own history, rebuilt from everything the clients saw: the
//! events of every watch session on every replica, merged by revision, plus
//! every acknowledged write. Where sources disagree (one revision, two
//! different events; one write, two revisions; a value nobody wrote) that is a
//! violation on its own.
//!
//! Watches start at revision 0 and resume from their last revision, so the
//! union of their covered ranges usually spans the whole run; checkers that
//! need the complete history up to a revision ask [`Truth::state_at`], which
//! replays from the empty store or from a list a watcher started over from.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::Violation;
use crate::history::{Call, EventKind, History, Outcome, Reply, Seen, WatchItem};

const CHECKER: &str = "history";

/// Ops recorded by watchers (the lists they start over from) use client ids
/// from here up.
pub const RELIST_CLIENT: u32 = 1000;

/// Objects by key: (value, revision).
pub type State = BTreeMap<String, (Option<String>, u64)>;

/// One change at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: String,
    pub kind: EventKind,
    /// The value written (for a delete: the value deleted, when known).
    pub value: Option<String>,
}

#[derive(Debug, Default)]
pub struct Truth {
    /// Every change, by revision (several only for an atomic batch).
    pub changes: BTreeMap<u64, Vec<Change>>,
    /// The revision at which each write (by its value) took effect.
    pub rev_of: HashMap<String, u64>,
    /// The write (by its value) that made each (revision, key).
    pub value_at: HashMap<(u64, String), String>,
    /// Revision ranges (lo, hi] some watch covered without a break.
    pub covered: Vec<(u64, u64)>,
    /// Snapshots to replay from: the lists a watcher started over from (op
    /// id, objects by key), by revision. Revision 0 is the empty store.
    pub anchors: BTreeMap<u64, (u64, State)>,
    pub anomalies: Vec<Violation>,
}

fn kind_of(call: &Call) -> Option<EventKind> {
    match call {
        Call::Create { .. } => Some(EventKind::Added),
        Call::Update { .. } => Some(EventKind::Modified),
        Call::Delete { .. } => Some(EventKind::Deleted),
        Call::Read | Call::List => None,
    }
}

impl Truth {
    pub fn build(h: &History) -> Self {
        let mut t = Truth::default();
        let written: HashSet<&str> = h.ops.iter().filter_map(|o| o.call.value()).collect();

        // One write, one revision: the workload sends no batches.
        let mut acked_at: HashMap<u64, u64> = HashMap::new();
        for op in &h.ops {
            if let Some(rev) = op.written_rev() {
                if let Some(other) = acked_at.insert(rev, op.id) {
                    t.anomalies.push(Violation::new(
                        CHECKER,
                        "duplicate-revision",
                        format!(
                            "ops {other} and {} were both acknowledged at revision {rev}",
                            op.id
                        ),
                    ));
                }
            }
            if let (Some(rev), Some(kind)) = (op.written_rev(), kind_of(&op.call)) {
                let value = op.call.value().map(str::to_string);
                t.add_change(
                    rev,
                    Change {
                        key: op.key.clone(),
                        kind,
                        value,
                    },
                    "an acknowledged write",
                );
            }
        }
        for s in &h.watches {
            for item in &s.items {
                if let WatchItem::Event {
                    rev,
                    kind,
                    key,
                    value,
                    ..
                } = item
                {
                    let change = Change {
                        key: key.clone(),
                        kind: *kind,
                        value: Some(value.clone()),
                    };
                    t.add_change(*rev, change, "a watch event");
                }
            }
        }
        // Values and their revisions, from every kind of observation.
        let mut seen: Vec<(&str, &Seen, &str)> = Vec::new();
        for op in &h.ops {
            match &op.outcome {
                Outcome::Ok(Reply::Found { object: Some(s) }) => seen.push((&op.key, s, "a read")),
                Outcome::Ok(Reply::Listed { items, .. }) => {
                    seen.extend(items.iter().map(|(k, s)| (k.as_str(), s, "a list")))
                }
                _ => {}
            }
        }
        for f in &h.finals {
            seen.extend(f.items.iter().map(|(k, s)| (k.as_str(), s, "a final read")));
        }
        let from_changes: Vec<(u64, String, String)> = t
            .changes
            .iter()
            .flat_map(|(rev, cs)| {
                cs.iter()
                    .filter(|c| c.kind != EventKind::Deleted)
                    .filter_map(|c| c.value.clone().map(|v| (*rev, c.key.clone(), v)))
            })
            .collect();
        for (rev, key, value) in from_changes {
            t.note_rev(&key, &value, rev, "the history");
        }
        for (key, s, source) in seen {
            t.note_rev(key, &s.value, s.rev, source);
        }
        let mut phantoms: Vec<&String> = t
            .rev_of
            .keys()
            .filter(|v| !written.contains(v.as_str()))
            .collect();
        phantoms.sort();
        for v in phantoms {
            t.anomalies.push(Violation::new(
                CHECKER,
                "phantom-value",
                format!("value {v} was observed but no client wrote it"),
            ));
        }
        t.covered = merge(
            h.watches
                .iter()
                .map(|s| (s.after, s.covered_to()))
                .collect(),
        );
        t.anchors.insert(0, (0, BTreeMap::new()));
        for op in h.ops.iter().filter(|o| o.client >= RELIST_CLIENT) {
            if let Outcome::Ok(Reply::Listed { rev, items }) = &op.outcome {
                let state = items
                    .iter()
                    .map(|(k, s)| (k.clone(), (Some(s.value.clone()), s.rev)))
                    .collect();
                t.anchors.entry(*rev).or_insert((op.id, state));
            }
        }
        t
    }

    fn add_change(&mut self, rev: u64, change: Change, source: &str) {
        let at = self.changes.entry(rev).or_default();
        match at.iter_mut().find(|c| c.key == change.key) {
            None => at.push(change),
            Some(known) => {
                let same_value = match (&known.value, &change.value) {
                    (Some(a), Some(b)) => a == b,
                    _ => true,
                };
                if known.kind != change.kind || !same_value {
                    self.anomalies.push(Violation::new(
                        CHECKER,
                        "inconsistent-event",
                        format!(
                            "revision {rev} of {}: {source} says {:?} {:?}, earlier sources said {:?} {:?}",
                            change.key, change.kind, change.value, known.kind, known.value
                        ),
                    ));
                } else if known.value.is_none() {
                    known.value = change.value;
                }
            }
        }
    }

    fn note_rev(&mut self, key: &str, value: &str, rev: u64, source: &str) {
        match self.rev_of.get(value) {
            Some(&r) if r != rev => self.anomalies.push(Violation::new(
                CHECKER,
                "revision-mismatch",
                format!("write {value} was seen at revision {r} and, by {source}, at {rev}"),
            )),
            Some(_) => {}
            None => {
                self.rev_of.insert(value.to_string(), rev);
            }
        }
        let at = (rev, key.to_string());
        match self.value_at.get(&at) {
            Some(v) if v != value => self.anomalies.push(Violation::new(
                CHECKER,
                "duplicate-revision",
                format!("{key}@{rev} holds write {v} and, by {source}, write {value}"),
            )),
            Some(_) => {}
            None => {
                self.value_at.insert(at, value.to_string());
            }
        }
    }

    /// True when some watches together saw every revision in (from, to].
    pub fn complete(&self, from: u64, to: u64) -> bool {
        to <= from || self.covered.iter().any(|&(lo, hi)| lo <= from && hi >= to)
    }

    /// Every object as of `rev` (key -> (value, revision)), replayed from the
    /// latest snapshot the watches saw everything after, other than op
    /// `except`; None when there is none.
    pub fn state_at(&self, rev: u64, except: u64) -> Option<State> {
        let (from, (_, anchor)) = self
            .anchors
            .range(..=rev)
            .rev()
            .filter(|(_, (id, _))| *id != except || *id == 0)
            .find(|(a, _)| self.complete(**a, rev))?;
        let mut state = anchor.clone();
        for (r, changes) in self.changes.range(from + 1..rev.max(*from) + 1) {
            for c in changes {
                if c.kind == EventKind::Deleted {
                    state.remove(&c.key);
                } else {
                    state.insert(c.key.clone(), (c.value.clone(), *r));
                }
            }
        }
        Some(state)
    }
}

/// Merges (lo, hi] ranges that touch or overlap.
fn merge(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.retain(|(lo, hi)| hi >= lo);
    ranges.sort();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::history::{Failure, OpRecord, WatchSession};

    pub fn op(
        id: u64,
        key: &str,
        call: Call,
        invoke: u64,
        complete: u64,
        outcome: Outcome,
    ) -> OpRecord {
        OpRecord {
            id,
            client: 0,
            replica: 1,
            key: key.into(),
            call,
            invoke,
            complete,
            outcome,
        }
    }

    pub fn ok_write(rev: u64) -> Outcome {
        Outcome::Ok(Reply::Written { rev })
    }

    pub fn fail(failure: Failure) -> Outcome {
        Outcome::Fail {
            failure,
            message: String::new(),
        }
    }

    pub fn found(v: &str, rev: u64) -> Outcome {
        Outcome::Ok(Reply::Found {
            object: Some(Seen {
                value: v.into(),
                rev,
            }),
        })
    }

    pub fn event(rev: u64, kind: EventKind, key: &str, value: &str) -> WatchItem {
        WatchItem::Event {
            rev,
            kind,
            key: key.into(),
            value: value.into(),
            at: rev,
        }
    }

    pub fn session(id: u64, after: u64, resumed: bool, items: Vec<WatchItem>) -> WatchSession {
        WatchSession {
            id,
            watcher: id as u32,
            replica: 1,
            after,
            resumed,
            start: 0,
            end: 100,
            items,
            ended: "stopped".into(),
        }
    }

    pub fn create(v: &str) -> Call {
        Call::Create { value: v.into() }
    }

    #[test]
    fn disagreeing_sources_are_anomalies() {
        let mut h = History::default();
        h.ops.push(op(1, "a", create("w1"), 0, 1, ok_write(5)));
        h.ops.push(op(2, "a", Call::Read, 2, 3, found("w1", 6)));
        h.ops.push(op(3, "b", Call::Read, 2, 3, found("w9", 7)));
        h.watches.push(session(
            1,
            0,
            false,
            vec![event(5, EventKind::Modified, "a", "w1")],
        ));
        let t = Truth::build(&h);
        let kinds: Vec<&str> = t.anomalies.iter().map(|v| v.kind).collect();
        assert!(kinds.contains(&"inconsistent-event"), "{kinds:?}");
        assert!(kinds.contains(&"revision-mismatch"), "{kinds:?}");
        assert!(kinds.contains(&"phantom-value"), "{kinds:?}");
    }

    #[test]
    fn two_writes_at_one_revision_are_an_anomaly() {
        let mut h = History::default();
        h.ops.push(op(1, "a", create("w1"), 0, 1, ok_write(5)));
        h.ops.push(op(2, "b", create("w2"), 0, 1, ok_write(5)));
        let t = Truth::build(&h);
        assert!(
            t.anomalies.iter().any(|v| v.kind == "duplicate-revision"),
            "{:?}",
            t.anomalies
        );
    }

    #[test]
    fn coverage_and_state() {
        let mut h = History::default();
        h.ops.push(op(1, "a", create("w1"), 0, 1, ok_write(5)));
        h.ops.push(op(
            2,
            "a",
            Call::Delete { expected: None },
            2,
            3,
            ok_write(7),
        ));
        h.watches.push(session(
            1,
            0,
            false,
            vec![event(5, EventKind::Added, "a", "w1")],
        ));
        h.watches.push(session(
            2,
            5,
            true,
            vec![WatchItem::Bookmark { rev: 9, at: 9 }],
        ));
        let t = Truth::build(&h);
        assert!(t.anomalies.is_empty(), "{:?}", t.anomalies);
        assert!(t.complete(0, 9));
        assert!(!t.complete(0, 10));
        assert_eq!(
            t.state_at(6, 0).and_then(|s| s.get("a").map(|s| s.1)),
            Some(5)
        );
        assert_eq!(t.state_at(7, 0).map(|s| s.len()), Some(0));
        assert_eq!(t.state_at(10, 0), None);
    }
}
