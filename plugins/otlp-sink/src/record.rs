//! One flow → one OTLP `LogRecord`, encoded with the official messages
//! (`opentelemetry-proto`'s prost types) into a reused buffer.
//!
//! A record is its scalar fields (a `LogRecord` without attributes) followed
//! by one `attributes` entry (field 6) per attribute, each a `KeyValue`
//! message: protobuf encodes a repeated field as its entries one after
//! another, so this is the encoding of the whole message. Building every
//! record as a tree of `String`s would cost dozens of allocations a flow
//! (and a chunk's worth of trees in memory); instead two `KeyValue`s (one
//! for text, one for integers) are refilled in place for each attribute,
//! and a workload's attributes are encoded once per chunk and copied.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use flowattr_sdk::{
    AttributedFlow, Attribution, AttributionSource, FlowEnd, Initiator, Protocol, Side, TimeRange,
    UnattributedReason, Workload, WorkloadDictionary, community_id, record_id_hex,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, message};

use crate::keys::{self, SideKeys};

/// `LogRecord.attributes`.
const ATTRIBUTES: u32 = 6;

/// Encodes attributes, refilling two `KeyValue`s in place.
struct Attributes {
    text: KeyValue,
    int: KeyValue,
    /// Scratch for addresses.
    address: String,
}

impl Default for Attributes {
    fn default() -> Self {
        let kv = |value| KeyValue {
            key: String::new(),
            value: Some(AnyValue { value: Some(value) }),
            key_strindex: 0,
        };
        Self {
            text: kv(Value::StringValue(String::new())),
            int: kv(Value::IntValue(0)),
            address: String::new(),
        }
    }
}

fn set_key(kv: &mut KeyValue, key: &str) {
    if kv.key != key {
        kv.key.clear();
        kv.key.push_str(key);
    }
}

impl Attributes {
    fn text(&mut self, out: &mut Vec<u8>, key: &str, value: &str) {
        set_key(&mut self.text, key);
        if let Some(AnyValue {
            value: Some(Value::StringValue(s)),
        }) = &mut self.text.value
        {
            s.clear();
            s.push_str(value);
        }
        message::encode(ATTRIBUTES, &self.text, out);
    }

    /// OTLP integers are signed 64-bit: a `u64` above `i64::MAX` keeps its
    /// bits (read it back as unsigned).
    fn int(&mut self, out: &mut Vec<u8>, key: &str, value: u64) {
        set_key(&mut self.int, key);
        self.int.value = Some(AnyValue {
            value: Some(Value::IntValue(value as i64)),
        });
        message::encode(ATTRIBUTES, &self.int, out);
    }

    fn address(&mut self, out: &mut Vec<u8>, key: &str, address: &SocketAddr) {
        let mut text = std::mem::take(&mut self.address);
        text.clear();
        // std writes IPv6 in RFC 5952 form (IPv4-mapped as ::ffff:a.b.c.d).
        let _ = write!(text, "{}", address.ip());
        self.text(out, key, &text);
        self.address = text;
    }
}

/// Encodes flows as records; one per sink instance, reused across chunks.
#[derive(Default)]
pub struct RecordWriter {
    include_process: bool,
    record: LogRecord,
    attributes: Attributes,
    /// One record's encoding, before its length is known.
    scratch: Vec<u8>,
}

/// The workloads one chunk has already encoded: each distinct workload's
/// attributes once per side, copied into every later record.
#[derive(Default)]
pub struct Workloads<'a> {
    dictionary: WorkloadDictionary<'a>,
    /// By dictionary index: the byte range in `bytes` of its local and
    /// remote encodings, once made.
    ranges: Vec<[Option<(usize, usize)>; 2]>,
    bytes: Vec<u8>,
}

impl RecordWriter {
    pub fn new(include_process: bool) -> Self {
        Self {
            include_process,
            record: LogRecord {
                event_name: keys::EVENT_NAME.into(),
                ..LogRecord::default()
            },
            ..Self::default()
        }
    }

    /// Appends `f` to `out` as field `tag` (a length-delimited `LogRecord`).
    pub fn write<'a>(
        &mut self,
        out: &mut Vec<u8>,
        tag: u32,
        f: &'a AttributedFlow,
        workloads: &mut Workloads<'a>,
    ) {
        let flow = &f.flow;
        let body = &mut self.scratch;
        body.clear();
        self.record.time_unix_nano = flow.start_ns;
        self.record.observed_time_unix_nano = flow.end_ns;
        self.record
            .encode(body)
            .expect("a Vec grows to take any message");

        // Local is the source unless the remote end connected (see the
        // crate documentation).
        let (source, destination) = if flow.initiator == Initiator::Remote {
            (&flow.remote, &flow.local)
        } else {
            (&flow.local, &flow.remote)
        };
        let a = &mut self.attributes;
        a.address(body, keys::SOURCE_ADDRESS, source);
        a.int(body, keys::SOURCE_PORT, source.port().into());
        a.address(body, keys::DESTINATION_ADDRESS, destination);
        a.int(body, keys::DESTINATION_PORT, destination.port().into());
        a.text(body, keys::NETWORK_TRANSPORT, transport(flow.protocol));
        let family = if source.is_ipv4() { "ipv4" } else { "ipv6" };
        a.text(body, keys::NETWORK_TYPE, family);
        let bytes = flow.bytes_sent.saturating_add(flow.bytes_received);
        a.int(body, keys::NETWORK_IO_BYTES, bytes);
        let packets = flow.packets_sent.saturating_add(flow.packets_received);
        a.int(body, keys::NETWORK_IO_PACKETS, packets);
        a.int(body, keys::NETWORK_FLOW_START, flow.start_ns);
        a.int(body, keys::NETWORK_FLOW_END, flow.end_ns);

        a.text(body, keys::INITIATOR, initiator(flow.initiator));
        a.text(body, keys::END_STATE, end_state(flow.end_state));
        a.int(body, keys::BYTES_SENT, flow.bytes_sent);
        a.int(body, keys::BYTES_RECEIVED, flow.bytes_received);
        a.int(body, keys::PACKETS_SENT, flow.packets_sent);
        a.int(body, keys::PACKETS_RECEIVED, flow.packets_received);
        a.int(body, keys::RETRANSMITS, flow.retransmits.into());
        a.int(body, keys::SRTT_US, flow.srtt_us.into());
        if self.include_process {
            a.int(body, keys::PID, flow.pid.into());
            a.int(body, keys::CGROUP_ID, flow.cgroup_id);
            a.int(body, keys::NETNS_ID, flow.netns_id);
        }
        a.int(body, keys::WEIGHT, f.weight.into());
        if f.record_id != 0 {
            let hex = record_id_hex(f.record_id);
            a.text(
                body,
                keys::RECORD_ID,
                std::str::from_utf8(&hex).expect("hex digits"),
            );
        }
        if let Some(id) = community_id(flow) {
            a.text(body, keys::COMMUNITY_ID, id.as_str());
        }

        side(a, body, &keys::LOCAL, 0, &f.local, workloads);
        side(a, body, &keys::REMOTE, 1, &f.remote, workloads);

        encode_key(tag, WireType::LengthDelimited, out);
        encode_varint(body.len() as u64, out);
        out.extend_from_slice(body);
    }
}

fn side<'a>(
    a: &mut Attributes,
    out: &mut Vec<u8>,
    keys: &SideKeys,
    which: usize,
    side: &'a Side,
    workloads: &mut Workloads<'a>,
) {
    match side {
        Side::Attributed(Attribution {
            workload,
            source,
            plugin,
            valid,
        }) => {
            a.text(out, keys.status, "attributed");
            workloads.write(a, out, keys, which, workload);
            a.text(out, keys.source, attribution_source(*source));
            a.text(out, keys.plugin, plugin);
            a.int(out, keys.valid_from, valid.start_ns);
            if valid.end_ns != TimeRange::OPEN_END {
                a.int(out, keys.valid_until, valid.end_ns);
            }
        }
        Side::Unattributed(reason) => {
            a.text(out, keys.status, "unattributed");
            a.text(out, keys.reason, unattributed(*reason));
        }
        Side::Pending => {
            a.text(out, keys.status, "unattributed");
            a.text(out, keys.reason, "pending");
        }
    }
}

impl<'a> Workloads<'a> {
    fn write(
        &mut self,
        a: &mut Attributes,
        out: &mut Vec<u8>,
        keys: &SideKeys,
        which: usize,
        w: &'a Arc<Workload>,
    ) {
        let (index, new) = self.dictionary.insert(w);
        if new {
            self.ranges.push([None, None]);
        }
        let slot = &mut self.ranges[index as usize][which];
        let (start, end) = *slot.get_or_insert_with(|| {
            let start = self.bytes.len();
            workload(a, &mut self.bytes, keys, w);
            (start, self.bytes.len())
        });
        out.extend_from_slice(&self.bytes[start..end]);
    }
}

/// The workload's id, each attribute it has, then each label.
fn workload(a: &mut Attributes, out: &mut Vec<u8>, keys: &SideKeys, w: &Workload) {
    let [id, app, cluster, stack, account, region] = &keys.workload;
    a.text(out, id, &w.id);
    for (key, value) in [
        (app, &w.app),
        (cluster, &w.cluster),
        (stack, &w.stack),
        (account, &w.account),
        (region, &w.region),
    ] {
        if let Some(v) = value {
            a.text(out, key, v);
        }
    }
    let mut key = String::new();
    for (k, v) in &w.labels {
        key.clear();
        key.push_str(keys.label);
        key.push_str(k);
        a.text(out, &key, v);
    }
}

pub fn transport(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

pub fn initiator(i: Initiator) -> &'static str {
    match i {
        Initiator::Local => "local",
        Initiator::Remote => "remote",
        Initiator::Unknown => "unknown",
    }
}

pub fn end_state(e: FlowEnd) -> &'static str {
    match e {
        FlowEnd::Closed => "closed",
        FlowEnd::Ongoing => "ongoing",
        FlowEnd::Refused => "refused",
        FlowEnd::Reset => "reset",
        FlowEnd::Failed => "failed",
    }
}

pub fn attribution_source(s: AttributionSource) -> &'static str {
    match s {
        AttributionSource::Capture => "capture",
        AttributionSource::Heartbeat => "heartbeat",
        AttributionSource::Resolver => "resolver",
        AttributionSource::Counterpart => "counterpart",
        AttributionSource::CaptureShared => "capture-shared",
    }
}

pub fn unattributed(r: UnattributedReason) -> &'static str {
    match r {
        UnattributedReason::NotFound => "not-found",
        UnattributedReason::SourceUnavailable => "source-unavailable",
        UnattributedReason::Conflict => "conflict",
        UnattributedReason::Gap => "gap",
        UnattributedReason::Expired => "expired",
        UnattributedReason::ClockSkew => "clock-skew",
        UnattributedReason::PluginFailed => "plugin-failed",
        UnattributedReason::Incomplete => "incomplete",
    }
}
