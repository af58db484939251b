//! What keeps one agent from crowding out the others: a global budget of
//! frame bytes in flight and a share of it per identity, a cap on each
//! identity's connections, a small pool that decodes frames off the async
//! workers, and bad-frame warnings limited per identity.
//!
//! A frame's bytes are taken from its sender's share, then from the global
//! budget, once its length prefix is read and before its body is; they are
//! given back when the collector has answered (or the stream ends). A
//! sender that floods fills its own share and waits there, while the rest
//! of the budget serves everyone else.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ReceiverCounters;
use crate::codec::DecodeLimits;

/// Bad-frame warnings of one identity are logged at most this often.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The limits, as the receiver's configuration sets them.
#[derive(Debug, Clone, Copy)]
pub(super) struct AdmissionLimits {
    pub in_flight_bytes: usize,
    pub in_flight_bytes_per_identity: usize,
    pub connections_per_identity: usize,
    pub decode_threads: usize,
    pub decode: DecodeLimits,
}

/// Shared by every connection of a receiver.
pub(super) struct Admission {
    limits: AdmissionLimits,
    budget: Arc<Semaphore>,
    decoders: Arc<Semaphore>,
    peers: Mutex<HashMap<String, Arc<PeerShare>>>,
    counters: Arc<ReceiverCounters>,
}

/// One identity's share: its connections, its part of the budget, its
/// warnings.
pub(super) struct PeerShare {
    connections: Mutex<usize>,
    budget: Arc<Semaphore>,
    warned: Mutex<(Option<Instant>, u64)>,
}

/// Frame bytes taken from the budgets; given back when dropped.
pub(super) struct Admitted {
    _share: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
    bytes: u64,
    counters: Arc<ReceiverCounters>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.counters.in_flight_bytes.fetch_sub(self.bytes, Relaxed);
    }
}

impl Admission {
    /// Budgets of at least one largest frame each.
    pub fn new(
        mut limits: AdmissionLimits,
        max_frame_bytes: usize,
        counters: Arc<ReceiverCounters>,
    ) -> Self {
        limits.in_flight_bytes_per_identity = limits
            .in_flight_bytes_per_identity
            .max(max_frame_bytes)
            .min(Semaphore::MAX_PERMITS);
        limits.in_flight_bytes = limits
            .in_flight_bytes
            .max(limits.in_flight_bytes_per_identity)
            .min(Semaphore::MAX_PERMITS);
        limits.decode_threads = limits.decode_threads.max(1);
        Self {
            budget: Arc::new(Semaphore::new(limits.in_flight_bytes)),
            decoders: Arc::new(Semaphore::new(limits.decode_threads)),
            peers: Mutex::default(),
            limits,
            counters,
        }
    }

    pub fn decode_limits(&self) -> &DecodeLimits {
        &self.limits.decode
    }

    /// A new connection of `peer`, or `None` when it already has as many
    /// as it may.
    pub fn connect(&self, peer: &str) -> Option<Arc<PeerShare>> {
        let mut peers = self.peers.lock().unwrap();
        let share = peers.entry(peer.to_owned()).or_insert_with(|| {
            Arc::new(PeerShare {
                connections: Mutex::new(0),
                budget: Arc::new(Semaphore::new(self.limits.in_flight_bytes_per_identity)),
                warned: Mutex::new((None, 0)),
            })
        });
        let mut connections = share.connections.lock().unwrap();
        if *connections >= self.limits.connections_per_identity {
            return None;
        }
        *connections += 1;
        drop(connections);
        Some(share.clone())
    }

    /// A connection of `peer` ended; its share goes with its last one.
    pub fn disconnect(&self, peer: &str, share: &PeerShare) {
        let mut peers = self.peers.lock().unwrap();
        let mut connections = share.connections.lock().unwrap();
        *connections -= 1;
        if *connections == 0 {
            peers.remove(peer);
        }
    }

    /// Takes `bytes` from `share`, then from the global budget, waiting
    /// until both have room.
    pub async fn admit(&self, share: &PeerShare, bytes: usize) -> Admitted {
        // Never more than a budget holds: the constructor makes both at
        // least one largest frame, and `bytes` is at most one.
        let n = u32::try_from(bytes).unwrap_or(u32::MAX);
        let share = share.budget.clone().acquire_many_owned(n).await;
        let global = self.budget.clone().acquire_many_owned(n).await;
        self.counters
            .in_flight_bytes
            .fetch_add(u64::from(n), Relaxed);
        Admitted {
            _share: share.expect("never closed"),
            _global: global.expect("never closed"),
            bytes: u64::from(n),
            counters: self.counters.clone(),
        }
    }

    /// Runs `decode` on the blocking pool, at most `decode_threads` at a
    /// time (first come, first served).
    pub async fn decode<T: Send + 'static>(
        &self,
        decode: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let _slot = self.decoders.acquire().await.expect("never closed");
        tokio::task::spawn_blocking(decode)
            .await
            .expect("decoding does not panic")
    }
}

impl PeerShare {
    /// Whether a warning about a bad frame may be logged now, and how many
    /// were held back since the last one.
    pub fn may_warn(&self) -> Option<u64> {
        let mut warned = self.warned.lock().unwrap();
        let now = Instant::now();
        match warned.0 {
            Some(at) if now.duration_since(at) < WARN_EVERY => {
                warned.1 += 1;
                None
            }
            _ => {
                let held_back = warned.1;
                *warned = (Some(now), 0);
                Some(held_back)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(per_identity: usize, global: usize) -> Admission {
        Admission::new(
            AdmissionLimits {
                in_flight_bytes: global,
                in_flight_bytes_per_identity: per_identity,
                connections_per_identity: 2,
                decode_threads: 1,
                decode: DecodeLimits::default(),
            },
            10,
            Arc::default(),
        )
    }

    fn in_flight(a: &Admission) -> u64 {
        a.counters.in_flight_bytes.load(Relaxed)
    }

    #[tokio::test]
    async fn one_identity_fills_its_share_and_others_still_get_in() {
        let a = admission(30, 50);
        let bad = a.connect("bad").unwrap();
        let good = a.connect("good").unwrap();
        let held: Vec<_> = [
            a.admit(&bad, 10).await,
            a.admit(&bad, 10).await,
            a.admit(&bad, 10).await,
        ]
        .into();
        assert_eq!(in_flight(&a), 30);
        let more = tokio::time::timeout(Duration::from_millis(50), a.admit(&bad, 10)).await;
        assert!(more.is_err(), "over its share: waits");
        let g = tokio::time::timeout(Duration::from_millis(50), a.admit(&good, 10)).await;
        assert!(g.is_ok(), "another identity is admitted");
        drop(held);
        assert_eq!(in_flight(&a), 10);
        drop(g);
        assert_eq!(in_flight(&a), 0);
    }

    #[test]
    fn connections_are_capped_per_identity_and_shares_go_with_the_last() {
        let a = admission(10, 10);
        let one = a.connect("x").unwrap();
        let two = a.connect("x").unwrap();
        assert!(a.connect("x").is_none());
        assert!(a.connect("y").is_some());
        a.disconnect("x", &one);
        assert!(a.connect("x").is_some());
        a.disconnect("x", &two);
        assert_eq!(a.peers.lock().unwrap().len(), 2);
    }

    #[test]
    fn warnings_are_limited_and_count_what_was_held_back() {
        let a = admission(10, 10);
        let share = a.connect("x").unwrap();
        assert_eq!(share.may_warn(), Some(0));
        assert_eq!(share.may_warn(), None);
        assert_eq!(share.may_warn(), None);
        share.warned.lock().unwrap().0 = Some(Instant::now() - WARN_EVERY);
        assert_eq!(share.may_warn(), Some(2));
    }
}
