//! The agent's wiring: the kernel capture feeds a pipeline thread that
//! attributes, applies policy, batches and writes; metrics are served on the
//! side.
//!
//! ```text
//! ring buffer ─read task (tokio)─▶ channel ─pipeline thread─▶ identity chain ─▶ policy chain ─▶ batcher ─▶ output
//! ```
//!
//! **Watermark.** Each batch says how far the agent's capture is complete
//! (`FlowBatch::complete_until_ns`). It is measured, not assumed: every
//! ring-buffer read notes when its last pass over the ring began, and that
//! instant travels with the read's flows down the same channel, so it
//! reaches the batcher exactly when they do. A fixed allowance for what is
//! in flight (the poll interval plus the pipeline's tick) would hold only
//! while the pipeline keeps up; under backpressure records wait in the ring
//! buffer for longer, and the measured watermark waits with them:
//!
//! ```text
//! complete_until_ns = wall(start of the last pass over the ring whose flows are pushed) − COMMIT_MARGIN
//! ```
//!
//! When nothing is captured, a read still passes over the ring every
//! `poll_interval + IDLE_READ`, and the batcher closes an empty batch every
//! `max_age`, so the watermark advances on an idle host too.
//!
//! **Privileges.** Root is needed to load and attach the programs, and for
//! nothing after: once they are attached the agent becomes
//! `[privileges] user` with no capabilities ([`privileges`]), and only then
//! loads plugins.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context as _;
use flowattr_host_ebpf::FlowEvent;
use flowattr_model::{AttributedFlow, Flow, FlowBatch, Side, UnattributedReason};
use flowattr_plugin_runtime::{
    Plugin, PluginDirectory, Runtime, RuntimeConfig,
    manifest::{Mode, PluginKind},
};
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;

use crate::{
    attribution::{AttributionObserver, LocalAttributor, Outcome},
    batcher::Batcher,
    capture::{Capture, WallClock, decode},
    config::AgentConfig,
    metrics::AgentMetrics,
    output::{JsonLinesOutput, Output, QuicOutput},
    policy::{self, PolicyDrop},
    privileges,
};

/// How often the pipeline attributes the flows it has gathered and checks
/// the open batch's age. Plugins are called once per tick (or per
/// [`ATTRIBUTION_BATCH`] flows), not once per ring buffer read.
const TICK: Duration = Duration::from_millis(100);

/// Gathered flows are attributed at once when there are this many.
const ATTRIBUTION_BATCH: usize = 4096;

/// A read waits at most this long for records before passing over the ring
/// anyway, so the watermark advances while nothing is captured.
const IDLE_READ: Duration = Duration::from_millis(100);

/// The compile cache of an agent that drops root, unless configured.
const DROPPED_CACHE_DIR: &str = "/var/cache/flowattr";

/// Taken off a read's watermark: a record the kernel was still writing when
/// the ring was read holds back the records behind it until the next read,
/// and a BPF program writes its record within microseconds.
const COMMIT_MARGIN: Duration = Duration::from_millis(1);

/// What the pipeline thread receives.
enum Input {
    /// One read's flows: with those sent before, every flow whose record
    /// the kernel wrote before `complete_ns` (wall clock).
    Flows { flows: Vec<Flow>, complete_ns: u64 },
    /// Time passed: close the open batch if it is due.
    Tick,
}

/// Runs the agent until `shutdown` completes, then writes the open batch and
/// returns. Fails with one clear sentence when the machine cannot run it (not
/// root, no BTF, no BPF), or when its configured name is not the one in its
/// certificate.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // First: a name collectors would refuse is a configuration error, not
    // batches lost one by one once the agent runs.
    let name = config.agent_name().map_err(anyhow::Error::msg)?;
    let become_user = privileges::resolve(&config.privileges.user)?;
    let mut capture = Capture::start(config.capture.settings())?;
    let metrics = Arc::new(AgentMetrics::new());
    if let Some(reader) = capture.take_counters() {
        metrics.watch_kernel(reader);
    }

    let _server = if config.metrics.enabled {
        let listener = tokio::net::TcpListener::bind(config.metrics.listen)
            .await
            .with_context(|| format!("metrics endpoint {}", config.metrics.listen))?;
        tracing::info!(address = %config.metrics.listen, "serving metrics");
        let m = metrics.clone();
        Some(AbortOnDrop(tokio::spawn(flowattr_daemon::metrics::serve(
            listener,
            Arc::new(move || m.render()),
        ))))
    } else {
        None
    };

    let (output, shipper) = match &config.transport {
        Some(transport) => {
            if let Some(user) = &become_user {
                privileges::hand_over(&transport.spool_dir, user)?;
            }
            let shipper = flowattr_transport::Shipper::start(transport.shipper_config())
                .context("starting the transport to collectors")?;
            metrics.watch_shipper(shipper.counters());
            let shipper = Arc::new(shipper);
            let output = QuicOutput::new(shipper.clone(), tokio::runtime::Handle::current());
            tracing::info!(collectors = ?transport.collectors, spool = %transport.spool_dir.display(), "shipping batches to collectors");
            (Output::Quic(output), Some(shipper))
        }
        None => {
            let output = JsonLinesOutput::open(config.output.path.as_deref())
                .context("opening the output")?;
            (Output::JsonLines(output), None)
        }
    };
    // Everything only root may do is done: the programs are attached, the
    // metrics socket bound, the output and the TLS key open.
    let cache_dir = match &become_user {
        Some(user) => {
            let dir = config
                .plugins
                .cache_dir
                .clone()
                .unwrap_or_else(|| DROPPED_CACHE_DIR.into());
            privileges::hand_over(&dir, user)?;
            privileges::drop_to(user)?;
            let (permitted, effective) = privileges::capabilities()?;
            tracing::info!(user = %user.name, uid = user.uid, permitted = format!("{permitted:x}"), effective = format!("{effective:x}"), "dropped root");
            Some(dir)
        }
        None => {
            tracing::warn!(
                "running as root for the agent's whole life ([privileges] user = \"root\")"
            );
            config.plugins.cache_dir.clone()
        }
    };
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir,
        trust: config.plugins.trust()?,
        ..RuntimeConfig::default()
    })?;
    // Plugins run off the async threads: WASI's synchronous file system
    // blocks on its own runtime.
    let plugin_dir = config.plugins.directory.clone();
    let (directory, report) =
        tokio::task::spawn_blocking(move || PluginDirectory::open(&runtime, plugin_dir)).await??;
    for refusal in &report.refused {
        tracing::warn!(plugin = %refusal.name, reason = %refusal.reason, "plugin refused");
    }
    let directory = Arc::new(directory);
    let _watch = if config.plugins.watch {
        Some(directory.watch().context("watching the plugin directory")?)
    } else {
        None
    };
    metrics.watch_plugins(directory.clone());

    let (tx, rx) = mpsc::channel(256);
    let started_ns = unix_now_ns();
    let pipeline = Pipeline {
        directory,
        gathered: Vec::new(),
        complete_ns: 0,
        attributor: LocalAttributor::new(config.attribution.cache_entries),
        batcher: Batcher::new(
            name.clone(),
            started_ns,
            config.batch.max_flows,
            config.batch.max_age,
            started_ns,
        ),
        output,
        metrics: metrics.clone(),
    };
    let worker = std::thread::Builder::new()
        .name("agent-pipeline".into())
        .spawn(move || pipeline.run(rx))?;
    let ticker = {
        let tx = tx.clone();
        AbortOnDrop(tokio::spawn(async move {
            let mut interval = tokio::time::interval(TICK);
            loop {
                interval.tick().await;
                if tx.send(Input::Tick).await.is_err() {
                    return;
                }
            }
        }))
    };
    tracing::info!(agent = %name, "capturing");

    tokio::pin!(shutdown);
    let mut events = Vec::new();
    let mut clock = WallClock::now();
    let poll_interval = config.capture.poll_interval;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            read = async {
                // Reading at most every poll interval lets records gather in
                // the ring buffer: one wakeup per burst, not per record.
                tokio::time::sleep(poll_interval).await;
                capture.read(&mut events, IDLE_READ).await
            } => {
                let drained_from = read.context("reading the ring buffer")?;
                clock = clock.refreshed();
                let input = Input::Flows {
                    flows: decode_all(&mut events, clock, &metrics),
                    complete_ns: complete_until(clock, drained_from),
                };
                // Waits when the pipeline is behind: the ring buffer then
                // fills and the kernel counts what it cannot keep.
                if tx.send(input).await.is_err() {
                    anyhow::bail!("the pipeline thread stopped");
                }
            }
        }
    }
    // Records of connections that closed just before the shutdown.
    let drained_from = capture.read_now(&mut events);
    let last = Input::Flows {
        flows: decode_all(&mut events, clock, &metrics),
        complete_ns: complete_until(clock, drained_from),
    };
    if tx.send(last).await.is_err() {
        anyhow::bail!("the pipeline thread stopped");
    }
    metrics.count_drop("malformed_record", capture.malformed());
    drop(ticker);
    drop(tx);
    tokio::task::spawn_blocking(move || worker.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the pipeline thread panicked"))?;
    if let Some(shipper) = shipper {
        // The pipeline (the other owner) has stopped.
        if let Ok(shipper) = Arc::try_unwrap(shipper) {
            let within = config.transport.as_ref().map(|t| t.shutdown_flush);
            let left = shipper.shutdown(within.unwrap_or_default()).await;
            if left > 0 {
                tracing::info!(
                    batches = left,
                    "batches left in the spool for the next start"
                );
            }
        }
    }
    Ok(())
}

/// The watermark of a read whose last pass over the ring began at
/// `drained_from_ns` (kernel monotonic), on the wall clock the read's flows
/// were decoded with.
fn complete_until(clock: WallClock, drained_from_ns: u64) -> u64 {
    let margin = COMMIT_MARGIN.as_nanos() as u64;
    clock.to_unix_ns(drained_from_ns).saturating_sub(margin)
}

/// Decodes (and empties) `events`; an undecodable record is counted and
/// logged.
fn decode_all(events: &mut Vec<FlowEvent>, clock: WallClock, metrics: &AgentMetrics) -> Vec<Flow> {
    metrics.records_read.inc_by(events.len() as u64);
    let mut flows = Vec::with_capacity(events.len());
    for event in events.drain(..) {
        match decode(&event, clock) {
            Ok(flow) => flows.push(flow),
            Err(e) => {
                tracing::warn!(error = %e, "undecodable kernel record");
                metrics.count_drop("decode", 1);
            }
        }
    }
    flows
}

/// Aborts a task when dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Pipeline {
    directory: Arc<PluginDirectory>,
    /// Flows waiting for the next attribution pass.
    gathered: Vec<Flow>,
    /// The watermark of the reads gathered so far.
    complete_ns: u64,
    attributor: LocalAttributor,
    batcher: Batcher,
    output: Output,
    metrics: Arc<AgentMetrics>,
}

impl Pipeline {
    fn run(mut self, mut rx: mpsc::Receiver<Input>) {
        while let Some(input) = rx.blocking_recv() {
            match input {
                Input::Flows { flows, complete_ns } => {
                    self.gathered.extend(flows);
                    self.complete_ns = complete_ns;
                    if self.gathered.len() >= ATTRIBUTION_BATCH {
                        self.attribute_gathered();
                    }
                }
                Input::Tick => {
                    self.attribute_gathered();
                    if let Some(batch) = self.batcher.due(unix_now_ns()) {
                        self.write(batch);
                    }
                }
            }
        }
        self.attribute_gathered();
        if let Some(batch) = self.batcher.close(unix_now_ns()) {
            self.write(batch);
        }
    }

    /// Attributes the gathered flows and adds them to the open batch, with
    /// their watermark (advanced even when there are none).
    fn attribute_gathered(&mut self) {
        let flows = std::mem::take(&mut self.gathered);
        let attributed = if flows.is_empty() {
            Vec::new()
        } else {
            self.process(flows)
        };
        for batch in self
            .batcher
            .push(attributed, self.complete_ns, unix_now_ns())
        {
            self.write(batch);
        }
    }

    /// Local attribution, then policy.
    fn process(&mut self, flows: Vec<Flow>) -> Vec<AttributedFlow> {
        let identity = active(self.directory.chain(PluginKind::Identity));
        let sides = self
            .attributor
            .attribute(&flows, &identity, &mut &*self.metrics);
        // Counted per pass, not per flow: a metric label costs allocations.
        let mut unattributed: FxHashMap<UnattributedReason, u64> = FxHashMap::default();
        let attributed: Vec<AttributedFlow> = flows
            .into_iter()
            .zip(sides)
            .map(|(flow, local)| {
                if let Side::Unattributed(reason) = &local {
                    *unattributed.entry(*reason).or_default() += 1;
                }
                AttributedFlow {
                    local,
                    ..AttributedFlow::new(flow)
                }
            })
            .collect();
        for (reason, n) in unattributed {
            self.metrics
                .local_unattributed
                .get_or_create(&vec![("reason", reason.as_str().to_owned())])
                .inc_by(n);
        }
        let policies = active(self.directory.chain(PluginKind::Policy));
        let metrics = &self.metrics;
        policy::apply(attributed, &policies, |plugin, why, n| {
            let reason = match why {
                PolicyDrop::Dropped => "policy",
                PolicyDrop::Failed => "policy_failed",
            };
            tracing::debug!(plugin, reason, n, "flows dropped by policy");
            metrics.count_drop(reason, n);
        })
    }

    fn write(&mut self, batch: FlowBatch) {
        let n = batch.flows.len() as u64;
        match self.output.write(&batch) {
            Ok(()) => {
                self.metrics.flows_written.inc_by(n);
                self.metrics.batches_written.inc();
                self.metrics.batch_flows.observe(n as f64);
            }
            Err(error) => {
                tracing::error!(%error, seq = batch.seq, flows = n, "writing a batch failed");
                self.metrics.count_drop("output", n);
            }
        }
    }
}

/// Shadow plugins do not take part in the agent's chains (A/B comparison is
/// the collector's).
fn active(plugins: Vec<Arc<Plugin>>) -> Vec<Arc<Plugin>> {
    plugins
        .into_iter()
        .filter(|p| p.manifest().mode == Mode::Active)
        .collect()
}

impl AttributionObserver for &AgentMetrics {
    fn cache_hits(&mut self, n: u64) {
        if n > 0 {
            self.attribution
                .get_or_create(&vec![
                    ("plugin", "cache".to_owned()),
                    ("outcome", "hit".to_owned()),
                ])
                .inc_by(n);
        }
    }
    fn outcome(&mut self, plugin: &str, outcome: Outcome, n: u64) {
        self.attribution
            .get_or_create(&vec![
                ("plugin", plugin.to_owned()),
                ("outcome", outcome.as_str().to_owned()),
            ])
            .inc_by(n);
    }
}

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reads_watermark_is_its_pass_on_the_flows_clock_less_the_margin() {
        let clock = WallClock::from_offset(1_000_000_000_000);
        assert_eq!(
            complete_until(clock, 5_000_000),
            1_000_000_000_000 + 5_000_000 - 1_000_000
        );
        assert_eq!(complete_until(WallClock::from_offset(0), 10), 0);
    }
}
