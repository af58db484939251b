//! Batches a collector refuses because they name another agent than the
//! agent's certificate ([`RejectKind::Identity`]), or because the
//! collector does not list the agent in its `[claims]`
//! ([`RejectKind::Unclaimed`]). That is configuration, not the batch's
//! content: fixed by a certificate issued for the name, by running the
//! agent under its certificate's name, or by listing the agent at the
//! collector, after which the batches are accepted. So they are not
//! dropped: they stay in the spool, the name is held back with backoff and
//! then offered one batch at a time (see [`SpoolIndex::hold`]), every
//! refusal is counted apart from other rejections (by kind), and each
//! name's refusals are logged as an error at most once a minute.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use flowattr_backoff::{Jitter, Policy};
use tokio::time::Instant;

use super::{
    counters::ShipperCounters,
    index::{SpoolIndex, SpoolKey},
};
use crate::codec::RejectKind;

/// The refusals of one name are logged at most this often.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// What the shipper knows of refused names.
pub(super) struct Refusals {
    /// The name this shipper's certificate gives it (`None`: it names no
    /// one, or could not be read).
    own: Option<String>,
    /// The certificate file, for the log.
    cert: PathBuf,
    policy: Policy,
    jitter: Jitter,
    names: HashMap<String, Refused>,
}

/// One refused name.
#[derive(Default)]
struct Refused {
    /// Refusals in a row that extended the hold: the backoff's count.
    failures: u32,
    /// Refusals since the last log line.
    unreported: u64,
    reported_at: Option<Instant>,
}

impl Refusals {
    pub fn new(own: Option<String>, cert: PathBuf, policy: Policy, jitter: Jitter) -> Self {
        Self {
            own,
            cert,
            policy,
            jitter,
            names: HashMap::new(),
        }
    }

    /// The kind of a refusal of `kind` of a batch naming `agent` when the
    /// batch is kept: the receiver says identity or unclaimed, or says no
    /// kind (a collector from before the kind existed, whose only refusal
    /// of a readable batch was for identity) while the batch names another
    /// agent than the certificate. `None`: the batch is refused for good.
    pub fn kept(&self, kind: RejectKind, agent: &str) -> Option<RejectKind> {
        match kind {
            RejectKind::Identity | RejectKind::Unclaimed => Some(kind),
            RejectKind::Malformed => None,
            RejectKind::Unspecified => self
                .own
                .as_deref()
                .is_some_and(|own| own != agent)
                .then_some(RejectKind::Identity),
        }
    }

    /// Batch `key` was refused for `kind` (identity or unclaimed, see
    /// [`Refusals::kept`]): it goes back to the spool's
    /// waiting batches, its name is held back for a backoff (unless a hold
    /// already covers this refusal), counted, and logged at most every
    /// [`REPORT_EVERY`] per name.
    pub fn refused(
        &mut self,
        index: &mut SpoolIndex,
        key: &SpoolKey,
        kind: RejectKind,
        reason: &str,
        now: Instant,
        counters: &ShipperCounters,
    ) {
        let extend = index.refusal_extends_hold(key, now);
        index.release(key, None);
        let refused = self.names.entry(key.agent.clone()).or_default();
        refused.unreported += 1;
        let retry_in = extend.then(|| {
            refused.failures = refused.failures.saturating_add(1);
            let delay = self.policy.delay(refused.failures, &mut self.jitter);
            index.hold(&key.agent, now + delay);
            delay
        });
        let held = index.held();
        counters.held(held);
        ShipperCounters::inc(if kind == RejectKind::Unclaimed {
            &counters.refused_unclaimed
        } else {
            &counters.refused_identity
        });
        if refused
            .reported_at
            .is_none_or(|at| now.duration_since(at) >= REPORT_EVERY)
        {
            let certificate_name = self.own.as_deref().unwrap_or("(unreadable)");
            if kind == RejectKind::Unclaimed {
                tracing::error!(
                    batch = %key.id(),
                    refusals = refused.unreported,
                    held_batches = held,
                    ?retry_in,
                    %reason,
                    "A collector refuses this agent's batches: it does not list agent {certificate_name:?} in its [claims]. They stay in the spool and are offered again with backoff; add the agent to the collector's [claims].",
                );
            } else {
                tracing::error!(
                batch = %key.id(),
                certificate = %self.cert.display(),
                refusals = refused.unreported,
                held_batches = held,
                ?retry_in,
                %reason,
                "A collector refuses this agent's batches: they name agent {:?}, and the certificate names {certificate_name:?}. They stay in the spool and are offered again with backoff; issue a certificate for {:?}, or run the agent under its certificate's name.",
                    key.agent,
                    key.agent,
                );
            }
            refused.unreported = 0;
            refused.reported_at = Some(now);
        }
    }

    /// A batch naming `agent` was accepted: the name is no longer held.
    pub fn accepted(&mut self, index: &mut SpoolIndex, agent: &str, counters: &ShipperCounters) {
        let known = self.names.remove(agent).is_some();
        if index.unhold(agent) || known {
            let held = index.agents().get(agent).copied().unwrap_or(0);
            tracing::info!(
                agent,
                held,
                "A collector accepts batches naming this agent again; those held back follow."
            );
            counters.held(index.held());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shipper::index::Entry;

    fn key(agent: &str, seq: u64) -> SpoolKey {
        SpoolKey {
            incarnation: 1,
            seq,
            agent: agent.into(),
        }
    }

    fn refusals(own: Option<&str>) -> Refusals {
        let policy = Policy::new(Duration::from_millis(100), Duration::from_secs(1));
        Refusals::new(
            own.map(str::to_owned),
            "agent.pem".into(),
            policy,
            Jitter::seeded(1),
        )
    }

    #[test]
    fn an_older_collector_s_refusal_is_for_identity_when_the_names_differ() {
        use RejectKind::*;
        let r = refusals(Some("agent-1"));
        assert_eq!(r.kept(Identity, "agent-1"), Some(Identity));
        assert_eq!(r.kept(Unclaimed, "agent-1"), Some(Unclaimed));
        assert_eq!(r.kept(Unspecified, "agent-2"), Some(Identity));
        assert_eq!(r.kept(Unspecified, "agent-1"), None);
        assert_eq!(r.kept(Malformed, "agent-2"), None);
        // Without a readable certificate name, only the receiver's word.
        let r = refusals(None);
        assert_eq!(r.kept(Unspecified, "agent-2"), None);
        assert_eq!(r.kept(Identity, "agent-2"), Some(Identity));
    }

    #[test]
    fn refusals_hold_the_name_back_and_count_and_an_acceptance_lets_it_go() {
        let mut r = refusals(Some("right"));
        let counters = ShipperCounters::default();
        let mut index = SpoolIndex::new(u64::MAX);
        let entry = Entry {
            bytes: 1,
            flows: 1,
            in_flight: false,
            not_before: None,
            after_ns: 0,
            watermark_ns: 0,
        };
        index.insert(key("wrong", 0), entry);
        index.insert(key("wrong", 1), entry);
        let now = Instant::now();
        let first = index.take_ready(now).unwrap();
        r.refused(
            &mut index,
            &first,
            RejectKind::Identity,
            "no",
            now,
            &counters,
        );
        let until = index.next_ready_at().expect("held until the backoff");
        assert!(until <= now + Duration::from_millis(100));
        let s = counters.snapshot();
        assert_eq!((s.refused_identity, s.held_identity, s.rejected), (1, 2, 0));
        assert_eq!(index.len(), 2, "the refused batch stays in the spool");
        // Probes are refused until the cap...
        let mut at = until;
        for _ in 0..10 {
            let probe = index.take_ready(at).unwrap();
            let kind = if at == until {
                RejectKind::Unclaimed
            } else {
                RejectKind::Identity
            };
            r.refused(&mut index, &probe, kind, "no", at, &counters);
            let next = index.next_ready_at().unwrap();
            assert!(next - at <= Duration::from_secs(1));
            at = next;
        }
        let s = counters.snapshot();
        assert_eq!((s.refused_identity, s.refused_unclaimed), (10, 1));
        // ...then one is accepted: everything of the name goes.
        let probe = index.take_ready(at).unwrap();
        index.remove(&probe);
        r.accepted(&mut index, &probe.agent, &counters);
        assert_eq!(counters.snapshot().held_identity, 0);
        assert!(index.take_ready(at).is_some());
    }
}
