//! One address's ownership ranges, and the two questions asked of them:
//! "take this claim" and "who owned the address at `t`".
//!
//! A workload's ranges on one address never overlap and are always more
//! than the merge gap apart: a claim joins every range of its workload that
//! it overlaps or comes within the merge gap of. Ranges of *different*
//! workloads may overlap: that overlap is the contested period, and nothing
//! inside it is attributed. Keeping each workload's ranges whole (instead of
//! cutting the contested part out into a "conflict" range) makes the table a
//! function of the set of claims, whatever order they arrive in: a late
//! claim that bridges a gap meets the same ranges it would have met on time.

use flowattr_model::{TimeRange, UnattributedReason};

/// One range: `[start_ns, end_ns)` owned by workload `owner`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Range {
    pub start_ns: u64,
    pub end_ns: u64,
    /// The workload's number in the interner.
    pub owner: u32,
    /// Claimant number (low 31 bits) and [`Range::DIRTY`].
    pub meta: u32,
}

impl Range {
    /// Changed by a local heartbeat since the last drain.
    pub const DIRTY: u32 = 1 << 31;

    pub fn claimant(&self) -> u32 {
        self.meta & !Self::DIRTY
    }

    pub fn is_dirty(&self) -> bool {
        self.meta & Self::DIRTY != 0
    }

    /// Whether the range lies within `gap` of `[start, end)` (overlapping
    /// or touching is a gap of zero).
    fn near(&self, start: u64, end: u64, gap: u64) -> bool {
        self.start_ns <= end.saturating_add(gap) && start <= self.end_ns.saturating_add(gap)
    }

    fn overlap(&self, other: &Range) -> u64 {
        self.end_ns
            .min(other.end_ns)
            .saturating_sub(self.start_ns.max(other.start_ns))
    }

    /// Whether the range holds a moment within `skew` of `t`.
    fn within(&self, t: u64, skew: u64) -> bool {
        self.start_ns <= t.saturating_add(skew) && self.end_ns.saturating_add(skew) > t
    }
}

/// What a claim did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Claimed {
    /// A range of the workload already held the claim: nothing changed.
    Covered,
    /// The claim's range replaced `merged` ranges of its workload (0: a new
    /// range). `contested` is set when the workload's ranges now overlap
    /// other workloads' ranges for longer than before.
    Changed { merged: usize, contested: bool },
}

/// The ranges of one address, sorted by start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct IpRanges {
    pub ranges: Vec<Range>,
    /// Ranges that ended before this were dropped (expired or evicted): what
    /// they said about earlier times is forgotten, so no answer before this
    /// is trusted.
    pub forgotten_until_ns: u64,
}

impl IpRanges {
    /// Takes the claim that `claim.owner` owned the address over
    /// `[claim.start_ns, claim.end_ns)`, joining the owner's ranges within
    /// `merge_gap` of it.
    pub fn claim(&mut self, claim: Range, merge_gap: u64) -> Claimed {
        let (start, end, owner) = (claim.start_ns, claim.end_ns, claim.owner);
        let joins = |r: &Range| r.owner == owner && r.near(start, end, merge_gap);
        let mut hull = claim;
        let mut merged = 0;
        for r in self.ranges.iter().filter(|r| joins(r)) {
            if r.start_ns <= start && end <= r.end_ns {
                // Any other range of the owner is more than the gap away
                // from `r`, so from the claim too: nothing else would join.
                return Claimed::Covered;
            }
            if r.start_ns < hull.start_ns {
                hull.meta = (hull.meta & Range::DIRTY) | r.claimant();
            }
            hull.meta |= r.meta & Range::DIRTY;
            hull.start_ns = hull.start_ns.min(r.start_ns);
            hull.end_ns = hull.end_ns.max(r.end_ns);
            merged += 1;
        }
        let others = |r: &&Range| r.owner != owner;
        let before: u64 = self
            .ranges
            .iter()
            .filter(|r| joins(r))
            .flat_map(|mine| self.ranges.iter().filter(others).map(|o| mine.overlap(o)))
            .sum();
        let after: u64 = self
            .ranges
            .iter()
            .filter(others)
            .map(|o| hull.overlap(o))
            .sum();
        if merged > 0 {
            self.ranges.retain(|r| !joins(r));
        }
        let at = self.ranges.partition_point(|r| r.start_ns <= hull.start_ns);
        if self.ranges.len() == self.ranges.capacity() {
            // Addresses hold few ranges: grow one at a time, not doubling.
            self.ranges.reserve_exact(1);
        }
        self.ranges.insert(at, hull);
        Claimed::Changed {
            merged,
            contested: after > before,
        }
    }

    /// Who owned the address at `t`, answered only when that is certain.
    ///
    /// Ranges that ended before `horizon` count as already forgotten;
    /// `skew` is how far apart two clocks may be. Returns the owner and the
    /// times around `t` with the same answer.
    pub fn lookup(
        &self,
        t: u64,
        horizon: u64,
        skew: u64,
    ) -> Result<(u32, TimeRange), UnattributedReason> {
        let mut forgotten = self.forgotten_until_ns;
        let mut cover: Option<&Range> = None;
        let (mut contested, mut before, mut after) = (false, false, false);
        for r in &self.ranges {
            if r.end_ns < horizon {
                forgotten = forgotten.max(r.end_ns);
                continue;
            }
            if r.start_ns > t {
                after = true;
            } else if r.end_ns <= t {
                before = true;
            } else {
                match cover {
                    None => cover = Some(r),
                    Some(c) => contested |= c.owner != r.owner,
                }
            }
        }
        if contested {
            return Err(UnattributedReason::Conflict);
        }
        if t < forgotten {
            return Err(UnattributedReason::Expired);
        }
        let live = self.ranges.iter().filter(|r| r.end_ns >= horizon);
        let Some(c) = cover else {
            return Err(if live.clone().any(|r| r.within(t, skew)) {
                // Just outside a range: the clocks may disagree by that much.
                UnattributedReason::ClockSkew
            } else if before && after {
                UnattributedReason::Gap
            } else {
                UnattributedReason::NotFound
            });
        };
        // Inside one workload's range, but within the clocks' tolerance of
        // its edge: the owner before or after it (known here or not) may
        // have held the address at `t` on the owner's clock.
        if t < c.start_ns.saturating_add(skew) || t.saturating_add(skew) >= c.end_ns {
            return Err(UnattributedReason::ClockSkew);
        }
        // Another workload's range within the tolerance means the address
        // may have changed hands at `t`.
        let (mut lo, mut hi) = ((c.start_ns + skew).max(forgotten), c.end_ns - skew);
        for o in live.filter(|o| o.owner != c.owner) {
            if o.within(t, skew) {
                return Err(UnattributedReason::ClockSkew);
            }
            if o.start_ns > t {
                hi = hi.min(o.start_ns - skew);
            } else {
                lo = lo.max(o.end_ns + skew);
            }
        }
        Ok((c.owner, TimeRange::new(lo, hi)))
    }
}
