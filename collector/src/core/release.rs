//! Release: after the hold, remote attribution, forwarding to other
//! regions, the policy chain, the sink plugin and the outputs.

use std::sync::Arc;

use flowattr_model::{AttributedFlow, BatchId, Flow, FlowBatch, Side, UnattributedReason};
use flowattr_plugin_runtime::{Plugin, manifest::Mode, policy};

use super::{Core, Unformatted};
use crate::{
    hold::Released,
    remote::{Sources, attribute_remote},
};

impl Core {
    pub(super) fn write_out(&mut self, released: Vec<Released>, now: u64) {
        self.counterparts.expire(now);
        let resolvers = self.resolvers(Mode::Active);
        // Reused from the last release: tens of thousands of flows a tick
        // would otherwise land in freshly mapped pages each time.
        let mut kept = std::mem::take(&mut self.spare_flows);
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
        if let Err(back) = self.format(kept, ids) {
            self.unformatted.push_back(back);
        }
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

    /// Formats `flows` with the sink plugin, a chunk of at most
    /// `sink_batch` flows at a time, and hands each chunk to the outputs at
    /// once. A chunk larger than an output takes (Kafka's message limit) is
    /// formatted again with fewer flows, and later chunks start from that
    /// size; a single flow too large for an output is dropped and counted.
    /// When the sink is missing or fails, gives back the flows not yet
    /// formatted; `ids` go with the last chunk, so the batches count as
    /// written out only once all of their flows are.
    pub(super) fn format(
        &mut self,
        mut flows: Vec<AttributedFlow>,
        mut ids: Vec<BatchId>,
    ) -> Result<(), Unformatted> {
        if flows.is_empty() {
            self.outputs.push_empty(ids);
            return Ok(());
        }
        let Some(sink) = self.plugins.get(&self.settings.sink) else {
            tracing::error!(sink = %self.settings.sink, "sink plugin not loaded; holding flows");
            self.metrics.sink_failures.inc();
            return Err((flows, ids));
        };
        let most = self.settings.sink_batch.max(1);
        let limit = self.outputs.max_chunk_bytes();
        let mut done = 0;
        while done < flows.len() {
            let mut n = self.chunk_flows.clamp(1, most).min(flows.len() - done);
            let mut bytes = self.outputs.buffer();
            loop {
                bytes.clear();
                if let Err(error) = sink.format(&flows[done..done + n], &mut bytes) {
                    tracing::error!(sink = %self.settings.sink, %error, "sink plugin failed; retrying next tick");
                    self.metrics.sink_failures.inc();
                    flows.drain(..done);
                    return Err((flows, ids));
                }
                match limit {
                    Some(limit) if bytes.len() > limit && n > 1 => {
                        // Aim a tenth below the limit, and always shrink.
                        let fit =
                            (n as u128 * limit as u128 * 9 / (10 * bytes.len() as u128)) as usize;
                        n = fit.clamp(1, n - 1);
                        self.chunk_flows = n;
                    }
                    _ => break,
                }
            }
            if limit.is_some_and(|limit| bytes.len() > limit) {
                tracing::error!(
                    bytes = bytes.len(),
                    limit,
                    "a single flow formats larger than an output takes; dropped"
                );
                self.metrics.count_drop("too_large_for_output", 1);
                done += 1;
                continue;
            }
            if n == self.chunk_flows && limit.is_some_and(|limit| 2 * bytes.len() < limit) {
                self.chunk_flows = (2 * n).min(most);
            }
            let end = done + n;
            let batches = if end == flows.len() {
                std::mem::take(&mut ids)
            } else {
                Vec::new()
            };
            self.outputs.push(bytes, n as u64, batches);
            done = end;
        }
        if !ids.is_empty() {
            self.outputs.push_empty(ids);
        }
        flows.clear();
        self.spare_flows = flows;
        Ok(())
    }

    pub(super) fn retry_unformatted(&mut self) {
        while let Some((flows, ids)) = self.unformatted.pop_front() {
            if let Err(back) = self.format(flows, ids) {
                self.unformatted.push_front(back);
                break;
            }
        }
    }

    /// Writes and commits the outputs, and retires the batches every output
    /// now has for good.
    pub(super) fn finish_written(&mut self) {
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
