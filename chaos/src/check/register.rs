//! The sequential model of one object under the workload's operations: absent,
//! or holding the value of exactly one write. Values are unique per write, so
//! the state is just which write made the object ([`WriterId`]).
//!
//! A compare-and-set names the resourceVersion it expects; the checker turns
//! that revision into the write that produced it (revisions are unique), so a
//! precondition is "the object is still what write `y` made".

use super::wgl::Model;

/// Index of a write (of its unique value) in the checker's table.
pub type WriterId = u32;

/// What a conditional write expects the object to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Unconditional.
    Any,
    /// The object as write `y` made it.
    Writer(WriterId),
    /// A revision no observed write has: it matches nothing.
    Unmatched,
}

/// How a write ended, as far as the model cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteResult {
    Ok,
    /// NotFound: the object was absent.
    Absent,
    /// AlreadyExists: the object was present.
    Exists,
    /// Conflict: the precondition did not hold.
    Mismatch,
    /// Timed out: took effect or not.
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegOp {
    Create {
        w: WriterId,
        res: WriteResult,
    },
    Update {
        w: WriterId,
        expect: Expect,
        res: WriteResult,
    },
    Delete {
        expect: Expect,
        res: WriteResult,
    },
    /// Saw the object as write `w` made it, or (None) absent.
    Read(Option<WriterId>),
}

pub struct Register;

fn matches(state: Option<WriterId>, expect: Expect) -> bool {
    match (state, expect) {
        (None, _) => false,
        (Some(_), Expect::Any) => true,
        (Some(x), Expect::Writer(y)) => x == y,
        (Some(_), Expect::Unmatched) => false,
    }
}

/// The state after a write whose precondition is `holds`, and that would set
/// `after` when it takes effect.
fn write(
    s: Option<WriterId>,
    holds: bool,
    after: Option<WriterId>,
    res: WriteResult,
) -> Option<Option<WriterId>> {
    match res {
        WriteResult::Ok => holds.then_some(after),
        WriteResult::Unknown => Some(if holds { after } else { s }),
        WriteResult::Absent => s.is_none().then_some(s),
        WriteResult::Exists => s.is_some().then_some(s),
        WriteResult::Mismatch => (s.is_some() && !holds).then_some(s),
    }
}

impl Model for Register {
    type State = Option<WriterId>;
    type Op = RegOp;

    fn init(&self) -> Self::State {
        None
    }

    fn step(&self, s: &Self::State, op: &RegOp) -> Option<Self::State> {
        let s = *s;
        match *op {
            RegOp::Create { w, res } => write(s, s.is_none(), Some(w), res),
            RegOp::Update { w, expect, res } => write(s, matches(s, expect), Some(w), res),
            RegOp::Delete { expect, res } => write(s, matches(s, expect), None, res),
            RegOp::Read(seen) => (seen == s).then_some(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_needs_the_expected_writer() {
        let m = Register;
        let upd = |res| RegOp::Update {
            w: 2,
            expect: Expect::Writer(1),
            res,
        };
        assert_eq!(m.step(&Some(1), &upd(WriteResult::Ok)), Some(Some(2)));
        assert_eq!(m.step(&Some(3), &upd(WriteResult::Ok)), None);
        assert_eq!(m.step(&Some(3), &upd(WriteResult::Mismatch)), Some(Some(3)));
        assert_eq!(m.step(&Some(1), &upd(WriteResult::Mismatch)), None);
        assert_eq!(m.step(&None, &upd(WriteResult::Absent)), Some(None));
        assert_eq!(m.step(&Some(3), &upd(WriteResult::Unknown)), Some(Some(3)));
        let create = RegOp::Create {
            w: 4,
            res: WriteResult::Exists,
        };
        assert_eq!(m.step(&None, &create), None);
    }
}
