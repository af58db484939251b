//! The simulated fleet: hosts (each with its clock, its identity source and
//! maybe an agent), instances that start and stop on them, address pools
//! that hand released addresses to new workloads, calls between services,
//! flow records as the hosts would capture them (times on each host's
//! skewed clock), each with its ground truth, and the legacy event stream
//! with its delays and losses.
//!
//! A record's local side is not copied from the truth: the agent asks its
//! host's identity source when it captures the flow ([`Fleet::attribute_local`],
//! the plugins' rule in [`crate::identity`]).
//!
//! Pure and deterministic: seeded generators (one for the fleet's churn and
//! calls, one for the hosts), simulated time, no I/O.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use flowattr_ab::Ownership;
use flowattr_model::{
    AnswerScope, AttributedFlow, Attribution, AttributionSource, Flow, Initiator, IpChange,
    IpEvent, Side, TimeRange, Workload,
};
use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use rustc_hash::FxHashSet;

use crate::{
    identity::{Key, Source},
    pool::Pool,
    scenario::{Kind, PORT_BLOCKS, Scenario},
};

/// Simulated time starts here: 2026-01-01T00:00:00Z, Unix-epoch ns.
pub const EPOCH_NS: u64 = 1_767_225_600_000_000_000;
const SECOND_NS: u64 = 1_000_000_000;
/// A stopped instance's replacement starts between 2 and 30 s later (so a
/// released address goes to whichever workload starts next, not back to
/// its own slot).
const START_DELAY_SECS: std::ops::Range<u64> = 2..30;
/// Mean flow duration.
const MEAN_FLOW_NS: f64 = 2.0 * SECOND_NS as f64;
const MAX_FLOW_NS: u64 = 120 * SECOND_NS;
/// Ephemeral ports; on a node's shared IPv4 address, blocks of
/// [`BLOCK_PORTS`] from here, one per container seat.
const EPHEMERAL: std::ops::Range<u16> = 32768..61000;
const BLOCK_PORTS: u16 = 256;
/// Seeds the hosts' generator apart from the fleet's.
const HOSTS_STREAM: u64 = 0x686f_7374_735f_7631;

/// A flow as a host would capture it, with the truth about both sides.
#[derive(Debug, Clone)]
pub struct Record {
    /// The capturing host.
    pub host: usize,
    /// Its local side is pending until the agent attributes it.
    pub flow: AttributedFlow,
    /// Who really owned the remote address at the flow's start.
    pub owner: Arc<Workload>,
    /// Who really owned the local end.
    pub local_owner: Arc<Workload>,
    /// When the flow really started and ended (the agent captures it at
    /// its end).
    pub start_ns: u64,
    pub end_ns: u64,
    /// The identity plugin that answers for the local end.
    plugin: Arc<str>,
}

/// A legacy event and when it reaches the collectors.
#[derive(Debug, Clone)]
pub struct LegacyEvent {
    pub arrival_ns: u64,
    pub event: IpEvent,
}

/// What the fleet did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FleetStats {
    pub instances_started: u64,
    pub addresses_reused: u64,
    pub calls: u64,
    pub calls_without_backend: u64,
    pub records: u64,
    pub legacy_events: u64,
    pub legacy_events_lost: u64,
}

/// A host: one machine with one clock and one identity source, running an
/// agent (named after the host) that ships to its region's collector, or
/// none.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub region: usize,
    /// Its clock minus true time.
    pub skew_ns: i64,
    pub agent: bool,
}

impl Host {
    /// True time `t_ns` on this host's clock.
    pub fn clock(&self, t_ns: u64) -> u64 {
        t_ns.saturating_add_signed(self.skew_ns)
    }
}

#[derive(Debug)]
struct Instance {
    workload: Arc<Workload>,
    service: usize,
    slot: u32,
    address: IpAddr,
    /// Its node and port block there, for IPv6-only containers.
    node: Option<(usize, u16)>,
    host: usize,
    start_ns: u64,
    end_ns: u64,
    /// Where it sits in its service's live list, while live.
    live_at: Option<usize>,
}

#[derive(Debug)]
struct Node {
    address: IpAddr,
    host: usize,
}

#[derive(Debug)]
struct LoadBalancer {
    workload: Arc<Workload>,
    v4: IpAddr,
    v6: IpAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Change {
    Start { service: usize, slot: u32 },
    Stop { instance: usize },
}

/// The fleet and its generator.
pub struct Fleet {
    scenario: Scenario,
    rng: Pcg64Mcg,
    instances: Vec<Instance>,
    live: Vec<Vec<usize>>,
    /// Per region: IPv4 and IPv6 pools.
    pools: Vec<(Pool, Pool)>,
    nodes: Vec<Node>,
    /// Per region: its nodes.
    region_nodes: Vec<Vec<usize>>,
    /// Per service: its load balancers.
    lbs: Vec<Vec<LoadBalancer>>,
    changes: BinaryHeap<Reverse<(u64, Change)>>,
    calls: BinaryHeap<Reverse<(u64, usize)>>,
    hosts: Vec<Host>,
    /// Per host: its identity source.
    sources: Vec<Source>,
    /// Nodes' shared IPv4 addresses (their sources know port blocks).
    shared: FxHashSet<IpAddr>,
    /// Per service: its dependencies' indexes.
    deps: Vec<Vec<usize>>,
    /// Per IPv6-only service: its first port block on a node.
    first_block: Vec<u16>,
    plugins: [Arc<str>; 2],
    serial: u64,
    pub stats: FleetStats,
    /// When the simulation starts.
    start_ns: u64,
    /// Instances' ownership that has ended.
    ended: Vec<Ownership>,
}

/// A log-normal draw with the given median and shape.
fn log_normal(rng: &mut Pcg64Mcg, median: f64, sigma: f64) -> f64 {
    // Box–Muller.
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    median * (sigma * z).exp()
}

fn exponential(rng: &mut Pcg64Mcg, mean: f64) -> f64 {
    -mean * (1.0 - rng.random::<f64>()).ln()
}

impl Fleet {
    /// The fleet at `start_ns` ([`EPOCH_NS`] in process, now when shipping to
    /// running collectors): every service's instances started, nodes and
    /// load balancers in place, and their legacy events (already arrived) in
    /// `events`.
    pub fn new(
        scenario: Scenario,
        start_ns: u64,
        events: &mut Vec<LegacyEvent>,
    ) -> anyhow::Result<Self> {
        let rng = Pcg64Mcg::seed_from_u64(scenario.seed);
        let (hosts, sources) = Self::draw_hosts(&scenario);
        let deps = scenario
            .services
            .iter()
            .map(|s| {
                s.depends_on
                    .iter()
                    .filter_map(|d| scenario.service(d))
                    .collect()
            })
            .collect();
        let mut first_block = vec![0u16; scenario.services.len()];
        for region in &scenario.regions {
            let mut next = 0;
            for (i, s) in scenario.services.iter().enumerate() {
                if s.kind == Kind::Ipv6Container && s.region == region.name {
                    first_block[i] = next;
                    next += s.per_node as u16;
                }
            }
        }
        let mut fleet = Self {
            pools: scenario
                .regions
                .iter()
                .map(|r| (Pool::new(r.ipv4), Pool::new(r.ipv6_pool())))
                .collect(),
            live: vec![Vec::new(); scenario.services.len()],
            region_nodes: vec![Vec::new(); scenario.regions.len()],
            lbs: Vec::new(),
            rng,
            instances: Vec::new(),
            nodes: Vec::new(),
            changes: BinaryHeap::new(),
            calls: BinaryHeap::new(),
            hosts,
            sources,
            shared: FxHashSet::default(),
            deps,
            first_block,
            plugins: ["ec2-disk".into(), "ipman".into()],
            serial: 0,
            stats: FleetStats::default(),
            start_ns,
            ended: Vec::new(),
            scenario,
        };
        let before = start_ns - 3600 * SECOND_NS;
        fleet.place_nodes(before, events)?;
        fleet.place_load_balancers(before, events)?;
        for service in 0..fleet.scenario.services.len() {
            for slot in 0..fleet.scenario.services[service].instances {
                fleet.start(service, slot, start_ns, events)?;
            }
        }
        Ok(fleet)
    }

    /// Who owned which address when, up to `until_ns`: instances (ended and
    /// live) and load balancers. Nodes' shared addresses are left out: their
    /// flows belong to containers told apart by port, which address-level
    /// truth cannot judge.
    pub fn ownership(&self, until_ns: u64) -> Vec<Ownership> {
        let before = self.start_ns - 3600 * SECOND_NS;
        let mut out = self.ended.clone();
        for i in &self.instances {
            if i.live_at.is_some() {
                out.push(Ownership {
                    address: i.address,
                    from_ns: i.start_ns,
                    to_ns: until_ns,
                    workload: i.workload.clone(),
                });
            }
        }
        for lb in self.lbs.iter().flatten() {
            for address in [lb.v4, lb.v6] {
                out.push(Ownership {
                    address,
                    from_ns: before,
                    to_ns: until_ns,
                    workload: lb.workload.clone(),
                });
            }
        }
        out
    }

    /// The hosts, in the order records name them.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    pub fn scenario(&self) -> &Scenario {
        &self.scenario
    }

    /// The hosts and their identity sources, drawn from their own
    /// generator: clock skew, whether an agent runs, the source's lag.
    fn draw_hosts(scenario: &Scenario) -> (Vec<Host>, Vec<Source>) {
        let mut rng = Pcg64Mcg::seed_from_u64(scenario.seed ^ HOSTS_STREAM);
        let max_skew = scenario.clocks.max_skew.as_nanos() as i64;
        let (lag, lead) = (
            scenario.identity.lag_max.as_nanos() as i64,
            scenario.identity.lead_max.as_nanos() as i64,
        );
        let mut hosts = Vec::new();
        let mut sources = Vec::new();
        for (r, region) in scenario.regions.iter().enumerate() {
            for i in 0..scenario.agents.per_region {
                let skew_ns = if max_skew == 0 {
                    0
                } else {
                    rng.random_range(-max_skew..=max_skew)
                };
                let agentless =
                    scenario.agents.agentless > 0.0 && rng.random_bool(scenario.agents.agentless);
                let shift = if lag == 0 && lead == 0 {
                    0
                } else {
                    rng.random_range(-lead..=lag)
                };
                hosts.push(Host {
                    name: format!("agent-{}-{i:02}", region.name),
                    region: r,
                    skew_ns,
                    agent: !agentless,
                });
                sources.push(Source::new(shift));
            }
        }
        (hosts, sources)
    }

    fn host_in(&mut self, region: usize) -> usize {
        let per = self.scenario.agents.per_region;
        region * per + self.rng.random_range(0..per)
    }

    /// The agent on `record`'s host attributes its local side, now: asks
    /// its identity source for the flow's start (see [`crate::identity`]).
    pub fn attribute_local(&self, record: &mut Record, now_ns: u64) {
        let host = &self.hosts[record.host];
        let local = record.flow.flow.local;
        // On a node's shared IPv4 address the source answers for the port's
        // block only (IPMan's port allocations): no heartbeat for the address.
        let (key, scope) = if self.shared.contains(&local.ip()) {
            let block = (local.port() - EPHEMERAL.start) / BLOCK_PORTS;
            (
                Key {
                    ip: local.ip(),
                    block,
                },
                AnswerScope::Port,
            )
        } else {
            (Key::whole(local.ip()), AnswerScope::Address)
        };
        let protect = self.scenario.identity.protect;
        record.flow.local =
            match self.sources[record.host].identify(key, record.start_ns, now_ns, protect) {
                Ok((workload, valid)) => Side::Attributed(Attribution {
                    workload,
                    source: AttributionSource::of_local(scope),
                    plugin: record.plugin.clone(),
                    valid: TimeRange::new(host.clock(valid.start_ns), host.clock(valid.end_ns)),
                }),
                Err(reason) => Side::Unattributed(reason),
            };
    }

    /// An event known long before the run (stable addresses).
    fn known(address: IpAddr, workload: &Arc<Workload>, at: u64) -> LegacyEvent {
        LegacyEvent {
            arrival_ns: at,
            event: IpEvent {
                address,
                change: IpChange::Assigned((**workload).clone()),
                event_time_ns: at,
                arrival_time_ns: at,
            },
        }
    }

    fn place_nodes(&mut self, at: u64, events: &mut Vec<LegacyEvent>) -> anyhow::Result<()> {
        for region in 0..self.scenario.regions.len() {
            let containers: u32 = self
                .scenario
                .services
                .iter()
                .filter(|s| {
                    s.kind == Kind::Ipv6Container && self.scenario.region(&s.region) == Some(region)
                })
                .map(|s| s.instances.div_ceil(s.per_node))
                .sum();
            for n in 0..containers {
                let address = self.pools[region].0.take(at, 0, |_| 0).ok_or_else(|| {
                    anyhow::anyhow!(
                        "region {}: ipv4 prefix used up",
                        self.scenario.regions[region].name
                    )
                })?;
                let workload = Arc::new(Workload {
                    app: Some("k8s-node".into()),
                    region: Some(self.scenario.regions[region].name.clone()),
                    ..Workload::with_id(format!(
                        "node-{}-{n:03}",
                        self.scenario.regions[region].name
                    ))
                });
                events.push(Self::known(address, &workload, at));
                self.shared.insert(address);
                let node = Node {
                    address,
                    host: self.host_in(region),
                };
                self.region_nodes[region].push(self.nodes.len());
                self.nodes.push(node);
            }
        }
        Ok(())
    }

    fn place_load_balancers(
        &mut self,
        at: u64,
        events: &mut Vec<LegacyEvent>,
    ) -> anyhow::Result<()> {
        let mut per_region = vec![0u128; self.scenario.regions.len()];
        for s in 0..self.scenario.services.len() {
            let spec = &self.scenario.services[s];
            let mut list = Vec::new();
            if spec.behind_lb {
                let region = self.scenario.region(&spec.region).expect("checked");
                let r = &self.scenario.regions[region];
                for n in 0..spec.load_balancers {
                    per_region[region] += 1;
                    let i = per_region[region];
                    let v4 = r.load_balancers.nth(i).ok_or_else(|| {
                        anyhow::anyhow!("region {}: load_balancers prefix used up", r.name)
                    })?;
                    let v6 = r.ipv6.nth((0xffff_u128 << 32) + i).ok_or_else(|| {
                        anyhow::anyhow!("region {}: ipv6 prefix too small", r.name)
                    })?;
                    let workload = Arc::new(Workload {
                        app: Some(format!("{}-lb", spec.name)),
                        region: Some(r.name.clone()),
                        ..Workload::with_id(format!("lb-{}-{n}", spec.name))
                    });
                    events.push(Self::known(v4, &workload, at));
                    events.push(Self::known(v6, &workload, at));
                    list.push(LoadBalancer { workload, v4, v6 });
                }
            }
            self.lbs.push(list);
        }
        Ok(())
    }

    /// The legacy event for a change at `at`: delayed, or lost.
    fn legacy(
        &mut self,
        address: IpAddr,
        change: IpChange,
        at: u64,
        events: &mut Vec<LegacyEvent>,
    ) {
        self.stats.legacy_events += 1;
        let l = &self.scenario.legacy;
        if self.rng.random_bool(l.loss) {
            self.stats.legacy_events_lost += 1;
            return;
        }
        let delay = log_normal(
            &mut self.rng,
            l.delay_median.as_nanos() as f64,
            l.delay_sigma,
        )
        .min(l.delay_max.as_nanos() as f64) as u64;
        events.push(LegacyEvent {
            arrival_ns: at + delay,
            event: IpEvent {
                address,
                change,
                event_time_ns: at,
                arrival_time_ns: at + delay,
            },
        });
    }

    fn start(
        &mut self,
        service: usize,
        slot: u32,
        at: u64,
        events: &mut Vec<LegacyEvent>,
    ) -> anyhow::Result<()> {
        let spec = &self.scenario.services[service];
        let region = self.scenario.region(&spec.region).expect("checked");
        let (kind, lifetime, rate, name) = (
            spec.kind,
            spec.lifetime,
            spec.calls_per_minute,
            spec.name.clone(),
        );
        let reuse = self.scenario.addresses.reuse_after.as_nanos() as u64;
        let (pool, node) = match kind {
            Kind::Ipv6Container => {
                let nodes = &self.region_nodes[region];
                let node = nodes[(slot / spec.per_node) as usize % nodes.len()];
                let block = self.first_block[service] + (slot % spec.per_node) as u16;
                debug_assert!(u32::from(block) < PORT_BLOCKS, "checked");
                (&mut self.pools[region].1, Some((node, block)))
            }
            Kind::Vm | Kind::Container => (&mut self.pools[region].0, None),
        };
        let rng = &mut self.rng;
        let address = pool
            .take(at, reuse, |n| rng.random_range(0..n))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "region {}: the {} prefix is used up",
                    self.scenario.regions[region].name,
                    pool.prefix()
                )
            })?;
        self.serial += 1;
        let workload = Arc::new(Workload {
            app: Some(name.clone()),
            region: Some(self.scenario.regions[region].name.clone()),
            ..Workload::with_id(format!("{name}-{:06x}", self.serial))
        });
        let host = match node {
            Some((n, _)) => self.nodes[n].host,
            None => self.host_in(region),
        };
        let end_ns = at + exponential(&mut self.rng, lifetime.as_nanos() as f64) as u64 + SECOND_NS;
        let source = &mut self.sources[host];
        source.assign(Key::whole(address), at, end_ns, workload.clone());
        if let Some((n, block)) = node {
            let key = Key {
                ip: self.nodes[n].address,
                block,
            };
            source.assign(key, at, end_ns, workload.clone());
        }
        let id = self.instances.len();
        let live_at = Some(self.live[service].len());
        self.live[service].push(id);
        if at <= self.start_ns {
            // Running before the simulation began: the legacy system knows it.
            events.push(Self::known(
                address,
                &workload,
                self.start_ns - 3600 * SECOND_NS,
            ));
        } else {
            self.legacy(address, IpChange::Assigned((*workload).clone()), at, events);
        }
        self.instances.push(Instance {
            workload,
            service,
            slot,
            address,
            node,
            host,
            start_ns: at,
            end_ns,
            live_at,
        });
        self.stats.instances_started += 1;
        self.changes
            .push(Reverse((end_ns, Change::Stop { instance: id })));
        if rate > 0.0 && !self.deps[service].is_empty() {
            let next = at + exponential(&mut self.rng, 60.0 * SECOND_NS as f64 / rate) as u64;
            self.calls.push(Reverse((next, id)));
        }
        Ok(())
    }

    fn stop(&mut self, id: usize, at: u64, events: &mut Vec<LegacyEvent>) {
        let (service, slot, address) = {
            let i = &self.instances[id];
            (i.service, i.slot, i.address)
        };
        if let Some(pos) = self.instances[id].live_at.take() {
            self.live[service].swap_remove(pos);
            if let Some(&moved) = self.live[service].get(pos) {
                self.instances[moved].live_at = Some(pos);
            }
        }
        let region = self
            .scenario
            .region(&self.scenario.services[service].region)
            .expect("checked");
        match self.instances[id].node {
            Some(_) => self.pools[region].1.release(address, at),
            None => self.pools[region].0.release(address, at),
        }
        self.legacy(address, IpChange::Released, at, events);
        self.ended.push(Ownership {
            address,
            from_ns: self.instances[id].start_ns,
            to_ns: at,
            workload: self.instances[id].workload.clone(),
        });
        self.changes.push(Reverse((
            at + self.rng.random_range(START_DELAY_SECS) * SECOND_NS,
            Change::Start { service, slot },
        )));
    }

    /// Runs the fleet up to `until_ns`: starts and stops, and the calls made
    /// before then (their records in `records`, in no particular order).
    pub fn advance(
        &mut self,
        until_ns: u64,
        records: &mut Vec<Record>,
        events: &mut Vec<LegacyEvent>,
    ) -> anyhow::Result<()> {
        loop {
            let change = self
                .changes
                .peek()
                .map(|Reverse((t, _))| *t)
                .filter(|&t| t < until_ns);
            let call = self
                .calls
                .peek()
                .map(|Reverse((t, _))| *t)
                .filter(|&t| t < until_ns);
            match (change, call) {
                (Some(tc), Some(tl)) if tc <= tl => self.next_change(events)?,
                (Some(_), None) => self.next_change(events)?,
                (_, Some(_)) => self.next_call(records),
                (None, None) => break,
            }
        }
        self.stats.addresses_reused = self.pools.iter().map(|(a, b)| a.reused + b.reused).sum();
        Ok(())
    }

    fn next_change(&mut self, events: &mut Vec<LegacyEvent>) -> anyhow::Result<()> {
        let Reverse((at, change)) = self.changes.pop().expect("peeked");
        match change {
            Change::Stop { instance } => self.stop(instance, at, events),
            Change::Start { service, slot } => self.start(service, slot, at, events)?,
        }
        Ok(())
    }

    fn ephemeral(&mut self, ip: IpAddr) -> SocketAddr {
        SocketAddr::new(ip, self.rng.random_range(EPHEMERAL))
    }

    /// An ephemeral port in an IPv6-only container's block of its node's
    /// shared IPv4 address.
    fn ephemeral_shared(&mut self, instance: usize) -> SocketAddr {
        let (node, block) = self.instances[instance]
            .node
            .expect("an IPv6-only container");
        let first = EPHEMERAL.start + block * BLOCK_PORTS;
        let port = self.rng.random_range(first..first + BLOCK_PORTS);
        SocketAddr::new(self.nodes[node].address, port)
    }

    fn next_call(&mut self, records: &mut Vec<Record>) {
        let Reverse((at, caller)) = self.calls.pop().expect("peeked");
        let c = &self.instances[caller];
        if c.live_at.is_none() || at >= c.end_ns {
            return; // it stopped; its calls stop with it
        }
        let service = c.service;
        let rate = self.scenario.services[service].calls_per_minute;
        let next = at + exponential(&mut self.rng, 60.0 * SECOND_NS as f64 / rate) as u64;
        self.calls.push(Reverse((next.max(at + 1), caller)));
        self.stats.calls += 1;

        let deps = &self.deps[service];
        let dep = deps[self.rng.random_range(0..deps.len())];
        if self.live[dep].is_empty() {
            self.stats.calls_without_backend += 1;
            return;
        }
        let backend = self.live[dep][self.rng.random_range(0..self.live[dep].len())];
        let spec = &self.scenario.services[dep];
        let port = spec.port;
        let duration =
            (exponential(&mut self.rng, MEAN_FLOW_NS) as u64).clamp(20_000_000, MAX_FLOW_NS);
        let end = (at + duration)
            .min(self.instances[caller].end_ns)
            .min(self.instances[backend].end_ns);
        if end <= at {
            self.stats.calls_without_backend += 1;
            return;
        }
        let caller_v6 = self.instances[caller].node.is_some();
        let backend_v6 = self.instances[backend].node.is_some();
        if spec.behind_lb {
            let lbs = &self.lbs[dep];
            let lb = self.rng.random_range(0..lbs.len());
            let (lb_workload, lb_front, lb_back) = {
                let l = &self.lbs[dep][lb];
                let front = if caller_v6 { l.v6 } else { l.v4 };
                let back = if backend_v6 { l.v6 } else { l.v4 };
                (l.workload.clone(), front, back)
            };
            // Caller → load balancer: only the caller captures it.
            let src = self.ephemeral(self.instances[caller].address);
            self.record(
                caller,
                src,
                SocketAddr::new(lb_front, port),
                Initiator::Local,
                at,
                end,
                lb_workload.clone(),
                records,
            );
            // Load balancer → backend: only the backend captures it.
            let src = self.ephemeral(lb_back);
            let dst = SocketAddr::new(self.instances[backend].address, port);
            self.record(
                backend,
                dst,
                src,
                Initiator::Remote,
                at + 1_000_000,
                end,
                lb_workload,
                records,
            );
        } else {
            let src = match (caller_v6, backend_v6) {
                // IPv4 from an IPv6-only container leaves from its node.
                (true, false) => self.ephemeral_shared(caller),
                _ => self.ephemeral(self.instances[caller].address),
            };
            let dst = SocketAddr::new(self.instances[backend].address, port);
            let (cw, bw) = (
                self.instances[caller].workload.clone(),
                self.instances[backend].workload.clone(),
            );
            self.record(caller, src, dst, Initiator::Local, at, end, bw, records);
            self.record(backend, dst, src, Initiator::Remote, at, end, cw, records);
        }
    }

    /// The record instance `who`'s host captures of a flow, on its clock;
    /// its local side is left for the agent to attribute.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        who: usize,
        local: SocketAddr,
        remote: SocketAddr,
        initiator: Initiator,
        start: u64,
        end: u64,
        owner: Arc<Workload>,
        records: &mut Vec<Record>,
    ) {
        let i = &self.instances[who];
        let host = &self.hosts[i.host];
        let mut flow = Flow::tcp(local, remote, host.clock(start));
        flow.initiator = initiator;
        flow.end_ns = host.clock(end);
        flow.bytes_sent = 1200;
        flow.bytes_received = 5400;
        let vm = self.scenario.services[i.service].kind == Kind::Vm;
        records.push(Record {
            host: i.host,
            flow: AttributedFlow::new(flow),
            owner,
            local_owner: i.workload.clone(),
            start_ns: start,
            end_ns: end,
            plugin: self.plugins[usize::from(!vm)].clone(),
        });
        self.stats.records += 1;
    }
}
