//! Linearizability of the per-key register operations (create, read, CAS
//! update, delete, and each list read as one read per key), checked one key at
//! a time: linearizability is compositional (P-compositionality), so a
//! history is linearizable iff each object's sub-history is.
//!
//! Revisions are checked across keys too: a write that completed before
//! another one started must have the smaller revision, and a list must not be
//! older than a write acknowledged before it started.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use super::register::{Expect, RegOp, Register, WriteResult, WriterId};
use super::truth::Truth;
use super::wgl::{self, Operation, Verdict};
use super::{Budget, Violation};
use crate::history::{Call, Failure, History, OpRecord, Outcome, Reply, NEVER};

const CHECKER: &str = "linearizable";

#[derive(Debug, Default)]
pub struct Result {
    pub violations: Vec<Violation>,
    pub unknown_keys: Vec<String>,
    pub ops_checked: usize,
}

/// One key's operations for the model, with the records they came from.
#[derive(Default)]
struct KeyHistory<'a> {
    ops: Vec<Operation<RegOp>>,
    from: Vec<&'a OpRecord>,
    writers: HashMap<String, WriterId>,
}

impl<'a> KeyHistory<'a> {
    fn writer(&mut self, value: &str) -> WriterId {
        let next = self.writers.len() as WriterId;
        *self.writers.entry(value.to_string()).or_insert(next)
    }

    fn expect(&mut self, key: &str, expected: Option<u64>, truth: &Truth) -> Expect {
        match expected {
            None => Expect::Any,
            Some(rev) => match truth.value_at.get(&(rev, key.to_string())) {
                Some(v) => Expect::Writer(self.writer(v)),
                None => Expect::Unmatched,
            },
        }
    }

    fn push(&mut self, rec: &'a OpRecord, op: RegOp, unknown: bool) {
        let ret = if unknown { NEVER } else { rec.complete };
        self.ops.push(Operation {
            op,
            call: rec.invoke,
            ret,
        });
        self.from.push(rec);
    }
}

fn write_result(o: &Outcome) -> Option<WriteResult> {
    Some(match o {
        Outcome::Ok(Reply::Written { .. }) => WriteResult::Ok,
        Outcome::Ok(_) => return None,
        Outcome::Fail { failure, .. } => match failure {
            Failure::NotFound => WriteResult::Absent,
            Failure::AlreadyExists => WriteResult::Exists,
            Failure::Conflict => WriteResult::Mismatch,
            // Surely without effect and saying nothing of the state.
            Failure::Other => return None,
        },
        Outcome::Unknown { .. } => WriteResult::Unknown,
    })
}

fn split_by_key<'a>(h: &'a History, truth: &Truth) -> BTreeMap<String, KeyHistory<'a>> {
    let mut keys: BTreeMap<String, KeyHistory<'a>> = BTreeMap::new();
    let universe: BTreeSet<String> = h
        .ops
        .iter()
        .filter(|o| o.call.is_write())
        .map(|o| o.key.clone())
        .collect();
    for rec in &h.ops {
        match (&rec.call, &rec.outcome) {
            (Call::List, Outcome::Ok(Reply::Listed { items, .. })) => {
                let listed: HashMap<&str, &str> = items
                    .iter()
                    .map(|(k, s)| (k.as_str(), s.value.as_str()))
                    .collect();
                for key in &universe {
                    let kh = keys.entry(key.clone()).or_default();
                    let seen = listed.get(key.as_str()).map(|v| kh.writer(v));
                    kh.push(rec, RegOp::Read(seen), false);
                }
            }
            (Call::Read, Outcome::Ok(Reply::Found { object })) => {
                let kh = keys.entry(rec.key.clone()).or_default();
                let seen = object.as_ref().map(|s| kh.writer(&s.value));
                kh.push(rec, RegOp::Read(seen), false);
            }
            (Call::Read | Call::List, _) => {}
            (call, outcome) => {
                let Some(res) = write_result(outcome) else {
                    continue;
                };
                let kh = keys.entry(rec.key.clone()).or_default();
                let op = match call {
                    Call::Create { value } => RegOp::Create {
                        w: kh.writer(value),
                        res,
                    },
                    Call::Update { value, expected } => RegOp::Update {
                        w: kh.writer(value),
                        expect: kh.expect(&rec.key, *expected, truth),
                        res,
                    },
                    Call::Delete { expected } => RegOp::Delete {
                        expect: kh.expect(&rec.key, *expected, truth),
                        res,
                    },
                    Call::Read | Call::List => continue,
                };
                kh.push(rec, op, res == WriteResult::Unknown);
            }
        }
    }
    keys
}

fn describe(rec: &OpRecord) -> String {
    let ms = |t: u64| {
        if t == NEVER {
            "?".to_string()
        } else {
            format!("{:.3}", t as f64 / 1e9)
        }
    };
    let outcome = match &rec.outcome {
        Outcome::Ok(Reply::Written { rev }) => format!("ok rev {rev}"),
        Outcome::Ok(Reply::Found { object: Some(s) }) => format!("found {} @{}", s.value, s.rev),
        Outcome::Ok(Reply::Found { object: None }) => "found nothing".into(),
        Outcome::Ok(Reply::Listed { rev, items }) => format!("listed {} @{rev}", items.len()),
        Outcome::Fail { failure, .. } => format!("failed {failure:?}"),
        Outcome::Unknown { .. } => "unknown".into(),
    };
    format!(
        "op {} client {} on member {}: {:?} [{}s .. {}s] -> {}",
        rec.id,
        rec.client,
        rec.replica,
        rec.call,
        ms(rec.invoke),
        ms(rec.complete),
        outcome
    )
}

/// The kind of a non-linearizable history, named by the operation the search
/// could not place.
fn kind_of(rec: &OpRecord) -> &'static str {
    match rec.call {
        Call::Read => "stale-read",
        Call::List => "stale-list",
        _ => match rec.outcome {
            Outcome::Fail { .. } => "wrong-failure",
            _ => "lost-update",
        },
    }
}

pub fn check(h: &History, budget: Budget) -> Result {
    let truth = Truth::build(h);
    let mut out = Result::default();
    for (key, kh) in split_by_key(h, &truth) {
        out.ops_checked += kh.ops.len();
        let deadline = Instant::now() + budget.per_key;
        match wgl::check(&Register, &kh.ops, deadline) {
            Verdict::Linearizable => {}
            Verdict::Unknown => out.unknown_keys.push(key),
            Verdict::NotLinearizable { stuck, linearized } => {
                let rec = kh.from[stuck];
                let mut concurrent: Vec<String> = kh
                    .from
                    .iter()
                    .filter(|o| {
                        o.id != rec.id && o.invoke <= rec.complete && o.complete >= rec.invoke
                    })
                    .take(8)
                    .map(|o| describe(o))
                    .collect();
                if concurrent.is_empty() {
                    concurrent.push("none".into());
                }
                out.violations.push(Violation::new(
                    CHECKER,
                    kind_of(rec),
                    format!(
                        "key {key}: no linearization explains {} (after placing {linearized} of {} ops); concurrent: {}",
                        describe(rec),
                        kh.ops.len(),
                        concurrent.join("; ")
                    ),
                ));
            }
        }
    }
    out.violations.extend(revision_order(h));
    out
}

/// Acknowledged writes and lists, ordered by real time, must not go back in
/// revision: a write that completed before another began has the smaller
/// revision; a list started after a write was acknowledged is at least at it.
fn revision_order(h: &History) -> Vec<Violation> {
    let mut done: Vec<(u64, u64, &OpRecord)> = h
        .ops
        .iter()
        .filter_map(|o| o.written_rev().map(|r| (o.complete, r, o)))
        .collect();
    done.sort_by_key(|d| d.0);
    let mut later: Vec<(u64, u64, bool, &OpRecord)> = h
        .ops
        .iter()
        .filter_map(|o| match &o.outcome {
            Outcome::Ok(Reply::Written { rev }) => Some((o.invoke, *rev, true, o)),
            Outcome::Ok(Reply::Listed { rev, .. }) => Some((o.invoke, *rev, false, o)),
            _ => None,
        })
        .collect();
    later.sort_by_key(|l| l.0);
    let mut out = Vec::new();
    let mut i = 0;
    let mut max: Option<(u64, &OpRecord)> = None;
    for (invoke, rev, is_write, rec) in later {
        while i < done.len() && done[i].0 < invoke {
            if max.is_none_or(|(m, _)| done[i].1 > m) {
                max = Some((done[i].1, done[i].2));
            }
            i += 1;
        }
        let Some((m, before)) = max else { continue };
        let bad = if is_write { rev <= m } else { rev < m };
        if bad {
            out.push(Violation::new(
                CHECKER,
                if is_write {
                    "revision-order"
                } else {
                    "stale-list"
                },
                format!(
                    "{} started after {} was acknowledged, yet has an older revision",
                    describe(rec),
                    describe(before)
                ),
            ));
            if out.len() >= 20 {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::truth::tests::{create, fail, found, ok_write, op};
    use crate::history::Seen;
    use std::time::Duration;

    fn budget() -> Budget {
        Budget {
            per_key: Duration::from_secs(5),
        }
    }

    fn update(v: &str, expected: u64) -> Call {
        Call::Update {
            value: v.into(),
            expected: Some(expected),
        }
    }

    fn kinds(h: &History) -> Vec<&'static str> {
        check(h, budget())
            .violations
            .iter()
            .map(|v| v.kind)
            .collect()
    }

    fn unknown() -> Outcome {
        Outcome::Unknown {
            message: "timed out".into(),
        }
    }

    #[test]
    fn a_correct_history_passes() {
        let mut h = History::default();
        h.ops.push(op(1, "a", create("w1"), 0, 10, ok_write(3)));
        h.ops.push(op(
            2,
            "a",
            Call::Read,
            5,
            6,
            Outcome::Ok(Reply::Found { object: None }),
        ));
        h.ops.push(op(3, "a", update("w3", 3), 11, 20, ok_write(8)));
        h.ops
            .push(op(4, "a", update("w4", 3), 12, 21, fail(Failure::Conflict)));
        h.ops.push(op(5, "a", Call::Read, 22, 23, found("w3", 8)));
        h.ops.push(op(
            6,
            "a",
            Call::Delete { expected: Some(8) },
            24,
            25,
            ok_write(9),
        ));
        h.ops.push(op(
            7,
            "a",
            Call::Read,
            26,
            27,
            Outcome::Ok(Reply::Found { object: None }),
        ));
        let r = check(&h, budget());
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.ops_checked, 7);
    }

    #[test]
    fn a_stale_read_is_caught() {
        let mut h = History::default();
        h.ops.push(op(1, "a", create("w1"), 0, 1, ok_write(3)));
        h.ops.push(op(2, "a", update("w2", 3), 2, 3, ok_write(4)));
        h.ops.push(op(3, "a", Call::Read, 4, 5, found("w1", 3)));
        assert_eq!(kinds(&h), ["stale-read"]);
    }

    #[test]
    fn a_lost_update_is_caught() {
        // Two CAS updates from the same revision both succeed: one overwrote
        // the other without seeing it.
        let mut h = History::default();
        h.ops.push(op(1, "a", create("w1"), 0, 1, ok_write(3)));
        h.ops.push(op(2, "a", update("w2", 3), 2, 5, ok_write(4)));
        h.ops.push(op(3, "a", update("w3", 3), 2, 5, ok_write(6)));
        assert_eq!(kinds(&h), ["lost-update"]);
    }

    #[test]
    fn a_write_that_failed_but_took_effect_is_caught() {
        let mut h = History::default();
        h.ops
            .push(op(1, "a", create("w1"), 0, 1, fail(Failure::AlreadyExists)));
        assert_eq!(kinds(&h), ["wrong-failure"]);
        let mut h = History::default();
        h.ops
            .push(op(1, "a", create("w1"), 0, 1, fail(Failure::Other)));
        h.ops.push(op(2, "a", Call::Read, 2, 3, found("w1", 3)));
        assert_eq!(kinds(&h), ["stale-read"]);
    }

    #[test]
    fn unknown_writes_may_or_may_not_land() {
        let mut h = History::default();
        h.ops.push(op(1, "a", create("w1"), 0, 1, unknown()));
        h.ops.push(op(
            2,
            "a",
            Call::Read,
            2,
            3,
            Outcome::Ok(Reply::Found { object: None }),
        ));
        h.ops.push(op(3, "a", Call::Read, 4, 5, found("w1", 7)));
        assert!(kinds(&h).is_empty());
        // ... but a landed write does not vanish again.
        h.ops.push(op(
            4,
            "a",
            Call::Read,
            6,
            7,
            Outcome::Ok(Reply::Found { object: None }),
        ));
        assert_eq!(kinds(&h), ["stale-read"]);
    }

    #[test]
    fn a_stale_list_is_caught_per_key_and_by_revision() {
        let mut h = History::default();
        h.ops.push(op(1, "a", create("w1"), 0, 1, ok_write(3)));
        h.ops.push(op(
            2,
            "",
            Call::List,
            2,
            3,
            Outcome::Ok(Reply::Listed {
                rev: 2,
                items: vec![],
            }),
        ));
        let k = kinds(&h);
        assert!(
            k.contains(&"stale-read") || k.contains(&"stale-list"),
            "{k:?}"
        );
        assert!(k.contains(&"stale-list"), "{k:?}");
        let mut h = History::default();
        h.ops.push(op(1, "a", create("w1"), 0, 1, ok_write(3)));
        let items = vec![(
            "a".to_string(),
            Seen {
                value: "w1".into(),
                rev: 3,
            },
        )];
        h.ops.push(op(
            2,
            "",
            Call::List,
            2,
            3,
            Outcome::Ok(Reply::Listed { rev: 3, items }),
        ));
        assert!(kinds(&h).is_empty());
    }

    #[test]
    fn revisions_must_follow_real_time() {
        let mut h = History::default();
        h.ops.push(op(1, "a", create("w1"), 0, 1, ok_write(9)));
        h.ops.push(op(2, "b", create("w2"), 2, 3, ok_write(5)));
        assert_eq!(kinds(&h), ["revision-order"]);
    }
}
