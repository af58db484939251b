//! How the table forgets: expiry of ranges no heartbeat confirmed for
//! `expire_after_ns`, and eviction of the oldest ranges past `max_ranges`.
//! Either way each address remembers how far the dropped ranges reached, so
//! lookups before that answer `expired` instead of trusting what is left.

use super::{
    interner::Interner,
    ranges::{IpRanges, Range},
    table::{OwnershipTable, State},
};

impl OwnershipTable {
    /// Drops ranges that ended before `now_ns - expire_after_ns`; returns
    /// how many. Call it every few seconds.
    ///
    /// An address whose ranges are all gone is kept, empty, for one more
    /// expiry period, so a lookup in the forgotten times answers `expired`
    /// rather than `not-found`.
    pub fn expire(&mut self, now_ns: u64) -> usize {
        let horizon = self.horizon(now_ns);
        let keep_empty_until = horizon.saturating_sub(self.config.expire_after_ns);
        let state = &mut self.state;
        let workloads = &mut state.workloads;
        let mut dropped = 0;
        state.ips.retain(|_, entry| {
            dropped += forget(entry, workloads, |r| r.end_ns < horizon);
            !entry.ranges.is_empty() || entry.forgotten_until_ns >= keep_empty_until
        });
        state.len_ranges -= dropped;
        state.prune_changed();
        self.counters.expired += dropped as u64;
        dropped
    }

    /// Drops the ranges that ended first until the table is 1/16 below
    /// `max_ranges` (so the pass, linear in the table, runs once per
    /// `max_ranges / 16` new ranges). Addresses left empty are removed.
    pub(super) fn evict(&mut self) {
        let target = self.config.max_ranges - self.config.max_ranges / 16;
        let excess = self.state.len_ranges.saturating_sub(target);
        if excess == 0 {
            return;
        }
        // Find the end time below which `excess` ranges end: a histogram
        // of end times, then ties in the boundary bucket in table order.
        let ends = || {
            self.state
                .ips
                .values()
                .flat_map(|e| e.ranges.iter().map(|r| r.end_ns))
        };
        let (lo, hi) = ends().fold((u64::MAX, 0), |(lo, hi), e| (lo.min(e), hi.max(e)));
        const BINS: usize = 1024;
        let width = ((hi - lo) / BINS as u64).max(1);
        let bin = |end: u64| (((end - lo) / width) as usize).min(BINS - 1);
        let mut histogram = vec![0usize; BINS];
        for e in ends() {
            histogram[bin(e)] += 1;
        }
        let mut boundary = 0;
        let mut below = 0;
        while below + histogram[boundary] < excess {
            below += histogram[boundary];
            boundary += 1;
        }
        let mut in_boundary = excess - below;

        let state = &mut self.state;
        let workloads = &mut state.workloads;
        let mut dropped = 0;
        state.ips.retain(|_, entry| {
            dropped += forget(entry, workloads, |r| match bin(r.end_ns) {
                b if b < boundary => true,
                b if b == boundary && in_boundary > 0 => {
                    in_boundary -= 1;
                    true
                }
                _ => false,
            });
            !entry.ranges.is_empty()
        });
        debug_assert_eq!(dropped, excess);
        state.len_ranges -= dropped;
        state.prune_changed();
        self.counters.evicted += dropped as u64;
    }
}

impl State {
    /// Keeps the change log from growing without a drain (a collector that
    /// shares nothing never drains): addresses that were dropped and made
    /// again can be listed twice, so once the log is twice the table, it is
    /// cut to the addresses that still exist, each once.
    fn prune_changed(&mut self) {
        if self.changed.len() <= 2 * self.ips.len() + 1024 {
            return;
        }
        self.changed.sort_unstable();
        self.changed.dedup();
        let ips = &self.ips;
        self.changed.retain(|key| ips.contains_key(key));
        self.changed.shrink_to_fit();
    }
}

/// Drops `entry`'s ranges that `drop` picks, remembering how far their
/// knowledge reached; returns how many.
fn forget(
    entry: &mut IpRanges,
    workloads: &mut Interner,
    mut drop: impl FnMut(&Range) -> bool,
) -> usize {
    let before = entry.ranges.len();
    entry.ranges.retain(|r| {
        if !drop(r) {
            return true;
        }
        entry.forgotten_until_ns = entry.forgotten_until_ns.max(r.end_ns);
        workloads.release(r.owner);
        false
    });
    let dropped = before - entry.ranges.len();
    if dropped > 0 && entry.ranges.capacity() > entry.ranges.len() + 1 {
        entry.ranges.shrink_to_fit();
    }
    dropped
}
