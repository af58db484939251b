//! Half-open time ranges in wall-clock nanoseconds.

use serde::{Deserialize, Serialize};

/// A half-open range `[start_ns, end_ns)` of Unix-epoch nanoseconds.
///
/// `end_ns == TimeRange::OPEN_END` means "until further notice".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimeRange {
    pub start_ns: u64,
    pub end_ns: u64,
}

impl TimeRange {
    /// The `end_ns` of a range with no known end.
    pub const OPEN_END: u64 = u64::MAX;

    /// A range from `start_ns` up to (not including) `end_ns`.
    pub const fn new(start_ns: u64, end_ns: u64) -> Self {
        Self { start_ns, end_ns }
    }

    /// A range from `start_ns` with no known end.
    pub const fn since(start_ns: u64) -> Self {
        Self {
            start_ns,
            end_ns: Self::OPEN_END,
        }
    }

    /// Whether `t_ns` lies inside the range.
    pub const fn contains(&self, t_ns: u64) -> bool {
        self.start_ns <= t_ns && t_ns < self.end_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_is_half_open() {
        let r = TimeRange::new(10, 20);
        assert!(!r.contains(9));
        assert!(r.contains(10));
        assert!(r.contains(19));
        assert!(!r.contains(20));
        assert!(TimeRange::since(5).contains(u64::MAX - 1));
    }
}
