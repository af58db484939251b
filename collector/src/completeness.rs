//! Completeness: how far in time every agent that may claim an address has
//! reported, so a remote side is attributed only once its owner's
//! heartbeats can all be here.
//!
//! Each agent's batches carry a watermark: every flow it captured that
//! started before then and has ended is in that batch or an earlier one
//! (long-lived connections are covered by their interval records). The
//! collector converts it to its own clock at the earliest it can be (see
//! [`crate::clocks::ClockVerdict::earliest_local`]), keeps the highest per
//! agent, and shares it through Kafka with the ranges, so every collector
//! knows every agent's.
//!
//! A flow that ended at `end` is **complete** for its remote address once
//! every agent that may claim the address (by the claim policy) has a
//! watermark at or past `end` plus the clock tolerance: then the owner's
//! heartbeats around the flow's start, and the owner's own report of the
//! same connection, have arrived. The hold queue releases a batch as soon
//! as all its flows are complete, and at the latest after `hold`; a flow
//! still incomplete then leaves `incomplete` unless the other end of the
//! same connection answered for it.
//!
//! The cases that are not the steady state, decided explicitly:
//!
//! - **An agent never heard from** (listed in the claims, not connected
//!   since this collector started, directly or through Kafka) counts as
//!   heard at the collector's start with nothing complete: flows towards
//!   its addresses wait for it (up to `hold`) until it has been silent for
//!   `silent_after`, like any silent agent. So a collector that starts
//!   before its agents reconnect does not answer for their addresses from
//!   a table that lacks their heartbeats.
//! - **A silent agent** (nothing heard for `silent_after`) stops being
//!   waited for: its hosts' addresses simply have no new heartbeats, which
//!   ranges never mistake for another owner's (see the ownership table's
//!   rules). It is waited for again from its next batch. Until then every
//!   flow towards its addresses waits up to `hold`.
//! - **A restarted agent** keeps its highest watermark; what its previous
//!   run never shipped is lost to the table, which again only means fewer
//!   answers, never a wrong one.
//! - **A collector that starts late** knows only the watermarks it hears
//!   (its agents', and other collectors' through Kafka from then on).
//! - **An agent whose clock is not trusted** ([`crate::clocks`]) reports
//!   nothing here: its heartbeats are not taken either.
//!
//! Pure: every call takes the time.

use std::{net::IpAddr, sync::Arc};

use rustc_hash::FxHashMap;

use flowattr_model::Flow;

use crate::ownership::{ClaimPolicy, prefix};

/// The instant a watermark must pass for `flow` to be complete: its end
/// (its start, for a record that ends before it starts).
pub fn covered_until(flow: &Flow) -> u64 {
    flow.end_ns.max(flow.start_ns)
}

/// One agent's progress, on the collector's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    /// Complete up to here.
    pub watermark_ns: u64,
    /// When it was last heard from (by any collector).
    pub heard_ns: u64,
}

/// One agent's watermark as collectors share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMark {
    pub claimant: Arc<str>,
    pub mark: Mark,
}

/// The agents' watermarks and, per claim prefix, the lowest of those that
/// may claim inside it.
#[derive(Debug, Clone)]
pub struct Completeness {
    tolerance_ns: u64,
    silent_after_ns: u64,
    /// When this collector started: an agent not heard from since counts
    /// as heard then, with nothing complete.
    started_ns: u64,
    /// By claimant number in the claim policy.
    marks: Vec<Option<Mark>>,
    /// Claimants that may claim any address.
    any: Vec<u32>,
    /// (prefix length, network) → claimants allowed inside that prefix.
    prefixes: FxHashMap<(u8, u128), Vec<u32>>,
    /// The distinct prefix lengths in `prefixes`, longest first.
    lengths: Vec<u8>,
    /// Recomputed by [`Completeness::refresh`].
    lowest_any: u64,
    lowest: FxHashMap<(u8, u128), u64>,
    floor: u64,
    /// Marks changed since the last [`Completeness::drain_changes`].
    changed: Vec<u32>,
    names: Vec<Arc<str>>,
    numbers: FxHashMap<Arc<str>, u32>,
}

impl Completeness {
    /// Waits for the claimants of `claims`; a flow is complete once they
    /// reported `tolerance_ns` past its end; an agent silent for
    /// `silent_after_ns` (counted from `started_ns` for one never heard
    /// from) is not waited for.
    pub fn new(
        claims: &ClaimPolicy,
        tolerance_ns: u64,
        silent_after_ns: u64,
        started_ns: u64,
    ) -> Self {
        let mut any = Vec::new();
        let mut prefixes: FxHashMap<(u8, u128), Vec<u32>> = FxHashMap::default();
        let mut names = Vec::new();
        for (i, name, allowed) in claims.each() {
            names.push(name.clone());
            match allowed {
                None => any.push(i),
                Some(list) => {
                    for p in list {
                        let entry = prefixes.entry((p.key_len(), p.network_key())).or_default();
                        if !entry.contains(&i) {
                            entry.push(i);
                        }
                    }
                }
            }
        }
        let mut lengths: Vec<u8> = prefixes.keys().map(|&(len, _)| len).collect();
        lengths.sort_unstable_by(|a, b| b.cmp(a));
        lengths.dedup();
        Self {
            tolerance_ns,
            silent_after_ns,
            started_ns,
            marks: vec![None; names.len()],
            any,
            prefixes,
            lengths,
            lowest_any: u64::MAX,
            lowest: FxHashMap::default(),
            floor: u64::MAX,
            changed: Vec::new(),
            numbers: names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.clone(), i as u32))
                .collect(),
            names,
        }
    }

    /// `claimant` has reported complete up to `watermark_ns`, heard at
    /// `heard_ns` (both on this collector's clock). Marks only move
    /// forward. An unlisted claimant is ignored (it may claim nothing).
    pub fn report(&mut self, claimant: &str, watermark_ns: u64, heard_ns: u64) {
        let Some(&i) = self.numbers.get(claimant) else {
            return;
        };
        let slot = &mut self.marks[i as usize];
        let mark = slot.get_or_insert_with(Mark::default);
        let before = *mark;
        mark.watermark_ns = mark.watermark_ns.max(watermark_ns);
        mark.heard_ns = mark.heard_ns.max(heard_ns);
        if *mark != before && !self.changed.contains(&i) {
            self.changed.push(i);
        }
    }

    /// Another collector's view of an agent (Kafka).
    pub fn apply(&mut self, shared: &SharedMark) {
        self.report(
            &shared.claimant,
            shared.mark.watermark_ns,
            shared.mark.heard_ns,
        );
        // Learned from a peer: not published again.
        if let Some(&i) = self.numbers.get(&shared.claimant) {
            self.changed.retain(|&c| c != i);
        }
    }

    /// The marks changed by local reports since the last drain, to share.
    pub fn drain_changes(&mut self) -> Vec<SharedMark> {
        std::mem::take(&mut self.changed)
            .into_iter()
            .filter_map(|i| {
                Some(SharedMark {
                    claimant: self.names[i as usize].clone(),
                    mark: self.marks[i as usize]?,
                })
            })
            .collect()
    }

    /// Recomputes the lowest watermark of the claimants waited for at
    /// `now_ns`, overall and per prefix. Call once per tick, before
    /// asking.
    pub fn refresh(&mut self, now_ns: u64) {
        let lowest_of = |list: &[u32]| {
            list.iter()
                .filter_map(|&i| self.waited(self.marks[i as usize], now_ns))
                .min()
                .unwrap_or(u64::MAX)
        };
        let lowest_any = lowest_of(&self.any);
        let lowest: FxHashMap<(u8, u128), u64> = self
            .prefixes
            .iter()
            .map(|(&k, list)| (k, lowest_of(list)))
            .collect();
        self.lowest_any = lowest_any;
        self.floor = lowest.values().copied().fold(lowest_any, u64::min);
        self.lowest = lowest;
    }

    /// The watermark of a claimant waited for at `now_ns` (heard within
    /// `silent_after`; one never heard from counts as heard at the start,
    /// with nothing complete), or `None` if it is not waited for.
    fn waited(&self, mark: Option<Mark>, now_ns: u64) -> Option<u64> {
        let m = mark.unwrap_or(Mark {
            watermark_ns: 0,
            heard_ns: self.started_ns,
        });
        (now_ns.saturating_sub(m.heard_ns) <= self.silent_after_ns).then_some(m.watermark_ns)
    }

    /// How far past a flow's end the watermarks must reach.
    pub fn tolerance_ns(&self) -> u64 {
        self.tolerance_ns
    }

    /// The claimants that may claim `ip` (by the claim policy), each with
    /// its mark (`None`: never heard from) and its watermark if it is
    /// waited for at `now_ns`: what [`Completeness::is_complete`] takes the
    /// lowest of.
    pub fn claimants_of(
        &self,
        ip: IpAddr,
        now_ns: u64,
    ) -> Vec<(&Arc<str>, Option<Mark>, Option<u64>)> {
        let key = prefix::key(ip);
        let mut numbers: Vec<u32> = self.any.clone();
        for &len in &self.lengths {
            if let Some(list) = self.prefixes.get(&(len, key & prefix::mask(len))) {
                numbers.extend(list);
            }
        }
        numbers.sort_unstable();
        numbers.dedup();
        numbers
            .into_iter()
            .map(|i| {
                let mark = self.marks[i as usize];
                (&self.names[i as usize], mark, self.waited(mark, now_ns))
            })
            .collect()
    }

    /// Whether every flow that ended by `end_ns` is complete, whatever its
    /// remote address (as of the last refresh).
    pub fn all_complete(&self, end_ns: u64) -> bool {
        end_ns.saturating_add(self.tolerance_ns) <= self.floor
    }

    /// Whether `flow` is complete for its remote address (as of the last
    /// refresh).
    pub fn flow_complete(&self, flow: &Flow) -> bool {
        self.is_complete(flow.remote.ip(), covered_until(flow))
    }

    /// Whether a flow towards `ip` that ended at `end_ns` is complete (as of
    /// the last refresh).
    pub fn is_complete(&self, ip: IpAddr, end_ns: u64) -> bool {
        let need = end_ns.saturating_add(self.tolerance_ns);
        if need <= self.floor {
            return true;
        }
        if need > self.lowest_any {
            return false;
        }
        let key = prefix::key(ip);
        self.lengths.iter().all(|&len| {
            self.lowest
                .get(&(len, key & prefix::mask(len)))
                .is_none_or(|&lowest| need <= lowest)
        })
    }

    /// Every claimant heard from, with its mark.
    pub fn marks(&self) -> impl Iterator<Item = (&str, Mark)> {
        self.names
            .iter()
            .zip(&self.marks)
            .filter_map(|(n, m)| Some((&**n, (*m)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_767_225_600 * S;
    const TOL: u64 = 2 * S;
    const SILENT: u64 = 300 * S;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy() -> ClaimPolicy {
        let mut p = ClaimPolicy::new();
        p.allow("a", ["10.0.1.0/24".parse().unwrap()]);
        p.allow("b", ["10.0.2.0/24".parse().unwrap()]);
        p.allow(
            "c",
            [
                "10.0.2.0/24".parse().unwrap(),
                "10.0.3.0/24".parse().unwrap(),
            ],
        );
        p
    }

    #[test]
    fn a_flow_waits_for_every_agent_that_may_claim_its_remote_address() {
        let mut c = Completeness::new(&policy(), TOL, SILENT, T0);
        c.report("a", T0 + 10 * S, T0);
        c.report("b", T0 + 10 * S, T0);
        c.report("c", T0 + 5 * S, T0);
        c.refresh(T0);
        let end = T0 + 7 * S;
        assert!(c.is_complete(ip("10.0.1.9"), end), "only a claims it");
        assert!(!c.is_complete(ip("10.0.2.9"), end), "c is behind");
        assert!(!c.is_complete(ip("10.0.3.9"), end));
        assert!(c.is_complete(ip("10.0.2.9"), T0 + 3 * S));
        assert!(!c.is_complete(ip("10.0.2.9"), T0 + 3 * S + 1), "tolerance");
        assert!(c.is_complete(ip("10.9.9.9"), end), "nobody may claim it");
        assert!(!c.all_complete(end));
        assert!(c.all_complete(T0 + 3 * S));
    }

    #[test]
    fn a_late_agent_holds_back_until_it_reports() {
        let mut c = Completeness::new(&policy(), TOL, SILENT, T0);
        c.report("a", T0, T0);
        c.refresh(T0);
        assert!(!c.is_complete(ip("10.0.1.1"), T0));
        c.report("a", T0 + 30 * S, T0 + 31 * S);
        c.refresh(T0 + 31 * S);
        assert!(c.is_complete(ip("10.0.1.1"), T0));
        // Marks only move forward: an old batch arriving late changes nothing.
        c.report("a", T0 + S, T0 + 32 * S);
        c.refresh(T0 + 32 * S);
        assert!(c.is_complete(ip("10.0.1.1"), T0 + 20 * S));
    }

    #[test]
    fn agents_never_heard_from_or_silent_are_waited_for_only_until_silent_after() {
        let mut c = Completeness::new(&policy(), TOL, SILENT, T0);
        c.refresh(T0);
        assert!(
            !c.is_complete(ip("10.0.2.1"), T0),
            "b and c may yet connect"
        );
        c.refresh(T0 + SILENT + 1);
        assert!(c.is_complete(ip("10.0.2.1"), T0), "b and c never connected");
        c.report("b", T0, T0);
        c.refresh(T0 + SILENT);
        assert!(!c.is_complete(ip("10.0.2.1"), T0 + S));
        c.refresh(T0 + SILENT + 1);
        assert!(c.is_complete(ip("10.0.2.1"), T0 + S), "b went silent");
        c.report("b", T0 + 400 * S, T0 + SILENT + 2);
        c.refresh(T0 + SILENT + 2);
        assert!(!c.is_complete(ip("10.0.2.1"), T0 + 399 * S), "b is back");
    }

    #[test]
    fn the_claimants_of_an_address_are_those_is_complete_waits_for() {
        let mut c = Completeness::new(&policy(), TOL, SILENT, T0);
        c.report("b", T0 + 10 * S, T0);
        c.report("c", T0 + 5 * S, T0);
        let names = |ip: &str, now| {
            c.claimants_of(self::ip(ip), now)
                .into_iter()
                .map(|(n, _, w)| (n.to_string(), w))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names("10.0.2.9", T0),
            vec![
                ("b".into(), Some(T0 + 10 * S)),
                ("c".into(), Some(T0 + 5 * S))
            ]
        );
        assert_eq!(names("10.0.1.9", T0), vec![("a".into(), Some(0))]);
        assert_eq!(names("10.0.1.9", T0 + SILENT + 1), vec![("a".into(), None)]);
        assert!(names("10.9.9.9", T0).is_empty());
    }

    #[test]
    fn an_agent_trusted_for_any_address_holds_back_every_flow() {
        let mut p = policy();
        p.allow_any("anywhere");
        let mut c = Completeness::new(&p, TOL, SILENT, T0);
        c.report("a", T0 + 100 * S, T0);
        c.report("anywhere", T0, T0);
        c.refresh(T0);
        assert!(!c.is_complete(ip("10.0.1.1"), T0 + 50 * S));
        assert!(!c.is_complete(ip("192.0.2.1"), T0 + 50 * S));
    }

    #[test]
    fn marks_are_shared_once_and_peers_marks_are_not_shared_again() {
        let mut a = Completeness::new(&policy(), TOL, SILENT, T0);
        let mut b = Completeness::new(&policy(), TOL, SILENT, T0);
        a.report("a", T0 + 10 * S, T0 + 10 * S);
        a.report("a", T0 + 11 * S, T0 + 11 * S);
        let shared = a.drain_changes();
        assert_eq!(shared.len(), 1);
        assert!(a.drain_changes().is_empty());
        for m in &shared {
            b.apply(m);
        }
        assert!(b.drain_changes().is_empty());
        b.refresh(T0 + 12 * S);
        assert!(b.is_complete(ip("10.0.1.1"), T0 + 9 * S));
        assert!(!b.is_complete(ip("10.0.1.1"), T0 + 10 * S));
        b.apply(&SharedMark {
            claimant: "nobody".into(),
            mark: Mark::default(),
        });
        assert_eq!(b.marks().count(), 1, "unlisted claimants are ignored");
    }
}
