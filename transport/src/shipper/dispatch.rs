//! The shipper's one task that owns the connection: it connects (failing
//! over round-robin with backoff), starts an attempt for each batch `send`
//! hands over and for each spooled batch waiting, and settles the spool
//! with each attempt's outcome: an ack removes the batch, a rejection for
//! good drops it (counted), a refusal of its agent name keeps it for later
//! (see [`super::refusal`]), a failure retries it after a backoff.
//!
//! A batch is in memory only while an attempt for it runs, and every
//! attempt holds one of `max_in_flight` permits: while no collector is
//! connected batches wait on disk only, and `send` does not wait.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use flowattr_backoff::Backoff;
use flowattr_model::BatchId;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot},
    task::JoinHandle,
    time::{Instant, sleep_until},
};

use super::{
    ShipperConfig,
    attempt::{self, Outcome, Payload},
    counters::ShipperCounters,
    index::SpoolKey,
    refusal::Refusals,
    spool::Spool,
};

/// A batch `send` has spooled (not yet marked as being sent), with its
/// frame and permit.
pub(super) struct Handoff {
    pub key: SpoolKey,
    pub frame: Vec<u8>,
    pub permit: OwnedSemaphorePermit,
}

/// Requests to the dispatcher.
pub(super) enum Command {
    /// Deliver what can be delivered within the time, then stop; answers
    /// with the number of batches left in the spool.
    Shutdown {
        within: Duration,
        done: oneshot::Sender<usize>,
    },
}

/// An attempt's outcome, with the connection it used.
struct Report {
    key: SpoolKey,
    connection: usize,
    outcome: Outcome,
}

enum Link {
    Down { retry_at: Instant },
    Connecting(JoinHandle<Result<quinn::Connection, String>>),
    Up(quinn::Connection),
}

enum Event {
    Handoff(Option<Handoff>),
    Report(Report),
    Connected(Result<quinn::Connection, String>),
    LinkDue,
    LinkClosed(quinn::ConnectionError),
    Permit(OwnedSemaphorePermit),
    Wake,
    Command(Option<Command>),
    Deadline,
}

pub(super) struct Dispatcher {
    pub config: Arc<ShipperConfig>,
    /// The connection's backoff (also timing each batch's retry).
    pub backoff: Backoff,
    pub refusals: Refusals,
    pub endpoint: quinn::Endpoint,
    pub spool: Arc<Mutex<Spool>>,
    pub counters: Arc<ShipperCounters>,
    pub permits: Arc<Semaphore>,
    pub handoffs: mpsc::Receiver<Handoff>,
    pub commands: mpsc::Receiver<Command>,
}

struct State {
    link: Link,
    /// Index of the collector in use.
    target: usize,
    attempts: usize,
    draining: Option<(Instant, oneshot::Sender<usize>)>,
    reports_tx: mpsc::UnboundedSender<Report>,
}

impl Dispatcher {
    pub async fn run(mut self) {
        let (reports_tx, mut reports) = mpsc::unbounded_channel();
        let mut state = State {
            link: Link::Down {
                retry_at: Instant::now(),
            },
            target: 0,
            attempts: 0,
            draining: None,
            reports_tx,
        };
        let mut handoffs_open = true;
        loop {
            let now = Instant::now();
            let (ready, wake_at, spooled) = {
                let spool = self.spool.lock().unwrap();
                let up = matches!(state.link, Link::Up(_));
                (
                    up && spool.index.has_ready(now),
                    spool.index.next_ready_at(),
                    spool.index.len(),
                )
            };
            if let Some((deadline, _)) = &state.draining
                && ((spooled == 0 && state.attempts == 0) || *deadline <= now)
            {
                break;
            }
            let deadline = state.draining.as_ref().map(|(d, _)| *d);
            let event = tokio::select! {
                h = self.handoffs.recv(), if handoffs_open => Event::Handoff(h),
                Some(r) = reports.recv() => Event::Report(r),
                e = link_event(&mut state.link) => e,
                p = self.permits.clone().acquire_owned(), if ready => match p {
                    Ok(p) => Event::Permit(p),
                    Err(_) => Event::Wake,
                },
                _ = sleep_until(wake_at.unwrap_or(now)), if wake_at.is_some() => Event::Wake,
                c = self.commands.recv(), if deadline.is_none() => Event::Command(c),
                _ = sleep_until(deadline.unwrap_or(now)), if deadline.is_some() => Event::Deadline,
            };
            match event {
                Event::Handoff(None) => handoffs_open = false,
                Event::Handoff(Some(h)) => self.handoff(&mut state, h),
                Event::Report(r) => self.settle(&mut state, r),
                Event::Connected(Ok(conn)) => {
                    let addr = conn.remote_address();
                    tracing::info!(collector = %addr, "connected to a collector");
                    self.counters.set_connected(Some(addr));
                    state.link = Link::Up(conn);
                }
                Event::Connected(Err(error)) => self.link_lost(&mut state, &error),
                Event::LinkDue => self.connect(&mut state),
                Event::LinkClosed(error) => self.link_lost(&mut state, &error.to_string()),
                Event::Permit(permit) => self.send_spooled(&mut state, permit),
                Event::Wake => {}
                Event::Command(Some(Command::Shutdown { within, done })) => {
                    state.draining = Some((Instant::now() + within, done));
                }
                Event::Command(None) => return,
                Event::Deadline => break,
            }
        }
        if let Link::Up(conn) = &state.link {
            conn.close(0u32.into(), b"agent shutting down");
        }
        self.counters.set_connected(None);
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
        let left = self.spool.lock().unwrap().index.len();
        if let Some((_, done)) = state.draining {
            let _ = done.send(left);
        }
    }

    /// Starts connecting to the current collector.
    fn connect(&self, state: &mut State) {
        let collector = &self.config.collectors[state.target];
        let (addr, name) = (collector.addr, collector.server_name.clone());
        let endpoint = self.endpoint.clone();
        let timeout = self.config.connect_timeout;
        tracing::debug!(collector = %addr, server_name = %name, "connecting");
        state.link = Link::Connecting(tokio::spawn(async move {
            let connecting = endpoint
                .connect(addr, &name)
                .map_err(|e| format!("connecting to {addr}: {e}"))?;
            match tokio::time::timeout(timeout, connecting).await {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(e)) => Err(format!("connecting to {addr}: {e}")),
                Err(_) => Err(format!(
                    "connecting to {addr}: no answer within {timeout:?}"
                )),
            }
        }));
    }

    /// The connection failed or was abandoned: on to the next collector
    /// after the backoff.
    fn link_lost(&mut self, state: &mut State, error: &str) {
        if let Link::Up(conn) = &state.link {
            conn.close(0u32.into(), b"abandoned");
        }
        let collectors = &self.config.collectors;
        let failed = collectors[state.target].addr;
        if collectors.len() > 1 {
            state.target = (state.target + 1) % collectors.len();
            ShipperCounters::inc(&self.counters.failovers);
        }
        let delay = self.backoff.fail();
        let next = collectors[state.target].addr;
        tracing::warn!(collector = %failed, %error, next = %next, retry_in = ?delay, "collector connection failed");
        self.counters.set_connected(None);
        state.link = Link::Down {
            retry_at: Instant::now() + delay,
        };
    }

    fn handoff(&self, state: &mut State, h: Handoff) {
        let Link::Up(conn) = &state.link else {
            // Not connected: the batch waits on disk, not in memory.
            return;
        };
        // Not when it was dropped for space meanwhile (counted), or is
        // already being sent from the spool.
        if self.spool.lock().unwrap().index.mark_in_flight(&h.key) {
            let conn = conn.clone();
            self.spawn_attempt(state, conn, h.key, Payload::Memory(h.frame), h.permit);
        }
    }

    /// Starts sending the oldest spooled batch that is due.
    fn send_spooled(&self, state: &mut State, permit: OwnedSemaphorePermit) {
        let Link::Up(conn) = &state.link else { return };
        let conn = conn.clone();
        let taken = {
            let mut spool = self.spool.lock().unwrap();
            spool.index.take_ready(Instant::now()).map(|key| {
                let flows = spool.index.get(&key).map_or(0, |e| e.flows);
                let path = spool.path(&key, flows);
                (key, path)
            })
        };
        if let Some((key, path)) = taken {
            self.spawn_attempt(state, conn, key, Payload::Disk(path), permit);
        }
    }

    fn spawn_attempt(
        &self,
        state: &mut State,
        conn: quinn::Connection,
        key: SpoolKey,
        payload: Payload,
        permit: OwnedSemaphorePermit,
    ) {
        state.attempts += 1;
        let reports = state.reports_tx.clone();
        let counters = self.counters.clone();
        let ack_timeout = self.config.ack_timeout;
        let watermark_cap = self.spool.lock().unwrap().index.watermark_cap(&key);
        tokio::spawn(async move {
            let id = key.id();
            let outcome =
                attempt::deliver(&conn, &id, payload, watermark_cap, ack_timeout, &counters).await;
            drop(permit);
            let _ = reports.send(Report {
                key,
                connection: conn.stable_id(),
                outcome,
            });
        });
    }

    /// Settles the spool with an attempt's outcome.
    fn settle(&mut self, state: &mut State, report: Report) {
        state.attempts -= 1;
        let id: BatchId = report.key.id();
        let spool = self.spool.clone();
        let mut spool = spool.lock().unwrap();
        match report.outcome {
            // The spool gauges are updated before the outcome is counted, so
            // whoever sees a batch counted also sees it gone from the spool.
            Outcome::Acked => {
                self.backoff.succeed();
                tracing::debug!(batch = %id, "batch acknowledged");
                if let Err(error) = spool.remove(&report.key) {
                    tracing::error!(batch = %id, %error, "could not delete an acknowledged batch from the spool; it may be sent again");
                }
                self.refusals
                    .accepted(&mut spool.index, &report.key.agent, &self.counters);
                self.counters.spool(spool.index.len(), spool.index.bytes());
                ShipperCounters::inc(&self.counters.acked);
            }
            Outcome::Rejected { kind, reason } if self.refusals.kept(kind, &id.agent).is_some() => {
                // The connection works: its backoff starts over.
                self.backoff.succeed();
                let kind = self.refusals.kept(kind, &id.agent).expect("kept");
                self.refusals.refused(
                    &mut spool.index,
                    &report.key,
                    kind,
                    &reason,
                    Instant::now(),
                    &self.counters,
                );
            }
            Outcome::Rejected { kind, reason } => {
                self.backoff.succeed();
                let flows = spool.index.get(&report.key).map_or(0, |e| e.flows);
                tracing::error!(batch = %id, %kind, flows, %reason, "A collector rejected a batch for good; it is dropped.");
                if let Err(error) = spool.remove(&report.key) {
                    tracing::error!(batch = %id, %error, "could not delete a rejected batch from the spool");
                }
                self.counters.spool(spool.index.len(), spool.index.bytes());
                self.counters
                    .rejected_flows
                    .fetch_add(flows, std::sync::atomic::Ordering::Relaxed);
                ShipperCounters::inc(&self.counters.rejected);
            }
            Outcome::Gone => {
                tracing::warn!(batch = %id, "a spooled batch's file disappeared");
                let _ = spool.remove(&report.key);
            }
            Outcome::Failed { error, abandon } => {
                ShipperCounters::inc(&self.counters.retries);
                let delay = self.backoff.draw();
                spool
                    .index
                    .release(&report.key, Some(Instant::now() + delay));
                tracing::debug!(batch = %id, %error, retry_in = ?delay, "sending a batch failed");
                let same = matches!(&state.link, Link::Up(c) if c.stable_id() == report.connection);
                if abandon && same {
                    drop(spool);
                    self.link_lost(state, &error);
                    return self.publish();
                }
            }
        }
        drop(spool);
        self.publish();
    }

    fn publish(&self) {
        let spool = self.spool.lock().unwrap();
        self.counters.spool(spool.index.len(), spool.index.bytes());
        self.counters.held(spool.index.held());
    }
}

async fn link_event(link: &mut Link) -> Event {
    match link {
        Link::Down { retry_at } => {
            sleep_until(*retry_at).await;
            Event::LinkDue
        }
        Link::Connecting(handle) => {
            Event::Connected(handle.await.unwrap_or_else(|e| Err(e.to_string())))
        }
        Link::Up(conn) => Event::LinkClosed(conn.closed().await),
    }
}
