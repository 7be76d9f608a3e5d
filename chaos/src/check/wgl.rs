//! The Wing–Gong linearizability search with Lowe's memoization, as Porcupine
//! and Knossos run it, over any sequential model.
//!
//! The history is a list of call and return entries ordered by time. The
//! search walks the list: at a call it tries to linearize that operation next
//! (the model must accept it from the current state, and the pair of
//! (linearized set, state) must be new), lifting the call and its return out of
//! the list; at a return whose call is still in the list it backtracks. The
//! history is linearizable when the list empties. An operation whose outcome is
//! unknown returns at [`NEVER`]: it may be linearized anywhere after its call,
//! including after everything else, which is how "it never happened" is
//! expressed.
//!
//! What must stay true: the cache makes the search finish in time polynomial in
//! the number of distinct states for most real histories, but it is still
//! exponential in the worst case, so the caller's deadline is checked and
//! answered with `Unknown` rather than a hang.

use std::collections::HashSet;
use std::hash::Hash;
use std::time::Instant;

use crate::history::{Time, NEVER};

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + Hash;
    type Op;
    fn init(&self) -> Self::State;
    /// The state after `op`, or None when `op` cannot happen in `state`.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;
}

/// One operation of a single-object history.
#[derive(Debug, Clone)]
pub struct Operation<O> {
    pub op: O,
    pub call: Time,
    /// [`NEVER`] when the outcome is unknown.
    pub ret: Time,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// No order explains the history. `stuck` is the operation (an index into
    /// the input) whose return the deepest search could not get past, after
    /// linearizing `linearized` of the operations.
    NotLinearizable {
        stuck: usize,
        linearized: usize,
    },
    /// The search ran out of time.
    Unknown,
}

#[derive(Clone, Copy)]
struct Entry {
    op: usize,
    is_call: bool,
    /// For a call: the index of its return entry.
    partner: usize,
}

/// A doubly linked list over entry indices, with a sentinel at `n`.
struct List {
    prev: Vec<usize>,
    next: Vec<usize>,
    head: usize,
}

impl List {
    fn new(n: usize) -> Self {
        // Slots 0..n are entries; n is the sentinel; n is also "end".
        let mut prev = vec![0; n + 1];
        let mut next = vec![0; n + 1];
        for i in 0..=n {
            next[i] = if i == n { 0 } else { i + 1 };
            prev[i] = if i == 0 { n } else { i - 1 };
        }
        if n == 0 {
            next[0] = 0;
            prev[0] = 0;
        } else {
            next[n - 1] = n;
            prev[n] = n - 1;
            next[n] = 0;
        }
        Self {
            prev,
            next,
            head: n,
        }
    }

    fn first(&self) -> usize {
        self.next[self.head]
    }

    fn is_empty(&self) -> bool {
        self.first() == self.head
    }

    fn unlink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = n;
        self.prev[n] = p;
    }

    /// Puts `i` back where it was (its own prev/next are still intact, and
    /// entries are restored in the reverse order they were removed).
    fn relink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = i;
        self.prev[n] = i;
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// Checks one history (of one object) against `model`.
pub fn check<M: Model>(model: &M, ops: &[Operation<M::Op>], deadline: Instant) -> Verdict {
    let n = ops.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    // Entries ordered by time; at equal times calls first, which treats the
    // two operations as concurrent (the permissive reading of a tie).
    let mut order: Vec<(Time, bool, usize)> = Vec::with_capacity(2 * n);
    for (i, o) in ops.iter().enumerate() {
        let ret = if o.ret == NEVER {
            NEVER
        } else {
            o.ret.max(o.call)
        };
        order.push((o.call, false, i));
        order.push((ret, true, i));
    }
    order.sort_by_key(|&(t, is_ret, i)| (t, is_ret, i));
    let mut entries = vec![
        Entry {
            op: 0,
            is_call: false,
            partner: 0
        };
        2 * n
    ];
    let mut ret_slot = vec![0; n];
    for (slot, &(_, is_ret, op)) in order.iter().enumerate() {
        entries[slot] = Entry {
            op,
            is_call: !is_ret,
            partner: 0,
        };
        if is_ret {
            ret_slot[op] = slot;
        }
    }
    for e in entries.iter_mut() {
        if e.is_call {
            e.partner = ret_slot[e.op];
        }
    }

    let mut list = List::new(2 * n);
    let mut linearized = Bits::new(n);
    let mut cache: HashSet<(Bits, M::State)> = HashSet::new();
    let mut state = model.init();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut cursor = list.first();
    let mut deepest = (0usize, 0usize); // (depth, stuck op)
    let mut steps: u64 = 0;

    while !list.is_empty() {
        steps += 1;
        if steps.is_multiple_of(4096) && Instant::now() > deadline {
            return Verdict::Unknown;
        }
        let entry = entries[cursor];
        if entry.is_call {
            let next = model.step(&state, &ops[entry.op].op).and_then(|s| {
                let mut bits = linearized.clone();
                bits.set(entry.op);
                cache.insert((bits, s.clone())).then_some(s)
            });
            match next {
                Some(s) => {
                    stack.push((cursor, std::mem::replace(&mut state, s)));
                    linearized.set(entry.op);
                    list.unlink(cursor);
                    list.unlink(entry.partner);
                    cursor = list.first();
                }
                None => cursor = list.next[cursor],
            }
        } else {
            if stack.len() >= deepest.0 {
                deepest = (stack.len(), entry.op);
            }
            let Some((call, prev)) = stack.pop() else {
                return Verdict::NotLinearizable {
                    stuck: deepest.1,
                    linearized: deepest.0,
                };
            };
            state = prev;
            let e = entries[call];
            linearized.clear(e.op);
            list.relink(e.partner);
            list.relink(call);
            cursor = list.next[call];
        }
    }
    Verdict::Linearizable
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A plain read/write register, the textbook model.
    struct Register;

    #[derive(Debug, Clone)]
    enum RegOp {
        Write(u32),
        Read(u32),
    }

    impl Model for Register {
        type State = u32;
        type Op = RegOp;
        fn init(&self) -> u32 {
            0
        }
        fn step(&self, s: &u32, op: &RegOp) -> Option<u32> {
            match op {
                RegOp::Write(v) => Some(*v),
                RegOp::Read(v) => (v == s).then_some(*s),
            }
        }
    }

    fn op(op: RegOp, call: Time, ret: Time) -> Operation<RegOp> {
        Operation { op, call, ret }
    }

    fn verdict(ops: &[Operation<RegOp>]) -> Verdict {
        check(&Register, ops, Instant::now() + Duration::from_secs(5))
    }

    #[test]
    fn concurrent_ops_may_be_reordered() {
        // w1 [0,10], r=1 [2,3] happens inside w1; w2 [5,20]; read 1 at [12,14]
        // is fine because w2 may land after it.
        let h = [
            op(RegOp::Write(1), 0, 10),
            op(RegOp::Read(1), 2, 3),
            op(RegOp::Write(2), 5, 20),
            op(RegOp::Read(1), 12, 14),
            op(RegOp::Read(2), 21, 22),
        ];
        assert_eq!(verdict(&h), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_is_caught() {
        // w1 finishes, then w2 finishes, then a read returns 1.
        let h = [
            op(RegOp::Write(1), 0, 1),
            op(RegOp::Write(2), 2, 3),
            op(RegOp::Read(1), 4, 5),
        ];
        assert!(matches!(
            verdict(&h),
            Verdict::NotLinearizable { stuck: 2, .. }
        ));
    }

    #[test]
    fn an_unknown_write_may_land_late_or_never() {
        let late = [
            op(RegOp::Write(1), 0, NEVER),
            op(RegOp::Read(0), 5, 6),
            op(RegOp::Read(1), 7, 8),
        ];
        assert_eq!(verdict(&late), Verdict::Linearizable);
        let never = [op(RegOp::Write(1), 0, NEVER), op(RegOp::Read(0), 5, 6)];
        assert_eq!(verdict(&never), Verdict::Linearizable);
        // But once seen it cannot be unseen.
        let flicker = [
            op(RegOp::Write(1), 0, NEVER),
            op(RegOp::Read(1), 5, 6),
            op(RegOp::Read(0), 7, 8),
        ];
        assert!(matches!(verdict(&flicker), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn a_read_of_a_value_before_its_write_is_caught() {
        let h = [op(RegOp::Read(1), 0, 1), op(RegOp::Write(1), 2, 3)];
        assert!(matches!(verdict(&h), Verdict::NotLinearizable { .. }));
    }

    #[test]
    fn the_deadline_answers_unknown() {
        // Forty concurrent unknown writes and a read that nothing explains: the
        // search would try every subset; the deadline cuts it short.
        let mut h = Vec::new();
        for i in 0..40 {
            h.push(op(RegOp::Write(i + 1), 0, NEVER));
        }
        h.push(op(RegOp::Read(999), 1, 2));
        let started = Instant::now();
        let v = check(&Register, &h, started + Duration::from_millis(100));
        assert_eq!(v, Verdict::Unknown);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
