//! Flows to a Kafka topic: each chunk a sink plugin produced becomes one
//! message.
//!
//! The producer holds a bounded queue. A chunk it has no room for is
//! refused with [`io::ErrorKind::WouldBlock`], so the caller keeps it (see
//! [`Outputs`](super::Outputs)) and the pressure goes back towards the
//! agents instead of onto the floor. Deliveries that fail for good are
//! counted and logged.
//!
//! A background thread asks the broker for the topic every second (and
//! creates it when `create_partitions` is set). Chunks are taken only while
//! the broker has named the topic since the last lost connection; until
//! then writes are refused with `WouldBlock`, and what the producer held
//! when the connection was lost is kept and sent again once the topic is
//! back (the topic gate, see `sharing::client`): a broker that lost its
//! data must not acknowledge chunks into a topic that no longer exists. A
//! chunk may so reach the topic twice, never zero times.

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    producer::{BaseRecord, Producer, ThreadedProducer},
};

use super::Output;
use crate::sharing::client::{
    self, DeliveryContext, DeliveryStats, Requeue, TopicAdmin, TopicGate,
};

/// Where formatted flows go in Kafka, and the producer's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOutputConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    pub topic: String,
    /// Create the topic with this many partitions whenever the broker does
    /// not know it. `None`: the topic is managed elsewhere (and chunks wait
    /// until it exists).
    pub create_partitions: Option<i32>,
    /// Chunks the producer holds while the broker is slow or down.
    /// Default 10,000.
    pub queue_messages: usize,
    /// Bytes the producer holds. Default 256 MiB.
    pub queue_bytes: usize,
    /// How long a chunk may wait for the broker before it is given up
    /// (and counted). Default 15 min.
    pub delivery_timeout: Duration,
    /// How long [`Output::flush`] waits for outstanding chunks. Default 10 s.
    pub flush_timeout: Duration,
}

impl KafkaOutputConfig {
    /// The defaults, for `brokers` and `topic`.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: topic.into(),
            create_partitions: None,
            queue_messages: 10_000,
            queue_bytes: 256 << 20,
            delivery_timeout: Duration::from_secs(15 * 60),
            flush_timeout: Duration::from_secs(10),
        }
    }
}

/// What the Kafka output has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KafkaOutputCounters {
    /// Chunks taken (handed to the producer).
    pub sent: u64,
    /// Chunks acknowledged by the broker.
    pub delivered: u64,
    /// Writes refused because the queue was full (the caller kept them).
    pub queue_full: u64,
    /// Chunks taken whose delivery failed for good.
    pub failed: u64,
    /// Chunks kept to send again because the topic was missing.
    pub requeued: u64,
    /// Of those, still waiting.
    pub requeue_waiting: u64,
}

/// An [`Output`] to a Kafka topic.
pub struct KafkaOutput {
    name: String,
    topic: String,
    flush_timeout: Duration,
    producer: ThreadedProducer<DeliveryContext>,
    stats: Arc<DeliveryStats>,
    requeue: Arc<Requeue>,
    gate: Arc<TopicGate>,
    sent: u64,
    queue_full: u64,
    stop: Arc<AtomicBool>,
    keeper: Option<JoinHandle<()>>,
}

impl KafkaOutput {
    /// Creates the producer and the topic keeper; does not wait for the
    /// broker.
    pub fn new(config: KafkaOutputConfig) -> Result<Self, KafkaError> {
        let stats = Arc::new(DeliveryStats::default());
        let requeue = Arc::new(Requeue::new(config.queue_messages.max(1)));
        let gate = Arc::new(TopicGate::default());
        let producer = client::producer(
            &client::producer_config(
                &config.brokers,
                config.queue_messages.max(1),
                config.queue_bytes.max(1),
                config.delivery_timeout,
            ),
            "kafka output",
            stats.clone(),
            requeue.clone(),
            gate.clone(),
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let keeper = Keeper {
            admin: TopicAdmin::new(&config.brokers)?,
            topic: config.topic.clone(),
            create_partitions: config.create_partitions,
            producer: producer.clone(),
            requeue: requeue.clone(),
            gate: gate.clone(),
            stop: stop.clone(),
        };
        let keeper = thread::Builder::new()
            .name(format!("kafka-output-{}", config.topic))
            .spawn(move || keeper.run())
            .map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
        Ok(Self {
            name: format!("kafka:{}", config.topic),
            topic: config.topic,
            flush_timeout: config.flush_timeout,
            producer,
            stats,
            requeue,
            gate,
            sent: 0,
            queue_full: 0,
            stop,
            keeper: Some(keeper),
        })
    }

    pub fn counters(&self) -> KafkaOutputCounters {
        KafkaOutputCounters {
            sent: self.sent,
            delivered: self.stats.delivered.load(Ordering::Relaxed),
            queue_full: self.queue_full,
            failed: self.stats.failed.load(Ordering::Relaxed),
            requeued: self.stats.requeued.load(Ordering::Relaxed),
            requeue_waiting: self.requeue.len() as u64,
        }
    }
}

/// Keeps the topic gate: checks the topic every second, creates it if
/// asked to, closes the gate on a lost connection and opens it (sending the
/// kept chunks) once the broker names the topic again.
struct Keeper {
    admin: TopicAdmin,
    topic: String,
    create_partitions: Option<i32>,
    producer: ThreadedProducer<DeliveryContext>,
    requeue: Arc<Requeue>,
    gate: Arc<TopicGate>,
    stop: Arc<AtomicBool>,
}

impl Keeper {
    fn run(self) {
        const EVERY: Duration = Duration::from_secs(1);
        const TIMEOUT: Duration = Duration::from_secs(1);
        let topic = self.topic.as_str();
        while !self.stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            match self.admin.partitions(topic, TIMEOUT) {
                Ok(Some(_)) if !self.gate.take_outage() => {
                    self.gate.open();
                    if self.requeue.len() > 0 {
                        self.requeue.resend(&self.producer, topic);
                    }
                }
                Ok(Some(_)) | Err(_) => self.gate.close(&self.producer),
                Ok(None) => {
                    self.gate.close(&self.producer);
                    if let Some(partitions) = self.create_partitions {
                        match self.admin.create(topic, partitions, TIMEOUT) {
                            Ok(()) => {
                                tracing::info!(topic, partitions, "Created the Kafka output topic.")
                            }
                            Err(error) => tracing::warn!(
                                topic,
                                %error,
                                "Could not create the Kafka output topic."
                            ),
                        }
                    }
                }
            }
            while !self.stop.load(Ordering::Relaxed) && started.elapsed() < EVERY {
                if self.gate.take_outage() {
                    self.gate.close(&self.producer);
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Output for KafkaOutput {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        if !self.gate.is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "the Kafka broker has not confirmed the topic {} yet",
                    self.topic
                ),
            ));
        }
        if self.requeue.len() > 0 {
            self.requeue.resend(&self.producer, &self.topic);
        }
        let record = BaseRecord::<(), [u8]>::to(&self.topic).payload(chunk);
        let Err((error, _)) = self.producer.send(record) else {
            self.sent += 1;
            return Ok(());
        };
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::QueueFull) => {
                self.queue_full += 1;
                Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("the Kafka output's queue for {} is full", self.topic),
                ))
            }
            // The topic is missing for now: the caller keeps the chunk.
            _ if client::retryable(&error) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "the Kafka topic {} does not exist (yet): {error}",
                    self.topic
                ),
            )),
            // A chunk Kafka can never take (too large): refusing it forever
            // would stop the output, so it is counted and logged instead.
            Some(RDKafkaErrorCode::MessageSizeTooLarge) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(topic = self.topic, bytes = chunk.len(), %error, "A chunk too large for Kafka was dropped.");
                Ok(())
            }
            _ => Err(io::Error::other(error)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.gate.is_ready() && self.requeue.len() > 0 {
            self.requeue.resend(&self.producer, &self.topic);
        }
        self.producer.flush(self.flush_timeout).map_err(|error| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} Kafka messages still outstanding after {:?}: {error}",
                    self.producer.in_flight_count(),
                    self.flush_timeout
                ),
            )
        })?;
        match self.requeue.len() {
            0 => Ok(()),
            n => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "{n} chunks wait for the Kafka topic {} to exist",
                    self.topic
                ),
            )),
        }
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
            flush_timeout: Duration::from_millis(200),
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
        let err = out.write(b"one").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        assert_eq!(out.counters().sent, 0);
    }

    #[test]
    fn a_full_queue_refuses_with_would_block_and_counts() {
        let (_broker, mut out) = silent(2);
        open_gate(&mut out);
        out.write(b"one").unwrap();
        out.write(b"two").unwrap();
        let err = out.write(b"three").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        let c = out.counters();
        assert_eq!((c.sent, c.queue_full, c.delivered), (2, 1, 0));
    }

    #[test]
    fn flush_times_out_while_the_broker_is_away() {
        let (_broker, mut out) = silent(10);
        open_gate(&mut out);
        out.write(b"one").unwrap();
        let started = Instant::now();
        let err = out.flush().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
