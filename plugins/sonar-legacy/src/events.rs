//! The legacy attributor's memory: every address's events in arrival order.
//!
//! Each address keeps its events sorted by arrival time (ties in ingest
//! order), so "the last event that had arrived by a cutoff" is one binary
//! search. Pruning never drops an address's newest event for age; only the
//! `max_events` cap may, and only once every older event is gone.
//!
//! Age pruning is exact without sweeping on every call: [`EventLog::decide`]
//! treats an event older than the retention horizon that is not its address's
//! newest as already pruned, so answers do not depend on when
//! [`EventLog::prune_expired`] last ran; that only frees the memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use flowattr_sdk::{IpChange, Workload};

use crate::intern::Interner;

/// One ingested event.
#[derive(Debug, Clone)]
struct Event {
    arrival_ns: u64,
    event_ns: u64,
    /// The assigned workload, or `None` for a release.
    owner: Option<Arc<Workload>>,
}

/// Every address's events, sorted by arrival.
#[derive(Debug, Default)]
pub struct EventLog {
    by_address: HashMap<IpAddr, Vec<Event>>,
    len: usize,
    workloads: Interner,
}

impl EventLog {
    /// Adds one event for `address` (which should be canonical).
    pub fn insert(&mut self, address: IpAddr, change: IpChange, event_ns: u64, arrival_ns: u64) {
        let owner = match change {
            IpChange::Assigned(w) => Some(self.workloads.intern(w)),
            IpChange::Released => None,
        };
        let events = self.by_address.entry(address).or_default();
        // Events mostly arrive in order: append; otherwise after every event
        // that arrived no later, so ties keep ingest order.
        let at = match events.last() {
            Some(last) if last.arrival_ns > arrival_ns => {
                events.partition_point(|e| e.arrival_ns <= arrival_ns)
            }
            _ => events.len(),
        };
        events.insert(
            at,
            Event {
                arrival_ns,
                event_ns,
                owner,
            },
        );
        self.len += 1;
    }

    /// The workload `address` belonged to by the last event that had arrived
    /// by `cutoff_ns`, with that event's time; `None` if that event is a
    /// release or there is none. Events that arrived before `horizon_ns`,
    /// except the address's newest, count as pruned.
    pub fn decide(
        &self,
        address: IpAddr,
        cutoff_ns: u64,
        horizon_ns: u64,
    ) -> Option<(&Arc<Workload>, u64)> {
        let events = self.by_address.get(&address)?;
        let i = events.partition_point(|e| e.arrival_ns <= cutoff_ns);
        let last = events[..i].last()?;
        if i < events.len() && last.arrival_ns < horizon_ns {
            return None;
        }
        last.owner.as_ref().map(|w| (w, last.event_ns))
    }

    /// Prunes events that arrived before `horizon_ns`, except each address's
    /// newest. Returns how many were pruned.
    pub fn prune_expired(&mut self, horizon_ns: u64) -> usize {
        let mut pruned = 0;
        for events in self.by_address.values_mut() {
            let history = &events[..events.len() - 1];
            let n = history.partition_point(|e| e.arrival_ns < horizon_ns);
            events.drain(..n);
            pruned += n;
        }
        self.forget(pruned);
        pruned
    }

    /// Prunes the oldest events until at most `max` remain. Older events of
    /// an address go first; only when more addresses than `max` remain are
    /// whole addresses dropped, those whose newest event is oldest first.
    /// Ties are broken by address, so the result does not depend on hashing.
    /// Returns how many were pruned.
    pub fn prune_to(&mut self, max: usize) -> usize {
        let Some(excess) = self.len.checked_sub(max).filter(|&n| n > 0) else {
            return 0;
        };
        let mut pruned = self.prune_oldest_history(excess);
        if pruned < excess {
            let mut newest: Vec<(u64, IpAddr)> = self
                .by_address
                .iter()
                .map(|(a, events)| (events[events.len() - 1].arrival_ns, *a))
                .collect();
            let whole = excess - pruned;
            newest.select_nth_unstable(whole - 1);
            for (_, address) in &newest[..whole] {
                pruned += self
                    .by_address
                    .remove(address)
                    .map_or(0, |events| events.len());
            }
        }
        self.forget(pruned);
        pruned
    }

    /// Prunes up to `n` of the oldest events that are not their address's
    /// newest. Returns how many were pruned.
    fn prune_oldest_history(&mut self, n: usize) -> usize {
        let mut arrivals: Vec<u64> = self
            .by_address
            .values()
            .flat_map(|events| events[..events.len() - 1].iter().map(|e| e.arrival_ns))
            .collect();
        let n = n.min(arrivals.len());
        if n == 0 {
            return 0;
        }
        let threshold = *arrivals.select_nth_unstable(n - 1).1;
        drop(arrivals);
        // Everything older than the n-th oldest goes (fewer than n events)…
        let mut pruned = 0;
        for events in self.by_address.values_mut() {
            let k = events[..events.len() - 1].partition_point(|e| e.arrival_ns < threshold);
            events.drain(..k);
            pruned += k;
        }
        // …then events tied with it, address by address, up to n.
        let mut tied: Vec<IpAddr> = self
            .by_address
            .iter()
            .filter(|(_, events)| events.len() > 1 && events[0].arrival_ns == threshold)
            .map(|(a, _)| *a)
            .collect();
        tied.sort_unstable();
        for address in tied {
            if pruned == n {
                break;
            }
            let events = self.by_address.get_mut(&address).expect("listed above");
            let k = events[..events.len() - 1]
                .partition_point(|e| e.arrival_ns <= threshold)
                .min(n - pruned);
            events.drain(..k);
            pruned += k;
        }
        pruned
    }

    fn forget(&mut self, pruned: usize) {
        if pruned > 0 {
            self.len -= pruned;
            self.workloads.purge();
        }
    }

    /// How many events are kept.
    pub fn len(&self) -> usize {
        self.len
    }

    /// How many addresses have events.
    pub fn addresses(&self) -> usize {
        self.by_address.len()
    }

    /// How many distinct workloads the events refer to.
    pub fn workloads(&self) -> usize {
        self.workloads.len()
    }
}

#[cfg(test)]
mod tests;
