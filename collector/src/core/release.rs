//! Release: after the hold, remote attribution, forwarding to other
//! regions, the policy chain, the sink plugin and the outputs.

use std::sync::Arc;

use flowattr_model::{AttributedFlow, BatchId, Flow, FlowBatch, Side, UnattributedReason};
use flowattr_plugin_runtime::{Plugin, manifest::Mode, policy};

use super::{Core, formatting::Ready};
use crate::{
    hold::Released,
    remote::{Sources, attribute_remote},
};

impl Core {
    pub(super) fn write_out(&mut self, released: Vec<Released>, now: u64) {
        self.counterparts.expire(now);
        let resolvers = self.resolvers(Mode::Active);
        let mut kept = self.formatting.spare_flows();
        let mut ids = Vec::new();
        for Released {
            mut batch,
            forwarded,
        } in released
        {
            ids.push(batch.id());
            let counterparts = self.counterparts.release(&batch.flows, now);
            let completeness = &self.completeness;
            let complete = |flow: &Flow| completeness.flow_complete(flow);
            let sources = Sources {
                table: &self.table,
                regions: &self.regions,
                resolvers: &resolvers,
                complete: &complete,
            };
            let pass = attribute_remote(&mut batch.flows, &counterparts, !forwarded, &sources, now);
            self.metrics
                .count_remote(&pass.counts, |r| self.regions.name(r).to_owned());
            let mut flows = batch.flows;
            if !pass.forward.is_empty() {
                let mut by_region: Vec<Vec<AttributedFlow>> = vec![Vec::new(); self.regions.len()];
                let mut region_of: Vec<Option<usize>> = vec![None; flows.len()];
                for &(i, region) in &pass.forward {
                    region_of[i] = Some(region);
                }
                let mut rest = Vec::with_capacity(flows.len());
                for (flow, region) in flows.into_iter().zip(region_of) {
                    match region {
                        Some(region) => by_region[region].push(flow),
                        None => rest.push(flow),
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
        self.compare(&kept, now);
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
        if let Some(live) = &mut self.live {
            live.map.add(&kept, now);
        }
        self.format(kept, ids);
    }

    /// Sends `flows` to `region`'s collectors; gives back what could not be
    /// handed over, with its remote side unattributed.
    pub(super) fn forward(
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
            complete_until_ns: 0,
            flows,
        };
        self.forward_seq += 1;
        let n = batch.flows.len() as u64;
        match self.forwarders[region].forward(batch) {
            Ok(()) => Vec::new(),
            Err((error, batch)) => {
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

    /// Starts formatting a release's flows (see [`super::formatting`]) and
    /// hands the outputs what is ready.
    fn format(&mut self, flows: Vec<AttributedFlow>, ids: Vec<BatchId>) {
        let sink = self.plugins.get(&self.settings.sink);
        let limit = self.outputs.max_chunk_bytes();
        let outputs = &mut self.outputs;
        self.formatting
            .start(flows, ids, sink, limit, || outputs.buffer());
        self.hand_over();
    }

    /// Gives the outputs, in order, the chunks whose formatting finished.
    fn hand_over(&mut self) {
        let outputs = &mut self.outputs;
        self.formatting.ready(|ready| match ready {
            Ready::Chunk {
                bytes,
                flows,
                batches,
            } => outputs.push(bytes, flows, batches),
            Ready::Batches(batches) => outputs.push_empty(batches),
        });
    }

    /// Waits until every release so far is formatted, then writes it out
    /// (the simulator, tests and benchmarks, for what a tick started).
    pub fn finish_formatting(&mut self) {
        self.formatting.wait();
        self.finish_written();
    }

    /// Writes and commits the outputs, and retires the batches every output
    /// now has for good.
    pub(super) fn finish_written(&mut self) {
        self.hand_over();
        let retired = self.outputs.pump();
        self.metrics.flows_out.inc_by(retired.flows);
        for (reason, flows) in &retired.dropped {
            self.metrics.count_drop(reason, *flows);
        }
        if !retired.batches.is_empty()
            && let Err(e) = self.journal.written_out(&retired.batches)
        {
            tracing::error!(error = %e, "recording written-out batches failed");
        }
        self.metrics.set_outputs(&self.outputs.status());
    }

    /// Queues the flows' own answers for the A/B, to be compared with the
    /// first shadow resolver's once its hold has passed.
    fn compare(&mut self, flows: &[AttributedFlow], now: u64) {
        if self.comparison.is_none() || flows.is_empty() || self.resolvers(Mode::Shadow).is_empty()
        {
            return;
        }
        // A start past our clock is a skewed agent clock's: such flows are
        // due by ours, so they never wait (in memory) longer than the hold.
        let latest = flows
            .iter()
            .map(|f| f.flow.start_ns)
            .max()
            .unwrap_or(now)
            .min(now);
        let hold = self.settings.shadow_hold.as_nanos().min(u64::MAX as u128) as u64;
        self.shadow_waiting
            .push_back((latest.saturating_add(hold), crate::shadow::compared(flows)));
        self.ask_shadow(now);
    }

    /// Asks the shadow resolver about the queued flows whose hold has passed
    /// and records both answers.
    pub(super) fn ask_shadow(&mut self, now: u64) {
        if self
            .shadow_waiting
            .front()
            .is_none_or(|(due, _)| *due > now)
        {
            return;
        }
        // The shadow can be removed while flows wait; they are then dropped.
        let shadow = self.resolvers(Mode::Shadow).into_iter().next();
        let Some(comparison) = &mut self.comparison else {
            return;
        };
        while let Some((due, _)) = self.shadow_waiting.front()
            && *due <= now
        {
            let (_, pending) = self.shadow_waiting.pop_front().expect("peeked");
            if let Some(shadow) = &shadow {
                let outcomes = crate::shadow::shadow_outcomes(&pending, shadow, now);
                comparison.record(crate::shadow::with_shadow(pending, outcomes));
            }
        }
    }

    /// The resolver plugins in `mode`, in chain order.
    pub(super) fn resolvers(&self, mode: Mode) -> Vec<Arc<Plugin>> {
        self.plugins
            .chain(flowattr_plugin_runtime::manifest::PluginKind::Resolver)
            .into_iter()
            .filter(|p| p.manifest().mode == mode)
            .collect()
    }
}
