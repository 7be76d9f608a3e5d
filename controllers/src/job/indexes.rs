//! Completion indexes of an Indexed Job: which pod holds which index, and
//! the `status.completedIndexes` form, ordered intervals such as `1,3-5,7`.

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::core::v1::Pod;

/// Annotation (and label) carrying a pod's index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// The pod's index, if it carries a valid one.
pub fn of(p: &Pod) -> Option<u32> {
    p.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX)?
        .parse()
        .ok()
}

/// The index if it is below `completions`.
pub fn valid(p: &Pod, completions: i32) -> Option<u32> {
    of(p).filter(|i| (*i as i64) < completions as i64)
}

/// A set of indexes kept as sorted, disjoint, non-adjacent intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intervals(Vec<(u32, u32)>);

impl Intervals {
    /// Reads `status.completedIndexes`, dropping what is at or above
    /// `completions` and parts that do not parse (as upstream does).
    pub fn parse(s: &str, completions: i32) -> Self {
        let limit = completions.max(0) as u32;
        let mut set = Vec::new();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (a.parse::<u32>(), b.parse::<u32>()),
                None => (part.parse(), part.parse()),
            };
            let (Ok(lo), Ok(hi)) = (lo, hi) else { continue };
            if lo >= limit {
                break;
            }
            set.push((lo, hi.min(limit.saturating_sub(1))));
        }
        Intervals::default().with_intervals(&set)
    }

    fn with_intervals(&self, more: &[(u32, u32)]) -> Self {
        let mut all: Vec<(u32, u32)> = self.0.iter().chain(more).copied().collect();
        all.sort_unstable();
        let mut out: Vec<(u32, u32)> = Vec::new();
        for (lo, hi) in all {
            match out.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => out.push((lo, hi)),
            }
        }
        Intervals(out)
    }

    /// These indexes and `more`.
    pub fn with(&self, more: impl IntoIterator<Item = u32>) -> Self {
        let more: Vec<(u32, u32)> = more.into_iter().map(|i| (i, i)).collect();
        self.with_intervals(&more)
    }

    /// These indexes and those of `other`.
    pub fn union(&self, other: &Intervals) -> Self {
        self.with_intervals(&other.0)
    }

    pub fn has(&self, i: u32) -> bool {
        self.0.iter().any(|(lo, hi)| *lo <= i && i <= *hi)
    }

    pub fn total(&self) -> usize {
        self.0.iter().map(|(lo, hi)| (hi - lo) as usize + 1).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many indexes are both here and in `other`.
    pub fn overlap(&self, other: &Intervals) -> usize {
        let (mut a, mut b, mut n) = (0, 0, 0);
        while let (Some(&(alo, ahi)), Some(&(blo, bhi))) = (self.0.get(a), other.0.get(b)) {
            let (lo, hi) = (alo.max(blo), ahi.min(bhi));
            if lo <= hi {
                n += (hi - lo) as usize + 1;
            }
            // Step past whichever interval ends first.
            if ahi <= bhi {
                a += 1;
            }
            if bhi <= ahi {
                b += 1;
            }
        }
        n
    }

    /// The first `count` indexes below `completions` that are neither in
    /// these intervals nor in `taken` (upstream firstPendingIndexes).
    pub fn first_missing(&self, taken: &BTreeSet<u32>, count: usize, completions: i32) -> Vec<u32> {
        let busy = self.with(taken.iter().copied());
        (0..completions.max(0) as u32)
            .filter(|i| !busy.has(*i))
            .take(count)
            .collect()
    }
}

impl fmt::Display for Intervals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, (lo, hi)) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            match hi - lo {
                0 => write!(f, "{lo}")?,
                1 => write!(f, "{lo},{hi}")?,
                _ => write!(f, "{lo}-{hi}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_merge_and_print_as_upstream() {
        let i = Intervals::parse("1,3-5,7", 10);
        assert_eq!(i.total(), 5);
        assert!(i.has(4) && !i.has(2) && !i.has(6));
        assert_eq!(i.with([2, 6, 9]).to_string(), "1-7,9");
        assert_eq!(Intervals::default().with([0, 1]).to_string(), "0,1");
        assert_eq!(Intervals::default().with([4, 0, 1, 2]).to_string(), "0-2,4");
        // Out of range parts are dropped, junk ignored.
        assert_eq!(Intervals::parse("0-3,x,8-12", 10).to_string(), "0-3,8,9");
        assert_eq!(Intervals::parse("5", 3).to_string(), "");
        assert_eq!(Intervals::parse("", 3).total(), 0);
        let a = Intervals::parse("0,4", 10);
        assert_eq!(a.union(&Intervals::parse("1-3,9", 10)).to_string(), "0-4,9");
    }

    #[test]
    fn overlaps_count_shared_indexes() {
        let a = Intervals::parse("0-4,7,9-12", 20);
        let b = Intervals::parse("3-8,10,12-15", 20);
        // 3,4 7 10 12
        assert_eq!(a.overlap(&b), 5);
        assert_eq!(b.overlap(&a), 5);
        assert_eq!(a.overlap(&Intervals::default()), 0);
        assert_eq!(a.overlap(&a), a.total());
    }

    #[test]
    fn pending_indexes_skip_done_and_running_ones() {
        let done = Intervals::parse("0,2", 6);
        let running = BTreeSet::from([3]);
        assert_eq!(done.first_missing(&running, 2, 6), [1, 4]);
        assert_eq!(done.first_missing(&running, 10, 6), [1, 4, 5]);
        assert_eq!(done.first_missing(&running, 0, 6), Vec::<u32>::new());
    }
}
