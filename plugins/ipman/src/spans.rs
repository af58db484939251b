//! Time spans of ownership, kept sorted for binary search.
//!
//! One address (or one port segment of a shared address) has a list of spans,
//! each `[since_ns, until_ns)` → workload. A valid state never has two spans
//! of one list overlap, so the span containing a time is found by one binary
//! search.

use flowattr_sdk::TimeRange;

/// One workload's hold on an address or port segment for a time range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub since_ns: u64,
    /// Exclusive; [`TimeRange::OPEN_END`] while still held.
    pub until_ns: u64,
    /// Index into the state's workload table.
    pub workload: u32,
    /// Index of the file entry this came from, for error messages.
    pub entry: u32,
}

impl Span {
    /// The span as a time range.
    pub fn range(&self) -> TimeRange {
        TimeRange::new(self.since_ns, self.until_ns)
    }
}

/// Sorts `spans` by start and checks no two overlap; on overlap returns the
/// entries of the first pair found.
pub fn sort_and_check(spans: &mut [Span]) -> Result<(), (u32, u32)> {
    spans.sort_unstable_by_key(|s| (s.since_ns, s.entry));
    match spans.windows(2).find(|w| w[0].until_ns > w[1].since_ns) {
        Some(w) => Err((w[0].entry.min(w[1].entry), w[0].entry.max(w[1].entry))),
        None => Ok(()),
    }
}

/// The span containing `time_ns` in a list sorted by [`sort_and_check`].
pub fn find(spans: &[Span], time_ns: u64) -> Option<&Span> {
    let i = spans.partition_point(|s| s.since_ns <= time_ns);
    spans[..i].last().filter(|s| time_ns < s.until_ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(since_ns: u64, until_ns: u64, entry: u32) -> Span {
        Span {
            since_ns,
            until_ns,
            workload: entry,
            entry,
        }
    }

    #[test]
    fn find_is_half_open_and_sees_gaps() {
        let mut spans = vec![span(20, 30, 1), span(10, 20, 0), span(40, u64::MAX, 2)];
        sort_and_check(&mut spans).unwrap();
        let at = |t| find(&spans, t).map(|s| s.entry);
        assert_eq!(at(9), None);
        assert_eq!(at(10), Some(0));
        assert_eq!(at(19), Some(0));
        assert_eq!(at(20), Some(1));
        assert_eq!(at(30), None);
        assert_eq!(at(39), None);
        assert_eq!(at(40), Some(2));
        assert_eq!(at(u64::MAX - 1), Some(2));
        assert_eq!(find(&[], 5), None);
    }

    #[test]
    fn overlaps_are_found_with_both_entries() {
        let mut spans = vec![span(10, 20, 0), span(30, 40, 1), span(19, 25, 2)];
        assert_eq!(sort_and_check(&mut spans), Err((0, 2)));
        let mut open = vec![span(10, u64::MAX, 0), span(50, 60, 1)];
        assert_eq!(sort_and_check(&mut open), Err((0, 1)));
        let mut same_start = vec![span(10, 11, 3), span(10, 11, 4)];
        assert_eq!(sort_and_check(&mut same_start), Err((3, 4)));
    }
}
