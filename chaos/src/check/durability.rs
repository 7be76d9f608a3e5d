//! Durability: after the cluster healed, every acknowledged write is still
//! there on every replica: the object holds that write, or a later one, or was
//! deleted later. And replicas that reached the same revision hold the same
//! objects as the rebuilt history says they should.

use std::collections::BTreeMap;

use super::truth::Truth;
use super::Violation;
use crate::history::{Call, EventKind, History};

const CHECKER: &str = "durability";

pub fn check(h: &History, truth: &Truth) -> Vec<Violation> {
    let mut out = Vec::new();
    let acked: Vec<(&str, u64, &Call)> = h
        .ops
        .iter()
        .filter_map(|o| o.written_rev().map(|r| (o.key.as_str(), r, &o.call)))
        .collect();
    for f in &h.finals {
        let items: BTreeMap<&str, u64> = f.items.iter().map(|(k, s)| (k.as_str(), s.rev)).collect();
        let mut lost = Vec::new();
        for (key, rev, call) in &acked {
            if *rev > f.rev {
                lost.push(format!(
                    "{key}@{rev} is past the replica's revision {}",
                    f.rev
                ));
                continue;
            }
            let deleted_later = || {
                truth
                    .changes
                    .range(rev + 1..f.rev.max(*rev) + 1)
                    .any(|(_, cs)| {
                        cs.iter()
                            .any(|c| c.key == *key && c.kind == EventKind::Deleted)
                    })
            };
            let ok = match (items.get(key), call) {
                (Some(at), _) => *at >= *rev,
                (None, Call::Delete { .. }) => true,
                (None, _) => deleted_later(),
            };
            if !ok {
                lost.push(format!("{key}@{rev} ({call:?})"));
            }
        }
        if !lost.is_empty() {
            let n = lost.len();
            lost.truncate(5);
            out.push(Violation::new(
                CHECKER,
                "lost-write",
                format!(
                    "member {} at revision {} lacks {n} acknowledged write(s): {}",
                    f.replica,
                    f.rev,
                    lost.join("; ")
                ),
            ));
        }
        if let Some(expected) = truth.state_at(f.rev, 0) {
            let want: BTreeMap<&str, u64> = expected
                .iter()
                .map(|(k, (_, r))| (k.as_str(), *r))
                .collect();
            if want != items {
                out.push(Violation::new(
                    CHECKER,
                    "diverged",
                    format!(
                        "member {} at revision {} holds {items:?}; the history says {want:?}",
                        f.replica, f.rev
                    ),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::truth::tests::{create, ok_write, op};
    use crate::history::{FinalState, Seen};

    fn finals(items: Vec<(&str, &str, u64)>, rev: u64) -> FinalState {
        FinalState {
            replica: 2,
            rev,
            items: items
                .into_iter()
                .map(|(k, v, r)| {
                    (
                        k.to_string(),
                        Seen {
                            value: v.into(),
                            rev: r,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn an_acknowledged_write_must_survive() {
        let mut h = History::default();
        h.ops.push(op(1, "a", create("w1"), 0, 1, ok_write(5)));
        h.ops.push(op(2, "b", create("w2"), 0, 1, ok_write(6)));
        h.finals
            .push(finals(vec![("a", "w1", 5), ("b", "w2", 6)], 9));
        let t = Truth::build(&h);
        assert!(check(&h, &t).is_empty());

        let mut lost = h.clone();
        lost.finals[0] = finals(vec![("a", "w1", 5)], 9);
        let t = Truth::build(&lost);
        let v = check(&lost, &t);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].kind, "lost-write");

        let mut behind = h.clone();
        behind.finals[0] = finals(vec![("a", "w1", 5)], 5);
        let t = Truth::build(&behind);
        assert_eq!(check(&behind, &t)[0].kind, "lost-write");
    }

    #[test]
    fn a_replica_that_differs_from_the_history_is_caught() {
        use crate::check::truth::tests::{event, session};
        let mut h = History::default();
        h.ops.push(op(1, "a", create("w1"), 0, 1, ok_write(5)));
        h.watches.push(session(
            1,
            0,
            false,
            vec![
                event(5, EventKind::Added, "a", "w1"),
                event(7, EventKind::Added, "c", "w9"),
                crate::history::WatchItem::Bookmark { rev: 8, at: 8 },
            ],
        ));
        h.finals.push(finals(vec![("a", "w1", 5)], 8));
        let t = Truth::build(&h);
        let kinds: Vec<&str> = check(&h, &t).iter().map(|v| v.kind).collect();
        assert_eq!(kinds, ["diverged"]);
    }
}
