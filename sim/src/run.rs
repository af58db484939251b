//! Runs a scenario through the real collector core, in process: one core
//! per region with its ownership table, hold queue, journal, the real
//! `sonar-legacy` component (active as the load-balancer fallback, and a
//! second copy in `shadow` mode for the A/B), the real sink plugin and a
//! rotating file output — driven by simulated time instead of the wall
//! clock, one simulated second per step.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashSet},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use flowattr_ab::Report;
use flowattr_collector::{
    core::{Arrival, Core, CoreParts, CoreSettings, Decision, Forwarder, Input},
    journal::Journal,
    metrics::CollectorMetrics,
    output::{FileOutput, FileOutputConfig, Outputs},
    ownership::{OwnershipConfig, OwnershipTable},
    remote::Regions,
};
use flowattr_model::{AttributedFlow, FlowBatch};
use flowattr_plugin_runtime::{
    PluginDirectory, Runtime, RuntimeConfig,
    clock::ManualClock,
    install_plugin,
    manifest::{Manifest, Mode},
};

use crate::{
    fleet::{EPOCH_NS, Fleet, FleetStats, LegacyEvent, Record},
    judge::{Judge, SharedJudge, dependencies},
    scenario::Scenario,
};

const SECOND_NS: u64 = 1_000_000_000;
/// The legacy resolver's name as the fallback, and as the A/B's shadow.
pub const LEGACY_FALLBACK: &str = "sonar-legacy";
pub const LEGACY_SHADOW: &str = "sonar-legacy-shadow";

/// Where the run finds plugins and keeps its files.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// A directory holding `sonar-legacy.wasm`/`.toml` and the sink's (the
    /// installed bundle, `plugins/`).
    pub plugins: PathBuf,
    /// Scratch space: plugin directory, journals, outputs.
    pub work_dir: PathBuf,
    /// Compiled-component cache (shared across runs saves compiling).
    pub cache_dir: Option<PathBuf>,
    /// Log a line per simulated hour.
    pub progress: bool,
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

/// Installs the fallback, the shadow and the sink into `dir`.
fn install_plugins(scenario: &Scenario, from: &Path, dir: &Path) -> anyhow::Result<()> {
    let read = |name: &str| -> anyhow::Result<(Vec<u8>, Manifest)> {
        let wasm = std::fs::read(from.join(format!("{name}.wasm")))
            .with_context(|| format!("{name}.wasm in {} (run scripts/build)", from.display()))?;
        let text = std::fs::read_to_string(from.join(format!("{name}.toml")))
            .with_context(|| format!("{name}.toml in {}", from.display()))?;
        let manifest = Manifest::parse(&text).with_context(|| format!("{name}.toml"))?;
        Ok((wasm, manifest))
    };
    let (legacy, mut manifest) = read("sonar-legacy")?;
    manifest.config.insert(
        "hold_secs".into(),
        toml::Value::Integer(scenario.legacy.hold.as_secs() as i64),
    );
    manifest
        .config
        .insert("retention_secs".into(), toml::Value::Integer(2 * 86_400));
    manifest
        .config
        .insert("max_events".into(), toml::Value::Integer(10_000_000));
    manifest.mode = Mode::Active;
    install_plugin(
        dir,
        LEGACY_FALLBACK,
        &legacy,
        &mut manifest,
        "# The simulator's legacy fallback.\n",
    )?;
    manifest.mode = Mode::Shadow;
    install_plugin(
        dir,
        LEGACY_SHADOW,
        &legacy,
        &mut manifest,
        "# The simulator's A/B shadow.\n",
    )?;
    let sink = &scenario.collector.sink;
    let (wasm, mut manifest) = read(sink)?;
    install_plugin(dir, sink, &wasm, &mut manifest, "# The simulator's sink.\n")?;
    Ok(())
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

/// Runs `scenario` to its end and past it, until every flow is written out.
pub fn run(scenario: &Scenario, options: &RunOptions) -> anyhow::Result<RunOutcome> {
    let started = Instant::now();
    let plugin_dir = options.work_dir.join("plugins");
    install_plugins(scenario, &options.plugins, &plugin_dir)?;
    let plugin_clock = Arc::new(ManualClock::new(EPOCH_NS));
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: options.cache_dir.clone(),
        clock: plugin_clock.clone(),
    })?;
    let clock = Arc::new(AtomicU64::new(EPOCH_NS));
    let judge = Arc::new(Mutex::new(Judge::new(LEGACY_SHADOW)));

    let mut events = Vec::new();
    let mut fleet = Fleet::new(scenario.clone(), &mut events)?;
    let mut collectors = build_collectors(
        scenario,
        &fleet,
        &runtime,
        &plugin_dir,
        &options.work_dir,
        &clock,
        &judge,
    )?;
    let agents = fleet.agents().to_vec();
    let mut outboxes: Vec<Vec<AttributedFlow>> = vec![Vec::new(); agents.len()];
    let mut seqs = vec![0u64; agents.len()];
    let mut in_flight: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut records_by_key: rustc_hash::FxHashMap<u64, Record> = Default::default();
    let mut serial = 0u64;
    let mut pending_events: BinaryHeap<Reverse<(u64, u64)>> = BinaryHeap::new();
    let mut events_by_key: rustc_hash::FxHashMap<u64, LegacyEvent> = Default::default();
    let refused = Arc::new(AtomicU64::new(0));
    let (mut batches, mut forwarded) = (0u64, 0u64);

    let interval = scenario.agents.batch_interval.as_secs().max(1);
    let end_ns = EPOCH_NS + scenario.duration.as_nanos() as u64;
    // Past the end: the last flows finish, ship, wait out the hold, and are
    // forwarded and held again.
    let drain_ns =
        end_ns + 2 * (scenario.collector.hold.as_nanos() as u64 + (interval + 130) * SECOND_NS);
    let mut new_records = Vec::new();
    let mut t = EPOCH_NS;
    while t <= drain_ns {
        clock.store(t, Ordering::Relaxed);
        plugin_clock.set(t);
        if t < end_ns {
            fleet.advance(t + SECOND_NS, &mut new_records, &mut events)?;
            for record in new_records.drain(..) {
                serial += 1;
                in_flight.push(Reverse((record.end_ns, serial)));
                records_by_key.insert(serial, record);
            }
        }
        for event in events.drain(..) {
            serial += 1;
            pending_events.push(Reverse((event.arrival_ns, serial)));
            events_by_key.insert(serial, event);
        }
        // Legacy events that have arrived, to every collector.
        let mut arrived = Vec::new();
        while let Some(&Reverse((at, key))) = pending_events.peek()
            && at <= t
        {
            pending_events.pop();
            arrived.push(events_by_key.remove(&key).expect("event").event);
        }
        if !arrived.is_empty() {
            for c in &mut collectors {
                c.core.handle(Input::IpEvents(arrived.clone()));
            }
        }
        // Finished flows wait in their agent's outbox.
        while let Some(&Reverse((end, key))) = in_flight.peek()
            && end <= t
        {
            in_flight.pop();
            let record = records_by_key.remove(&key).expect("record");
            judge.lock().expect("judge").expect(
                record.flow.flow.remote,
                record.flow.flow.start_ns,
                record.owner,
            );
            outboxes[record.agent].push(record.flow);
        }
        // Each agent ships on its own phase of the interval.
        let second = (t - EPOCH_NS) / SECOND_NS;
        for (a, agent) in agents.iter().enumerate() {
            if second % interval == a as u64 % interval && !outboxes[a].is_empty() {
                let batch = FlowBatch {
                    agent: agent.name.clone(),
                    incarnation: EPOCH_NS,
                    seq: seqs[a],
                    created_ns: t,
                    flows: std::mem::take(&mut outboxes[a]),
                };
                seqs[a] += 1;
                batches += 1;
                deliver(
                    &mut collectors[agent.region].core,
                    agent.name.clone(),
                    batch,
                    &refused,
                )?;
            }
        }
        for c in &mut collectors {
            let inbox = std::mem::take(&mut *c.inbox.lock().expect("inbox"));
            for (from, batch) in inbox {
                forwarded += 1;
                deliver(&mut c.core, from, batch, &refused)?;
            }
            c.core.tick();
        }
        if options.progress && second > 0 && second.is_multiple_of(3600) {
            tracing::info!(
                hour = second / 3600,
                records = fleet.stats.records,
                batches,
                "simulated"
            );
        }
        t += SECOND_NS;
    }
    anyhow::ensure!(
        refused.load(Ordering::Relaxed) == 0,
        "the collectors refused {} batches",
        refused.load(Ordering::Relaxed)
    );
    drop(collectors);
    let judge = judge.lock().expect("judge");
    let report = judge
        .tally
        .report(scenario.focus.as_deref(), &dependencies(scenario));
    Ok(RunOutcome {
        report,
        fleet: fleet.stats,
        batches,
        forwarded_batches: forwarded,
        lost: judge.outstanding() + outboxes.iter().map(Vec::len).sum::<usize>() + in_flight.len(),
        unknown: judge.unknown,
        collisions: judge.collisions,
        simulated: scenario.duration,
        wall: started.elapsed(),
    })
}
