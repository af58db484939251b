//! Flows to an OpenTelemetry receiver over OTLP/HTTP: each chunk (one
//! `ExportLogsServiceRequest`, as `otlp-sink` formats it) is POSTed to the
//! endpoint as `application/x-protobuf`, and counts as durable only once
//! the receiver answered 2xx ([`Output::commit`]).
//!
//! ```toml
//! [[outputs]]
//! type = "otlp"
//! endpoint = "http://otel-collector:4318"   # POSTs to /v1/logs
//! headers = { authorization = "Bearer …" }
//! ```
//!
//! One sender thread sends the chunks one at a time, in order. A lost
//! connection, a timeout or a 408/429/502/503/504 sends the same chunk
//! again after a backoff (full jitter, `retry_initial` doubling to
//! `retry_max`; a `Retry-After` in seconds is honoured up to five minutes),
//! for as long as it takes: meanwhile the chunks after it wait in the
//! output's queue (`queue_bytes`), then in the collector's, and the
//! pressure goes back to the agents. Any other status refuses the request
//! for good (a malformed or too large request, a bad token); sending it again
//! would not change that, so the chunk is dropped and its flows counted in
//! `dropped_total{reason="otlp_rejected:STATUS"}`, and the answer is logged.
//! Records a 2xx answer's `partial_success` rejects are counted as
//! `otlp_partial_rejected`.
//!
//! The client is `ureq` on that thread: the [`Output`] interface is
//! synchronous and called from the core's plain thread, one request is in
//! flight at a time (order), and ureq brings HTTPS (rustls with ring, the
//! TLS stack the workspace already uses, and the Mozilla roots) without a
//! second async runtime; `hyper`, in the tree through axum, would need its
//! client stack and a TLS connector added, and a runtime to drive it.
//!
//! While the receiver fails, [`Output::commit`] reports the error (the
//! output shows as down, its `failures` counting the pumps that found it
//! failing) unless a chunk became durable since the last commit.

mod response;

use std::{
    collections::{BTreeMap, VecDeque},
    io,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::{self, JoinHandle},
    time::Duration,
};

use flowattr_backoff::{Backoff, Policy};

pub use self::response::{MAX_RETRY_AFTER, Outcome, classify};
use super::{Dropped, Output, Progress};

/// The media type sent, and the only one an OTLP output accepts from its
/// sink.
pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// The path appended to an endpoint that names none.
pub const LOGS_PATH: &str = "/v1/logs";

/// Where and how the OTLP output sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpOutputConfig {
    /// The full URL requests go to (see [`OtlpOutputConfig::new`]).
    pub url: String,
    /// Sent with every request (authentication, tenant).
    pub headers: BTreeMap<String, String>,
    /// The most one request may take, answer included.
    pub timeout: Duration,
    /// The largest request body; the collector formats smaller chunks.
    pub max_request_bytes: usize,
    /// Bytes of chunks the output holds waiting for the receiver.
    pub queue_bytes: usize,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

impl OtlpOutputConfig {
    /// The defaults for `endpoint`: an `http://` or `https://` URL; one
    /// without a path gets `/v1/logs`.
    pub fn new(endpoint: &str) -> Result<Self, String> {
        Ok(Self {
            url: logs_url(endpoint)?,
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(10),
            max_request_bytes: 8 << 20,
            queue_bytes: 64 << 20,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(30),
        })
    }
}

/// `endpoint` checked, with [`LOGS_PATH`] when it has no path.
pub fn logs_url(endpoint: &str) -> Result<String, String> {
    let uri: ureq::http::Uri = endpoint
        .parse()
        .map_err(|e| format!("{endpoint:?} is not a URL: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(format!(
            "{endpoint:?} is not an http:// or https:// URL with a host"
        ));
    }
    if uri.path() == "/" && uri.query().is_none() {
        return Ok(format!("{}{LOGS_PATH}", endpoint.trim_end_matches('/')));
    }
    Ok(endpoint.to_owned())
}

/// What the output and its sender thread share.
#[derive(Default)]
struct State {
    /// Chunks taken and not yet answered for, oldest first; the sender
    /// works on the front one.
    queue: VecDeque<(u64, Arc<Vec<u8>>)>,
    queued_bytes: usize,
    /// Every chunk before this one is delivered (or dropped and counted).
    done_below: u64,
    /// `done_below` at the last commit.
    committed_below: u64,
    dropped: Vec<Dropped>,
    /// The current failure, cleared by the next delivery.
    failing: Option<String>,
    stop: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An [`Output`] to an OTLP/HTTP logs receiver.
pub struct OtlpOutput {
    name: String,
    queue_bytes: usize,
    max_request_bytes: usize,
    shared: Arc<Shared>,
    sender: Option<JoinHandle<()>>,
}

impl OtlpOutput {
    /// Starts the sender thread; does not wait for the receiver.
    pub fn new(config: OtlpOutputConfig) -> io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let sender = Sender {
            agent,
            shared: shared.clone(),
            backoff: Backoff::from_entropy(Policy::new(config.retry_initial, config.retry_max)),
            config: config.clone(),
            warned: 0,
        };
        let sender = thread::Builder::new()
            .name("otlp-output".into())
            .spawn(move || sender.run())?;
        Ok(Self {
            name: format!("otlp:{}", config.url),
            queue_bytes: config.queue_bytes.max(1),
            max_request_bytes: config.max_request_bytes.max(1),
            shared,
            sender: Some(sender),
        })
    }
}

impl Output for OtlpOutput {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, seq: u64, chunk: &[u8]) -> io::Result<()> {
        let mut state = self.shared.lock();
        if !state.queue.is_empty() && state.queued_bytes + chunk.len() > self.queue_bytes {
            let why = state.failing.as_deref().unwrap_or("the receiver is slow");
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("the OTLP output's queue is full ({why})"),
            ));
        }
        state.queued_bytes += chunk.len();
        state.queue.push_back((seq, Arc::new(chunk.to_vec())));
        self.shared.wake.notify_all();
        Ok(())
    }

    fn commit(&mut self) -> io::Result<Progress> {
        let mut state = self.shared.lock();
        let advanced = state.done_below > state.committed_below;
        state.committed_below = state.done_below;
        if let Some(failing) = &state.failing
            && !advanced
        {
            return Err(io::Error::other(failing.clone()));
        }
        Ok(Progress {
            durable_below: state.done_below,
            resend_from: None,
        })
    }

    fn max_chunk_bytes(&self) -> Option<usize> {
        Some(self.max_request_bytes)
    }

    fn take_dropped(&mut self) -> Vec<Dropped> {
        std::mem::take(&mut self.shared.lock().dropped)
    }
}

impl Drop for OtlpOutput {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(sender) = self.sender.take() {
            let _ = sender.join();
        }
    }
}

/// The sender thread: the front chunk, until the receiver answers for it.
struct Sender {
    agent: ureq::Agent,
    shared: Arc<Shared>,
    backoff: Backoff,
    config: OtlpOutputConfig,
    /// Failures logged (the log thins out: 1, 2, 4, …).
    warned: u64,
}

/// The most of an answer's body read.
const MAX_ANSWER_BYTES: u64 = 64 << 10;

impl Sender {
    fn run(mut self) {
        loop {
            let (seq, chunk) = {
                let mut state = self.shared.lock();
                loop {
                    if state.stop {
                        return;
                    }
                    if let Some(front) = state.queue.front() {
                        break front.clone();
                    }
                    state = self
                        .shared
                        .wake
                        .wait(state)
                        .unwrap_or_else(|e| e.into_inner());
                }
            };
            let outcome = if chunk.is_empty() {
                // No flows: nothing to send (and an empty request is valid).
                Outcome::Delivered {
                    rejected: 0,
                    message: String::new(),
                }
            } else {
                self.send(&chunk)
            };
            let wait = match outcome {
                Outcome::Delivered { rejected, message } => {
                    let drop = (rejected > 0).then(|| {
                        tracing::warn!(rejected, %message, "The OTLP receiver rejected some records of a request; they are counted as dropped.");
                        Dropped {
                            seq,
                            reason: "otlp_partial_rejected".into(),
                            records: Some(rejected),
                        }
                    });
                    self.finish(seq, chunk.len(), drop);
                    None
                }
                Outcome::Refused { status, why } => {
                    tracing::error!(status, bytes = chunk.len(), error = %why, "The OTLP receiver refused a request for good; its flows are dropped and counted.");
                    let drop = Dropped {
                        seq,
                        reason: format!("otlp_rejected:{status}"),
                        records: None,
                    };
                    self.finish(seq, chunk.len(), Some(drop));
                    None
                }
                Outcome::Retry { after, why } => {
                    let delay = self.backoff.fail();
                    let delay = after.map_or(delay, |after| after.max(delay));
                    self.warned += 1;
                    if self.warned.is_power_of_two() {
                        tracing::warn!(error = %why, failures = self.warned, retry_in = ?delay, "Sending to the OTLP receiver failed; the chunk is sent again.");
                    }
                    self.shared.lock().failing = Some(why);
                    Some(delay)
                }
            };
            if let Some(delay) = wait {
                let state = self.shared.lock();
                let _ = self
                    .shared
                    .wake
                    .wait_timeout_while(state, delay, |s| !s.stop)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
    }

    /// One POST of `chunk`.
    fn send(&self, chunk: &[u8]) -> Outcome {
        let mut request = self
            .agent
            .post(&self.config.url)
            .header("content-type", CONTENT_TYPE);
        for (name, value) in &self.config.headers {
            request = request.header(name, value);
        }
        match request.send(chunk) {
            Ok(mut answer) => {
                let status = answer.status().as_u16();
                let retry_after = answer
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let body = answer
                    .body_mut()
                    .with_config()
                    .limit(MAX_ANSWER_BYTES)
                    .read_to_vec()
                    .unwrap_or_default();
                classify(status, retry_after.as_deref(), &body)
            }
            Err(e) => Outcome::Retry {
                after: None,
                why: format!(
                    "could not send to the OTLP receiver {}: {e}",
                    self.config.url
                ),
            },
        }
    }

    /// The front chunk is answered for: the next one goes.
    fn finish(&mut self, seq: u64, len: usize, drop: Option<Dropped>) {
        self.backoff.succeed();
        let mut state = self.shared.lock();
        if state.queue.front().is_some_and(|(s, _)| *s == seq) {
            state.queue.pop_front();
            state.queued_bytes -= len;
        }
        state.done_below = seq + 1;
        state.failing = None;
        state.dropped.extend(drop);
        if self.warned > 0 {
            tracing::info!(
                failures = self.warned,
                "The OTLP receiver takes requests again."
            );
            self.warned = 0;
        }
    }
}
