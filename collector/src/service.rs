//! The collector's I/O shell (`flowattr collector`): wires the QUIC
//! receiver, Kafka sharing, forwarding shippers, plugins, outputs and the
//! metrics endpoint around the [`Core`] thread.

use std::{
    collections::HashSet,
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::Context;
use flowattr_model::FlowBatch;
use flowattr_plugin_runtime::{PluginDirectory, Runtime, RuntimeConfig};
use flowattr_transport::{
    CollectorAddr, Delivery, Receiver, ReceiverConfig, Reply, Shipper, ShipperConfig,
    codec::{self, Frame},
    tls::TlsFiles,
};

use crate::{
    clocks::ClockSample,
    config::{Claim, CollectorConfig, OutputSection},
    core::{Arrival, Core, CoreParts, CoreSettings, Decision, Forwarder, Input, Replier, Sharing},
    journal::Journal,
    legacy::EventFollower,
    metrics::CollectorMetrics,
    output::{
        FileOutput, FileOutputConfig, Output, Outputs, StdoutOutput, kafka::KafkaOutput,
        otlp::OtlpOutput,
    },
    ownership::{OwnershipTable, RangeUpdate},
    remote::Regions,
    shadow::RecordsFile,
    sharing::{KafkaSharing, codec::MalformedReason},
};

/// Inputs in flight between the receiver and the core (each channel): the
/// core's arrival queue is the bounded, accounted one.
const INPUT_CHANNEL: usize = 16;

/// How long a starting collector waits for the shared history.
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// A running collector.
pub struct Collector {
    receiver: Option<Receiver>,
    inputs: Option<mpsc::SyncSender<Input>>,
    core: Option<std::thread::JoinHandle<()>>,
    stop_core: Arc<AtomicBool>,
    pump: Option<tokio::task::JoinHandle<()>>,
    metrics: Arc<CollectorMetrics>,
    metrics_server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _watch: Option<flowattr_plugin_runtime::DirectoryWatcher>,
    local_addr: SocketAddr,
    /// Following the legacy event file: its stop flag and thread.
    legacy: Option<(Arc<AtomicBool>, std::thread::JoinHandle<()>)>,
}

/// Unix-epoch nanoseconds now.
pub fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Collector {
    /// Starts everything; returns once the collector accepts batches (after
    /// the Kafka warm-up, if sharing is configured).
    pub async fn start(config: CollectorConfig) -> anyhow::Result<Collector> {
        let metrics = Arc::new(CollectorMetrics::new());
        let tls = TlsFiles {
            ca: config.tls.ca.clone(),
            cert: config.tls.cert.clone(),
            key: config.tls.key.clone(),
        };

        // Plugins load off the async threads: WASI's synchronous file system
        // blocks on its own runtime.
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: config.plugins.cache_dir.clone(),
            trust: config.plugins.trust()?,
            instances: config.worker_threads(),
            ..RuntimeConfig::default()
        })?;
        let plugin_dir = config.plugins.directory.clone();
        let (directory, report) =
            tokio::task::spawn_blocking(move || PluginDirectory::open(&runtime, plugin_dir))
                .await?
                .with_context(|| {
                    format!("plugin directory {}", config.plugins.directory.display())
                })?;
        for refusal in &report.refused {
            tracing::warn!(plugin = %refusal.name, reason = %refusal.reason, "plugin refused");
        }
        let directory = Arc::new(directory);
        if directory.get(&config.plugins.sink).is_none() {
            anyhow::bail!(
                "plugins.sink: no plugin {:?} in {} (flows could not be written out)",
                config.plugins.sink,
                config.plugins.directory.display()
            );
        }
        check_sink_for_outputs(&config, &directory).await?;
        let watch = if config.plugins.watch {
            Some(directory.watch().context("watching the plugin directory")?)
        } else {
            None
        };
        metrics.watch_plugins(directory.clone());

        let mut table = OwnershipTable::new(config.ownership.to_config());
        for (agent, claim) in &config.claims {
            match claim {
                Claim::Any => table.allow_any(agent),
                Claim::Prefixes(prefixes) => table.allow(agent, prefixes.iter().copied()),
            }
        }

        let (journal, recovered) =
            Journal::open(&config.data_dir.join("journal"), config.remember_batches)
                .with_context(|| format!("journal in {}", config.data_dir.display()))?;
        let outputs = Outputs::new(open_outputs(&config)?, config.max_queued_bytes);

        let regions = Regions::new(
            config
                .regions
                .iter()
                .map(|r| (r.name.clone(), r.prefixes.clone())),
        );
        if !config.regions.is_empty() {
            // Forwarded batches name this collector; the other region's
            // collector refuses any that does not match the certificate.
            let identity = flowattr_transport::tls::certificate_identity(&config.tls.cert)?;
            anyhow::ensure!(
                identity.0 == config.name,
                "`name` is {:?} but {} names {:?}, and other regions' collectors refuse every forwarded batch that names anyone but its certificate: set `name = {:?}` or use a certificate issued for {:?}",
                config.name,
                config.tls.cert.display(),
                identity.0,
                identity.0,
                config.name
            );
        }
        let mut forwarders: Vec<Box<dyn Forwarder>> = Vec::new();
        for region in &config.regions {
            let collectors = region
                .collectors
                .iter()
                .map(|c| parse_collector(c))
                .collect::<anyhow::Result<Vec<_>>>()
                .with_context(|| format!("regions.{}.collectors", region.name))?;
            let spool = config.data_dir.join("forward").join(&region.name);
            let shipper = Shipper::start(ShipperConfig::new(collectors, tls.clone(), spool))
                .with_context(|| format!("forwarding to region {}", region.name))?;
            forwarders.push(Box::new(ShipperForwarder::spawn(shipper)));
        }

        let sharing: Option<Box<dyn Sharing>> = match &config.kafka {
            None => None,
            Some(kafka) => {
                let sharing_config = kafka
                    .to_sharing_config(&config.name, config.ownership.expire_after)
                    .map_err(anyhow::Error::msg)?;
                let name = config.name.clone();
                let sharing =
                    tokio::task::spawn_blocking(move || KafkaSharing::new(sharing_config, &name))
                        .await?
                        .context("Kafka sharing")?;
                Some(Box::new(KafkaShared(sharing, metrics.clone())))
            }
        };

        let settings = CoreSettings {
            name: config.name.clone(),
            incarnation: unix_now_ns(),
            hold: config.hold,
            silent_after: config.silent_after,
            max_held_flows: config.max_held_flows,
            remember_batches: config.remember_batches,
            sink: config.plugins.sink.clone(),
            sink_batch: config.plugins.sink_batch,
            workers: config.worker_threads(),
            forward_peers: config.forward_peers.iter().cloned().collect::<HashSet<_>>(),
            shadow_hold: config
                .ab
                .as_ref()
                .map_or(Duration::ZERO, |ab| ab.shadow_hold),
            arrival_queue_batches: config.arrival_queue_batches,
            arrival_queue_bytes: config.arrival_queue_bytes,
            refuse_unclaimed_agents: config.ingest.refuse_unclaimed_agents,
        };
        let mut core = Core::new(
            settings,
            CoreParts {
                table,
                journal,
                outputs,
                regions,
                forwarders,
                sharing,
                plugins: directory,
                metrics: metrics.clone(),
                clock: Box::new(unix_now_ns),
                comparison: match &config.ab {
                    None => None,
                    Some(ab) => Some(Box::new(
                        RecordsFile::open(&ab.records)
                            .with_context(|| format!("ab.records {}", ab.records.display()))?,
                    )),
                },
            },
        );
        // Warm up and replay the journal before taking any batch.
        let limits = config.ingest.limits();
        let mut core = tokio::task::spawn_blocking(move || {
            core.warm_up(WARM_UP_TIMEOUT);
            core.recover(recovered, move |body| {
                decode_journal_body_within(body, &limits)
            });
            core
        })
        .await?;
        // The live view is served on the metrics endpoint, so only with it.
        let live =
            (config.live.enabled && config.metrics.enabled).then(|| core.serve_live(&config.live));

        // Small: the core's own arrival queue is the bounded one.
        let (inputs, rx) = mpsc::sync_channel(INPUT_CHANNEL);
        let stop_core = Arc::new(AtomicBool::new(false));
        let core_thread = {
            let stop = stop_core.clone();
            std::thread::Builder::new()
                .name("collector-core".into())
                .spawn(move || core.run(rx, &stop))?
        };

        let legacy = match &config.legacy {
            None => None,
            Some(legacy) => Some(follow_legacy_events(
                legacy.events.clone(),
                inputs.clone(),
                metrics.clone(),
            )?),
        };

        let mut receiver_config = ReceiverConfig::new(config.listen, tls);
        receiver_config.max_frame_bytes = codec::DEFAULT_MAX_FRAME_BYTES;
        receiver_config.channel_capacity = INPUT_CHANNEL;
        config.ingest.apply(&mut receiver_config);
        let (receiver, deliveries) = Receiver::bind(receiver_config)?;
        metrics.watch_receiver(receiver.counters());
        let local_addr = receiver.local_addr();
        let pump = tokio::spawn(pump_deliveries(deliveries, inputs.clone()));

        let metrics_server = if config.metrics.enabled {
            let listener = tokio::net::TcpListener::bind(config.metrics.listen)
                .await
                .with_context(|| format!("metrics endpoint {}", config.metrics.listen))?;
            tracing::info!(address = %config.metrics.listen, "serving metrics");
            {
                let m = metrics.clone();
                let routes = live.map(crate::live::http::router).unwrap_or_default();
                Some(tokio::spawn(flowattr_daemon::metrics::serve_with(
                    listener,
                    Arc::new(move || m.render()),
                    routes,
                )))
            }
        } else {
            None
        };
        tracing::info!(name = %config.name, address = %local_addr, "collector started");
        Ok(Collector {
            receiver: Some(receiver),
            inputs: Some(inputs),
            core: Some(core_thread),
            stop_core,
            pump: Some(pump),
            metrics,
            metrics_server,
            _watch: watch,
            local_addr,
            legacy,
        })
    }

    /// Where agents connect.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn metrics(&self) -> &Arc<CollectorMetrics> {
        &self.metrics
    }

    /// Stops taking batches, and stops the core. What is held stays in the
    /// journal for the next start.
    pub async fn shutdown(mut self) {
        if let Some(receiver) = self.receiver.take() {
            receiver.shutdown(Duration::from_secs(2)).await;
        }
        if let Some(pump) = self.pump.take() {
            let _ = pump.await;
        }
        if let Some((stop, thread)) = self.legacy.take() {
            stop.store(true, Ordering::Relaxed);
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        self.inputs = None;
        self.stop_core.store(true, Ordering::Relaxed);
        if let Some(core) = self.core.take() {
            let _ = tokio::task::spawn_blocking(move || core.join()).await;
        }
        if let Some(server) = self.metrics_server.take() {
            server.abort();
        }
    }
}

/// Runs a collector until `shutdown` completes.
pub async fn run(
    config: CollectorConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let collector = Collector::start(config).await?;
    shutdown.await;
    tracing::info!("stopping");
    collector.shutdown().await;
    Ok(())
}

/// Hands deliveries to the core.
async fn pump_deliveries(
    mut deliveries: tokio::sync::mpsc::Receiver<Delivery>,
    inputs: mpsc::SyncSender<Input>,
) {
    while let Some(delivery) = deliveries.recv().await {
        let Delivery {
            peer,
            batch,
            body,
            timing,
            reply,
            ..
        } = delivery;
        let arrival = Arrival {
            peer: peer.0,
            batch,
            body,
            clock: timing.sent_ns.map(|sent_ns| ClockSample {
                sent_ns,
                received_ns: timing.received_ns,
                rtt_ns: timing.rtt_ns,
            }),
            reply: Box::new(QuicReply(reply)),
        };
        // The core's queue is bounded: waiting here stops the receiver,
        // which stops reading, which slows the agents.
        let inputs = inputs.clone();
        let sent = tokio::task::spawn_blocking(move || {
            inputs.send(Input::Arrival(arrival)).map_err(|_| ())
        })
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            break;
        }
    }
}

/// The answer to an arrival over QUIC. The stream drops its end when the
/// agent stops waiting, which marks the arrival abandoned.
struct QuicReply(tokio::sync::oneshot::Sender<Reply>);

impl Replier for QuicReply {
    fn reply(self: Box<Self>, decision: Decision) {
        let _ = self.0.send(match decision {
            Decision::Accepted | Decision::Duplicate => Reply::Ack,
            Decision::Rejected(why) => Reply::Reject(why),
            Decision::Unclaimed(why) => Reply::Unclaimed(why),
        });
    }

    fn abandoned(&self) -> bool {
        self.0.is_closed()
    }
}

/// How often the legacy event file is read for appended events.
const LEGACY_POLL: Duration = Duration::from_millis(200);

/// Follows the legacy event file on a thread, handing new events to the
/// core, until the flag is set.
fn follow_legacy_events(
    path: std::path::PathBuf,
    inputs: mpsc::SyncSender<Input>,
    metrics: Arc<CollectorMetrics>,
) -> anyhow::Result<(Arc<AtomicBool>, std::thread::JoinHandle<()>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let mut follower = EventFollower::new(path.clone());
    let thread = std::thread::Builder::new()
        .name("legacy-events".into())
        .spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match follower.poll() {
                    Ok(polled) => {
                        for (line, error) in &polled.malformed {
                            tracing::warn!(path = %path.display(), line, error, "malformed legacy event skipped");
                        }
                        for (outcome, n) in [("taken", polled.events.len()), ("malformed", polled.malformed.len())] {
                            metrics
                                .legacy_events
                                .get_or_create(&vec![("outcome", outcome.to_owned())])
                                .inc_by(n as u64);
                        }
                        if !polled.events.is_empty()
                            && inputs.send(Input::IpEvents(polled.events)).is_err()
                        {
                            return;
                        }
                    }
                    Err(error) => {
                        tracing::warn!(path = %path.display(), %error, "reading legacy events failed");
                    }
                }
                std::thread::sleep(LEGACY_POLL);
            }
        })?;
    Ok((stop, thread))
}

/// A journaled frame body (see [`crate::journal::JournalEntry`]) as the
/// batch it carries.
pub fn decode_journal_body(body: &[u8]) -> Result<FlowBatch, String> {
    decode_journal_body_within(body, &codec::DecodeLimits::default())
}

/// [`decode_journal_body`] within `limits` (those batches were accepted
/// under).
pub fn decode_journal_body_within(
    body: &[u8],
    limits: &codec::DecodeLimits,
) -> Result<FlowBatch, String> {
    match codec::decode_body_limited(body, limits).map(|(frame, _)| frame) {
        Ok(Frame::Batch(batch)) => Ok(batch),
        Ok(_) => Err("not a batch frame".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// `NAME@ADDRESS:PORT` or `ADDRESS:PORT` (certificate name `localhost`).
fn parse_collector(text: &str) -> anyhow::Result<CollectorAddr> {
    let (name, addr) = text.split_once('@').unwrap_or(("localhost", text));
    let addr: SocketAddr = addr
        .parse()
        .with_context(|| format!("{text:?} is not NAME@ADDRESS:PORT"))?;
    Ok(CollectorAddr::new(addr, name))
}

/// Refuses an output whose format the sink does not write: an OTLP output
/// sends the sink's chunks as OTLP protobuf requests, so its sink must
/// write `application/x-protobuf` (`otlp-sink`).
async fn check_sink_for_outputs(
    config: &CollectorConfig,
    directory: &Arc<PluginDirectory>,
) -> anyhow::Result<()> {
    if !config
        .outputs
        .iter()
        .any(|o| matches!(o, OutputSection::Otlp(_)))
    {
        return Ok(());
    }
    let sink = directory
        .get(&config.plugins.sink)
        .context("the sink plugin is loaded")?;
    // Plugins are called off the async threads.
    let content_type = tokio::task::spawn_blocking(move || sink.content_type())
        .await?
        .with_context(|| {
            format!(
                "asking the sink plugin {:?} for its content type",
                config.plugins.sink
            )
        })?;
    if content_type != crate::output::otlp::CONTENT_TYPE {
        anyhow::bail!(
            "outputs: an `otlp` output sends OTLP protobuf ({}), but the sink plugin {:?} writes {content_type:?}; set [plugins] sink = \"otlp-sink\" (or move the otlp output to a collector whose sink writes OTLP)",
            crate::output::otlp::CONTENT_TYPE,
            config.plugins.sink,
        );
    }
    Ok(())
}

fn open_outputs(config: &CollectorConfig) -> anyhow::Result<Vec<Box<dyn Output>>> {
    // By the bundled sinks' names; a Parquet chunk is a whole file.
    let sink = config.plugins.sink.as_str();
    let (extension, file_per_chunk) = if sink.contains("json") {
        ("jsonl", false)
    } else if sink.contains("parquet") {
        ("parquet", true)
    } else if sink.contains("arrow") {
        ("arrows", false)
    } else {
        ("bin", false)
    };
    config
        .outputs
        .iter()
        .map(|o| -> anyhow::Result<Box<dyn Output>> {
            Ok(match o {
                OutputSection::Stdout => Box::new(StdoutOutput::default()),
                OutputSection::File {
                    dir,
                    prefix,
                    rotate_bytes,
                    rotate_after,
                    keep_files,
                } => Box::new(
                    FileOutput::new(FileOutputConfig {
                        dir: dir.clone(),
                        prefix: prefix.clone(),
                        extension: extension.into(),
                        rotate_bytes: *rotate_bytes,
                        rotate_after: *rotate_after,
                        keep_files: *keep_files,
                        file_per_chunk,
                    })
                    .with_context(|| format!("file output {}", dir.display()))?,
                ),
                OutputSection::Kafka(kafka) => Box::new(
                    KafkaOutput::new(kafka.to_config())
                        .with_context(|| format!("Kafka output {}", kafka.topic))?,
                ),
                OutputSection::Otlp(otlp) => Box::new(
                    OtlpOutput::new(otlp.to_config().map_err(anyhow::Error::msg)?)
                        .with_context(|| format!("OTLP output {}", otlp.endpoint))?,
                ),
            })
        })
        .collect()
}

/// Forwards through a [`Shipper`] (which spools to disk) on a task; the
/// core hands batches over a bounded channel and never waits.
struct ShipperForwarder {
    batches: tokio::sync::mpsc::Sender<FlowBatch>,
}

impl ShipperForwarder {
    fn spawn(shipper: Shipper) -> Self {
        let (batches, mut rx) = tokio::sync::mpsc::channel::<FlowBatch>(64);
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                if let Err(e) = shipper.send(&batch).await {
                    tracing::error!(error = %e, id = %batch.id(), "forwarding spool refused a batch");
                }
            }
            let _ = shipper.shutdown(Duration::from_secs(2)).await;
        });
        Self { batches }
    }
}

impl Forwarder for ShipperForwarder {
    fn forward(&mut self, batch: FlowBatch) -> Result<(), (String, FlowBatch)> {
        self.batches.try_send(batch).map_err(|e| match e {
            tokio::sync::mpsc::error::TrySendError::Full(b) => {
                ("forwarding queue full".to_owned(), b)
            }
            tokio::sync::mpsc::error::TrySendError::Closed(b) => {
                ("forwarder stopped".to_owned(), b)
            }
        })
    }
}

/// [`KafkaSharing`] as the core's [`Sharing`]; sets the refusals by reason
/// when the core reads the counters.
struct KafkaShared(KafkaSharing, Arc<CollectorMetrics>);

impl Sharing for KafkaShared {
    fn publish(&mut self, updates: &[RangeUpdate]) {
        self.0.publish(updates);
    }

    fn poll(&mut self) -> Vec<RangeUpdate> {
        self.0.poll(100_000, Duration::ZERO)
    }

    fn publish_marks(&mut self, marks: &[crate::completeness::SharedMark]) {
        self.0.publish_marks(marks);
    }

    fn poll_marks(&mut self) -> Vec<crate::completeness::SharedMark> {
        self.0.poll_marks()
    }

    fn warm_up(&mut self, timeout: Duration) -> Vec<RangeUpdate> {
        match self.0.warm_up(timeout) {
            Ok(history) => history,
            Err(e) => {
                tracing::warn!(error = %e, "Kafka warm-up incomplete; attributing from what arrived");
                Vec::new()
            }
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = self.0.counters();
        for reason in MalformedReason::ALL {
            self.1
                .sharing_refused
                .get_or_create(&vec![("reason", reason.as_str().to_owned())])
                .set(c.malformed(reason) as i64);
        }
        vec![
            ("published", c.published),
            ("delivered", c.delivered),
            ("publish_errors", c.publish_errors),
            ("consumed", c.consumed),
            ("ranges_received", c.ranges_received),
            ("marks_published", c.marks_published),
            ("marks_invalid", c.marks_invalid),
            ("ranges_invalid", c.ranges_invalid),
            ("marks_waiting", c.marks_waiting),
            ("marks_received", c.marks_received),
            ("marks_dropped", c.marks_dropped),
            ("own_skipped", c.own_skipped),
            ("malformed", c.malformed_total()),
            ("lag", c.lag),
            ("broker_up", u64::from(c.broker_up)),
            ("warmed_up", u64::from(c.warmed_up)),
        ]
    }
}
