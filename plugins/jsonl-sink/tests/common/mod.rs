//! Shared by the tests: varied flows from a seeded generator, and a strict
//! reader that turns a line back into an `AttributedFlow` while checking it
//! has exactly the documented keys.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use flowattr_sdk::{
    AttributedFlow, Attribution, AttributionSource, Flow, FlowEnd, Initiator, Protocol, Side,
    TimeRange, UnattributedReason, Workload,
};
use serde_json::{Map, Value};

/// splitmix64: a small, seeded, dependency-free generator.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A counter that is usually small but sometimes at the edges.
    fn counter(&mut self) -> u64 {
        match self.below(10) {
            0 => 0,
            1 => u64::MAX,
            2 => self.next(),
            _ => self.below(100_000),
        }
    }
}

const REASONS: [UnattributedReason; 7] = [
    UnattributedReason::NotFound,
    UnattributedReason::SourceUnavailable,
    UnattributedReason::Conflict,
    UnattributedReason::Gap,
    UnattributedReason::Expired,
    UnattributedReason::ClockSkew,
    UnattributedReason::PluginFailed,
];

/// Strings a JSON writer must escape, and some it must not touch.
const AWKWARD: [&str; 7] = [
    "",
    "quote\"inside",
    "back\\slash",
    "line\nbreak\ttab\r",
    "ctl\u{1}\u{1f}\u{7f}",
    "ünïcødé 😀 /slash/",
    "plain",
];

/// `n` workloads, some with every attribute and labels, some with only an id.
pub fn workloads(rng: &mut Rng, n: usize) -> Vec<Arc<Workload>> {
    (0..n)
        .map(|i| {
            let mut w = Workload::with_id(format!("container-{i:04}-{}", rng.below(1 << 20)));
            let opt = |rng: &mut Rng, s: String| (rng.below(4) != 0).then_some(s);
            w.app = opt(rng, format!("app-{}", i % 7));
            w.cluster = opt(rng, format!("app-{}-prod-v{}", i % 7, i % 3));
            w.stack = opt(rng, "prod".into());
            let account = format!("{:012}", rng.below(1_000_000_000_000));
            w.account = opt(rng, account);
            let region = rng.pick(&["us-east-1", "eu-west-1"]).to_string();
            w.region = opt(rng, region);
            if i % 3 == 0 {
                let labels: BTreeMap<_, _> = (0..rng.below(4))
                    .map(|j| {
                        (
                            format!("k{j}-{}", rng.pick(&AWKWARD)),
                            rng.pick(&AWKWARD).to_string(),
                        )
                    })
                    .collect();
                w.labels = labels;
            }
            if i % 11 == 5 {
                w.id = format!("odd {}", rng.pick(&AWKWARD));
            }
            Arc::new(w)
        })
        .collect()
}

fn address(rng: &mut Rng) -> IpAddr {
    match rng.below(8) {
        0 => IpAddr::V6(Ipv6Addr::from(
            rng.next() as u128 | ((rng.next() as u128) << 64),
        )),
        1 => IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0x10,
            0,
            0,
            0,
            0,
            rng.below(8) as u16,
            1,
        )),
        2 => IpAddr::V6(Ipv4Addr::from(rng.next() as u32).to_ipv6_mapped()),
        3 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::new(
            10,
            rng.below(4) as u8,
            rng.below(256) as u8,
            rng.below(256) as u8,
        )),
    }
}

fn side(rng: &mut Rng, workloads: &[Arc<Workload>], plugins: &[&str]) -> Side {
    match rng.below(10) {
        0 => Side::Pending,
        1 | 2 => Side::Unattributed(*rng.pick(&REASONS)),
        _ => {
            let start = 1_700_000_000_000_000_000 + rng.below(1 << 40);
            let end = match rng.below(3) {
                0 => TimeRange::OPEN_END,
                _ => start + rng.below(1 << 36),
            };
            Side::Attributed(Attribution {
                workload: rng.pick(workloads).clone(),
                source: *rng.pick(&[
                    AttributionSource::Capture,
                    AttributionSource::Heartbeat,
                    AttributionSource::Resolver,
                    AttributionSource::Counterpart,
                    AttributionSource::CaptureShared,
                ]),
                plugin: (*rng.pick(plugins)).into(),
                valid: TimeRange::new(start, end),
            })
        }
    }
}

/// `n` flows drawing on `workloads`: every enum value, every side kind,
/// IPv4, IPv6 and IPv4-mapped addresses, counters at their edges.
pub fn flows(rng: &mut Rng, n: usize, workloads: &[Arc<Workload>]) -> Vec<AttributedFlow> {
    let plugins = ["ipman", "ec2-disk", "sonar-legacy", "", "plugin \"quoted\""];
    let base = 1_714_564_800_000_000_000u64;
    (0..n)
        .map(|i| {
            let start_ns = match rng.below(50) {
                0 => 0,
                1 => u64::MAX,
                _ => base + i as u64 * 1_000_000 + rng.below(1_000_000_000),
            };
            let mut flow = Flow::tcp(
                SocketAddr::new(address(rng), rng.below(65_536) as u16),
                SocketAddr::new(address(rng), *rng.pick(&[443, 80, 8080, 0, 65_535])),
                start_ns,
            );
            flow.end_ns = start_ns.wrapping_add(rng.below(10_000_000_000));
            flow.protocol = *rng.pick(&[Protocol::Tcp, Protocol::Udp]);
            flow.initiator = *rng.pick(&[Initiator::Local, Initiator::Remote, Initiator::Unknown]);
            flow.end_state = *rng.pick(&[
                FlowEnd::Closed,
                FlowEnd::Ongoing,
                FlowEnd::Refused,
                FlowEnd::Reset,
                FlowEnd::Failed,
            ]);
            flow.bytes_sent = rng.counter();
            flow.bytes_received = rng.counter();
            flow.packets_sent = rng.counter();
            flow.packets_received = rng.counter();
            flow.retransmits = rng.counter() as u32;
            flow.srtt_us = rng.counter() as u32;
            flow.pid = rng.counter() as u32;
            flow.cgroup_id = rng.counter();
            flow.netns_id = rng.counter();
            AttributedFlow {
                flow,
                local: side(rng, workloads, &plugins),
                remote: side(rng, workloads, &plugins),
                weight: *rng.pick(&[1, 1, 1, 10, 0, u32::MAX]),
                // Mostly assigned (in a collector), sometimes not (0).
                record_id: match rng.below(5) {
                    0 => 0,
                    1 => u64::MAX,
                    _ => rng.next() | 1,
                },
            }
        })
        .collect()
}

/// How the sink was configured, as the reader needs to know.
#[derive(Clone, Copy)]
pub struct Shape {
    pub rfc3339: bool,
    pub include_process: bool,
}

impl Shape {
    pub const DEFAULT: Shape = Shape {
        rfc3339: false,
        include_process: true,
    };
}

/// Takes `key` out of `obj`, panicking with the key's name if it is absent.
fn take(obj: &mut Map<String, Value>, key: &str) -> Value {
    obj.remove(key)
        .unwrap_or_else(|| panic!("missing key `{key}`"))
}

fn uint(v: Value, key: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("`{key}` is not an unsigned integer: {v}"))
}

fn string(v: Value, key: &str) -> String {
    match v {
        Value::String(s) => s,
        other => panic!("`{key}` is not a string: {other}"),
    }
}

fn time(obj: &mut Map<String, Value>, key: &str, shape: Shape) -> u64 {
    if shape.rfc3339 {
        let text = string(take(obj, key), key);
        assert!(text.ends_with('Z') && text.len() == 30, "`{key}`: {text}");
        let t = humantime::parse_rfc3339(&text).unwrap_or_else(|e| panic!("`{key}`: {text}: {e}"));
        t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
    } else {
        uint(take(obj, &format!("{key}_ns")), key)
    }
}

fn optional_time(obj: &mut Map<String, Value>, key: &str, shape: Shape) -> u64 {
    let full = if shape.rfc3339 {
        key.to_owned()
    } else {
        format!("{key}_ns")
    };
    if obj.get(&full) == Some(&Value::Null) {
        obj.remove(&full);
        return TimeRange::OPEN_END;
    }
    time(obj, key, shape)
}

fn assert_empty(obj: Map<String, Value>, what: &str) {
    assert!(
        obj.is_empty(),
        "{what} has unexpected keys: {:?}",
        obj.keys().collect::<Vec<_>>()
    );
}

fn workload(v: Value) -> Workload {
    let Value::Object(mut obj) = v else {
        panic!("`workload` is not an object: {v}")
    };
    let mut opt = |key: &str| obj.remove(key).map(|v| string(v, key));
    let mut w = Workload {
        id: String::new(),
        app: opt("app"),
        cluster: opt("cluster"),
        stack: opt("stack"),
        account: opt("account"),
        region: opt("region"),
        labels: BTreeMap::new(),
    };
    w.id = string(take(&mut obj, "id"), "id");
    if let Some(labels) = obj.remove("labels") {
        let Value::Object(labels) = labels else {
            panic!("`labels` is not an object")
        };
        assert!(
            !labels.is_empty(),
            "empty labels are left out, not written as {{}}"
        );
        w.labels = labels
            .into_iter()
            .map(|(k, v)| (k, string(v, "label")))
            .collect();
    }
    assert_empty(obj, "workload");
    w
}

fn endpoint_and_side(v: Value, shape: Shape) -> (SocketAddr, Side) {
    let Value::Object(mut obj) = v else {
        panic!("side is not an object: {v}")
    };
    let ip: IpAddr = string(take(&mut obj, "ip"), "ip").parse().unwrap();
    let port = u16::try_from(uint(take(&mut obj, "port"), "port")).unwrap();
    let side = if let Some(reason) = obj.remove("unattributed") {
        match string(reason, "unattributed").as_str() {
            "pending" => Side::Pending,
            r => Side::Unattributed(serde_json::from_value(Value::String(r.into())).unwrap()),
        }
    } else {
        let workload = Arc::new(workload(take(&mut obj, "workload")));
        let source = serde_json::from_value(take(&mut obj, "source")).unwrap();
        let plugin = string(take(&mut obj, "plugin"), "plugin");
        let start = time(&mut obj, "valid_from", shape);
        let end = optional_time(&mut obj, "valid_until", shape);
        Side::Attributed(Attribution {
            workload,
            source,
            plugin: plugin.into(),
            valid: TimeRange::new(start, end),
        })
    };
    assert_empty(obj, "side");
    (SocketAddr::new(ip, port), side)
}

/// Reads one line back into a flow, panicking unless it has exactly the keys
/// the README documents for `shape`. Process fields absent from the line
/// read as 0.
pub fn read_line(line: &str, shape: Shape) -> AttributedFlow {
    let Value::Object(mut obj) = serde_json::from_str(line).unwrap() else {
        panic!("not an object: {line}")
    };
    let start_ns = time(&mut obj, "start", shape);
    let end_ns = time(&mut obj, "end", shape);
    let (local, local_side) = endpoint_and_side(take(&mut obj, "local"), shape);
    let (remote, remote_side) = endpoint_and_side(take(&mut obj, "remote"), shape);
    let mut flow = Flow::tcp(local, remote, start_ns);
    flow.end_ns = end_ns;
    flow.protocol = serde_json::from_value(take(&mut obj, "protocol")).unwrap();
    flow.initiator = serde_json::from_value(take(&mut obj, "initiator")).unwrap();
    flow.end_state = serde_json::from_value(take(&mut obj, "end_state")).unwrap();
    let mut n = |key: &str| uint(take(&mut obj, key), key);
    flow.bytes_sent = n("bytes_sent");
    flow.bytes_received = n("bytes_received");
    flow.packets_sent = n("packets_sent");
    flow.packets_received = n("packets_received");
    flow.retransmits = n("retransmits").try_into().unwrap();
    flow.srtt_us = n("srtt_us").try_into().unwrap();
    if shape.include_process {
        flow.pid = n("pid").try_into().unwrap();
        flow.cgroup_id = n("cgroup_id");
        flow.netns_id = n("netns_id");
    }
    let weight = n("weight").try_into().unwrap();
    let record_id = match take(&mut obj, "record_id") {
        Value::Null => 0,
        v => {
            let hex = string(v, "record_id");
            assert_eq!(hex.len(), 16, "record_id: {hex}");
            assert_eq!(hex, hex.to_lowercase(), "record_id is lower case");
            let id = u64::from_str_radix(&hex, 16).unwrap();
            assert_ne!(id, 0, "an unassigned id is null, not zeros");
            id
        }
    };
    // The Community ID is the one of the endpoints the line names, null
    // exactly where they were blanked.
    let community = match take(&mut obj, "community_id") {
        Value::Null => None,
        v => Some(string(v, "community_id")),
    };
    assert_eq!(
        community,
        flowattr_sdk::community_id(&flow).map(|c| c.to_string()),
        "community_id of {line}"
    );
    assert_empty(obj, "line");
    AttributedFlow {
        flow,
        local: local_side,
        remote: remote_side,
        weight,
        record_id,
    }
}

/// Reads a whole output: one line per flow, each ending in `\n`.
pub fn read_output(bytes: &[u8], shape: Shape) -> Vec<AttributedFlow> {
    let text = std::str::from_utf8(bytes).expect("output is UTF-8");
    if text.is_empty() {
        return Vec::new();
    }
    assert!(text.ends_with('\n'), "the last line ends with a newline");
    text.split_terminator('\n')
        .map(|l| read_line(l, shape))
        .collect()
}

/// What the reader gives back for `flows` when process fields are left out.
pub fn without_process(flows: &[AttributedFlow]) -> Vec<AttributedFlow> {
    flows
        .iter()
        .cloned()
        .map(|mut f| {
            (f.flow.pid, f.flow.cgroup_id, f.flow.netns_id) = (0, 0, 0);
            f
        })
        .collect()
}

/// The same flows with every workload in its own `Arc`, as they arrive
/// inside Wasm.
pub fn unshared(flows: &[AttributedFlow]) -> Vec<AttributedFlow> {
    let own = |side: &Side| match side {
        Side::Attributed(a) => Side::Attributed(Attribution {
            workload: Arc::new((*a.workload).clone()),
            ..a.clone()
        }),
        other => other.clone(),
    };
    flows
        .iter()
        .map(|f| AttributedFlow {
            local: own(&f.local),
            remote: own(&f.remote),
            ..f.clone()
        })
        .collect()
}
