//! Flows to a Kafka topic: each chunk a sink plugin produced becomes one
//! message.
//!
//! The producer holds a bounded queue. A chunk it has no room for is
//! refused with [`io::ErrorKind::WouldBlock`], so the caller keeps it (see
//! [`Outputs`](super::Outputs)) and the pressure goes back towards the
//! agents instead of onto the floor. Messages that fail only because the
//! topic is missing (a broker that lost its data) are kept and sent again
//! once it exists; other deliveries that fail for good are counted and
//! logged. With `create_partitions` set, a background thread creates the
//! topic whenever the broker does not know it.

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
use crate::sharing::client::{self, DeliveryContext, DeliveryStats, Requeue, TopicAdmin};

/// Where formatted flows go in Kafka, and the producer's bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaOutputConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    pub topic: String,
    /// Create the topic with this many partitions whenever the broker does
    /// not know it. `None`: the topic is managed elsewhere.
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
    sent: u64,
    queue_full: u64,
    stop: Arc<AtomicBool>,
    keeper: Option<JoinHandle<()>>,
}

impl KafkaOutput {
    /// Creates the producer (and the topic keeper); does not wait for the
    /// broker.
    pub fn new(config: KafkaOutputConfig) -> Result<Self, KafkaError> {
        let stats = Arc::new(DeliveryStats::default());
        let requeue = Arc::new(Requeue::new(config.queue_messages.max(1)));
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
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let keeper = match config.create_partitions {
            None => None,
            Some(partitions) => {
                let admin = TopicAdmin::new(&config.brokers)?;
                let (topic, producer, requeue, stop) = (
                    config.topic.clone(),
                    producer.clone(),
                    requeue.clone(),
                    stop.clone(),
                );
                let handle = thread::Builder::new()
                    .name(format!("kafka-output-{}", config.topic))
                    .spawn(move || {
                        keep_topic(&admin, &topic, partitions, &producer, &requeue, &stop)
                    })
                    .map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
                Some(handle)
            }
        };
        Ok(Self {
            name: format!("kafka:{}", config.topic),
            topic: config.topic,
            flush_timeout: config.flush_timeout,
            producer,
            stats,
            requeue,
            sent: 0,
            queue_full: 0,
            stop,
            keeper,
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

/// Creates the topic whenever the broker does not know it, and sends kept
/// chunks again once it does.
fn keep_topic(
    admin: &TopicAdmin,
    topic: &str,
    partitions: i32,
    producer: &ThreadedProducer<DeliveryContext>,
    requeue: &Requeue,
    stop: &AtomicBool,
) {
    const EVERY: Duration = Duration::from_secs(1);
    const TIMEOUT: Duration = Duration::from_secs(2);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match admin.partitions(topic, TIMEOUT) {
            Ok(None) => match admin.create(topic, partitions, TIMEOUT) {
                Ok(()) => tracing::info!(topic, partitions, "Created the Kafka output topic."),
                Err(error) => {
                    tracing::warn!(topic, %error, "Could not create the Kafka output topic.")
                }
            },
            Ok(Some(_)) if requeue.len() > 0 => {
                requeue.resend(producer, topic);
            }
            Ok(Some(_)) | Err(_) => {}
        }
        while !stop.load(Ordering::Relaxed) && started.elapsed() < EVERY {
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Output for KafkaOutput {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
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
        if self.requeue.len() > 0 {
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

    /// A port nothing listens on: the producer queues and never delivers.
    fn unreachable(queue_messages: usize) -> KafkaOutputConfig {
        KafkaOutputConfig {
            queue_messages,
            flush_timeout: Duration::from_millis(200),
            ..KafkaOutputConfig::new("127.0.0.1:1", "flows")
        }
    }

    #[test]
    fn a_full_queue_refuses_with_would_block_and_counts() {
        let mut out = KafkaOutput::new(unreachable(2)).unwrap();
        assert_eq!(out.name(), "kafka:flows");
        out.write(b"one").unwrap();
        out.write(b"two").unwrap();
        let err = out.write(b"three").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        let c = out.counters();
        assert_eq!((c.sent, c.queue_full, c.delivered), (2, 1, 0));
    }

    #[test]
    fn flush_times_out_while_the_broker_is_away() {
        let mut out = KafkaOutput::new(unreachable(10)).unwrap();
        out.write(b"one").unwrap();
        let started = Instant::now();
        let err = out.flush().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
