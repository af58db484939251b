//! Attributed flows and what policies decide about them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Flow, TimeRange, UnattributedReason, Workload};

/// Where an attribution came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttributionSource {
    /// The local side, attributed at capture time by an identity plugin for
    /// its whole address ([`AnswerScope::Address`]): the workload held the
    /// address then, so the flow is a heartbeat for it.
    ///
    /// [`AnswerScope::Address`]: crate::AnswerScope::Address
    Capture,
    /// A heartbeat-learned ownership range.
    Heartbeat,
    /// A resolver plugin (such as the legacy event stream).
    Resolver,
    /// The other end's report of the same connection, captured by the agent
    /// that owns the remote address.
    Counterpart,
    /// The local side, attributed at capture by its port on an address
    /// several workloads share ([`AnswerScope::Port`]): it names the
    /// workload of this connection, never the address's owner, so it is no
    /// heartbeat for the address (it still answers for this connection as
    /// its other end's counterpart).
    ///
    /// [`AnswerScope::Port`]: crate::AnswerScope::Port
    CaptureShared,
}

impl AttributionSource {
    /// Every case, in declaration order (the order of the WIT
    /// `attribution-source` enum, whose positions are the codes in a
    /// `flow-batch`).
    pub const ALL: [Self; 5] = [
        Self::Capture,
        Self::Heartbeat,
        Self::Resolver,
        Self::Counterpart,
        Self::CaptureShared,
    ];

    /// The local side's source for an identity answer of `scope`:
    /// [`Capture`](Self::Capture) for the whole address,
    /// [`CaptureShared`](Self::CaptureShared) for its port only.
    #[inline]
    pub const fn of_local(scope: crate::AnswerScope) -> Self {
        match scope {
            crate::AnswerScope::Address => Self::Capture,
            crate::AnswerScope::Port => Self::CaptureShared,
        }
    }

    /// Whether the agent attributed this side at capture, as its own local
    /// side ([`Capture`](Self::Capture) or
    /// [`CaptureShared`](Self::CaptureShared)): it names the workload of
    /// this very connection, so it may answer for the other end's report of
    /// it.
    #[inline]
    pub const fn is_capture(self) -> bool {
        matches!(self, Self::Capture | Self::CaptureShared)
    }

    /// Whether this local attribution says the workload held the whole
    /// address ([`Capture`](Self::Capture) only), so the flow may be taken
    /// as a heartbeat for the address. A
    /// [`CaptureShared`](Self::CaptureShared) side never is: several
    /// workloads use that address at once.
    #[inline]
    pub const fn claims_address(self) -> bool {
        matches!(self, Self::Capture)
    }
}

/// A workload, where the answer came from and for which time it holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attribution {
    /// Shared: many flows are attributed to the same workload.
    pub workload: Arc<Workload>,
    pub source: AttributionSource,
    /// Name of the plugin that answered; empty for the heartbeat table.
    /// Shared: every flow a plugin answers for names it.
    pub plugin: Arc<str>,
    pub valid: TimeRange,
}

/// One side of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    Attributed(Attribution),
    Unattributed(UnattributedReason),
    /// Not looked at yet (the remote side inside the agent).
    #[default]
    Pending,
}

/// A flow with both of its sides.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttributedFlow {
    pub flow: Flow,
    #[serde(default)]
    pub local: Side,
    #[serde(default)]
    pub remote: Side,
    /// How many flows this record stands for (more than 1 after sampling).
    #[serde(default = "one")]
    pub weight: u32,
    /// The output record's stable id ([`crate::RecordIds`]), assigned by
    /// the collector that first takes the agent's batch
    /// ([`FlowBatch::assign_record_ids`]) and kept when the flow is
    /// forwarded or written again; 0 until then.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub record_id: u64,
}

fn one() -> u32 {
    1
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Fields a policy may blank out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Redactions {
    pub local_address: bool,
    pub remote_address: bool,
    pub ports: bool,
    pub process: bool,
}

/// What a policy decides for one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Keep,
    Drop,
    /// Keep this flow as standing for `n` flows.
    Sample(u32),
    Redact(Redactions),
}

impl AttributedFlow {
    /// A captured flow with neither side looked at yet, standing for itself.
    pub fn new(flow: Flow) -> Self {
        Self {
            flow,
            local: Side::Pending,
            remote: Side::Pending,
            weight: 1,
            record_id: 0,
        }
    }

    /// Applies a policy verdict: `false` when the flow is dropped.
    pub fn apply(&mut self, verdict: Verdict) -> bool {
        match verdict {
            Verdict::Keep => true,
            Verdict::Drop => false,
            Verdict::Sample(n) => {
                self.weight = self.weight.saturating_mul(n.max(1));
                true
            }
            Verdict::Redact(r) => {
                self.redact(r);
                true
            }
        }
    }

    /// Blanks the fields `r` names: addresses become unspecified, ports 0,
    /// process fields (pid, cgroup) 0.
    pub fn redact(&mut self, r: Redactions) {
        let blank = |addr: &mut std::net::SocketAddr| {
            let ip = match addr.ip() {
                std::net::IpAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
                std::net::IpAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
            };
            addr.set_ip(ip);
        };
        if r.local_address {
            blank(&mut self.flow.local);
        }
        if r.remote_address {
            blank(&mut self.flow.remote);
        }
        if r.ports {
            self.flow.local.set_port(0);
            self.flow.remote.set_port(0);
        }
        if r.process {
            self.flow.pid = 0;
            self.flow.cgroup_id = 0;
        }
    }
}

/// Flows an agent ships together: the unit of batching, transport and
/// acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowBatch {
    /// The agent that captured the flows.
    pub agent: String,
    /// When this run of the agent started (Unix-epoch nanoseconds): with
    /// `agent` and `seq` it makes the batch id unique across restarts.
    #[serde(default)]
    pub incarnation: u64,
    /// Per-agent sequence number, from 0 at agent start.
    pub seq: u64,
    /// When the batch was closed, Unix-epoch nanoseconds.
    pub created_ns: u64,
    /// The sender's completeness watermark, on its own clock: every flow
    /// that started before this instant and has ended is in this batch or an
    /// earlier one of the same incarnation (long-lived connections are
    /// covered by their interval records). 0 states nothing. Collectors
    /// attribute a remote side only once every agent that may claim the
    /// address has reported past the flow's start.
    #[serde(default)]
    pub complete_until_ns: u64,
    pub flows: Vec<AttributedFlow>,
}

impl FlowBatch {
    /// The batch's identity: the same on every delivery of this batch, so a
    /// receiver can drop duplicates.
    pub fn id(&self) -> BatchId {
        BatchId {
            agent: self.agent.clone(),
            incarnation: self.incarnation,
            seq: self.seq,
        }
    }

    /// Gives every flow without a record id (0) the id of its position in
    /// this batch ([`crate::RecordIds`]); flows that already have one (a
    /// batch forwarded from another region's collector) keep theirs. The
    /// same batch, in the same order, gets the same ids every time.
    pub fn assign_record_ids(&mut self) {
        let ids = crate::RecordIds::of(&self.id());
        for (position, f) in self.flows.iter_mut().enumerate() {
            if f.record_id == 0 {
                f.record_id = ids.at(position as u64);
            }
        }
    }
}

/// Identifies one batch of one run of one agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BatchId {
    pub agent: String,
    pub incarnation: u64,
    pub seq: u64,
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.agent, self.incarnation, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Flow;

    fn flow() -> AttributedFlow {
        let mut flow = Flow::tcp(
            "10.0.0.1:4000".parse().unwrap(),
            "[fd00::2]:80".parse().unwrap(),
            1,
        );
        flow.pid = 9;
        flow.cgroup_id = 3;
        AttributedFlow::new(flow)
    }

    #[test]
    fn only_an_address_scoped_capture_claims_the_address() {
        use crate::AnswerScope;
        assert_eq!(
            AttributionSource::of_local(AnswerScope::Address),
            AttributionSource::Capture
        );
        assert_eq!(
            AttributionSource::of_local(AnswerScope::Port),
            AttributionSource::CaptureShared
        );
        let claims: Vec<_> = AttributionSource::ALL
            .into_iter()
            .filter(|s| s.claims_address())
            .collect();
        assert_eq!(claims, [AttributionSource::Capture]);
        let captured: Vec<_> = AttributionSource::ALL
            .into_iter()
            .filter(|s| s.is_capture())
            .collect();
        assert_eq!(
            captured,
            [AttributionSource::Capture, AttributionSource::CaptureShared]
        );
        // The new case is last: the codes of the others do not move.
        assert_eq!(AttributionSource::CaptureShared as u8, 4);
    }

    #[test]
    fn record_ids_are_assigned_once_by_position() {
        let mut batch = FlowBatch {
            agent: "node-1".into(),
            incarnation: 3,
            seq: 9,
            created_ns: 0,
            complete_until_ns: 0,
            flows: vec![flow(), flow(), flow()],
        };
        // The second was forwarded with its own id from another collector.
        batch.flows[1].record_id = 77;
        let mut again = batch.clone();
        batch.assign_record_ids();
        let ids = crate::RecordIds::of(&batch.id());
        let got: Vec<u64> = batch.flows.iter().map(|f| f.record_id).collect();
        assert_eq!(got, [ids.at(0), 77, ids.at(2)]);
        // A replay of the same batch gets the same ids; assigning twice
        // changes nothing.
        again.assign_record_ids();
        assert_eq!(again, batch);
        batch.assign_record_ids();
        assert_eq!(again, batch);
    }

    #[test]
    fn a_record_id_is_left_out_of_json_until_assigned() {
        let mut f = flow();
        let json = serde_json::to_string(&f).unwrap();
        assert!(!json.contains("record_id"), "{json}");
        f.record_id = 5;
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.contains("\"record_id\":5"), "{json}");
        let back: AttributedFlow = serde_json::from_str(&json).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn verdicts_keep_drop_sample_and_redact() {
        let mut f = flow();
        assert!(f.apply(Verdict::Keep));
        assert!(!f.apply(Verdict::Drop));
        assert!(f.apply(Verdict::Sample(10)));
        assert_eq!(f.weight, 10);
        let all = Redactions {
            local_address: true,
            remote_address: true,
            ports: true,
            process: true,
        };
        assert!(f.apply(Verdict::Redact(all)));
        assert_eq!(f.flow.local, "0.0.0.0:0".parse().unwrap());
        assert_eq!(f.flow.remote, "[::]:0".parse().unwrap());
        assert_eq!((f.flow.pid, f.flow.cgroup_id), (0, 0));
    }
}
