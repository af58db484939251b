//! The demo's control plane: who owns which address, when. Every change is
//! written to IPMan's state (the agent's `ipman` plugin reads it at
//! capture), recorded as ground truth, and reported on the legacy event
//! stream — late, as in production: a thread appends each event to the
//! collector's events file only after the legacy delay.

use std::{
    collections::HashMap,
    io::Write,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use flowattr_ab::Ownership;
use flowattr_model::{IpChange, IpEvent, Workload};
use ipman::admin::{RawWorkload, StateFile};

use flowattr_collector::service::unix_now_ns as now_ns;

type Queue = Arc<Mutex<Vec<(Instant, IpEvent)>>>;

/// Address ownership: IPMan state, ground truth, legacy events.
pub struct Ledger {
    ipman: StateFile,
    /// Open intervals: address → (workload, since).
    open: HashMap<IpAddr, (Workload, u64)>,
    /// Closed intervals: the ground truth so far.
    truth: Vec<Ownership>,
    delay: Duration,
    queue: Queue,
    stop: Arc<AtomicBool>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Ledger {
    /// A ledger writing IPMan state to `ipman_state` and legacy events to
    /// `events`, `delay` after each change.
    pub fn new(ipman_state: &Path, events: PathBuf, delay: Duration) -> anyhow::Result<Ledger> {
        let queue: Queue = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&events)?;
        let (q, s) = (queue.clone(), stop.clone());
        let writer = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let due: Vec<IpEvent> = {
                    let mut q = q.lock().expect("queue");
                    let now = Instant::now();
                    let (due, later) = q.drain(..).partition(|(at, _)| *at <= now);
                    *q = later;
                    due.into_iter().map(|(_, e)| e).collect()
                };
                for mut event in due {
                    event.arrival_time_ns = now_ns();
                    let line = serde_json::to_string(&event).expect("events serialise");
                    if let Err(e) = writeln!(file, "{line}") {
                        eprintln!("writing a legacy event failed: {e}");
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Ok(Ledger {
            ipman: StateFile::open(ipman_state).context("IPMan state")?,
            open: HashMap::new(),
            truth: Vec::new(),
            delay,
            queue,
            stop,
            writer: Some(writer),
        })
    }

    fn event(&self, address: IpAddr, change: IpChange, at: u64, known: bool) {
        let due = if known {
            Instant::now()
        } else {
            Instant::now() + self.delay
        };
        let event = IpEvent {
            address,
            change,
            event_time_ns: at,
            arrival_time_ns: at,
        };
        self.queue.lock().expect("queue").push((due, event));
    }

    /// Records that `workload` holds `ip` from now. An IPMan container is
    /// also assigned in IPMan's state (`ipman`), an instance is not (its
    /// identity document names its address). `known`: the legacy system
    /// knew before the demo began.
    pub fn assign(
        &mut self,
        ip: IpAddr,
        workload: &Workload,
        ipman: bool,
        known: bool,
    ) -> anyhow::Result<()> {
        let at = now_ns();
        if ipman {
            self.ipman.define_workload(
                &workload.id,
                RawWorkload {
                    app: workload.app.clone(),
                    cluster: workload.cluster.clone(),
                    ..RawWorkload::default()
                },
            )?;
            self.ipman.assign(ip, &workload.id, at)?;
            self.ipman.save()?;
        }
        self.open.insert(ip, (workload.clone(), at));
        self.event(ip, IpChange::Assigned(workload.clone()), at, known);
        Ok(())
    }

    /// Records that `ip` was given up now.
    pub fn release(&mut self, ip: IpAddr, ipman: bool) -> anyhow::Result<()> {
        let at = now_ns();
        if ipman {
            self.ipman.release(ip, at)?;
            self.ipman.save()?;
        }
        if let Some((w, since)) = self.open.remove(&ip) {
            self.truth.push(owned(ip, w, since, at));
        }
        self.event(ip, IpChange::Released, at, false);
        Ok(())
    }

    /// Stops the event writer (events not yet due stay undelivered, as they
    /// would still be on their way) and writes the ground truth to `path`.
    pub fn finish(mut self, path: &Path) -> anyhow::Result<()> {
        self.stop_writer();
        let at = now_ns();
        let open = self
            .open
            .drain()
            .map(|(ip, (w, since))| owned(ip, w, since, at));
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for o in self.truth.drain(..).chain(open) {
            writeln!(out, "{}", serde_json::to_string(&o)?)?;
        }
        out.flush()?;
        Ok(())
    }

    fn stop_writer(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

fn owned(address: IpAddr, workload: Workload, from_ns: u64, to_ns: u64) -> Ownership {
    Ownership {
        address,
        from_ns,
        to_ns,
        workload: Arc::new(workload),
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.stop_writer();
    }
}
