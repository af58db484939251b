//! The agent's side: every batch is written to a bounded on-disk spool
//! first, then sent to a collector over QUIC; its spool file is deleted
//! when a collector acknowledges it (or rejects it for good: a frame it
//! cannot read). Batches left in the spool by a crash or a shutdown are
//! sent when the next shipper starts on the same directory.
//!
//! - **Backpressure**: [`Shipper::send`] waits while `max_in_flight`
//!   batches are being sent and not yet answered. While no collector is
//!   connected, batches wait on disk only and `send` does not wait.
//! - **Spool bound**: past `spool_max_bytes` the oldest spooled batch not
//!   being sent is dropped and counted (`dropped_spool_full`), never
//!   silently.
//! - **Failures**: a failed connection, a stream that errs or an answer
//!   that does not come within `ack_timeout` is retried with exponential
//!   backoff with full jitter ([`flowattr_backoff`]), so agents that lost
//!   the same collector do not come back in step; a lost or timed-out
//!   connection fails over to the next collector, round-robin.
//! - **Refused names**: a batch refused because it names another agent
//!   than the certificate stays in the spool, is counted
//!   (`refused_identity`) and logged as an error (at most once a minute),
//!   and is offered again with backoff, one batch of that name at a time,
//!   until the certificate and the name agree (see [`refusal`]).
//!
//! ```no_run
//! # async fn run(tls: flowattr_transport::tls::TlsFiles, batch: flowattr_model::FlowBatch) -> Result<(), Box<dyn std::error::Error>> {
//! use flowattr_transport::{CollectorAddr, Shipper, ShipperConfig};
//!
//! let collectors = vec![CollectorAddr::new("127.0.0.1:7443".parse()?, "localhost")];
//! let shipper = Shipper::start(ShipperConfig::new(collectors, tls, "/var/lib/flowattr/spool".into()))?;
//! shipper.send(&batch).await?;
//! let left = shipper.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

mod attempt;
mod counters;
mod dispatch;
mod index;
mod refusal;
mod spool;

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

use flowattr_backoff::{Backoff, Jitter, Policy};
use flowattr_model::FlowBatch;
use tokio::sync::{Semaphore, mpsc, oneshot};

pub use counters::{ShipperCounters, ShipperStats};
use dispatch::{Command, Dispatcher, Handoff};
use index::{Entry, SpoolKey};
use refusal::Refusals;
use spool::Spool;
pub use spool::SpoolError;

use crate::{
    codec::{self, FrameTooLarge},
    tls::{self, TlsError, TlsFiles},
};

/// A collector's address and the name its certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectorAddr {
    pub addr: SocketAddr,
    /// DNS name or IP address checked against the collector's certificate.
    pub server_name: String,
}

impl CollectorAddr {
    /// The collector at `addr` whose certificate names `server_name`.
    pub fn new(addr: SocketAddr, server_name: impl Into<String>) -> Self {
        Self {
            addr,
            server_name: server_name.into(),
        }
    }
}

impl FromStr for CollectorAddr {
    type Err = String;

    /// `IP:PORT` (the certificate must name the IP) or `NAME@IP:PORT`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (name, addr) = match text.split_once('@') {
            Some((name, addr)) => (Some(name), addr),
            None => (None, text),
        };
        let addr: SocketAddr = addr
            .parse()
            .map_err(|_| format!("`{text}`: expected IP:PORT or NAME@IP:PORT"))?;
        let name = name.map_or_else(|| addr.ip().to_string(), str::to_owned);
        if name.is_empty() {
            return Err(format!("`{text}`: empty server name"));
        }
        Ok(Self::new(addr, name))
    }
}

/// How a [`Shipper`] reaches collectors and spools batches.
#[derive(Debug, Clone)]
pub struct ShipperConfig {
    /// Collectors in failover order (at least one).
    pub collectors: Vec<CollectorAddr>,
    /// The CA collectors are verified against, and the agent's own
    /// certificate and key.
    pub tls: TlsFiles,
    /// One file per unacknowledged batch.
    pub spool_dir: PathBuf,
    /// The spool's bound (default 1 GiB).
    pub spool_max_bytes: u64,
    /// Batches sent and not yet answered before `send` waits (default 8).
    pub max_in_flight: usize,
    /// The first delay after a failure is drawn from 0 to this (default
    /// 100 ms)...
    pub retry_min: Duration,
    /// ...and the ceiling doubles with each failure up to this (default
    /// 30 s).
    pub retry_max: Duration,
    /// A connection attempt fails after this (default 5 s).
    pub connect_timeout: Duration,
    /// A batch without an answer after this is sent again, and the
    /// connection abandoned (default 60 s).
    pub ack_timeout: Duration,
    /// Seeds the backoff's jitter, for tests that want the same delays
    /// every run (default `None`: seeded from the process's randomness).
    pub jitter_seed: Option<u64>,
}

impl ShipperConfig {
    /// Defaults for everything but the collectors, TLS files and spool.
    pub fn new(collectors: Vec<CollectorAddr>, tls: TlsFiles, spool_dir: PathBuf) -> Self {
        Self {
            collectors,
            tls,
            spool_dir,
            spool_max_bytes: 1 << 30,
            max_in_flight: 8,
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(60),
            jitter_seed: None,
        }
    }
}

/// A shipper that could not start or take a batch.
#[derive(Debug, thiserror::Error)]
pub enum ShipperError {
    /// The configuration cannot work (no collectors, no room in flight).
    #[error("shipper configuration: {0}")]
    Config(String),
    /// The TLS files could not be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The spool could not be read or written.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// No UDP socket for the client endpoint.
    #[error("opening a QUIC endpoint: {0}")]
    Endpoint(#[source] std::io::Error),
    /// The batch does not fit a frame.
    #[error(transparent)]
    Encode(#[from] FrameTooLarge),
    /// The shipper's task has ended.
    #[error("the shipper has stopped")]
    Stopped,
}

/// The agent's batch shipper. Dropping it stops at once (spooled batches
/// stay for the next start); [`Shipper::shutdown`] delivers what it can
/// first.
pub struct Shipper {
    spool: Arc<Mutex<Spool>>,
    spool_dir: PathBuf,
    counters: Arc<ShipperCounters>,
    permits: Arc<Semaphore>,
    handoffs: mpsc::Sender<Handoff>,
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl Shipper {
    /// Opens the spool (finding batches a previous run left, to be sent
    /// again) and starts connecting. Must be called within a Tokio runtime.
    pub fn start(config: ShipperConfig) -> Result<Shipper, ShipperError> {
        if config.collectors.is_empty() {
            return Err(ShipperError::Config("no collectors".into()));
        }
        if config.max_in_flight == 0 {
            return Err(ShipperError::Config(
                "max_in_flight must be at least 1".into(),
            ));
        }
        let client = tls::client_config(&config.tls)?;
        let spool = Spool::open(&config.spool_dir, config.spool_max_bytes)?;
        let own = tls::certificate_identity(&config.tls.cert)
            .ok()
            .map(|p| p.0);
        if let Some(own) = &own {
            for (agent, batches) in spool.index.agents() {
                if agent != own {
                    tracing::warn!(
                        batches,
                        spool = %config.spool_dir.display(),
                        certificate = %config.tls.cert.display(),
                        "The spool holds batches naming agent {agent:?}, but the certificate names {own:?}: collectors will refuse them (they stay in the spool) until a certificate for {agent:?} is used."
                    );
                }
            }
        }
        let policy = Policy::new(config.retry_min, config.retry_max);
        let seed = config
            .jitter_seed
            .unwrap_or_else(flowattr_backoff::entropy_seed);
        let backoff = Backoff::new(policy, seed);
        let refusals = Refusals::new(
            own,
            config.tls.cert.clone(),
            policy,
            Jitter::seeded(seed.wrapping_add(1)),
        );
        let bind: SocketAddr = if config.collectors.iter().all(|c| c.addr.is_ipv4()) {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoint = quinn::Endpoint::client(bind).map_err(ShipperError::Endpoint)?;
        endpoint.set_default_client_config(client);
        let counters = Arc::new(ShipperCounters::default());
        counters.spool(spool.index.len(), spool.index.bytes());
        let spool = Arc::new(Mutex::new(spool));
        let permits = Arc::new(Semaphore::new(config.max_in_flight));
        let (handoffs, handoffs_rx) = mpsc::channel(config.max_in_flight);
        let (commands, commands_rx) = mpsc::channel(1);
        let spool_dir = config.spool_dir.clone();
        let dispatcher = Dispatcher {
            config: Arc::new(config),
            backoff,
            refusals,
            endpoint,
            spool: spool.clone(),
            counters: counters.clone(),
            permits: permits.clone(),
            handoffs: handoffs_rx,
            commands: commands_rx,
        };
        let task = tokio::spawn(dispatcher.run());
        Ok(Shipper {
            spool,
            spool_dir,
            counters,
            permits,
            handoffs,
            commands,
            task,
        })
    }

    /// Spools `batch` durably, then hands it over for sending. Waits first
    /// while `max_in_flight` batches are being sent and not yet answered.
    /// When the spool is over its bound, the oldest batches not being sent
    /// are dropped (counted and logged).
    pub async fn send(&self, batch: &FlowBatch) -> Result<(), ShipperError> {
        let mut frame = Vec::new();
        codec::encode_batch(batch, &mut frame)?;
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ShipperError::Stopped)?;
        let key = SpoolKey::of(&batch.id());
        let flows = batch.flows.len() as u64;
        let (dir, file_key) = (self.spool_dir.clone(), key.clone());
        let (frame, written) = tokio::task::spawn_blocking(move || {
            let written = spool::write_file(&dir, &file_key, flows, &frame);
            (frame, written)
        })
        .await
        .map_err(|_| ShipperError::Stopped)?;
        let bytes = written?;
        {
            let mut spool = self.spool.lock().unwrap();
            let entry = Entry {
                bytes,
                flows,
                in_flight: false,
                not_before: None,
                after_ns: spool.last_watermark_ns,
                watermark_ns: batch.complete_until_ns,
            };
            spool.last_watermark_ns = spool.last_watermark_ns.max(batch.complete_until_ns);
            spool.index.insert(key.clone(), entry);
            let evicted = spool.index.evict(&key);
            for e in &evicted {
                ShipperCounters::inc(&self.counters.dropped_spool_full);
                self.counters
                    .dropped_spool_full_flows
                    .fetch_add(e.flows, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(batch = %e.key.id(), flows = e.flows, "the spool is full: dropped its oldest batch");
            }
            let deleted = spool.delete_evicted(&evicted);
            self.counters.spool(spool.index.len(), spool.index.bytes());
            deleted?;
        }
        self.handoffs
            .send(Handoff { key, frame, permit })
            .await
            .map_err(|_| ShipperError::Stopped)
    }

    /// The shipper's counters.
    pub fn counters(&self) -> Arc<ShipperCounters> {
        self.counters.clone()
    }

    /// The collector the shipper is connected to, if any.
    pub fn connected_to(&self) -> Option<SocketAddr> {
        self.counters.connected_to()
    }

    /// Delivers spooled batches for at most `within`, then closes the
    /// connection. Returns how many batches are left in the spool for the
    /// next start.
    pub async fn shutdown(self, within: Duration) -> usize {
        let (done, left) = oneshot::channel();
        let asked = self
            .commands
            .send(Command::Shutdown { within, done })
            .await
            .is_ok();
        match left.await {
            Ok(left) if asked => {
                tracing::info!(left, "shipper stopped");
                left
            }
            _ => self.spool.lock().unwrap().index.len(),
        }
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        self.task.abort();
    }
}
