//! Flows to a Kafka topic: each chunk a sink plugin produced becomes one
//! message, and a chunk counts as written only once the broker has
//! acknowledged it (`acks=all`, the idempotent producer).
//!
//! Every chunk is sent with its sequence number, and the delivery reports
//! say how far the output is durable ([`Output::commit`]). A delivery that
//! fails — purged when the connection was lost, timed out, refused — makes
//! the chunk, and those after it, go again: a chunk may reach the topic
//! twice, never zero times. The producer's queue is bounded; a chunk it has
//! no room for is refused with [`io::ErrorKind::WouldBlock`], so the caller
//! keeps it and the pressure goes back towards the agents.
//!
//! A chunk is at most the topic's message limit: the configured
//! `max_message_bytes`, lowered to the topic's `max.message.bytes` when the
//! broker reports a smaller one ([`Output::max_chunk_bytes`]; the collector
//! formats smaller chunks rather than drop one).
//!
//! A background thread asks the broker for the topic every second and
//! creates it when it is missing (unless told not to). Chunks are taken
//! only while the broker has named the topic since the last lost
//! connection (the topic gate, see `sharing::client`): a broker that lost
//! its data must not acknowledge chunks into a topic that no longer exists.
//! After a lost connection or a missing topic the producer is replaced:
//! dropping the old one fails (purges) what it held, which is sent again,
//! and the new one gets a new idempotent-producer id (a broker that lost
//! its state refuses the old one with `UnknownProducerId`, forever).

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use rdkafka::{
    ClientContext,
    config::{FromClientConfigAndContext, RDKafkaLogLevel},
    error::{KafkaError, RDKafkaErrorCode},
    message::DeliveryResult,
    producer::{BaseRecord, ProducerContext, ThreadedProducer},
};

use super::{Output, Progress};
use crate::sharing::{
    client::{self, TopicAdmin, TopicGate},
    security::KafkaSecurity,
};

/// Bytes a message adds to its payload in a record batch (headers, the
/// batch's own framing), kept free below the message limit.
const MESSAGE_OVERHEAD: usize = 512;

/// Where formatted flows go in Kafka, and the producer's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOutputConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    pub topic: String,
    /// Create the topic whenever the broker does not know it (else chunks
    /// wait, and the output reports why, until someone creates it).
    pub create: bool,
    pub partitions: i32,
    /// `None`: the broker's default.
    pub replication_factor: Option<i32>,
    /// The largest message sent; lowered to the topic's
    /// `max.message.bytes` if that is smaller. Default 1,000,000 (Kafka's
    /// default).
    pub max_message_bytes: usize,
    /// Chunks the producer holds while the broker is slow or down.
    pub queue_messages: usize,
    /// Bytes the producer holds.
    pub queue_bytes: usize,
    /// How the producer and the topic keeper connect (TLS, SASL): the
    /// same settings as the sharing's.
    pub security: KafkaSecurity,
    /// librdkafka producer properties set last (tuning), over ours.
    pub properties: BTreeMap<String, String>,
}

impl KafkaOutputConfig {
    /// The defaults, for `brokers` and `topic`.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: topic.into(),
            create: true,
            partitions: 3,
            replication_factor: None,
            max_message_bytes: 1_000_000,
            queue_messages: 10_000,
            queue_bytes: 256 << 20,
            security: KafkaSecurity::default(),
            properties: BTreeMap::new(),
        }
    }
}

/// What the Kafka output has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KafkaOutputCounters {
    /// Chunks handed to the producer (again after a failure, too).
    pub sent: u64,
    /// Chunks acknowledged by the broker.
    pub delivered: u64,
    /// Writes refused because the producer's queue was full (kept).
    pub queue_full: u64,
    /// Deliveries that failed (each chunk is sent again).
    pub failed: u64,
}

/// Chunks sent and not yet acknowledged, by sequence number, with the
/// attempt that sent them (a report of an earlier attempt is stale).
#[derive(Debug, Default)]
struct Deliveries {
    in_flight: BTreeMap<u64, u64>,
    /// The earliest chunk whose delivery failed since the last commit.
    failed_from: Option<u64>,
}

/// The producer's context: delivery reports into [`Deliveries`], lost
/// connections to the gate.
struct OutputContext {
    deliveries: Arc<Mutex<Deliveries>>,
    delivered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    gate: Arc<TopicGate>,
}

/// A message's sequence number and attempt.
type Attempt = Box<(u64, u64)>;

impl ClientContext for OutputContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        client::log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if client::connection_lost(&error) {
            self.gate.report_outage();
        }
        tracing::debug!(target: "librdkafka", %error, reason, "Kafka output error.");
    }
}

impl ProducerContext for OutputContext {
    type DeliveryOpaque = Attempt;

    fn delivery(&self, result: &DeliveryResult<'_>, attempt: Attempt) {
        let (seq, attempt) = *attempt;
        let mut d = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        if d.in_flight.get(&seq) != Some(&attempt) {
            return;
        }
        d.in_flight.remove(&seq);
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                let n = self.failed.fetch_add(1, Ordering::Relaxed) + 1;
                d.failed_from = Some(d.failed_from.map_or(seq, |f| f.min(seq)));
                // Every failure is counted; the log thins out (1, 2, 4, …).
                if n.is_power_of_two() {
                    tracing::warn!(%error, failed = n, "A Kafka output delivery failed; the chunk is sent again.");
                }
            }
        }
    }
}

/// An [`Output`] to a Kafka topic.
pub struct KafkaOutput {
    name: String,
    topic: String,
    producer: ThreadedProducer<OutputContext>,
    /// What a replacement producer is made from.
    settings: rdkafka::ClientConfig,
    /// Outages the current producer was made after.
    outages_seen: u64,
    deliveries: Arc<Mutex<Deliveries>>,
    delivered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    gate: Arc<TopicGate>,
    /// The largest chunk taken (the message limit less overhead).
    max_chunk: Arc<AtomicUsize>,
    taken_below: u64,
    attempts: u64,
    sent: u64,
    queue_full: u64,
    stop: Arc<AtomicBool>,
    keeper: Option<JoinHandle<()>>,
}

impl KafkaOutput {
    /// Creates the producer and the topic keeper; does not wait for the
    /// broker.
    pub fn new(config: KafkaOutputConfig) -> Result<Self, KafkaError> {
        let deliveries = Arc::new(Mutex::new(Deliveries::default()));
        let delivered = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(TopicGate::default());
        let security = config
            .security
            .resolve()
            .map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
        let mut settings = client::producer_config(
            &config.brokers,
            &security,
            config.queue_messages.max(1),
            config.queue_bytes.max(1),
            // Never given up: a chunk waits for the broker as long as it
            // takes (the hold and the agents' spools absorb the wait).
            Duration::ZERO,
        );
        let limit = config.max_message_bytes.max(2 * MESSAGE_OVERHEAD);
        settings
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.max.bytes", limit.to_string())
            .set("batch.size", limit.to_string());
        for (key, value) in &config.properties {
            settings.set(key, value);
        }
        let context = OutputContext {
            deliveries: deliveries.clone(),
            delivered: delivered.clone(),
            failed: failed.clone(),
            gate: gate.clone(),
        };
        let producer = ThreadedProducer::from_config_and_context(&settings, context)?;
        let max_chunk = Arc::new(AtomicUsize::new(limit - MESSAGE_OVERHEAD));
        let stop = Arc::new(AtomicBool::new(false));
        let keeper = Keeper {
            admin: TopicAdmin::new(&config.brokers, &security)?,
            config: config.clone(),
            gate: gate.clone(),
            max_chunk: max_chunk.clone(),
            stop: stop.clone(),
            limit_checked: false,
        };
        let keeper = thread::Builder::new()
            .name(format!("kafka-output-{}", config.topic))
            .spawn(move || keeper.run())
            .map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
        Ok(Self {
            name: format!("kafka:{}", config.topic),
            topic: config.topic,
            producer,
            settings,
            outages_seen: 0,
            deliveries,
            delivered,
            failed,
            gate,
            max_chunk,
            taken_below: 0,
            attempts: 0,
            sent: 0,
            queue_full: 0,
            stop,
            keeper: Some(keeper),
        })
    }

    pub fn counters(&self) -> KafkaOutputCounters {
        KafkaOutputCounters {
            sent: self.sent,
            delivered: self.delivered.load(Ordering::Relaxed),
            queue_full: self.queue_full,
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    fn deliveries(&self) -> std::sync::MutexGuard<'_, Deliveries> {
        self.deliveries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the producer after an outage (see the module
    /// documentation). Dropping the old one purges what it held into
    /// failed deliveries, waiting up to half a second for their reports.
    fn renew_after_outage(&mut self) -> io::Result<()> {
        let outages = self.gate.outages();
        if outages == self.outages_seen {
            return Ok(());
        }
        let context = OutputContext {
            deliveries: self.deliveries.clone(),
            delivered: self.delivered.clone(),
            failed: self.failed.clone(),
            gate: self.gate.clone(),
        };
        let fresh = ThreadedProducer::from_config_and_context(&self.settings, context)
            .map_err(io::Error::other)?;
        drop(std::mem::replace(&mut self.producer, fresh));
        self.outages_seen = outages;
        Ok(())
    }
}

/// Keeps the topic gate: checks the topic every second, creates it if
/// missing (when allowed), reads its message limit, shuts the gate on a
/// lost connection or a missing topic and opens it once the broker names
/// the topic with no outage since the last look.
struct Keeper {
    admin: TopicAdmin,
    config: KafkaOutputConfig,
    gate: Arc<TopicGate>,
    max_chunk: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    limit_checked: bool,
}

impl Keeper {
    fn run(mut self) {
        const EVERY: Duration = Duration::from_secs(1);
        const TIMEOUT: Duration = Duration::from_secs(1);
        let mut warned_missing = false;
        let mut outages = self.gate.outages();
        while !self.stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let topic = self.config.topic.as_str();
            match self.admin.partitions(topic, TIMEOUT) {
                Ok(Some(_)) if self.gate.outages() == outages => {
                    if !self.limit_checked {
                        self.check_limit(TIMEOUT);
                    }
                    self.gate.open();
                }
                Ok(Some(_)) | Err(_) => self.gate.shut(),
                Ok(None) => {
                    // Whatever the producer holds may be acknowledged into
                    // a topic that is gone: an outage, so it is sent again.
                    self.gate.report_outage();
                    self.limit_checked = false;
                    if self.config.create {
                        let c = &self.config;
                        match self
                            .admin
                            .create(topic, c.partitions, c.replication_factor, TIMEOUT)
                        {
                            Ok(()) => tracing::info!(
                                topic,
                                partitions = c.partitions,
                                "Created the Kafka output topic."
                            ),
                            Err(error) => {
                                tracing::warn!(topic, %error, "Could not create the Kafka output topic; trying again.")
                            }
                        }
                    } else if !warned_missing {
                        warned_missing = true;
                        tracing::error!(
                            topic,
                            "The Kafka output topic does not exist and `create = false`: create it (or set `create = true`); flows wait until then."
                        );
                    }
                }
            }
            outages = self.gate.outages();
            while !self.stop.load(Ordering::Relaxed) && started.elapsed() < EVERY {
                thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Lowers the chunk limit to the topic's `max.message.bytes`.
    fn check_limit(&mut self, timeout: Duration) {
        let topic = &self.config.topic;
        match self.admin.max_message_bytes(topic, timeout) {
            Ok(Some(topic_limit)) => {
                self.limit_checked = true;
                let configured = self.config.max_message_bytes;
                if topic_limit < configured {
                    tracing::warn!(
                        topic,
                        topic_limit,
                        configured,
                        "The Kafka topic takes smaller messages than `max_message_bytes`; chunks are cut to its limit."
                    );
                }
                let limit = configured.min(topic_limit).max(2 * MESSAGE_OVERHEAD);
                self.max_chunk
                    .store(limit - MESSAGE_OVERHEAD, Ordering::Relaxed);
            }
            Ok(None) => self.limit_checked = true,
            Err(error) => {
                self.limit_checked = true;
                tracing::info!(topic, %error, "Could not read the topic's max.message.bytes; using `max_message_bytes`.");
            }
        }
    }
}

impl Output for KafkaOutput {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, seq: u64, chunk: &[u8]) -> io::Result<()> {
        self.renew_after_outage()?;
        if !self.gate.is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "the Kafka broker has not confirmed the topic {} yet",
                    self.topic
                ),
            ));
        }
        self.attempts += 1;
        let attempt = self.attempts;
        self.deliveries().in_flight.insert(seq, attempt);
        let record =
            BaseRecord::<(), [u8], Attempt>::with_opaque_to(&self.topic, Box::new((seq, attempt)))
                .payload(chunk);
        let Err((error, _)) = self.producer.send(record) else {
            self.sent += 1;
            self.taken_below = seq + 1;
            return Ok(());
        };
        self.deliveries().in_flight.remove(&seq);
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::QueueFull) => {
                self.queue_full += 1;
                Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("the Kafka output's queue for {} is full", self.topic),
                ))
            }
            _ if client::retryable(&error) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "the Kafka topic {} does not exist (yet): {error}",
                    self.topic
                ),
            )),
            _ => Err(io::Error::other(format!("{error} ({} bytes)", chunk.len()))),
        }
    }

    fn commit(&mut self) -> io::Result<Progress> {
        self.renew_after_outage()?;
        let taken_below = self.taken_below;
        let mut d = self.deliveries();
        let resend_from = d.failed_from.take();
        if let Some(from) = resend_from {
            // Sent again from there; later reports of these attempts are stale.
            let stale: BTreeSet<u64> = d.in_flight.range(from..).map(|(s, _)| *s).collect();
            for seq in stale {
                d.in_flight.remove(&seq);
            }
        }
        let first_open = d.in_flight.keys().next().copied();
        let durable_below = [first_open, resend_from]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(taken_below);
        Ok(Progress {
            durable_below,
            resend_from,
        })
    }

    fn max_chunk_bytes(&self) -> Option<usize> {
        Some(self.max_chunk.load(Ordering::Relaxed))
    }
}

impl Drop for KafkaOutput {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(keeper) = self.keeper.take() {
            let _ = keeper.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "broker" on loopback that takes connections and never answers: the
    /// producer queues and never delivers, and (unlike a refused connection)
    /// reports no outage that would close the gate while a test runs.
    fn silent(queue_messages: usize) -> (std::net::TcpListener, KafkaOutput) {
        let broker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let out = KafkaOutput::new(KafkaOutputConfig {
            queue_messages,
            ..KafkaOutputConfig::new(broker.local_addr().unwrap().to_string(), "flows")
        })
        .unwrap();
        (broker, out)
    }

    /// As if the broker had confirmed the topic (and the keeper, which
    /// would close the gate again, were gone).
    fn open_gate(out: &mut KafkaOutput) {
        out.stop.store(true, Ordering::Relaxed);
        out.keeper.take().unwrap().join().unwrap();
        out.gate.open();
    }

    #[test]
    fn writes_wait_until_the_broker_confirms_the_topic() {
        let (_broker, mut out) = silent(10);
        assert_eq!(out.name(), "kafka:flows");
        let err = out.write(0, b"one").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        assert_eq!(out.counters().sent, 0);
    }

    #[test]
    fn a_full_queue_refuses_with_would_block_and_counts() {
        let (_broker, mut out) = silent(2);
        open_gate(&mut out);
        out.write(0, b"one").unwrap();
        out.write(1, b"two").unwrap();
        let err = out.write(2, b"three").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        let c = out.counters();
        assert_eq!((c.sent, c.queue_full, c.delivered), (2, 1, 0));
    }

    #[test]
    fn a_chunk_queued_but_not_delivered_is_not_durable() {
        let (_broker, mut out) = silent(10);
        open_gate(&mut out);
        out.write(0, b"one").unwrap();
        out.write(1, b"two").unwrap();
        let progress = out.commit().unwrap();
        assert_eq!(
            progress,
            Progress {
                durable_below: 0,
                resend_from: None
            }
        );
    }

    #[test]
    fn a_purged_chunk_is_sent_again_and_a_stale_report_is_ignored() {
        let (_broker, mut out) = silent(10);
        open_gate(&mut out);
        out.write(0, b"one").unwrap();
        out.write(1, b"two").unwrap();
        // What a lost connection does: everything held fails (purged).
        out.gate.report_outage();
        let deadline = Instant::now() + Duration::from_secs(10);
        let progress = loop {
            let p = out.commit().unwrap();
            if p.resend_from.is_some() || Instant::now() > deadline {
                break p;
            }
            thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(
            progress,
            Progress {
                durable_below: 0,
                resend_from: Some(0)
            }
        );
        assert_eq!(out.counters().failed, 2);
        assert!(out.deliveries().in_flight.is_empty());
    }

    #[test]
    fn chunks_are_cut_to_the_message_limit() {
        let broker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let out = KafkaOutput::new(KafkaOutputConfig {
            max_message_bytes: 100_000,
            ..KafkaOutputConfig::new(broker.local_addr().unwrap().to_string(), "flows")
        })
        .unwrap();
        assert_eq!(out.max_chunk_bytes(), Some(100_000 - MESSAGE_OVERHEAD));
    }
}
