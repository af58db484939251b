//! The reader thread: reads every partition of the sharing topic and hands
//! valid updates and watermarks to [`KafkaSharing`](super::KafkaSharing) through a bounded
//! channel, so the collector's core never waits on the broker.
//!
//! - **All partitions, no group.** Every collector needs every update, so
//!   the reader assigns all partitions itself and keeps its own positions;
//!   it never joins a consumer group and never commits.
//! - **Warm-up.** At start each partition is read from the offset of
//!   `now - warmup_window` (the whole partition if the broker cannot say)
//!   to its end. Until a partition has reached its end once, the
//!   collector's own earlier messages on it are handed on too: a restarted
//!   collector gets back what it knew. After that they are skipped. The
//!   same holds for watermark messages: those of the history are handed on
//!   as they are (with the `heard_ns` they were published with, so an agent
//!   long silent does not look alive; see [`crate::completeness`]).
//! - **Outages.** Once a second (four times a second while something is
//!   wrong) the reader asks the broker for the topic and creates it if
//!   missing. It keeps the producer's topic gate (see `client`): closed at
//!   the first sign of an outage, opened once the broker names the topic
//!   again, when the messages kept meanwhile are sent.
//!   After an outage (no answer, a lost connection, a missing topic) each
//!   partition is read again from the offset of the outage's start, minus a
//!   margin: a broker that lost its data starts its offsets again from 0,
//!   and a broker that kept it is only read a little twice. Reading twice
//!   is harmless, as the ownership table takes a range twice as once.
//! - **A new consumer after every outage.** The consumer is closed as soon
//!   as an outage shows, and a new one is made once the broker knows the
//!   topic again. A consumer that kept fetching would ask a restarted
//!   broker for the topic by its old id; Tansu answers that with a zero
//!   topic id and a leader hint, which makes librdkafka 2.12 crash
//!   (`rd_kafka_metadata_update_op` compares a null topic name). A new
//!   consumer learns the new id from a metadata request by name first. Its
//!   reconnect backoff is long enough that the reader always sees the lost
//!   connection before the consumer could reconnect.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc::{SyncSender, TrySendError},
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use rdkafka::{
    ClientConfig, ClientContext, Message, Offset, Statistics, TopicPartitionList,
    config::{FromClientConfigAndContext, RDKafkaLogLevel},
    consumer::{BaseConsumer, Consumer, ConsumerContext},
    error::{KafkaError, RDKafkaErrorCode},
    message::{BorrowedMessage, Headers},
    producer::ThreadedProducer,
};
use rustc_hash::FxHashMap;

use super::{
    admit::{Admission, Refusal},
    auth::{self, Envelope},
    client::{self, DeliveryContext, Requeue, TopicAdmin, TopicGate},
    codec::{Content, Decoded},
    counters::Counters,
    security::ResolvedSecurity,
};
use crate::{completeness::SharedMark, ownership::RangeUpdate};

/// How long one wait for a message lasts (and so how soon a stop is seen).
const POLL_WAIT: Duration = Duration::from_millis(100);
/// How often the topic is checked while all is well.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often it is checked while something is wrong.
const CHECK_RETRY: Duration = Duration::from_millis(250);
/// How long a metadata, offset or admin request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// After an outage, partitions are read again from this long before it.
const RECOVERY_MARGIN: Duration = Duration::from_secs(10);

/// What the reader hands on.
pub(super) enum Inbound {
    /// The ranges of one valid message.
    Updates(Vec<RangeUpdate>),
    /// The watermarks of one valid message.
    Marks(Vec<SharedMark>),
    /// Every partition has been read to its end once: what came before this
    /// was the history.
    WarmedUp,
}

pub(super) struct ReaderSettings {
    pub brokers: String,
    pub topic: String,
    pub origin: Arc<str>,
    pub partitions: i32,
    pub warmup_window: Duration,
    pub security: ResolvedSecurity,
    /// How each message is checked before it is handed on.
    pub admission: Admission,
}

/// Collects the partitions' watermarks from the client's statistics.
struct StatsContext {
    topic: String,
    /// Partition → (low, high) watermark.
    watermarks: Arc<Mutex<FxHashMap<i32, (i64, i64)>>>,
}

impl ClientContext for StatsContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        client::log_librdkafka(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", %error, reason, "Kafka consumer error.");
    }

    fn stats(&self, statistics: Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        let mut w = self.watermarks.lock().unwrap_or_else(|e| e.into_inner());
        for (&p, part) in &topic.partitions {
            if p >= 0 && part.hi_offset >= 0 {
                w.insert(p, (part.lo_offset, part.hi_offset));
            }
        }
    }
}

impl ConsumerContext for StatsContext {}

#[derive(Debug, Clone, Copy)]
struct Part {
    /// The next offset to read, where known.
    position: Option<i64>,
    /// Read to its end at least once since start.
    caught_up: bool,
}

pub(super) struct Reader {
    /// `None` between an outage and the broker knowing the topic again.
    consumer: Option<BaseConsumer<StatsContext>>,
    config: ClientConfig,
    watermarks: Arc<Mutex<FxHashMap<i32, (i64, i64)>>>,
    admin: TopicAdmin,
    producer: ThreadedProducer<DeliveryContext>,
    requeue: Arc<Requeue>,
    gate: Arc<TopicGate>,
    settings: ReaderSettings,
    tx: SyncSender<Inbound>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    parts: Vec<Part>,
    /// The first assignment (from the warm-up window) was made.
    started: bool,
    warmed_up: bool,
    broker_up: Option<bool>,
    /// When the current outage began, if one is going on or not yet
    /// recovered from.
    disturbed_since: Option<SystemTime>,
    next_check: Instant,
}

impl Reader {
    pub fn new(
        settings: ReaderSettings,
        producer: ThreadedProducer<DeliveryContext>,
        requeue: Arc<Requeue>,
        gate: Arc<TopicGate>,
        tx: SyncSender<Inbound>,
        counters: Arc<Counters>,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, KafkaError> {
        let mut config: ClientConfig = client::base_config(&settings.brokers, &settings.security);
        // A group id is needed to assign partitions; the group is never
        // joined and nothing is committed.
        config
            .set("group.id", format!("flowattr-sharing-{}", settings.origin))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100")
            .set("statistics.interval.ms", "1000")
            // See the module documentation: the reader must see a lost
            // connection before the consumer reconnects.
            .set("reconnect.backoff.ms", "3000")
            .set("reconnect.backoff.max.ms", "10000");
        let watermarks = Arc::new(Mutex::default());
        let mut reader = Self {
            consumer: None,
            config,
            watermarks,
            admin: TopicAdmin::new(&settings.brokers, &settings.security)?,
            producer,
            requeue,
            gate,
            settings,
            tx,
            counters,
            stop,
            parts: Vec::new(),
            started: false,
            warmed_up: false,
            broker_up: None,
            disturbed_since: None,
            next_check: Instant::now(),
        };
        // Made here so that a bad setting shows at once; it fetches nothing
        // until partitions are assigned.
        reader.open_consumer()?;
        Ok(reader)
    }

    fn open_consumer(&mut self) -> Result<&BaseConsumer<StatsContext>, KafkaError> {
        if self.consumer.is_none() {
            self.watermarks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            let consumer = BaseConsumer::from_config_and_context(
                &self.config,
                StatsContext {
                    topic: self.settings.topic.clone(),
                    watermarks: self.watermarks.clone(),
                },
            )?;
            self.consumer = Some(consumer);
        }
        Ok(self.consumer.as_ref().expect("just made"))
    }

    pub fn run(mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            if self.gate.take_outage() {
                tracing::debug!("The sharing producer lost its broker connection.");
                self.disturb();
            }
            if Instant::now() >= self.next_check {
                self.check();
            }
            let Some(consumer) = &self.consumer else {
                thread::sleep(
                    POLL_WAIT.min(self.next_check.saturating_duration_since(Instant::now())),
                );
                continue;
            };
            let event = match consumer.poll(POLL_WAIT) {
                None => continue,
                Some(Ok(m)) => Ok((
                    m.partition(),
                    m.offset(),
                    admit(&self.settings.admission, &m),
                )),
                Some(Err(e)) => Err(e),
            };
            match event {
                Ok((partition, offset, decoded)) => self.on_message(partition, offset, decoded),
                Err(KafkaError::PartitionEOF(p)) => self.on_end(p),
                Err(e) => self.on_error(e),
            }
        }
    }

    fn on_message(&mut self, partition: i32, offset: i64, decoded: Result<Decoded, Refusal>) {
        let part = usize::try_from(partition)
            .ok()
            .and_then(|p| self.parts.get_mut(p));
        let caught_up = match part {
            Some(part) => {
                part.position = Some(offset + 1);
                part.caught_up
            }
            None => true,
        };
        let c = &self.counters;
        match decoded {
            Err(error) => {
                let reason = error.reason();
                let n = c.malformed[reason.index()].fetch_add(1, Ordering::Relaxed) + 1;
                // Every refusal is counted; the log thins out (1, 2, 4, …).
                if n.is_power_of_two() {
                    tracing::warn!(
                        topic = self.settings.topic,
                        partition,
                        offset,
                        reason = reason.as_str(),
                        refused = n,
                        %error,
                        "A sharing message was refused; nothing of it is used."
                    );
                }
            }
            Ok(d) if caught_up && d.origin == self.settings.origin => {
                c.own_skipped.fetch_add(1, Ordering::Relaxed);
            }
            Ok(d) => {
                c.consumed.fetch_add(1, Ordering::Relaxed);
                let item = match d.content {
                    Content::Ranges(updates) => {
                        c.ranges_received
                            .fetch_add(updates.len() as u64, Ordering::Relaxed);
                        Inbound::Updates(updates)
                    }
                    Content::Marks(marks) => {
                        c.marks_received
                            .fetch_add(marks.len() as u64, Ordering::Relaxed);
                        Inbound::Marks(marks)
                    }
                };
                self.hand_on(item);
            }
        }
    }

    fn on_end(&mut self, partition: i32) {
        if let Some(part) = usize::try_from(partition)
            .ok()
            .and_then(|p| self.parts.get_mut(p))
        {
            part.caught_up = true;
        }
        self.update_warm_up();
    }

    fn on_error(&mut self, error: KafkaError) {
        if client::connection_lost(&error) {
            tracing::debug!(%error, "The sharing consumer lost its broker connection.");
            self.disturb();
            self.next_check = self.next_check.min(Instant::now() + CHECK_RETRY);
            return;
        }
        match error.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::UnknownTopic
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::UnknownPartition,
            ) => {
                tracing::debug!(%error, "The sharing topic's broker went away or lost the topic.");
                self.disturb();
                self.next_check = self.next_check.min(Instant::now() + CHECK_RETRY);
            }
            _ => tracing::debug!(%error, "Kafka consumer error."),
        }
    }

    /// An outage: closes the consumer and the topic gate (see the module
    /// documentation) and remembers when it began.
    fn disturb(&mut self) {
        self.disturbed_since.get_or_insert_with(SystemTime::now);
        self.consumer = None;
        self.gate.close(&self.producer);
    }

    /// Asks the broker for the topic; creates it, (re)assigns partitions,
    /// resends kept messages and updates the lag, as needed.
    fn check(&mut self) {
        let retry = self.consumer.is_none() || self.disturbed_since.is_some();
        let partitions = self.admin.partitions(&self.settings.topic, REQUEST_TIMEOUT);
        self.set_broker_up(partitions.is_ok());
        match partitions {
            Err(error) => {
                tracing::debug!(%error, "The Kafka broker did not answer.");
                self.disturb();
            }
            Ok(None) => {
                self.disturb();
                let t = &self.settings.topic;
                match self
                    .admin
                    .create(t, self.settings.partitions, Some(1), REQUEST_TIMEOUT)
                {
                    Ok(()) => tracing::info!(
                        topic = t,
                        partitions = self.settings.partitions,
                        "Created the ownership sharing topic."
                    ),
                    Err(error) => {
                        tracing::warn!(topic = t, %error, "Could not create the ownership sharing topic.")
                    }
                }
            }
            Ok(Some(n)) => {
                let assigned = self.started && self.consumer.is_some();
                if !assigned || n != self.parts.len() || self.disturbed_since.is_some() {
                    self.assign(n);
                }
                // The producer's own report may have come in meanwhile.
                if self.disturbed_since.is_none() && !self.gate.take_outage() {
                    self.gate.open();
                    if self.requeue.len() > 0 {
                        let sent = self.requeue.resend(&self.producer, &self.settings.topic);
                        tracing::debug!(sent, "Sent kept ownership messages again.");
                    }
                } else {
                    self.disturb();
                }
            }
        }
        self.update_lag();
        let retry = retry || self.consumer.is_none() || self.disturbed_since.is_some();
        self.next_check = Instant::now() + if retry { CHECK_RETRY } else { CHECK_EVERY };
    }

    fn set_broker_up(&mut self, up: bool) {
        self.counters.broker_up.store(up, Ordering::Relaxed);
        if self.broker_up != Some(up) {
            let brokers = &self.settings.brokers;
            match (self.broker_up, up) {
                (_, true) => tracing::info!(brokers, "The ownership sharing broker answers."),
                (Some(true), false) => tracing::warn!(
                    brokers,
                    "The ownership sharing broker does not answer; attribution goes on from the local table."
                ),
                (_, false) => {
                    tracing::warn!(brokers, "The ownership sharing broker does not answer yet.")
                }
            }
            self.broker_up = Some(up);
        }
    }

    /// Assigns partitions `0..n`: at first from the warm-up window, after an
    /// outage from its start (never later than the current position),
    /// otherwise where each partition is (new ones from the beginning).
    fn assign(&mut self, n: usize) {
        let initial = !self.started;
        if let Err(error) = self.open_consumer() {
            tracing::warn!(%error, "Could not make a Kafka consumer.");
            return;
        }
        let since = if initial {
            SystemTime::now().checked_sub(self.settings.warmup_window)
        } else {
            self.disturbed_since
                .map(|t| t.checked_sub(RECOVERY_MARGIN).unwrap_or(UNIX_EPOCH))
        };
        let found = match since.map(|t| self.offsets_at(t, n)) {
            Some(Ok(found)) => Some(found),
            Some(Err(error)) if !initial => {
                tracing::debug!(%error, "Could not look up offsets by time; trying again.");
                return;
            }
            // Without offsets by time, warm up from the beginning.
            Some(Err(_)) | None => None,
        };
        let mut starts = Vec::with_capacity(n);
        for p in 0..n {
            let current = self.parts.get(p).and_then(|x| x.position);
            starts.push(match (&found, current) {
                (Some(f), Some(c)) if !initial => Some(f[p].map_or(c, |o| o.min(c))),
                (Some(f), _) => f[p],
                (None, c) => c,
            });
        }
        let mut tpl = TopicPartitionList::new();
        for (p, start) in starts.iter().enumerate() {
            let offset = start.map_or(Offset::Beginning, Offset::Offset);
            if let Err(error) = tpl.add_partition_offset(&self.settings.topic, p as i32, offset) {
                tracing::warn!(%error, "Could not build the partition assignment.");
                return;
            }
        }
        let consumer = self.consumer.as_ref().expect("opened above");
        if let Err(error) = consumer.assign(&tpl) {
            tracing::warn!(%error, "Could not assign the sharing topic's partitions.");
            return;
        }
        let recovered = !initial && self.disturbed_since.is_some();
        self.parts = starts
            .iter()
            .enumerate()
            .map(|(p, &position)| Part {
                position,
                caught_up: self.parts.get(p).map_or(self.warmed_up, |x| x.caught_up),
            })
            .collect();
        if recovered {
            self.counters.repositions.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                topic = self.settings.topic,
                ?starts,
                "Reading the ownership sharing topic again from before the outage."
            );
        }
        self.started = true;
        self.disturbed_since = None;
        self.update_warm_up();
    }

    /// Per partition, the first offset at or after `t`, where the broker
    /// knows one.
    fn offsets_at(&self, t: SystemTime, n: usize) -> Result<Vec<Option<i64>>, KafkaError> {
        let ms = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64;
        let topic = &self.settings.topic;
        let mut tpl = TopicPartitionList::new();
        for p in 0..n {
            tpl.add_partition_offset(topic, p as i32, Offset::Offset(ms))?;
        }
        let consumer = self
            .consumer
            .as_ref()
            .ok_or(KafkaError::NoMessageReceived)?;
        let found = consumer.offsets_for_times(tpl, REQUEST_TIMEOUT)?;
        let mut out = vec![None; n];
        for e in found.elements() {
            let Some(slot) = usize::try_from(e.partition())
                .ok()
                .and_then(|p| out.get_mut(p))
            else {
                continue;
            };
            *slot = match (e.error(), e.offset()) {
                (Ok(()), Offset::Offset(o)) => Some(o),
                // Nothing that new: start at the end as it is now.
                (Ok(()), Offset::End) => consumer
                    .fetch_watermarks(topic, e.partition(), REQUEST_TIMEOUT)
                    .ok()
                    .map(|(_, high)| high),
                _ => None,
            };
        }
        Ok(out)
    }

    fn update_warm_up(&mut self) {
        let behind = self.parts.iter().filter(|p| !p.caught_up).count();
        self.counters
            .partitions_behind
            .store(behind as u64, Ordering::Relaxed);
        if !self.warmed_up && self.started && behind == 0 {
            self.warmed_up = true;
            self.counters.warmed_up.store(true, Ordering::Relaxed);
            tracing::info!(
                topic = self.settings.topic,
                "Read the ownership sharing topic's history."
            );
            self.hand_on(Inbound::WarmedUp);
        }
    }

    fn update_lag(&self) {
        let w = self.watermarks.lock().unwrap_or_else(|e| e.into_inner());
        let lag: i64 = self
            .parts
            .iter()
            .enumerate()
            .filter_map(|(p, part)| {
                let &(low, high) = w.get(&(p as i32))?;
                Some((high - part.position.unwrap_or(low).max(low)).max(0))
            })
            .sum();
        self.counters.lag.store(lag as u64, Ordering::Relaxed);
    }

    /// Hands an item to the collector, waiting while the channel is full
    /// (the broker keeps what is not read yet).
    fn hand_on(&self, mut item: Inbound) {
        loop {
            match self.tx.try_send(item) {
                Ok(()) => return,
                Err(TrySendError::Full(back)) => {
                    if self.stop.load(Ordering::Relaxed) {
                        return;
                    }
                    item = back;
                    thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.stop.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

/// Checks one message read, with its authentication headers.
fn admit(admission: &Admission, m: &BorrowedMessage<'_>) -> Result<Decoded, Refusal> {
    let mut envelope = Envelope::default();
    if let Some(headers) = m.headers() {
        for h in headers.iter() {
            let slot = match h.key {
                auth::ORIGIN_HEADER => &mut envelope.origin,
                auth::KEY_ID_HEADER => &mut envelope.key_id,
                auth::SIGNATURE_HEADER => &mut envelope.signature,
                _ => continue,
            };
            *slot = h.value;
        }
    }
    admission.admit(m.key(), m.payload().unwrap_or_default(), &envelope)
}
