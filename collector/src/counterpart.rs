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
//! The index covers held flows only: a flow is entered when its batch
//! arrives and leaves when it is released, and its counterpart arrives
//! within a batch interval of it, well inside the hold. Two reports match
//! when their endpoints mirror each other and their starts lie within the
//! clock-skew tolerance. Only a claimant allowed to claim its local address
//! can answer for it (the same rule as heartbeats). A counterpart never
//! overrides a range: where the table names another workload, the flow is
//! a conflict.

use std::{net::SocketAddr, sync::Arc};

use flowattr_model::{AttributedFlow, Side, TimeRange, Workload};
use rustc_hash::FxHashMap;

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

/// One held flow: when it started, what its own end answers for others,
/// and what its other end answered for it.
#[derive(Debug)]
struct Entry {
    start_ns: u64,
    own: Option<(Arc<Workload>, TimeRange)>,
    other: Counterpart,
}

/// Held flows by `(local, remote)` endpoints.
#[derive(Debug)]
pub struct Counterparts {
    held: FxHashMap<(SocketAddr, SocketAddr), Vec<Entry>>,
    tolerance_ns: u64,
}

fn merge(into: &mut Counterpart, found: &(Arc<Workload>, TimeRange)) {
    *into = match std::mem::take(into) {
        Counterpart::None => Counterpart::Found(found.0.clone(), found.1),
        Counterpart::Found(w, r) if w.id == found.0.id => Counterpart::Found(w, r),
        _ => Counterpart::Conflict,
    };
}

impl Counterparts {
    /// Reports match when their starts are at most `tolerance_ns` apart
    /// (the clock-skew tolerance).
    pub fn new(tolerance_ns: u64) -> Self {
        Self {
            held: FxHashMap::default(),
            tolerance_ns,
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
                Side::Attributed(a) if may_answer(f) => Some((
                    a.workload.clone(),
                    TimeRange::new(f.flow.start_ns, f.flow.end_ns.max(f.flow.start_ns + 1)),
                )),
                _ => None,
            };
            let start = f.flow.start_ns;
            let mut mine = Counterpart::None;
            if let Some(mirrors) = self.held.get_mut(&(f.flow.remote, f.flow.local)) {
                for m in mirrors
                    .iter_mut()
                    .filter(|m| m.start_ns.abs_diff(start) <= tol)
                {
                    if let Some(own) = &own {
                        merge(&mut m.other, own);
                    }
                    if let Some(theirs) = &m.own {
                        merge(&mut mine, theirs);
                    }
                }
            }
            self.held
                .entry((f.flow.local, f.flow.remote))
                .or_default()
                .push(Entry {
                    start_ns: start,
                    own,
                    other: mine,
                });
        }
    }

    /// Takes released flows out, with what their other ends answered, in
    /// order.
    pub fn release(&mut self, flows: &[AttributedFlow]) -> Vec<Counterpart> {
        flows
            .iter()
            .map(|f| {
                let key = (f.flow.local, f.flow.remote);
                let Some(list) = self.held.get_mut(&key) else {
                    return Counterpart::None;
                };
                let Some(i) = list.iter().position(|e| e.start_ns == f.flow.start_ns) else {
                    return Counterpart::None;
                };
                let entry = list.swap_remove(i);
                if list.is_empty() {
                    self.held.remove(&key);
                }
                entry.other
            })
            .collect()
    }

    /// Flows held in the index.
    pub fn len(&self) -> usize {
        self.held.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
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
    fn both_ends_of_a_connection_answer_for_each_other_in_either_order() {
        let mut c = Counterparts::new(2 * S);
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
        assert_eq!(id(&c.release(std::slice::from_ref(&server))[0]), "web-1");
        assert_eq!(id(&c.release(std::slice::from_ref(&client))[0]), "api-1");
        assert!(c.is_empty(), "released flows leave the index");
    }

    #[test]
    fn reports_too_far_apart_or_not_mirrored_do_not_match() {
        let mut c = Counterparts::new(2 * S);
        let client = flow("10.0.0.1:40000", "10.0.0.2:80", 100 * S, Some("web-1"));
        let late = flow("10.0.0.2:80", "10.0.0.1:40000", 103 * S, Some("api-1"));
        let other_port = flow("10.0.0.2:80", "10.0.0.1:40001", 100 * S, Some("api-1"));
        c.arrive(&[client.clone(), late, other_port], |_| true);
        assert_eq!(c.release(&[client])[0], Counterpart::None);
    }

    #[test]
    fn an_end_that_may_not_claim_its_address_or_is_unattributed_does_not_answer() {
        let mut c = Counterparts::new(2 * S);
        let client = flow("10.0.0.1:40000", "10.0.0.2:80", 100 * S, Some("web-1"));
        let server = flow("10.0.0.2:80", "10.0.0.1:40000", 100 * S, Some("intruder"));
        c.arrive(std::slice::from_ref(&client), |_| true);
        c.arrive(std::slice::from_ref(&server), |f| {
            f.flow.local.ip().to_string() != "10.0.0.2"
        });
        assert_eq!(
            c.release(std::slice::from_ref(&client))[0],
            Counterpart::None
        );
        assert_eq!(
            id(&c.release(std::slice::from_ref(&server))[0]),
            "web-1",
            "the allowed end still answers"
        );

        let unattributed = flow("10.0.0.2:80", "10.0.0.1:40002", 100 * S, None);
        let peer = flow("10.0.0.1:40002", "10.0.0.2:80", 100 * S, Some("web-1"));
        c.arrive(&[unattributed.clone(), peer.clone()], |_| true);
        assert_eq!(c.release(&[peer])[0], Counterpart::None);
        assert_eq!(id(&c.release(&[unattributed])[0]), "web-1");
    }

    #[test]
    fn two_different_answers_for_one_connection_are_a_conflict() {
        let mut c = Counterparts::new(2 * S);
        let client = flow("10.0.0.1:40000", "10.0.0.2:80", 100 * S, Some("web-1"));
        c.arrive(
            &[
                client.clone(),
                flow("10.0.0.2:80", "10.0.0.1:40000", 100 * S, Some("api-1")),
                flow("10.0.0.2:80", "10.0.0.1:40000", 101 * S, Some("api-2")),
            ],
            |_| true,
        );
        assert_eq!(c.release(&[client])[0], Counterpart::Conflict);
    }
}
