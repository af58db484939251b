//! A strict reader of what the sink writes, for tests and tools: decodes a
//! chunk with the official messages and turns each `LogRecord` back into
//! the flow it came from, refusing any attribute that is unknown, missing,
//! repeated, of the wrong type or inconsistent with the others (the
//! derived `network.io.*` sums and `flowattr.community_id`).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use flowattr_sdk::{
    AttributedFlow, Attribution, AttributionSource, Flow, FlowEnd, Initiator, Protocol, Side,
    TimeRange, UnattributedReason, Workload, community_id,
};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;

use crate::keys::{self, SideKeys};
use crate::record;

/// Decodes `chunk` (empty is no flows) and reads every record.
pub fn read_chunk(chunk: &[u8]) -> Result<Vec<AttributedFlow>, String> {
    let request = ExportLogsServiceRequest::decode(chunk).map_err(|e| e.to_string())?;
    read_request(&request)
}

/// Reads every record of `request`, in order.
pub fn read_request(request: &ExportLogsServiceRequest) -> Result<Vec<AttributedFlow>, String> {
    let mut flows = Vec::new();
    for resource in &request.resource_logs {
        for scope in &resource.scope_logs {
            let name = scope.scope.as_ref().map(|s| s.name.as_str());
            if name != Some(keys::SCOPE_NAME) {
                return Err(format!("scope {name:?} is not {}", keys::SCOPE_NAME));
            }
            for (i, r) in scope.log_records.iter().enumerate() {
                flows.push(read_record(r).map_err(|e| format!("record {i}: {e}"))?);
            }
        }
    }
    Ok(flows)
}

/// A record's attributes by key, taken as they are read.
struct Attributes<'a>(HashMap<&'a str, &'a Value>);

impl<'a> Attributes<'a> {
    fn take(&mut self, key: &str) -> Option<&'a Value> {
        self.0.remove(key)
    }
    fn text(&mut self, key: &str) -> Result<&'a str, String> {
        self.text_opt(key)?.ok_or_else(|| format!("{key} missing"))
    }
    fn text_opt(&mut self, key: &str) -> Result<Option<&'a str>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::StringValue(s)) => Ok(Some(s)),
            Some(other) => Err(format!("{key} is not a string: {other:?}")),
        }
    }
    fn int(&mut self, key: &str) -> Result<u64, String> {
        self.int_opt(key)?.ok_or_else(|| format!("{key} missing"))
    }
    fn int_opt(&mut self, key: &str) -> Result<Option<u64>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(Value::IntValue(n)) => Ok(Some(*n as u64)),
            Some(other) => Err(format!("{key} is not an integer: {other:?}")),
        }
    }
    fn small<T: TryFrom<u64>>(&mut self, key: &str) -> Result<T, String> {
        T::try_from(self.int(key)?).map_err(|_| format!("{key} out of range"))
    }
    fn address(&mut self, key: &str, port: &str) -> Result<SocketAddr, String> {
        let ip: IpAddr = self.text(key)?.parse().map_err(|e| format!("{key}: {e}"))?;
        Ok(SocketAddr::new(ip, self.small(port)?))
    }
}

fn pick<T: Copy>(
    key: &str,
    text: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<T, String> {
    all.iter()
        .copied()
        .find(|&v| name(v) == text)
        .ok_or_else(|| format!("{key}: unknown value {text:?}"))
}

const REASONS: [UnattributedReason; 8] = [
    UnattributedReason::NotFound,
    UnattributedReason::SourceUnavailable,
    UnattributedReason::Conflict,
    UnattributedReason::Gap,
    UnattributedReason::Expired,
    UnattributedReason::ClockSkew,
    UnattributedReason::PluginFailed,
    UnattributedReason::Incomplete,
];

const SOURCES: [AttributionSource; 5] = [
    AttributionSource::Capture,
    AttributionSource::Heartbeat,
    AttributionSource::Resolver,
    AttributionSource::Counterpart,
    AttributionSource::CaptureShared,
];

/// One record back into its flow. A record without `flowattr.pid` reads
/// with the process fields 0 (`include_process = false`).
pub fn read_record(r: &LogRecord) -> Result<AttributedFlow, String> {
    if r.event_name != keys::EVENT_NAME {
        return Err(format!("event_name {:?}", r.event_name));
    }
    let mut map = HashMap::new();
    for kv in &r.attributes {
        let value = kv
            .value
            .as_ref()
            .and_then(|v| v.value.as_ref())
            .ok_or_else(|| format!("{} has no value", kv.key))?;
        if map.insert(kv.key.as_str(), value).is_some() {
            return Err(format!("{} repeated", kv.key));
        }
    }
    let mut a = Attributes(map);
    let initiator = pick(
        keys::INITIATOR,
        a.text(keys::INITIATOR)?,
        &Initiator::ALL,
        record::initiator,
    )?;
    let source = a.address(keys::SOURCE_ADDRESS, keys::SOURCE_PORT)?;
    let destination = a.address(keys::DESTINATION_ADDRESS, keys::DESTINATION_PORT)?;
    let (local, remote) = if initiator == Initiator::Remote {
        (destination, source)
    } else {
        (source, destination)
    };
    let protocol = pick(
        keys::NETWORK_TRANSPORT,
        a.text(keys::NETWORK_TRANSPORT)?,
        &[Protocol::Tcp, Protocol::Udp],
        record::transport,
    )?;
    let family = a.text(keys::NETWORK_TYPE)?;
    if family != if source.is_ipv4() { "ipv4" } else { "ipv6" } {
        return Err(format!("network.type {family} for {source}"));
    }
    let process = a.int_opt(keys::PID)?;
    let mut flow = Flow {
        protocol,
        local,
        remote,
        initiator,
        end_state: pick(
            keys::END_STATE,
            a.text(keys::END_STATE)?,
            &FlowEnd::ALL,
            record::end_state,
        )?,
        start_ns: a.int(keys::NETWORK_FLOW_START)?,
        end_ns: a.int(keys::NETWORK_FLOW_END)?,
        bytes_sent: a.int(keys::BYTES_SENT)?,
        bytes_received: a.int(keys::BYTES_RECEIVED)?,
        packets_sent: a.int(keys::PACKETS_SENT)?,
        packets_received: a.int(keys::PACKETS_RECEIVED)?,
        retransmits: a.small(keys::RETRANSMITS)?,
        srtt_us: a.small(keys::SRTT_US)?,
        cgroup_id: 0,
        netns_id: 0,
        pid: 0,
    };
    if let Some(pid) = process {
        flow.pid = u32::try_from(pid).map_err(|_| "flowattr.pid out of range")?;
        flow.cgroup_id = a.int(keys::CGROUP_ID)?;
        flow.netns_id = a.int(keys::NETNS_ID)?;
    }
    if (r.time_unix_nano, r.observed_time_unix_nano) != (flow.start_ns, flow.end_ns) {
        return Err("record times differ from network.flow.start/end".into());
    }
    let bytes = flow.bytes_sent.saturating_add(flow.bytes_received);
    let packets = flow.packets_sent.saturating_add(flow.packets_received);
    if a.int(keys::NETWORK_IO_BYTES)? != bytes || a.int(keys::NETWORK_IO_PACKETS)? != packets {
        return Err("network.io.* is not the sum of both directions".into());
    }
    let weight = a.small(keys::WEIGHT)?;
    let record_id = match a.text_opt(keys::RECORD_ID)? {
        None => 0,
        Some(hex) if hex.len() == 16 => {
            u64::from_str_radix(hex, 16).map_err(|e| format!("record_id: {e}"))?
        }
        Some(hex) => return Err(format!("record_id {hex:?}")),
    };
    let community = a.text_opt(keys::COMMUNITY_ID)?;
    if community != community_id(&flow).as_ref().map(|c| c.as_str()) {
        return Err(format!("community_id {community:?} is not the flow's"));
    }
    let local = read_side(&mut a, &keys::LOCAL)?;
    let remote = read_side(&mut a, &keys::REMOTE)?;
    if let Some(key) = a.0.keys().next() {
        return Err(format!("unknown attribute {key}"));
    }
    Ok(AttributedFlow {
        flow,
        local,
        remote,
        weight,
        record_id,
    })
}

fn read_side(a: &mut Attributes, keys: &SideKeys) -> Result<Side, String> {
    match a.text(keys.status)? {
        "unattributed" => Ok(match a.text(keys.reason)? {
            "pending" => Side::Pending,
            reason => {
                Side::Unattributed(pick(keys.reason, reason, &REASONS, record::unattributed)?)
            }
        }),
        "attributed" => {
            let [id, app, cluster, stack, account, region] = keys.workload;
            let mut w = Workload::with_id(a.text(id)?);
            w.app = a.text_opt(app)?.map(Into::into);
            w.cluster = a.text_opt(cluster)?.map(Into::into);
            w.stack = a.text_opt(stack)?.map(Into::into);
            w.account = a.text_opt(account)?.map(Into::into);
            w.region = a.text_opt(region)?.map(Into::into);
            let labels: Vec<&str> =
                a.0.keys()
                    .filter(|k| k.starts_with(keys.label))
                    .copied()
                    .collect();
            let mut map = BTreeMap::new();
            for key in labels {
                let value = a.text(key)?;
                map.insert(key[keys.label.len()..].to_owned(), value.to_owned());
            }
            w.labels = map;
            let source = pick(
                keys.source,
                a.text(keys.source)?,
                &SOURCES,
                record::attribution_source,
            )?;
            Ok(Side::Attributed(Attribution {
                workload: Arc::new(w),
                source,
                plugin: a.text(keys.plugin)?.into(),
                valid: TimeRange::new(
                    a.int(keys.valid_from)?,
                    a.int_opt(keys.valid_until)?.unwrap_or(TimeRange::OPEN_END),
                ),
            }))
        }
        other => Err(format!("{}: {other:?}", keys.status)),
    }
}
