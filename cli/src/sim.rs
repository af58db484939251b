//! `flowattr sim`: run a scenario through the real collector core with the
//! legacy plugin in shadow, and print the A/B comparison; or sweep one
//! parameter across runs.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use flowattr_sim::{Progress, RunOptions, Scenario, sweep};

use crate::ab::ReportFiles;

/// Arguments of `flowattr sim`.
#[derive(clap::Args)]
pub struct SimArgs {
    /// The scenario file.
    #[arg(default_value = "scenarios/default.toml")]
    scenario: PathBuf,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override the simulated duration (such as 2h).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Where the bundled plugins are installed (scripts/build puts them in plugins/).
    #[arg(long, default_value = "plugins")]
    plugins: PathBuf,
    /// Scratch directory (journals, outputs); a temporary one by default.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Sweep one parameter instead of a single run.
    #[arg(long, value_enum)]
    sweep: Option<SweepArg>,
    /// Ship to running collectors over QUIC, in real time, instead of
    /// simulating them in process: REGION=NAME@ADDRESS:PORT (repeat for
    /// failover or for each region). NAME is the collector's certificate name.
    #[arg(long, value_name = "REGION=NAME@ADDR:PORT")]
    connect: Vec<String>,
    /// With --connect: the PKI directory whose CA the collectors trust
    /// (`flowattr certs` output); each region's agent certificate,
    /// `sim-REGION`, is made there.
    #[arg(long, default_value = "pki")]
    pki: PathBuf,
    /// With --connect: the legacy event file the collectors follow (`[legacy] events`).
    #[arg(long)]
    legacy_events: Option<PathBuf>,
    /// With --connect: where to write the ground truth for `flowattr ab --truth`.
    #[arg(long, default_value = "sim-truth.jsonl")]
    truth: PathBuf,
    #[command(flatten)]
    out: ReportFiles,
    #[command(flatten)]
    cache: crate::plugin::CacheArgs,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum SweepArg {
    /// The legacy events' median delay, 1 s to 30 min.
    LegacyDelay,
    /// Address reuse time, 30 min down to 5 s.
    ReuseTime,
    /// The legacy attributor without and with its hold.
    LegacyHold,
}

/// A progress bar on stderr (hidden when stderr is not a terminal), and
/// the callback that moves it.
fn progress_bar() -> (indicatif::ProgressBar, Progress) {
    let bar = indicatif::ProgressBar::new(1).with_style(
        indicatif::ProgressStyle::with_template(
            "simulated {msg:>8} [{bar:40}] {percent:>3}% ({elapsed})",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let moved = bar.clone();
    let progress: Progress = std::sync::Arc::new(move |done, total| {
        moved.set_length(total.as_secs().max(1));
        moved.set_position(done.as_secs());
        moved.set_message(humantime::format_duration(done).to_string());
    });
    (bar, progress)
}

pub fn run(args: SimArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.scenario)
        .with_context(|| format!("cannot read {}", args.scenario.display()))?;
    let mut scenario =
        Scenario::parse(&text).with_context(|| args.scenario.display().to_string())?;
    if let Some(seed) = args.seed {
        scenario.seed = seed;
    }
    if let Some(d) = args.duration {
        scenario.duration = d;
    }
    let scratch = tempfile::tempdir()?;
    let (bar, progress) = progress_bar();
    let options = RunOptions {
        plugins: args.plugins.clone(),
        work_dir: args
            .work_dir
            .clone()
            .unwrap_or_else(|| scratch.path().to_owned()),
        cache_dir: args.cache.dir(),
        progress: Some(progress),
    };
    if !args.connect.is_empty() {
        return connected(&scenario, &args, &options);
    }
    if let Some(which) = args.sweep {
        let parameter = match which {
            SweepArg::LegacyDelay => sweep::Parameter::LegacyDelay,
            SweepArg::ReuseTime => sweep::Parameter::ReuseTime,
            SweepArg::LegacyHold => sweep::Parameter::LegacyHold,
        };
        eprintln!(
            "sweeping {} over scenario {:?} (seed {}, {} simulated per point)",
            parameter.name(),
            scenario.name,
            scenario.seed,
            humantime::format_duration(scenario.duration)
        );
        let points = sweep::sweep(&scenario, parameter, &options)?;
        bar.finish_and_clear();
        print!("{}", sweep::table(parameter, &points));
        if let Some(path) = &args.out.json {
            std::fs::write(path, serde_json::to_vec_pretty(&points)?)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!(
        "simulating {:?} (seed {}) for {}",
        scenario.name,
        scenario.seed,
        humantime::format_duration(scenario.duration)
    );
    let outcome = flowattr_sim::run(&scenario, &options)?;
    bar.finish_and_clear();
    let f = &outcome.fleet;
    println!(
        "simulated {} in {:.1} s: {} instances started, {} addresses reused, {} calls, {} flow records in {} batches ({} forwarded across regions), {} legacy events ({} lost)",
        humantime::format_duration(outcome.simulated),
        outcome.wall.as_secs_f64(),
        f.instances_started,
        f.addresses_reused,
        f.calls,
        f.records,
        outcome.batches,
        outcome.forwarded_batches,
        f.legacy_events,
        f.legacy_events_lost
    );
    if outcome.lost > 0 || outcome.unknown > 0 {
        anyhow::bail!(
            "{} records never came out of the collectors and {} came out unknown",
            outcome.lost,
            outcome.unknown
        );
    }
    println!();
    print!("{}", outcome.report.table());
    let extra = serde_json::json!({
        "scenario": scenario.name,
        "seed": scenario.seed,
        "simulated_secs": outcome.simulated.as_secs(),
        "wall_secs": outcome.wall.as_secs_f64(),
        "instances_started": f.instances_started,
        "addresses_reused": f.addresses_reused,
        "records": f.records,
        "batches": outcome.batches,
        "legacy_events": f.legacy_events,
        "legacy_events_lost": f.legacy_events_lost,
        "collisions": outcome.collisions,
    });
    args.out.write(
        &outcome.report,
        &format!(
            "flowattr A/B: scenario {} (seed {})",
            scenario.name, scenario.seed
        ),
        extra,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `--connect`: ships the scenario to running collectors in real time.
fn connected(
    scenario: &Scenario,
    args: &SimArgs,
    options: &RunOptions,
) -> anyhow::Result<ExitCode> {
    let mut collectors: Vec<(String, Vec<flowattr_transport::CollectorAddr>)> = Vec::new();
    for c in &args.connect {
        let (region, target) = c
            .split_once('=')
            .with_context(|| format!("--connect {c}: expected REGION=NAME@ADDRESS:PORT"))?;
        let (name, addr) = target
            .split_once('@')
            .with_context(|| format!("--connect {c}: expected REGION=NAME@ADDRESS:PORT"))?;
        let addr = addr
            .parse()
            .with_context(|| format!("--connect {c}: {addr} is not ADDRESS:PORT"))?;
        anyhow::ensure!(
            scenario.region(region).is_some(),
            "--connect {c}: the scenario has no region {region}"
        );
        let addr = flowattr_transport::CollectorAddr::new(addr, name);
        match collectors.iter_mut().find(|(r, _)| r == region) {
            Some((_, list)) => list.push(addr),
            None => collectors.push((region.to_owned(), vec![addr])),
        }
    }
    let legacy_events = args
        .legacy_events
        .clone()
        .context("--connect needs --legacy-events FILE (the collectors' [legacy] events)")?;
    eprintln!(
        "shipping {:?} (seed {}) to the collectors in real time for {}; agents ship as {}",
        scenario.name,
        scenario.seed,
        humantime::format_duration(scenario.duration),
        scenario
            .regions
            .iter()
            .map(|r| flowattr_sim::connect::agent_identity(&r.name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let outcome = flowattr_sim::connect(
        scenario,
        &flowattr_sim::ConnectOptions {
            collectors,
            pki: args.pki.clone(),
            legacy_events,
            truth: args.truth.clone(),
            work_dir: options.work_dir.clone(),
            progress: options.progress.clone(),
        },
    )?;
    println!(
        "shipped {} flow records in {} batches ({} still open at the end, {} left unacknowledged); ground truth in {}",
        outcome.flows_shipped,
        outcome.batches,
        outcome.unshipped,
        outcome.left_in_spools,
        args.truth.display()
    );
    println!(
        "once the collectors' hold has passed: flowattr ab --records COLLECTOR_AB_RECORDS --truth {}",
        args.truth.display()
    );
    Ok(if outcome.left_in_spools == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
