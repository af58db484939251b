//! Ownership sharing through Kafka (the method's point 3): every collector
//! publishes the ranges its local heartbeats changed and applies every other
//! collector's, so each holds the whole fleet's map although it receives
//! only a slice of the flows. Beside the ranges, on the same topic, it
//! publishes its agents' completeness watermarks and takes the others', so
//! each knows how far every agent of the fleet has reported
//! ([`crate::completeness`]).
//!
//! Optional: a single collector with no Kafka configured never builds any of
//! this, and keeps its ownership table in process.
//!
//! - [`codec`] is the message format (pure, versioned, checked, bounded).
//! - [`auth`] signs messages and checks who sent them and for whom they
//!   may speak (pure); `admit` applies it, with the codec, to each message
//!   read.
//! - [`security`] is how the clients connect (TLS, SASL).
//! - [`KafkaSharing`] is the shell: a producer and a reader thread on
//!   librdkafka. The collector's core stays synchronous and sans-IO: it
//!   drains the table's changes into [`KafkaSharing::publish`] and applies
//!   what [`KafkaSharing::poll`] returns, and likewise the watermarks with
//!   [`KafkaSharing::publish_marks`] and [`KafkaSharing::poll_marks`]; none
//!   waits on the broker, so attribution goes on from the in-memory table
//!   while Kafka is down (other collectors' agents then fall silent here
//!   after `silent_after`, and are no longer waited for).
//!
//! ```no_run
//! use std::time::Duration;
//! use flowattr_collector::completeness::Completeness;
//! use flowattr_collector::ownership::{ClaimPolicy, OwnershipConfig, OwnershipTable};
//! use flowattr_collector::sharing::{KafkaSharing, SharingConfig};
//! # fn now_ns() -> u64 { 0 }
//!
//! let mut table = OwnershipTable::new(OwnershipConfig::default());
//! let mut completeness = Completeness::new(&ClaimPolicy::new(), 2_000_000_000, 300_000_000_000, 0);
//! let config = SharingConfig::new("127.0.0.1:9092", "flowattr-ownership");
//! let mut sharing = KafkaSharing::new(config, "collector-1").unwrap();
//! // At start: what the fleet (and this collector, before a restart) knew.
//! if let Ok(history) = sharing.warm_up(Duration::from_secs(30)) {
//!     for u in &history {
//!         table.apply(u, now_ns());
//!     }
//! }
//! loop {
//!     // … heartbeats from agents go into `table`, watermarks into
//!     // `completeness` …
//!     sharing.publish(&table.drain_changes());
//!     sharing.publish_marks(&completeness.drain_changes());
//!     for m in sharing.poll_marks() {
//!         completeness.apply(&m);
//!     }
//!     for u in sharing.poll(10_000, Duration::from_millis(100)) {
//!         table.apply(&u, now_ns());
//!     }
//! }
//! ```
//!
//! Ordering does not matter for correctness: the table is a function of
//! the set of claims, so updates applied late, twice or out of order give
//! the same table. That is why the producer may retry freely and why the
//! reader may read a partition again after an outage. Watermarks likewise:
//! each of a mark's two times only moves forward, so a mark applied late,
//! twice or after a newer one changes nothing. Warm-up hands on the
//! history's watermarks too, each with the time its agent was last heard:
//! an agent silent since is not waited for, however recent the message.

pub mod auth;
pub mod codec;
pub mod security;

mod admit;
pub(crate) mod client;
mod counters;
mod kafka;
mod reader;

use std::{sync::Arc, time::Duration};

pub use admit::Refusal;
pub use counters::SharingCounters;
pub use kafka::{KafkaSharing, MAX_MARKS_PENDING, Published};

/// Where and how ranges are shared.
#[derive(Debug, Clone)]
pub struct SharingConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    /// The topic all collectors of a region share.
    pub topic: String,
    /// Partitions of the topic when this collector has to create it.
    /// Default 12.
    pub partitions: i32,
    /// How far back the history is read at start. Default 15 min, the
    /// ownership table's expiry: older ranges would be refused as stale.
    /// The topic's retention must be at least this long.
    pub warmup_window: Duration,
    /// Messages the producer holds while the broker is slow or down; past
    /// it, publishing refuses (and counts) messages. Default 100,000.
    pub publish_queue_messages: usize,
    /// Bytes the producer holds. Default 64 MiB.
    pub publish_queue_bytes: usize,
    /// How long a message may wait for the broker before it is given up
    /// (and counted). Default 15 min: a broker down for less loses nothing
    /// that fitted in the queue, and a range older than that is stale
    /// anyway.
    pub delivery_timeout: Duration,
    /// Messages read but not yet polled by the collector; past it, the
    /// reader waits (the broker keeps the rest). Default 10,000.
    pub inbound_queue: usize,
    /// How the clients connect. Default plaintext.
    pub security: security::KafkaSecurity,
    /// A message read larger than this is refused before it is parsed.
    /// Default 1,000,000.
    pub max_message_bytes: usize,
    /// This collector's signing key: every message it publishes is
    /// signed. `None`: unsigned.
    pub signer: Option<Arc<auth::Signer>>,
    /// The origins whose messages are taken, with their keys and
    /// claimants; this collector's own (with [`SharingConfig::signer`]'s
    /// key, for any claimant) is added. `None`: nothing is verified, every
    /// well-formed message is taken (unauthenticated sharing; logged as a
    /// warning at start).
    pub trust: Option<auth::Trust>,
}

impl SharingConfig {
    /// The defaults, for `brokers` and `topic`.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: topic.into(),
            partitions: 12,
            warmup_window: Duration::from_secs(15 * 60),
            publish_queue_messages: 100_000,
            publish_queue_bytes: 64 << 20,
            delivery_timeout: Duration::from_secs(15 * 60),
            inbound_queue: 10_000,
            security: security::KafkaSecurity::default(),
            max_message_bytes: codec::DEFAULT_MAX_MESSAGE_BYTES,
            signer: None,
            trust: None,
        }
    }

    fn validate(&self) -> Result<(), SharingError> {
        let bad = |what: &str| Err(SharingError::Config(what.to_string()));
        if self.brokers.trim().is_empty() {
            return bad("no Kafka brokers are given");
        }
        if self.topic.trim().is_empty() {
            return bad("the sharing topic's name is empty");
        }
        if self.partitions < 1 {
            return bad("the sharing topic needs at least one partition");
        }
        if self.publish_queue_messages == 0 || self.publish_queue_bytes == 0 {
            return bad("the publish queue bounds must be above zero");
        }
        if self.inbound_queue == 0 {
            return bad("the inbound queue bound must be above zero");
        }
        if self.max_message_bytes == 0 {
            return bad("the largest message read must be above zero bytes");
        }
        if self.trust.is_some() && self.signer.is_none() {
            return bad("verifying messages needs this collector's own signing key too");
        }
        Ok(())
    }
}

/// Why sharing could not start or do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum SharingError {
    /// The configuration is unusable.
    #[error("invalid Kafka sharing configuration: {0}")]
    Config(String),
    /// The TLS or SASL settings are unusable.
    #[error("invalid Kafka security settings: {0}")]
    Security(#[from] security::SecurityError),
    /// librdkafka refused to create a client (usually a bad setting).
    #[error("could not create the Kafka client: {0}")]
    Client(#[source] rdkafka::error::KafkaError),
    /// The history was not read in time. What was read so far stays queued
    /// for [`KafkaSharing::poll`], and reading goes on.
    #[error(
        "the ownership history was not read within {waited:?} ({partitions_behind} partitions behind; broker answering: {broker_up})"
    )]
    WarmUpTimedOut {
        waited: Duration,
        partitions_behind: u64,
        broker_up: bool,
    },
    /// The reader thread is gone (it panicked).
    #[error("the Kafka sharing reader thread stopped")]
    ReaderStopped,
    /// Messages were still outstanding when a flush gave up.
    #[error("{outstanding} Kafka messages were still outstanding when the flush timed out")]
    FlushTimedOut { outstanding: u64 },
}
