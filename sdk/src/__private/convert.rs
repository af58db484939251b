//! Conversions between the generated WIT types and the SDK's domain types.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::bindings::identity::flowattr::plugin::types as wit;
use super::{WitIpEvent, WitLocalQueries, WitResolveQueries, WitVerdict};
use crate::__private::bindings::policy::exports::flowattr::plugin::policy::Redactions as WitRedactions;
use crate::__private::bindings::resolver::exports::flowattr::plugin::resolver::IpChange as WitIpChange;
use flowattr_model::columns::{
    AnswerColumns, FlowBatchColumns, LocalQueryColumns, ResolveQueryColumns, SentWorkloads,
    SideColumns,
};

use crate::{
    Answers, AttributedFlow, IpChange, IpEvent, LocalQuery, ResolveQuery, Verdict, Workload,
};

pub fn ip(a: wit::IpAddress) -> IpAddr {
    match a {
        wit::IpAddress::V4(v) => IpAddr::V4(Ipv4Addr::from(v)),
        wit::IpAddress::V6((hi, lo)) => {
            IpAddr::V6(Ipv6Addr::from(((hi as u128) << 64) | lo as u128))
        }
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

fn wit_workload(w: &Workload) -> wit::Workload {
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

/// The answers as columns that index this instance's workload table, with
/// the workloads not sent before.
pub fn wit_answers(a: Answers, sent: &mut SentWorkloads) -> wit::Answers {
    let mut c = AnswerColumns::from(a);
    let update = sent.send(&mut c);
    wit::Answers {
        table_keep: update.keep,
        new_workloads: update.new.iter().map(|w| wit_workload(w)).collect(),
        status: c.status,
        workload: c.workload,
        valid_start_ns: c.valid_start_ns,
        valid_end_ns: c.valid_end_ns,
        port_scoped: c.port_scoped,
    }
}

fn side_columns(c: wit::SideColumns) -> SideColumns {
    SideColumns {
        status: c.status,
        workload: c.workload,
        source: c.source,
        plugin: c.plugin,
        valid_start_ns: c.valid_start_ns,
        valid_end_ns: c.valid_end_ns,
    }
}

/// The flows of a `flow-batch`, each side's workload shared by `Arc` as
/// the batch lists it once. The host builds the batch, so a malformed one
/// is a host bug: the call traps with a message saying what is wrong.
pub fn attributed_flows(b: wit::FlowBatch) -> Vec<AttributedFlow> {
    FlowBatchColumns {
        workloads: b
            .workloads
            .into_iter()
            .map(|w| std::sync::Arc::new(workload(w)))
            .collect(),
        plugins: b.plugins.into_iter().map(Into::into).collect(),
        protocol: b.protocol,
        ipv4: b.ipv4,
        local_address_octets: b.local_address_octets,
        local_port: b.local_port,
        remote_address_octets: b.remote_address_octets,
        remote_port: b.remote_port,
        initiator: b.initiator,
        end_state: b.end_state,
        start_ns: b.start_ns,
        end_ns: b.end_ns,
        bytes_sent: b.bytes_sent,
        bytes_received: b.bytes_received,
        packets_sent: b.packets_sent,
        packets_received: b.packets_received,
        retransmits: b.retransmits,
        srtt_us: b.srtt_us,
        cgroup_id: b.cgroup_id,
        netns_id: b.netns_id,
        pid: b.pid,
        weight: b.weight,
        record_id: b.record_ids,
        local: side_columns(b.local),
        remote: side_columns(b.remote),
    }
    .into_rows()
    .unwrap_or_else(|e| panic!("the host sent a malformed flow batch: {e}"))
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
