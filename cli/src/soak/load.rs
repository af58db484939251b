//! The soak's fleet: agents whose addresses never change owner, so every
//! output record can be judged from its addresses alone, shipping fresh
//! flows through the real shipper.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use flowattr_model::{
    AttributedFlow, Attribution, AttributionSource, Flow, FlowBatch, Side, TimeRange, Workload,
};
use flowattr_transport::{CollectorAddr, Shipper, ShipperConfig, tls::TlsFiles};

/// Addresses each agent owns: 10.A.0.1 to 10.A.0.ADDRESSES.
pub const ADDRESSES: u8 = 20;
const S: u64 = 1_000_000_000;

/// Agent `a`'s name.
pub fn agent_name(a: usize) -> String {
    format!("agent-{a}")
}

/// The prefix agent `a` claims.
pub fn prefix(a: usize) -> String {
    format!("10.{}.0.0/16", a + 1)
}

/// Address `k` (1-based) of agent `a`.
fn address(a: usize, k: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, (a + 1) as u8, 0, k)
}

/// The workload that holds `ip` for the whole soak, if it is an agent's.
pub fn owner(ip: IpAddr, agents: usize) -> Option<String> {
    let IpAddr::V4(v4) = ip else { return None };
    let [ten, a, zero, k] = v4.octets();
    let a = usize::from(a).checked_sub(1)?;
    (ten == 10 && zero == 0 && a < agents && (1..=ADDRESSES).contains(&k))
        .then(|| format!("svc-{a}-{k}"))
}

/// What the agents sent: every record id (16 hex digits).
#[derive(Default)]
pub struct Sent {
    pub ids: HashSet<String>,
    pub batches: u64,
}

/// Agent `a`: every `every`, a batch of `per_batch` flows, each from one of
/// its addresses to an address of another agent, started a second ago,
/// captured and attributed locally at capture.
pub struct Agent {
    pub a: usize,
    agents: usize,
    incarnation: u64,
    seq: u64,
    flows: u64,
    workloads: Vec<Arc<Workload>>,
    pub shipper: Shipper,
}

impl Agent {
    pub fn start(
        a: usize,
        agents: usize,
        pki: &Path,
        spool: &Path,
        collectors: &[SocketAddr],
    ) -> anyhow::Result<Self> {
        let addrs = collectors
            .iter()
            .map(|&c| CollectorAddr::new(c, "localhost"))
            .collect();
        let mut config = ShipperConfig::new(
            addrs,
            TlsFiles::in_dir(pki, &agent_name(a)),
            spool.join(agent_name(a)),
        );
        config.retry_max = Duration::from_secs(2);
        config.ack_timeout = Duration::from_secs(20);
        Ok(Self {
            a,
            agents,
            incarnation: flowattr_collector::service::unix_now_ns(),
            seq: 0,
            flows: 0,
            workloads: (1..=ADDRESSES)
                .map(|k| Arc::new(Workload::with_id(format!("svc-{a}-{k}"))))
                .collect(),
            shipper: Shipper::start(config)?,
        })
    }

    /// The next batch, its record ids added to `sent`.
    pub fn next_batch(&mut self, per_batch: usize, sent: &Mutex<Sent>) -> FlowBatch {
        let now = flowattr_collector::service::unix_now_ns();
        let flows = (0..per_batch)
            .map(|_| {
                let n = self.flows;
                self.flows += 1;
                let k = (n % u64::from(ADDRESSES)) as u8 + 1;
                let other = (self.a + 1 + (n / 7) as usize % (self.agents - 1)) % self.agents;
                let remote_k = ((n / 3) % u64::from(ADDRESSES)) as u8 + 1;
                let local =
                    SocketAddr::new(address(self.a, k).into(), 1024 + (n / 20 % 60_000) as u16);
                let remote = SocketAddr::new(address(other, remote_k).into(), 443);
                let start = now - S;
                let mut f = AttributedFlow::new(Flow::tcp(local, remote, start));
                f.flow.end_ns = now;
                f.flow.bytes_sent = 1000 + n % 5000;
                f.local = Side::Attributed(Attribution {
                    workload: self.workloads[usize::from(k) - 1].clone(),
                    source: AttributionSource::Capture,
                    plugin: "soak".into(),
                    valid: TimeRange::new(start, now + 1),
                });
                f
            })
            .collect();
        let mut batch = FlowBatch {
            agent: agent_name(self.a),
            incarnation: self.incarnation,
            seq: self.seq,
            created_ns: now,
            complete_until_ns: now,
            flows,
        };
        self.seq += 1;
        let mut ids = batch.clone();
        ids.assign_record_ids();
        let mut sent = sent.lock().unwrap_or_else(|e| e.into_inner());
        sent.batches += 1;
        sent.ids
            .extend(ids.flows.iter().map(|f| format!("{:016x}", f.record_id)));
        batch.flows.shrink_to_fit();
        batch
    }
}
