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

use std::{
    collections::{HashSet, VecDeque},
    sync::{Arc, mpsc},
    time::Duration,
};

use flowattr_model::{
    AttributedFlow, BatchId, FlowBatch, IpEvent, Side, TimeRange, UnattributedReason,
};
use flowattr_plugin_runtime::{Plugin, PluginDirectory, manifest::Mode, policy};

use crate::{
    dedupe::RecentBatches,
    hold::{HoldQueue, Released},
    journal::{Journal, Recovered},
    metrics::CollectorMetrics,
    output::Outputs,
    ownership::{OwnershipTable, RangeUpdate},
    remote::{Regions, attribute_remote},
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
    /// The batch in wire encoding, for the journal.
    pub encoded: Vec<u8>,
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
    /// Hands a batch over for delivery (spooled); `Err` when it cannot be
    /// taken now, and the flows are written out here instead.
    fn forward(&mut self, batch: FlowBatch) -> Result<(), String>;
}

/// Ownership sharing with other collectors (Kafka). Neither call may wait
/// on the broker: attribution goes on from the table while it is down.
pub trait Sharing: Send {
    /// Sends the ranges this collector's heartbeats changed.
    fn publish(&mut self, updates: &[RangeUpdate]);
    /// Ranges other collectors learned since the last call.
    fn poll(&mut self) -> Vec<RangeUpdate>;
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
    pub hold: Duration,
    pub max_held_flows: usize,
    pub remember_batches: usize,
    /// The sink plugin's name.
    pub sink: String,
    pub sink_batch: usize,
    /// Certificate names allowed to forward flows here.
    pub forward_peers: HashSet<String>,
}

/// The core and everything it owns.
pub struct Core {
    settings: CoreSettings,
    pub table: OwnershipTable,
    hold: HoldQueue,
    recent: RecentBatches,
    journal: Journal,
    outputs: Outputs,
    regions: Regions,
    forwarders: Vec<Box<dyn Forwarder>>,
    sharing: Option<Box<dyn Sharing>>,
    plugins: Arc<PluginDirectory>,
    metrics: Arc<CollectorMetrics>,
    clock: Box<dyn Fn() -> u64 + Send>,
    /// Arrivals waiting for room.
    waiting: VecDeque<Arrival>,
    /// Attributed flows whose sink call failed, with their batches: formatted
    /// again before anything else is released.
    unformatted: VecDeque<Unformatted>,
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
}

/// How often the core releases, writes and publishes when idle.
pub const TICK: Duration = Duration::from_millis(100);

impl Core {
    pub fn new(settings: CoreSettings, parts: CoreParts) -> Self {
        let hold_ns = settings.hold.as_nanos().min(u64::MAX as u128) as u64;
        Self {
            hold: HoldQueue::new(hold_ns, settings.max_held_flows),
            recent: RecentBatches::new(settings.remember_batches),
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
            waiting: VecDeque::new(),
            unformatted: VecDeque::new(),
            journaled: 0,
            forward_seq: 0,
            last_expire_ns: 0,
        }
    }

    /// Takes back what an earlier run journaled: written-out ids are
    /// remembered as duplicates, pending batches are held again (their
    /// heartbeats replayed). `decode` turns journaled bytes into a batch and
    /// the sender's name.
    pub fn recover(
        &mut self,
        recovered: Recovered,
        decode: impl Fn(&[u8]) -> Result<(String, FlowBatch), String>,
    ) {
        for id in recovered.emitted {
            self.recent.insert(id);
        }
        for path in &recovered.unreadable {
            tracing::error!(path = %path.display(), "journal entry unreadable; left in place");
            self.metrics.count_drop("journal_unreadable", 1);
        }
        let now = (self.clock)();
        for (id, bytes) in recovered.pending {
            match decode(&bytes) {
                Ok((peer, batch)) if batch.id() == id => {
                    self.recent.insert(id);
                    self.journaled += 1;
                    self.take(&peer, batch, now);
                }
                Ok(_) | Err(_) => {
                    tracing::error!(%id, "journal entry does not decode; left in place");
                    self.metrics.count_drop("journal_unreadable", 1);
                }
            }
        }
        self.update_gauges();
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
                for resolver in self.resolvers() {
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

    fn arrive(&mut self, arrival: Arrival) {
        let Arrival {
            peer,
            batch,
            encoded,
            reply,
        } = arrival;
        let id = batch.id();
        let agent_labels = vec![("agent", peer.clone())];
        let count = |outcome: &str| {
            let mut labels = agent_labels.clone();
            labels.push(("outcome", outcome.to_owned()));
            self.metrics.batches.get_or_create(&labels).inc();
        };
        if batch.agent != peer {
            count("rejected");
            reply(Decision::Rejected(format!(
                "batch names agent {:?} but the certificate is {peer:?}",
                batch.agent
            )));
            return;
        }
        if self.recent.contains(&id) {
            count("duplicate");
            reply(Decision::Duplicate);
            return;
        }
        if let Err(e) = self.journal.append(&id, &encoded) {
            // Not acknowledged: the agent keeps it and sends it again.
            tracing::error!(%id, error = %e, "journal write failed; batch not acknowledged");
            count("journal_failed");
            return;
        }
        count("accepted");
        self.journaled += 1;
        self.metrics
            .flows_in
            .get_or_create(&agent_labels)
            .inc_by(batch.flows.len() as u64);
        self.recent.insert(id);
        let now = (self.clock)();
        self.take(&peer, batch, now);
        reply(Decision::Accepted);
    }

    /// Heartbeats and hold for a batch the collector is responsible for.
    fn take(&mut self, peer: &str, batch: FlowBatch, now: u64) {
        let forwarded = self.settings.forward_peers.contains(peer);
        if !forwarded {
            let beats = batch.flows.iter().filter_map(|f| match &f.local {
                Side::Attributed(a) => Some((
                    f.flow.local.ip(),
                    &a.workload,
                    TimeRange::new(f.flow.start_ns, f.flow.end_ns.max(f.flow.start_ns + 1)),
                )),
                _ => None,
            });
            let counts = self.table.heartbeats(peer, beats, now);
            self.metrics.count_ownership(&counts);
        }
        self.hold.push(batch, forwarded, now);
    }

    /// Releases, attributes and writes out what is due; publishes changes;
    /// expires old ranges; updates gauges.
    pub fn tick(&mut self) {
        let now = (self.clock)();
        self.retry_unformatted();
        if self.unformatted.is_empty() && !self.outputs.is_full() {
            let released = self.hold.release(now);
            if !released.is_empty() {
                self.write_out(released, now);
            }
        }
        self.finish_written();
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

    /// The core's clock, now.
    pub fn now_ns(&self) -> u64 {
        (self.clock)()
    }

    fn write_out(&mut self, released: Vec<Released>, now: u64) {
        let resolvers = self.resolvers();
        let mut kept = Vec::new();
        let mut ids = Vec::new();
        for Released {
            mut batch,
            forwarded,
        } in released
        {
            ids.push(batch.id());
            let pass = attribute_remote(
                &mut batch.flows,
                !forwarded,
                &self.table,
                &self.regions,
                &resolvers,
                now,
            );
            self.metrics
                .count_remote(&pass.counts, |r| self.regions.name(r).to_owned());
            let mut flows = batch.flows;
            if !pass.forward.is_empty() {
                let mut by_region: Vec<Vec<AttributedFlow>> = vec![Vec::new(); self.regions.len()];
                let forward: HashSet<usize> = pass.forward.iter().map(|&(i, _)| i).collect();
                let mut rest = Vec::with_capacity(flows.len());
                for (i, flow) in flows.into_iter().enumerate() {
                    if forward.contains(&i) {
                        let region = pass
                            .forward
                            .iter()
                            .find(|&&(j, _)| j == i)
                            .expect("listed")
                            .1;
                        by_region[region].push(flow);
                    } else {
                        rest.push(flow);
                    }
                }
                for (region, flows) in by_region.into_iter().enumerate() {
                    if !flows.is_empty() {
                        rest.extend(self.forward(region, flows, now));
                    }
                }
                flows = rest;
            }
            kept.extend(flows);
        }
        let policies = self
            .plugins
            .chain(flowattr_plugin_runtime::manifest::PluginKind::Policy);
        let policies: Vec<_> = policies
            .into_iter()
            .filter(|p| p.manifest().mode == Mode::Active)
            .collect();
        let metrics = &self.metrics;
        let kept = policy::apply(kept, &policies, |plugin, why, n| {
            let reason = match why {
                policy::PolicyDrop::Dropped => format!("policy:{plugin}"),
                policy::PolicyDrop::Failed => format!("policy_failed:{plugin}"),
            };
            metrics.count_drop(&reason, n);
        });
        if let Err(back) = self.format(kept, ids) {
            self.metrics.sink_failures.inc();
            self.unformatted.push_back(back);
        }
    }

    /// Sends `flows` to `region`'s collectors; gives back what could not be
    /// handed over, with its remote side unattributed.
    fn forward(
        &mut self,
        region: usize,
        flows: Vec<AttributedFlow>,
        now: u64,
    ) -> Vec<AttributedFlow> {
        let batch = FlowBatch {
            agent: self.settings.name.clone(),
            incarnation: self.settings.incarnation,
            seq: self.forward_seq,
            created_ns: now,
            flows,
        };
        self.forward_seq += 1;
        let n = batch.flows.len() as u64;
        match self.forwarders[region].forward(batch.clone()) {
            Ok(()) => Vec::new(),
            Err(error) => {
                tracing::warn!(region = self.regions.name(region), %error, "forwarding failed; written out here unattributed");
                self.metrics
                    .remote
                    .get_or_create(&vec![
                        ("outcome", "forward_failed".into()),
                        ("region", self.regions.name(region).to_owned()),
                    ])
                    .inc_by(n);
                let mut flows = batch.flows;
                for f in &mut flows {
                    f.remote = Side::Unattributed(UnattributedReason::SourceUnavailable);
                }
                flows
            }
        }
    }

    /// Formats `flows` with the sink plugin into chunks for the outputs;
    /// gives them back when the sink is missing or fails.
    fn format(&mut self, flows: Vec<AttributedFlow>, ids: Vec<BatchId>) -> Result<(), Unformatted> {
        if flows.is_empty() {
            self.outputs.push_empty(ids);
            return Ok(());
        }
        let Some(sink) = self.plugins.get(&self.settings.sink) else {
            tracing::error!(sink = %self.settings.sink, "sink plugin not loaded; holding flows");
            return Err((flows, ids));
        };
        let mut chunks = Vec::new();
        for part in flows.chunks(self.settings.sink_batch.max(1)) {
            match sink.format(part) {
                Ok(bytes) => chunks.push((bytes, part.len())),
                Err(error) => {
                    tracing::error!(sink = %self.settings.sink, %error, "sink plugin failed; retrying next tick");
                    return Err((flows, ids));
                }
            }
        }
        let last = chunks.len() - 1;
        let mut ids = Some(ids);
        for (i, (bytes, n)) in chunks.into_iter().enumerate() {
            self.metrics.flows_out.inc_by(n as u64);
            // A batch is written out with the last chunk of its pass.
            let batches = if i == last {
                ids.take().unwrap_or_default()
            } else {
                Vec::new()
            };
            self.outputs.push(bytes, batches);
        }
        Ok(())
    }

    fn retry_unformatted(&mut self) {
        while let Some((flows, ids)) = self.unformatted.pop_front() {
            if let Err(back) = self.format(flows, ids) {
                self.unformatted.push_front(back);
                break;
            }
        }
    }

    fn finish_written(&mut self) {
        let done = self.outputs.pump();
        self.journaled -= done.len().min(self.journaled);
        if !done.is_empty()
            && let Err(e) = self.journal.written_out(&done)
        {
            tracing::error!(error = %e, "recording written-out batches failed");
        }
        self.metrics.set_outputs(&self.outputs.status());
    }

    fn resolvers(&self) -> Vec<Arc<Plugin>> {
        self.plugins
            .chain(flowattr_plugin_runtime::manifest::PluginKind::Resolver)
            .into_iter()
            .filter(|p| p.manifest().mode == Mode::Active)
            .collect()
    }

    fn update_gauges(&self) {
        let m = &self.metrics;
        m.table_ranges.set(self.table.len_ranges() as i64);
        m.table_addresses.set(self.table.len_ips() as i64);
        m.table_memory_bytes.set(self.table.memory_bytes() as i64);
        m.hold_flows.set(self.hold.flows() as i64);
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
