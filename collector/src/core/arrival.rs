//! Arrivals: dedupe, the sender's clock, journal, heartbeats, watermark,
//! hold, acknowledgement; and the journal's replay at start.

use std::sync::Arc;

use flowattr_model::{FlowBatch, Side, TimeRange, UnattributedReason, Workload};
use rustc_hash::FxHashMap;

use super::{Arrival, Core, Decision};
use crate::journal::{JournalEntry, Recovered};

impl Core {
    /// Takes back what an earlier run journaled: written-out ids are
    /// remembered as duplicates, pending batches are held again (their
    /// heartbeats replayed, trusting the sender's clock as it was trusted
    /// then). `decode` turns a journaled frame body into a batch.
    pub fn recover(
        &mut self,
        recovered: Recovered,
        decode: impl Fn(&[u8]) -> Result<FlowBatch, String>,
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
            let decoded = JournalEntry::parse(&bytes)
                .ok()
                .and_then(|entry| Some((decode(entry.body).ok()?, entry)));
            match decoded {
                Some((batch, entry)) if batch.id() == id => {
                    self.recent.insert(id);
                    self.journaled += 1;
                    let peer = entry.peer.to_owned();
                    self.take(&peer, batch, entry.clock_trusted, now);
                }
                _ => {
                    tracing::error!(%id, "journal entry does not decode; left in place");
                    self.metrics.count_drop("journal_unreadable", 1);
                }
            }
        }
        self.update_gauges();
    }

    pub(super) fn arrive(&mut self, arrival: Arrival) {
        let Arrival {
            peer,
            batch,
            body,
            clock,
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
        let verdict = self.clocks.observe(&peer, clock);
        if !verdict.is_trusted() {
            count("clock_skewed");
        }
        let header = JournalEntry::header(&peer, verdict.is_trusted());
        if let Err(e) = self.journal.append(&id, &[header.as_bytes(), &body]) {
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
        if let Some(watermark) = verdict.earliest_local(batch.complete_until_ns)
            && batch.complete_until_ns > 0
        {
            self.completeness.report(&peer, watermark, now);
        }
        self.take(&peer, batch, verdict.is_trusted(), now);
        reply(Decision::Accepted);
    }

    /// Heartbeats and hold for a batch the collector is responsible for.
    /// A sender whose clock is not trusted claims nothing and answers for
    /// no one, and its flows' remote sides are `clock-skew`: their start
    /// cannot be compared with anyone's ranges.
    ///
    /// Every flow gets its output record id here, from the batch's id and
    /// its position (a journal replay takes the same batch in the same
    /// order, so a record written again has the same id); a forwarded flow
    /// keeps the id its first collector gave it.
    pub(super) fn take(&mut self, peer: &str, mut batch: FlowBatch, clock_trusted: bool, now: u64) {
        batch.assign_record_ids();
        let forwarded = self.settings.forward_peers.contains(peer);
        if !clock_trusted {
            for f in &mut batch.flows {
                if matches!(f.remote, Side::Pending) {
                    f.remote = Side::Unattributed(UnattributedReason::ClockSkew);
                }
            }
            self.hold.push(batch, forwarded, now);
            return;
        }
        if !forwarded {
            // The table recognises its own `Arc`s by pointer; a batch's
            // flows share one `Arc` per workload, so each is swapped for the
            // table's once per batch rather than compared by value per flow.
            let mut canonical: FxHashMap<*const Workload, Arc<Workload>> = FxHashMap::default();
            for f in &batch.flows {
                if let Side::Attributed(a) = &f.local {
                    canonical
                        .entry(Arc::as_ptr(&a.workload))
                        .or_insert_with(|| {
                            self.table
                                .canonical(&a.workload)
                                .unwrap_or_else(|| a.workload.clone())
                        });
                }
            }
            // Only an address-level answer is a heartbeat: a port-scoped
            // one names one of several workloads sharing the address.
            let beats = batch.flows.iter().filter_map(|f| match &f.local {
                Side::Attributed(a) if a.source.claims_address() => Some((
                    f.flow.local.ip(),
                    &canonical[&Arc::as_ptr(&a.workload)],
                    TimeRange::new(f.flow.start_ns, f.flow.end_ns.max(f.flow.start_ns + 1)),
                )),
                _ => None,
            });
            let counts = self.table.heartbeats(peer, beats, now);
            self.metrics.count_ownership(&counts);
        }
        // A forwarded batch's flows seek their other end here but answer for
        // no one (their capturing agent is not this region's).
        // Only a side attributed at capture names this very connection's
        // workload; anything else the agent sent has no say over the other end.
        let permits = self.table.claims().permits(peer);
        self.counterparts.arrive(&batch.flows, |f| {
            !forwarded
                && permits(f.flow.local.ip())
                && matches!(&f.local, Side::Attributed(a) if a.source.is_capture())
        });
        self.hold.push(batch, forwarded, now);
    }
}
