//! Watch guarantees, as etcd's robustness tests state them, checked per watch
//! session against the rebuilt store history ([`Truth`]):
//!
//! - ordered: revisions never go back, and every event is after the start;
//! - unique: no (revision, key) is delivered twice;
//! - atomic: a session that saw one change of a revision saw all of them;
//! - reliable: every change between the start and the last revision the
//!   session vouched for (its last event or bookmark) was delivered;
//! - resumable: the same, for a session resumed from an earlier one's last
//!   revision (reported separately, since it is a different code path);
//! - bookmarks never go backwards, and no event arrives at or below a
//!   bookmark already sent.

use std::collections::HashSet;

use super::truth::Truth;
use super::Violation;
use crate::history::{History, WatchItem, WatchSession};

const CHECKER: &str = "watch";
/// Per session and kind, report this many and count the rest.
const MAX_PER_KIND: usize = 3;

#[derive(Debug, Default)]
pub struct Result {
    pub violations: Vec<Violation>,
    pub events_checked: usize,
}

struct Findings<'a> {
    session: &'a WatchSession,
    out: Vec<Violation>,
    counts: std::collections::HashMap<&'static str, usize>,
}

impl Findings<'_> {
    fn report(&mut self, kind: &'static str, detail: String) {
        let n = self.counts.entry(kind).or_default();
        *n += 1;
        if *n <= MAX_PER_KIND {
            let s = self.session;
            self.out.push(Violation::new(
                CHECKER,
                kind,
                format!(
                    "watch session {} (watcher {}, member {}, after {}{}): {detail}",
                    s.id,
                    s.watcher,
                    s.replica,
                    s.after,
                    if s.resumed { ", resumed" } else { "" }
                ),
            ));
        }
    }

    fn finish(mut self) -> Vec<Violation> {
        for (kind, n) in self.counts {
            if n > MAX_PER_KIND {
                self.out.push(Violation::new(
                    CHECKER,
                    kind,
                    format!(
                        "watch session {}: {} more of these",
                        self.session.id,
                        n - MAX_PER_KIND
                    ),
                ));
            }
        }
        self.out
    }
}

fn check_session(s: &WatchSession, truth: &Truth) -> Vec<Violation> {
    let mut f = Findings {
        session: s,
        out: Vec::new(),
        counts: Default::default(),
    };
    let mut last_event = s.after;
    let mut last_bookmark = 0u64;
    let mut seen: HashSet<(u64, &str)> = HashSet::new();
    for item in &s.items {
        match item {
            WatchItem::Event { rev, key, .. } => {
                if *rev <= s.after {
                    f.report("ordered", format!("event at {rev} is not after the start"));
                } else if *rev < last_event {
                    f.report(
                        "ordered",
                        format!("event at {rev} came after one at {last_event}"),
                    );
                }
                if *rev <= last_bookmark {
                    f.report(
                        "ordered",
                        format!("event at {rev} came after a bookmark at {last_bookmark}"),
                    );
                }
                if !seen.insert((*rev, key.as_str())) {
                    f.report("unique", format!("event {key}@{rev} delivered twice"));
                }
                last_event = last_event.max(*rev);
            }
            WatchItem::Bookmark { rev, .. } => {
                if *rev < last_bookmark || *rev < last_event {
                    f.report(
                        "bookmark",
                        format!(
                            "bookmark at {rev} after bookmark {last_bookmark} / event {last_event}"
                        ),
                    );
                }
                last_bookmark = last_bookmark.max(*rev);
            }
        }
    }
    let seen_revs: HashSet<u64> = seen.iter().map(|(r, _)| *r).collect();
    let to = s.covered_to();
    for (rev, changes) in truth.changes.range(s.after + 1..to.max(s.after) + 1) {
        let missing: Vec<&str> = changes
            .iter()
            .filter(|c| !seen.contains(&(*rev, c.key.as_str())))
            .map(|c| c.key.as_str())
            .collect();
        if missing.is_empty() {
            continue;
        }
        let what = format!(
            "missed {} at revision {rev} (it vouched for everything up to {to})",
            missing.join(", ")
        );
        if seen_revs.contains(rev) {
            f.report("atomic", what);
        } else if s.resumed {
            f.report("resumable", what);
        } else {
            f.report("reliable", what);
        }
    }
    f.finish()
}

pub fn check(h: &History, truth: &Truth) -> Result {
    let mut r = Result::default();
    for s in &h.watches {
        r.events_checked += s
            .items
            .iter()
            .filter(|i| matches!(i, WatchItem::Event { .. }))
            .count();
        r.violations.extend(check_session(s, truth));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::truth::tests::{create, event, ok_write, op, session};
    use crate::history::{Call, EventKind};

    /// Three writes (a@5, b@6, a@8) and a watch that saw them all.
    fn base() -> History {
        let mut h = History::default();
        h.ops.push(op(1, "a", create("w1"), 0, 1, ok_write(5)));
        h.ops.push(op(2, "b", create("w2"), 0, 1, ok_write(6)));
        let upd = Call::Update {
            value: "w3".into(),
            expected: Some(5),
        };
        h.ops.push(op(3, "a", upd, 2, 3, ok_write(8)));
        h
    }

    fn all_events() -> Vec<WatchItem> {
        vec![
            event(5, EventKind::Added, "a", "w1"),
            event(6, EventKind::Added, "b", "w2"),
            event(8, EventKind::Modified, "a", "w3"),
        ]
    }

    fn kinds(h: &History) -> Vec<&'static str> {
        let truth = Truth::build(h);
        let mut k: Vec<&str> = truth.anomalies.iter().map(|v| v.kind).collect();
        k.extend(check(h, &truth).violations.iter().map(|v| v.kind));
        k
    }

    #[test]
    fn a_complete_watch_passes() {
        let mut h = base();
        h.watches.push(session(1, 0, false, all_events()));
        let mut resumed = vec![WatchItem::Bookmark { rev: 9, at: 9 }];
        resumed.insert(0, event(8, EventKind::Modified, "a", "w3"));
        h.watches.push(session(2, 6, true, resumed));
        assert!(kinds(&h).is_empty(), "{:?}", kinds(&h));
    }

    #[test]
    fn out_of_order_events_are_caught() {
        let mut h = base();
        let mut ev = all_events();
        ev.swap(1, 2);
        h.watches.push(session(1, 0, false, ev));
        assert_eq!(kinds(&h), ["ordered"]);
    }

    #[test]
    fn a_duplicate_event_is_caught() {
        let mut h = base();
        let mut ev = all_events();
        ev.push(event(8, EventKind::Modified, "a", "w3"));
        h.watches.push(session(1, 0, false, ev));
        assert_eq!(kinds(&h), ["unique"]);
    }

    #[test]
    fn a_gap_is_caught_even_when_every_watch_missed_it() {
        // No watcher saw b@6, but the write was acknowledged at 6.
        let mut h = base();
        let mut ev = all_events();
        ev.remove(1);
        h.watches.push(session(1, 0, false, ev));
        assert_eq!(kinds(&h), ["reliable"]);
    }

    #[test]
    fn a_gap_after_resuming_is_caught() {
        let mut h = base();
        h.watches.push(session(1, 0, false, all_events()));
        h.watches.push(session(
            2,
            5,
            true,
            vec![event(8, EventKind::Modified, "a", "w3")],
        ));
        assert_eq!(kinds(&h), ["resumable"]);
    }

    #[test]
    fn a_split_revision_is_caught() {
        // An atomic batch wrote a and b at 5; one watch saw only a.
        let mut h = History::default();
        h.watches.push(session(
            1,
            0,
            false,
            vec![
                event(5, EventKind::Added, "a", "w1"),
                event(5, EventKind::Added, "b", "w2"),
            ],
        ));
        h.watches.push(session(
            2,
            0,
            false,
            vec![event(5, EventKind::Added, "a", "w1")],
        ));
        h.ops.push(op(1, "a", create("w1"), 0, NEVER_T, unknown()));
        h.ops.push(op(2, "b", create("w2"), 0, NEVER_T, unknown()));
        assert_eq!(kinds(&h), ["atomic"]);
    }

    const NEVER_T: u64 = 10;

    fn unknown() -> crate::history::Outcome {
        crate::history::Outcome::Unknown {
            message: String::new(),
        }
    }

    #[test]
    fn a_bookmark_going_back_is_caught() {
        let mut h = base();
        let mut ev = all_events();
        ev.push(WatchItem::Bookmark { rev: 7, at: 9 });
        h.watches.push(session(1, 0, false, ev));
        assert_eq!(kinds(&h), ["bookmark"]);
        // An event at or below a bookmark already sent breaks order too.
        let mut h = base();
        let ev = vec![
            event(5, EventKind::Added, "a", "w1"),
            WatchItem::Bookmark { rev: 7, at: 9 },
            event(6, EventKind::Added, "b", "w2"),
            event(8, EventKind::Modified, "a", "w3"),
        ];
        h.watches.push(session(1, 0, false, ev));
        assert_eq!(kinds(&h), ["ordered"]);
    }
}
