//! The collector end to end: a load client ships flow batches over QUIC
//! (mutual TLS) to a real `flowattr collector` process, which journals them,
//! takes their heartbeats, holds them, attributes their remote sides, and
//! formats them with the jsonl-sink component into a file.
//!
//! Prints flows per second of wall time and per CPU-second of the collector
//! process (its own threads, from /proc), beside the target (250,000 per
//! collector core) and the reference design (about 21,000 per vCPU), as
//! ratios; and the collector's minor page faults per thousand flows: each is
//! a page touched for the first time, the cost this VM makes most variable.
//!
//! `cargo bench -p flowattr --bench collector_rates` (after `scripts/build`).
//! Under `cargo test` it runs once, small, to show it works.

#[path = "../tests/common/collector_process.rs"]
mod collector_process;

use std::{
    net::SocketAddr,
    path::Path,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use collector_process::CollectorProcess;

use flowattr_model::{
    AttributedFlow, Attribution, AttributionSource, Flow, FlowBatch, Side, TimeRange, Workload,
};
use flowattr_transport::{CollectorAddr, Shipper, ShipperConfig, tls::TlsFiles};

const TARGET_PER_CORE: f64 = 250_000.0;
const REFERENCE_PER_VCPU: f64 = 21_000.0;
const FLOWS_PER_BATCH: usize = 10_000;
const AGENTS: [&str; 2] = ["load-1", "load-2"];
/// Distinct workloads (and addresses) the flows run between.
const WORKLOADS: usize = 2_000;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let batches_per_agent = if full { 100 } else { 3 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "collector end to end: QUIC → journal → heartbeats → hold (200 ms) → attribution → sink → file"
    );
    println!(
        "{} flows a run, in batches of {FLOWS_PER_BATCH} from {} agents; CPU = the collector process's threads",
        batches_per_agent * FLOWS_PER_BATCH as u64 * AGENTS.len() as u64,
        AGENTS.len()
    );
    println!(
        "{:<14} {:>10} {:>14} {:>16} {:>10} {:>12} {:>14} {:>17}",
        "sink",
        "wall s",
        "flows/s wall",
        "flows/CPU-second",
        "vs target",
        "vs reference",
        "output B/flow",
        "faults/1000 flows"
    );
    for sink in ["jsonl-sink", "columnar-sink"] {
        let tmp = tempfile::tempdir().unwrap();
        let collector = CollectorProcess::start(tmp.path(), &AGENTS, "200ms", sink);
        // Warm up: one batch per agent, unmeasured (compile cache, first
        // connections).
        let warm = runtime.block_on(load(tmp.path(), collector.addr, 1, 0));
        collector.wait_flows(warm, Duration::from_secs(60));

        let cpu_before = collector.cpu_seconds();
        let faults_before = collector.minor_faults();
        let started = Instant::now();
        let sent = runtime.block_on(load(tmp.path(), collector.addr, batches_per_agent, 1));
        collector.wait_flows(warm + sent, Duration::from_secs(600));
        let wall = started.elapsed().as_secs_f64();
        let cpu = collector.cpu_seconds() - cpu_before;
        let faults = (collector.minor_faults() - faults_before) as f64 * 1000.0 / sent as f64;
        let per_core = sent as f64 / cpu;
        let bytes = collector.output_bytes() as f64 / (warm + sent) as f64;
        println!(
            "{sink:<14} {wall:>10.2} {:>14.0} {per_core:>16.0} {:>9.2}× {:>11.1}× {bytes:>14.0} {faults:>17.0}",
            sent as f64 / wall,
            per_core / TARGET_PER_CORE,
            per_core / REFERENCE_PER_VCPU,
        );
        assert_eq!(collector.flows_out(), warm + sent, "every flow written");
    }
    println!(
        "target: 250,000 flows/s per collector core (JSON sink); reference design: about 21,000 per vCPU"
    );
}

/// Ships `batches` batches of every agent; returns the flows sent.
async fn load(dir: &Path, addr: SocketAddr, batches: u64, round: u64) -> u64 {
    let now = now_ns();
    let workloads: Vec<Arc<Workload>> = (0..WORKLOADS)
        .map(|i| Arc::new(Workload::with_id(format!("w-{i}"))))
        .collect();
    let mut tasks = Vec::new();
    for (a, agent) in AGENTS.iter().enumerate() {
        let mut config = ShipperConfig::new(
            vec![CollectorAddr::new(addr, "localhost")],
            TlsFiles::in_dir(&dir.join("pki"), agent),
            dir.join("spool").join(format!("{agent}-{round}")),
        );
        config.max_in_flight = 16;
        let shipper = Shipper::start(config).unwrap();
        let workloads = workloads.clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = 0;
            for seq in 0..batches {
                let batch = make_batch(agent, round * 1_000_000 + seq, a, &workloads, now);
                sent += batch.flows.len() as u64;
                shipper.send(&batch).await.unwrap();
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

/// Flows between the fleet's workloads: the local side attributed (a
/// heartbeat), the remote side another workload's address.
fn make_batch(agent: &str, seq: u64, a: usize, workloads: &[Arc<Workload>], now: u64) -> FlowBatch {
    let flows = (0..FLOWS_PER_BATCH)
        .map(|i| {
            let local = (i * 7 + a) % WORKLOADS;
            let remote = (i * 13 + 1 + a) % WORKLOADS;
            let start = now - 60_000_000_000 + (i as u64 % 30) * 1_000_000_000;
            let mut flow = Flow::tcp(
                address(local, 40_000 + (i % 20_000) as u16),
                address(remote, 443),
                start,
            );
            flow.end_ns = start + 2_000_000_000;
            flow.bytes_sent = 1_000 + i as u64;
            flow.bytes_received = 20_000;
            let mut f = AttributedFlow::new(flow);
            f.local = Side::Attributed(Attribution {
                workload: workloads[local].clone(),
                source: AttributionSource::Capture,
                plugin: "ipman".into(),
                valid: TimeRange::new(start, start + 60_000_000_000),
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

fn address(i: usize, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250 + 1) as u8], port))
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}
