//! Conversions between the domain model and the generated WIT types.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use flowattr_model::columns::{AnswerColumns, LocalQueryColumns, ResolveQueryColumns};
use flowattr_model::{
    Answers, AttributedFlow, Attribution, AttributionSource, Flow, FlowEnd, Initiator, IpChange,
    IpEvent, LocalQuery, Protocol, Redactions, ResolveQuery, Side, TimeRange, UnattributedReason,
    Verdict, Workload,
};

use crate::bindings::identity::exports::flowattr::plugin::identity as wit_identity;
use crate::bindings::policy::exports::flowattr::plugin::policy as wit_policy;
use crate::bindings::resolver::exports::flowattr::plugin::resolver as wit_resolver;
use crate::bindings::wit;

fn ip(a: IpAddr) -> wit::IpAddress {
    match a {
        IpAddr::V4(v4) => wit::IpAddress::V4(u32::from(v4)),
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            wit::IpAddress::V6(((n >> 64) as u64, n as u64))
        }
    }
}

fn endpoint(e: SocketAddr) -> wit::Endpoint {
    wit::Endpoint {
        address: ip(e.ip()),
        port: e.port(),
    }
}

fn protocol(p: Protocol) -> wit::Protocol {
    match p {
        Protocol::Tcp => wit::Protocol::Tcp,
        Protocol::Udp => wit::Protocol::Udp,
    }
}

pub fn local_queries(rows: &[LocalQuery]) -> wit_identity::LocalQueries {
    let c = LocalQueryColumns::from_rows(rows);
    wit_identity::LocalQueries {
        address_octets: c.address_octets,
        port: c.port,
        protocol: c.protocol,
        time_ns: c.time_ns,
        cgroup_id: c.cgroup_id,
        netns_id: c.netns_id,
        pid: c.pid,
    }
}

pub fn resolve_queries(rows: &[ResolveQuery]) -> wit_resolver::ResolveQueries {
    let c = ResolveQueryColumns::from_rows(rows);
    wit_resolver::ResolveQueries {
        address_octets: c.address_octets,
        time_ns: c.time_ns,
        asked_at_ns: c.asked_at_ns,
    }
}

fn workload_record(w: &Workload) -> wit::Workload {
    wit::Workload {
        id: w.id.clone(),
        app: w.app.clone(),
        cluster: w.cluster.clone(),
        stack: w.stack.clone(),
        account: w.account.clone(),
        region: w.region.clone(),
        labels: w
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

pub fn ip_event(e: &IpEvent) -> wit_resolver::IpEvent {
    wit_resolver::IpEvent {
        address: ip(e.address),
        change: match &e.change {
            IpChange::Assigned(w) => wit_resolver::IpChange::Assigned(workload_record(w)),
            IpChange::Released => wit_resolver::IpChange::Released,
        },
        event_time_ns: e.event_time_ns,
        arrival_time_ns: e.arrival_time_ns,
    }
}

fn range(r: TimeRange) -> wit::TimeRange {
    wit::TimeRange {
        start_ns: r.start_ns,
        end_ns: r.end_ns,
    }
}

fn reason(r: UnattributedReason) -> wit::UnattributedReason {
    use wit::UnattributedReason as W;
    match r {
        UnattributedReason::NotFound => W::NotFound,
        UnattributedReason::SourceUnavailable => W::SourceUnavailable,
        UnattributedReason::Conflict => W::Conflict,
        UnattributedReason::Gap => W::Gap,
        UnattributedReason::Expired => W::Expired,
        UnattributedReason::ClockSkew => W::ClockSkew,
        UnattributedReason::PluginFailed => W::PluginFailed,
    }
}

fn from_workload(w: wit::Workload) -> Workload {
    Workload {
        id: w.id,
        app: w.app,
        cluster: w.cluster,
        stack: w.stack,
        account: w.account,
        region: w.region,
        labels: w.labels.into_iter().collect(),
    }
}

/// Answers from their columns; ragged columns (a buggy plugin) are an error.
pub fn from_answers(a: wit::Answers) -> Result<Answers, String> {
    AnswerColumns {
        workloads: a.workloads.into_iter().map(from_workload).collect(),
        status: a.status,
        workload: a.workload,
        valid_start_ns: a.valid_start_ns,
        valid_end_ns: a.valid_end_ns,
    }
    .into_answers()
}

fn flow(f: &Flow) -> wit::Flow {
    wit::Flow {
        protocol: protocol(f.protocol),
        local: endpoint(f.local),
        remote: endpoint(f.remote),
        initiator: match f.initiator {
            Initiator::Local => wit::Initiator::Local,
            Initiator::Remote => wit::Initiator::Remote,
            Initiator::Unknown => wit::Initiator::Unknown,
        },
        end_state: match f.end_state {
            FlowEnd::Closed => wit::FlowEnd::Closed,
            FlowEnd::Ongoing => wit::FlowEnd::Ongoing,
            FlowEnd::Refused => wit::FlowEnd::Refused,
            FlowEnd::Reset => wit::FlowEnd::Reset,
            FlowEnd::Failed => wit::FlowEnd::Failed,
        },
        start_ns: f.start_ns,
        end_ns: f.end_ns,
        bytes_sent: f.bytes_sent,
        bytes_received: f.bytes_received,
        packets_sent: f.packets_sent,
        packets_received: f.packets_received,
        retransmits: f.retransmits,
        srtt_us: f.srtt_us,
        cgroup_id: f.cgroup_id,
        netns_id: f.netns_id,
        pid: f.pid,
    }
}

/// Lists each distinct workload (by `Arc`) and plugin name of a batch once.
#[derive(Default)]
struct Dictionary {
    workloads: Vec<wit::Workload>,
    by_pointer: std::collections::HashMap<*const Workload, u32, rustc_hash::FxBuildHasher>,
    plugins: Vec<String>,
}

impl Dictionary {
    fn attribution(&mut self, a: &Attribution) -> wit::Attribution {
        let next = self.workloads.len() as u32;
        let workload = *self
            .by_pointer
            .entry(Arc::as_ptr(&a.workload))
            .or_insert(next);
        if workload == next {
            self.workloads.push(workload_record(&a.workload));
        }
        let plugin = match self.plugins.iter().position(|p| *p == a.plugin) {
            Some(i) => i as u32,
            None => {
                self.plugins.push(a.plugin.clone());
                self.plugins.len() as u32 - 1
            }
        };
        wit::Attribution {
            workload,
            source: match a.source {
                AttributionSource::Capture => wit::AttributionSource::Capture,
                AttributionSource::Heartbeat => wit::AttributionSource::Heartbeat,
                AttributionSource::Resolver => wit::AttributionSource::Resolver,
            },
            plugin,
            valid: range(a.valid),
        }
    }

    fn side(&mut self, s: &Side) -> wit::Side {
        match s {
            Side::Attributed(a) => wit::Side::Attributed(self.attribution(a)),
            Side::Unattributed(r) => wit::Side::Unattributed(reason(*r)),
            Side::Pending => wit::Side::Pending,
        }
    }
}

/// Attributed flows as one `flow-batch`: workloads and plugin names listed
/// once, referred to by index.
pub fn flow_batch(flows: &[AttributedFlow]) -> wit::FlowBatch {
    let mut dict = Dictionary::default();
    let flows = flows
        .iter()
        .map(|f| wit::AttributedFlow {
            flow: flow(&f.flow),
            local: dict.side(&f.local),
            remote: dict.side(&f.remote),
            weight: f.weight,
        })
        .collect();
    wit::FlowBatch {
        workloads: dict.workloads,
        plugins: dict.plugins,
        flows,
    }
}

pub fn from_verdict(v: wit_policy::Verdict) -> Verdict {
    use wit_policy::Redactions as R;
    match v {
        wit_policy::Verdict::Keep => Verdict::Keep,
        wit_policy::Verdict::Drop => Verdict::Drop,
        wit_policy::Verdict::Sample(n) => Verdict::Sample(n),
        wit_policy::Verdict::Redact(r) => Verdict::Redact(Redactions {
            local_address: r.contains(R::LOCAL_ADDRESS),
            remote_address: r.contains(R::REMOTE_ADDRESS),
            ports: r.contains(R::PORTS),
            process: r.contains(R::PROCESS),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_use_network_order_integers() {
        assert!(matches!(
            ip("10.0.0.1".parse().unwrap()),
            wit::IpAddress::V4(0x0a00_0001)
        ));
        assert!(matches!(
            ip("2001:db8::1".parse().unwrap()),
            wit::IpAddress::V6((0x2001_0db8_0000_0000, 1))
        ));
    }

    #[test]
    fn ragged_answer_columns_are_a_plugin_error() {
        let answers = wit::Answers {
            workloads: vec![],
            status: vec![1, 4],
            workload: vec![0],
            valid_start_ns: vec![0, 0],
            valid_end_ns: vec![0, 0],
        };
        assert!(from_answers(answers).is_err());
    }
}
