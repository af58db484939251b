//! The simulation loop, one simulated second per step, shared by the
//! in-process run and the run against live collectors: the fleet moves,
//! flows that ended are captured by their hosts' agents ([`crate::agents`]),
//! agents close and send batches, batches are read by the collectors when
//! their network delay has passed, and legacy events are delivered when
//! they arrive.

use std::{cmp::Reverse, collections::BinaryHeap};

use flowattr_collector::clocks::ClockSample;
use flowattr_model::{AttributedFlow, FlowBatch, IpEvent};

use crate::{
    Scenario,
    agents::{AgentStats, Agents, Shipment, Truth},
    fleet::{Fleet, Host},
};

pub(crate) const SECOND_NS: u64 = 1_000_000_000;

/// Told how far a run has got: (simulated so far, simulated in all).
pub type Progress = std::sync::Arc<dyn Fn(std::time::Duration, std::time::Duration) + Send + Sync>;

/// Where the simulated agents' batches and the legacy stream go.
pub(crate) trait Collectors {
    /// Simulated time is now `t_ns` (it only moves forward, sometimes by
    /// less than a second: a batch is read when it arrives).
    fn advance_to(&mut self, t_ns: u64) -> anyhow::Result<()>;
    /// Legacy events that have just arrived.
    fn legacy_events(&mut self, events: Vec<IpEvent>) -> anyhow::Result<()>;
    /// A flow has been sent (ground truth can note it).
    fn shipping(&mut self, flow: &AttributedFlow, truth: &Truth);
    /// A host's agent's batch arrives, read at `sample.received_ns`.
    fn ship(&mut self, host: &Host, batch: FlowBatch, sample: ClockSample) -> anyhow::Result<()>;
    /// Everything of this second has been handed over.
    fn step_done(&mut self, t_ns: u64) -> anyhow::Result<()>;
}

/// What the loop did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Driven {
    pub agents: AgentStats,
    /// Records still in flight, in an outbox or on the way at the end (0
    /// after a drain).
    pub unshipped: usize,
}

/// Runs `fleet` from `start_ns` for the scenario's duration, then on until
/// `drain_ns` (flows finish, ship and are released by the collectors).
pub(crate) fn drive(
    scenario: &Scenario,
    fleet: &mut Fleet,
    start_ns: u64,
    drain_ns: u64,
    mut events: Vec<crate::fleet::LegacyEvent>,
    collectors: &mut dyn Collectors,
    progress: Option<&Progress>,
) -> anyhow::Result<Driven> {
    let hosts = fleet.hosts().to_vec();
    let mut agents = Agents::new(scenario, &hosts, start_ns);
    let mut in_flight = Schedule::default();
    let mut pending = Schedule::default();
    let mut on_the_way: Schedule<Shipment> = Schedule::default();
    let mut sent = Vec::new();

    let end_ns = start_ns + scenario.duration.as_nanos() as u64;
    let mut new_records = Vec::new();
    let mut t = start_ns;
    let deliver = |s: Shipment, collectors: &mut dyn Collectors| {
        collectors.ship(&hosts[s.host], s.batch, s.sample)
    };
    while t <= drain_ns {
        // Batches read between the last second and this one.
        for s in on_the_way.due_before(t) {
            collectors.advance_to(s.sample.received_ns)?;
            deliver(s, collectors)?;
        }
        collectors.advance_to(t)?;
        if t < end_ns {
            fleet.advance(t + SECOND_NS, &mut new_records, &mut events)?;
            for record in new_records.drain(..) {
                in_flight.push(record.end_ns, record);
            }
        }
        for event in events.drain(..) {
            pending.push(event.arrival_ns, event.event);
        }
        let arrived = pending.due(t);
        if !arrived.is_empty() {
            collectors.legacy_events(arrived)?;
        }
        for record in in_flight.due(t) {
            agents.capture(record, t, fleet);
        }
        agents.step(t, &mut sent);
        for s in sent.drain(..) {
            for (flow, truth) in s.batch.flows.iter().zip(&s.truths) {
                collectors.shipping(flow, truth);
            }
            on_the_way.push(s.sample.received_ns, s);
        }
        for s in on_the_way.due(t) {
            deliver(s, collectors)?;
        }
        collectors.step_done(t)?;
        let second = (t - start_ns) / SECOND_NS;
        if let Some(report) = progress
            && second.is_multiple_of(60)
        {
            report(
                std::time::Duration::from_secs(second),
                std::time::Duration::from_nanos(drain_ns - start_ns),
            );
        }
        t += SECOND_NS;
    }
    let on_the_way: usize = on_the_way
        .0
        .iter()
        .map(|Reverse(d)| d.item.truths.len())
        .sum();
    Ok(Driven {
        unshipped: agents.unshipped() + in_flight.0.len() + on_the_way,
        agents: agents.stats,
    })
}

/// Items waiting for their time; equal times keep their order of arrival.
struct Schedule<T>(BinaryHeap<Reverse<Due<T>>>, u64);

impl<T> Default for Schedule<T> {
    fn default() -> Self {
        Self(BinaryHeap::new(), 0)
    }
}

impl<T> Schedule<T> {
    fn push(&mut self, at: u64, item: T) {
        self.1 += 1;
        self.0.push(Reverse(Due {
            at,
            seq: self.1,
            item,
        }));
    }

    /// Everything due by `t`, in time order.
    fn due(&mut self, t: u64) -> Vec<T> {
        self.due_before(t.saturating_add(1))
    }

    /// Everything due before `t`, in time order.
    fn due_before(&mut self, t: u64) -> Vec<T> {
        let mut out = Vec::new();
        while self.0.peek().is_some_and(|Reverse(d)| d.at < t) {
            out.push(self.0.pop().expect("peeked").0.item);
        }
        out
    }
}

/// An item due at `at`, ordered by `(at, seq)` alone.
struct Due<T> {
    at: u64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Due<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<T> Eq for Due<T> {}

impl<T> PartialOrd for Due<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Due<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}
