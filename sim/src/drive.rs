//! The simulation loop, one simulated second per step, shared by the
//! in-process run and the run against live collectors: the fleet moves,
//! finished flows wait in their agent's outbox, each agent ships a batch on
//! its own phase of the batch interval, and legacy events are delivered when
//! they arrive.

use std::{cmp::Reverse, collections::BinaryHeap};

use flowattr_model::{AttributedFlow, FlowBatch, IpEvent};

use crate::{
    Scenario,
    fleet::{Agent, Fleet, Record},
};

pub(crate) const SECOND_NS: u64 = 1_000_000_000;

/// Told how far a run has got: (simulated so far, simulated in all).
pub type Progress = std::sync::Arc<dyn Fn(std::time::Duration, std::time::Duration) + Send + Sync>;

/// Where the simulated agents' batches and the legacy stream go.
pub(crate) trait Collectors {
    /// Simulated time is now `t_ns`.
    fn advance_to(&mut self, t_ns: u64) -> anyhow::Result<()>;
    /// Legacy events that have just arrived.
    fn legacy_events(&mut self, events: Vec<IpEvent>) -> anyhow::Result<()>;
    /// A record is about to be shipped (ground truth can note it).
    fn shipping(&mut self, record: &Record);
    /// An agent's batch.
    fn ship(&mut self, agent: &Agent, batch: FlowBatch) -> anyhow::Result<()>;
    /// Everything of this second has been handed over.
    fn step_done(&mut self, t_ns: u64) -> anyhow::Result<()>;
}

/// What the loop did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Driven {
    pub batches: u64,
    /// Records still in flight or in an outbox at the end (0 after a drain).
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
    let agents = fleet.agents().to_vec();
    let mut outboxes: Vec<Vec<AttributedFlow>> = vec![Vec::new(); agents.len()];
    let mut seqs = vec![0u64; agents.len()];
    let mut in_flight = Schedule::default();
    let mut pending = Schedule::default();
    let mut driven = Driven::default();

    let interval = scenario.agents.batch_interval.as_secs().max(1);
    let end_ns = start_ns + scenario.duration.as_nanos() as u64;
    let mut new_records = Vec::new();
    let mut t = start_ns;
    while t <= drain_ns {
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
            collectors.shipping(&record);
            outboxes[record.agent].push(record.flow);
        }
        let second = (t - start_ns) / SECOND_NS;
        for (a, agent) in agents.iter().enumerate() {
            if second % interval == a as u64 % interval && !outboxes[a].is_empty() {
                let batch = FlowBatch {
                    agent: agent.name.clone(),
                    incarnation: start_ns,
                    seq: seqs[a],
                    created_ns: t,
                    flows: std::mem::take(&mut outboxes[a]),
                };
                seqs[a] += 1;
                driven.batches += 1;
                collectors.ship(agent, batch)?;
            }
        }
        collectors.step_done(t)?;
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
    driven.unshipped = outboxes.iter().map(Vec::len).sum::<usize>() + in_flight.0.len();
    Ok(driven)
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
        let mut out = Vec::new();
        while self.0.peek().is_some_and(|Reverse(d)| d.at <= t) {
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
