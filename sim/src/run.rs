//! Runs a scenario through the real collector core, in process: one core
//! per region with its ownership table, hold queue, journal, the real
//! `sonar-legacy` component (active as the fallback for addresses no agent
//! may claim, and a second copy in `shadow` mode for the A/B), the real
//! sink plugin and a rotating file output — driven by simulated time
//! instead of the wall clock, one simulated second per step, with batches
//! read when their network delay has passed.
//!
//! A collector restart (`[[collector.restarts]]`) drops the region's core
//! and, once it is back, builds a new one (a new incarnation, an empty
//! ownership table) that recovers from the same journal directory as the
//! real collector does at start: written-out ids become duplicates, and
//! pending batches are decoded and held again.

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
    clocks::ClockSample,
    core::{Arrival, Core, CoreParts, CoreSettings, Decision, Forwarder, Input},
    journal::{Journal, MemoryStore, Recovery},
    metrics::CollectorMetrics,
    output::{FileOutput, FileOutputConfig, Outputs},
    ownership::{OwnershipConfig, OwnershipTable},
    remote::Regions,
};
use flowattr_model::{AttributedFlow, FlowBatch, IpEvent};
use flowattr_plugin_runtime::{
    PluginDirectory, Runtime, RuntimeConfig,
    clock::ManualClock,
    copy_plugin,
    manifest::{Manifest, Mode},
};

use crate::{
    agents::{AgentStats, Truth},
    drive::{Collectors, Progress, SECOND_NS, drive},
    fleet::{EPOCH_NS, Fleet, FleetStats, Host},
    judge::{Judge, LocalJudged, SharedJudge, dependencies},
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
    /// Each collector's workers (`[collector] workers`). Every step waits
    /// for its formatting, so a run's outcome is the same for any count.
    pub workers: usize,
}

/// What a run found and did.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub report: Report,
    pub fleet: FleetStats,
    /// What the agents did and missed by design (agentless hosts, crashes,
    /// lost batches: flows never expected), and their local answers.
    pub agents: AgentStats,
    /// The agents' local sides against the truth.
    pub local: LocalJudged,
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

/// Batches forwarded to a region's collector: (sender, batch).
type Shared = Arc<Mutex<Vec<(String, FlowBatch)>>>;

/// Where one region's collector forwards: the other region's inbox.
struct Inbox(Shared, String);

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

/// One region's collector: its core, or, while it is down, the batches
/// waiting for it.
struct RegionCollector {
    core: Option<Core>,
    inbox: Shared,
    /// While down: when it is back, and the batches sent to it meanwhile.
    down: Option<(u64, Vec<(String, FlowBatch)>)>,
    /// Cores built so far (each writes its own output directory).
    incarnations: u32,
}

/// Builds a region's collector core, at the start and after a restart.
struct Builder {
    scenario: Scenario,
    hosts: Vec<Host>,
    runtime: Runtime,
    plugin_dir: PathBuf,
    work_dir: PathBuf,
    clock: Arc<AtomicU64>,
    judge: Arc<Mutex<Judge>>,
    inboxes: Vec<Shared>,
    /// Each region's journal, kept in memory across its collector's
    /// restarts (the simulation kills processes, not machines).
    journals: Vec<MemoryStore>,
    /// Each core's formatting workers.
    workers: usize,
}

impl Builder {
    /// Region `r`'s core, incarnation `n`, started at `now_ns`, and what
    /// its journal held.
    fn core(&self, r: usize, n: u32, now_ns: u64) -> anyhow::Result<(Core, Recovery)> {
        let scenario = &self.scenario;
        let region = &scenario.regions[r];
        let name = collector_name(&region.name);
        let (directory, report) = PluginDirectory::open(&self.runtime, &self.plugin_dir)?;
        if let Some(refused) = report.refused.first() {
            anyhow::bail!("plugin {} refused: {}", refused.name, refused.reason);
        }
        let mut table = OwnershipTable::new(OwnershipConfig {
            max_skew_ns: scenario.collector.max_skew.as_nanos() as u64,
            ..OwnershipConfig::default()
        });
        // Agents claim their region's instances and containers; load
        // balancers' addresses (their own IPv4 prefix, IPv6 above the
        // container pool) are no agent's, so the resolver answers for them.
        for host in self.hosts.iter().filter(|h| h.region == r && h.agent) {
            table.allow(&host.name, [region.ipv4, region.ipv6_pool()]);
        }
        let dir = self.work_dir.join(&region.name);
        let (journal, recovered) =
            Journal::with_store(Box::new(self.journals[r].clone()), 100_000)?;
        let output = FileOutput::new(FileOutputConfig {
            dir: dir.join(format!("out-{n}")),
            prefix: "flows".into(),
            extension: "out".into(),
            rotate_bytes: 64 << 20,
            rotate_after: Duration::from_secs(3600),
            keep_files: 2,
            file_per_chunk: false,
        })?;
        let others: Vec<usize> = (0..scenario.regions.len()).filter(|&o| o != r).collect();
        let regions = Regions::new(others.iter().map(|&o| {
            let x = &scenario.regions[o];
            (x.name.clone(), vec![x.ipv4, x.ipv6, x.load_balancers])
        }));
        let forwarders = others
            .iter()
            .map(|&o| Box::new(Inbox(self.inboxes[o].clone(), name.clone())) as Box<dyn Forwarder>)
            .collect();
        let now = self.clock.clone();
        let core = Core::new(
            CoreSettings {
                name: name.clone(),
                incarnation: now_ns,
                hold: scenario.collector.hold,
                silent_after: scenario.collector.silent_after,
                max_held_flows: 4_000_000,
                remember_batches: 100_000,
                sink: scenario.collector.sink.clone(),
                sink_batch: 4096,
                workers: self.workers,
                forward_peers: others
                    .iter()
                    .map(|&o| collector_name(&scenario.regions[o].name))
                    .collect::<HashSet<_>>(),
                shadow_hold: scenario.legacy.hold.max(scenario.legacy.asked_after),
                arrival_queue_batches: 256,
                arrival_queue_bytes: 256 << 20,
                refuse_unclaimed_agents: true,
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
                comparison: Some(Box::new(SharedJudge(self.judge.clone()))),
            },
        );
        Ok((core, recovered))
    }
}

/// Batches handed to cores and not yet decided, and those refused.
#[derive(Default)]
struct Decisions {
    undecided: AtomicU64,
    rejected: AtomicU64,
}

/// Hands a batch to a core as it would arrive over QUIC (frame body and
/// all, for the journal, with its timing); counts the decision.
fn deliver(
    core: &mut Core,
    peer: String,
    batch: FlowBatch,
    clock: ClockSample,
    decisions: &Arc<Decisions>,
) -> anyhow::Result<()> {
    let mut frame = Vec::new();
    flowattr_transport::codec::encode_batch(&batch, &mut frame)?;
    decisions.undecided.fetch_add(1, Ordering::Relaxed);
    let decisions = decisions.clone();
    core.handle(Input::Arrival(Arrival {
        peer,
        batch,
        body: frame.split_off(flowattr_transport::codec::LENGTH_PREFIX),
        clock: Some(clock),
        reply: Box::new(move |d| {
            decisions.undecided.fetch_sub(1, Ordering::Relaxed);
            if matches!(d, Decision::Rejected(_) | Decision::Unclaimed(_)) {
                decisions.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }),
    }));
    Ok(())
}

/// The in-process collectors on simulated time.
struct InProcess {
    builder: Builder,
    regions: Vec<RegionCollector>,
    /// Restarts not yet begun, soonest last: (at, region, down for).
    restarts: Vec<(u64, usize, u64)>,
    /// Every legacy event so far, when a collector will restart.
    keep_events: bool,
    events: Vec<IpEvent>,
    plugin_clock: Arc<ManualClock>,
    decisions: Arc<Decisions>,
    forwarded: u64,
}

impl InProcess {
    /// Stops the collectors due to restart, and starts those due back.
    fn restart_due(&mut self, t_ns: u64) -> anyhow::Result<()> {
        while let Some(&(at, r, down)) = self.restarts.last()
            && at <= t_ns
        {
            self.restarts.pop();
            let c = &mut self.regions[r];
            if c.core.take().is_some() {
                c.down = Some((at + down, Vec::new()));
            }
        }
        for r in 0..self.regions.len() {
            let Some((back, _)) = self.regions[r].down else {
                continue;
            };
            if back > t_ns {
                continue;
            }
            let (_, waiting) = self.regions[r].down.take().expect("down");
            let c = &mut self.regions[r];
            c.incarnations += 1;
            let (mut core, recovered) = self.builder.core(r, c.incarnations, t_ns)?;
            // Like `flowattr collector`: the legacy events file is read from
            // its start, then the journal replayed, then batches taken.
            if !self.events.is_empty() {
                core.handle(Input::IpEvents(self.events.clone()));
            }
            core.recover(recovered, flowattr_collector::service::decode_journal_body);
            for (peer, batch) in waiting {
                let sample = self.resent(&peer, t_ns);
                deliver(&mut core, peer, batch, sample, &self.decisions)?;
            }
            self.regions[r].core = Some(core);
        }
        Ok(())
    }

    /// The timing of a batch that waited for its collector to come back:
    /// the agent's spool sends it again now, stamped now on its clock.
    fn resent(&self, peer: &str, now_ns: u64) -> ClockSample {
        let sent_ns = self
            .builder
            .hosts
            .iter()
            .find(|h| h.name == peer)
            .map_or(now_ns, |h| h.clock(now_ns));
        ClockSample {
            sent_ns,
            received_ns: now_ns,
            rtt_ns: self.builder.scenario.network.rtt.as_nanos() as u64,
        }
    }
}

impl Collectors for InProcess {
    fn advance_to(&mut self, t_ns: u64) -> anyhow::Result<()> {
        self.builder.clock.store(t_ns, Ordering::Relaxed);
        self.plugin_clock.set(t_ns);
        self.restart_due(t_ns)
    }

    fn legacy_events(&mut self, events: Vec<IpEvent>) -> anyhow::Result<()> {
        for core in self.regions.iter_mut().filter_map(|c| c.core.as_mut()) {
            core.handle(Input::IpEvents(events.clone()));
        }
        // A collector down now reads them from the file when it is back.
        if self.keep_events {
            self.events.extend(events);
        }
        Ok(())
    }

    fn shipping(&mut self, flow: &AttributedFlow, truth: &Truth) {
        self.builder.judge.lock().expect("judge").expect(
            flow.flow.remote,
            flow.flow.start_ns,
            truth.remote.clone(),
            truth.local.clone(),
        );
    }

    fn ship(&mut self, host: &Host, batch: FlowBatch, sample: ClockSample) -> anyhow::Result<()> {
        let c = &mut self.regions[host.region];
        match (&mut c.core, &mut c.down) {
            (Some(core), _) => deliver(core, host.name.clone(), batch, sample, &self.decisions),
            (None, Some((_, waiting))) => {
                waiting.push((host.name.clone(), batch));
                Ok(())
            }
            (None, None) => unreachable!("a collector is up or down"),
        }
    }

    fn step_done(&mut self, t_ns: u64) -> anyhow::Result<()> {
        for c in &mut self.regions {
            let Some(core) = &mut c.core else {
                continue; // its inbox waits for it
            };
            let inbox = std::mem::take(&mut *c.inbox.lock().expect("inbox"));
            for (from, batch) in inbox {
                self.forwarded += 1;
                // Collectors' clocks are exact here, and the link is in memory.
                let sample = ClockSample {
                    sent_ns: t_ns,
                    received_ns: t_ns,
                    rtt_ns: 0,
                };
                deliver(core, from, batch, sample, &self.decisions)?;
            }
            core.tick();
            core.finish_formatting();
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
        instances: options.workers,
        ..RuntimeConfig::default()
    })?;
    let clock = Arc::new(AtomicU64::new(EPOCH_NS));
    let judge = Arc::new(Mutex::new(Judge::new(LEGACY_SHADOW)));

    let mut events = Vec::new();
    let mut fleet = Fleet::new(scenario.clone(), EPOCH_NS, &mut events)?;
    let builder = Builder {
        scenario: scenario.clone(),
        hosts: fleet.hosts().to_vec(),
        runtime,
        plugin_dir,
        work_dir: options.work_dir.clone(),
        clock,
        judge: judge.clone(),
        workers: options.workers,
        journals: scenario
            .regions
            .iter()
            .map(|_| MemoryStore::new())
            .collect(),
        inboxes: scenario
            .regions
            .iter()
            .map(|_| Arc::new(Mutex::new(Vec::new())))
            .collect(),
    };
    let mut regions = Vec::new();
    for r in 0..scenario.regions.len() {
        let (core, _) = builder.core(r, 0, EPOCH_NS)?;
        regions.push(RegionCollector {
            core: Some(core),
            inbox: builder.inboxes[r].clone(),
            down: None,
            incarnations: 0,
        });
    }
    let mut restarts: Vec<(u64, usize, u64)> = scenario
        .collector
        .restarts
        .iter()
        .map(|x| {
            (
                EPOCH_NS + x.at.as_nanos() as u64,
                scenario.region(&x.region).expect("checked"),
                x.down.as_nanos() as u64,
            )
        })
        .collect();
    restarts.sort_by(|a, b| b.cmp(a));
    let mut collectors = InProcess {
        builder,
        regions,
        keep_events: !restarts.is_empty(),
        restarts,
        events: Vec::new(),
        plugin_clock,
        decisions: Arc::new(Decisions::default()),
        forwarded: 0,
    };
    let drain_ns = EPOCH_NS + scenario.duration.as_nanos() as u64 + drain_after(scenario);
    let driven = drive(
        scenario,
        &mut fleet,
        EPOCH_NS,
        drain_ns,
        events,
        &mut collectors,
        options.progress.as_ref(),
    )?;
    let decisions = &collectors.decisions;
    let (rejected, undecided) = (
        decisions.rejected.load(Ordering::Relaxed),
        decisions.undecided.load(Ordering::Relaxed),
    );
    anyhow::ensure!(
        rejected == 0 && undecided == 0,
        "the collectors rejected {rejected} batches and never decided {undecided}"
    );
    let forwarded_batches = collectors.forwarded;
    drop(collectors);
    let judge = judge.lock().expect("judge");
    let report = judge
        .tally
        .report(scenario.focus.as_deref(), &dependencies(scenario));
    Ok(RunOutcome {
        report,
        fleet: fleet.stats,
        batches: driven.agents.batches,
        agents: driven.agents,
        local: judge.local.clone(),
        forwarded_batches,
        lost: judge.outstanding() + driven.unshipped,
        unknown: judge.unknown,
        collisions: judge.collisions,
        simulated: scenario.duration,
        wall: started.elapsed(),
    })
}

/// How long to run on past the scenario's end: the last flows finish, ship
/// (after any silence, backlog or resend), wait out the hold, and are
/// forwarded and held again.
fn drain_after(scenario: &Scenario) -> u64 {
    let a = &scenario.agents;
    let mut late = a.batch_interval.as_secs().max(1) + 130;
    if a.silences_per_hour > 0.0 {
        late += a.silence_max.as_secs() + 1;
    }
    if a.restarts_per_hour > 0.0 {
        late += a.restart_downtime.as_secs() + 1;
    }
    if a.duplicated > 0.0 {
        late += 31;
    }
    if scenario.network.backlog > 0.0 {
        late += scenario.network.backlog_max.as_secs() + 1;
    }
    let down = scenario
        .collector
        .restarts
        .iter()
        .map(|r| r.down.as_secs() + 1)
        .max();
    late += down.unwrap_or(0);
    2 * (scenario.collector.hold.as_nanos() as u64 + late * SECOND_NS)
        + scenario.legacy.hold.as_nanos() as u64
}
