//! The collector end to end: a load client ships flow batches over QUIC
//! (mutual TLS) to a real `flowattr collector` process, which journals them
//! (fdatasync before acknowledging), takes their heartbeats, holds them
//! (200 ms at most), attributes their remote sides, formats them with a sink
//! component and writes them to a file (synced before the batch is retired).
//!
//! Two loads, each against a collector of its own, in alternating order:
//!
//! - **replayed** (the benchmark as it was): the same 10,000 flows in every
//!   batch, 16 batches in flight per agent, no watermark. After the first
//!   batch every heartbeat is already covered, every lookup asks what the
//!   previous batch asked, and every flow waits out the hold and leaves
//!   `incomplete`.
//! - **fresh**: a fleet's traffic. Every batch covers the next [`SPAN_NS`]
//!   of fleet time with new connections (new ports, new times) from the
//!   agent's addresses to the other agent's, and each connection is
//!   reported by both ends. Every address goes to a new workload every
//!   [`TENURE`] batches after a quiet gap, staggered, so the table keeps
//!   gaining ranges. Batches carry the agents' watermarks, and each agent
//!   has one batch unanswered at a time, as agents on real time do, so
//!   flows leave as soon as they are complete and ranges answer for them.
//!
//! Each load runs with `workers = 1` (the core thread does everything) and
//! `workers = 2` (a sink worker formats while the core attributes).
//!
//! Prints per run flows per second of wall time and per CPU-second of the
//! collector process (its own threads, from /proc), its minor page faults
//! per thousand flows (pages touched for the first time, the cost this VM
//! makes most variable), and what the collector did with the load
//! (heartbeats that made or grew a range, remote sides by outcome); then
//! per sink and load the medians with 1 and 2 workers and their ratio,
//! against the target (250,000 per collector CPU-second, JSON sink). Last,
//! with `--bench` or `--memory`, the memory a held flow and a stored range
//! cost: a collector holding every flow for a minute, sampled as it fills.
//!
//! `cargo bench -p flowattr --bench collector_rates [-- --rounds N]
//! [--addresses N] [--sinks jsonl-sink,arrow-sink] [--memory]` (after
//! `scripts/build`; 3 rounds; the fresh fleet has 2,000 addresses by
//! default, as many as the replayed load's workloads). Under `cargo test` it
//! runs one small round, to show it works.

#[path = "../tests/common/collector_process.rs"]
mod collector_process;

use std::{
    collections::HashMap,
    net::SocketAddr,
    ops::Range,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use collector_process::CollectorProcess;

use flowattr_model::{
    AttributedFlow, Attribution, AttributionSource, Flow, FlowBatch, Initiator, Side, TimeRange,
    Workload,
};
use flowattr_transport::{CollectorAddr, Shipper, ShipperConfig, tls::TlsFiles};
use tokio::sync::Notify;

const TARGET_PER_CORE: f64 = 250_000.0;
const REFERENCE_PER_VCPU: f64 = 21_000.0;
const FLOWS_PER_BATCH: usize = 10_000;
const AGENTS: [&str; 2] = ["load-1", "load-2"];
/// Distinct addresses the flows run between (and, replayed, workloads).
const WORKLOADS: usize = 2_000;
const SINKS: [&str; 4] = ["jsonl-sink", "arrow-sink", "parquet-sink", "otlp-sink"];
/// `workers` of the collector: the core thread alone, and it with one sink
/// worker.
const WORKERS: [usize; 2] = [1, 2];
const SECOND: u64 = 1_000_000_000;

/// Fleet time one fresh batch covers: its connections start and end inside
/// it, and its watermark is its end.
const SPAN_NS: u64 = 6 * SECOND;
/// Every address is handed to a new workload every this many batches…
const TENURE: u64 = 20;
/// …and has no owner (and no traffic) for the first this many of them.
const QUIET: u64 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Replayed,
    Fresh,
    /// The fresh load's batches without watermarks, so every flow waits out
    /// the hold: the memory a held flow costs.
    Held,
}

impl Load {
    fn name(self) -> &'static str {
        match self {
            Self::Replayed => "replayed",
            Self::Fresh => "fresh",
            Self::Held => "held",
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let option = |name: &str| {
        let i = args.iter().position(|a| a == name)?;
        Some(args.get(i + 1).and_then(|n| n.parse().ok()).expect(name))
    };
    let rounds = option("--rounds").unwrap_or(if full { 3 } else { 1 });
    let addresses = option("--addresses").unwrap_or(WORKLOADS);
    assert!(
        addresses <= 60_000 && addresses % AGENTS.len() == 0,
        "--addresses: an even number up to 60,000"
    );
    let batches = if full { 100 } else { 3 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "collector end to end: QUIC → journal (synced) → heartbeats → hold (200 ms) → attribution → sink → file (synced)"
    );
    println!(
        "{} flows a run, in batches of {FLOWS_PER_BATCH} from {} agents; CPU = the collector process's threads; {rounds} rounds",
        batches * (FLOWS_PER_BATCH * AGENTS.len()) as u64,
        AGENTS.len()
    );
    println!(
        "replayed: {WORKLOADS} addresses and workloads; fresh: {addresses} addresses, each a new workload's every {TENURE} batches"
    );
    let sinks: Vec<String> = option_str(&args, "--sinks").map_or_else(
        || SINKS.iter().map(|s| s.to_string()).collect(),
        |s| s.split(',').map(str::to_owned).collect(),
    );
    println!(
        "{:<14} {:<9} {:>7} {:>7} {:>13} {:>16} {:>14} {:>17}  what the collector did",
        "sink",
        "load",
        "workers",
        "wall s",
        "flows/s wall",
        "flows/CPU-second",
        "output B/flow",
        "faults/1000 flows"
    );
    let mut results: Vec<(String, Load, usize, Measured)> = Vec::new();
    for round in 0..rounds {
        for (s, sink) in sinks.iter().enumerate() {
            let mut order = vec![];
            for (l, load) in [Load::Replayed, Load::Fresh].into_iter().enumerate() {
                for workers in WORKERS {
                    order.push((load, workers, (round + s + l + workers) % 2));
                }
            }
            // Alternating: which load and which worker count goes first
            // changes from round to round and sink to sink.
            order.sort_by_key(|&(_, _, first)| first);
            for (load, workers, _) in order {
                let m = run(&runtime, sink, load, workers, batches, addresses);
                println!(
                    "{sink:<14} {:<9} {workers:>7} {:>7.2} {:>13.0} {:>16.0} {:>14.0} {:>17.0}  {}",
                    load.name(),
                    m.wall_s,
                    m.flows as f64 / m.wall_s,
                    m.per_cpu_second(),
                    m.bytes_per_flow,
                    m.faults_per_1000,
                    m.did,
                );
                results.push((sink.clone(), load, workers, m));
            }
        }
    }
    println!("\nmedians of {rounds} rounds; 2 workers / 1 worker");
    println!(
        "{:<14} {:<9} {:>13} {:>13} {:>7} {:>15} {:>15} {:>11} {:>12}",
        "sink",
        "load",
        "1 w wall/s",
        "2 w wall/s",
        "ratio",
        "1 w /CPU-s",
        "2 w /CPU-s",
        "vs target",
        "vs reference"
    );
    for sink in &sinks {
        for load in [Load::Replayed, Load::Fresh] {
            let median_of = |workers, f: &dyn Fn(&Measured) -> f64| {
                median(
                    results
                        .iter()
                        .filter(|(s, l, w, _)| s == sink && *l == load && *w == workers)
                        .map(|(_, _, _, m)| f(m))
                        .collect(),
                )
            };
            let wall = |m: &Measured| m.flows as f64 / m.wall_s;
            let cpu = |m: &Measured| m.per_cpu_second();
            let (w1, w2) = (median_of(1, &wall), median_of(2, &wall));
            let (c1, c2) = (median_of(1, &cpu), median_of(2, &cpu));
            println!(
                "{sink:<14} {:<9} {w1:>13.0} {w2:>13.0} {:>6.2}× {c1:>15.0} {c2:>15.0} {:>10.2}× {:>11.1}×",
                load.name(),
                w2 / w1,
                c2 / TARGET_PER_CORE,
                c2 / REFERENCE_PER_VCPU,
            );
        }
    }
    println!(
        "vs target/reference: flows per collector CPU-second with 2 workers against 250,000 (JSON sink) and the reference design's ~21,000 per vCPU"
    );
    if full || args.iter().any(|a| a == "--memory") {
        held_memory(&runtime, addresses);
    }
}

fn option_str(args: &[String], name: &str) -> Option<String> {
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

/// Memory per held flow and per stored range: a collector holding every
/// flow for a minute (no watermarks), its resident memory sampled as the
/// held flows grow, and a line fitted through the samples; the table's own
/// account of its bytes per range.
fn held_memory(runtime: &tokio::runtime::Runtime, addresses: usize) {
    const STEPS: u64 = 10;
    const PER_STEP: u64 = 10;
    let tmp = tempfile::tempdir().unwrap();
    let collector = CollectorProcess::start_with(
        tmp.path(),
        &AGENTS,
        "60s",
        "jsonl-sink",
        "workers = 2\nmax_held_flows = 10000000",
    );
    let fleet = Fleet::new(now_ns(), STEPS * PER_STEP + 2, addresses);
    println!(
        "\nmemory at a 1-minute hold (jsonl-sink, 2 workers, no watermarks: every flow waits the hold)"
    );
    println!(
        "{:>12} {:>10} {:>12} {:>14} {:>16}",
        "held flows", "RSS MiB", "ranges", "table MiB", "table B/range"
    );
    let mut samples = Vec::new();
    for step in 0..=STEPS {
        if step > 0 {
            let range = (step - 1) * PER_STEP..step * PER_STEP;
            runtime.block_on(ship(
                tmp.path(),
                collector.addr,
                Load::Held,
                &fleet,
                range,
                step,
            ));
        }
        // Until what was acknowledged is all in the hold.
        let want = step * PER_STEP * FLOWS_PER_BATCH as u64 * AGENTS.len() as u64;
        let deadline = Instant::now() + Duration::from_secs(60);
        while (collector.metric("flowattr_collector_hold_flows") as u64) < want {
            assert!(Instant::now() < deadline, "flows did not reach the hold");
            std::thread::sleep(Duration::from_millis(50));
        }
        let held = collector.metric("flowattr_collector_hold_flows");
        let rss = collector.rss_bytes() as f64;
        let ranges = collector.metric("flowattr_collector_table_ranges");
        let table = collector.metric("flowattr_collector_table_memory_bytes");
        println!(
            "{held:>12.0} {:>10.1} {ranges:>12.0} {:>14.1} {:>16.1}",
            rss / (1 << 20) as f64,
            table / (1 << 20) as f64,
            table / ranges.max(1.0),
        );
        samples.push((held, rss, ranges, table));
    }
    let (slope, intercept) = fit(&samples.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>());
    let (ranges, table) = samples.last().map(|s| (s.2, s.3)).unwrap();
    println!(
        "resident bytes per held flow (fitted): {slope:.0}; at 10 million held flows: {:.1} GiB; bytes per stored range (the table's account): {:.1}",
        (intercept + slope * 1e7) / (1u64 << 30) as f64,
        table / ranges.max(1.0),
    );
}

/// Least-squares line through `points`: (slope, intercept).
fn fit(points: &[(f64, f64)]) -> (f64, f64) {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    let slope = num / den;
    (slope, my - slope * mx)
}

/// One measured run.
struct Measured {
    wall_s: f64,
    flows: u64,
    cpu_s: f64,
    faults_per_1000: f64,
    bytes_per_flow: f64,
    did: Outcomes,
}

impl Measured {
    fn per_cpu_second(&self) -> f64 {
        self.flows as f64 / self.cpu_s
    }
}

/// A collector of its own for `load` through `sink`: one unmeasured batch
/// per agent (compile cache, first connections), then `batches` per agent.
fn run(
    runtime: &tokio::runtime::Runtime,
    sink: &str,
    load: Load,
    workers: usize,
    batches: u64,
    addresses: usize,
) -> Measured {
    let tmp = tempfile::tempdir().unwrap();
    let collector = CollectorProcess::start_with(
        tmp.path(),
        &AGENTS,
        "200ms",
        sink,
        &format!("workers = {workers}"),
    );
    // The fleet is quiet for a span between the warm-up and the run, so the
    // warm-up's keep-alive states no more than is true.
    let fleet = Fleet::new(now_ns(), batches + 3, addresses);
    let send = |range, round| {
        runtime.block_on(ship(tmp.path(), collector.addr, load, &fleet, range, round))
    };
    let warm = send(0..1, 0);
    collector.wait_flows(warm, Duration::from_secs(60));

    let cpu_before = collector.cpu_seconds();
    let faults_before = collector.minor_faults();
    let did_before = Outcomes::scrape(&collector);
    let started = Instant::now();
    let sent = send(2..batches + 2, 1);
    collector.wait_flows(warm + sent, Duration::from_secs(600));
    let wall_s = started.elapsed().as_secs_f64();
    let cpu_s = collector.cpu_seconds() - cpu_before;
    let faults = collector.minor_faults() - faults_before;
    let did = Outcomes::scrape(&collector).since(&did_before);
    assert_eq!(collector.flows_out(), warm + sent, "every flow written");
    Measured {
        wall_s,
        flows: sent,
        cpu_s,
        faults_per_1000: faults as f64 * 1000.0 / sent as f64,
        bytes_per_flow: collector.output_bytes() as f64 / (warm + sent) as f64,
        did,
    }
}

/// Ships batches `range` of every agent; returns the flows sent. Then a
/// fresh load's fleet goes quiet for a span: each agent sends an empty batch
/// whose watermark covers its last one (the keep-alive an idle agent
/// sends), so the last flows need not wait out the hold.
async fn ship(
    dir: &Path,
    addr: SocketAddr,
    load: Load,
    fleet: &Fleet,
    range: Range<u64>,
    round: u64,
) -> u64 {
    let now = now_ns();
    let workloads: Arc<Vec<Arc<Workload>>> = Arc::new(
        (0..WORKLOADS)
            .map(|i| Arc::new(Workload::with_id(format!("w-{i}"))))
            .collect(),
    );
    let clock = Arc::new(FleetClock::default());
    let mut tasks = Vec::new();
    for (a, agent) in AGENTS.iter().enumerate() {
        let mut config = ShipperConfig::new(
            vec![CollectorAddr::new(addr, "localhost")],
            TlsFiles::in_dir(&dir.join("pki"), agent),
            dir.join("spool").join(format!("{agent}-{round}")),
        );
        // A fleet's agent has its last batch answered long before it closes
        // the next; one sent while an older one is unanswered states no
        // more than the watermark before that one (the shipper caps it), so
        // sixteen in flight would leave every flow to wait out the hold.
        config.max_in_flight = match load {
            Load::Replayed | Load::Held => 16,
            Load::Fresh => 1,
        };
        let shipper = Shipper::start(config).unwrap();
        let (workloads, fleet, range) = (workloads.clone(), fleet.clone(), range.clone());
        let clock = clock.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            for (n, b) in range.clone().enumerate() {
                let batch = match load {
                    Load::Replayed => {
                        replayed_batch(agent, round * 1_000_000 + b, a, &workloads, now)
                    }
                    Load::Fresh => {
                        clock.wait_for_others(a, n as u64).await;
                        fleet.batch(a, b)
                    }
                    Load::Held => FlowBatch {
                        complete_until_ns: 0,
                        ..fleet.batch(a, b)
                    },
                };
                sent += batch.flows.len() as u64;
                shipper.send(&batch).await.unwrap();
                clock.sent(a);
            }
            if load == Load::Fresh {
                // Sent once the last batch is answered, or it would be capped.
                let counters = shipper.counters();
                while counters.spooled_batches.load(Ordering::Relaxed) > 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                shipper.send(&fleet.keep_alive(a, range.end)).await.unwrap();
            }
            let left = shipper.shutdown(Duration::from_secs(120)).await;
            assert_eq!(left, 0, "{agent}: batches left unacknowledged");
            sent
        }));
    }
    let mut sent = 0;
    for t in tasks {
        sent += t.await.unwrap();
    }
    sent
}

/// The fleet's agents share one clock: none ships a span of fleet time
/// before every other has shipped the span before it (its watermark past
/// it), as agents on real time cannot run minutes ahead of each other.
#[derive(Default)]
struct FleetClock {
    /// Batches each agent has handed to its shipper.
    sent: [AtomicU64; AGENTS.len()],
    changed: Notify,
}

impl FleetClock {
    /// Waits until every agent but `a` has shipped its first `n - 1` batches.
    async fn wait_for_others(&self, a: usize, n: u64) {
        loop {
            let changed = self.changed.notified();
            let behind = (0..AGENTS.len())
                .filter(|&o| o != a)
                .any(|o| self.sent[o].load(Ordering::Acquire) + 1 < n);
            if !behind {
                return;
            }
            changed.await;
        }
    }

    fn sent(&self, a: usize) {
        self.sent[a].fetch_add(1, Ordering::Release);
        self.changed.notify_waiters();
    }
}

/// The replayed load's batch: the same flows every time. The local side
/// attributed (a heartbeat), the remote side another workload's address.
fn replayed_batch(
    agent: &str,
    seq: u64,
    a: usize,
    workloads: &[Arc<Workload>],
    now: u64,
) -> FlowBatch {
    let flows = (0..FLOWS_PER_BATCH)
        .map(|i| {
            let local = (i * 7 + a) % WORKLOADS;
            let remote = (i * 13 + 1 + a) % WORKLOADS;
            let start = now - 60 * SECOND + (i as u64 % 30) * SECOND;
            let mut flow = Flow::tcp(
                address(local, 40_000 + (i % 20_000) as u16),
                address(remote, 443),
                start,
            );
            flow.end_ns = start + 2 * SECOND;
            flow.bytes_sent = 1_000 + i as u64;
            flow.bytes_received = 20_000;
            let mut f = AttributedFlow::new(flow);
            f.local = Side::Attributed(Attribution {
                workload: workloads[local].clone(),
                source: AttributionSource::Capture,
                plugin: "ipman".into(),
                valid: TimeRange::new(start, start + 60 * SECOND),
            });
            f
        })
        .collect();
    FlowBatch {
        agent: agent.into(),
        incarnation: 1,
        seq,
        created_ns: now,
        complete_until_ns: 0,
        flows,
    }
}

/// The fresh load's fleet: agent `a` holds addresses
/// `a * per_agent..(a + 1) * per_agent`; batch `b` of every agent covers
/// fleet time `[origin + b * SPAN_NS, origin + (b + 1) * SPAN_NS)`, which
/// ends a minute before the run starts (heartbeats from the future are
/// refused, and ranges expire after 15 minutes).
#[derive(Clone)]
struct Fleet {
    origin_ns: u64,
    per_agent: usize,
}

/// One connection of the fresh load, as its client end captured it.
struct Connection {
    client: SocketAddr,
    server: SocketAddr,
    start_ns: u64,
    end_ns: u64,
    request: u64,
    response: u64,
}

impl Fleet {
    fn new(now_ns: u64, batches: u64, addresses: usize) -> Self {
        Self {
            origin_ns: now_ns - batches * SPAN_NS - 60 * SECOND,
            per_agent: addresses / AGENTS.len(),
        }
    }

    fn window(&self, b: u64) -> u64 {
        self.origin_ns + b * SPAN_NS
    }

    /// Which tenure of address `x` batch `b` falls in, unless the address
    /// is quiet then. Tenures are staggered by address, so every batch a
    /// twentieth of the addresses changes hands.
    fn tenure(x: usize, b: u64) -> Option<u64> {
        let t = b + (x as u64 % TENURE);
        (t % TENURE >= QUIET).then_some(t / TENURE)
    }

    /// The addresses of agent `a` that have an owner in batch `b`.
    fn owned(&self, a: usize, b: u64) -> Vec<usize> {
        (a * self.per_agent..(a + 1) * self.per_agent)
            .filter(|&x| Self::tenure(x, b).is_some())
            .collect()
    }

    /// The connections agent `a` opened in batch `b`, half a batch: from
    /// its addresses to the other agents' owned addresses, at each one's
    /// service port.
    fn connections(&self, a: usize, b: u64) -> Vec<Connection> {
        let mine = self.owned(a, b);
        let others: Vec<usize> = (0..AGENTS.len())
            .filter(|&o| o != a)
            .flat_map(|o| self.owned(o, b))
            .collect();
        let mut rng = SplitMix(((a as u64) << 32) ^ b ^ 0x5eed);
        let window = self.window(b);
        (0..FLOWS_PER_BATCH / 2)
            .map(|_| {
                let client = mine[rng.below(mine.len() as u64) as usize];
                let server = others[rng.below(others.len() as u64) as usize];
                let duration = 5_000_000 + rng.below(SECOND - 5_000_000);
                let start_ns = window + rng.below(SPAN_NS - duration);
                Connection {
                    client: address(client, 32_768 + rng.below(28_232) as u16),
                    server: address(server, [443, 8443, 5432, 6379][server % 4]),
                    start_ns,
                    end_ns: start_ns + duration,
                    request: 100 + rng.below(4_000),
                    response: 200 + rng.below(200_000),
                }
            })
            .collect()
    }

    /// Agent `a`'s batch `b`: the client ends of the connections it opened
    /// and the server ends of those the other agents opened to it, each
    /// local side attributed to its address's owner of the time.
    fn batch(&self, a: usize, b: u64) -> FlowBatch {
        let plugin: Arc<str> = "ipman".into();
        let mut owners: HashMap<usize, Arc<Workload>> = HashMap::new();
        let mut attributed = |flow: Flow, x: usize| {
            let tenure = Self::tenure(x, b).expect("traffic only on owned addresses");
            let workload = owners
                .entry(x)
                .or_insert_with(|| Arc::new(Workload::with_id(format!("w-{x}-{tenure}"))))
                .clone();
            // The owner holds the address for its whole tenure.
            let since = (tenure * TENURE + QUIET).saturating_sub(x as u64 % TENURE);
            let mut f = AttributedFlow::new(flow);
            f.local = Side::Attributed(Attribution {
                workload,
                source: AttributionSource::Capture,
                plugin: plugin.clone(),
                valid: TimeRange::new(self.window(since), self.window(since + TENURE - QUIET)),
            });
            f
        };
        let mut flows = Vec::with_capacity(FLOWS_PER_BATCH);
        for c in self.connections(a, b) {
            let mut flow = c.flow(c.client, c.server, Initiator::Local, 0);
            (flow.bytes_sent, flow.bytes_received) = (c.request, c.response);
            flows.push(attributed(flow, index_of(c.client)));
        }
        for o in (0..AGENTS.len()).filter(|&o| o != a) {
            for c in self.connections(o, b) {
                if index_of(c.server) / self.per_agent != a {
                    continue;
                }
                // The server sees the SYN a little after the client sent it.
                let mut flow = c.flow(c.server, c.client, Initiator::Remote, 150_000);
                (flow.bytes_sent, flow.bytes_received) = (c.response, c.request);
                flows.push(attributed(flow, index_of(c.server)));
            }
        }
        FlowBatch {
            agent: AGENTS[a].into(),
            incarnation: 1,
            seq: b,
            created_ns: self.window(b + 1),
            complete_until_ns: self.window(b + 1),
            flows,
        }
    }

    /// Agent `a`'s empty batch after batches `..end`, a span later.
    fn keep_alive(&self, a: usize, end: u64) -> FlowBatch {
        FlowBatch {
            agent: AGENTS[a].into(),
            incarnation: 1,
            seq: end,
            created_ns: self.window(end + 1),
            complete_until_ns: self.window(end + 1),
            flows: Vec::new(),
        }
    }
}

impl Connection {
    /// One end's record: `local` to `remote`, seen `late_ns` after the
    /// client's start and before its end.
    fn flow(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        initiator: Initiator,
        late_ns: u64,
    ) -> Flow {
        let mut flow = Flow::tcp(local, remote, self.start_ns + late_ns);
        flow.end_ns = self.end_ns - late_ns;
        flow.initiator = initiator;
        flow.packets_sent = 3 + self.request / 1_400;
        flow.packets_received = 3 + self.response / 1_400;
        flow.srtt_us = 80 + (self.start_ns % 400) as u32;
        flow
    }
}

/// Address `i` of the fleet (`10.0.0.1` up).
fn address(i: usize, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250 + 1) as u8], port))
}

/// The inverse of [`address`].
fn index_of(addr: SocketAddr) -> usize {
    match addr.ip() {
        std::net::IpAddr::V4(v4) => {
            let [_, _, hi, lo] = v4.octets();
            hi as usize * 250 + lo as usize - 1
        }
        std::net::IpAddr::V6(_) => unreachable!("the fleet is IPv4"),
    }
}

/// What the collector did with a run's flows, from its metrics.
#[derive(Debug, Clone, Copy, Default)]
struct Outcomes {
    /// Heartbeats that started a range, grew one, or changed nothing.
    inserted: f64,
    merged: f64,
    covered: f64,
    /// Remote sides by outcome.
    heartbeat: f64,
    counterpart: f64,
    unattributed: f64,
    incomplete: f64,
    clock_skew: f64,
    ranges: f64,
}

impl Outcomes {
    fn scrape(collector: &CollectorProcess) -> Self {
        let text = flowattr_daemon::metrics::scrape(collector.metrics).expect("collector metrics");
        let m = |name, labels: &[(&str, &str)]| {
            flowattr_daemon::metrics::metric_sum(&text, name, labels)
        };
        let own = |o| m("flowattr_collector_ownership", &[("outcome", o)]);
        let remote = |labels: &[(&str, &str)]| m("flowattr_collector_remote", labels);
        Self {
            inserted: own("inserted"),
            merged: own("merged"),
            covered: own("covered"),
            heartbeat: remote(&[("outcome", "heartbeat")]),
            counterpart: remote(&[("outcome", "counterpart")]),
            unattributed: remote(&[("outcome", "unattributed")]),
            incomplete: remote(&[("reason", "incomplete")]),
            clock_skew: remote(&[("reason", "clock-skew")]),
            ranges: m("flowattr_collector_table_ranges", &[]),
        }
    }

    /// The counts since `before` (the table's size as it is now).
    fn since(self, before: &Self) -> Self {
        Self {
            inserted: self.inserted - before.inserted,
            merged: self.merged - before.merged,
            covered: self.covered - before.covered,
            heartbeat: self.heartbeat - before.heartbeat,
            counterpart: self.counterpart - before.counterpart,
            unattributed: self.unattributed - before.unattributed,
            incomplete: self.incomplete - before.incomplete,
            clock_skew: self.clock_skew - before.clock_skew,
            ranges: self.ranges,
        }
    }
}

impl std::fmt::Display for Outcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let beats = (self.inserted + self.merged + self.covered).max(1.0);
        let remote = (self.heartbeat + self.counterpart + self.unattributed).max(1.0);
        let pct = |n: f64, of: f64| n * 100.0 / of;
        write!(
            f,
            "heartbeats {:.1}% new range, {:.1}% grew one, {:.1}% covered; {} ranges; remote {:.1}% range, {:.1}% other end, {:.1}% unattributed ({:.1}% incomplete, {:.1}% clock-skew)",
            pct(self.inserted, beats),
            pct(self.merged, beats),
            pct(self.covered, beats),
            self.ranges,
            pct(self.heartbeat, remote),
            pct(self.counterpart, remote),
            pct(self.unattributed, remote),
            pct(self.incomplete, remote),
            pct(self.clock_skew, remote),
        )
    }
}

/// A small deterministic generator (SplitMix64), so every run ships the
/// same fleet.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` for a load generator.
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() as u128 * n as u128) >> 64) as u64
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}
