//! What the Kafka sharing has done, as atomics shared by its threads and as
//! a snapshot for metrics and tests.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use super::{client::DeliveryStats, codec::MalformedReason};

/// Live counters, written by the caller's thread, the reader thread and the
/// producer's delivery callbacks.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub published: AtomicU64,
    pub queue_full: AtomicU64,
    pub deliveries: Arc<DeliveryStats>,
    pub consumed: AtomicU64,
    pub ranges_received: AtomicU64,
    pub marks_published: AtomicU64,
    pub marks_invalid: AtomicU64,
    pub ranges_invalid: AtomicU64,
    pub marks_received: AtomicU64,
    pub marks_dropped: AtomicU64,
    pub own_skipped: AtomicU64,
    pub malformed: [AtomicU64; MalformedReason::ALL.len()],
    pub lag: AtomicU64,
    pub partitions_behind: AtomicU64,
    pub repositions: AtomicU64,
    pub broker_up: AtomicBool,
    pub warmed_up: AtomicBool,
}

/// A snapshot of what the Kafka sharing has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharingCounters {
    /// Messages handed to the producer (one per address and publish, and
    /// the watermark messages).
    pub published: u64,
    /// Messages acknowledged by the broker.
    pub delivered: u64,
    /// Messages lost: `queue_full + delivery_failed`.
    pub publish_errors: u64,
    /// Messages refused because the producer's queue was full.
    pub queue_full: u64,
    /// Messages whose delivery failed for good (timed out or refused).
    pub delivery_failed: u64,
    /// Messages kept to send again because the topic was missing (a broker
    /// that lost its data); they are sent once the topic is back.
    pub requeued: u64,
    /// Messages still kept to send again.
    pub requeue_waiting: u64,
    /// Agents whose latest local watermark is kept to publish once the
    /// topic is confirmed (see
    /// [`KafkaSharing::publish_marks`](super::KafkaSharing::publish_marks)).
    pub marks_waiting: u64,
    /// Valid messages taken from the topic and handed on.
    pub consumed: u64,
    /// Ranges in those messages.
    pub ranges_received: u64,
    /// Watermarks in the messages handed to the producer.
    pub marks_published: u64,
    /// Watermarks not published because every reader would refuse them
    /// (a claimant empty or longer than
    /// [`MAX_CLAIMANT_LEN`](super::codec::MAX_CLAIMANT_LEN)).
    pub marks_invalid: u64,
    /// Ranges not published because every reader would refuse them (a
    /// workload or claimant past the [`codec`](super::codec) limits).
    pub ranges_invalid: u64,
    /// Watermarks in the valid messages taken from the topic.
    pub marks_received: u64,
    /// Watermarks received but dropped because too many different agents'
    /// were waiting to be polled (see
    /// [`KafkaSharing::poll_marks`](super::KafkaSharing::poll_marks)).
    pub marks_dropped: u64,
    /// This collector's own messages skipped after warm-up.
    pub own_skipped: u64,
    /// Refused messages (malformed, past a limit, or failing
    /// authentication), by [`MalformedReason::index`].
    pub malformed: [u64; MalformedReason::ALL.len()],
    /// Messages on the broker not yet read, over all partitions (as of the
    /// client's last statistics, about every second).
    pub lag: u64,
    /// Partitions not yet read up to their end since start (warm-up).
    pub partitions_behind: u64,
    /// Times the reader moved back after an outage to read what it may
    /// have missed.
    pub repositions: u64,
    /// Whether the broker answered the last metadata request.
    pub broker_up: bool,
    /// Whether the history was read (every partition reached its end once).
    pub warmed_up: bool,
}

impl SharingCounters {
    /// Refused messages of one reason.
    pub fn malformed(&self, reason: MalformedReason) -> u64 {
        self.malformed[reason.index()]
    }

    /// Refused messages, all reasons.
    pub fn malformed_total(&self) -> u64 {
        self.malformed.iter().sum()
    }
}

impl Counters {
    pub fn snapshot(&self, requeue_waiting: usize, marks_waiting: usize) -> SharingCounters {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let queue_full = get(&self.queue_full);
        let delivery_failed = get(&self.deliveries.failed);
        SharingCounters {
            published: get(&self.published),
            delivered: get(&self.deliveries.delivered),
            publish_errors: queue_full + delivery_failed,
            queue_full,
            delivery_failed,
            requeued: get(&self.deliveries.requeued),
            requeue_waiting: requeue_waiting as u64,
            marks_waiting: marks_waiting as u64,
            consumed: get(&self.consumed),
            ranges_received: get(&self.ranges_received),
            marks_published: get(&self.marks_published),
            marks_invalid: get(&self.marks_invalid),
            ranges_invalid: get(&self.ranges_invalid),
            marks_received: get(&self.marks_received),
            marks_dropped: get(&self.marks_dropped),
            own_skipped: get(&self.own_skipped),
            malformed: std::array::from_fn(|i| get(&self.malformed[i])),
            lag: get(&self.lag),
            partitions_behind: get(&self.partitions_behind),
            repositions: get(&self.repositions),
            broker_up: self.broker_up.load(Ordering::Relaxed),
            warmed_up: self.warmed_up.load(Ordering::Relaxed),
        }
    }
}
