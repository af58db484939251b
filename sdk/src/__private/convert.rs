//! Conversions between the generated WIT types and the SDK's domain types.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::bindings::identity::flowattr::plugin::types as wit;
use super::{WitIpEvent, WitLocalQueries, WitResolveQueries, WitVerdict};
use crate::__private::bindings::policy::exports::flowattr::plugin::policy::Redactions as WitRedactions;
use crate::__private::bindings::resolver::exports::flowattr::plugin::resolver::IpChange as WitIpChange;
use flowattr_model::columns::{AnswerColumns, LocalQueryColumns, ResolveQueryColumns};

use crate::{
    Answers, AttributedFlow, Attribution, AttributionSource, Flow, FlowEnd, Initiator, IpChange,
    IpEvent, LocalQuery, Protocol, ResolveQuery, Side, TimeRange, UnattributedReason, Verdict,
    Workload,
};

pub fn ip(a: wit::IpAddress) -> IpAddr {
    match a {
        wit::IpAddress::V4(v) => IpAddr::V4(Ipv4Addr::from(v)),
        wit::IpAddress::V6((hi, lo)) => {
            IpAddr::V6(Ipv6Addr::from(((hi as u128) << 64) | lo as u128))
        }
    }
}

fn endpoint(e: wit::Endpoint) -> SocketAddr {
    SocketAddr::new(ip(e.address), e.port)
}

fn protocol(p: wit::Protocol) -> Protocol {
    match p {
        wit::Protocol::Tcp => Protocol::Tcp,
        wit::Protocol::Udp => Protocol::Udp,
    }
}

/// The host always sends columns of one length; anything else is a host bug
/// and trapping makes the host count and rebuild.
pub fn local_queries(q: WitLocalQueries) -> Vec<LocalQuery> {
    LocalQueryColumns {
        address_octets: q.address_octets,
        port: q.port,
        protocol: q.protocol,
        time_ns: q.time_ns,
        cgroup_id: q.cgroup_id,
        netns_id: q.netns_id,
        pid: q.pid,
    }
    .into_rows()
    .expect("the host sends columns of one length")
}

pub fn resolve_queries(q: WitResolveQueries) -> Vec<ResolveQuery> {
    ResolveQueryColumns {
        address_octets: q.address_octets,
        time_ns: q.time_ns,
        asked_at_ns: q.asked_at_ns,
    }
    .into_rows()
    .expect("the host sends columns of one length")
}

pub fn workload(w: wit::Workload) -> Workload {
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

pub fn ip_event(e: WitIpEvent) -> IpEvent {
    IpEvent {
        address: ip(e.address),
        change: match e.change {
            WitIpChange::Assigned(w) => IpChange::Assigned(workload(w)),
            WitIpChange::Released => IpChange::Released,
        },
        event_time_ns: e.event_time_ns,
        arrival_time_ns: e.arrival_time_ns,
    }
}

fn range(r: wit::TimeRange) -> TimeRange {
    TimeRange {
        start_ns: r.start_ns,
        end_ns: r.end_ns,
    }
}

fn reason(r: wit::UnattributedReason) -> UnattributedReason {
    use wit::UnattributedReason as W;
    match r {
        W::NotFound => UnattributedReason::NotFound,
        W::SourceUnavailable => UnattributedReason::SourceUnavailable,
        W::Conflict => UnattributedReason::Conflict,
        W::Gap => UnattributedReason::Gap,
        W::Expired => UnattributedReason::Expired,
        W::ClockSkew => UnattributedReason::ClockSkew,
        W::PluginFailed => UnattributedReason::PluginFailed,
    }
}

fn wit_workload(w: Workload) -> wit::Workload {
    wit::Workload {
        id: w.id,
        app: w.app,
        cluster: w.cluster,
        stack: w.stack,
        account: w.account,
        region: w.region,
        labels: w.labels.into_iter().collect(),
    }
}

pub fn wit_answers(a: Answers) -> wit::Answers {
    let c = AnswerColumns::from(a);
    wit::Answers {
        workloads: c.workloads.into_iter().map(wit_workload).collect(),
        status: c.status,
        workload: c.workload,
        valid_start_ns: c.valid_start_ns,
        valid_end_ns: c.valid_end_ns,
    }
}

fn flow(f: wit::Flow) -> Flow {
    Flow {
        protocol: protocol(f.protocol),
        local: endpoint(f.local),
        remote: endpoint(f.remote),
        initiator: match f.initiator {
            wit::Initiator::Local => Initiator::Local,
            wit::Initiator::Remote => Initiator::Remote,
            wit::Initiator::Unknown => Initiator::Unknown,
        },
        end_state: match f.end_state {
            wit::FlowEnd::Closed => FlowEnd::Closed,
            wit::FlowEnd::Ongoing => FlowEnd::Ongoing,
            wit::FlowEnd::Refused => FlowEnd::Refused,
            wit::FlowEnd::Reset => FlowEnd::Reset,
            wit::FlowEnd::Failed => FlowEnd::Failed,
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

/// The flows of a `flow-batch`, each side's workload shared by `Arc` as
/// the batch lists it once. The host builds the batch, so an index outside
/// its lists is a host bug: the call traps with a message saying so.
pub fn attributed_flows(batch: wit::FlowBatch) -> Vec<AttributedFlow> {
    let workloads: Vec<std::sync::Arc<Workload>> = batch
        .workloads
        .into_iter()
        .map(|w| std::sync::Arc::new(workload(w)))
        .collect();
    let plugins = batch.plugins;
    let side = |s: wit::Side| match s {
        wit::Side::Attributed(a) => Side::Attributed(Attribution {
            workload: workloads
                .get(a.workload as usize)
                .expect("flow-batch: workload index outside the batch's list")
                .clone(),
            source: match a.source {
                wit::AttributionSource::Capture => AttributionSource::Capture,
                wit::AttributionSource::Heartbeat => AttributionSource::Heartbeat,
                wit::AttributionSource::Resolver => AttributionSource::Resolver,
            },
            plugin: plugins
                .get(a.plugin as usize)
                .expect("flow-batch: plugin index outside the batch's list")
                .clone(),
            valid: range(a.valid),
        }),
        wit::Side::Unattributed(r) => Side::Unattributed(reason(r)),
        wit::Side::Pending => Side::Pending,
    };
    batch
        .flows
        .into_iter()
        .map(|f| AttributedFlow {
            flow: flow(f.flow),
            local: side(f.local),
            remote: side(f.remote),
            weight: f.weight,
        })
        .collect()
}

pub fn wit_verdict(v: Verdict) -> WitVerdict {
    match v {
        Verdict::Keep => WitVerdict::Keep,
        Verdict::Drop => WitVerdict::Drop,
        Verdict::Sample(n) => WitVerdict::Sample(n),
        Verdict::Redact(r) => {
            let mut flags = WitRedactions::empty();
            flags.set(WitRedactions::LOCAL_ADDRESS, r.local_address);
            flags.set(WitRedactions::REMOTE_ADDRESS, r.remote_address);
            flags.set(WitRedactions::PORTS, r.ports);
            flags.set(WitRedactions::PROCESS, r.process);
            WitVerdict::Redact(flags)
        }
    }
}
