//! Remote ownership learned from heartbeats, as time ranges (the method's
//! point 2).
//!
//! Every flow whose local side an agent attributed is a heartbeat: "workload
//! W owned address X from the flow's start to its end". The table keeps, per
//! address, the time ranges each workload owned it, and attributes a remote
//! address by the range that holds the flow's **start** — never by who owns
//! the address now. It is a sans-IO core: no clock, no sockets; every call
//! takes `now_ns`, so tests jump time instead of sleeping and the collector's
//! shells (QUIC ingest, Kafka sharing, the hold queue) only move data in.
//!
//! ```
//! use std::sync::Arc;
//! use flowattr_collector::ownership::{OwnershipConfig, OwnershipTable};
//! use flowattr_model::{TimeRange, UnattributedReason, Workload};
//!
//! const S: u64 = 1_000_000_000;
//! let mut table = OwnershipTable::new(OwnershipConfig::default());
//! table.allow("agent-1", ["10.0.0.0/24".parse().unwrap()]);
//! let ip = "10.0.0.7".parse().unwrap();
//! let api = Arc::new(Workload::with_id("api-1"));
//! // The agent saw api-1 hold 10.0.0.7 for a flow from 100 s to 160 s.
//! table.heartbeat(ip, &api, TimeRange::new(100 * S, 160 * S), "agent-1", 200 * S);
//! let (owner, _valid) = table.lookup(ip, 120 * S, 200 * S).unwrap();
//! assert_eq!(owner.id, "api-1");
//! assert_eq!(table.lookup(ip, 300 * S, 400 * S).unwrap_err(), UnattributedReason::NotFound);
//! ```
//!
//! # Rules
//!
//! Leaving a flow unattributed is acceptable; attributing it to the wrong
//! workload is not. So:
//!
//! - **Ranges only come from heartbeats.** A workload's ranges on an address
//!   are the union of its heartbeats, with gaps of at most
//!   [`OwnershipConfig::merge_gap_ns`] between its own heartbeats filled in.
//!   Edges are never extended: nothing is attributed before a workload's
//!   first heartbeat or after its last.
//! - **Conflicts.** Where ranges of two workloads overlap, that period is
//!   contested: lookups there answer `conflict`, each side keeps the rest of
//!   its range, and a later claim never overwrites an earlier one. (A
//!   workload's merged range is whole even across another's claim inside
//!   its merge gap; the overlap then is contested too.)
//! - **Order does not matter.** The table is a function of the set of
//!   claims: late and out-of-order heartbeats give the same table as
//!   in-order ones (tested with random orders).
//! - **Clock skew.** Heartbeat times are the claimant host's clock, lookup
//!   times another host's. [`OwnershipConfig::max_skew_ns`] is how far an
//!   agent's clock may be from the collector's (measured: see
//!   `crate::clocks`; agents beyond it are not heard), so two hosts' clocks
//!   differ by at most twice that, the table's *tolerance*
//!   ([`OwnershipConfig::tolerance_ns`]). A range answers only for times at
//!   least the tolerance inside it: a range runs from its owner's first
//!   heartbeat to its last, and the previous or next owner may have held the
//!   address up to a tolerance beyond those edges on the lookup's clock
//!   (even one that runs no agent, or whose heartbeats were lost). Inside
//!   that margin, and near *another* workload's range, the answer is
//!   `clock-skew`; so is a time just outside every range, rather than
//!   stretching the nearest one. This is what makes a range's answer right
//!   by construction: every heartbeat comes from the address's real owner
//!   (claims), that owner held it over the whole range (its own heartbeats
//!   merge only within the merge gap), and the lookup time is on a clock
//!   within the tolerance of the owner's. A claim ending more than the
//!   tolerance after the collector's `now` is refused (the claimant's clock
//!   is ahead beyond tolerance).
//! - **Gaps.** A time between ranges (further than the merge gap apart, or of
//!   different workloads) answers `gap`; before the first or after the last
//!   range, `not-found`.
//! - **Expiry.** A range that ended more than
//!   [`OwnershipConfig::expire_after_ns`] ago is dropped. Each address
//!   remembers how far the dropped ranges reached, and every lookup before
//!   that answers `expired`: a contested period must not become another
//!   workload's just because one side of the conflict expired first. Claims
//!   that would expire at once are refused as stale.
//! - **Memory bound.** Past [`OwnershipConfig::max_ranges`], the ranges that
//!   ended first are evicted (counted). An address that keeps other ranges
//!   answers `expired` for the evicted times; one left empty is removed
//!   (`not-found`).
//! - **Claimants.** Each claim names its claimant (the agent's certificate
//!   identity); a claim for an address outside the claimant's allowed
//!   prefixes, or from an unknown claimant, is refused and changes nothing.
//!   See [`ClaimPolicy`].
//! - **Speed.** An agent's batch goes in through
//!   [`OwnershipTable::heartbeats`] (the claimant looked up once), and a
//!   workload passed as the table's own `Arc` ([`OwnershipTable::canonical`])
//!   is recognised by pointer. Lookups lend the workload rather than clone
//!   it. `benches/ownership.rs` measures both sides on a 100,000-address
//!   fleet.
//! - **Sharing.** [`OwnershipTable::drain_changes`] gives the ranges local
//!   heartbeats changed since the last drain, one update per changed range;
//!   other collectors [`apply`](OwnershipTable::apply) them with the same
//!   rules. Because ranges are unions of claims, applying a range twice, or
//!   a range and the heartbeats it was made of, changes nothing.

mod claims;
mod forget;
mod interner;
mod memory;
pub(crate) mod prefix;
mod ranges;
mod table;

#[cfg(test)]
mod tests;

use std::{net::IpAddr, sync::Arc};

use flowattr_model::{TimeRange, Workload};

pub use claims::ClaimPolicy;
pub use prefix::{Prefix, PrefixError};
pub use table::OwnershipTable;

const SECOND_NS: u64 = 1_000_000_000;

/// How the table merges, expires, bounds and tolerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OwnershipConfig {
    /// Two heartbeats of one workload this close (or overlapping) join into
    /// one range. Default 30 s: longer than the gap between flows of a busy
    /// workload, far shorter than the minutes before an address is reused.
    pub merge_gap_ns: u64,
    /// A range whose end is older than this is dropped. Default 15 min.
    pub expire_after_ns: u64,
    /// At most this many ranges are held; the ranges that ended first are
    /// evicted beyond it. Default 10 million: 0.4–1 GB (about 24 bytes a
    /// range plus 70 an address; see `benches/ownership.rs`).
    pub max_ranges: usize,
    /// How far an agent's clock may be from the collector's. Default 2 s.
    /// Two agents' clocks then differ by at most twice this: see
    /// [`OwnershipConfig::tolerance_ns`].
    pub max_skew_ns: u64,
}

impl Default for OwnershipConfig {
    fn default() -> Self {
        Self {
            merge_gap_ns: 30 * SECOND_NS,
            expire_after_ns: 15 * 60 * SECOND_NS,
            max_ranges: 10_000_000,
            max_skew_ns: 2 * SECOND_NS,
        }
    }
}

impl OwnershipConfig {
    /// How far apart two hosts' clocks may be: twice
    /// [`OwnershipConfig::max_skew_ns`], as each may be that far from the
    /// collector's in opposite directions.
    pub fn tolerance_ns(&self) -> u64 {
        self.max_skew_ns.saturating_mul(2)
    }
}

/// What a heartbeat (or a peer's update) did to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeartbeatOutcome {
    /// It started a new range.
    Inserted,
    /// It grew a range of its workload, or joined several.
    Merged,
    /// A range of its workload already held it: nothing changed.
    Covered,
    /// It was recorded, and made its workload's range overlap another
    /// workload's for longer than before: that period answers `conflict`.
    Conflict,
    /// It was refused and changed nothing.
    Refused(Refusal),
}

/// Why a heartbeat was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The claimant is not in the policy.
    UnknownClaimant,
    /// The address is outside the claimant's allowed prefixes.
    OutsideAllowed,
    /// The range ends before it starts, or has no end.
    InvalidRange,
    /// The range ends after the collector's now plus the clock tolerance.
    Future,
    /// The range ended before the expiry horizon.
    Stale,
}

impl Refusal {
    /// Stable name for metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::UnknownClaimant => "unknown_claimant",
            Self::OutsideAllowed => "outside_allowed",
            Self::InvalidRange => "invalid_range",
            Self::Future => "future",
            Self::Stale => "stale",
        }
    }
}

/// One ownership range as collectors share it: `claimant` saw `workload`
/// own `ip` over `range`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeUpdate {
    pub ip: IpAddr,
    pub workload: Arc<Workload>,
    pub range: TimeRange,
    pub claimant: Arc<str>,
}

/// What the table has done since it was made. Every heartbeat and update
/// lands in exactly one of `inserted`, `merged`, `covered`, `conflicts`,
/// `refused`, `invalid` and `stale`; `expired` and `evicted` count ranges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnershipCounters {
    /// Local heartbeats taken.
    pub heartbeats: u64,
    /// Other collectors' updates taken.
    pub updates: u64,
    pub inserted: u64,
    pub merged: u64,
    pub covered: u64,
    /// Claims that made a contested period longer.
    pub conflicts: u64,
    /// Claims from unknown claimants or outside their prefixes.
    pub refused: u64,
    /// Claims with malformed ranges or ranges in the future.
    pub invalid: u64,
    /// Claims too old to keep.
    pub stale: u64,
    /// Ranges dropped by expiry.
    pub expired: u64,
    /// Ranges dropped by the memory bound.
    pub evicted: u64,
}

impl OwnershipCounters {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &OwnershipCounters) -> OwnershipCounters {
        OwnershipCounters {
            heartbeats: self.heartbeats - earlier.heartbeats,
            updates: self.updates - earlier.updates,
            inserted: self.inserted - earlier.inserted,
            merged: self.merged - earlier.merged,
            covered: self.covered - earlier.covered,
            conflicts: self.conflicts - earlier.conflicts,
            refused: self.refused - earlier.refused,
            invalid: self.invalid - earlier.invalid,
            stale: self.stale - earlier.stale,
            expired: self.expired - earlier.expired,
            evicted: self.evicted - earlier.evicted,
        }
    }
}

/// Estimated heap use, including the allocator's per-block overhead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// The address map and the ranges (the part that grows per range).
    pub ranges_bytes: usize,
    /// The interned workloads (grows per distinct workload).
    pub workloads_bytes: usize,
    /// Claimant policy and the change log.
    pub other_bytes: usize,
}

impl MemoryUsage {
    pub fn total(&self) -> usize {
        self.ranges_bytes + self.workloads_bytes + self.other_bytes
    }
}
