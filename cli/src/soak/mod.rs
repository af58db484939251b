//! `flowattr soak`: the delivery promise under faults, with real processes.
//!
//! Two collector processes share ownership through a real broker (Tansu
//! with SQLite storage, so a restarted broker keeps what it acknowledged),
//! and each writes to a Kafka topic and to rotating files (the second's on
//! a small tmpfs). Several agents' worth of load goes through the real
//! shipper, failing over between the collectors. While it runs, the soak
//! kills a collector with SIGKILL again and again, restarts the broker,
//! freezes it (the Kafka output fails for a while), fills the second
//! collector's disk and hot-swaps its sink plugin. Then it waits for every
//! spool and journal to drain, reads both outputs back with plain clients,
//! and judges every record against the fleet's truth (addresses never
//! change owner here): lost must be 0, wrong must be 0, and each
//! collector's peak RSS must stay under the bound its settings give.

mod load;
mod procs;
mod report;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;

use load::{Agent, Sent};
use procs::{Broker, Collectors, Faults};

/// Arguments of `flowattr soak`.
#[derive(clap::Args)]
pub struct SoakArgs {
    /// How long load and faults run (then everything drains and is read back).
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Agents shipping load.
    #[arg(long, default_value_t = 4)]
    agents: usize,
    /// Flows per second per agent.
    #[arg(long, default_value_t = 500)]
    rate: usize,
    /// Seconds between collector kills (SIGKILL), alternating collectors.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    kill_every: Duration,
    /// Where the bundled plugins are installed [default: plugins/ here, or
    /// of the checkout this flowattr was built in].
    #[arg(long, default_value_os_t = crate::bundled::path("plugins"), hide_default_value = true)]
    plugins: PathBuf,
    /// Scratch directory; a temporary one by default.
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

pub fn run(args: SoakArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.agents >= 2,
        "--agents: at least 2 (flows go between agents)"
    );
    let exe = std::env::current_exe().context("the flowattr binary")?;
    let scratch;
    let dir = match &args.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            scratch = tempfile::tempdir()?;
            scratch.path().to_owned()
        }
    };
    crate::bundled::require(&args.plugins, "jsonl-sink.wasm", "--plugins")?;
    let agents: Vec<String> = (0..args.agents).map(load::agent_name).collect();
    let agent_refs: Vec<&str> = agents.iter().map(String::as_str).collect();
    flowattr_transport::certs::generate_dev_pki(
        &dir.join("pki"),
        &["collector-1", "collector-2"],
        &agent_refs,
    )?;

    let mut broker = Broker::start(&dir)?;
    let mut collectors = Collectors::start(&exe, &dir, &args.plugins, &broker, args.agents)?;
    let started = Instant::now();
    println!(
        "soak: {} agents × {} flows/s for {}, two collectors, broker {}; work dir {}",
        args.agents,
        args.rate,
        humantime::format_duration(args.duration),
        broker.address(),
        dir.display()
    );

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let sent = Arc::new(Mutex::new(Sent::default()));
    let stop_load = Arc::new(AtomicBool::new(false));
    let addrs = collectors.addrs();
    let mut load = Vec::new();
    for a in 0..args.agents {
        // Each agent prefers one collector and fails over to the other.
        let order = if a % 2 == 0 {
            addrs
        } else {
            [addrs[1], addrs[0]]
        };
        let mut agent = runtime.block_on(async {
            Agent::start(a, args.agents, &dir.join("pki"), &dir.join("spool"), &order)
        })?;
        let (sent, stop) = (sent.clone(), stop_load.clone());
        let per_batch = (args.rate / 10).max(1);
        load.push(runtime.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let batch = agent.next_batch(per_batch, &sent);
                if let Err(e) = agent.shipper.send(&batch).await {
                    tracing::error!(agent = agent.a, error = %e, "the spool refused a batch");
                }
            }
            agent
        }));
    }

    let mut faults = Faults::default();
    let deadline = started + args.duration;
    // The four faults at fixed points of every five minutes (or of the
    // whole run, if shorter), kills throughout.
    let cycle = args.duration.min(Duration::from_secs(300));
    let cycles = (args.duration.as_secs_f64() / cycle.as_secs_f64())
        .floor()
        .max(1.0) as u32;
    let mut plan = Vec::new();
    for k in 0..cycles {
        let at = |f: f64| started + cycle.mul_f64(f64::from(k) + f);
        plan.extend([
            (at(0.30), Fault::BrokerRestart),
            (at(0.45), Fault::BrokerFreeze),
            (at(0.60), Fault::DiskFull),
            (at(0.75), Fault::SinkSwap),
        ]);
    }
    let mut next_kill = started + args.kill_every;
    let mut victim = 0;
    // On a terminal only (indicatif draws nothing when stderr is not one).
    let bar = indicatif::ProgressBar::new(args.duration.as_secs().max(1)).with_style(
        indicatif::ProgressStyle::with_template("soak [{bar:40}] {elapsed}/{duration} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    while Instant::now() < deadline {
        bar.set_position(started.elapsed().as_secs());
        bar.set_message(format!(
            "{} flows sent · {} kills, {} broker restarts, {} freezes, {} disk fills, {} sink swaps",
            sent.lock().map(|s| s.ids.len()).unwrap_or(0),
            faults.collector_kills,
            faults.broker_restarts,
            faults.broker_freezes,
            faults.disk_fills,
            faults.sink_swaps
        ));
        collectors.sample_rss();
        if Instant::now() >= next_kill {
            collectors.kill_and_restart(victim, &mut faults)?;
            victim = 1 - victim;
            next_kill = Instant::now() + args.kill_every;
        }
        if let Some(i) = plan.iter().position(|(at, _)| Instant::now() >= *at) {
            let (_, fault) = plan.remove(i);
            fault.inject(&mut broker, &mut collectors, &args.plugins, &mut faults)?;
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    // Faults the run had no time left for (the blocking ones take seconds
    // each) still happen, under load.
    for (_, fault) in plan {
        fault.inject(&mut broker, &mut collectors, &args.plugins, &mut faults)?;
    }

    bar.finish_and_clear();
    println!("soak: load stops; waiting for spools, journals and outputs to drain");
    stop_load.store(true, Ordering::Relaxed);
    let agents: Vec<Agent> = runtime.block_on(async {
        let mut out = Vec::new();
        for l in load {
            out.push(l.await.expect("load task"));
        }
        out
    });
    let drained = drain(&agents, &mut collectors, Duration::from_secs(180));
    let peak = collectors.peak_rss();
    let bound = collectors.rss_bound();
    collectors.stop();
    runtime.block_on(async {
        for a in agents {
            a.shipper.shutdown(Duration::from_secs(2)).await;
        }
    });

    let sent = std::mem::take(&mut *sent.lock().unwrap_or_else(|e| e.into_inner()));
    let kafka = report::read_topic(
        &broker.address(),
        procs::OUTPUT_TOPIC,
        procs::OUTPUT_PARTITIONS,
        sent.ids.len(),
    )?;
    let files = report::read_files(&collectors.output_dirs())?;
    broker.stop();
    let report = report::Report::judge(
        &sent,
        &kafka,
        &files,
        args.agents,
        faults,
        peak,
        bound,
        drained,
    );
    report.print(started.elapsed());
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

enum Fault {
    BrokerRestart,
    BrokerFreeze,
    DiskFull,
    SinkSwap,
}

/// How long a frozen broker or a full disk lasts.
const OUTAGE: Duration = Duration::from_secs(10);

impl Fault {
    fn inject(
        self,
        broker: &mut Broker,
        collectors: &mut Collectors,
        plugins: &Path,
        faults: &mut Faults,
    ) -> anyhow::Result<()> {
        match self {
            Fault::BrokerRestart => broker.restart(faults),
            Fault::BrokerFreeze => broker.freeze(OUTAGE, collectors, faults),
            Fault::DiskFull => collectors.fill_disk(OUTAGE, faults),
            Fault::SinkSwap => collectors.swap_sink(plugins, faults),
        }
    }
}

/// Waits until every agent's spool is empty and both collectors have
/// written out everything they journaled; whether that happened in time.
fn drain(agents: &[Agent], collectors: &mut Collectors, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut quiet_since: Option<Instant> = None;
    while Instant::now() < deadline {
        collectors.sample_rss();
        let spooled: u64 = agents
            .iter()
            .map(|a| a.shipper.counters().snapshot().spooled_batches)
            .sum();
        let journaled = collectors.journaled();
        if spooled == 0 && journaled == Some(0) {
            // Settled for a few seconds: nothing still on its way.
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(3) {
                return true;
            }
        } else {
            quiet_since = None;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    false
}

/// Writes `text` to `path`.
fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
