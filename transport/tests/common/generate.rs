//! Generated flow batches for tests and benchmarks: every model field
//! varies (IPv4 and IPv6 with flow info and scope, each enum value, every
//! kind of side, workloads with and without optional fields).

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    sync::Arc,
};

use flowattr_model::{
    AttributedFlow, Attribution, AttributionSource, Flow, FlowBatch, FlowEnd, Initiator, Protocol,
    Side, TimeRange, UnattributedReason, Workload,
};

/// SplitMix64: small, deterministic, good enough for test data.
pub struct Rng(pub u64);

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

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// Mostly small numbers, sometimes the extremes.
    fn number(&mut self) -> u64 {
        match self.below(8) {
            0 => 0,
            1 => u64::MAX,
            2 => self.next(),
            _ => self.below(100_000),
        }
    }
}

/// `n` workloads, some with every optional field and labels.
pub fn workloads(rng: &mut Rng, n: usize) -> Vec<Arc<Workload>> {
    (0..n)
        .map(|i| {
            let mut w = Workload::with_id(format!("workload-{i}-{:x}", rng.next()));
            if rng.below(2) == 0 {
                w.app = Some(format!("app{i}"));
                w.cluster = Some(format!("app{i}-prod"));
                w.stack = Some("prod".into());
                w.account = Some("123456789012".into());
                w.region = Some(String::new());
                w.labels =
                    BTreeMap::from([("team".into(), "net".into()), ("k".into(), i.to_string())]);
            }
            Arc::new(w)
        })
        .collect()
}

fn address(rng: &mut Rng) -> SocketAddr {
    let port = rng.below(65_536) as u16;
    match rng.below(4) {
        0 | 1 => SocketAddrV4::new(Ipv4Addr::from(rng.next() as u32), port).into(),
        2 => SocketAddrV6::new(
            Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next())),
            port,
            0,
            0,
        )
        .into(),
        _ => {
            // IPv4-mapped, with flow info and scope: must stay IPv6.
            let ip = Ipv4Addr::from(rng.next() as u32).to_ipv6_mapped();
            SocketAddrV6::new(ip, port, rng.next() as u32 & 0xfffff, rng.below(4) as u32).into()
        }
    }
}

fn side(rng: &mut Rng, workloads: &[Arc<Workload>]) -> Side {
    match rng.below(4) {
        0 => Side::Pending,
        1 => Side::Unattributed(rng.pick(&UnattributedReason::ALL)),
        _ => {
            let start = rng.number();
            Side::Attributed(Attribution {
                workload: workloads[rng.below(workloads.len() as u64) as usize].clone(),
                source: rng.pick(&AttributionSource::ALL),
                plugin: rng.pick(&["ipman", "ec2-disk", "", "sonar-legacy"]).into(),
                valid: if rng.below(2) == 0 {
                    TimeRange::since(start)
                } else {
                    TimeRange::new(start, rng.number())
                },
            })
        }
    }
}

/// One flow with every field drawn at random.
pub fn flow(rng: &mut Rng, workloads: &[Arc<Workload>]) -> AttributedFlow {
    let flow = Flow {
        protocol: rng.pick(&[Protocol::Tcp, Protocol::Udp]),
        local: address(rng),
        remote: address(rng),
        initiator: rng.pick(&[Initiator::Local, Initiator::Remote, Initiator::Unknown]),
        end_state: rng.pick(&[
            FlowEnd::Closed,
            FlowEnd::Ongoing,
            FlowEnd::Refused,
            FlowEnd::Reset,
            FlowEnd::Failed,
        ]),
        start_ns: rng.number(),
        end_ns: rng.number(),
        bytes_sent: rng.number(),
        bytes_received: rng.number(),
        packets_sent: rng.number(),
        packets_received: rng.number(),
        retransmits: rng.number() as u32,
        srtt_us: rng.number() as u32,
        cgroup_id: rng.number(),
        netns_id: rng.number(),
        pid: rng.number() as u32,
    };
    AttributedFlow {
        flow,
        local: side(rng, workloads),
        remote: side(rng, workloads),
        weight: rng.pick(&[0, 1, 1, 1, 10, u32::MAX]),
        // As agents send them (a forwarded flow's id is drawn by the tests
        // that want one, so the draws here stay those of older tests).
        record_id: 0,
    }
}

/// A batch of `flows` flows over `n_workloads` workloads.
pub fn batch(seed: u64, seq: u64, flows: usize, n_workloads: usize) -> FlowBatch {
    let mut rng = Rng(seed);
    let workloads = workloads(&mut rng, n_workloads.max(1));
    FlowBatch {
        agent: format!("agent-{seed}"),
        incarnation: rng.next(),
        seq,
        created_ns: rng.number(),
        complete_until_ns: rng.number(),
        flows: (0..flows).map(|_| flow(&mut rng, &workloads)).collect(),
    }
}
