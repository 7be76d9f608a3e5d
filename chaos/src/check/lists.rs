//! A list is one snapshot: at its revision R it must show exactly the objects
//! the store held at R (the rebuilt history replayed up to R), each at the
//! revision of its last write. Checked only where the watches saw every
//! revision from a known snapshot (the empty store, or a list a watcher
//! started over from) up to R; the others are counted as skipped.

use super::truth::Truth;
use super::Violation;
use crate::history::{History, Outcome, Reply};

const CHECKER: &str = "list";

#[derive(Debug, Default)]
pub struct Result {
    pub violations: Vec<Violation>,
    pub checked: usize,
    pub skipped: usize,
}

pub fn check(h: &History, truth: &Truth) -> Result {
    let mut r = Result::default();
    for op in &h.ops {
        let Outcome::Ok(Reply::Listed { rev, items }) = &op.outcome else {
            continue;
        };
        let Some(expected) = truth.state_at(*rev, op.id) else {
            r.skipped += 1;
            continue;
        };
        r.checked += 1;
        let got: std::collections::BTreeMap<&str, (&str, u64)> = items
            .iter()
            .map(|(k, s)| (k.as_str(), (s.value.as_str(), s.rev)))
            .collect();
        let mut wrong = Vec::new();
        for (key, (value, at)) in &expected {
            match got.get(key.as_str()) {
                None => wrong.push(format!("{key} missing (expected @{at})")),
                Some((v, r)) if *r != *at || value.as_deref().is_some_and(|x| x != *v) => {
                    wrong.push(format!("{key} is {v}@{r}, expected {value:?}@{at}"))
                }
                Some(_) => {}
            }
        }
        for (key, (v, at)) in &got {
            if !expected.contains_key(*key) {
                wrong.push(format!("{key} is {v}@{at}, expected absent"));
            }
        }
        if !wrong.is_empty() {
            r.violations.push(Violation::new(
                CHECKER,
                "snapshot",
                format!(
                    "list op {} on member {} at revision {rev}: {}",
                    op.id,
                    op.replica,
                    wrong.join("; ")
                ),
            ));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::truth::tests::{create, event, ok_write, op, session};
    use crate::history::{Call, EventKind, Seen};

    fn history(items: Vec<(String, Seen)>, rev: u64) -> History {
        let mut h = History::default();
        h.ops.push(op(1, "a", create("w1"), 0, 1, ok_write(5)));
        h.ops.push(op(2, "b", create("w2"), 0, 1, ok_write(6)));
        h.watches.push(session(
            1,
            0,
            false,
            vec![
                event(5, EventKind::Added, "a", "w1"),
                event(6, EventKind::Added, "b", "w2"),
            ],
        ));
        let listed = Outcome::Ok(Reply::Listed { rev, items });
        h.ops.push(op(3, "", Call::List, 2, 3, listed));
        h
    }

    fn seen(v: &str, rev: u64) -> Seen {
        Seen {
            value: v.into(),
            rev,
        }
    }

    #[test]
    fn a_list_must_be_the_state_at_its_revision() {
        let good = history(vec![("a".into(), seen("w1", 5))], 5);
        let t = Truth::build(&good);
        let r = check(&good, &t);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.checked, 1);

        // At 6, b must be there too: a torn snapshot.
        let torn = history(vec![("a".into(), seen("w1", 5))], 6);
        let t = Truth::build(&torn);
        let r = check(&torn, &t);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert_eq!(r.violations[0].kind, "snapshot");
    }

    #[test]
    fn lists_past_the_watched_history_are_skipped() {
        let h = history(vec![], 99);
        let t = Truth::build(&h);
        let r = check(&h, &t);
        assert_eq!((r.checked, r.skipped), (0, 1));
    }

    #[test]
    fn a_relist_snapshot_bridges_a_hole_in_the_watched_history() {
        use crate::check::truth::RELIST_CLIENT;
        // Watches saw up to 6, then every window was lost (a restart); a
        // watcher relisted at 10 and watched on from there.
        let mut h = history(vec![("a".into(), seen("w1", 5))], 5);
        let snapshot = vec![("a".to_string(), seen("w7", 9))];
        let mut relist = op(
            7,
            "",
            Call::List,
            4,
            5,
            Outcome::Ok(Reply::Listed {
                rev: 10,
                items: snapshot,
            }),
        );
        relist.client = RELIST_CLIENT;
        h.ops.push(relist);
        h.ops.push(op(
            8,
            "a",
            Call::Update {
                value: "w7".into(),
                expected: None,
            },
            3,
            4,
            ok_write(9),
        ));
        h.watches.push(session(
            2,
            10,
            false,
            vec![event(11, EventKind::Added, "c", "w8")],
        ));
        h.ops.push(op(9, "c", create("w8"), 4, 5, ok_write(11)));
        let at_11 = |items| Outcome::Ok(Reply::Listed { rev: 11, items });
        h.ops.push(op(
            10,
            "",
            Call::List,
            6,
            7,
            at_11(vec![
                ("a".into(), seen("w7", 9)),
                ("c".into(), seen("w8", 11)),
            ]),
        ));
        let t = Truth::build(&h);
        let r = check(&h, &t);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!((r.checked, r.skipped), (2, 1));
        // A list at 11 that lost c is caught against the snapshot.
        h.ops.push(op(
            11,
            "",
            Call::List,
            6,
            7,
            at_11(vec![("a".into(), seen("w7", 9))]),
        ));
        let t = Truth::build(&h);
        let r = check(&h, &t);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
    }
}
