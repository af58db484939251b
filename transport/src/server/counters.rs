//! What the receiver counts.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::codec::ErrorClass;

/// Counters of a [`super::Receiver`], updated as it runs.
#[derive(Debug, Default)]
pub struct ReceiverCounters {
    /// Connections established (handshake passed, client identity read).
    pub connections: AtomicU64,
    /// Handshakes that failed: no or untrusted client certificate, wrong
    /// ALPN, no name in the certificate.
    pub handshake_refused: AtomicU64,
    /// Batches decoded and handed to the collector.
    pub batches: AtomicU64,
    /// Batches the collector acknowledged.
    pub acked: AtomicU64,
    /// Batches the collector refused.
    pub rejected: AtomicU64,
    /// Frames that are not valid protobuf of the expected shape.
    pub malformed: AtomicU64,
    /// Streams that ended (or timed out) before their frame was whole.
    pub truncated: AtomicU64,
    /// Frames longer than the maximum.
    pub oversized: AtomicU64,
    /// Frames of another protocol version.
    pub version: AtomicU64,
    /// Batches over a decoding limit (flows, workloads, labels, string
    /// bytes), refused before they were decoded.
    pub over_limit: AtomicU64,
    /// Connections refused because their identity held as many as it may.
    pub connections_refused: AtomicU64,
    /// Clients sent a QUIC retry to prove their address (handshakes had
    /// piled up).
    pub retries: AtomicU64,
    /// Handshakes refused outright because far too many were in progress.
    pub handshakes_shed: AtomicU64,
    /// Frame bytes read or waiting for the collector's answer now.
    pub in_flight_bytes: AtomicU64,
}

/// A copy of [`ReceiverCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    pub connections: u64,
    pub handshake_refused: u64,
    pub batches: u64,
    pub acked: u64,
    pub rejected: u64,
    pub malformed: u64,
    pub truncated: u64,
    pub oversized: u64,
    pub version: u64,
    pub over_limit: u64,
    pub connections_refused: u64,
    pub retries: u64,
    pub handshakes_shed: u64,
    pub in_flight_bytes: u64,
}

impl ReceiverStats {
    /// Every value with its field's name, for metrics.
    pub fn named(&self) -> [(&'static str, u64); 14] {
        [
            ("connections", self.connections),
            ("handshake_refused", self.handshake_refused),
            ("batches", self.batches),
            ("acked", self.acked),
            ("rejected", self.rejected),
            ("malformed", self.malformed),
            ("truncated", self.truncated),
            ("oversized", self.oversized),
            ("version", self.version),
            ("over_limit", self.over_limit),
            ("connections_refused", self.connections_refused),
            ("retries", self.retries),
            ("handshakes_shed", self.handshakes_shed),
            ("in_flight_bytes", self.in_flight_bytes),
        ]
    }
}

impl ReceiverCounters {
    /// The counters' current values.
    pub fn snapshot(&self) -> ReceiverStats {
        ReceiverStats {
            connections: self.connections.load(Relaxed),
            handshake_refused: self.handshake_refused.load(Relaxed),
            batches: self.batches.load(Relaxed),
            acked: self.acked.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            truncated: self.truncated.load(Relaxed),
            oversized: self.oversized.load(Relaxed),
            version: self.version.load(Relaxed),
            over_limit: self.over_limit.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            retries: self.retries.load(Relaxed),
            handshakes_shed: self.handshakes_shed.load(Relaxed),
            in_flight_bytes: self.in_flight_bytes.load(Relaxed),
        }
    }

    pub(crate) fn bad_frame(&self, class: ErrorClass) {
        let counter = match class {
            ErrorClass::Malformed => &self.malformed,
            ErrorClass::Truncated => &self.truncated,
            ErrorClass::Oversized => &self.oversized,
            ErrorClass::Version => &self.version,
            ErrorClass::Limit => &self.over_limit,
        };
        counter.fetch_add(1, Relaxed);
    }
}
