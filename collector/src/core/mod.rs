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
//!    again, not taken again. A batch whose `agent` is not the sender's
//!    certificate name is refused. While the hold queue or the outputs are
//!    full, arrivals wait unanswered (the agents' spools hold them).
//! 2. **Journal, heartbeats, hold, acknowledgement.** The batch is written
//!    to the journal; each flow whose local side the agent attributed
//!    becomes a heartbeat claimed by the sender (forwarded batches claim
//!    nothing); the batch joins the hold queue, and only then is it
//!    acknowledged.
//! 3. **Release.** After the hold, remote sides are attributed
//!    ([`crate::remote`]); flows for other regions are forwarded; the rest go
//!    through the policy chain and the sink plugin to every output.
//! 4. **Written out.** When every output has taken a batch's flows, its
//!    journal entry is replaced by a line in the written-out log.

mod arrival;
mod release;

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, mpsc},
    time::Duration,
};

use flowattr_model::{AttributedFlow, BatchId, FlowBatch, IpEvent};
use flowattr_plugin_runtime::PluginDirectory;

use crate::{
    clocks::{ClockOffsets, ClockSample},
    completeness::{Completeness, SharedMark},
    counterpart::Counterparts,
    dedupe::RecentBatches,
    hold::HoldQueue,
    journal::Journal,
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
    /// Called once with the decision. Dropped uncalled when the collector
    /// stops before deciding: the sender will send it again.
    pub reply: Box<dyn FnOnce(Decision) + Send>,
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

/// Attributed flows not yet formatted, with the batches they came from.
type Unformatted = (Vec<AttributedFlow>, Vec<BatchId>);

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
    /// Certificate names allowed to forward flows here.
    pub forward_peers: HashSet<String>,
    /// The A/B's shadow resolver is asked this long after a flow's start (the
    /// legacy method's own hold), or at release if that is later.
    pub shadow_hold: Duration,
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
    /// Arrivals waiting for room.
    waiting: VecDeque<Arrival>,
    /// Attributed flows whose sink call failed, with their batches: formatted
    /// again before anything else is released.
    unformatted: VecDeque<Unformatted>,
    /// The emptied vector of the last formatted release, for the next one.
    spare_flows: Vec<AttributedFlow>,
    /// Batches journaled and not yet written out.
    journaled: usize,
    forward_seq: u64,
    last_expire_ns: u64,
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
            unformatted: VecDeque::new(),
            spare_flows: Vec::new(),
            journaled: 0,
            forward_seq: 0,
            last_expire_ns: 0,
        }
    }

    /// Runs until every sender of `inputs` is gone. What it still holds
    /// stays journaled for the next start (attributed then, after its hold,
    /// rather than early now).
    pub fn run(mut self, inputs: mpsc::Receiver<Input>) {
        loop {
            match inputs.recv_timeout(TICK) {
                Ok(input) => {
                    self.handle(input);
                    // Take what else is waiting before the next tick.
                    while let Ok(input) = inputs.try_recv() {
                        self.handle(input);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            self.tick();
        }
    }

    /// Handles one input.
    pub fn handle(&mut self, input: Input) {
        match input {
            Input::Arrival(arrival) => {
                if self.is_full() {
                    self.metrics.backpressure.inc();
                    self.waiting.push_back(arrival);
                } else {
                    self.arrive(arrival);
                }
            }
            Input::IpEvents(events) => {
                // Shadow resolvers learn the events too: the A/B compares them.
                let all = self
                    .plugins
                    .chain(flowattr_plugin_runtime::manifest::PluginKind::Resolver);
                for resolver in all {
                    if let Err(error) = resolver.ingest(&events) {
                        tracing::warn!(plugin = resolver.name(), %error, "resolver refused events");
                        self.metrics
                            .count_drop("resolver_ingest_failed", events.len() as u64);
                    }
                }
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
        self.retry_unformatted();
        if self.unformatted.is_empty() && !self.outputs.is_full() {
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
        while !self.is_full()
            && let Some(arrival) = self.waiting.pop_front()
        {
            self.arrive(arrival);
        }
        self.share(now);
        if now.saturating_sub(self.last_expire_ns) >= 1_000_000_000 {
            let before = *self.table.counters();
            self.table.expire(now);
            self.metrics
                .count_ownership(&self.table.counters().since(&before));
            self.last_expire_ns = now;
            self.update_agent_gauges(now);
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
        m.journal_batches.set(self.journaled as i64);
        if let Some(sharing) = &self.sharing {
            for (name, value) in sharing.counters() {
                m.sharing
                    .get_or_create(&vec![("counter", name.to_owned())])
                    .set(value as i64);
            }
        }
    }
}
