//! Arrivals: dedupe, the sender's clock, journal, sync, heartbeats,
//! watermark, hold, acknowledgement; and the journal's replay at start.

use std::sync::Arc;

use flowattr_model::{FlowBatch, Side, TimeRange, UnattributedReason, Workload};
use rustc_hash::FxHashMap;

use super::{Arrival, Core, Decision, Decode, Unsynced};
use crate::journal::{JournalEntry, Recovery};

impl Core {
    /// Takes back what an earlier run journaled: written-out ids are
    /// remembered as duplicates, and pending batches are held again (their
    /// heartbeats replayed, trusting the sender's clock as it was trusted
    /// then), an entry at a time while the hold has room; until all are,
    /// no arrival is taken. `decode` turns a journaled frame body into a
    /// batch.
    pub fn recover(
        &mut self,
        mut recovery: Recovery,
        decode: impl Fn(&[u8]) -> Result<FlowBatch, String> + Send + 'static,
    ) {
        for id in std::mem::take(&mut recovery.emitted) {
            self.recent.insert(id);
        }
        for name in &recovery.unreadable {
            tracing::error!(file = name, "not a journal file; left in place");
            self.metrics.count_drop("journal_unreadable", 1);
        }
        self.recovery = Some((recovery, Box::new(decode) as Decode));
        self.recover_some();
        self.update_gauges();
    }

    /// Replays journal entries while the hold and outputs have room.
    pub(super) fn recover_some(&mut self) {
        let Some((mut recovery, decode)) = self.recovery.take() else {
            return;
        };
        let now = (self.clock)();
        while !self.is_full() {
            let Some(entry) = self.journal.recover_next(&mut recovery) else {
                if recovery.torn > 0 {
                    tracing::info!(
                        entries = recovery.torn,
                        "dropped journal entries cut short by a crash (never acknowledged)"
                    );
                }
                self.metrics
                    .count_drop("journal_damaged", recovery.damaged.len() as u64);
                return;
            };
            let decoded = JournalEntry::parse(&entry.bytes).and_then(|e| Ok((decode(e.body)?, e)));
            match decoded {
                Ok((batch, e)) if batch.id() == e.id => {
                    if !self.recent.insert(e.id) {
                        self.journal.drop_recovered(&entry, false);
                        continue;
                    }
                    let peer = e.peer.to_owned();
                    let trusted = e.clock_trusted;
                    self.take(&peer, batch, trusted, now);
                }
                _ => {
                    tracing::error!(
                        segment = entry.segment,
                        "journal entry does not decode; its segment is left in place"
                    );
                    self.metrics.count_drop("journal_unreadable", 1);
                    self.journal.drop_recovered(&entry, true);
                }
            }
        }
        self.recovery = Some((recovery, decode));
    }

    /// An arrival that still needs deciding, or `None` when it was answered
    /// (a duplicate) or dropped (its sender stopped waiting).
    pub(super) fn screen(&mut self, arrival: Arrival) -> Option<Arrival> {
        if arrival.reply.abandoned() {
            self.count_batch(&arrival.peer, "abandoned");
            return None;
        }
        let id = arrival.batch.id();
        if !self.recent.contains(&id) {
            return Some(arrival);
        }
        self.count_batch(&arrival.peer, "duplicate");
        if self.unsynced.iter().any(|u| u.batch.id() == id) {
            // Acknowledged with the first copy, once that is durable.
            self.unsynced_duplicates.push(arrival.reply);
        } else {
            arrival.reply.reply(Decision::Duplicate);
        }
        None
    }

    pub(super) fn count_batch(&self, peer: &str, outcome: &str) {
        let labels = vec![("agent", peer.to_owned()), ("outcome", outcome.to_owned())];
        self.metrics.batches.get_or_create(&labels).inc();
    }

    /// Journals an arrival; it is taken and acknowledged at the next
    /// [`Core::commit`].
    pub(super) fn arrive(&mut self, arrival: Arrival) {
        let Some(arrival) = self.screen(arrival) else {
            return;
        };
        let Arrival {
            peer,
            batch,
            body,
            clock,
            reply,
        } = arrival;
        let id = batch.id();
        if batch.agent != peer {
            self.count_batch(&peer, "rejected");
            reply.reply(Decision::Rejected(format!(
                "batch names agent {:?} but the certificate is {peer:?}",
                batch.agent
            )));
            return;
        }
        if self.settings.refuse_unclaimed_agents
            && !self.settings.forward_peers.contains(&peer)
            && self.table.claims().number(&peer).is_none()
        {
            self.count_batch(&peer, "unclaimed");
            if self.warnings.allow(&peer, (self.clock)()) {
                tracing::warn!(agent = %peer, batch = %id, "refused a batch: the agent is not listed in [claims] (it keeps the batch and offers it again; list it, or set ingest.refuse_unclaimed_agents = false)");
            }
            reply.reply(Decision::Unclaimed(format!(
                "agent {peer:?} is not listed in this collector's [claims]"
            )));
            return;
        }
        let verdict = self.clocks.observe(&peer, clock);
        if !verdict.is_trusted() {
            self.count_batch(&peer, "clock_skewed");
        }
        let entry = JournalEntry {
            id: id.clone(),
            peer: &peer,
            clock_trusted: verdict.is_trusted(),
            body: &body,
        };
        if let Err(e) = self.journal.append(&entry) {
            // Not acknowledged: the agent keeps it and sends it again.
            tracing::error!(%id, error = %e, "journal write failed; batch not acknowledged");
            self.count_batch(&peer, "journal_failed");
            return;
        }
        self.recent.insert(id);
        let watermark = verdict
            .earliest_local(batch.complete_until_ns)
            .filter(|_| batch.complete_until_ns > 0);
        self.unsynced.push(Unsynced {
            peer,
            batch,
            clock_trusted: verdict.is_trusted(),
            watermark,
            reply,
        });
    }

    /// Makes the journaled arrivals durable with one sync, then takes and
    /// acknowledges them. When the sync fails none is acknowledged: their
    /// senders send them again.
    pub(super) fn commit(&mut self) {
        if self.unsynced.is_empty() {
            return;
        }
        let unsynced = std::mem::take(&mut self.unsynced);
        let duplicates = std::mem::take(&mut self.unsynced_duplicates);
        if let Err(e) = self.journal.sync() {
            tracing::error!(error = %e, batches = unsynced.len(), "journal sync failed; batches not acknowledged");
            let ids: Vec<_> = unsynced.iter().map(|u| u.batch.id()).collect();
            for (u, id) in unsynced.iter().zip(&ids) {
                self.count_batch(&u.peer, "journal_failed");
                self.recent.remove(id);
            }
            self.journal.abandon(&ids);
            return;
        }
        let now = (self.clock)();
        for u in unsynced {
            self.count_batch(&u.peer, "accepted");
            self.metrics
                .flows_in
                .get_or_create(&vec![("agent", u.peer.clone())])
                .inc_by(u.batch.flows.len() as u64);
            if let Some(watermark) = u.watermark {
                self.completeness.report(&u.peer, watermark, now);
            }
            self.take(&u.peer, u.batch, u.clock_trusted, now);
            u.reply.reply(Decision::Accepted);
        }
        for reply in duplicates {
            reply.reply(Decision::Duplicate);
        }
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
        if !forwarded {
            self.authorize(peer, &mut batch);
        }
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

    /// Takes from an agent only what it may say: a local side it attributed
    /// at an address outside its claims is unattributed (`conflict`: its
    /// word against `[claims]`), and every remote side is the collector's
    /// to compute (only forward peers send those), so one it sent is reset
    /// to pending. Both are counted per agent; a local side that would have
    /// been a heartbeat is also counted as a refused heartbeat, as the
    /// table would have.
    fn authorize(&mut self, peer: &str, batch: &mut FlowBatch) {
        let permits = self.table.claims().permits(peer);
        let (mut outside, mut remote, mut beats) = (0u64, 0u64, 0u64);
        for f in &mut batch.flows {
            if let Side::Attributed(a) = &f.local
                && !permits(f.flow.local.ip())
            {
                beats += u64::from(a.source.claims_address());
                f.local = Side::Unattributed(UnattributedReason::Conflict);
                outside += 1;
            }
            if !matches!(f.remote, Side::Pending) {
                f.remote = Side::Pending;
                remote += 1;
            }
        }
        self.metrics
            .count_ownership(&crate::ownership::OwnershipCounters {
                refused: beats,
                ..Default::default()
            });
        for (what, n) in [
            ("local_outside_claims", outside),
            ("remote_recomputed", remote),
        ] {
            if n > 0 {
                let labels = vec![("agent", peer.to_owned()), ("what", what.to_owned())];
                self.metrics.authorization.get_or_create(&labels).inc_by(n);
            }
        }
        if (outside > 0 || remote > 0) && self.warnings.allow(peer, (self.clock)()) {
            tracing::warn!(agent = %peer, batch = %batch.id(), local_outside_claims = outside, remote_recomputed = remote, "an agent attributed what it may not: local sides outside its claims go out unattributed, remote sides are computed here");
        }
    }
}
