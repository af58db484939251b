//! Flows for the tests: a seeded generator reaching every enum value, side
//! kind, address family and field edge (0, `u64::MAX`, odd text).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use flowattr_sdk::{
    AttributedFlow, Attribution, AttributionSource, Flow, FlowEnd, Initiator, Protocol, Side,
    TimeRange, UnattributedReason, Workload,
};

/// splitmix64.
pub struct Rng(u64);

impl Rng {
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
    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize].clone()
    }
    /// Usually small, sometimes 0, `u64::MAX` or anything.
    fn edgy(&mut self) -> u64 {
        match self.below(10) {
            0 => 0,
            1 => u64::MAX,
            2 => self.next(),
            _ => self.below(100_000),
        }
    }
}

const ODD: [&str; 6] = [
    "",
    "quote\"",
    "new\nline",
    "ünï 😀",
    "nul\u{0}byte",
    "plain",
];

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

fn workloads(rng: &mut Rng, n: usize) -> Vec<Arc<Workload>> {
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

fn address(rng: &mut Rng, v4: bool) -> IpAddr {
    if v4 {
        return match rng.below(3) {
            0 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            1 => IpAddr::V4(Ipv4Addr::BROADCAST),
            _ => IpAddr::V4(Ipv4Addr::from(rng.next() as u32)),
        };
    }
    match rng.below(3) {
        0 => IpAddr::V6(Ipv4Addr::from(rng.next() as u32).to_ipv6_mapped()),
        1 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V6(Ipv6Addr::from(
            u128::from(rng.next()) << 64 | u128::from(rng.next()),
        )),
    }
}

fn side(rng: &mut Rng, workloads: &[Arc<Workload>]) -> Side {
    match rng.below(10) {
        0 => Side::Pending,
        1 | 2 => Side::Unattributed(rng.pick(&REASONS)),
        _ => {
            let start = rng.edgy();
            let ends = [TimeRange::OPEN_END, start.wrapping_add(1), rng.edgy()];
            Side::Attributed(Attribution {
                workload: rng.pick(workloads),
                source: rng.pick(&[
                    AttributionSource::Capture,
                    AttributionSource::Heartbeat,
                    AttributionSource::Resolver,
                    AttributionSource::Counterpart,
                    AttributionSource::CaptureShared,
                ]),
                plugin: rng.pick(&["ipman", "", "sonar-legacy", "ünï"]).into(),
                valid: TimeRange::new(start, rng.pick(&ends)),
            })
        }
    }
}

/// `n` flows over `n_workloads` workloads.
pub fn varied(seed: u64, n: usize, n_workloads: usize) -> Vec<AttributedFlow> {
    let mut rng = Rng(seed);
    let workloads = workloads(&mut rng, n_workloads.max(1));
    (0..n)
        .map(|_| {
            let v4 = rng.below(2) == 0;
            let starts = [rng.next(), 1_714_564_800_000_000_000 + rng.below(1 << 34)];
            let start_ns = rng.pick(&starts);
            let mut flow = Flow::tcp(
                SocketAddr::new(address(&mut rng, v4), rng.next() as u16),
                SocketAddr::new(address(&mut rng, v4), rng.pick(&[0, 443, 65_535])),
                start_ns,
            );
            let ends = [
                start_ns,
                start_ns.wrapping_add(rng.below(1 << 40)),
                rng.next(),
            ];
            flow.end_ns = rng.pick(&ends);
            flow.protocol = rng.pick(&[Protocol::Tcp, Protocol::Udp]);
            flow.initiator = rng.pick(&Initiator::ALL);
            flow.end_state = rng.pick(&FlowEnd::ALL);
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
                local: side(&mut rng, &workloads),
                remote: side(&mut rng, &workloads),
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

/// The flows with their process fields 0, as read back without them.
pub fn without_process(flows: &[AttributedFlow]) -> Vec<AttributedFlow> {
    let mut flows = flows.to_vec();
    for f in &mut flows {
        f.flow.pid = 0;
        f.flow.cgroup_id = 0;
        f.flow.netns_id = 0;
    }
    flows
}

/// Start of the realistic batch's ten seconds.
pub const BATCH_START_NS: u64 = 1_714_564_800_000_000_000;

/// A batch as one collector formats it, for sizes and speeds that mean
/// something: `n` flows of `n_workloads` workloads (six attributes and a
/// label each; IPv4, a quarter IPv6), local sides attributed at capture,
/// remote sides 60% by heartbeat, 10% by the legacy resolver (load
/// balancers), the rest not found or expired.
pub fn realistic(seed: u64, n: usize, n_workloads: usize) -> Vec<AttributedFlow> {
    let mut rng = Rng(seed);
    let apps = ["api-gateway", "playback", "search", "billing", "catalog"];
    let hosts: Vec<(Arc<Workload>, IpAddr)> = (0..n_workloads.max(1))
        .map(|i| {
            let app = apps[i % apps.len()];
            let workload = Workload {
                id: format!("titus-{:08x}-{i:04x}", rng.next() as u32),
                app: Some(app.into()),
                cluster: Some(format!("{app}-prod-v{:03}", 40 + i % 7)),
                stack: Some("prod".into()),
                account: Some("149510111645".into()),
                region: Some(["us-east-1", "us-west-2", "eu-west-1"][i % 3].into()),
                labels: BTreeMap::from([("team".to_string(), format!("{app}-team"))]),
            };
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
            (Arc::new(workload), ip)
        })
        .collect();
    let elb = Arc::new(Workload {
        app: Some("elb".into()),
        ..Workload::with_id("elb-0-prod")
    });
    let ids = flowattr_sdk::RecordIds::of(&flowattr_sdk::BatchId {
        agent: "node-1".into(),
        incarnation: BATCH_START_NS,
        seq: seed,
    });
    (0..n)
        .map(|i| {
            let (me, my_ip) = rng.pick(&hosts);
            let attributed = |workload, source, plugin: &str| {
                Side::Attributed(Attribution {
                    workload,
                    source,
                    plugin: plugin.into(),
                    valid: TimeRange::since(BATCH_START_NS - 3_600_000_000_000),
                })
            };
            let (remote_ip, remote) = match rng.below(100) {
                0..60 => {
                    let (peer, ip) = rng.pick(&hosts);
                    (ip, attributed(peer, AttributionSource::Heartbeat, ""))
                }
                60..70 => (
                    IpAddr::V4(Ipv4Addr::new(10, 200, 0, 1)),
                    attributed(elb.clone(), AttributionSource::Resolver, "sonar-legacy"),
                ),
                70..95 => (
                    IpAddr::V4(Ipv4Addr::from(0x3400_0000 + rng.below(1 << 24) as u32)),
                    Side::Unattributed(UnattributedReason::NotFound),
                ),
                _ => (
                    IpAddr::V4(Ipv4Addr::new(100, 66, 9, rng.below(250) as u8)),
                    Side::Unattributed(UnattributedReason::Expired),
                ),
            };
            let start_ns = BATCH_START_NS + i as u64 * (10_000_000_000 / n as u64);
            let mut flow = Flow::tcp(
                SocketAddr::new(my_ip, 32_768 + rng.below(28_000) as u16),
                SocketAddr::new(remote_ip, rng.pick(&[443, 8080, 7001, 9092])),
                start_ns,
            );
            flow.end_ns = start_ns + rng.below(60_000_000_000);
            flow.initiator = rng.pick(&[Initiator::Local, Initiator::Local, Initiator::Remote]);
            flow.bytes_sent = 100 + rng.below(10_000_000);
            flow.bytes_received = 100 + rng.below(10_000_000);
            flow.packets_sent = flow.bytes_sent / 1_200 + 2;
            flow.packets_received = flow.bytes_received / 1_200 + 2;
            flow.srtt_us = 100 + rng.below(50_000) as u32;
            (flow.pid, flow.cgroup_id, flow.netns_id) = (4242, 8_123, 4_026_531_840);
            AttributedFlow {
                flow,
                local: attributed(me, AttributionSource::Capture, "ipman"),
                remote,
                weight: 1,
                record_id: ids.at(i as u64),
            }
        })
        .collect()
}
