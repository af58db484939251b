//! What the shipper counts.

use std::{
    net::SocketAddr,
    sync::{
        Mutex,
        atomic::{
            AtomicU64,
            Ordering::{Acquire, Relaxed, Release},
        },
    },
};

/// Counters of a [`super::Shipper`], updated as it runs.
#[derive(Debug, Default)]
pub struct ShipperCounters {
    /// Batches in the spool now (sent or not, not yet acknowledged).
    pub spooled_batches: AtomicU64,
    /// Bytes of the spooled batches now.
    pub spool_bytes: AtomicU64,
    /// Batches written to a collector (every attempt).
    pub sent: AtomicU64,
    /// Batches a collector acknowledged.
    pub acked: AtomicU64,
    /// Failed attempts that will be retried.
    pub retries: AtomicU64,
    /// Switches to the next collector after a failure.
    pub failovers: AtomicU64,
    /// Batches a collector rejected for good (malformed, or refused for a
    /// reason other than identity): dropped.
    pub rejected: AtomicU64,
    /// Flows in the batches rejected for good.
    pub rejected_flows: AtomicU64,
    /// Refusals of a batch because it names another agent than the
    /// certificate (every attempt): the batch is kept and offered again.
    pub refused_identity: AtomicU64,
    /// Refusals of a batch because the collector does not list this agent
    /// in its `[claims]` (every attempt): the batch is kept and offered
    /// again.
    pub refused_unclaimed: AtomicU64,
    /// Batches in the spool now whose agent name a collector refuses (for
    /// identity, or unclaimed), waiting to be offered again.
    pub held_identity: AtomicU64,
    /// Batches dropped, oldest first, because the spool was full.
    pub dropped_spool_full: AtomicU64,
    /// Flows in the batches dropped because the spool was full.
    pub dropped_spool_full_flows: AtomicU64,
    connected: Mutex<Option<SocketAddr>>,
}

/// A copy of [`ShipperCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShipperStats {
    pub spooled_batches: u64,
    pub spool_bytes: u64,
    pub sent: u64,
    pub acked: u64,
    pub retries: u64,
    pub failovers: u64,
    pub rejected: u64,
    pub rejected_flows: u64,
    pub refused_identity: u64,
    pub refused_unclaimed: u64,
    pub held_identity: u64,
    pub dropped_spool_full: u64,
    pub dropped_spool_full_flows: u64,
}

impl ShipperCounters {
    /// The counters' current values.
    pub fn snapshot(&self) -> ShipperStats {
        // Outcomes first (acquire, pairing with `inc`'s release): the spool
        // gauges read next are at least as new as the outcomes counted.
        let acked = self.acked.load(Acquire);
        let rejected = self.rejected.load(Acquire);
        let refused_identity = self.refused_identity.load(Acquire);
        let refused_unclaimed = self.refused_unclaimed.load(Acquire);
        ShipperStats {
            spooled_batches: self.spooled_batches.load(Relaxed),
            spool_bytes: self.spool_bytes.load(Relaxed),
            sent: self.sent.load(Relaxed),
            acked,
            retries: self.retries.load(Relaxed),
            failovers: self.failovers.load(Relaxed),
            rejected,
            rejected_flows: self.rejected_flows.load(Relaxed),
            refused_identity,
            refused_unclaimed,
            held_identity: self.held_identity.load(Relaxed),
            dropped_spool_full: self.dropped_spool_full.load(Relaxed),
            dropped_spool_full_flows: self.dropped_spool_full_flows.load(Relaxed),
        }
    }

    /// The collector the shipper is connected to, if any.
    pub fn connected_to(&self) -> Option<SocketAddr> {
        *self.connected.lock().unwrap()
    }

    pub(crate) fn set_connected(&self, addr: Option<SocketAddr>) {
        *self.connected.lock().unwrap() = addr;
    }

    pub(crate) fn spool(&self, batches: usize, bytes: u64) {
        self.spooled_batches.store(batches as u64, Relaxed);
        self.spool_bytes.store(bytes, Relaxed);
    }

    pub(crate) fn held(&self, batches: usize) {
        self.held_identity.store(batches as u64, Relaxed);
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Release);
    }
}
