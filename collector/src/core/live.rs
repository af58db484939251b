//! The core's side of the live view ([`crate::live`]): answering queries
//! from its own state, and the map and rates it keeps for them.

use std::sync::mpsc;

use flowattr_plugin_runtime::manifest::Mode;

use super::Core;
use crate::live::{
    AgentRates, AgentRow, LiveSection, LiveStatus, QUERIES_PER_PASS, Queries, Query, ServiceMap,
    TableRow,
    owner::{OwnerSources, owner_report},
};

/// The live view's state on the core.
pub(super) struct Live {
    queries: mpsc::Receiver<Query>,
    pub map: ServiceMap,
    rates: AgentRates,
}

impl Core {
    /// Starts answering live queries (and mapping released flows) as
    /// `config` says; returns where to send them.
    pub fn serve_live(&mut self, config: &LiveSection) -> Queries {
        let (tx, rx) = mpsc::sync_channel(config.queue.max(1));
        let now = (self.clock)();
        self.live = Some(Live {
            queries: rx,
            map: ServiceMap::new(
                config.max_edges,
                config.window.as_nanos().min(u64::MAX as u128) as u64,
                now,
            ),
            rates: AgentRates::default(),
        });
        Queries(tx)
    }

    /// Answers up to [`QUERIES_PER_PASS`] waiting queries.
    pub(super) fn answer_queries(&mut self) {
        for _ in 0..QUERIES_PER_PASS {
            let Some(live) = &self.live else { return };
            let Ok(query) = live.queries.try_recv() else {
                return;
            };
            let now = (self.clock)();
            match query {
                Query::Owner {
                    address,
                    at_ns,
                    reply,
                } => {
                    if reply.is_closed() {
                        continue;
                    }
                    let resolvers = self.resolvers(Mode::Active);
                    let clocks = &self.clocks;
                    let heard_here =
                        |claimant: &str| clocks.estimates().any(|(n, ..)| n == claimant);
                    let report = owner_report(
                        &OwnerSources {
                            table: &self.table,
                            completeness: &self.completeness,
                            regions: &self.regions,
                            resolvers: &resolvers,
                            heard_here: &heard_here,
                        },
                        address,
                        at_ns.unwrap_or(now),
                        now,
                    );
                    let _ = reply.send(report);
                }
                Query::Status { reply } => {
                    if reply.is_closed() {
                        continue;
                    }
                    let status = self.live_status(now);
                    let _ = reply.send(status);
                }
            }
        }
    }

    fn live_status(&mut self, now: u64) -> LiveStatus {
        let map = match &mut self.live {
            Some(live) => live.map.snapshot(now),
            None => Default::default(),
        };
        let marks: rustc_hash::FxHashMap<&str, u64> = self
            .completeness
            .marks()
            .map(|(name, m)| (name, m.watermark_ns))
            .collect();
        let clocks: rustc_hash::FxHashMap<&str, (i64, bool)> = self
            .clocks
            .estimates()
            .map(|(name, offset, verdict)| (name, (offset, verdict.is_trusted())))
            .collect();
        let mut names: Vec<&str> = clocks.keys().copied().collect();
        if let Some(live) = &self.live {
            names.extend(live.rates.agents());
        }
        names.sort_unstable();
        names.dedup();
        let rates = self.live.as_ref().map(|l| &l.rates);
        let agents = names
            .into_iter()
            .map(|name| {
                let (rate, total) = rates.and_then(|r| r.get(name)).unwrap_or((0.0, 0));
                AgentRow {
                    name: name.to_owned(),
                    flows_per_second: rate,
                    flows_total: total,
                    clock_offset_ns: clocks.get(name).map(|c| c.0),
                    clock_trusted: clocks.get(name).map(|c| c.1),
                    watermark_lag_ns: marks.get(name).map(|&w| now.saturating_sub(w)),
                }
            })
            .collect();
        LiveStatus {
            collector: self.settings.name.clone(),
            now_ns: now,
            map,
            table: TableRow {
                ranges: self.table.len_ranges(),
                addresses: self.table.len_ips(),
                workloads: self.table.len_workloads(),
                // As of the last tick (computing it walks every address).
                memory_bytes: self.metrics.table_memory_bytes.get().max(0) as usize,
                max_ranges: self.table.config().max_ranges,
            },
            agents,
        }
    }

    /// Samples each agent's received flows for its rate (once a second).
    pub(super) fn sample_rates(&mut self, now: u64) {
        let Some(live) = &mut self.live else { return };
        for (agent, ..) in self.clocks.estimates() {
            let total = self
                .metrics
                .flows_in
                .get_or_create(&vec![("agent", agent.to_owned())])
                .get();
            live.rates.sample(agent, total, now);
        }
    }
}
