//! Runs a scenario against collectors already running (`flowattr sim
//! --connect`), over QUIC with mutual TLS, in real time: simulated time
//! starts now and moves with the wall clock, because the collectors hold
//! and expire by their own clocks. Each region's agents ship under one
//! identity, `sim-REGION` (its certificate is made with the CA in the PKI
//! directory); the collectors' `[claims]` must let it claim the region's
//! prefixes. The legacy events are appended to the file the collectors
//! follow (`[legacy] events`), and at the end the ground truth is written
//! for `flowattr ab --truth`.
//!
//! One identity ships for many simulated hosts, so its batches state no
//! completeness watermark (0: the collectors do not wait for it) and carry
//! one incarnation; the hosts' clock skews stay in the flows' times, and
//! the frames' send times are the real shipper's.

use std::{
    io::Write,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use flowattr_collector::clocks::ClockSample;
use flowattr_model::{AttributedFlow, FlowBatch, IpEvent};
use flowattr_transport::{CollectorAddr, Shipper, ShipperConfig, tls::TlsFiles};

use crate::{
    Scenario,
    agents::Truth,
    drive::{Collectors, Progress, SECOND_NS, drive},
    fleet::{Fleet, FleetStats, Host},
};

/// Where the live collectors are and what to write.
#[derive(Clone)]
pub struct ConnectOptions {
    /// Per region (by name): its collectors, in failover order.
    pub collectors: Vec<(String, Vec<CollectorAddr>)>,
    /// A PKI directory with the CA (`ca.pem`, `ca.key`) the collectors trust.
    pub pki: PathBuf,
    /// The legacy event file the collectors follow.
    pub legacy_events: PathBuf,
    /// Where the ground truth (ownership intervals) is written.
    pub truth: PathBuf,
    /// Scratch space (the shippers' spools).
    pub work_dir: PathBuf,
    /// Told how far the run has got, every simulated minute.
    pub progress: Option<Progress>,
}

/// What a connected run did.
#[derive(Debug, Clone)]
pub struct ConnectOutcome {
    pub fleet: FleetStats,
    pub batches: u64,
    /// Flow records the collectors acknowledged.
    pub flows_shipped: u64,
    /// Records of flows still open at the end (not shipped).
    pub unshipped: usize,
    /// Batches left in the spools when the run stopped (should be 0).
    pub left_in_spools: usize,
    pub wall: Duration,
}

/// The agent identity a region's simulated agents ship under.
pub fn agent_identity(region: &str) -> String {
    format!("sim-{region}")
}

struct Live {
    runtime: tokio::runtime::Runtime,
    /// Per region: its shipper, identity and next sequence number.
    shippers: Vec<(Shipper, String, u64)>,
    start_ns: u64,
    started: Instant,
    events: std::fs::File,
    flows: u64,
}

impl Collectors for Live {
    fn advance_to(&mut self, t_ns: u64) -> anyhow::Result<()> {
        let due = self.started + Duration::from_nanos(t_ns - self.start_ns);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        Ok(())
    }

    fn legacy_events(&mut self, events: Vec<IpEvent>) -> anyhow::Result<()> {
        for e in events {
            writeln!(self.events, "{}", serde_json::to_string(&e)?)?;
        }
        Ok(())
    }

    fn shipping(&mut self, _: &AttributedFlow, _: &Truth) {}

    fn ship(&mut self, host: &Host, mut batch: FlowBatch, _: ClockSample) -> anyhow::Result<()> {
        let (shipper, identity, seq) = &mut self.shippers[host.region];
        batch.agent = identity.clone();
        batch.incarnation = self.start_ns;
        batch.complete_until_ns = 0;
        batch.seq = *seq;
        *seq += 1;
        self.flows += batch.flows.len() as u64;
        self.runtime
            .block_on(shipper.send(&batch))
            .with_context(|| format!("shipping as {identity}"))
    }

    fn step_done(&mut self, _: u64) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Runs `scenario` in real time against the collectors in `options`.
pub fn connect(scenario: &Scenario, options: &ConnectOptions) -> anyhow::Result<ConnectOutcome> {
    let started = Instant::now();
    let start_ns = flowattr_collector::service::unix_now_ns() / SECOND_NS * SECOND_NS;
    let identities: Vec<String> = scenario
        .regions
        .iter()
        .map(|r| agent_identity(&r.name))
        .collect();
    let names: Vec<&str> = identities.iter().map(String::as_str).collect();
    flowattr_transport::certs::generate_dev_pki(&options.pki, &[], &names).with_context(|| {
        format!(
            "agent certificates with the CA in {}",
            options.pki.display()
        )
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut shippers = Vec::new();
    for (region, identity) in scenario.regions.iter().zip(&identities) {
        let addrs = options
            .collectors
            .iter()
            .find(|(name, _)| *name == region.name)
            .map(|(_, a)| a.clone())
            .with_context(|| format!("no collector given for region {}", region.name))?;
        let config = ShipperConfig::new(
            addrs,
            TlsFiles::in_dir(&options.pki, identity),
            options.work_dir.join("spool").join(identity),
        );
        let shipper = runtime.block_on(async { Shipper::start(config) })?;
        shippers.push((shipper, identity.clone(), 0));
    }
    let events = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&options.legacy_events)
        .with_context(|| options.legacy_events.display().to_string())?;
    let mut initial = Vec::new();
    let mut fleet = Fleet::new(scenario.clone(), start_ns, &mut initial)?;
    let mut live = Live {
        runtime,
        shippers,
        start_ns,
        started,
        events,
        flows: 0,
    };
    let interval = scenario.agents.batch_interval.as_secs().max(1);
    let end_ns = start_ns + scenario.duration.as_nanos() as u64;
    let driven = drive(
        scenario,
        &mut fleet,
        start_ns,
        end_ns + 2 * interval * SECOND_NS,
        initial,
        &mut live,
        options.progress.as_ref(),
    )?;

    let mut left = 0;
    let Live {
        runtime,
        shippers,
        flows,
        ..
    } = live;
    for (shipper, _, _) in shippers {
        left += runtime.block_on(shipper.shutdown(Duration::from_secs(10)));
    }
    let mut truth = std::io::BufWriter::new(std::fs::File::create(&options.truth)?);
    for o in fleet.ownership(flowattr_collector::service::unix_now_ns()) {
        writeln!(truth, "{}", serde_json::to_string(&o)?)?;
    }
    truth.flush()?;
    Ok(ConnectOutcome {
        fleet: fleet.stats,
        batches: driven.agents.batches,
        flows_shipped: flows,
        unshipped: driven.unshipped,
        left_in_spools: left,
        wall: started.elapsed(),
    })
}
