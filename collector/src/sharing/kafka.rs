//! [`KafkaSharing`]: publishes the ranges local heartbeats changed and the
//! local agents' completeness watermarks, and hands on other collectors',
//! on std threads, never making the caller wait on the broker.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, TryRecvError},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use rdkafka::{
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{BaseRecord, Producer, ThreadedProducer},
};

use rustc_hash::FxHashMap;

use super::{
    SharingConfig, SharingError,
    admit::Admission,
    auth::{self, Claimants, Signer},
    client::{self, DeliveryContext, Requeue, TopicGate},
    codec::{self, Encoded},
    counters::{Counters, SharingCounters},
    reader::{Inbound, Reader, ReaderSettings},
};
use crate::{
    completeness::{Mark, SharedMark},
    ownership::RangeUpdate,
};

/// At most this many agents' watermarks are held waiting: received and not
/// yet polled, or not yet published because the broker is away. Marks of
/// one agent are merged into one, so this bounds memory by the number of
/// agents, whatever the rate; past it, the marks of further agents are
/// dropped and counted (`marks_dropped`).
pub const MAX_MARKS_PENDING: usize = 65_536;

/// What one [`KafkaSharing::publish`] or [`KafkaSharing::publish_marks`]
/// did with its messages (one per address, or per
/// [`MAX_MARKS_PER_MESSAGE`](codec::MAX_MARKS_PER_MESSAGE) watermarks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Published {
    /// Handed to the producer.
    pub messages: usize,
    /// Kept to send once the topic exists again.
    pub kept: usize,
    /// Refused (the producer's queue was full); counted as publish errors.
    pub refused: usize,
}

/// Ownership sharing through one Kafka topic; see the
/// [module documentation](super).
pub struct KafkaSharing {
    origin: Arc<str>,
    topic: String,
    signer: Option<Arc<Signer>>,
    producer: ThreadedProducer<DeliveryContext>,
    requeue: Arc<Requeue>,
    gate: Arc<TopicGate>,
    counters: Arc<Counters>,
    rx: Receiver<Inbound>,
    /// Received but not yet returned (past a `poll`'s `max`, or from a
    /// warm-up that timed out).
    pending: VecDeque<RangeUpdate>,
    /// Watermarks received but not yet polled, the highest per agent.
    pending_marks: FxHashMap<Arc<str>, Mark>,
    /// Local watermarks not yet published (the topic was not confirmed),
    /// the highest per agent.
    unsent_marks: FxHashMap<Arc<str>, Mark>,
    /// How many ranges `poll_marks` lets gather in `pending` while it takes
    /// what the reader has.
    pending_bound: usize,
    warmed_up: bool,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl KafkaSharing {
    /// Starts sharing as collector `origin`. Does not wait for the broker:
    /// the reader thread connects, creates the topic if it is missing, and
    /// starts reading the history (see [`KafkaSharing::warm_up`]).
    pub fn new(config: SharingConfig, origin: &str) -> Result<Self, SharingError> {
        config.validate()?;
        if origin.is_empty() {
            return Err(SharingError::Config(
                "the collector's name (the origin of its messages) is empty".into(),
            ));
        }
        let origin: Arc<str> = origin.into();
        if let Some(signer) = &config.signer
            && signer.origin() != &origin
        {
            return Err(SharingError::Config(format!(
                "the signing key is for origin {:?}, this collector is {origin:?}",
                signer.origin()
            )));
        }
        let security = config.security.resolve()?;
        let trust = config.trust.clone().map(|mut trust| {
            if let Some(signer) = &config.signer {
                trust.add(&origin, vec![signer.public_key()], Claimants::Any);
            }
            trust
        });
        match (&config.signer, &trust) {
            (_, None) => tracing::warn!(
                topic = config.topic,
                signed = config.signer.is_some(),
                "Ownership sharing is UNAUTHENTICATED: any client that can write to the topic can inject ownership ranges and watermarks."
            ),
            (Some(signer), Some(trust)) => tracing::info!(
                topic = config.topic,
                key_id = signer.public_key().id(),
                trusted_origins = trust.len(),
                "Ownership sharing messages are signed and verified."
            ),
            (None, Some(_)) => unreachable!("validated: verifying needs a signer"),
        }
        let counters = Arc::new(Counters::default());
        let requeue = Arc::new(Requeue::new(config.publish_queue_messages));
        let gate = Arc::new(TopicGate::default());
        let producer = client::producer(
            &client::producer_config(
                &config.brokers,
                &security,
                config.publish_queue_messages,
                config.publish_queue_bytes,
                config.delivery_timeout,
            ),
            "ownership sharing",
            counters.deliveries.clone(),
            requeue.clone(),
            gate.clone(),
        )?;
        let (tx, rx) = mpsc::sync_channel(config.inbound_queue);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = Reader::new(
            ReaderSettings {
                brokers: config.brokers.clone(),
                topic: config.topic.clone(),
                origin: origin.clone(),
                partitions: config.partitions,
                warmup_window: config.warmup_window,
                security,
                admission: Admission {
                    topic: config.topic.clone(),
                    max_message_bytes: config.max_message_bytes,
                    trust,
                },
            },
            producer.clone(),
            requeue.clone(),
            gate.clone(),
            tx,
            counters.clone(),
            stop.clone(),
        )?;
        let reader = thread::Builder::new()
            .name(format!("sharing-{}", config.topic))
            .spawn(move || reader.run())
            .map_err(|e| SharingError::Config(format!("could not start the reader thread: {e}")))?;
        Ok(Self {
            pending_bound: config.inbound_queue,
            pending_marks: FxHashMap::default(),
            unsent_marks: FxHashMap::default(),
            origin,
            topic: config.topic,
            signer: config.signer,
            producer,
            requeue,
            gate,
            counters,
            rx,
            pending: VecDeque::new(),
            warmed_up: false,
            stop,
            reader: Some(reader),
        })
    }

    /// This collector's name, the `origin` of its messages.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Publishes ranges (usually [`OwnershipTable::drain_changes`]), one
    /// message per address. Never waits. Until the broker has confirmed the
    /// topic (at start, and after an outage) messages are kept and sent
    /// once it has; a message there is no room for, in the producer's queue
    /// or among the kept ones, is refused and counted. A range lost this way
    /// is partly healed by the next change of the same range, which
    /// publishes it whole again.
    ///
    /// [`OwnershipTable::drain_changes`]: crate::ownership::OwnershipTable::drain_changes
    pub fn publish(&self, updates: &[RangeUpdate]) -> Published {
        if updates.is_empty() {
            return Published::default();
        }
        let invalid = updates.iter().filter(|u| !codec::valid_update(u)).count() as u64;
        if invalid > 0 {
            let n = self
                .counters
                .ranges_invalid
                .fetch_add(invalid, Ordering::Relaxed)
                + invalid;
            // Every one is counted; the log thins out (1, 2, 4, …).
            if (n - invalid).checked_ilog2() != n.checked_ilog2() {
                tracing::warn!(
                    topic = self.topic,
                    refused = n,
                    "A range was not published: its workload or claimant is past the limits every reader keeps."
                );
            }
        }
        let messages = codec::encode(&self.origin, updates);
        let (report, _) = self.send(&messages, "An ownership update");
        report
    }

    /// Publishes this collector's agents' completeness watermarks (usually
    /// [`Completeness::drain_changes`]), up to
    /// [`MAX_MARKS_PER_MESSAGE`](codec::MAX_MARKS_PER_MESSAGE) to a message.
    /// Never waits. Until the broker has confirmed the topic, the marks are
    /// kept here instead, the highest per agent (a newer mark makes an
    /// older one worthless), and published by the first call of this or of
    /// [`KafkaSharing::poll_marks`] once it has. A mark whose claimant no
    /// reader would take ([`codec::valid_claimant`]) is counted
    /// (`marks_invalid`) and not sent. A message the producer has no room
    /// for is refused and counted, like ranges; the agent's next mark heals
    /// it.
    ///
    /// [`Completeness::drain_changes`]: crate::completeness::Completeness::drain_changes
    pub fn publish_marks(&mut self, marks: &[SharedMark]) -> Published {
        let c = &self.counters;
        for m in marks {
            if !codec::valid_claimant(&m.claimant) {
                let n = c.marks_invalid.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        topic = self.topic,
                        claimant_bytes = m.claimant.len(),
                        refused = n,
                        "A watermark was not published: its claimant is empty or too long for any reader."
                    );
                }
                continue;
            }
            merge_mark(&mut self.unsent_marks, &m.claimant, m.mark, c);
        }
        self.send_marks()
    }

    /// Sends the kept local watermarks if the topic is confirmed.
    fn send_marks(&mut self) -> Published {
        if self.unsent_marks.is_empty() || !self.gate.is_ready() {
            return Published::default();
        }
        let marks = sorted(self.unsent_marks.drain());
        let messages = codec::encode_marks(&self.origin, &marks);
        let (report, taken) = self.send(&messages, "A watermark message");
        let mut published = 0;
        for (i, taken) in taken.into_iter().enumerate() {
            if taken {
                let start = i * codec::MAX_MARKS_PER_MESSAGE;
                published += marks.len().min(start + codec::MAX_MARKS_PER_MESSAGE) - start;
            }
        }
        self.counters
            .marks_published
            .fetch_add(published as u64, Ordering::Relaxed);
        report
    }

    /// Hands `messages` to the producer, or keeps them while the topic is
    /// not confirmed; says which were taken (sent or kept).
    fn send(&self, messages: &[Encoded], what: &str) -> (Published, Vec<bool>) {
        let mut report = Published::default();
        let mut taken = Vec::with_capacity(messages.len());
        let ready = self.gate.is_ready();
        if ready && self.requeue.len() > 0 {
            self.requeue.resend(&self.producer, &self.topic);
        }
        let c = &self.counters;
        for m in messages {
            let headers = self.sign(m);
            let error = if ready {
                let mut record = BaseRecord::to(&self.topic).key(&m.key).payload(&m.payload);
                if let Some(h) = &headers {
                    record = record.headers(h.clone());
                }
                match self.producer.send(record) {
                    Ok(()) => {
                        c.published.fetch_add(1, Ordering::Relaxed);
                        report.messages += 1;
                        taken.push(true);
                        continue;
                    }
                    Err((e, _)) => Some(e),
                }
            } else {
                None
            };
            // The topic is not confirmed (or missing): keep the message
            // until the reader has seen the topic again.
            let keep = error.as_ref().is_none_or(client::retryable);
            if keep
                && self
                    .requeue
                    .push(Some(m.key.as_bytes()), &m.payload, headers)
            {
                c.deliveries.requeued.fetch_add(1, Ordering::Relaxed);
                report.kept += 1;
                taken.push(true);
                continue;
            }
            report.refused += 1;
            taken.push(false);
            let full = error
                .as_ref()
                .is_none_or(|e| e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull));
            let n = if full || keep {
                c.queue_full.fetch_add(1, Ordering::Relaxed)
            } else {
                c.deliveries.failed.fetch_add(1, Ordering::Relaxed)
            } + 1;
            if n.is_power_of_two() {
                match &error {
                    Some(e) => {
                        tracing::warn!(topic = self.topic, error = %e, refused = n, "{what} could not be published.")
                    }
                    None => tracing::warn!(
                        topic = self.topic,
                        refused = n,
                        "{what} could not be kept while the broker is away: the queue is full."
                    ),
                }
            }
        }
        (report, taken)
    }

    /// The authentication headers of a message, if this collector signs.
    fn sign(&self, m: &Encoded) -> Option<OwnedHeaders> {
        let signer = self.signer.as_ref()?;
        let sig = signer.sign(&self.topic, m.key.as_bytes(), &m.payload);
        Some(
            OwnedHeaders::new_with_capacity(3)
                .insert(Header {
                    key: auth::ORIGIN_HEADER,
                    value: Some(sig.origin.as_bytes()),
                })
                .insert(Header {
                    key: auth::KEY_ID_HEADER,
                    value: Some(sig.key_id.as_bytes()),
                })
                .insert(Header {
                    key: auth::SIGNATURE_HEADER,
                    value: Some(&sig.bytes[..]),
                }),
        )
    }

    /// Reads the retained history: every partition from `warmup_window`
    /// ago to its end, this collector's own earlier messages included.
    /// Returns the ranges read; apply them to the table. The watermarks
    /// read meanwhile come from the next [`KafkaSharing::poll_marks`].
    ///
    /// If the history is not read within `timeout` (a broker that is down
    /// or slow), returns [`SharingError::WarmUpTimedOut`]; nothing is lost:
    /// what was read so far, and the rest of the history, come from later
    /// [`KafkaSharing::poll`]s.
    pub fn warm_up(&mut self, timeout: Duration) -> Result<Vec<RangeUpdate>, SharingError> {
        let deadline = Instant::now() + timeout;
        let mut out: Vec<RangeUpdate> = self.pending.drain(..).collect();
        while !self.warmed_up {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Inbound::Updates(u)) => out.extend(u),
                Ok(item) => self.take(item),
                Err(e) => {
                    self.pending.extend(out);
                    let c = self.counters();
                    return Err(match e {
                        RecvTimeoutError::Timeout => SharingError::WarmUpTimedOut {
                            waited: timeout,
                            partitions_behind: c.partitions_behind,
                            broker_up: c.broker_up,
                        },
                        RecvTimeoutError::Disconnected => SharingError::ReaderStopped,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Whether the history has been read.
    pub fn is_warmed_up(&self) -> bool {
        self.warmed_up
    }

    /// Up to `max` ranges from other collectors, waiting at most `timeout`
    /// for the first.
    pub fn poll(&mut self, max: usize, timeout: Duration) -> Vec<RangeUpdate> {
        let mut out = Vec::new();
        let deadline = Instant::now() + timeout;
        while self.pending.is_empty() && max > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(item) => self.take(item),
                Err(_) => return out,
            }
        }
        while self.pending.len() < max {
            match self.rx.try_recv() {
                Ok(item) => self.take(item),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let n = max.min(self.pending.len());
        out.extend(self.pending.drain(..n));
        out
    }

    /// Every watermark other collectors published since the last call
    /// (the history's too, after a warm-up), the highest per agent, by
    /// claimant. Never waits: takes what the reader has, as long as fewer
    /// than `inbound_queue` ranges are waiting for [`KafkaSharing::poll`]
    /// (so the reader's bounded channel keeps bounding memory). Also sends
    /// the local watermarks [`KafkaSharing::publish_marks`] kept while the
    /// broker was away, once the topic is confirmed again.
    pub fn poll_marks(&mut self) -> Vec<SharedMark> {
        self.send_marks();
        while self.pending.len() < self.pending_bound {
            match self.rx.try_recv() {
                Ok(item) => self.take(item),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        sorted(self.pending_marks.drain())
    }

    fn take(&mut self, item: Inbound) {
        match item {
            Inbound::Updates(u) => self.pending.extend(u),
            Inbound::Marks(marks) => {
                for m in marks {
                    merge_mark(&mut self.pending_marks, &m.claimant, m.mark, &self.counters);
                }
            }
            Inbound::WarmedUp => self.warmed_up = true,
        }
    }

    /// Waits up to `timeout` for the producer's outstanding messages.
    pub fn flush(&self, timeout: Duration) -> Result<(), SharingError> {
        self.producer
            .flush(timeout)
            .map_err(|_| SharingError::FlushTimedOut {
                outstanding: self.producer.in_flight_count().max(0) as u64,
            })
    }

    pub fn counters(&self) -> SharingCounters {
        self.counters
            .snapshot(self.requeue.len(), self.unsent_marks.len())
    }
}

/// Keeps the highest of each field per agent (what the completeness does
/// with them, so nothing is lost), within [`MAX_MARKS_PENDING`] agents.
fn merge_mark(into: &mut FxHashMap<Arc<str>, Mark>, claimant: &Arc<str>, mark: Mark, c: &Counters) {
    if let Some(m) = into.get_mut(claimant) {
        m.watermark_ns = m.watermark_ns.max(mark.watermark_ns);
        m.heard_ns = m.heard_ns.max(mark.heard_ns);
    } else if into.len() < MAX_MARKS_PENDING {
        into.insert(claimant.clone(), mark);
    } else {
        let n = c.marks_dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                agents = into.len(),
                dropped = n,
                "A watermark was dropped: too many agents' watermarks are waiting."
            );
        }
    }
}

fn sorted(marks: impl Iterator<Item = (Arc<str>, Mark)>) -> Vec<SharedMark> {
    let mut out: Vec<SharedMark> = marks
        .map(|(claimant, mark)| SharedMark { claimant, mark })
        .collect();
    out.sort_unstable_by(|a, b| a.claimant.cmp(&b.claimant));
    out
}

impl Drop for KafkaSharing {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl From<KafkaError> for SharingError {
    fn from(e: KafkaError) -> Self {
        SharingError::Client(e)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flowattr_model::{TimeRange, Workload};

    use super::*;

    /// A port nothing listens on.
    fn unreachable(queue: usize) -> KafkaSharing {
        let config = SharingConfig {
            publish_queue_messages: queue,
            ..SharingConfig::new("127.0.0.1:1", "ownership")
        };
        KafkaSharing::new(config, "collector-a").unwrap()
    }

    fn updates(n: u8) -> Vec<RangeUpdate> {
        let w = Arc::new(Workload::with_id("w"));
        (1..=n)
            .map(|i| RangeUpdate {
                ip: format!("10.0.0.{i}").parse().unwrap(),
                workload: w.clone(),
                range: TimeRange::new(1, 2),
                claimant: "agent".into(),
            })
            .collect()
    }

    #[test]
    fn without_a_broker_updates_are_kept_up_to_the_bound_and_the_rest_counted() {
        let sharing = unreachable(3);
        let started = Instant::now();
        let report = sharing.publish(&updates(5));
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(
            report,
            Published {
                messages: 0,
                kept: 3,
                refused: 2
            }
        );
        let c = sharing.counters();
        assert_eq!((c.requeued, c.requeue_waiting), (3, 3), "{c:?}");
        assert_eq!((c.queue_full, c.publish_errors), (2, 2), "{c:?}");
    }

    #[test]
    fn without_a_broker_warm_up_times_out_and_poll_returns_at_once() {
        let mut sharing = unreachable(10);
        let err = sharing.warm_up(Duration::from_millis(300)).unwrap_err();
        assert!(matches!(err, SharingError::WarmUpTimedOut { .. }), "{err}");
        assert!(!sharing.is_warmed_up());
        let started = Instant::now();
        assert!(sharing.poll(10, Duration::from_millis(50)).is_empty());
        assert!(started.elapsed() < Duration::from_millis(500));
    }

    fn mark(claimant: &str, watermark_ns: u64, heard_ns: u64) -> SharedMark {
        SharedMark {
            claimant: claimant.into(),
            mark: Mark {
                watermark_ns,
                heard_ns,
            },
        }
    }

    #[test]
    fn without_a_broker_marks_are_kept_the_highest_per_agent_and_invalid_ones_counted() {
        let mut sharing = unreachable(1);
        let started = Instant::now();
        let long = "x".repeat(codec::MAX_CLAIMANT_LEN + 1);
        let report = sharing.publish_marks(&[
            mark("agent-b", 10, 20),
            mark("agent-a", 5, 6),
            mark("", 1, 1),
            mark(&long, 1, 1),
        ]);
        // Older for one field, newer for the other: both highest are kept.
        sharing.publish_marks(&[mark("agent-b", 30, 15)]);
        assert!(
            sharing.poll_marks().is_empty(),
            "nothing of its own comes back"
        );
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(report, Published::default(), "nothing sent or queued");
        let c = sharing.counters();
        assert_eq!((c.marks_waiting, c.marks_invalid), (2, 2), "{c:?}");
        // Kept out of the producer's bounded queue, which stays for ranges.
        assert_eq!(
            (c.requeue_waiting, c.published, c.marks_published),
            (0, 0, 0),
            "{c:?}"
        );
        assert_eq!(
            sorted(sharing.unsent_marks.clone().into_iter()),
            vec![mark("agent-a", 5, 6), mark("agent-b", 30, 20)]
        );
        assert_eq!(
            sharing.publish(&updates(1)).kept,
            1,
            "ranges still have their room"
        );
    }

    #[test]
    fn pending_marks_merge_per_agent_within_the_bound() {
        let c = Counters::default();
        let mut map = FxHashMap::default();
        let a: Arc<str> = "a".into();
        merge_mark(
            &mut map,
            &a,
            Mark {
                watermark_ns: 5,
                heard_ns: 9,
            },
            &c,
        );
        merge_mark(
            &mut map,
            &a,
            Mark {
                watermark_ns: 7,
                heard_ns: 1,
            },
            &c,
        );
        assert_eq!(
            map[&a],
            Mark {
                watermark_ns: 7,
                heard_ns: 9
            }
        );
        for i in 1..MAX_MARKS_PENDING {
            merge_mark(&mut map, &format!("agent-{i}").into(), Mark::default(), &c);
        }
        assert_eq!(map.len(), MAX_MARKS_PENDING);
        merge_mark(&mut map, &"one-too-many".into(), Mark::default(), &c);
        merge_mark(
            &mut map,
            &a,
            Mark {
                watermark_ns: 8,
                heard_ns: 9,
            },
            &c,
        );
        assert_eq!(map.len(), MAX_MARKS_PENDING);
        assert_eq!(map[&a].watermark_ns, 8, "known agents still merge");
        assert_eq!(c.marks_dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn bad_configurations_are_refused() {
        let bad = |f: fn(&mut SharingConfig)| {
            let mut c = SharingConfig::new("127.0.0.1:1", "t");
            f(&mut c);
            KafkaSharing::new(c, "a").err()
        };
        assert!(matches!(
            bad(|c| c.brokers.clear()),
            Some(SharingError::Config(_))
        ));
        assert!(matches!(
            bad(|c| c.topic.clear()),
            Some(SharingError::Config(_))
        ));
        assert!(matches!(
            bad(|c| c.partitions = 0),
            Some(SharingError::Config(_))
        ));
        assert!(matches!(
            bad(|c| c.inbound_queue = 0),
            Some(SharingError::Config(_))
        ));
        let empty_name = KafkaSharing::new(SharingConfig::new("127.0.0.1:1", "t"), "");
        assert!(matches!(empty_name, Err(SharingError::Config(_))));
    }
}
