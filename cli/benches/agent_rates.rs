//! The capture agent under short-lived TCP connections at increasing rates.
//!
//! Runs the real `flowattr agent` (eBPF capture, the bundled `ipman` and
//! `ec2-disk` plugins from a drop-in directory, JSON-lines output) as its own
//! process, opens and closes loopback connections at each target rate for a
//! few seconds, and prints per rate: connections made, flow records expected
//! (one per client side, one per accepted server side) and written, loss, kernel drops, and
//! the agent process's CPU time per 10,000 flows and as a share of one core.
//!
//! `cargo bench -p flowattr --bench agent_rates` (root; after `scripts/build`).
//! Counted drops are records the agent itself reports lost or possibly lost
//! (`flowattr_agent_dropped_total`), so "lost" should never exceed them;
//! "recovered" are final records emitted at socket destruction because the
//! kernel skipped the program at the close.

use std::{
    collections::HashSet,
    io::Read,
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use flowattr_model::FlowBatch;
use flowattr_plugin_runtime::{install_plugin, manifest::Manifest};

/// Target connection rates per second; the last is "as fast as possible".
const RATES: [u64; 6] = [1_000, 2_000, 5_000, 10_000, 20_000, u64::MAX];
const STEP: Duration = Duration::from_secs(3);
const FIRST_PORT: u16 = 21_000;
const SERVER_PORTS: u16 = 16;
const GENERATORS: u64 = 2;
const METRICS: &str = "127.0.0.1:19476";

fn main() {
    if effective_uid() != 0 {
        eprintln!("agent_rates loads eBPF programs: run it as root");
        std::process::exit(1);
    }
    let tmp = tempfile::tempdir().unwrap();
    let config = setup(tmp.path());
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this once
    // quickly, to show it works.
    let full = std::env::args().any(|a| a == "--bench");
    let (rates, step): (&[u64], Duration) = if full {
        (&RATES, STEP)
    } else {
        (&RATES[..1], Duration::from_secs(1))
    };
    let agent = Agent::start(&config, &tmp.path().join("flows.jsonl"));
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = serve(stop.clone());

    // Warm up (first plugin calls, allocations), unmeasured.
    generate(1_000, Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(1500));

    println!(
        "{:>10} {:>12} {:>10} {:>10} {:>10} {:>8} {:>13} {:>10} {:>16} {:>12}",
        "target/s",
        "connections",
        "made/s",
        "expected",
        "written",
        "lost",
        "counted drops",
        "recovered",
        "CPU s/10k flows",
        "CPU % core"
    );
    for &rate in rates {
        let drops_before = counted_drops();
        let recovered_before = recovered();
        let cpu_before = agent.cpu_seconds();
        accepted.lock().unwrap().clear();
        let window_start = Instant::now();
        let made = generate(rate, step);
        // Let the agent close and write the step's batches (max_age 1 s).
        std::thread::sleep(Duration::from_millis(2500));
        let cpu = agent.cpu_seconds() - cpu_before;
        let window = window_start.elapsed().as_secs_f64();
        let accepted = std::mem::take(&mut *accepted.lock().unwrap());
        let (clients, servers) = agent.written();
        let expected = (made.len() + accepted.len()) as u64;
        let lost =
            (made.difference(&clients).count() + accepted.difference(&servers).count()) as u64;
        let written = expected - lost;
        let made = made.len() as u64;
        let target = if rate == u64::MAX {
            "max".to_owned()
        } else {
            rate.to_string()
        };
        println!(
            "{:>10} {:>12} {:>10.0} {:>10} {:>10} {:>8} {:>13} {:>10} {:>16.4} {:>12.2}",
            target,
            made,
            made as f64 / step.as_secs_f64(),
            expected,
            written,
            lost,
            counted_drops() - drops_before,
            recovered() - recovered_before,
            cpu / written.max(1) as f64 * 10_000.0,
            cpu / window * 100.0,
        );
    }
    stop.store(true, Ordering::Relaxed);
    drop(agent);
}

/// The effective uid, from /proc/self/status.
fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}

/// Installs the bundled identity plugins (the loopback address is IPMan's
/// "bench" workload) and writes the agent's configuration.
fn setup(tmp: &Path) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let plugins = tmp.join("plugins");
    for (krate, state) in [("ipman", "state/ipman"), ("ec2-disk", "state/ec2")] {
        let wasm_path = workspace.join(format!(
            "target/wasm32-wasip2/release/{}.wasm",
            krate.replace('-', "_")
        ));
        let wasm = std::fs::read(&wasm_path)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build)", wasm_path.display()));
        let template =
            std::fs::read_to_string(workspace.join(format!("plugins/{krate}/{krate}.toml")))
                .unwrap();
        let mut manifest = Manifest::parse(&template).unwrap();
        for grant in &mut manifest.capabilities.read_dirs {
            grant.host = tmp.join(state);
            std::fs::create_dir_all(&grant.host).unwrap();
        }
        install_plugin(&plugins, krate, &wasm, &mut manifest, "").unwrap();
    }
    std::fs::write(
        tmp.join("state/ipman/state.json"),
        r#"{"version": 1, "workloads": {"bench": {"app": "bench"}},
            "assignments": [{"ip": "127.0.0.1", "workload": "bench", "since_ns": 0, "until_ns": null}]}"#,
    )
    .unwrap();
    std::fs::write(
        tmp.join("state/ec2/instance-identity.json"),
        r#"{"instanceId": "i-bench", "accountId": "1", "region": "local", "privateIp": "10.255.0.1"}"#,
    )
    .unwrap();
    let config = tmp.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"bench\"\n[plugins]\ndirectory = \"{}\"\ncache_dir = \"{}\"\n[batch]\nmax_age = \"1s\"\n\
             [output]\npath = \"{}\"\n[metrics]\nlisten = \"{METRICS}\"\n",
            plugins.display(),
            tmp.join("cache").display(),
            tmp.join("flows.jsonl").display()
        ),
    )
    .unwrap();
    config
}

struct Agent {
    child: Child,
    output: PathBuf,
}

impl Agent {
    fn start(config: &Path, output: &Path) -> Agent {
        let child = Command::new(env!("CARGO_BIN_EXE_flowattr"))
            .args(["agent", "--config"])
            .arg(config)
            .spawn()
            .expect("flowattr agent starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !output.exists() {
            assert!(Instant::now() < deadline, "the agent did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Agent {
            child,
            output: output.to_owned(),
        }
    }

    /// CPU seconds the agent's threads have used so far.
    fn cpu_seconds(&self) -> f64 {
        // Each thread's /proc/PID/task/TID/schedstat starts with its time on
        // a CPU in nanoseconds (finer than /proc/PID/stat's 10 ms ticks).
        // Threads that ended are missed; the agent's threads live as long as
        // it does.
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id())).unwrap();
        let ns: u64 = tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        ns as f64 / 1e9
    }

    /// The bench connections written so far, as (client port, server port),
    /// client sides and server sides apart.
    fn written(&self) -> (Connections, Connections) {
        let ports = FIRST_PORT..FIRST_PORT + SERVER_PORTS;
        let (mut clients, mut servers) = (HashSet::new(), HashSet::new());
        let text = std::fs::read_to_string(&self.output).unwrap();
        for line in text.lines() {
            let batch: FlowBatch = serde_json::from_str(line).expect("a batch per line");
            for f in batch.flows {
                let (local, remote) = (f.flow.local.port(), f.flow.remote.port());
                if ports.contains(&remote) {
                    clients.insert((local, remote));
                } else if ports.contains(&local) {
                    servers.insert((remote, local));
                }
            }
        }
        (clients, servers)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Connections as (client port, server port).
type Connections = HashSet<(u16, u16)>;

/// The connections one side saw, shared between threads.
type Seen = Arc<Mutex<Connections>>;

/// Listeners that accept and close at once; returns the connections they
/// accepted (one the listen queue dropped has no server side to report).
fn serve(stop: Arc<AtomicBool>) -> Seen {
    let accepted = Seen::default();
    for i in 0..SERVER_PORTS {
        let listener = TcpListener::bind(("127.0.0.1", FIRST_PORT + i)).unwrap();
        let stop = stop.clone();
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(mut s) = stream {
                    if let Ok(peer) = s.peer_addr() {
                        accepted
                            .lock()
                            .unwrap()
                            .insert((peer.port(), FIRST_PORT + i));
                    }
                    // Wait for the client's close so the client closes first
                    // (its TIME_WAIT keeps server ports free).
                    let _ = s.read(&mut [0u8; 1]);
                }
            }
        });
    }
    accepted
}

/// Opens and closes connections at `rate` per second (paced per generator
/// thread) for `duration`; returns the connections made.
fn generate(rate: u64, duration: Duration) -> HashSet<(u16, u16)> {
    let made = Seen::default();
    let threads: Vec<_> = (0..GENERATORS)
        .map(|g| {
            let made = made.clone();
            std::thread::spawn(move || {
                let interval = if rate == u64::MAX {
                    Duration::ZERO
                } else {
                    Duration::from_nanos(1_000_000_000 * GENERATORS / rate)
                };
                let start = Instant::now();
                let mut next = start;
                let mut n = 0u64;
                while start.elapsed() < duration {
                    let port = FIRST_PORT + ((n + g) % SERVER_PORTS as u64) as u16;
                    if let Ok(s) = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
                        && let Ok(local) = s.local_addr()
                    {
                        made.lock().unwrap().insert((local.port(), port));
                    }
                    n += 1;
                    next += interval;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    std::mem::take(&mut *made.lock().unwrap())
}

/// Final records the agent recovered at socket destruction because the
/// kernel skipped its program at the close.
fn recovered() -> u64 {
    agent_metric(
        "flowattr_agent_kernel_events",
        &[("event", "close_recovered")],
    )
}

/// Records the agent counted as lost or possibly lost, for every reason
/// (ring buffer full, socket map full, skipped program runs, ...).
fn counted_drops() -> u64 {
    agent_metric("flowattr_agent_dropped", &[])
}

/// The sum of the agent's samples of metric `name` with `labels`.
fn agent_metric(name: &str, labels: &[(&str, &str)]) -> u64 {
    let text = flowattr_daemon::metrics::scrape(METRICS.parse().expect("an address"))
        .expect("agent metrics endpoint");
    flowattr_daemon::metrics::metric_sum(&text, name, labels) as u64
}
