//! `sonar-legacy`: a resolver plugin that attributes remote addresses the way
//! the legacy event-driven attributor (Netflix's "Sonar") did.
//!
//! It ingests "address assigned to / released from workload" events, each with
//! the time it happened and the time it arrived, and answers an address by
//! the latest event that had arrived by the cutoff
//! `max(asked_at_ns, time_ns + hold)`. That reproduces the legacy method's
//! mistakes on purpose: an event that arrives late leaves the address with its
//! old owner. It is the "B" side of the A/B comparison against heartbeat
//! attribution, and the fallback for addresses that run no agent (load
//! balancers), where reassignment is rare enough to be safe.
//!
//! An `assigned` event decides for its workload, valid from the event's time
//! (or the query's, if earlier) through the cutoff; a `released` event, or no
//! event, is `not-found`. See the crate's README for config and semantics.

pub mod config;
mod events;
mod intern;

use flowattr_sdk::{
    Answers, AnswersBuilder, IpChange, IpEvent, Plugin, ResolveQuery, ResolverPlugin, TimeRange,
    UnattributedReason,
};

use crate::config::{Config, Settings};
use crate::events::EventLog;

/// How often (in host time) expired events are swept from memory. Answers do
/// not depend on it: expired events are ignored as soon as they expire.
const SWEEP_INTERVAL_NS: u64 = 60 * 1_000_000_000;

/// What the plugin holds and has pruned, for tests, benchmarks and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Events kept now.
    pub events: usize,
    /// Addresses with at least one event.
    pub addresses: usize,
    /// Distinct workloads the kept events refer to.
    pub workloads: usize,
    /// Events pruned for age so far.
    pub pruned_expired: u64,
    /// Events pruned to stay within `max_events` so far.
    pub pruned_over_cap: u64,
}

/// The `sonar-legacy` resolver plugin.
#[derive(Debug)]
pub struct SonarLegacy {
    settings: Settings,
    log: EventLog,
    next_sweep_ns: u64,
    pruned_expired: u64,
    pruned_over_cap: u64,
}

impl SonarLegacy {
    /// What the plugin holds and has pruned.
    pub fn stats(&self) -> Stats {
        Stats {
            events: self.log.len(),
            addresses: self.log.addresses(),
            workloads: self.log.workloads(),
            pruned_expired: self.pruned_expired,
            pruned_over_cap: self.pruned_over_cap,
        }
    }

    /// The arrival time before which events (other than an address's newest)
    /// are expired, at host time `now_ns`.
    fn horizon_ns(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.settings.retention_ns)
    }

    fn prune(&mut self, now_ns: u64) {
        let over_cap = self.log.len() > self.settings.max_events;
        if over_cap || now_ns >= self.next_sweep_ns {
            let n = self.log.prune_expired(self.horizon_ns(now_ns));
            self.pruned_expired += n as u64;
            self.next_sweep_ns = now_ns.saturating_add(SWEEP_INTERVAL_NS);
        }
        if over_cap {
            let n = self.log.prune_to(self.settings.max_events);
            self.pruned_over_cap += n as u64;
            if n > 0 {
                log::warn!(
                    "More than max_events ({}) events: pruned the {n} oldest ({} pruned so far). \
                     Raise max_events or lower retention_secs.",
                    self.settings.max_events,
                    self.pruned_over_cap
                );
            }
        }
    }
}

/// Why an event cannot be ingested, if it cannot.
fn invalid(event: &IpEvent) -> Option<&'static str> {
    match &event.change {
        IpChange::Assigned(w) if w.id.trim().is_empty() => {
            Some("the assigned workload's id is empty")
        }
        _ if event.arrival_time_ns == 0 => Some("arrival_time_ns is 0 (arrival time unknown)"),
        _ => None,
    }
}

impl Plugin for SonarLegacy {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        Ok(Self {
            settings: Settings::try_from(config)?,
            log: EventLog::default(),
            next_sweep_ns: 0,
            pruned_expired: 0,
            pruned_over_cap: 0,
        })
    }
}

impl ResolverPlugin for SonarLegacy {
    /// Checks the whole batch before applying any of it: one bad event
    /// rejects the batch and changes nothing.
    fn ingest(&mut self, events: Vec<IpEvent>) -> Result<(), String> {
        if let Some((i, why)) = events
            .iter()
            .enumerate()
            .find_map(|(i, e)| Some((i, invalid(e)?)))
        {
            return Err(format!("event {i}: {why}"));
        }
        for e in events {
            self.log.insert(
                e.address.to_canonical(),
                e.change,
                e.event_time_ns,
                e.arrival_time_ns,
            );
        }
        self.prune(flowattr_sdk::host::now_ns());
        Ok(())
    }

    fn resolve(&mut self, queries: &[ResolveQuery]) -> Answers {
        let mut out = AnswersBuilder::with_capacity(queries.len());
        if queries.is_empty() {
            return out.finish();
        }
        let horizon = self.horizon_ns(flowattr_sdk::host::now_ns());
        for q in queries {
            let cutoff = q
                .asked_at_ns
                .max(q.time_ns.saturating_add(self.settings.hold_ns));
            match self.log.decide(q.address.to_canonical(), cutoff, horizon) {
                Some((workload, event_ns)) => {
                    // Valid from the event, widened to the query's own time
                    // when the event claims a later start (the legacy method
                    // attributes such a flow all the same).
                    let start = event_ns.min(q.time_ns);
                    out.attributed(workload, TimeRange::new(start, cutoff.saturating_add(1)));
                }
                None => out.unattributed(UnattributedReason::NotFound),
            }
        }
        out.finish()
    }
}

flowattr_sdk::export_plugin!(SonarLegacy as resolver);
