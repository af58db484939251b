//! Runs a scenario through the real collector core, in process: one core
//! per region with its ownership table, hold queue, journal, the real
//! `sonar-legacy` component (active as the load-balancer fallback, and a
//! second copy in `shadow` mode for the A/B), the real sink plugin and a
//! rotating file output — driven by simulated time instead of the wall
//! clock, one simulated second per step.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use flowattr_ab::Report;
use flowattr_collector::{
    core::{Arrival, Core, CoreParts, CoreSettings, Decision, Forwarder, Input},
    journal::Journal,
    metrics::CollectorMetrics,
    output::{FileOutput, FileOutputConfig, Outputs},
    ownership::{OwnershipConfig, OwnershipTable},
    remote::Regions,
};
use flowattr_model::{FlowBatch, IpEvent};
use flowattr_plugin_runtime::{
    PluginDirectory, Runtime, RuntimeConfig,
    clock::ManualClock,
    copy_plugin,
    manifest::{Manifest, Mode},
};

use crate::{
    drive::{Collectors, Progress, SECOND_NS, drive},
    fleet::{Agent, EPOCH_NS, Fleet, FleetStats, Record},
    judge::{Judge, SharedJudge, dependencies},
    scenario::Scenario,
};

/// The legacy resolver's name as the fallback, and as the A/B's shadow.
pub const LEGACY_FALLBACK: &str = "sonar-legacy";
pub const LEGACY_SHADOW: &str = "sonar-legacy-shadow";

/// Where the run finds plugins and keeps its files.
#[derive(Clone)]
pub struct RunOptions {
    /// A directory holding `sonar-legacy.wasm`/`.toml` and the sink's (the
    /// installed bundle, `plugins/`).
    pub plugins: PathBuf,
    /// Scratch space: plugin directory, journals, outputs.
    pub work_dir: PathBuf,
    /// Compiled-component cache (shared across runs saves compiling).
    pub cache_dir: Option<PathBuf>,
    /// Told how far the run has got, every simulated minute.
    pub progress: Option<Progress>,
}

/// What a run found and did.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub report: Report,
    pub fleet: FleetStats,
    pub batches: u64,
    pub forwarded_batches: u64,
    /// Records shipped that never came out compared (must be 0).
    pub lost: usize,
    /// Compared flows the simulator never sent (must be 0).
    pub unknown: u64,
    /// Records not judged because another had the same key.
    pub collisions: u64,
    pub simulated: Duration,
    pub wall: Duration,
}

/// Where one region's collector forwards: the other region's inbox.
struct Inbox(Arc<Mutex<Vec<(String, FlowBatch)>>>, String);

impl Forwarder for Inbox {
    fn forward(&mut self, batch: FlowBatch) -> Result<(), (String, FlowBatch)> {
        self.0.lock().expect("inbox").push((self.1.clone(), batch));
        Ok(())
    }
}

fn collector_name(region: &str) -> String {
    format!("collector-{region}")
}

/// Installs the collector plugins a simulation needs into `dir`, from the
/// bundle in `from`: `sonar-legacy` as the active fallback and again as the
/// `shadow` for the A/B (with the scenario's legacy hold), and the
/// scenario's sink.
pub fn install_collector_plugins(
    scenario: &Scenario,
    from: &Path,
    dir: &Path,
) -> anyhow::Result<()> {
    let legacy = |mode: Mode| {
        move |m: &mut Manifest| {
            m.mode = mode;
            let settings = [
                ("hold_secs", scenario.legacy.hold.as_secs() as i64),
                ("retention_secs", 2 * 86_400),
                ("max_events", 10_000_000),
            ];
            for (key, value) in settings {
                m.config.insert(key.into(), toml::Value::Integer(value));
            }
            Ok(())
        }
    };
    let header = "# Installed by the simulator.\n";
    copy_plugin(
        from,
        "sonar-legacy",
        dir,
        LEGACY_FALLBACK,
        header,
        legacy(Mode::Active),
    )?;
    copy_plugin(
        from,
        "sonar-legacy",
        dir,
        LEGACY_SHADOW,
        header,
        legacy(Mode::Shadow),
    )?;
    let sink = &scenario.collector.sink;
    copy_plugin(from, sink, dir, sink, header, |_| Ok(()))
}

/// One region's collector.
struct RegionCollector {
    core: Core,
    inbox: Arc<Mutex<Vec<(String, FlowBatch)>>>,
}

fn build_collectors(
    scenario: &Scenario,
    fleet: &Fleet,
    runtime: &Runtime,
    plugin_dir: &Path,
    work_dir: &Path,
    clock: &Arc<AtomicU64>,
    judge: &Arc<Mutex<Judge>>,
) -> anyhow::Result<Vec<RegionCollector>> {
    let inboxes: Vec<_> = scenario
        .regions
        .iter()
        .map(|_| Arc::new(Mutex::new(Vec::new())))
        .collect();
    let mut out = Vec::new();
    for (r, region) in scenario.regions.iter().enumerate() {
        let name = collector_name(&region.name);
        let (directory, report) = PluginDirectory::open(runtime, plugin_dir)?;
        if let Some(refused) = report.refused.first() {
            anyhow::bail!("plugin {} refused: {}", refused.name, refused.reason);
        }
        let mut table = OwnershipTable::new(OwnershipConfig {
            max_skew_ns: scenario.collector.max_skew.as_nanos() as u64,
            ..OwnershipConfig::default()
        });
        for agent in fleet.agents().iter().filter(|a| a.region == r) {
            table.allow(&agent.name, [region.ipv4, region.ipv6]);
        }
        let dir = work_dir.join(&region.name);
        let (journal, _) = Journal::open(&dir.join("journal"), 100_000)?;
        let output = FileOutput::new(FileOutputConfig {
            dir: dir.join("out"),
            prefix: "flows".into(),
            extension: "out".into(),
            rotate_bytes: 64 << 20,
            rotate_after: Duration::from_secs(3600),
            keep_files: 2,
        })?;
        let others: Vec<usize> = (0..scenario.regions.len()).filter(|&o| o != r).collect();
        let regions = Regions::new(others.iter().map(|&o| {
            let x = &scenario.regions[o];
            (x.name.clone(), vec![x.ipv4, x.ipv6, x.load_balancers])
        }));
        let forwarders = others
            .iter()
            .map(|&o| Box::new(Inbox(inboxes[o].clone(), name.clone())) as Box<dyn Forwarder>)
            .collect();
        let now = clock.clone();
        let core = Core::new(
            CoreSettings {
                name: name.clone(),
                incarnation: EPOCH_NS,
                hold: scenario.collector.hold,
                max_held_flows: 4_000_000,
                remember_batches: 100_000,
                sink: scenario.collector.sink.clone(),
                sink_batch: 4096,
                forward_peers: others
                    .iter()
                    .map(|&o| collector_name(&scenario.regions[o].name))
                    .collect::<HashSet<_>>(),
                shadow_hold: scenario.legacy.hold,
            },
            CoreParts {
                table,
                journal,
                outputs: Outputs::new(vec![Box::new(output)], 256 << 20),
                regions,
                forwarders,
                sharing: None,
                plugins: Arc::new(directory),
                metrics: Arc::new(CollectorMetrics::new()),
                clock: Box::new(move || now.load(Ordering::Relaxed)),
                comparison: Some(Box::new(SharedJudge(judge.clone()))),
            },
        );
        out.push(RegionCollector {
            core,
            inbox: inboxes[r].clone(),
        });
    }
    Ok(out)
}

/// Hands a batch to a core as it would arrive over QUIC (frame body and
/// all, for the journal); counts a refusal.
fn deliver(
    core: &mut Core,
    peer: String,
    batch: FlowBatch,
    refused: &Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut frame = Vec::new();
    flowattr_transport::codec::encode_batch(&batch, &mut frame)?;
    let refused = refused.clone();
    core.handle(Input::Arrival(Arrival {
        peer,
        batch,
        body: frame.split_off(4),
        reply: Box::new(move |d| {
            if !matches!(d, Decision::Accepted) {
                refused.fetch_add(1, Ordering::Relaxed);
            }
        }),
    }));
    Ok(())
}

/// The in-process collectors on simulated time.
struct InProcess {
    regions: Vec<RegionCollector>,
    clock: Arc<AtomicU64>,
    plugin_clock: Arc<ManualClock>,
    judge: Arc<Mutex<Judge>>,
    refused: Arc<AtomicU64>,
    forwarded: u64,
}

impl Collectors for InProcess {
    fn advance_to(&mut self, t_ns: u64) -> anyhow::Result<()> {
        self.clock.store(t_ns, Ordering::Relaxed);
        self.plugin_clock.set(t_ns);
        Ok(())
    }

    fn legacy_events(&mut self, events: Vec<IpEvent>) -> anyhow::Result<()> {
        for c in &mut self.regions {
            c.core.handle(Input::IpEvents(events.clone()));
        }
        Ok(())
    }

    fn shipping(&mut self, record: &Record) {
        self.judge.lock().expect("judge").expect(
            record.flow.flow.remote,
            record.flow.flow.start_ns,
            record.owner.clone(),
        );
    }

    fn ship(&mut self, agent: &Agent, batch: FlowBatch) -> anyhow::Result<()> {
        deliver(
            &mut self.regions[agent.region].core,
            agent.name.clone(),
            batch,
            &self.refused,
        )
    }

    fn step_done(&mut self, _: u64) -> anyhow::Result<()> {
        for c in &mut self.regions {
            let inbox = std::mem::take(&mut *c.inbox.lock().expect("inbox"));
            for (from, batch) in inbox {
                self.forwarded += 1;
                deliver(&mut c.core, from, batch, &self.refused)?;
            }
            c.core.tick();
        }
        Ok(())
    }
}

/// Runs `scenario` to its end and past it, until every flow is written out.
pub fn run(scenario: &Scenario, options: &RunOptions) -> anyhow::Result<RunOutcome> {
    let started = Instant::now();
    let plugin_dir = options.work_dir.join("plugins");
    install_collector_plugins(scenario, &options.plugins, &plugin_dir)?;
    let plugin_clock = Arc::new(ManualClock::new(EPOCH_NS));
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: options.cache_dir.clone(),
        clock: plugin_clock.clone(),
    })?;
    let clock = Arc::new(AtomicU64::new(EPOCH_NS));
    let judge = Arc::new(Mutex::new(Judge::new(LEGACY_SHADOW)));

    let mut events = Vec::new();
    let mut fleet = Fleet::new(scenario.clone(), EPOCH_NS, &mut events)?;
    let regions = build_collectors(
        scenario,
        &fleet,
        &runtime,
        &plugin_dir,
        &options.work_dir,
        &clock,
        &judge,
    )?;
    let mut collectors = InProcess {
        regions,
        clock,
        plugin_clock,
        judge: judge.clone(),
        refused: Arc::new(AtomicU64::new(0)),
        forwarded: 0,
    };
    let interval = scenario.agents.batch_interval.as_secs().max(1);
    // Past the end: the last flows finish, ship, wait out the hold, and are
    // forwarded and held again.
    let drain_ns = EPOCH_NS
        + scenario.duration.as_nanos() as u64
        + 2 * (scenario.collector.hold.as_nanos() as u64 + (interval + 130) * SECOND_NS)
        + scenario.legacy.hold.as_nanos() as u64;
    let driven = drive(
        scenario,
        &mut fleet,
        EPOCH_NS,
        drain_ns,
        events,
        &mut collectors,
        options.progress.as_ref(),
    )?;
    let refused = collectors.refused.load(Ordering::Relaxed);
    anyhow::ensure!(refused == 0, "the collectors refused {refused} batches");
    let forwarded_batches = collectors.forwarded;
    drop(collectors);
    let judge = judge.lock().expect("judge");
    let report = judge
        .tally
        .report(scenario.focus.as_deref(), &dependencies(scenario));
    Ok(RunOutcome {
        report,
        fleet: fleet.stats,
        batches: driven.batches,
        forwarded_batches,
        lost: judge.outstanding() + driven.unshipped,
        unknown: judge.unknown,
        collisions: judge.collisions,
        simulated: scenario.duration,
        wall: started.elapsed(),
    })
}
