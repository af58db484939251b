//! Counterparts: the same connection as its other end captured it.
//!
//! When both ends of a connection run agents, each reports the connection:
//! one end's `(local, remote)` is the other's `(remote, local)`, and the
//! other end's local side was attributed at capture. That report names the
//! remote workload of *this very connection*, so it needs no time range: it
//! holds where a range lookup cannot answer — at the first flow of a new
//! owner, where the two hosts' clocks disagree by a little (`clock-skew`),
//! and on an IPv4 address that containers share by port, where ranges of
//! the address alone collide (`conflict`).
//!
//! A flow is entered when its batch arrives. When it is released, what it
//! answers for others stays in the index for a retention time (two holds:
//! the other end's batch arrives within a hold of the flow's end, and from
//! another region only once that region released it, a hold later):
//! a flow is released as soon as it is complete, and the other end's
//! report may come later — from another region, forwarded only once that
//! region has released it — and must still find it. Retained entries are
//! bounded in number; past the bound the oldest go first. Two reports match
//! when their endpoints mirror each other and their starts lie within the
//! clock tolerance (twice the largest offset an agent's clock may have),
//! and, where both are final records of a closed connection, so do their
//! ends: a 4-tuple reused for a new connection soon after (loopback reuses
//! ports within seconds) starts within the tolerance of the old one far
//! more often than it also ends with it. Interval records of a connection
//! still open end where each side happened to report, so only their starts
//! are compared. Only a claimant allowed to claim its local address
//! can answer for it (the same rule as heartbeats). A counterpart never
//! overrides a range: where the table names another workload, the flow is
//! a conflict.

use std::{hash::BuildHasher, net::SocketAddr, sync::Arc};

use flowattr_model::{AttributedFlow, FlowEnd, Side, TimeRange, Workload};
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use slab::Slab;

/// What the other end said about a flow's remote side.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Counterpart {
    /// No report of the other end (yet, or ever).
    #[default]
    None,
    /// The other end's workload, over the other end's report of the flow.
    Found(Arc<Workload>, TimeRange),
    /// Reports naming different workloads matched.
    Conflict,
}

/// One held flow: its endpoints, when it started and ended, what its own
/// end answers for others, and what its other end answered for it. Kept
/// small (96 bytes; every held flow has one): the workload a flow answers
/// with is valid over the flow itself, so only the workload is stored.
#[derive(Debug)]
struct Held {
    ends: Ends,
    start_ns: u64,
    /// The record's end (its interval's end for a connection still open).
    end_ns: u64,
    /// Its local workload, where it may answer for its address over
    /// [`Held::span`].
    own: Option<Arc<Workload>>,
    /// The other end's workload and its report's span, when one matched.
    other: Option<(Arc<Workload>, TimeRange)>,
    flags: u8,
}

impl Held {
    /// The record is final (the connection closed): its end must match too.
    const FINAL: u8 = 1;
    /// Reports naming different workloads matched.
    const CONFLICT: u8 = 2;
    /// Released, and kept only to answer for later reports.
    const RETIRED: u8 = 4;

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The final end, where the record is final.
    fn final_end(&self) -> Option<u64> {
        self.has(Self::FINAL).then_some(self.end_ns)
    }

    /// What the flow answers over: the whole report.
    fn span(&self) -> TimeRange {
        TimeRange::new(self.start_ns, self.end_ns.max(self.start_ns + 1))
    }

    /// Joins an answer from the other end.
    fn merge(&mut self, found: (&Arc<Workload>, TimeRange)) {
        if self.has(Self::CONFLICT) {
            return;
        }
        match &self.other {
            None => self.other = Some((found.0.clone(), found.1)),
            Some((w, _)) if w.id == found.0.id => {}
            Some(_) => {
                self.other = None;
                self.flags |= Self::CONFLICT;
            }
        }
    }

    /// What the other end answered.
    fn counterpart(&mut self) -> Counterpart {
        if self.has(Self::CONFLICT) {
            return Counterpart::Conflict;
        }
        match self.other.take() {
            Some((w, r)) => Counterpart::Found(w, r),
            None => Counterpart::None,
        }
    }
}

/// A flow's `(local, remote)` endpoints, packed for cheap hashing (as
/// IPv6 addresses in 64-bit halves, so the key is 40 bytes, not 48).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Ends {
    local: [u64; 2],
    remote: [u64; 2],
    ports: u32,
}

fn ip_key(addr: &SocketAddr) -> [u64; 2] {
    let v6 = match addr.ip() {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        std::net::IpAddr::V6(v6) => v6,
    };
    let bits = u128::from(v6);
    [(bits >> 64) as u64, bits as u64]
}

impl Ends {
    fn of(local: &SocketAddr, remote: &SocketAddr) -> Self {
        Self {
            local: ip_key(local),
            remote: ip_key(remote),
            ports: u32::from(local.port()) << 16 | u32::from(remote.port()),
        }
    }

    fn hash(&self) -> u64 {
        FxBuildHasher.hash_one(self)
    }
}

/// Held flows, findable by their `(local, remote)` endpoints.
///
/// The flows live in a slab of slots; the hash index holds only slot
/// numbers (4 bytes each), so it stays in the CPU's cache while tens of
/// thousands of flows are held, and a lookup that finds nothing touches no
/// flow. Several flows may share endpoints (a long connection's interval
/// records, a reused port): each has its own slot and index entry.
#[derive(Debug)]
pub struct Counterparts {
    slots: Slab<Held>,
    index: HashTable<u32>,
    tolerance_ns: u64,
    /// Released flows kept to answer, oldest first: (released at, slot).
    retired: std::collections::VecDeque<(u64, u32)>,
    retain_ns: u64,
    max_retired: usize,
}

impl Counterparts {
    /// Reports match when their starts (and final ends) are at most
    /// `tolerance_ns` apart (the clock tolerance). A released flow keeps
    /// answering for `retain_ns`; at most `max_retired` are kept.
    pub fn new(tolerance_ns: u64, retain_ns: u64, max_retired: usize) -> Self {
        Self {
            slots: Slab::new(),
            index: HashTable::new(),
            tolerance_ns,
            retired: std::collections::VecDeque::new(),
            retain_ns,
            max_retired,
        }
    }

    /// Enters a batch's flows. `may_answer(flow)`: whether the flow's local
    /// attribution may answer for its address (its claimant may claim it).
    pub fn arrive(
        &mut self,
        flows: &[AttributedFlow],
        may_answer: impl Fn(&AttributedFlow) -> bool,
    ) {
        let tol = self.tolerance_ns;
        for f in flows {
            let own = match &f.local {
                Side::Attributed(a) if may_answer(f) => Some(a.workload.clone()),
                _ => None,
            };
            let closed = f.flow.end_state != FlowEnd::Ongoing;
            let mut flow = Held {
                ends: Ends::of(&f.flow.local, &f.flow.remote),
                start_ns: f.flow.start_ns,
                end_ns: f.flow.end_ns,
                own,
                other: None,
                flags: if closed { Held::FINAL } else { 0 },
            };
            let (start, end) = (flow.start_ns, flow.final_end());
            let mirror = Ends::of(&f.flow.remote, &f.flow.local);
            for &slot in self.index.iter_hash(mirror.hash()) {
                let m = &mut self.slots[slot as usize];
                let ends_apart = match (m.final_end(), end) {
                    (Some(a), Some(b)) => a.abs_diff(b) > tol,
                    _ => false,
                };
                if m.ends != mirror || m.start_ns.abs_diff(start) > tol || ends_apart {
                    continue;
                }
                if let Some(own) = &flow.own {
                    m.merge((own, flow.span()));
                }
                if let Some(theirs) = &m.own {
                    flow.merge((theirs, m.span()));
                }
            }
            let ends = flow.ends;
            let slot = u32::try_from(self.slots.insert(flow)).expect("fewer than 2^32 held flows");
            let slots = &self.slots;
            self.index
                .insert_unique(ends.hash(), slot, |&s| slots[s as usize].ends.hash());
        }
    }

    /// Takes released flows out, with what their other ends answered, in
    /// order; those that answer for others are retained from `now_ns`.
    pub fn release(&mut self, flows: &[AttributedFlow], now_ns: u64) -> Vec<Counterpart> {
        flows.iter().map(|f| self.take(f, now_ns)).collect()
    }

    fn take(&mut self, f: &AttributedFlow, now_ns: u64) -> Counterpart {
        let ends = Ends::of(&f.flow.local, &f.flow.remote);
        let start = f.flow.start_ns;
        let slots = &self.slots;
        let Ok(entry) = self.index.find_entry(ends.hash(), |&s| {
            let h = &slots[s as usize];
            h.ends == ends && h.start_ns == start && !h.has(Held::RETIRED)
        }) else {
            return Counterpart::None;
        };
        let slot = *entry.get();
        let held = &mut self.slots[slot as usize];
        if held.own.is_some() && self.max_retired > 0 {
            held.flags |= Held::RETIRED;
            let other = held.counterpart();
            self.retired.push_back((now_ns, slot));
            while self.retired.len() > self.max_retired {
                self.drop_oldest_retired();
            }
            return other;
        }
        entry.remove();
        self.slots.remove(slot as usize).counterpart()
    }

    /// Forgets retained flows released more than the retention time before
    /// `now_ns`.
    pub fn expire(&mut self, now_ns: u64) {
        while self
            .retired
            .front()
            .is_some_and(|&(at, _)| at.saturating_add(self.retain_ns) <= now_ns)
        {
            self.drop_oldest_retired();
        }
    }

    fn drop_oldest_retired(&mut self) {
        let Some((_, slot)) = self.retired.pop_front() else {
            return;
        };
        let hash = self.slots[slot as usize].ends.hash();
        if let Ok(entry) = self.index.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        self.slots.remove(slot as usize);
    }

    /// Flows in the index (held, and released ones retained).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowattr_model::{Attribution, AttributionSource, Flow};

    const S: u64 = 1_000_000_000;

    fn flow(local: &str, remote: &str, start: u64, who: Option<&str>) -> AttributedFlow {
        let mut f = AttributedFlow::new(Flow::tcp(
            local.parse().unwrap(),
            remote.parse().unwrap(),
            start,
        ));
        f.flow.end_ns = start + S;
        if let Some(id) = who {
            f.local = Side::Attributed(Attribution {
                workload: Arc::new(Workload::with_id(id)),
                source: AttributionSource::Capture,
                plugin: "ipman".into(),
                valid: TimeRange::new(start, start + S),
            });
        }
        f
    }

    fn id(c: &Counterpart) -> &str {
        match c {
            Counterpart::Found(w, _) => &w.id,
            Counterpart::None => "none",
            Counterpart::Conflict => "conflict",
        }
    }

    #[test]
    fn a_held_flow_costs_96_bytes() {
        // Every held flow and every retained one has a slot.
        assert_eq!(size_of::<Held>(), 96);
    }

    #[test]
    fn both_ends_of_a_connection_answer_for_each_other_in_either_order() {
        let mut c = Counterparts::new(2 * S, 0, 0);
        let client = flow("10.0.0.1:40000", "10.0.0.2:80", 100 * S, Some("web-1"));
        // The server's clock is 1.5 s ahead.
        let server = flow(
            "10.0.0.2:80",
            "10.0.0.1:40000",
            100 * S + 1_500_000_000,
            Some("api-1"),
        );
        c.arrive(std::slice::from_ref(&client), |_| true);
        c.arrive(std::slice::from_ref(&server), |_| true);
        assert_eq!(id(&c.release(std::slice::from_ref(&server), 0)[0]), "web-1");
        assert_eq!(id(&c.release(std::slice::from_ref(&client), 0)[0]), "api-1");
        assert!(c.is_empty(), "released flows leave the index");
    }

    #[test]
    fn reports_too_far_apart_or_not_mirrored_do_not_match() {
        let mut c = Counterparts::new(2 * S, 0, 0);
        let client = flow("10.0.0.1:40000", "10.0.0.2:80", 100 * S, Some("web-1"));
        let late = flow("10.0.0.2:80", "10.0.0.1:40000", 103 * S, Some("api-1"));
        let other_port = flow("10.0.0.2:80", "10.0.0.1:40001", 100 * S, Some("api-1"));
        c.arrive(&[client.clone(), late, other_port], |_| true);
        assert_eq!(c.release(&[client], 0)[0], Counterpart::None);
    }

    #[test]
    fn a_reused_four_tuple_matches_only_the_connection_that_ends_with_it() {
        let mut c = Counterparts::new(2 * S, 0, 0);
        // A short connection, then the same 4-tuple again 1.5 s later (the
        // address has a new owner by then) lasting 10 s.
        let old_client = flow("10.0.0.1:40000", "10.0.0.2:80", 100 * S, Some("web-1"));
        let mut new_server = flow(
            "10.0.0.2:80",
            "10.0.0.1:40000",
            101 * S + S / 2,
            Some("api-2"),
        );
        new_server.flow.end_ns = 111 * S;
        c.arrive(std::slice::from_ref(&old_client), |_| true);
        c.arrive(std::slice::from_ref(&new_server), |_| true);
        assert_eq!(
            c.release(std::slice::from_ref(&old_client), 0)[0],
            Counterpart::None
        );
        assert_eq!(
            c.release(std::slice::from_ref(&new_server), 0)[0],
            Counterpart::None
        );

        // Interval records of a connection still open end wherever each side
        // reported: their starts alone decide.
        let mut client = flow("10.0.0.1:40001", "10.0.0.2:80", 100 * S, Some("web-1"));
        let mut server = flow("10.0.0.2:80", "10.0.0.1:40001", 100 * S, Some("api-1"));
        client.flow.end_state = FlowEnd::Ongoing;
        client.flow.end_ns = 130 * S;
        server.flow.end_state = FlowEnd::Ongoing;
        server.flow.end_ns = 160 * S;
        c.arrive(&[client.clone(), server], |_| true);
        assert_eq!(id(&c.release(&[client], 0)[0]), "api-1");
    }

    #[test]
    fn an_end_that_may_not_claim_its_address_or_is_unattributed_does_not_answer() {
        let mut c = Counterparts::new(2 * S, 0, 0);
        let client = flow("10.0.0.1:40000", "10.0.0.2:80", 100 * S, Some("web-1"));
        let server = flow("10.0.0.2:80", "10.0.0.1:40000", 100 * S, Some("intruder"));
        c.arrive(std::slice::from_ref(&client), |_| true);
        c.arrive(std::slice::from_ref(&server), |f| {
            f.flow.local.ip().to_string() != "10.0.0.2"
        });
        assert_eq!(
            c.release(std::slice::from_ref(&client), 0)[0],
            Counterpart::None
        );
        assert_eq!(
            id(&c.release(std::slice::from_ref(&server), 0)[0]),
            "web-1",
            "the allowed end still answers"
        );

        let unattributed = flow("10.0.0.2:80", "10.0.0.1:40002", 100 * S, None);
        let peer = flow("10.0.0.1:40002", "10.0.0.2:80", 100 * S, Some("web-1"));
        c.arrive(&[unattributed.clone(), peer.clone()], |_| true);
        assert_eq!(c.release(&[peer], 0)[0], Counterpart::None);
        assert_eq!(id(&c.release(&[unattributed], 0)[0]), "web-1");
    }

    #[test]
    fn several_flows_with_the_same_endpoints_each_keep_their_own_answer() {
        let mut c = Counterparts::new(2 * S, 0, 0);
        let early = flow("10.0.0.1:40000", "10.0.0.2:80", 100 * S, Some("web-1"));
        let late = flow("10.0.0.1:40000", "10.0.0.2:80", 200 * S, Some("web-1"));
        c.arrive(&[early.clone(), late.clone()], |_| true);
        c.arrive(
            &[flow(
                "10.0.0.2:80",
                "10.0.0.1:40000",
                200 * S,
                Some("api-2"),
            )],
            |_| true,
        );
        assert_eq!(c.len(), 3);
        assert_eq!(
            c.release(std::slice::from_ref(&early), 0)[0],
            Counterpart::None
        );
        assert_eq!(id(&c.release(std::slice::from_ref(&late), 0)[0]), "api-2");
        assert_eq!(
            c.release(std::slice::from_ref(&late), 0)[0],
            Counterpart::None,
            "taken once"
        );
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn released_slots_are_reused_so_the_index_stays_as_large_as_what_is_held() {
        let mut c = Counterparts::new(2 * S, 0, 0);
        let mut first_capacity = None;
        for round in 0..3 {
            let flows: Vec<_> = (0..1000)
                .map(|i| {
                    let local = format!("10.0.{}.{}:40000", i / 250, i % 250);
                    flow(&local, "10.9.0.1:80", (100 + round) * S, Some("web-1"))
                })
                .collect();
            c.arrive(&flows, |_| true);
            assert_eq!(c.len(), 1000);
            // Released out of arrival order.
            for f in flows.iter().rev() {
                assert_eq!(c.release(std::slice::from_ref(f), 0), [Counterpart::None]);
            }
            assert!(c.is_empty());
            let capacity = c.slots.capacity();
            assert!(capacity < 2000, "{capacity} slots for 1000 flows");
            assert_eq!(
                *first_capacity.get_or_insert(capacity),
                capacity,
                "round {round} reused the slots"
            );
        }
    }

    #[test]
    fn two_different_answers_for_one_connection_are_a_conflict() {
        let mut c = Counterparts::new(2 * S, 0, 0);
        let client = flow("10.0.0.1:40000", "10.0.0.2:80", 100 * S, Some("web-1"));
        c.arrive(
            &[
                client.clone(),
                flow("10.0.0.2:80", "10.0.0.1:40000", 100 * S, Some("api-1")),
                flow("10.0.0.2:80", "10.0.0.1:40000", 101 * S, Some("api-2")),
            ],
            |_| true,
        );
        assert_eq!(c.release(&[client], 0)[0], Counterpart::Conflict);
    }

    #[test]
    fn a_released_flow_answers_for_a_later_report_until_its_retention_ends() {
        let mut c = Counterparts::new(2 * S, 10 * S, 100);
        let client = flow("10.0.0.1:40000", "10.0.0.2:80", 100 * S, Some("web-1"));
        c.arrive(std::slice::from_ref(&client), |_| true);
        // Released first (complete in its region); the server's report
        // comes later, forwarded from the region that captured it.
        assert_eq!(
            c.release(std::slice::from_ref(&client), 102 * S)[0],
            Counterpart::None
        );
        let server = flow("10.0.0.2:80", "10.0.0.1:40000", 100 * S, Some("api-1"));
        c.arrive(std::slice::from_ref(&server), |_| true);
        assert_eq!(
            id(&c.release(std::slice::from_ref(&server), 105 * S)[0]),
            "web-1"
        );
        // A retained flow is never released twice.
        assert_eq!(
            c.release(std::slice::from_ref(&client), 105 * S)[0],
            Counterpart::None
        );
        c.expire(111 * S);
        assert_eq!(c.len(), 2, "both retained");
        c.expire(113 * S);
        assert_eq!(c.len(), 1, "the client's retention is over");
        c.expire(115 * S);
        assert!(c.is_empty());
        // Too late: gone.
        let again = flow("10.0.0.2:80", "10.0.0.1:40000", 100 * S, Some("api-1"));
        c.arrive(std::slice::from_ref(&again), |_| true);
        assert_eq!(
            c.release(std::slice::from_ref(&again), 116 * S)[0],
            Counterpart::None
        );
    }

    #[test]
    fn retained_flows_are_bounded_oldest_first() {
        let mut c = Counterparts::new(2 * S, 1_000 * S, 2);
        let flows: Vec<_> = (0..3)
            .map(|i| {
                flow(
                    &format!("10.0.0.1:{}", 40000 + i),
                    "10.0.0.2:80",
                    100 * S,
                    Some("web-1"),
                )
            })
            .collect();
        c.arrive(&flows, |_| true);
        c.release(&flows, 101 * S);
        assert_eq!(c.len(), 2);
        let first = flow("10.0.0.2:80", "10.0.0.1:40000", 100 * S, Some("api-1"));
        let last = flow("10.0.0.2:80", "10.0.0.1:40002", 100 * S, Some("api-1"));
        c.arrive(&[first.clone(), last.clone()], |_| true);
        assert_eq!(
            c.release(&[first, last], 102 * S)
                .iter()
                .map(id)
                .collect::<Vec<_>>(),
            ["none", "web-1"]
        );
    }
}
