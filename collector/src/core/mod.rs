//! The collector's core: one thread that owns the ownership table, the hold
//! queue, the journal and the outputs, and moves every batch through them.
//! The I/O shells (QUIC receiver, Kafka sharing, forwarding shippers,
//! metrics endpoint) only hand it [`Input`]s and take what it gives back.
//! Plugins are called here, on a plain thread (wasmtime-wasi's synchronous
//! filesystem must not run on a tokio worker).
//!
//! A batch's way through:
//!
//! 1. **Arrival.** A batch id it remembers is a duplicate: acknowledged
//!    again, not taken again; an arrival whose sender stopped waiting is
//!    dropped (it will be sent again). The rest wait in a queue bounded by
//!    count and bytes; while the hold queue or the outputs are full they
//!    stay there, and once the queue is full the core stops taking
//!    arrivals at all, so the receiver stops reading and QUIC flow control
//!    slows the agents (their spools hold the batches). A batch whose
//!    `agent` is not the sender's certificate name is refused, and so is
//!    one from an agent not in `[claims]` (unless configured otherwise).
//! 2. **Journal, heartbeats, hold, acknowledgement.** The batch is appended
//!    to the journal; once a tick's batches are durable (one sync), each
//!    flow whose local side the agent attributed becomes a heartbeat
//!    claimed by the sender (forwarded batches claim nothing), the batch
//!    joins the hold queue, and only then is it acknowledged.
//! 3. **Release.** After the hold, remote sides are attributed
//!    ([`crate::remote`]); flows for other regions are forwarded; the rest go
//!    through the policy chain and the sink plugin to every output.
//! 4. **Written out.** When every output has a batch's flows for good
//!    (synced to disk, or delivered and acknowledged by Kafka), its journal
//!    entry goes and its id joins the written-out log.
//!
//! A starting core replays the journal first, an entry at a time while the
//! hold has room, before it takes any arrival.

mod arrival;
mod formatting;
mod live;
mod release;
mod warnings;

use std::{
    collections::{HashSet, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::Duration,
};

use flowattr_model::{AttributedFlow, FlowBatch, IpEvent};
use flowattr_plugin_runtime::PluginDirectory;

use crate::{
    clocks::{ClockOffsets, ClockSample},
    completeness::{Completeness, SharedMark},
    counterpart::Counterparts,
    dedupe::RecentBatches,
    hold::HoldQueue,
    journal::{Journal, Recovery},
    metrics::CollectorMetrics,
    output::Outputs,
    ownership::{OwnershipTable, RangeUpdate},
    remote::Regions,
    shadow::Comparison,
};

/// What the core decided about an arriving batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Journaled and held: the collector is responsible for it now.
    Accepted,
    /// Already taken earlier (same batch id): acknowledge, take nothing.
    Duplicate,
    /// Never acceptable (the sender will drop it): why.
    Rejected(String),
    /// The sender is not listed in `[claims]`: refused until it is (the
    /// sender keeps the batch and offers it again): why.
    Unclaimed(String),
}

/// A batch that arrived from an agent or another region's collector.
pub struct Arrival {
    /// The sender's certificate name.
    pub peer: String,
    pub batch: FlowBatch,
    /// The batch's frame body as it arrived, for the journal.
    pub body: Vec<u8>,
    /// The frame's timing, from which the sender's clock offset is
    /// measured; `None` from a sender that does not stamp its frames (its
    /// flows are then not trusted for remote attribution).
    pub clock: Option<ClockSample>,
    /// Told the decision once. Dropped unanswered when the collector stops
    /// before deciding or the sender stopped waiting: it will send it again.
    pub reply: Box<dyn Replier>,
}

impl Arrival {
    /// What the arrival costs while it waits: its frame and its flows.
    fn cost(&self) -> usize {
        self.body.len() + self.batch.flows.len() * std::mem::size_of::<AttributedFlow>()
    }
}

/// Where an arrival's decision goes.
pub trait Replier: Send {
    fn reply(self: Box<Self>, decision: Decision);
    /// Whether the sender stopped waiting for this answer (it gave up and
    /// will send the batch again): the arrival is then dropped untaken.
    fn abandoned(&self) -> bool {
        false
    }
}

impl<F: FnOnce(Decision) + Send> Replier for F {
    fn reply(self: Box<Self>, decision: Decision) {
        (*self)(decision)
    }
}

/// Everything the core is told.
pub enum Input {
    Arrival(Arrival),
    /// Address events for the resolver plugins (the legacy event stream).
    IpEvents(Vec<IpEvent>),
}

/// Where flows for another region go.
pub trait Forwarder: Send {
    /// Hands a batch over for delivery; when it cannot be taken now, gives
    /// it back with the reason, and its flows are written out here instead.
    fn forward(&mut self, batch: FlowBatch) -> Result<(), (String, FlowBatch)>;
}

/// Ownership sharing with other collectors (Kafka). Neither call may wait
/// on the broker: attribution goes on from the table while it is down.
pub trait Sharing: Send {
    /// Sends the ranges this collector's heartbeats changed.
    fn publish(&mut self, updates: &[RangeUpdate]);
    /// Ranges other collectors learned since the last call.
    fn poll(&mut self) -> Vec<RangeUpdate>;
    /// Sends this collector's agents' completeness watermarks.
    fn publish_marks(&mut self, marks: &[SharedMark]);
    /// Watermarks other collectors' agents reported since the last call.
    fn poll_marks(&mut self) -> Vec<SharedMark>;
    /// The shared history (at start), within `timeout`: what arrived.
    fn warm_up(&mut self, timeout: Duration) -> Vec<RangeUpdate>;
    /// Counters by name, for metrics.
    fn counters(&self) -> Vec<(&'static str, u64)>;
}

/// Turns a journaled frame body into its batch.
pub type Decode = Box<dyn Fn(&[u8]) -> Result<FlowBatch, String> + Send>;

/// An arrival journaled but not yet synced.
struct Unsynced {
    peer: String,
    batch: FlowBatch,
    clock_trusted: bool,
    /// The completeness watermark it reports, on the collector's clock.
    watermark: Option<u64>,
    reply: Box<dyn Replier>,
}

/// The core's settings.
#[derive(Debug, Clone)]
pub struct CoreSettings {
    pub name: String,
    /// When this run started, Unix-epoch ns: the incarnation of forwarded
    /// batches.
    pub incarnation: u64,
    /// The longest a batch waits for completeness (see
    /// [`crate::completeness`]); released earlier once complete.
    pub hold: Duration,
    /// An agent heard nothing from for this long is not waited for.
    pub silent_after: Duration,
    pub max_held_flows: usize,
    pub remember_batches: usize,
    /// The sink plugin's name.
    pub sink: String,
    pub sink_batch: usize,
    /// Threads doing the per-flow work: this core's and `workers - 1` that
    /// run the sink plugin (see [`formatting`]).
    pub workers: usize,
    /// Certificate names allowed to forward flows here.
    pub forward_peers: HashSet<String>,
    /// The A/B's shadow resolver is asked this long after a flow's start (the
    /// legacy method's own hold), or at release if that is later.
    pub shadow_hold: Duration,
    /// Arrivals that may wait for room, by count and by bytes (frames and
    /// decoded flows); past either, [`Core::run`] stops taking arrivals.
    pub arrival_queue_batches: usize,
    pub arrival_queue_bytes: usize,
    /// Refuse batches from agents not listed in the claims (forward peers
    /// excepted).
    pub refuse_unclaimed_agents: bool,
}

/// The core and everything it owns.
pub struct Core {
    settings: CoreSettings,
    pub table: OwnershipTable,
    hold: HoldQueue,
    /// Held flows by endpoints, to match each with its other end's report.
    counterparts: Counterparts,
    recent: RecentBatches,
    /// Each sender's measured clock offset.
    clocks: ClockOffsets,
    /// How far each agent has reported.
    completeness: Completeness,
    journal: Journal,
    outputs: Outputs,
    regions: Regions,
    forwarders: Vec<Box<dyn Forwarder>>,
    sharing: Option<Box<dyn Sharing>>,
    plugins: Arc<PluginDirectory>,
    metrics: Arc<CollectorMetrics>,
    clock: Box<dyn Fn() -> u64 + Send>,
    comparison: Option<Box<dyn Comparison>>,
    /// Flows compared once the shadow's hold has passed: (due, flows).
    shadow_waiting: VecDeque<(u64, Vec<flowattr_ab::Compared>)>,
    /// Arrivals waiting for room, and what they cost.
    waiting: VecDeque<Arrival>,
    waiting_bytes: usize,
    /// Arrivals journaled since the last sync: taken and acknowledged once
    /// it succeeds.
    unsynced: Vec<Unsynced>,
    /// Answers to copies of unsynced batches, given after the sync.
    unsynced_duplicates: Vec<Box<dyn Replier>>,
    /// The journal still being replayed, and how its bodies decode.
    recovery: Option<(Recovery, Decode)>,
    /// Released flows on their way through the sink plugin.
    formatting: formatting::Formatting,
    forward_seq: u64,
    last_expire_ns: u64,
    /// Warnings about misbehaving agents, limited per agent.
    warnings: warnings::Warnings,
    /// Live queries and the service map, once [`Core::serve_live`] is called.
    live: Option<live::Live>,
}

/// The parts a core is built from.
pub struct CoreParts {
    pub table: OwnershipTable,
    pub journal: Journal,
    pub outputs: Outputs,
    pub regions: Regions,
    /// One per region, in the order of `regions`.
    pub forwarders: Vec<Box<dyn Forwarder>>,
    pub sharing: Option<Box<dyn Sharing>>,
    pub plugins: Arc<PluginDirectory>,
    pub metrics: Arc<CollectorMetrics>,
    /// Unix-epoch nanoseconds now (tests and the simulator drive it).
    pub clock: Box<dyn Fn() -> u64 + Send>,
    /// Where A/B records go, if anywhere: each flow's remote side beside
    /// the first shadow resolver's answer.
    pub comparison: Option<Box<dyn Comparison>>,
}

/// How often the core releases, writes and publishes when idle.
pub const TICK: Duration = Duration::from_millis(100);

impl Core {
    pub fn new(settings: CoreSettings, parts: CoreParts) -> Self {
        let ns = |d: Duration| d.as_nanos().min(u64::MAX as u128) as u64;
        let ownership = *parts.table.config();
        let (failures, drops) = (parts.metrics.clone(), parts.metrics.clone());
        let formatting = formatting::Formatting::new(
            settings.workers,
            settings.sink_batch,
            Box::new(move || {
                failures.sink_failures.inc();
            }),
            Box::new(move |n| drops.count_drop("too_large_for_output", n)),
        );
        Self {
            hold: HoldQueue::new(ns(settings.hold), settings.max_held_flows),
            counterparts: Counterparts::new(
                ownership.tolerance_ns(),
                // The other end's record arrives within a hold of the flow's
                // end, and from another region only once released there: up
                // to a second hold later.
                ns(settings.hold).saturating_mul(2),
                settings.max_held_flows,
            ),
            recent: RecentBatches::new(settings.remember_batches),
            clocks: ClockOffsets::new(ownership.max_skew_ns),
            completeness: Completeness::new(
                parts.table.claims(),
                ownership.tolerance_ns(),
                ns(settings.silent_after),
                (parts.clock)(),
            ),
            settings,
            table: parts.table,
            journal: parts.journal,
            outputs: parts.outputs,
            regions: parts.regions,
            forwarders: parts.forwarders,
            sharing: parts.sharing,
            plugins: parts.plugins,
            metrics: parts.metrics,
            clock: parts.clock,
            comparison: parts.comparison,
            shadow_waiting: VecDeque::new(),
            waiting: VecDeque::new(),
            waiting_bytes: 0,
            unsynced: Vec::new(),
            unsynced_duplicates: Vec::new(),
            recovery: None,
            formatting,
            forward_seq: 0,
            last_expire_ns: 0,
            warnings: warnings::Warnings::default(),
            live: None,
        }
    }

    /// Runs until `stop` is set or every sender of `inputs` is gone. What
    /// it still holds stays journaled for the next start (attributed then,
    /// after its hold, rather than early now).
    pub fn run(mut self, inputs: mpsc::Receiver<Input>, stop: &AtomicBool) {
        while !stop.load(Ordering::Relaxed) {
            if self.has_room_to_wait() {
                match inputs.recv_timeout(TICK) {
                    Ok(input) => {
                        self.accept(input);
                        // Take what else is waiting before the next tick.
                        while self.has_room_to_wait()
                            && let Ok(input) = inputs.try_recv()
                        {
                            self.accept(input);
                        }
                        self.answer_queries();
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                // Arrivals stay in the channel: the receiver stops reading
                // and QUIC flow control slows the agents.
                std::thread::sleep(TICK);
            }
            self.tick();
            self.answer_queries();
        }
    }

    /// Handles one input at once: an arrival is decided (and journaled and
    /// synced) now if there is room. For callers that bound what they hand
    /// over themselves (the simulator, tests); [`Core::run`] keeps the
    /// arrival queue's bound.
    pub fn handle(&mut self, input: Input) {
        self.accept(input);
        self.take_waiting();
        self.commit();
    }

    /// Queues an arrival (answering duplicates and dropping abandoned ones
    /// at once), or gives address events to the resolvers.
    fn accept(&mut self, input: Input) {
        match input {
            Input::Arrival(arrival) => {
                if self.answered_on_entry(arrival) {
                    return;
                }
            }
            Input::IpEvents(events) => self.ingest_events(&events),
        }
    }

    /// Answers a duplicate or drops an abandoned arrival; otherwise queues
    /// it and returns false.
    fn answered_on_entry(&mut self, arrival: Arrival) -> bool {
        if let Some(arrival) = self.screen(arrival) {
            if self.is_full() || self.recovery.is_some() {
                self.metrics.backpressure.inc();
            }
            self.waiting_bytes += arrival.cost();
            self.waiting.push_back(arrival);
            return false;
        }
        true
    }

    /// Whether the arrival queue holds fewer than its bounds.
    fn has_room_to_wait(&self) -> bool {
        self.waiting.len() < self.settings.arrival_queue_batches.max(1)
            && self.waiting_bytes < self.settings.arrival_queue_bytes.max(1)
    }

    /// Takes waiting arrivals while the hold and outputs have room and the
    /// journal has been replayed.
    fn take_waiting(&mut self) {
        while !self.is_full()
            && self.recovery.is_none()
            && let Some(arrival) = self.waiting.pop_front()
        {
            self.waiting_bytes -= arrival.cost();
            self.arrive(arrival);
        }
    }

    fn ingest_events(&mut self, events: &[IpEvent]) {
        // Shadow resolvers learn the events too: the A/B compares them.
        let all = self
            .plugins
            .chain(flowattr_plugin_runtime::manifest::PluginKind::Resolver);
        for resolver in all {
            if let Err(error) = resolver.ingest(events) {
                tracing::warn!(plugin = resolver.name(), %error, "resolver refused events");
                self.metrics
                    .count_drop("resolver_ingest_failed", events.len() as u64);
            }
        }
    }

    fn is_full(&self) -> bool {
        self.hold.is_full() || self.outputs.is_full()
    }

    /// Releases, attributes and writes out what is due; publishes changes;
    /// expires old ranges; updates gauges.
    pub fn tick(&mut self) {
        let now = (self.clock)();
        self.formatting.retry(
            self.plugins.get(&self.settings.sink),
            self.outputs.max_chunk_bytes(),
        );
        if !self.formatting.has_failed()
            && !self.formatting.is_backed_up()
            && !self.outputs.is_full()
        {
            self.completeness.refresh(now);
            let completeness = &self.completeness;
            let released = self.hold.release(
                now,
                |latest_end| completeness.all_complete(latest_end),
                |f| {
                    !matches!(f.remote, flowattr_model::Side::Pending)
                        || completeness.flow_complete(&f.flow)
                },
            );
            if !released.is_empty() {
                self.write_out(released, now);
            }
        }
        self.finish_written();
        self.ask_shadow(now);
        self.recover_some();
        self.take_waiting();
        self.commit();
        self.share(now);
        if now.saturating_sub(self.last_expire_ns) >= 1_000_000_000 {
            let before = *self.table.counters();
            self.table.expire(now);
            self.metrics
                .count_ownership(&self.table.counters().since(&before));
            self.last_expire_ns = now;
            self.update_agent_gauges(now);
            self.sample_rates(now);
        }
        self.update_gauges();
    }

    /// Publishes this collector's changes and applies the others'.
    fn share(&mut self, now: u64) {
        let Some(sharing) = &mut self.sharing else {
            return;
        };
        let changes = self.table.drain_changes();
        if !changes.is_empty() {
            sharing.publish(&changes);
        }
        let marks = self.completeness.drain_changes();
        if !marks.is_empty() {
            sharing.publish_marks(&marks);
        }
        for mark in sharing.poll_marks() {
            self.completeness.apply(&mark);
        }
        let updates = sharing.poll();
        if !updates.is_empty() {
            self.apply_shared(&updates, now);
        }
    }

    /// Reads the shared history into the table before the first batch.
    pub fn warm_up(&mut self, timeout: Duration) {
        let Some(sharing) = &mut self.sharing else {
            return;
        };
        let history = sharing.warm_up(timeout);
        let now = (self.clock)();
        tracing::info!(ranges = history.len(), "warmed up from shared history");
        self.apply_shared(&history, now);
    }

    /// Applies ranges other collectors learned (Kafka, or warm-up history).
    pub fn apply_shared(&mut self, updates: &[RangeUpdate], now: u64) {
        let before = *self.table.counters();
        for u in updates {
            self.table.apply(u, now);
        }
        self.metrics
            .count_ownership(&self.table.counters().since(&before));
    }

    /// Per-agent gauges (once a second: one series per agent).
    fn update_agent_gauges(&self, now: u64) {
        let m = &self.metrics;
        for (agent, offset_ns, verdict) in self.clocks.estimates() {
            let labels = vec![("agent", agent.to_owned())];
            m.agent_clock_offset
                .get_or_create(&labels)
                .set(offset_ns as f64 / 1e9);
            m.agent_clock_trusted
                .get_or_create(&labels)
                .set(i64::from(verdict.is_trusted()));
        }
        for (agent, mark) in self.completeness.marks() {
            m.agent_watermark_lag
                .get_or_create(&vec![("agent", agent.to_owned())])
                .set(now.saturating_sub(mark.watermark_ns) as f64 / 1e9);
        }
    }

    fn update_gauges(&self) {
        let m = &self.metrics;
        m.table_ranges.set(self.table.len_ranges() as i64);
        m.table_addresses.set(self.table.len_ips() as i64);
        m.table_memory_bytes.set(self.table.memory_bytes() as i64);
        m.hold_flows.set(self.hold.flows() as i64);
        m.counterpart_index.set(self.counterparts.len() as i64);
        m.hold_batches.set(self.hold.batches() as i64);
        m.journal_batches.set(self.journal.pending() as i64);
        m.arrivals_waiting.set(self.waiting.len() as i64);
        m.arrivals_waiting_bytes.set(self.waiting_bytes as i64);
        m.formatting_jobs.set(self.formatting.waiting() as i64);
        if let Some(sharing) = &self.sharing {
            for (name, value) in sharing.counters() {
                m.sharing
                    .get_or_create(&vec![("counter", name.to_owned())])
                    .set(value as i64);
            }
        }
    }
}
