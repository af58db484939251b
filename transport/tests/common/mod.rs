//! Shared by the QUIC tests: a development PKI in a temporary directory,
//! receivers and shippers with short timings, a collector that acks, and
//! bounded waiting.

#![allow(dead_code)]

pub mod generate;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use flowattr_model::{BatchId, FlowBatch};
use flowattr_transport::{
    CollectorAddr, Delivery, FrameTiming, Receiver, ReceiverConfig, Reply, ShipperConfig, certs,
    server::ReceiverError, tls::TlsFiles,
};
use tokio::sync::mpsc;

pub const COLLECTOR: &str = "collector-1";
pub const AGENT: &str = "agent-1";

/// A development PKI in a temporary directory.
pub struct Pki {
    pub dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        certs::generate_dev_pki(dir.path(), &[COLLECTOR, "collector-2"], &[AGENT]).unwrap();
        Self { dir }
    }

    pub fn files(&self, name: &str) -> TlsFiles {
        TlsFiles::in_dir(self.dir.path(), name)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOWATTR_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Binds a receiver on `addr`, retrying while the port is still held by a
/// receiver that was just dropped.
pub async fn receiver_at(
    pki: &Pki,
    addr: SocketAddr,
    edit: impl Fn(&mut ReceiverConfig),
) -> (Receiver, mpsc::Receiver<Delivery>) {
    let mut config = ReceiverConfig::new(addr, pki.files(COLLECTOR));
    edit(&mut config);
    for _ in 0..100 {
        match Receiver::bind(config.clone()) {
            Ok(bound) => return bound,
            Err(ReceiverError::Bind { .. }) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => panic!("{e}"),
        }
    }
    panic!("{addr} stayed in use");
}

pub async fn receiver(pki: &Pki) -> (Receiver, mpsc::Receiver<Delivery>) {
    receiver_at(pki, "127.0.0.1:0".parse().unwrap(), |_| {}).await
}

/// An address where nothing listens.
pub fn dead_addr() -> SocketAddr {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

/// A shipper configuration with short timings.
pub fn shipper_config(pki: &Pki, collectors: &[SocketAddr], spool: PathBuf) -> ShipperConfig {
    let collectors = collectors
        .iter()
        .map(|&a| CollectorAddr::new(a, "localhost"))
        .collect();
    let mut config = ShipperConfig::new(collectors, pki.files(AGENT), spool);
    config.retry_min = Duration::from_millis(20);
    config.retry_max = Duration::from_millis(200);
    config.connect_timeout = Duration::from_millis(500);
    config.ack_timeout = Duration::from_secs(3);
    config
}

/// What a test collector saw.
#[derive(Default, Clone)]
pub struct Seen {
    /// Every delivery, in order.
    pub delivered: Arc<Mutex<Vec<Delivered>>>,
}

#[derive(Clone)]
pub struct Delivered {
    pub peer: String,
    pub batch: FlowBatch,
    pub timing: FrameTiming,
    pub acked: bool,
}

impl Seen {
    pub fn ids(&self) -> Vec<BatchId> {
        self.delivered
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.batch.id())
            .collect()
    }

    pub fn acked_ids(&self) -> Vec<BatchId> {
        let all = self.delivered.lock().unwrap();
        all.iter()
            .filter(|d| d.acked)
            .map(|d| d.batch.id())
            .collect()
    }

    pub fn len(&self) -> usize {
        self.delivered.lock().unwrap().len()
    }
}

/// A collector that answers every delivery with `decide(batch)`'s reply
/// (`None`: drop the reply unanswered), recording what it saw.
pub fn collector(
    mut rx: mpsc::Receiver<Delivery>,
    decide: impl Fn(&FlowBatch) -> Option<Reply> + Send + 'static,
) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen = Seen::default();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        while let Some(d) = rx.recv().await {
            let reply = decide(&d.batch);
            let acked = reply == Some(Reply::Ack);
            record.delivered.lock().unwrap().push(Delivered {
                peer: d.peer.0.clone(),
                batch: d.batch,
                timing: d.timing,
                acked,
            });
            if let Some(reply) = reply {
                let _ = d.reply.send(reply);
            }
        }
    });
    (seen, task)
}

/// A collector that acks everything.
pub fn acking_collector(rx: mpsc::Receiver<Delivery>) -> (Seen, tokio::task::JoinHandle<()>) {
    collector(rx, |_| Some(Reply::Ack))
}

/// Waits (at most `limit`) until `cond` holds; panics with `what` if not.
pub async fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `future`'s output, or a panic naming `what` after `limit` (a test that
/// waits on the network fails instead of hanging).
pub async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Batch `seq` of agent `AGENT`'s run `incarnation`: `flows` generated flows.
pub fn batch(incarnation: u64, seq: u64, flows: usize) -> FlowBatch {
    let mut b = generate::batch(seq, seq, flows, 3);
    b.agent = AGENT.into();
    b.incarnation = incarnation;
    b
}

/// A QUIC client endpoint connected (or not) to `server` with `crypto`;
/// the endpoint must outlive the connection.
pub async fn raw_client(
    crypto: rustls::ClientConfig,
    server: SocketAddr,
) -> (
    quinn::Endpoint,
    Result<quinn::Connection, quinn::ConnectionError>,
) {
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint
        .set_default_client_config(flowattr_transport::tls::quic_client_config(crypto).unwrap());
    let conn = endpoint.connect(server, "localhost").unwrap().await;
    (endpoint, conn)
}

/// The spooled batch files in `dir`.
pub fn spool_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}
