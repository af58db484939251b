//! `flowattr sim`: run a scenario through the real collector core with the
//! legacy plugin in shadow, and print the A/B comparison; sweep one
//! parameter across runs; or explore: draw many harsh scenarios at random
//! and check that no answer is wrong.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use flowattr_sim::{Progress, RunOptions, Scenario, explore, sweep};

use crate::ab::ReportFiles;

/// Arguments of `flowattr sim`.
#[derive(clap::Args)]
pub struct SimArgs {
    /// The scenario file [default: scenarios/default.toml here, or of the
    /// checkout this flowattr was built in].
    #[arg(default_value_os_t = crate::bundled::path("scenarios/default.toml"), hide_default_value = true)]
    scenario: PathBuf,
    /// Override the scenario's seed (with --explore: seeds the draws; 1 by
    /// default).
    #[arg(long)]
    seed: Option<u64>,
    /// Override the simulated duration (such as 2h).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Where the bundled plugins are installed [default: plugins/ here, or
    /// of the checkout this flowattr was built in].
    #[arg(long, default_value_os_t = crate::bundled::path("plugins"), hide_default_value = true)]
    plugins: PathBuf,
    /// Scratch directory (journals, outputs); a temporary one by default.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Each simulated collector's workers (`workers` in its config); 0: the
    /// machine's cores. The outcome is the same for any count.
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Sweep one parameter instead of a single run.
    #[arg(long, value_enum)]
    sweep: Option<SweepArg>,
    /// Draw N scenarios at random over wide ranges (reuse, clock skew,
    /// batch interval, hold, lifetimes, IPv6-only containers, load
    /// balancers, cross-region calls, agent crashes and silences, agentless
    /// hosts, lost and duplicated batches, lagging identity sources, a
    /// collector restart, legacy delay and loss), run each for a few
    /// simulated minutes and check that no flow, local side or edge is
    /// wrong and none is lost. The scenario file is not read.
    #[arg(long, value_name = "N", conflicts_with_all = ["sweep", "connect"])]
    explore: Option<u32>,
    /// With --explore: where failing draws are written as scenario files
    /// (`flowattr sim FILE` runs one again).
    #[arg(long, default_value = "explore-failures")]
    failures: PathBuf,
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

impl SimArgs {
    fn workers(&self) -> usize {
        flowattr_collector::config::worker_threads(self.workers)
    }
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
    if args.connect.is_empty() {
        crate::bundled::require(&args.plugins, "sonar-legacy.wasm", "--plugins")?;
    }
    if let Some(draws) = args.explore {
        return explored(draws, &args);
    }
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
        workers: args.workers(),
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
    let a = &outcome.agents;
    println!(
        "agents: {} local sides attributed, {} unattributed ({}); {} restarts, {} silences; never captured by design: {} on agentless hosts, {} while down, {} lost in crashes, {} in {} lost batches; {} batches sent twice",
        a.local_attributed,
        a.local_unattributed.values().sum::<u64>(),
        if a.local_unattributed.is_empty() {
            "-".to_owned()
        } else {
            a.local_unattributed
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
        a.restarts,
        a.silences,
        a.not_captured,
        a.missed_while_down,
        a.lost_in_crashes,
        a.flows_in_lost_batches,
        a.batches_lost,
        a.batches_duplicated,
    );
    let l = &outcome.local;
    println!(
        "local sides judged: {} attributed, {} of them wrong; {} unattributed",
        l.attributed, l.misattributed, l.unattributed
    );
    for e in &l.examples {
        println!("  wrong local side: {e}");
    }
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
        "local_attributed": l.attributed,
        "local_misattributed": l.misattributed,
        "local_unattributed": l.unattributed,
        "agents": {
            "local_unattributed": a.local_unattributed,
            "not_captured": a.not_captured,
            "missed_while_down": a.missed_while_down,
            "lost_in_crashes": a.lost_in_crashes,
            "batches_lost": a.batches_lost,
            "flows_in_lost_batches": a.flows_in_lost_batches,
            "batches_duplicated": a.batches_duplicated,
            "restarts": a.restarts,
            "silences": a.silences,
        },
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

/// `--explore N`: draws, runs and checks N scenarios; fails when any draw
/// does.
fn explored(draws: u32, args: &SimArgs) -> anyhow::Result<ExitCode> {
    let seed = args.seed.unwrap_or(1);
    let scratch = tempfile::tempdir()?;
    let bar = indicatif::ProgressBar::new(u64::from(draws)).with_style(
        indicatif::ProgressStyle::with_template(
            "draw {pos}/{len} [{bar:40}] {percent:>3}% ({elapsed}, {eta} left)",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    eprintln!(
        "exploring {draws} random scenarios (seed {seed}); failing draws go to {}",
        args.failures.display()
    );
    let options = explore::ExploreOptions {
        draws,
        seed,
        run: RunOptions {
            plugins: args.plugins.clone(),
            work_dir: args
                .work_dir
                .clone()
                .unwrap_or_else(|| scratch.path().to_owned()),
            cache_dir: args.cache.dir(),
            progress: None,
            workers: args.workers(),
        },
        failures: args.failures.clone(),
        adjust: None,
    };
    let (totals, outcomes) = explore::explore(&options, |d, _| {
        // Above the bar on a terminal, else plainly (the bar is hidden).
        let say = |line: String| {
            if bar.is_hidden() {
                println!("{line}");
            } else {
                bar.println(line);
            }
        };
        say(d.line());
        for e in &d.examples {
            say(format!("      e.g. {e}"));
        }
        if let Some(path) = &d.written {
            say(format!(
                "      written to {} (run it: flowattr sim {0})",
                path.display()
            ));
        }
        bar.inc(1);
    })?;
    bar.finish_and_clear();
    println!();
    print!("{}", totals.table());
    let failing: Vec<_> = outcomes.iter().filter_map(|d| d.written.as_ref()).collect();
    for path in &failing {
        println!("failing draw: {}", path.display());
    }
    if let Some(path) = &args.out.json {
        let json = serde_json::json!({ "totals": totals, "draws": outcomes });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)?;
    }
    Ok(if failing.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
