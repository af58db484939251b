//! The capture agent under short-lived TCP connections at increasing rates.
//!
//! Runs the real `flowattr agent` (eBPF capture, the bundled `ipman` and
//! `ec2-disk` plugins from a drop-in directory, JSON-lines output) as its own
//! process, opens and closes loopback connections at each target rate for a
//! few seconds, and accounts for every connection of each step: the client
//! side of each one made and the server side of each one accepted must be
//! written once, as a record with that connection's 4-tuple that started
//! while it was being set up (between the `connect` call and its return, or
//! the `accept`). Printed per step, once every step ran and the agent had
//! 5 s more: connections opened, records expected, captured, missing
//! (expected, never written), late (captured, but written only after the
//! step's 2.5 s), extra (records of the step's window on the bench's ports
//! that are no connection of it, such as a second record of one), counted
//! drops, recovered records, and the agent process's CPU time per 10,000
//! records and as a share of one core (over the step and its 2.5 s). A
//! record from an earlier step, or of an earlier connection on a reused
//! 4-tuple (loopback reuses one after a second), matches nothing: it cannot
//! hide a loss. Each run also checks that the accounting shows a lost
//! record as missing.
//!
//! `cargo bench -p flowattr --bench agent_rates` (root; after `scripts/build`).
//! Counted drops are records the agent itself reports lost or possibly lost
//! (`flowattr_agent_dropped_total`), so "missing" should never exceed them;
//! "recovered" are final records emitted at socket destruction because the
//! kernel skipped the program at the close.

use std::{
    collections::HashMap,
    io::{Read, Seek, SeekFrom},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
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
/// How far a record's start may lie outside the times the bench took
/// around the connection's setup (the agent converts kernel times to Unix
/// time with an offset fixed at its start). Far below the second before
/// loopback reuses a 4-tuple.
const SLACK_NS: u64 = 50_000_000;

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
    let mut output = Output::new(&tmp.path().join("flows.jsonl"));
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = serve(stop.clone());

    // Warm up (first plugin calls, allocations), unmeasured.
    generate(1_000, Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(1500));

    let mut steps = Vec::new();
    let mut checked = false;
    for &rate in rates {
        let drops_before = counted_drops();
        let recovered_before = recovered();
        let cpu_before = agent.cpu_seconds();
        let window = now_ns();
        let started = Instant::now();
        let made = generate(rate, step);
        let window = (window, now_ns());
        // Let the agent close and write the step's batches (max_age 1 s).
        std::thread::sleep(Duration::from_millis(2500));
        let cpu = agent.cpu_seconds() - cpu_before;
        let elapsed = started.elapsed().as_secs_f64();
        let accepted: Vec<Accepted> = std::mem::take(&mut *accepted.lock().unwrap())
            .into_iter()
            .filter(|a| a.accepted_ns >= window.0)
            .collect();
        output.read_new();
        let expected = expected(&made, &accepted);
        let written = output.started_within(window);
        let tally = account(&expected, &written);
        checked = checked || check_accounting(&expected, &written, &tally);
        steps.push(Step {
            rate,
            opened: made.len(),
            expected,
            window,
            missing_in_time: tally.missing,
            counted: counted_drops() - drops_before,
            recovered: recovered() - recovered_before,
            cpu,
            elapsed,
        });
    }
    // A record written after its step's 2.5 s is late, not lost.
    std::thread::sleep(Duration::from_secs(5));
    output.read_new();

    println!(
        "{:>10} {:>8} {:>8} {:>9} {:>9} {:>8} {:>6} {:>6} {:>8} {:>10} {:>16} {:>11}",
        "target/s",
        "opened",
        "opened/s",
        "expected",
        "captured",
        "missing",
        "late",
        "extra",
        "counted",
        "recovered",
        "CPU s/10k flows",
        "CPU % core"
    );
    for s in &steps {
        let tally = account(&s.expected, &output.started_within(s.window));
        let target = if s.rate == u64::MAX {
            "max".to_owned()
        } else {
            s.rate.to_string()
        };
        println!(
            "{:>10} {:>8} {:>8.0} {:>9} {:>9} {:>8} {:>6} {:>6} {:>8} {:>10} {:>16.4} {:>11.2}",
            target,
            s.opened,
            s.opened as f64 / step.as_secs_f64(),
            s.expected.len(),
            tally.captured,
            tally.missing,
            s.missing_in_time - tally.missing,
            tally.extra,
            s.counted,
            s.recovered,
            s.cpu / tally.captured.max(1) as f64 * 10_000.0,
            s.cpu / s.elapsed * 100.0,
        );
        for e in &tally.missed {
            println!("{:>10} missing: {}", "", output.describe(e));
        }
    }
    println!(
        "expected: a client record per connection opened, a server record per one accepted; late: written after the step's 2.5 s (and within 5 s more); counted: the agent's own count of records lost or possibly lost"
    );
    if checked {
        println!(
            "accounting check: a record left out, or an earlier one of its 4-tuple in its place, shows as missing"
        );
    } else {
        println!("accounting check not run: no step without a missing or extra record");
    }
    stop.store(true, Ordering::Relaxed);
    drop(agent);
}

/// One step's connections and what the agent did meanwhile.
struct Step {
    rate: u64,
    opened: usize,
    expected: Vec<Expected>,
    /// When connections were being opened (Unix ns).
    window: (u64, u64),
    /// Missing when the step's 2.5 s were over.
    missing_in_time: u64,
    counted: u64,
    recovered: u64,
    cpu: f64,
    elapsed: f64,
}

/// A record the agent should have written: its endpoints as that end saw
/// them, and when it must have started (Unix ns, before the slack).
#[derive(Debug, Clone, Copy)]
struct Expected {
    local: SocketAddr,
    remote: SocketAddr,
    from_ns: u64,
    until_ns: u64,
}

/// A bench connection's record as the agent wrote it.
#[derive(Debug, Clone, Copy)]
struct Record {
    local: SocketAddr,
    remote: SocketAddr,
    start_ns: u64,
}

#[derive(Debug, Default)]
struct Tally {
    captured: u64,
    missing: u64,
    extra: u64,
    /// The first few missing, to look for.
    missed: Vec<Expected>,
}

/// The records a step's connections should have produced: the client side
/// of each one made, started between `connect` and its return; the server
/// side of each one accepted, started between its client's `connect` and
/// the `accept`.
fn expected(made: &[Made], accepted: &[Accepted]) -> Vec<Expected> {
    let mut calls: HashMap<(SocketAddr, SocketAddr), Vec<u64>> = HashMap::new();
    for m in made {
        calls
            .entry((m.client, m.server))
            .or_default()
            .push(m.called_ns);
    }
    let clients = made.iter().map(|m| Expected {
        local: m.client,
        remote: m.server,
        from_ns: m.called_ns,
        until_ns: m.returned_ns,
    });
    let servers = accepted.iter().map(|a| {
        // Its client's latest connect call before the accept (a made
        // connection's 4-tuple recurs a second later at the earliest).
        let called = calls
            .get(&(a.client, a.server))
            .and_then(|c| c.iter().copied().filter(|&t| t <= a.accepted_ns).max())
            .unwrap_or(a.accepted_ns - 1_000_000_000);
        Expected {
            local: a.server,
            remote: a.client,
            from_ns: called,
            until_ns: a.accepted_ns,
        }
    });
    clients.chain(servers).collect()
}

/// Matches each expected record with one written record of the same
/// endpoints that started inside its times (with [`SLACK_NS`]); a record
/// matches at most once. `written` are the records that started inside the
/// step's window.
fn account(expected: &[Expected], written: &[Record]) -> Tally {
    let mut starts: HashMap<(SocketAddr, SocketAddr), Vec<(u64, bool)>> = HashMap::new();
    for r in written {
        starts
            .entry((r.local, r.remote))
            .or_default()
            .push((r.start_ns, false));
    }
    for list in starts.values_mut() {
        list.sort_unstable();
    }
    let mut order: Vec<&Expected> = expected.iter().collect();
    order.sort_unstable_by_key(|e| e.from_ns);
    let mut tally = Tally::default();
    for e in order {
        let (lo, hi) = (e.from_ns - SLACK_NS, e.until_ns + SLACK_NS);
        let found = starts.get_mut(&(e.local, e.remote)).and_then(|list| {
            let first = list.partition_point(|&(t, _)| t < lo);
            list[first..]
                .iter_mut()
                .take_while(|(t, _)| *t <= hi)
                .find(|(_, used)| !used)
        });
        match found {
            Some((_, used)) => {
                *used = true;
                tally.captured += 1;
            }
            None => {
                tally.missing += 1;
                if tally.missed.len() < 3 {
                    tally.missed.push(*e);
                }
            }
        }
    }
    tally.extra = written.len() as u64 - tally.captured;
    tally
}

/// The accounting must show a loss: on a step with none, without one of
/// its records, or with it replaced by a record of the same 4-tuple from a
/// second earlier (an earlier connection on a reused port pair), one is
/// missing. Whether it checked.
fn check_accounting(expected: &[Expected], written: &[Record], tally: &Tally) -> bool {
    let Some(first) = written.first() else {
        return false;
    };
    if tally.missing != 0 || tally.extra != 0 {
        return false;
    }
    let lost = account(expected, &written[1..]);
    let earlier = Record {
        start_ns: first.start_ns - 1_000_000_000,
        ..*first
    };
    let reused = account(expected, &[&[earlier], &written[1..]].concat());
    assert_eq!(
        (lost.captured, lost.missing),
        (tally.captured - 1, 1),
        "a lost record shows"
    );
    assert_eq!(
        (reused.missing, reused.extra),
        (1, 1),
        "an earlier record of the same 4-tuple hides no loss"
    );
    true
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
        Agent { child }
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
}

/// The agent's output, read as it grows: the bench connections' records.
struct Output {
    path: PathBuf,
    read: u64,
    records: Vec<Record>,
}

impl Output {
    fn new(path: &Path) -> Self {
        Output {
            path: path.to_owned(),
            read: 0,
            records: Vec::new(),
        }
    }

    /// Reads the batches written since the last call (whole lines only).
    fn read_new(&mut self) {
        let mut file = std::fs::File::open(&self.path).unwrap();
        file.seek(SeekFrom::Start(self.read)).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        let ports = FIRST_PORT..FIRST_PORT + SERVER_PORTS;
        for line in text[..whole].lines() {
            let batch: FlowBatch = serde_json::from_str(line).expect("a batch per line");
            self.records.extend(
                batch
                    .flows
                    .iter()
                    .filter(|f| {
                        ports.contains(&f.flow.local.port())
                            || ports.contains(&f.flow.remote.port())
                    })
                    .map(|f| Record {
                        local: f.flow.local,
                        remote: f.flow.remote,
                        start_ns: f.flow.start_ns,
                    }),
            );
        }
        self.read += whole as u64;
    }

    /// A missing record, and any record of its 4-tuple within 5 s.
    fn describe(&self, e: &Expected) -> String {
        let side = if e.remote.port() >= FIRST_PORT && e.remote.port() < FIRST_PORT + SERVER_PORTS {
            "client"
        } else {
            "server"
        };
        let near: Vec<String> = self
            .records
            .iter()
            .filter(|r| (r.local, r.remote) == (e.local, e.remote))
            .filter(|r| r.start_ns.abs_diff(e.from_ns) < 5_000_000_000)
            .map(|r| format!("{:+.1} ms", (r.start_ns as f64 - e.from_ns as f64) / 1e6))
            .collect();
        format!(
            "{side} side {} → {}, set up in {:.1} ms; records of its 4-tuple within 5 s: {}",
            e.local,
            e.remote,
            (e.until_ns - e.from_ns) as f64 / 1e6,
            if near.is_empty() {
                "none".to_owned()
            } else {
                near.join(", ")
            }
        )
    }

    /// The records that started inside `(from_ns, until_ns)` (with the slack).
    fn started_within(&self, (from_ns, until_ns): (u64, u64)) -> Vec<Record> {
        let window = from_ns - SLACK_NS..=until_ns + SLACK_NS;
        self.records
            .iter()
            .filter(|r| window.contains(&r.start_ns))
            .copied()
            .collect()
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

/// A connection the generator made: its endpoints as the client saw them,
/// and when `connect` was called and returned (Unix ns).
#[derive(Debug, Clone, Copy)]
struct Made {
    client: SocketAddr,
    server: SocketAddr,
    called_ns: u64,
    returned_ns: u64,
}

/// A connection a listener accepted, and when `accept` returned.
#[derive(Debug, Clone, Copy)]
struct Accepted {
    server: SocketAddr,
    client: SocketAddr,
    accepted_ns: u64,
}

/// Listeners that accept and close at once; returns the connections they
/// accepted (one the listen queue dropped has no server side to report).
fn serve(stop: Arc<AtomicBool>) -> Arc<Mutex<Vec<Accepted>>> {
    let accepted = Arc::new(Mutex::new(Vec::new()));
    for i in 0..SERVER_PORTS {
        let listener = TcpListener::bind(("127.0.0.1", FIRST_PORT + i)).unwrap();
        let server = listener.local_addr().unwrap();
        let stop = stop.clone();
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(mut s) = stream {
                    let accepted_ns = now_ns();
                    if let Ok(client) = s.peer_addr() {
                        accepted.lock().unwrap().push(Accepted {
                            server,
                            client,
                            accepted_ns,
                        });
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
fn generate(rate: u64, duration: Duration) -> Vec<Made> {
    let threads: Vec<_> = (0..GENERATORS)
        .map(|g| {
            std::thread::spawn(move || {
                let interval = if rate == u64::MAX {
                    Duration::ZERO
                } else {
                    Duration::from_nanos(1_000_000_000 * GENERATORS / rate)
                };
                let mut made = Vec::new();
                let start = Instant::now();
                let mut next = start;
                let mut n = 0u64;
                while start.elapsed() < duration {
                    let server = SocketAddr::from((
                        [127, 0, 0, 1],
                        FIRST_PORT + ((n + g) % SERVER_PORTS as u64) as u16,
                    ));
                    let called_ns = now_ns();
                    if let Ok(s) = TcpStream::connect(server)
                        && let Ok(client) = s.local_addr()
                    {
                        made.push(Made {
                            client,
                            server,
                            called_ns,
                            returned_ns: now_ns(),
                        });
                    }
                    n += 1;
                    next += interval;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                made
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
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
