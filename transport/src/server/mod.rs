//! The collector's side: a QUIC endpoint that accepts agents with client
//! certificates, reads one batch per stream and hands it to the collector
//! through a bounded channel, with a one-shot reply.
//!
//! The ack frame is written only when the collector replies
//! [`Reply::Ack`], that is once it has taken responsibility for the batch.
//! A collector that drops the reply unanswered resets the stream, and the
//! agent sends the batch again. When the channel is full the stream waits,
//! and with `max_concurrent_streams` streams waiting the agent cannot open
//! another: backpressure reaches it through QUIC's stream limit, with no
//! buffering beyond `max_concurrent_streams` frames per connection.
//!
//! No agent can crowd out the others ([`admission`]): frames are read
//! within a global budget of bytes in flight and a share of it per
//! identity, each identity has a few connections at most, frames are
//! checked against [`DecodeLimits`] before they are decoded, on a small
//! blocking pool, and bad-frame warnings are limited per identity. When
//! handshakes pile up, new clients must first prove their address (a QUIC
//! retry); datagrams are not accepted.
//!
//! ```no_run
//! # async fn run(tls: flowattr_transport::tls::TlsFiles) -> Result<(), Box<dyn std::error::Error>> {
//! use flowattr_transport::{Receiver, ReceiverConfig, Reply};
//!
//! let (receiver, mut deliveries) = Receiver::bind(ReceiverConfig::new("[::]:7443".parse()?, tls))?;
//! while let Some(delivery) = deliveries.recv().await {
//!     // Journal the batch, then:
//!     let _ = delivery.reply.send(Reply::Ack);
//! }
//! receiver.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

mod admission;
mod counters;
mod stream;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use flowattr_model::FlowBatch;
use tokio::sync::{mpsc, oneshot, watch};

use admission::{Admission, AdmissionLimits};
pub use counters::{ReceiverCounters, ReceiverStats};
use stream::StreamContext;

use crate::{
    codec::{ALPN, DEFAULT_MAX_FRAME_BYTES, DecodeLimits, RejectKind},
    tls::{self, PeerIdentity, TlsError, TlsFiles},
};

/// Connection close code: the receiver is shutting down.
const CLOSE_SHUTDOWN: u32 = 0;
/// Connection close code: the client certificate names no one.
const CLOSE_NO_IDENTITY: u32 = 2;
/// Connection close code: the identity has as many connections as it may.
const CLOSE_TOO_MANY: u32 = 3;

/// A handshake must be done within this time.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how a [`Receiver`] listens.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// UDP address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// The collector's CA, certificate and key; agents' certificates must
    /// be signed by this CA.
    pub tls: TlsFiles,
    /// Largest frame body accepted (default 16 MiB).
    pub max_frame_bytes: usize,
    /// Batches in flight per connection (default 16).
    pub max_concurrent_streams: u32,
    /// Deliveries waiting for the collector (default 64).
    pub channel_capacity: usize,
    /// A frame's length prefix, and then its body once admitted, must
    /// each arrive within this time (default 30 s).
    pub read_timeout: Duration,
    /// What a batch may hold, checked before it is decoded.
    pub limits: DecodeLimits,
    /// Frame bytes read or waiting for the collector's answer, over all
    /// agents (default 256 MiB; at least one largest frame).
    pub max_in_flight_bytes: usize,
    /// The same, per identity (default 64 MiB; at least one largest
    /// frame): a flooding agent waits on its own share.
    pub max_in_flight_bytes_per_identity: usize,
    /// Connections one identity may hold at once (default 4); with
    /// `max_concurrent_streams`, its streams.
    pub max_connections_per_identity: usize,
    /// Handshakes in progress past which a client must first prove its
    /// address with a QUIC retry (default 64); past four times as many,
    /// new ones are refused.
    pub max_pending_handshakes: usize,
    /// Frames decoded at once, on the blocking pool (default 2).
    pub decode_threads: usize,
}

impl ReceiverConfig {
    /// Defaults for everything but the address and the TLS files.
    pub fn new(listen: SocketAddr, tls: TlsFiles) -> Self {
        Self {
            listen,
            tls,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_concurrent_streams: 16,
            channel_capacity: 64,
            read_timeout: Duration::from_secs(30),
            limits: DecodeLimits::default(),
            max_in_flight_bytes: 256 << 20,
            max_in_flight_bytes_per_identity: 64 << 20,
            max_connections_per_identity: 4,
            max_pending_handshakes: 64,
            decode_threads: 2,
        }
    }
}

/// One batch for the collector, and where its answer goes.
#[derive(Debug)]
pub struct Delivery {
    /// The agent, as its client certificate names it.
    pub peer: PeerIdentity,
    /// The agent's UDP address.
    pub remote_addr: SocketAddr,
    /// The batch, decoded.
    pub batch: FlowBatch,
    /// The batch's frame body as it arrived, send-time stamp included
    /// (decodes with [`codec::decode_body`](crate::codec::decode_body)), so
    /// a collector can journal it without encoding it again.
    pub body: Vec<u8>,
    /// When the frame was sent and read, for measuring the sender's clock.
    pub timing: FrameTiming,
    /// The collector's answer. Dropping it unanswered makes the agent send
    /// the batch again.
    pub reply: oneshot::Sender<Reply>,
}

/// One frame's timing: the sender's stamp and what the receiver measured.
/// With `offset = sender clock − receiver clock` and the frame's one-way
/// delay `d`, `sent_ns − received_ns + d = offset`, and `0 ≤ d`; `rtt_ns`
/// bounds `d` for a frame that was not held up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTiming {
    /// When the sender sent the frame, Unix nanoseconds on the sender's
    /// clock; `None` when the sender did not stamp it (an older sender).
    pub sent_ns: Option<u64>,
    /// When the receiver had read the frame's length prefix, Unix
    /// nanoseconds on the receiver's clock.
    pub received_ns: u64,
    /// The connection's round-trip time estimate then.
    pub rtt_ns: u64,
}

/// The collector's answer to a [`Delivery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The collector has taken responsibility for the batch.
    Ack,
    /// The batch is refused, for the reason given. The agent keeps a
    /// batch that names another agent than the sender's certificate (the
    /// receiver marks that refusal [`RejectKind::Identity`] in the frame)
    /// and offers it again later; it drops any other.
    Reject(String),
    /// The sender is not among those the collector takes batches from (its
    /// `[claims]`), for the reason given: marked [`RejectKind::Unclaimed`],
    /// so the agent keeps the batch and offers it again later.
    Unclaimed(String),
}

/// A receiver that could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    /// The TLS files could not be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The UDP address could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// The collector's QUIC endpoint. Dropping it closes every connection at
/// once; [`Receiver::shutdown`] lets answers in progress finish first.
pub struct Receiver {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    counters: Arc<ReceiverCounters>,
    stop: watch::Sender<bool>,
    /// Held by every connection and stream task; closed when all are done.
    alive: Option<mpsc::Sender<()>>,
    done: mpsc::Receiver<()>,
    accept: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Listens on `config.listen`; deliveries arrive on the returned
    /// channel. Must be called within a Tokio runtime.
    pub fn bind(
        config: ReceiverConfig,
    ) -> Result<(Receiver, mpsc::Receiver<Delivery>), ReceiverError> {
        let server = tls::server_config(&config.tls, config.max_concurrent_streams)?;
        let endpoint = quinn::Endpoint::server(server, config.listen).map_err(|source| {
            ReceiverError::Bind {
                addr: config.listen,
                source,
            }
        })?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| ReceiverError::Bind {
                addr: config.listen,
                source,
            })?;
        let (deliveries, rx) = mpsc::channel(config.channel_capacity.max(1));
        let (stop, stopped) = watch::channel(false);
        let (alive, done) = mpsc::channel(1);
        let counters = Arc::new(ReceiverCounters::default());
        let admission = Arc::new(Admission::new(
            AdmissionLimits {
                in_flight_bytes: config.max_in_flight_bytes,
                in_flight_bytes_per_identity: config.max_in_flight_bytes_per_identity,
                connections_per_identity: config.max_connections_per_identity.max(1),
                decode_threads: config.decode_threads,
                decode: config.limits,
            },
            config.max_frame_bytes,
            counters.clone(),
        ));
        let shared = Shared {
            admission,
            pending_handshakes: Arc::new(AtomicUsize::new(0)),
            config,
            deliveries,
            counters: counters.clone(),
            stopped,
            alive: alive.clone(),
        };
        let accept = tokio::spawn(accept_loop(endpoint.clone(), shared));
        tracing::info!(address = %local_addr, "receiving batches");
        Ok((
            Receiver {
                endpoint,
                local_addr,
                counters,
                stop,
                alive: Some(alive),
                done,
                accept,
            },
            rx,
        ))
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The receiver's counters.
    pub fn counters(&self) -> Arc<ReceiverCounters> {
        self.counters.clone()
    }

    /// Stops accepting connections and streams, waits up to `grace` for
    /// streams in progress to be answered, then closes every connection.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        self.accept.abort();
        self.alive = None;
        let _ = tokio::time::timeout(grace, self.done.recv()).await;
        self.endpoint
            .close(CLOSE_SHUTDOWN.into(), b"collector shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        tracing::info!(address = %self.local_addr, "receiver stopped");
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.accept.abort();
        self.endpoint
            .close(CLOSE_SHUTDOWN.into(), b"collector shutting down");
    }
}

/// What the accept loop passes to each connection.
#[derive(Clone)]
struct Shared {
    config: ReceiverConfig,
    admission: Arc<Admission>,
    /// Handshakes begun and not yet done.
    pending_handshakes: Arc<AtomicUsize>,
    deliveries: mpsc::Sender<Delivery>,
    counters: Arc<ReceiverCounters>,
    stopped: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Shared) {
    while let Some(incoming) = endpoint.accept().await {
        let pending = shared.pending_handshakes.load(Relaxed);
        let limit = shared.config.max_pending_handshakes.max(1);
        if pending >= limit && !incoming.remote_address_validated() {
            // The client must come back with the token: a spoofed source
            // address never does.
            shared.counters.retries.fetch_add(1, Relaxed);
            let _ = incoming.retry();
            continue;
        }
        if pending >= limit.saturating_mul(4) {
            shared.counters.handshakes_shed.fetch_add(1, Relaxed);
            incoming.refuse();
            continue;
        }
        shared.pending_handshakes.fetch_add(1, Relaxed);
        tokio::spawn(connection(incoming, shared.clone()));
    }
}

/// Completes the handshake, then serves the connection's streams.
async fn connection(incoming: quinn::Incoming, shared: Shared) {
    let remote_addr = incoming.remote_address();
    let counters = &shared.counters;
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, async { incoming.await }).await;
    shared.pending_handshakes.fetch_sub(1, Relaxed);
    let conn = match handshake {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => {
            counters.handshake_refused.fetch_add(1, Relaxed);
            tracing::warn!(%remote_addr, %error, "refused a connection during the handshake");
            return;
        }
        Err(_) => {
            counters.handshake_refused.fetch_add(1, Relaxed);
            tracing::warn!(%remote_addr, timeout = ?HANDSHAKE_TIMEOUT, "a handshake did not finish in time");
            return;
        }
    };
    let alpn = conn
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    let peer = match PeerIdentity::of(&conn) {
        Some(peer) if alpn.as_deref() == Some(ALPN) => peer,
        _ => {
            counters.handshake_refused.fetch_add(1, Relaxed);
            tracing::warn!(%remote_addr, "refused a connection: no name in its certificate or no ALPN");
            conn.close(CLOSE_NO_IDENTITY.into(), b"no client identity");
            return;
        }
    };
    let Some(share) = shared.admission.connect(&peer.0) else {
        counters.connections_refused.fetch_add(1, Relaxed);
        tracing::warn!(%peer, %remote_addr, limit = shared.config.max_connections_per_identity, "refused a connection: this identity already holds as many as it may");
        conn.close(
            CLOSE_TOO_MANY.into(),
            b"too many connections for this identity",
        );
        return;
    };
    counters.connections.fetch_add(1, Relaxed);
    tracing::info!(%peer, %remote_addr, "agent connected");
    let ctx = Arc::new(StreamContext {
        conn: conn.clone(),
        peer: peer.clone(),
        remote_addr,
        deliveries: shared.deliveries.clone(),
        counters: shared.counters.clone(),
        max_frame_bytes: shared.config.max_frame_bytes,
        read_timeout: shared.config.read_timeout,
        admission: shared.admission.clone(),
        share: share.clone(),
    });
    serve_streams(&conn, &ctx, &shared).await;
    shared.admission.disconnect(&peer.0, &share);
}

/// Serves a connection's streams until it ends or the receiver stops.
async fn serve_streams(conn: &quinn::Connection, ctx: &Arc<StreamContext>, shared: &Shared) {
    let (peer, remote_addr) = (&ctx.peer, ctx.remote_addr);
    let mut stopped = shared.stopped.clone();
    loop {
        let (send, recv) = tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok(streams) => streams,
                Err(error) => {
                    tracing::info!(%peer, %remote_addr, %error, "agent disconnected");
                    return;
                }
            },
            _ = stopped.wait_for(|&s| s) => return,
        };
        let ctx = ctx.clone();
        let alive = shared.alive.clone();
        tokio::spawn(async move {
            stream::serve(&ctx, send, recv).await;
            drop(alive);
        });
    }
}

impl Reply {
    /// The kind a refusal carries in its frame, given whether the batch
    /// names the sender's certificate; `None` for an ack.
    fn refusal(&self, names_sender: bool) -> Option<(RejectKind, &str)> {
        match self {
            Self::Ack => None,
            Self::Reject(reason) if names_sender => Some((RejectKind::Unspecified, reason)),
            Self::Reject(reason) => Some((RejectKind::Identity, reason)),
            Self::Unclaimed(reason) => Some((RejectKind::Unclaimed, reason)),
        }
    }
}
