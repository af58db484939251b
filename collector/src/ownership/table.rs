//! The ownership table: every address's ranges, the claimant policy, the
//! workload interner and the change log; taking claims, answering lookups,
//! publishing changes. How it forgets (expiry, the memory bound) is in
//! `forget`.

use std::{net::IpAddr, sync::Arc};

use flowattr_model::{TimeRange, UnattributedReason, Workload};
use rustc_hash::FxHashMap;

use super::{
    ClaimPolicy, HeartbeatOutcome, MemoryUsage, OwnershipConfig, OwnershipCounters, RangeUpdate,
    Refusal,
    interner::Interner,
    memory, prefix,
    ranges::{Claimed, IpRanges, Range},
};

/// Per address, the time ranges each workload owned it; see the
/// [module documentation](super) for the rules.
#[derive(Debug)]
pub struct OwnershipTable {
    pub(super) config: OwnershipConfig,
    pub(super) claims: ClaimPolicy,
    pub(super) state: State,
    pub(super) counters: OwnershipCounters,
}

/// Everything a lookup can see. Kept apart from the counters so tests can
/// show that a refused claim changes none of it.
#[derive(Debug, Default)]
pub(super) struct State {
    pub ips: FxHashMap<u128, IpRanges>,
    pub workloads: Interner,
    /// Ranges held, over all addresses.
    pub len_ranges: usize,
    /// Addresses with ranges changed by local heartbeats since the last
    /// drain (an address may appear twice; drains skip the repeat).
    pub changed: Vec<u128>,
}

/// Where a claim came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A local heartbeat: published on the next drain.
    Local,
    /// Another collector's update: already published by that collector.
    Peer,
}

impl OwnershipTable {
    /// An empty table that refuses every claimant until allowed.
    pub fn new(config: OwnershipConfig) -> Self {
        Self::with_claims(config, ClaimPolicy::new())
    }

    /// An empty table with a claimant policy.
    pub fn with_claims(config: OwnershipConfig, claims: ClaimPolicy) -> Self {
        Self {
            config,
            claims,
            state: State::default(),
            counters: OwnershipCounters::default(),
        }
    }

    pub fn config(&self) -> &OwnershipConfig {
        &self.config
    }

    /// Who may claim what.
    pub fn claims(&self) -> &ClaimPolicy {
        &self.claims
    }

    /// Changes to the claimant policy apply to claims from now on.
    pub fn claims_mut(&mut self) -> &mut ClaimPolicy {
        &mut self.claims
    }

    /// Shorthand for [`ClaimPolicy::allow`].
    pub fn allow(&mut self, claimant: &str, prefixes: impl IntoIterator<Item = super::Prefix>) {
        self.claims.allow(claimant, prefixes);
    }

    /// Shorthand for [`ClaimPolicy::allow_any`].
    pub fn allow_any(&mut self, claimant: &str) {
        self.claims.allow_any(claimant);
    }

    /// `claimant` saw `workload` own `ip` over `seen` (a flow's start and
    /// end on the claimant's clock), and it is `now_ns` on ours.
    pub fn heartbeat(
        &mut self,
        ip: IpAddr,
        workload: &Arc<Workload>,
        seen: TimeRange,
        claimant: &str,
        now_ns: u64,
    ) -> HeartbeatOutcome {
        self.counters.heartbeats += 1;
        let claimant = self.claims.resolve(claimant);
        self.claim(claimant, ip, workload, seen, now_ns, Origin::Local)
    }

    /// One agent's batch of heartbeats: each as [`OwnershipTable::heartbeat`],
    /// the claimant looked up once. Returns the batch's counts.
    pub fn heartbeats<'a>(
        &mut self,
        claimant: &str,
        beats: impl IntoIterator<Item = (IpAddr, &'a Arc<Workload>, TimeRange)>,
        now_ns: u64,
    ) -> OwnershipCounters {
        let before = self.counters;
        let claimant = self.claims.resolve(claimant);
        for (ip, workload, seen) in beats {
            self.counters.heartbeats += 1;
            self.claim(claimant, ip, workload, seen, now_ns, Origin::Local);
        }
        self.counters.since(&before)
    }

    /// A range another collector learned, with the same rules as a
    /// heartbeat (the claimant is checked here too). It is not published
    /// again by [`OwnershipTable::drain_changes`].
    pub fn apply(&mut self, update: &RangeUpdate, now_ns: u64) -> HeartbeatOutcome {
        self.counters.updates += 1;
        let claimant = self.claims.resolve(&update.claimant);
        self.claim(
            claimant,
            update.ip,
            &update.workload,
            update.range,
            now_ns,
            Origin::Peer,
        )
    }

    fn claim(
        &mut self,
        claimant: Result<u32, Refusal>,
        ip: IpAddr,
        workload: &Arc<Workload>,
        seen: TimeRange,
        now_ns: u64,
        origin: Origin,
    ) -> HeartbeatOutcome {
        let outcome = self.try_claim(claimant, ip, workload, seen, now_ns, origin);
        let c = &mut self.counters;
        match outcome {
            HeartbeatOutcome::Inserted => c.inserted += 1,
            HeartbeatOutcome::Merged => c.merged += 1,
            HeartbeatOutcome::Covered => c.covered += 1,
            HeartbeatOutcome::Conflict => c.conflicts += 1,
            HeartbeatOutcome::Refused(r) => match r {
                Refusal::UnknownClaimant | Refusal::OutsideAllowed => c.refused += 1,
                Refusal::InvalidRange | Refusal::Future => c.invalid += 1,
                Refusal::Stale => c.stale += 1,
            },
        }
        if self.state.len_ranges > self.config.max_ranges {
            self.evict();
        }
        outcome
    }

    fn try_claim(
        &mut self,
        claimant: Result<u32, Refusal>,
        ip: IpAddr,
        workload: &Arc<Workload>,
        seen: TimeRange,
        now_ns: u64,
        origin: Origin,
    ) -> HeartbeatOutcome {
        let key = prefix::key(ip);
        let claimant = match claimant.and_then(|i| self.claims.check_number(i, key).map(|()| i)) {
            Ok(i) => i,
            Err(r) => return HeartbeatOutcome::Refused(r),
        };
        if seen.end_ns < seen.start_ns || seen.end_ns == TimeRange::OPEN_END {
            return HeartbeatOutcome::Refused(Refusal::InvalidRange);
        }
        // A flow that started and ended in the same nanosecond still shows
        // ownership at that nanosecond.
        let end_ns = seen.end_ns.max(seen.start_ns + 1);
        if end_ns > now_ns.saturating_add(self.config.tolerance_ns()) {
            return HeartbeatOutcome::Refused(Refusal::Future);
        }
        if end_ns < self.horizon(now_ns) {
            return HeartbeatOutcome::Refused(Refusal::Stale);
        }

        let state = &mut self.state;
        let entry = state.ips.entry(key).or_insert_with(|| IpRanges {
            ranges: Vec::with_capacity(1),
            forgotten_until_ns: 0,
        });
        // Usually the workload already holds a range here, passed as the
        // same `Arc` (see `canonical`): found without hashing anything.
        let owner = entry
            .ranges
            .iter()
            .rev()
            .find(|r| Arc::ptr_eq(state.workloads.get(r.owner), workload))
            .map(|r| r.owner)
            .or_else(|| state.workloads.find(workload));
        let dirty = match origin {
            Origin::Local => Range::DIRTY,
            Origin::Peer => 0,
        };
        let claim = Range {
            start_ns: seen.start_ns,
            end_ns,
            // Not interned yet: no range of it exists, so no range joins.
            owner: owner.unwrap_or(u32::MAX),
            meta: claimant | dirty,
        };
        let was_dirty = entry.ranges.iter().any(Range::is_dirty);
        let claimed = entry.claim(claim, self.config.merge_gap_ns);
        let Claimed::Changed { merged, contested } = claimed else {
            return HeartbeatOutcome::Covered;
        };
        // Fix up the owner number and reference counts: +1 for the new
        // range, -1 for each range it replaced.
        match owner {
            Some(i) => state.workloads.retain(i),
            None => {
                let i = state.workloads.acquire(workload);
                for r in entry.ranges.iter_mut().filter(|r| r.owner == u32::MAX) {
                    r.owner = i;
                }
            }
        }
        for _ in 0..merged {
            state
                .workloads
                .release(owner.expect("merged ranges have an owner"));
        }
        state.len_ranges = state.len_ranges + 1 - merged;
        if dirty != 0 && !was_dirty {
            state.changed.push(key);
        }
        if contested {
            HeartbeatOutcome::Conflict
        } else if merged == 0 {
            HeartbeatOutcome::Inserted
        } else {
            HeartbeatOutcome::Merged
        }
    }

    /// The table's own `Arc` of a workload equal to `workload`, if it holds
    /// one. An ingest that passes this `Arc` in later heartbeats (once per
    /// distinct workload in a batch) lets the table recognise the workload
    /// by pointer instead of comparing its attributes.
    pub fn canonical(&self, workload: &Arc<Workload>) -> Option<Arc<Workload>> {
        let i = self.state.workloads.find(workload)?;
        Some(self.state.workloads.get(i).clone())
    }

    /// Who owned `ip` at `t_ns` (a flow's start), as of `now_ns`.
    ///
    /// The answer carries the times around `t_ns` that get the same answer
    /// (for caching). Ranges that expired by `now_ns` are treated as if
    /// [`OwnershipTable::expire`] had already dropped them. The workload is
    /// lent, not cloned: cloning an `Arc` is a locked instruction on a
    /// cache line far away, about half of a lookup's cost, so callers clone
    /// only what they keep.
    pub fn lookup(
        &self,
        ip: IpAddr,
        t_ns: u64,
        now_ns: u64,
    ) -> Result<(&Arc<Workload>, TimeRange), UnattributedReason> {
        let entry = self
            .state
            .ips
            .get(&prefix::key(ip))
            .ok_or(UnattributedReason::NotFound)?;
        let (owner, valid) =
            entry.lookup(t_ns, self.horizon(now_ns), self.config.tolerance_ns())?;
        Ok((self.state.workloads.get(owner), valid))
    }

    /// [`OwnershipTable::lookup`] for many flows (the hold queue releases
    /// them in batches): the answers, in order, appended to `out`. Faster
    /// than one call each, as the memory fetches of neighbouring queries
    /// overlap instead of waiting on one another.
    pub fn lookup_many<'a>(
        &'a self,
        queries: &[(IpAddr, u64)],
        now_ns: u64,
        out: &mut Vec<Result<(&'a Arc<Workload>, TimeRange), UnattributedReason>>,
    ) {
        const CHUNK: usize = 16;
        let horizon = self.horizon(now_ns);
        let tolerance = self.config.tolerance_ns();
        out.reserve(queries.len());
        for chunk in queries.chunks(CHUNK) {
            let mut entries = [None; CHUNK];
            for (entry, (ip, _)) in entries.iter_mut().zip(chunk) {
                *entry = self.state.ips.get(&prefix::key(*ip));
            }
            // Start fetching every address's ranges before reading any.
            for entry in entries.iter().flatten() {
                std::hint::black_box(entry.ranges.first());
            }
            for (entry, &(_, t_ns)) in entries.iter().zip(chunk) {
                out.push(match entry {
                    None => Err(UnattributedReason::NotFound),
                    Some(entry) => entry
                        .lookup(t_ns, horizon, tolerance)
                        .map(|(owner, valid)| (self.state.workloads.get(owner), valid)),
                });
            }
        }
    }

    /// The ranges changed by local heartbeats since the last drain, for
    /// publishing to other collectors: per changed address, each changed
    /// range as it is now (a range that grew many times is sent once).
    /// Sorted by address.
    pub fn drain_changes(&mut self) -> Vec<RangeUpdate> {
        let mut keys = std::mem::take(&mut self.state.changed);
        keys.sort_unstable();
        keys.dedup();
        let mut updates = Vec::new();
        for key in keys {
            let Some(entry) = self.state.ips.get_mut(&key) else {
                continue;
            };
            for r in entry.ranges.iter_mut().filter(|r| r.is_dirty()) {
                r.meta &= !Range::DIRTY;
                updates.push(RangeUpdate {
                    ip: prefix::address(key),
                    workload: self.state.workloads.get(r.owner).clone(),
                    range: TimeRange::new(r.start_ns, r.end_ns),
                    claimant: self.claims.name(r.claimant()).clone(),
                });
            }
        }
        updates
    }

    /// The ranges held for `ip`, by start (ranges of different workloads
    /// overlap where their claims conflict).
    pub fn ranges(&self, ip: IpAddr) -> Vec<(TimeRange, Arc<Workload>)> {
        self.state
            .ips
            .get(&prefix::key(ip))
            .map(|e| {
                e.ranges
                    .iter()
                    .map(|r| {
                        let w = self.state.workloads.get(r.owner).clone();
                        (TimeRange::new(r.start_ns, r.end_ns), w)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The ranges held for `ip` with their claimants, by start, and the
    /// time before which ranges were forgotten (expired or evicted; 0 if
    /// none were): what a lookup of `ip` reads.
    pub fn claimed_ranges(&self, ip: IpAddr) -> (Vec<(TimeRange, &Arc<Workload>, &Arc<str>)>, u64) {
        let Some(e) = self.state.ips.get(&prefix::key(ip)) else {
            return (Vec::new(), 0);
        };
        let ranges = e
            .ranges
            .iter()
            .map(|r| {
                (
                    TimeRange::new(r.start_ns, r.end_ns),
                    self.state.workloads.get(r.owner),
                    self.claims.name(r.claimant()),
                )
            })
            .collect();
        (ranges, e.forgotten_until_ns)
    }

    /// Every range held, as `(address, range, workload)`, sorted by address,
    /// start, end and workload id: two tables with equal dumps answer every
    /// lookup alike.
    pub fn dump(&self) -> Vec<(IpAddr, TimeRange, Arc<Workload>)> {
        let mut rows: Vec<_> = self
            .state
            .ips
            .iter()
            .flat_map(|(&key, e)| {
                e.ranges.iter().map(move |r| {
                    let w = self.state.workloads.get(r.owner).clone();
                    (
                        prefix::address(key),
                        TimeRange::new(r.start_ns, r.end_ns),
                        w,
                    )
                })
            })
            .collect();
        rows.sort_by(|a, b| {
            (a.0, a.1.start_ns, a.1.end_ns, &a.2.id).cmp(&(b.0, b.1.start_ns, b.1.end_ns, &b.2.id))
        });
        rows
    }

    /// Ranges held.
    pub fn len_ranges(&self) -> usize {
        self.state.len_ranges
    }

    /// Whether the table holds anything for `ip` (ranges, or the memory of
    /// expired ones): if so, the address is known to be a workload's.
    pub fn knows(&self, ip: IpAddr) -> bool {
        self.state.ips.contains_key(&prefix::key(ip))
    }

    /// Addresses held (including ones kept empty after expiry).
    pub fn len_ips(&self) -> usize {
        self.state.ips.len()
    }

    /// Distinct workloads the ranges refer to.
    pub fn len_workloads(&self) -> usize {
        self.state.workloads.len()
    }

    pub fn counters(&self) -> &OwnershipCounters {
        &self.counters
    }

    /// Estimated heap use, by part.
    pub fn memory(&self) -> MemoryUsage {
        let s = &self.state;
        MemoryUsage {
            ranges_bytes: memory::hash_map::<u128, IpRanges>(s.ips.capacity())
                + s.ips
                    .values()
                    .map(|e| memory::heap_block(e.ranges.capacity() * size_of::<Range>()))
                    .sum::<usize>(),
            workloads_bytes: s.workloads.memory_bytes(),
            other_bytes: memory::heap_block(s.changed.capacity() * size_of::<u128>())
                + self.claims.memory_bytes(),
        }
    }

    /// Estimated heap use in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.memory().total()
    }

    /// Everything a lookup can see, for tests that compare states.
    #[cfg(test)]
    pub(super) fn state(&self) -> &State {
        &self.state
    }

    pub(super) fn horizon(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.config.expire_after_ns)
    }
}
