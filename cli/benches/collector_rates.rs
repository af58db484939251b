//! The collector end to end: a load client ships flow batches over QUIC
//! (mutual TLS) to a real `flowattr collector` process, which journals them,
//! takes their heartbeats, holds them, attributes their remote sides, and
//! formats them with the jsonl-sink component into a file.
//!
//! Prints flows per second of wall time and per CPU-second of the collector
//! process (its own threads, from /proc), beside the target (250,000 per
//! collector core) and the reference design (about 21,000 per vCPU), as
//! ratios.
//!
//! `cargo bench -p flowattr --bench collector_rates` (after `scripts/build`).
//! Under `cargo test` it runs once, small, to show it works.

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use flowattr_model::{
    AttributedFlow, Attribution, AttributionSource, Flow, FlowBatch, Side, TimeRange, Workload,
};
use flowattr_transport::{CollectorAddr, Shipper, ShipperConfig, certs, tls::TlsFiles};

const TARGET_PER_CORE: f64 = 250_000.0;
const REFERENCE_PER_VCPU: f64 = 21_000.0;
const FLOWS_PER_BATCH: usize = 10_000;
const AGENTS: [&str; 2] = ["load-1", "load-2"];
/// Distinct workloads (and addresses) the flows run between.
const WORKLOADS: usize = 2_000;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let batches_per_agent = if full { 100 } else { 3 };
    let tmp = tempfile::tempdir().unwrap();
    let collector = CollectorProcess::start(tmp.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Warm up: one batch per agent, unmeasured (plugin compile cache, first
    // connections).
    let total_warm = runtime.block_on(load(tmp.path(), collector.addr, 1, 0));
    collector.wait_flows(total_warm, Duration::from_secs(60));

    let cpu_before = collector.cpu_seconds();
    let written_before = collector.flows_out();
    let started = Instant::now();
    let sent = runtime.block_on(load(tmp.path(), collector.addr, batches_per_agent, 1));
    collector.wait_flows(written_before + sent, Duration::from_secs(600));
    let wall = started.elapsed().as_secs_f64();
    let cpu = collector.cpu_seconds() - cpu_before;

    let per_wall = sent as f64 / wall;
    let per_core = sent as f64 / cpu;
    println!("collector end to end (QUIC → journal → heartbeats → hold → attribution → jsonl-sink → file)");
    println!("  flows              {sent:>12}   in batches of {FLOWS_PER_BATCH}, from {} agents", AGENTS.len());
    println!("  wall time          {wall:>12.2} s   ({per_wall:>10.0} flows/s, hold 200 ms included)");
    println!("  collector CPU      {cpu:>12.2} s   ({per_core:>10.0} flows per CPU-second)");
    println!(
        "  vs target          {:>12.2}×  (250,000 flows/s per collector core)",
        per_core / TARGET_PER_CORE
    );
    println!(
        "  vs reference       {:>12.1}×  (about 21,000 flows/s per vCPU)",
        per_core / REFERENCE_PER_VCPU
    );
    assert_eq!(collector.flows_out(), written_before + sent, "every flow written");
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
            let mut flow = Flow::tcp(address(local, 40_000 + (i % 20_000) as u16), address(remote, 443), start);
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
        flows,
    }
}

fn address(i: usize, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250 + 1) as u8], port))
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

struct CollectorProcess {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
}

impl CollectorProcess {
    fn start(dir: &Path) -> Self {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_flowattr"));
        certs::generate_dev_pki(&dir.join("pki"), &["collector"], &AGENTS).unwrap();
        let status = Command::new(&bin)
            .args(["plugin", "install"])
            .arg(workspace.join("target/wasm32-wasip2/release/jsonl_sink.wasm"))
            .arg("--manifest")
            .arg(workspace.join("plugins/jsonl-sink/jsonl-sink.toml"))
            .arg("--dir")
            .arg(dir.join("plugins"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "installing jsonl-sink (run scripts/build first)");
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let pki = dir.join("pki");
        let config = format!(
            "name = \"collector\"\nlisten = \"{addr}\"\ndata_dir = \"{data}\"\nhold = \"200ms\"\n\
             [tls]\nca = \"{pki}/ca.pem\"\ncert = \"{pki}/collector.pem\"\nkey = \"{pki}/collector.key\"\n\
             [claims]\nload-1 = [\"any\"]\nload-2 = [\"any\"]\n\
             [plugins]\ndirectory = \"{plugins}\"\ncache_dir = \"{cache}\"\nwatch = false\n\
             [[outputs]]\ntype = \"file\"\ndir = \"{out}\"\n\
             [metrics]\nlisten = \"{metrics}\"\n",
            data = dir.join("data").display(),
            pki = pki.display(),
            plugins = dir.join("plugins").display(),
            cache = dir.join("cache").display(),
            out = dir.join("out").display(),
        );
        let config_path = dir.join("collector.toml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(&bin)
            .arg("collector")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        let this = Self { child, addr, metrics };
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(metrics).is_err() {
            assert!(Instant::now() < deadline, "collector did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        this
    }

    /// CPU time of the collector's threads (schedstat: nanoseconds).
    fn cpu_seconds(&self) -> f64 {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id())).unwrap();
        let ns: u64 = tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        ns as f64 / 1e9
    }

    fn flows_out(&self) -> u64 {
        use std::io::{Read, Write};
        let mut s = TcpStream::connect(self.metrics).expect("collector metrics endpoint");
        write!(s, "GET /metrics HTTP/1.0\r\nHost: {}\r\n\r\n", self.metrics).unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        flowattr_collector::metrics::metric_sum(&text, "flowattr_collector_flows_out", &[]) as u64
    }

    fn wait_flows(&self, n: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.flows_out() < n {
            assert!(Instant::now() < deadline, "collector wrote {} of {n} flows", self.flows_out());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    // A UDP port free now (QUIC) that is also free for TCP (metrics) in
    // practice on a quiet loopback.
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
