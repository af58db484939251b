//! Model types to wire messages and back. Encoding builds the batch's
//! workload and plugin-name dictionaries; decoding checks every index and
//! enum value, so a bad frame is an error, never a panic or a wrong flow.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    sync::Arc,
};

use flowattr_model::{
    AttributedFlow, Attribution, AttributionSource, BatchId, Flow, FlowBatch, FlowEnd, Initiator,
    Protocol, Side, TimeRange, UnattributedReason, Workload, WorkloadDictionary,
};
use rustc_hash::FxHashMap;

use super::{
    DecodeError,
    wire::{
        AddrMsg, BatchIdMsg, BatchMsg, FlowEndMsg, FlowMsg, InitiatorMsg, ProtocolMsg, ReasonMsg,
        SideKind, SideMsg, SourceMsg, WorkloadMsg,
    },
};

/// Workloads and plugin names seen so far in one batch, by index.
#[derive(Default)]
struct Dictionary<'a> {
    workload_index: WorkloadDictionary<'a>,
    workloads: Vec<WorkloadMsg>,
    plugin_index: FxHashMap<&'a str, u32>,
    plugins: Vec<String>,
}

impl<'a> Dictionary<'a> {
    fn workload(&mut self, workload: &'a Arc<Workload>) -> u32 {
        let (i, new) = self.workload_index.insert(workload);
        if new {
            self.workloads.push(workload_to_msg(workload));
        }
        i
    }

    fn plugin(&mut self, name: &'a str) -> u32 {
        let next = self.plugins.len() as u32;
        let i = *self.plugin_index.entry(name).or_insert(next);
        if i == next {
            self.plugins.push(name.to_owned());
        }
        i
    }
}

pub(super) fn id_to_msg(id: &BatchId) -> BatchIdMsg {
    BatchIdMsg {
        agent: id.agent.clone(),
        incarnation: id.incarnation,
        seq: id.seq,
    }
}

pub(super) fn id_from_msg(msg: BatchIdMsg) -> BatchId {
    BatchId {
        agent: msg.agent,
        incarnation: msg.incarnation,
        seq: msg.seq,
    }
}

/// The wire form of `batch`, with its dictionaries.
pub(super) fn batch_to_msg(batch: &FlowBatch) -> BatchMsg {
    let mut dict = Dictionary::default();
    let flows = batch
        .flows
        .iter()
        .map(|f| flow_to_msg(f, &mut dict))
        .collect();
    BatchMsg {
        id: Some(BatchIdMsg {
            agent: batch.agent.clone(),
            incarnation: batch.incarnation,
            seq: batch.seq,
        }),
        created_ns: batch.created_ns,
        workloads: dict.workloads,
        plugins: dict.plugins,
        flows,
        complete_until_ns: batch.complete_until_ns,
    }
}

/// The batch `msg` stands for.
pub(super) fn batch_from_msg(msg: BatchMsg) -> Result<FlowBatch, DecodeError> {
    let id = msg.id.ok_or(DecodeError::Missing { field: "batch.id" })?;
    let workloads: Vec<Arc<Workload>> = msg
        .workloads
        .into_iter()
        .map(|w| Arc::new(workload_from_msg(w)))
        .collect();
    let plugins: Vec<Arc<str>> = msg.plugins.into_iter().map(Into::into).collect();
    let tables = Tables {
        workloads: &workloads,
        plugins: &plugins,
    };
    let flows = msg
        .flows
        .into_iter()
        .map(|f| flow_from_msg(f, &tables))
        .collect::<Result<_, _>>()?;
    Ok(FlowBatch {
        agent: id.agent,
        incarnation: id.incarnation,
        seq: id.seq,
        created_ns: msg.created_ns,
        complete_until_ns: msg.complete_until_ns,
        flows,
    })
}

fn workload_to_msg(w: &Workload) -> WorkloadMsg {
    WorkloadMsg {
        id: w.id.clone(),
        app: w.app.clone(),
        cluster: w.cluster.clone(),
        stack: w.stack.clone(),
        account: w.account.clone(),
        region: w.region.clone(),
        labels: w.labels.clone(),
    }
}

fn workload_from_msg(w: WorkloadMsg) -> Workload {
    Workload {
        id: w.id,
        app: w.app,
        cluster: w.cluster,
        stack: w.stack,
        account: w.account,
        region: w.region,
        labels: w.labels,
    }
}

fn flow_to_msg<'a>(a: &'a AttributedFlow, dict: &mut Dictionary<'a>) -> FlowMsg {
    let f = &a.flow;
    FlowMsg {
        protocol: match f.protocol {
            Protocol::Tcp => ProtocolMsg::Tcp,
            Protocol::Udp => ProtocolMsg::Udp,
        } as i32,
        local: Some(addr_to_msg(f.local)),
        remote: Some(addr_to_msg(f.remote)),
        initiator: match f.initiator {
            Initiator::Unknown => InitiatorMsg::Unknown,
            Initiator::Local => InitiatorMsg::Local,
            Initiator::Remote => InitiatorMsg::Remote,
        } as i32,
        end_state: match f.end_state {
            FlowEnd::Closed => FlowEndMsg::Closed,
            FlowEnd::Ongoing => FlowEndMsg::Ongoing,
            FlowEnd::Refused => FlowEndMsg::Refused,
            FlowEnd::Reset => FlowEndMsg::Reset,
            FlowEnd::Failed => FlowEndMsg::Failed,
        } as i32,
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
        local_side: side_to_msg(&a.local, dict),
        remote_side: side_to_msg(&a.remote, dict),
        weight: a.weight,
        record_id: (a.record_id != 0).then_some(a.record_id),
    }
}

/// The dictionaries a batch's sides refer to.
struct Tables<'a> {
    workloads: &'a [Arc<Workload>],
    plugins: &'a [Arc<str>],
}

fn flow_from_msg(m: FlowMsg, tables: &Tables<'_>) -> Result<AttributedFlow, DecodeError> {
    let protocol = match enum_value::<ProtocolMsg>(m.protocol, "flow.protocol")? {
        ProtocolMsg::Tcp => Protocol::Tcp,
        ProtocolMsg::Udp => Protocol::Udp,
    };
    let initiator = match enum_value::<InitiatorMsg>(m.initiator, "flow.initiator")? {
        InitiatorMsg::Unknown => Initiator::Unknown,
        InitiatorMsg::Local => Initiator::Local,
        InitiatorMsg::Remote => Initiator::Remote,
    };
    let end_state = match enum_value::<FlowEndMsg>(m.end_state, "flow.end_state")? {
        FlowEndMsg::Closed => FlowEnd::Closed,
        FlowEndMsg::Ongoing => FlowEnd::Ongoing,
        FlowEndMsg::Refused => FlowEnd::Refused,
        FlowEndMsg::Reset => FlowEnd::Reset,
        FlowEndMsg::Failed => FlowEnd::Failed,
    };
    Ok(AttributedFlow {
        flow: Flow {
            protocol,
            local: addr_from_msg(m.local, "flow.local")?,
            remote: addr_from_msg(m.remote, "flow.remote")?,
            initiator,
            end_state,
            start_ns: m.start_ns,
            end_ns: m.end_ns,
            bytes_sent: m.bytes_sent,
            bytes_received: m.bytes_received,
            packets_sent: m.packets_sent,
            packets_received: m.packets_received,
            retransmits: m.retransmits,
            srtt_us: m.srtt_us,
            cgroup_id: m.cgroup_id,
            netns_id: m.netns_id,
            pid: m.pid,
        },
        local: side_from_msg(m.local_side, tables, "flow.local_side")?,
        remote: side_from_msg(m.remote_side, tables, "flow.remote_side")?,
        weight: m.weight,
        record_id: m.record_id.unwrap_or(0),
    })
}

fn enum_value<E: TryFrom<i32>>(value: i32, field: &'static str) -> Result<E, DecodeError> {
    E::try_from(value).map_err(|_| DecodeError::BadEnum { field, value })
}

fn addr_to_msg(addr: SocketAddr) -> AddrMsg {
    match addr {
        SocketAddr::V4(a) => AddrMsg {
            v4: Some(u32::from(*a.ip())),
            port: u32::from(a.port()),
            ..AddrMsg::default()
        },
        SocketAddr::V6(a) => {
            let n = u128::from(*a.ip());
            AddrMsg {
                v4: None,
                v6_hi: (n >> 64) as u64,
                v6_lo: n as u64,
                port: u32::from(a.port()),
                flowinfo: a.flowinfo(),
                scope_id: a.scope_id(),
            }
        }
    }
}

fn addr_from_msg(m: Option<AddrMsg>, field: &'static str) -> Result<SocketAddr, DecodeError> {
    let m = m.ok_or(DecodeError::Missing { field })?;
    let port = u16::try_from(m.port).map_err(|_| DecodeError::BadValue {
        field,
        value: u64::from(m.port),
    })?;
    Ok(match m.v4 {
        Some(v4) => SocketAddrV4::new(Ipv4Addr::from(v4), port).into(),
        None => {
            let ip = Ipv6Addr::from((u128::from(m.v6_hi) << 64) | u128::from(m.v6_lo));
            SocketAddrV6::new(ip, port, m.flowinfo, m.scope_id).into()
        }
    })
}

fn side_to_msg<'a>(side: &'a Side, dict: &mut Dictionary<'a>) -> Option<SideMsg> {
    match side {
        Side::Pending => None,
        Side::Attributed(a) => Some(SideMsg {
            kind: SideKind::Attributed as i32,
            workload: dict.workload(&a.workload),
            source: match a.source {
                AttributionSource::Capture => SourceMsg::Capture,
                AttributionSource::Heartbeat => SourceMsg::Heartbeat,
                AttributionSource::Resolver => SourceMsg::Resolver,
                AttributionSource::Counterpart => SourceMsg::Counterpart,
                AttributionSource::CaptureShared => SourceMsg::CaptureShared,
            } as i32,
            plugin: dict.plugin(&a.plugin),
            valid_start_ns: a.valid.start_ns,
            valid_end_ns: a.valid.end_ns,
            reason: 0,
        }),
        Side::Unattributed(reason) => Some(SideMsg {
            kind: SideKind::Unattributed as i32,
            reason: reason_to_msg(*reason) as i32,
            ..SideMsg::default()
        }),
    }
}

fn side_from_msg(
    m: Option<SideMsg>,
    tables: &Tables<'_>,
    field: &'static str,
) -> Result<Side, DecodeError> {
    let Some(m) = m else {
        return Ok(Side::Pending);
    };
    Ok(match enum_value::<SideKind>(m.kind, field)? {
        SideKind::Pending => Side::Pending,
        SideKind::Unattributed => {
            Side::Unattributed(reason_from_msg(enum_value(m.reason, "side.reason")?))
        }
        SideKind::Attributed => {
            let workload = index(tables.workloads, m.workload, "side.workload")?.clone();
            let plugin = index(tables.plugins, m.plugin, "side.plugin")?.clone();
            let source = match enum_value::<SourceMsg>(m.source, "side.source")? {
                SourceMsg::Capture => AttributionSource::Capture,
                SourceMsg::Heartbeat => AttributionSource::Heartbeat,
                SourceMsg::Resolver => AttributionSource::Resolver,
                SourceMsg::Counterpart => AttributionSource::Counterpart,
                SourceMsg::CaptureShared => AttributionSource::CaptureShared,
            };
            Side::Attributed(Attribution {
                workload,
                source,
                plugin,
                valid: TimeRange::new(m.valid_start_ns, m.valid_end_ns),
            })
        }
    })
}

fn index<'t, T>(table: &'t [T], i: u32, field: &'static str) -> Result<&'t T, DecodeError> {
    table.get(i as usize).ok_or(DecodeError::IndexOutOfRange {
        field,
        index: i,
        len: table.len(),
    })
}

fn reason_to_msg(r: UnattributedReason) -> ReasonMsg {
    match r {
        UnattributedReason::NotFound => ReasonMsg::NotFound,
        UnattributedReason::SourceUnavailable => ReasonMsg::SourceUnavailable,
        UnattributedReason::Conflict => ReasonMsg::Conflict,
        UnattributedReason::Gap => ReasonMsg::Gap,
        UnattributedReason::Expired => ReasonMsg::Expired,
        UnattributedReason::ClockSkew => ReasonMsg::ClockSkew,
        UnattributedReason::PluginFailed => ReasonMsg::PluginFailed,
        UnattributedReason::Incomplete => ReasonMsg::Incomplete,
    }
}

fn reason_from_msg(r: ReasonMsg) -> UnattributedReason {
    match r {
        ReasonMsg::NotFound => UnattributedReason::NotFound,
        ReasonMsg::SourceUnavailable => UnattributedReason::SourceUnavailable,
        ReasonMsg::Conflict => UnattributedReason::Conflict,
        ReasonMsg::Gap => UnattributedReason::Gap,
        ReasonMsg::Expired => UnattributedReason::Expired,
        ReasonMsg::ClockSkew => UnattributedReason::ClockSkew,
        ReasonMsg::PluginFailed => UnattributedReason::PluginFailed,
        ReasonMsg::Incomplete => UnattributedReason::Incomplete,
    }
}
