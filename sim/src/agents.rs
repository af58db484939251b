//! The agents: what each host's agent captures, how it batches and ships,
//! and how it fails — crashes that cut a batch short, silences, batches
//! lost or sent twice — and the network between it and its collector.
//!
//! An agent captures a flow when the flow ends (true time), attributing its
//! local side then ([`Fleet::attribute_local`]). Every batch interval, on
//! its own phase, it closes a batch — empty or not — stamped on its clock
//! with its completeness watermark: the close time itself, since every
//! flow that ended by then was captured before the batch closed. Like the
//! real shipper, a batch sent while an older one is unanswered states no
//! watermark past the one before that older batch (batches overtake each
//! other on a backlog). Closed
//! batches go to a spool (on disk: it survives a crash) and are sent unless
//! the agent is silent or down. Each send draws a one-way delay (uniform
//! within the connection's RTT, or a backlog's longer one) and carries a
//! [`ClockSample`] (sent on the agent's clock, read on the collector's).
//!
//! Pure and deterministic: its own seeded generator, simulated time.

use std::{collections::BTreeMap, collections::VecDeque, sync::Arc};

use flowattr_collector::clocks::ClockSample;
use flowattr_model::{AttributedFlow, FlowBatch, Side, Workload};
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;

use crate::{
    drive::SECOND_NS,
    fleet::{Fleet, Host, Record},
    scenario::Scenario,
};

/// Seeds the agents' generator apart from the fleet's.
const AGENTS_STREAM: u64 = 0x6167_656e_7473_5f31;
/// A duplicate copy goes out this long after the original (as after an
/// acknowledgement that was lost).
const RESEND_SECS: std::ops::RangeInclusive<u64> = 1..=30;

/// Who really owns both ends of a shipped flow.
#[derive(Debug, Clone)]
pub(crate) struct Truth {
    pub remote: Arc<Workload>,
    pub local: Arc<Workload>,
}

/// A batch on its way to the collector.
pub(crate) struct Shipment {
    pub host: usize,
    pub batch: FlowBatch,
    /// Per flow, its truth; empty for a second copy (already expected).
    pub truths: Vec<Truth>,
    pub sample: ClockSample,
}

/// What the agents did, and what they never shipped by design.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStats {
    /// Flows on hosts without an agent.
    pub not_captured: u64,
    /// Flows an agent missed because it was down or restarted after they
    /// began.
    pub missed_while_down: u64,
    /// Flows captured but lost in a crash (the open batch).
    pub lost_in_crashes: u64,
    pub restarts: u64,
    pub silences: u64,
    /// Batches closed, and of them lost on the way or sent twice.
    pub batches: u64,
    pub batches_lost: u64,
    pub flows_in_lost_batches: u64,
    pub batches_duplicated: u64,
    /// Local sides the agents attributed, and left unattributed by reason.
    pub local_attributed: u64,
    pub local_unattributed: BTreeMap<String, u64>,
}

struct Agent {
    /// On the host's clock.
    incarnation: u64,
    /// True time from which this incarnation captures.
    since_ns: u64,
    seq: u64,
    outbox: Vec<(AttributedFlow, Truth)>,
    /// Closed batches not sent yet, with the watermark of the batch before.
    spool: VecDeque<(FlowBatch, Vec<Truth>, u64)>,
    /// Sent and not yet answered: (answered at, watermark of the batch
    /// before).
    unanswered: Vec<(u64, u64)>,
    /// The last watermark this run stated (its clock).
    last_watermark_ns: u64,
    down_until: Option<u64>,
    silent_until: u64,
    next_crash: u64,
    next_silence: u64,
    rtt_ns: u64,
}

/// Every host's agent (hosts without one have a state that is never used).
pub(crate) struct Agents {
    hosts: Vec<Host>,
    agents: Vec<Agent>,
    rng: Pcg64Mcg,
    scenario: Scenario,
    interval_secs: u64,
    start_ns: u64,
    /// Faults (crashes, silences) begin only before the scenario's end.
    end_ns: u64,
    pub stats: AgentStats,
}

/// An exponential draw with mean `3600 / per_hour` seconds, in ns; never
/// for a rate of 0.
fn next_event(rng: &mut Pcg64Mcg, from_ns: u64, per_hour: f64) -> u64 {
    if per_hour <= 0.0 {
        return u64::MAX;
    }
    let mean = 3600.0 * SECOND_NS as f64 / per_hour;
    from_ns.saturating_add((-mean * (1.0 - rng.random::<f64>()).ln()) as u64)
}

impl Agents {
    pub fn new(scenario: &Scenario, hosts: &[Host], start_ns: u64) -> Self {
        let mut rng = Pcg64Mcg::seed_from_u64(scenario.seed ^ AGENTS_STREAM);
        let a = &scenario.agents;
        let rtt = scenario.network.rtt.as_nanos() as u64;
        let agents = hosts
            .iter()
            .map(|h| Agent {
                incarnation: h.clock(start_ns),
                since_ns: start_ns,
                seq: 0,
                outbox: Vec::new(),
                spool: VecDeque::new(),
                unanswered: Vec::new(),
                last_watermark_ns: 0,
                down_until: None,
                silent_until: 0,
                next_crash: next_event(&mut rng, start_ns, a.restarts_per_hour),
                next_silence: next_event(&mut rng, start_ns, a.silences_per_hour),
                rtt_ns: if rtt == 0 {
                    0
                } else {
                    rng.random_range(rtt / 4..=rtt)
                },
            })
            .collect();
        Self {
            hosts: hosts.to_vec(),
            agents,
            rng,
            interval_secs: a.batch_interval.as_secs().max(1),
            scenario: scenario.clone(),
            start_ns,
            end_ns: start_ns + scenario.duration.as_nanos() as u64,
            stats: AgentStats::default(),
        }
    }

    /// The host's agent captures `record`'s flow, which ended by `t_ns`.
    pub fn capture(&mut self, mut record: Record, t_ns: u64, fleet: &Fleet) {
        if !self.hosts[record.host].agent {
            self.stats.not_captured += 1;
            return;
        }
        let agent = &mut self.agents[record.host];
        if agent.down_until.is_some() || record.start_ns < agent.since_ns {
            self.stats.missed_while_down += 1;
            return;
        }
        fleet.attribute_local(&mut record, t_ns);
        match &record.flow.local {
            Side::Unattributed(reason) => {
                *self
                    .stats
                    .local_unattributed
                    .entry(reason.as_str().to_owned())
                    .or_default() += 1;
            }
            _ => self.stats.local_attributed += 1,
        }
        let truth = Truth {
            remote: record.owner,
            local: record.local_owner,
        };
        agent.outbox.push((record.flow, truth));
    }

    /// Second `t_ns`: agents crash, come back, fall silent, close batches
    /// and send what they may; what is sent goes to `out`.
    pub fn step(&mut self, t_ns: u64, out: &mut Vec<Shipment>) {
        let second = (t_ns - self.start_ns) / SECOND_NS;
        let spec = self.scenario.agents.clone();
        for h in 0..self.hosts.len() {
            if !self.hosts[h].agent {
                continue;
            }
            let host = &self.hosts[h];
            let agent = &mut self.agents[h];
            if t_ns >= agent.next_crash && t_ns < self.end_ns {
                self.stats.restarts += 1;
                self.stats.lost_in_crashes += agent.outbox.len() as u64;
                agent.outbox.clear();
                let back = t_ns + spec.restart_downtime.as_nanos() as u64;
                agent.down_until = Some(back);
                agent.next_crash = next_event(&mut self.rng, back, spec.restarts_per_hour);
            }
            if let Some(back) = agent.down_until
                && t_ns >= back
            {
                agent.down_until = None;
                agent.incarnation = host.clock(t_ns);
                agent.since_ns = t_ns;
                agent.seq = 0;
                // Found in the spool at start: what came before is unknown.
                agent.last_watermark_ns = 0;
                for (_, _, after) in &mut agent.spool {
                    *after = 0;
                }
                for (_, after) in &mut agent.unanswered {
                    *after = 0;
                }
            }
            if t_ns >= agent.next_silence && t_ns < self.end_ns {
                self.stats.silences += 1;
                let max = spec.silence_max.as_nanos().max(1) as u64;
                agent.silent_until = t_ns + self.rng.random_range(1..=max);
                agent.next_silence =
                    next_event(&mut self.rng, agent.silent_until, spec.silences_per_hour);
            }
            if agent.down_until.is_some() {
                continue;
            }
            if second % self.interval_secs == h as u64 % self.interval_secs {
                let (flows, truths) = std::mem::take(&mut agent.outbox).into_iter().unzip();
                let now = host.clock(t_ns);
                let batch = FlowBatch {
                    agent: host.name.clone(),
                    incarnation: agent.incarnation,
                    seq: agent.seq,
                    created_ns: now,
                    complete_until_ns: now,
                    flows,
                };
                agent.seq += 1;
                self.stats.batches += 1;
                let after = std::mem::replace(&mut agent.last_watermark_ns, now);
                agent.spool.push_back((batch, truths, after));
            }
            if t_ns >= agent.silent_until {
                while let Some((batch, truths, after)) = self.agents[h].spool.pop_front() {
                    self.send(h, batch, truths, after, t_ns, out);
                }
            }
        }
    }

    fn send(
        &mut self,
        h: usize,
        mut batch: FlowBatch,
        truths: Vec<Truth>,
        after: u64,
        t_ns: u64,
        out: &mut Vec<Shipment>,
    ) {
        let spec = &self.scenario.agents;
        if spec.lost > 0.0 && self.rng.random_bool(spec.lost) {
            self.stats.batches_lost += 1;
            self.stats.flows_in_lost_batches += batch.flows.len() as u64;
            return;
        }
        let agent = &mut self.agents[h];
        agent.unanswered.retain(|&(answered, _)| answered > t_ns);
        if let Some(floor) = agent.unanswered.iter().map(|&(_, a)| a).min() {
            batch.complete_until_ns = batch.complete_until_ns.min(floor);
        }
        let mut answered = 0;
        if spec.duplicated > 0.0 && self.rng.random_bool(spec.duplicated) {
            self.stats.batches_duplicated += 1;
            let again = t_ns + self.rng.random_range(RESEND_SECS) * SECOND_NS;
            let copy = self.shipment(h, batch.clone(), Vec::new(), again);
            answered = copy.sample.received_ns;
            out.push(copy);
        }
        let original = self.shipment(h, batch, truths, t_ns);
        let rtt = self.agents[h].rtt_ns;
        answered = answered.max(original.sample.received_ns) + rtt;
        self.agents[h].unanswered.push((answered, after));
        out.push(original);
    }

    fn shipment(&mut self, h: usize, batch: FlowBatch, truths: Vec<Truth>, sent: u64) -> Shipment {
        let rtt_ns = self.agents[h].rtt_ns;
        let net = &self.scenario.network;
        let delay = if net.backlog > 0.0 && self.rng.random_bool(net.backlog) {
            let max = (net.backlog_max.as_nanos() as u64).max(rtt_ns);
            self.rng.random_range(rtt_ns..=max)
        } else {
            self.rng.random_range(0..=rtt_ns)
        };
        Shipment {
            host: h,
            batch,
            truths,
            sample: ClockSample {
                sent_ns: self.hosts[h].clock(sent),
                received_ns: sent + delay,
                rtt_ns,
            },
        }
    }

    /// Records captured and not yet sent (0 once every silence is over and
    /// every batch closed).
    pub fn unshipped(&self) -> usize {
        self.agents
            .iter()
            .map(|a| a.outbox.len() + a.spool.iter().map(|(b, _, _)| b.flows.len()).sum::<usize>())
            .sum()
    }
}
