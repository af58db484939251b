//! Flows for the tests and the benchmark: `varied` reaches every value the
//! format must carry (edges included); `realistic` looks like one
//! collector's batch, for sizes and speeds that mean something.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use flowattr_sdk::{
    AttributedFlow, Attribution, AttributionSource, Flow, FlowEnd, Initiator, Protocol, Side,
    TimeRange, UnattributedReason, Workload,
};

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

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// Roughly log-uniform in `[lo, hi)`.
    pub fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let (lo_f, hi_f) = ((lo as f64).ln(), (hi as f64).ln());
        let x = lo_f + (hi_f - lo_f) * (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        x.exp() as u64
    }

    /// Usually small, sometimes 0, u64::MAX or anything.
    fn edgy(&mut self) -> u64 {
        match self.below(10) {
            0 => 0,
            1 => u64::MAX,
            2 => self.next(),
            _ => self.below(100_000),
        }
    }
}

pub const REASONS: [UnattributedReason; 7] = [
    UnattributedReason::NotFound,
    UnattributedReason::SourceUnavailable,
    UnattributedReason::Conflict,
    UnattributedReason::Gap,
    UnattributedReason::Expired,
    UnattributedReason::ClockSkew,
    UnattributedReason::PluginFailed,
];

const ODD: [&str; 6] = [
    "",
    "quote\"",
    "new\nline",
    "ünï 😀",
    "nul\u{0}byte",
    "plain",
];

/// Workloads with every combination of present attributes and some labels.
fn odd_workloads(rng: &mut Rng, n: usize) -> Vec<Arc<Workload>> {
    (0..n)
        .map(|i| {
            let mask = rng.below(32);
            let attr = |bit: u64, s: String| (mask >> bit & 1 == 1).then_some(s);
            Arc::new(Workload {
                id: format!("w{i}-{}", rng.pick(&ODD)),
                app: attr(0, format!("app{i}")),
                cluster: attr(1, rng.pick(&ODD).to_string()),
                stack: attr(2, "prod".into()),
                account: attr(3, "123456789012".into()),
                region: attr(4, "eu-west-1".into()),
                labels: (0..rng.below(4))
                    .map(|j| {
                        (
                            format!("k{j}{}", rng.pick(&ODD)),
                            rng.pick(&ODD).to_string(),
                        )
                    })
                    .collect::<BTreeMap<_, _>>(),
            })
        })
        .collect()
}

fn odd_address(rng: &mut Rng) -> IpAddr {
    match rng.below(6) {
        0 => IpAddr::V6(Ipv6Addr::from(
            u128::from(rng.next()) << 64 | u128::from(rng.next()),
        )),
        1 => IpAddr::V6(Ipv4Addr::from(rng.next() as u32).to_ipv6_mapped()),
        2 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        3 => IpAddr::V4(Ipv4Addr::BROADCAST),
        _ => IpAddr::V4(Ipv4Addr::from(rng.next() as u32)),
    }
}

fn odd_side(rng: &mut Rng, workloads: &[Arc<Workload>]) -> Side {
    match rng.below(10) {
        0 => Side::Pending,
        1 | 2 => Side::Unattributed(rng.pick(&REASONS)),
        _ => {
            let start_ns = rng.edgy();
            Side::Attributed(Attribution {
                workload: workloads[rng.below(workloads.len() as u64) as usize].clone(),
                source: rng.pick(&[
                    AttributionSource::Capture,
                    AttributionSource::Heartbeat,
                    AttributionSource::Resolver,
                    AttributionSource::Counterpart,
                    AttributionSource::CaptureShared,
                ]),
                plugin: rng.pick(&["ipman", "", "sonar-legacy", "ünï"]).into(),
                valid: {
                    let ends = [TimeRange::OPEN_END, start_ns.wrapping_add(1), rng.edgy()];
                    TimeRange::new(start_ns, rng.pick(&ends))
                },
            })
        }
    }
}

/// `n` flows over `n_workloads` workloads reaching every enum value, side
/// kind, address family and field edge (0, u64::MAX, times out of order).
pub fn varied(seed: u64, n: usize, n_workloads: usize) -> Vec<AttributedFlow> {
    let mut rng = Rng::new(seed);
    let workloads = odd_workloads(&mut rng, n_workloads.max(1));
    (0..n)
        .map(|_| {
            let start_ns = match rng.below(4) {
                0 => rng.next(),
                _ => 1_714_564_800_000_000_000 + rng.below(10_000_000_000),
            };
            let mut flow = Flow::tcp(
                SocketAddr::new(odd_address(&mut rng), rng.next() as u16),
                SocketAddr::new(odd_address(&mut rng), rng.pick(&[0, 443, 65_535])),
                start_ns,
            );
            let ends = [
                start_ns,
                start_ns.wrapping_add(rng.below(1 << 40)),
                rng.next(),
            ];
            flow.end_ns = rng.pick(&ends);
            flow.protocol = rng.pick(&[Protocol::Tcp, Protocol::Udp]);
            flow.initiator = rng.pick(&[Initiator::Local, Initiator::Remote, Initiator::Unknown]);
            flow.end_state = rng.pick(&[
                FlowEnd::Closed,
                FlowEnd::Ongoing,
                FlowEnd::Refused,
                FlowEnd::Reset,
                FlowEnd::Failed,
            ]);
            flow.bytes_sent = rng.edgy();
            flow.bytes_received = rng.edgy();
            flow.packets_sent = rng.edgy();
            flow.packets_received = rng.edgy();
            flow.retransmits = rng.edgy() as u32;
            flow.srtt_us = rng.edgy() as u32;
            flow.pid = rng.edgy() as u32;
            flow.cgroup_id = rng.edgy();
            flow.netns_id = rng.edgy();
            AttributedFlow {
                flow,
                local: odd_side(&mut rng, &workloads),
                remote: odd_side(&mut rng, &workloads),
                weight: rng.pick(&[1, 1, 10, 0, u32::MAX]),
                record_id: match rng.below(4) {
                    0 => 0,
                    1 => 1,
                    2 => u64::MAX,
                    _ => rng.next(),
                },
            }
        })
        .collect()
}

/// One workload of a realistic fleet: its identity and where it lives.
struct Host {
    workload: Arc<Workload>,
    ip: IpAddr,
    since_ns: u64,
    pid: u32,
    cgroup_id: u64,
    netns_id: u64,
}

const APPS: [&str; 10] = [
    "api-gateway",
    "playback",
    "search",
    "billing",
    "recommendations",
    "identity",
    "catalog",
    "edge-proxy",
    "metrics-ingest",
    "notifications",
];

/// Start of the realistic batch's 10-second window.
pub const BATCH_START_NS: u64 = 1_714_564_800_000_000_000;

/// A batch as one collector would format it: `n` flows closed within ten
/// seconds by `n_workloads` workloads (IPv4, a quarter also IPv6), local
/// sides attributed at capture by ipman, remote sides mostly by heartbeat
/// ranges, some through the legacy resolver (load balancers), some external
/// (not found) and a few expired or in a gap.
pub fn realistic(seed: u64, n: usize, n_workloads: usize) -> Vec<AttributedFlow> {
    let mut rng = Rng::new(seed);
    let hosts: Vec<Host> = (0..n_workloads.max(1))
        .map(|i| {
            let app = APPS[i % APPS.len()];
            let ip = if i % 4 == 3 {
                IpAddr::V6(Ipv6Addr::new(
                    0x2600, 0x1f18, 0x41, 0x9d00, 0, 0, 0x10, i as u16,
                ))
            } else {
                IpAddr::V4(Ipv4Addr::new(
                    100,
                    66,
                    (i / 200) as u8,
                    (i % 200) as u8 + 10,
                ))
            };
            let workload = Workload {
                id: format!(
                    "titus-{:08x}-{:04x}-{:012x}",
                    rng.next() as u32,
                    i,
                    rng.next() >> 16
                ),
                app: Some(app.into()),
                cluster: Some(format!("{app}-prod-v{:03}", 40 + i % 7)),
                stack: Some("prod".into()),
                account: Some("149510111645".into()),
                region: Some(["us-east-1", "us-west-2", "eu-west-1"][i % 3].into()),
                labels: BTreeMap::from([("team".to_string(), format!("{app}-team"))]),
            };
            Host {
                workload: Arc::new(workload),
                ip,
                since_ns: BATCH_START_NS - rng.below(86_400_000_000_000),
                pid: 1_000 + rng.below(60_000) as u32,
                cgroup_id: 8_000 + rng.below(100_000),
                netns_id: 4_026_531_840 + rng.below(10_000),
            }
        })
        .collect();
    let lbs: Vec<(IpAddr, Arc<Workload>)> = (0..5)
        .map(|i| {
            let w = Workload {
                app: Some("elb".into()),
                region: Some("us-east-1".into()),
                ..Workload::with_id(format!("elb-{i}-prod"))
            };
            (IpAddr::V4(Ipv4Addr::new(10, 200, 0, i)), Arc::new(w))
        })
        .collect();
    // ipman answers hold until it last checked its state file: one time per batch.
    let checked_ns = BATCH_START_NS + 10_000_000_000;
    let batch_ids = flowattr_sdk::RecordIds::of(&flowattr_sdk::BatchId {
        agent: "node-1".into(),
        incarnation: BATCH_START_NS,
        seq: seed,
    });
    let spacing = 10_000_000_000 / n.max(1) as u64;
    (0..n)
        .map(|i| {
            let me = &hosts[rng.below(hosts.len() as u64) as usize];
            let (remote_ip, remote) = match rng.below(100) {
                0..60 => {
                    let peer = &hosts[rng.below(hosts.len() as u64) as usize];
                    let side = Side::Attributed(Attribution {
                        workload: peer.workload.clone(),
                        source: AttributionSource::Heartbeat,
                        plugin: Arc::default(),
                        valid: TimeRange::since(peer.since_ns),
                    });
                    (peer.ip, side)
                }
                60..70 => {
                    let (ip, w) = &lbs[rng.below(lbs.len() as u64) as usize];
                    let side = Side::Attributed(Attribution {
                        workload: w.clone(),
                        source: AttributionSource::Resolver,
                        plugin: "sonar-legacy".into(),
                        valid: TimeRange::new(BATCH_START_NS - 3_600_000_000_000, checked_ns + 1),
                    });
                    (*ip, side)
                }
                70..95 => (
                    IpAddr::V4(Ipv4Addr::from(0x3400_0000 + rng.below(1 << 24) as u32)),
                    Side::Unattributed(UnattributedReason::NotFound),
                ),
                _ => (
                    IpAddr::V4(Ipv4Addr::new(100, 66, 9, rng.below(250) as u8)),
                    Side::Unattributed(
                        rng.pick(&[UnattributedReason::Expired, UnattributedReason::Gap]),
                    ),
                ),
            };
            let outbound = rng.chance(70);
            let ephemeral = 32_768 + rng.below(28_232) as u16;
            let service = rng.pick(&[443, 8080, 7001, 7004, 9092]);
            let (local_port, remote_port) = if outbound {
                (ephemeral, service)
            } else {
                (service, ephemeral)
            };
            let start_ns = BATCH_START_NS + i as u64 * spacing + rng.below(50_000_000);
            let mut flow = Flow::tcp(
                SocketAddr::new(me.ip, local_port),
                SocketAddr::new(remote_ip, remote_port),
                start_ns,
            );
            flow.end_ns = start_ns + rng.log_uniform(1_000_000, 60_000_000_000);
            flow.initiator = if outbound {
                Initiator::Local
            } else {
                Initiator::Remote
            };
            flow.end_state = match rng.below(100) {
                0..90 => FlowEnd::Closed,
                90..95 => FlowEnd::Ongoing,
                95..98 => FlowEnd::Reset,
                _ => FlowEnd::Refused,
            };
            flow.bytes_sent = rng.log_uniform(100, 10_000_000);
            flow.bytes_received = rng.log_uniform(100, 10_000_000);
            flow.packets_sent = flow.bytes_sent / 1_200 + 2;
            flow.packets_received = flow.bytes_received / 1_200 + 2;
            flow.retransmits = if rng.chance(90) {
                0
            } else {
                rng.below(20) as u32
            };
            flow.srtt_us = rng.log_uniform(100, 50_000) as u32;
            (flow.pid, flow.cgroup_id, flow.netns_id) = (me.pid, me.cgroup_id, me.netns_id);
            AttributedFlow {
                flow,
                local: Side::Attributed(Attribution {
                    workload: me.workload.clone(),
                    source: AttributionSource::Capture,
                    plugin: "ipman".into(),
                    valid: TimeRange::new(me.since_ns, checked_ns),
                }),
                remote,
                weight: if rng.chance(5) { 10 } else { 1 },
                // Ids as a collector assigns them: by position in the
                // agents' batches (one batch here).
                record_id: batch_ids.at(i as u64),
            }
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

/// The flows with process fields cleared, as a chunk without them reads.
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
