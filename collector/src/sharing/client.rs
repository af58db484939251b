//! What the Kafka sharing and the Kafka output have in common: client
//! settings, librdkafka's logs routed to `tracing`, delivery accounting with
//! a bounded queue of messages to send again, the topic gate, and topic
//! administration.
//!
//! # The topic gate
//!
//! Messages go to the producer only while the topic is known to exist. A
//! Tansu broker that restarts with in-memory storage has lost its topics,
//! yet acknowledges messages produced to a missing topic, and creating the
//! topic afterwards resets its offsets: those messages are gone although
//! their delivery succeeded. So when a producer loses its broker, the gate
//! closes and whatever the producer still holds is purged into the
//! [`Requeue`]; the owner's thread opens the gate again only after the
//! broker has named the topic in a metadata answer, and then sends the kept
//! messages. A purged message may have reached the broker already, so it
//! may arrive twice: sharing takes a range twice as once; the output may
//! repeat a chunk rather than lose it.

use std::{
    collections::VecDeque,
    future::Future,
    pin::pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
    thread::{self, Thread},
    time::Duration,
};

use rdkafka::{
    ClientConfig, ClientContext, Message,
    admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication},
    config::{FromClientConfigAndContext, RDKafkaLogLevel},
    error::{KafkaError, RDKafkaErrorCode},
    message::DeliveryResult,
    message::OwnedHeaders,
    producer::{BaseRecord, Producer, ProducerContext, PurgeConfig, ThreadedProducer},
};

use super::security::ResolvedSecurity;

/// Settings every client gets: reconnect quickly once a broker is back (the
/// default backs off to 10 s), and never ask the broker to create topics
/// (the topic is created explicitly, with its partition count); then how
/// to connect (`security`, TLS and SASL, set last).
pub(crate) fn base_config(brokers: &str, security: &ResolvedSecurity) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("allow.auto.create.topics", "false")
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "1000")
        .set("socket.connection.setup.timeout.ms", "5000");
    security.apply(&mut c);
    c
}

/// A producer's settings: a queue bounded by `messages` and `bytes`, and
/// `delivery_timeout` for how long a message may wait for a broker (0 is
/// forever). It reconnects after a lost connection no sooner than 1.5 s,
/// so its owner sees the loss and closes the gate before anything held
/// could reach a restarted broker (see the module documentation).
pub(crate) fn producer_config(
    brokers: &str,
    security: &ResolvedSecurity,
    messages: usize,
    bytes: usize,
    delivery_timeout: Duration,
) -> ClientConfig {
    let mut c = base_config(brokers, security);
    c.set(
        "queue.buffering.max.messages",
        clamp_i32(messages).to_string(),
    )
    .set(
        "queue.buffering.max.kbytes",
        clamp_i32(bytes.div_ceil(1024)).max(1).to_string(),
    )
    .set(
        "message.timeout.ms",
        clamp_i32(delivery_timeout.as_millis()).to_string(),
    )
    .set("linger.ms", "20");
    c
}

fn clamp_i32(n: impl TryInto<i32>) -> i32 {
    n.try_into().unwrap_or(i32::MAX)
}

/// librdkafka's own logs at `debug`: a broker that is down makes it log
/// every reconnect attempt. The shells report broker state themselves.
pub(crate) fn log_librdkafka(level: RDKafkaLogLevel, facility: &str, message: &str) {
    tracing::debug!(target: "librdkafka", ?level, facility, "{message}");
}

/// A client context that only routes logs.
pub(crate) struct QuietContext;

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", %error, reason, "Kafka client error.");
    }
}

/// Whether a failed send or delivery should be tried again later: the
/// topic is missing (a broker that lost its data; the topic is created
/// again shortly), or the message was purged when the gate closed.
pub(crate) fn retryable(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownPartition
                | RDKafkaErrorCode::PurgeQueue
                | RDKafkaErrorCode::PurgeInflight
        )
    )
}

/// Whether an error means the connection to the broker was lost.
pub(crate) fn connection_lost(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::BrokerTransportFailure | RDKafkaErrorCode::AllBrokersDown)
    )
}

/// Whether the topic is known to exist, so messages may go to the
/// producer; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct TopicGate {
    ready: AtomicBool,
    /// The producer reported a lost connection since the owner last looked.
    outage: AtomicBool,
    /// Outages reported so far (for owners that watch for a new one rather
    /// than take the flag).
    outages: AtomicU64,
}

impl TopicGate {
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The broker named the topic since the last outage.
    pub fn open(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Closes the gate and purges what `producer` holds into the requeue
    /// (through the delivery reports).
    pub fn close<C>(&self, producer: &ThreadedProducer<C>)
    where
        C: ProducerContext + 'static,
    {
        self.ready.store(false, Ordering::Release);
        producer.purge(PurgeConfig::default().queue().inflight().non_blocking());
    }

    /// Called from the producer's callbacks: closes the gate for new
    /// messages at once; the owner purges when it sees [`TopicGate::take_outage`].
    pub(crate) fn report_outage(&self) {
        self.ready.store(false, Ordering::Release);
        self.outage.store(true, Ordering::Release);
        self.outages.fetch_add(1, Ordering::AcqRel);
    }

    /// How many outages were reported so far.
    pub fn outages(&self) -> u64 {
        self.outages.load(Ordering::Acquire)
    }

    /// Closes the gate for new messages (the owner purges its producer).
    pub fn shut(&self) {
        self.ready.store(false, Ordering::Release);
    }

    /// Whether the producer lost its connection since the last call.
    pub fn take_outage(&self) -> bool {
        self.outage.swap(false, Ordering::AcqRel)
    }
}

/// Delivery counts of one producer.
#[derive(Debug, Default)]
pub(crate) struct DeliveryStats {
    /// Acknowledged by the broker.
    pub delivered: AtomicU64,
    /// Failed for good (timed out, refused, or no room to keep for a retry).
    pub failed: AtomicU64,
    /// Kept to send again.
    pub requeued: AtomicU64,
}

/// A message's key, payload and headers (the sharing's signature).
type Kept = (Option<Box<[u8]>>, Box<[u8]>, Option<OwnedHeaders>);

/// Messages to send again, oldest first, at most `bound`.
pub(crate) struct Requeue {
    queue: Mutex<VecDeque<Kept>>,
    bound: usize,
}

impl Requeue {
    pub fn new(bound: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            bound,
        }
    }

    /// Keeps a message; false if the queue is full.
    pub fn push(&self, key: Option<&[u8]>, payload: &[u8], headers: Option<OwnedHeaders>) -> bool {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= self.bound {
            return false;
        }
        q.push_back((key.map(Into::into), payload.into(), headers));
        true
    }

    pub fn len(&self) -> usize {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Hands the kept messages to `producer` again, oldest first, until it
    /// refuses one (that one and the rest stay). Returns how many went.
    pub fn resend<C>(&self, producer: &ThreadedProducer<C>, topic: &str) -> usize
    where
        C: ProducerContext<DeliveryOpaque = ()> + 'static,
    {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let mut sent = 0;
        while let Some((key, payload, headers)) = q.pop_front() {
            let mut record = BaseRecord::<[u8], [u8]>::to(topic).payload(&payload);
            if let Some(k) = key.as_deref() {
                record = record.key(k);
            }
            if let Some(h) = &headers {
                record = record.headers(h.clone());
            }
            if producer.send(record).is_err() {
                q.push_front((key, payload, headers));
                break;
            }
            sent += 1;
        }
        sent
    }
}

/// A producer context that counts deliveries, keeps messages that failed
/// only because the topic was missing (or were purged), and reports lost
/// connections to the gate.
pub(crate) struct DeliveryContext {
    pub stats: Arc<DeliveryStats>,
    pub requeue: Arc<Requeue>,
    pub gate: Arc<TopicGate>,
    /// For logs: which shell this producer belongs to.
    pub what: &'static str,
}

impl ClientContext for DeliveryContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if connection_lost(&error) {
            self.gate.report_outage();
        }
        tracing::debug!(target: "librdkafka", %error, reason, "Kafka producer error.");
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, message))
                if retryable(error)
                    && self.requeue.push(
                        message.key(),
                        message.payload().unwrap_or_default(),
                        message.headers().map(|h| h.detach()),
                    ) =>
            {
                self.stats.requeued.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                let n = self.stats.failed.fetch_add(1, Ordering::Relaxed) + 1;
                // Every failure is counted; the log thins out (1, 2, 4, 8, …).
                if n.is_power_of_two() {
                    tracing::warn!(what = self.what, %error, failed = n, "A Kafka message could not be delivered.");
                }
            }
        }
    }
}

/// Creates a producer counting into `stats`, keeping retryable failures in
/// `requeue` and reporting lost connections to `gate`.
pub(crate) fn producer(
    config: &ClientConfig,
    what: &'static str,
    stats: Arc<DeliveryStats>,
    requeue: Arc<Requeue>,
    gate: Arc<TopicGate>,
) -> Result<ThreadedProducer<DeliveryContext>, KafkaError> {
    ThreadedProducer::from_config_and_context(
        config,
        DeliveryContext {
            stats,
            requeue,
            gate,
            what,
        },
    )
}

/// Looks up and creates topics.
pub(crate) struct TopicAdmin {
    admin: AdminClient<QuietContext>,
}

impl TopicAdmin {
    pub fn new(brokers: &str, security: &ResolvedSecurity) -> Result<Self, KafkaError> {
        let admin =
            AdminClient::from_config_and_context(&base_config(brokers, security), QuietContext)?;
        Ok(Self { admin })
    }

    /// The topic's partition count, or `None` if the broker does not know
    /// the topic. An error means no broker answered within `timeout`.
    pub fn partitions(&self, topic: &str, timeout: Duration) -> Result<Option<usize>, KafkaError> {
        let metadata = self.admin.inner().fetch_metadata(Some(topic), timeout)?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len())
            .filter(|&n| n > 0))
    }

    /// Creates the topic with `replication` copies of each partition
    /// (`None`: the broker's default); a topic that already exists is fine.
    pub fn create(
        &self,
        topic: &str,
        partitions: i32,
        replication: Option<i32>,
        timeout: Duration,
    ) -> Result<(), KafkaError> {
        let new = NewTopic::new(
            topic,
            partitions.max(1),
            TopicReplication::Fixed(replication.unwrap_or(-1)),
        );
        let options = AdminOptions::new()
            .request_timeout(Some(timeout))
            .operation_timeout(Some(timeout));
        let results = block_on(self.admin.create_topics([&new], &options))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(KafkaError::AdminOp(code)),
            }
        }
        Ok(())
    }
}

impl TopicAdmin {
    /// The topic's `max.message.bytes`, if the broker reports it.
    pub fn max_message_bytes(
        &self,
        topic: &str,
        timeout: Duration,
    ) -> Result<Option<usize>, KafkaError> {
        let options = AdminOptions::new().request_timeout(Some(timeout));
        let results = block_on(
            self.admin
                .describe_configs([&ResourceSpecifier::Topic(topic)], &options),
        )?;
        for result in results {
            let resource = result.map_err(KafkaError::AdminOp)?;
            if let Some(entry) = resource.get("max.message.bytes") {
                return Ok(entry.value.as_deref().and_then(|v| v.parse().ok()));
            }
        }
        Ok(None)
    }
}

/// Runs a future to completion on this thread. The admin client's futures
/// are completed by librdkafka's own thread (and time out by themselves),
/// so parking until woken is all it takes; no async runtime is needed on
/// the sharing's std threads.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return output,
            Poll::Pending => thread::park(),
        }
    }
}
