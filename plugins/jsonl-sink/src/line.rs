//! One attributed flow as one JSON object: the shape documented in the
//! crate's README. Keys are always written in the same order; optional
//! workload attributes are left out when unknown.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use flowattr_sdk::{
    AttributedFlow, Attribution, AttributionSource, FlowEnd, Initiator, Protocol, Side, TimeRange,
    Workload, WorkloadDictionary, community_id, record_id_hex,
};

use crate::config::{Config, TimeFormat};
use crate::text;

/// The keys whose names depend on the time format, each with the
/// punctuation before it.
struct TimeKeys {
    start: &'static [u8],
    end: &'static [u8],
    valid_from: &'static [u8],
    valid_until: &'static [u8],
}

const NS_KEYS: TimeKeys = TimeKeys {
    start: b"{\"start_ns\":",
    end: b",\"end_ns\":",
    valid_from: b",\"valid_from_ns\":",
    valid_until: b",\"valid_until_ns\":",
};

const RFC3339_KEYS: TimeKeys = TimeKeys {
    start: b"{\"start\":",
    end: b",\"end\":",
    valid_from: b",\"valid_from\":",
    valid_until: b",\"valid_until\":",
};

/// Writes flows as lines, per a [`Config`].
pub(crate) struct LineWriter {
    include_process: bool,
    time_format: TimeFormat,
    keys: &'static TimeKeys,
}

impl LineWriter {
    pub fn new(config: Config) -> Self {
        Self {
            include_process: config.include_process,
            time_format: config.time_format,
            keys: match config.time_format {
                TimeFormat::Ns => &NS_KEYS,
                TimeFormat::Rfc3339 => &RFC3339_KEYS,
            },
        }
    }

    #[inline]
    fn time(&self, out: &mut Vec<u8>, ns: u64) {
        match self.time_format {
            TimeFormat::Ns => text::u64(out, ns),
            TimeFormat::Rfc3339 => text::rfc3339(out, ns),
        }
    }

    /// Writes one flow and its newline.
    pub fn flow<'a>(&self, out: &mut Vec<u8>, f: &'a AttributedFlow, seen: &mut Workloads<'a>) {
        let flow = &f.flow;
        out.extend_from_slice(self.keys.start);
        self.time(out, flow.start_ns);
        out.extend_from_slice(self.keys.end);
        self.time(out, flow.end_ns);
        out.extend_from_slice(match flow.protocol {
            Protocol::Tcp => b",\"protocol\":\"tcp\"",
            Protocol::Udp => b",\"protocol\":\"udp\"",
        });
        out.extend_from_slice(match flow.initiator {
            Initiator::Local => b",\"initiator\":\"local\"",
            Initiator::Remote => b",\"initiator\":\"remote\"",
            Initiator::Unknown => b",\"initiator\":\"unknown\"",
        });
        out.extend_from_slice(match flow.end_state {
            FlowEnd::Closed => b",\"end_state\":\"closed\"",
            FlowEnd::Ongoing => b",\"end_state\":\"ongoing\"",
            FlowEnd::Refused => b",\"end_state\":\"refused\"",
            FlowEnd::Reset => b",\"end_state\":\"reset\"",
            FlowEnd::Failed => b",\"end_state\":\"failed\"",
        });
        out.extend_from_slice(b",\"local\":");
        self.side(out, flow.local, &f.local, seen);
        out.extend_from_slice(b",\"remote\":");
        self.side(out, flow.remote, &f.remote, seen);
        out.extend_from_slice(b",\"bytes_sent\":");
        text::u64(out, flow.bytes_sent);
        out.extend_from_slice(b",\"bytes_received\":");
        text::u64(out, flow.bytes_received);
        out.extend_from_slice(b",\"packets_sent\":");
        text::u64(out, flow.packets_sent);
        out.extend_from_slice(b",\"packets_received\":");
        text::u64(out, flow.packets_received);
        out.extend_from_slice(b",\"retransmits\":");
        text::u64(out, flow.retransmits.into());
        out.extend_from_slice(b",\"srtt_us\":");
        text::u64(out, flow.srtt_us.into());
        if self.include_process {
            out.extend_from_slice(b",\"pid\":");
            text::u64(out, flow.pid.into());
            out.extend_from_slice(b",\"cgroup_id\":");
            text::u64(out, flow.cgroup_id);
            out.extend_from_slice(b",\"netns_id\":");
            text::u64(out, flow.netns_id);
        }
        out.extend_from_slice(b",\"weight\":");
        text::u64(out, f.weight.into());
        out.extend_from_slice(b",\"record_id\":");
        if f.record_id == 0 {
            out.extend_from_slice(b"null");
        } else {
            out.push(b'"');
            out.extend_from_slice(&record_id_hex(f.record_id));
            out.push(b'"');
        }
        out.extend_from_slice(b",\"community_id\":");
        match community_id(flow) {
            Some(id) => {
                out.push(b'"');
                out.extend_from_slice(id.as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b"}\n");
    }

    /// `{"ip":…,"port":…,` then the attribution or the reason there is none.
    fn side<'a>(
        &self,
        out: &mut Vec<u8>,
        endpoint: SocketAddr,
        side: &'a Side,
        seen: &mut Workloads<'a>,
    ) {
        out.extend_from_slice(b"{\"ip\":\"");
        match endpoint.ip() {
            IpAddr::V4(a) => text::ipv4(out, a),
            IpAddr::V6(a) => text::ipv6(out, a),
        }
        out.extend_from_slice(b"\",\"port\":");
        text::u64(out, endpoint.port().into());
        match side {
            Side::Attributed(a) => self.attribution(out, a, seen),
            Side::Unattributed(reason) => {
                out.extend_from_slice(b",\"unattributed\":\"");
                out.extend_from_slice(reason.as_str().as_bytes());
                out.push(b'"');
            }
            Side::Pending => out.extend_from_slice(b",\"unattributed\":\"pending\""),
        }
        out.push(b'}');
    }

    fn attribution<'a>(&self, out: &mut Vec<u8>, a: &'a Attribution, seen: &mut Workloads<'a>) {
        out.extend_from_slice(b",\"workload\":");
        seen.write(out, &a.workload);
        out.extend_from_slice(match a.source {
            AttributionSource::Capture => b",\"source\":\"capture\"",
            AttributionSource::Heartbeat => b",\"source\":\"heartbeat\"",
            AttributionSource::Resolver => b",\"source\":\"resolver\"",
            AttributionSource::Counterpart => b",\"source\":\"counterpart\"",
            AttributionSource::CaptureShared => b",\"source\":\"capture-shared\"",
        });
        out.extend_from_slice(b",\"plugin\":");
        text::string(out, &a.plugin);
        out.extend_from_slice(self.keys.valid_from);
        self.time(out, a.valid.start_ns);
        out.extend_from_slice(self.keys.valid_until);
        if a.valid.end_ns == TimeRange::OPEN_END {
            out.extend_from_slice(b"null");
        } else {
            self.time(out, a.valid.end_ns);
        }
    }
}

/// The workloads of one batch already written: each distinct workload's
/// JSON object is built once and copied for every later flow.
#[derive(Default)]
pub(crate) struct Workloads<'a> {
    dictionary: WorkloadDictionary<'a>,
    /// Each listed workload's object in `json`, by index.
    ranges: Vec<(usize, usize)>,
    json: Vec<u8>,
}

impl<'a> Workloads<'a> {
    fn write(&mut self, out: &mut Vec<u8>, w: &'a Arc<Workload>) {
        let (index, new) = self.dictionary.insert(w);
        if new {
            let start = self.json.len();
            workload(&mut self.json, w);
            self.ranges.push((start, self.json.len()));
        }
        let (start, end) = self.ranges[index as usize];
        out.extend_from_slice(&self.json[start..end]);
    }
}

/// `{"id":…}` plus each known attribute, then `labels` if there are any:
/// the same object the domain model serialises a workload to.
fn workload(out: &mut Vec<u8>, w: &Workload) {
    out.extend_from_slice(b"{\"id\":");
    text::string(out, &w.id);
    for (key, value) in [
        (&b",\"app\":"[..], &w.app),
        (b",\"cluster\":", &w.cluster),
        (b",\"stack\":", &w.stack),
        (b",\"account\":", &w.account),
        (b",\"region\":", &w.region),
    ] {
        if let Some(v) = value {
            out.extend_from_slice(key);
            text::string(out, v);
        }
    }
    if !w.labels.is_empty() {
        out.extend_from_slice(b",\"labels\":{");
        for (i, (k, v)) in w.labels.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            text::string(out, k);
            out.push(b':');
            text::string(out, v);
        }
        out.push(b'}');
    }
    out.push(b'}');
}
