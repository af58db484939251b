//! Formatting: released flows through the sink plugin, on worker threads
//! while the core thread attributes the next release, and back into the
//! core's order before they reach the outputs.
//!
//! A release is cut into jobs of at most `chunk_flows` flows, numbered in
//! order. Workers take jobs from a bounded queue, each calling the sink on
//! an instance of its own ([`flowattr_plugin_runtime::RuntimeConfig::instances`]);
//! when the queue is full the core formats the job itself, so it helps
//! rather than waits. Finished jobs wait in [`Formatting`] until every
//! earlier one has finished, then go to the outputs in number order, the
//! release's batch ids with its last job's last chunk: the outputs see the
//! same chunks in the same order whatever the worker count, and a batch is
//! retired only once all its chunks are delivered.
//!
//! A job whose sink call fails (or whose sink is not loaded) keeps its flows
//! and its place; later jobs wait behind it, no release is made while it
//! waits, and it is tried again each tick.
//!
//! With `workers = 1` there are no worker threads: the core formats every
//! job when it is made, and ticks behave as on a single thread.

use std::{
    collections::VecDeque,
    sync::{Arc, mpsc},
    thread::JoinHandle,
};

use flowattr_model::{AttributedFlow, BatchId};
use flowattr_plugin_runtime::{CallError, Plugin};

/// One job: a run of a release's flows, and how to format it.
pub(super) struct Job {
    seq: u64,
    sink: Arc<Plugin>,
    flows: Vec<AttributedFlow>,
    /// The outputs' chunk limit, if any.
    limit: Option<usize>,
    /// A buffer for its first chunk (the outputs hand out retired ones).
    buffer: Vec<u8>,
}

/// A job's flows as output chunks.
pub(super) struct Formatted {
    /// The chunks in order: bytes and flows in each.
    chunks: Vec<(Vec<u8>, u64)>,
    /// Flows dropped because each alone formats larger than the limit.
    too_large: u64,
    /// Flows per chunk that fitted, where the job's had to be cut smaller.
    shrunk_to: Option<usize>,
    /// Whether every chunk came out under half the limit.
    roomy: bool,
}

/// What a worker gives back: the job's flows, emptied when formatted.
struct Outcome {
    seq: u64,
    flows: Vec<AttributedFlow>,
    result: Result<Formatted, CallError>,
}

impl Formatted {
    fn nothing() -> Self {
        Self {
            chunks: Vec::new(),
            too_large: 0,
            shrunk_to: None,
            roomy: true,
        }
    }
}

/// Formats `flows` with `sink`, cutting the run into smaller chunks where a
/// chunk formats larger than `limit` (aiming a tenth below it); a single
/// flow larger than `limit` is dropped and counted. An error gives back the
/// whole run: formatting it again yields the same chunks.
fn format_job(
    sink: &Plugin,
    flows: &[AttributedFlow],
    limit: Option<usize>,
    buffer: Vec<u8>,
) -> Result<Formatted, CallError> {
    let mut out = Formatted {
        chunks: Vec::new(),
        too_large: 0,
        shrunk_to: None,
        roomy: limit.is_some(),
    };
    let mut spare = Some(buffer);
    let mut n = flows.len();
    let mut done = 0;
    while done < flows.len() {
        n = n.min(flows.len() - done);
        let mut bytes = spare.take().unwrap_or_default();
        loop {
            bytes.clear();
            sink.format(&flows[done..done + n], &mut bytes)?;
            match limit {
                Some(limit) if bytes.len() > limit && n > 1 => {
                    let fit = (n as u128 * limit as u128 * 9 / (10 * bytes.len() as u128)) as usize;
                    n = fit.clamp(1, n - 1);
                    out.shrunk_to = Some(n);
                }
                _ => break,
            }
        }
        if let Some(limit) = limit {
            if bytes.len() > limit {
                tracing::error!(
                    bytes = bytes.len(),
                    limit,
                    "a single flow formats larger than an output takes; dropped"
                );
                out.too_large += 1;
                done += 1;
                spare = Some(bytes);
                continue;
            }
            out.roomy &= 2 * bytes.len() < limit;
        }
        out.chunks.push((bytes, n as u64));
        done += n;
    }
    Ok(out)
}

/// Where a numbered job stands.
enum Entry {
    /// With a worker.
    Running { ids: Vec<BatchId>, retry: bool },
    Done {
        formatted: Formatted,
        ids: Vec<BatchId>,
    },
    /// Its sink call failed or its sink was missing: formatted again later.
    Failed {
        flows: Vec<AttributedFlow>,
        ids: Vec<BatchId>,
    },
}

/// What [`Formatting::ready`] hands the outputs, in order.
pub(super) enum Ready {
    Chunk {
        bytes: Vec<u8>,
        flows: u64,
        batches: Vec<BatchId>,
    },
    /// Batches whose flows all went out in earlier chunks (or none had any).
    Batches(Vec<BatchId>),
}

/// The worker pool and the jobs not yet handed to the outputs.
pub(super) struct Formatting {
    jobs: Option<mpsc::SyncSender<Job>>,
    outcomes: mpsc::Receiver<Outcome>,
    /// Kept for jobs the core formats itself.
    own_outcomes: mpsc::Sender<Outcome>,
    threads: Vec<JoinHandle<()>>,
    /// Entries from number `first` on.
    entries: VecDeque<Entry>,
    first: u64,
    /// Flows per job: `most`, or fewer where that was more than an output
    /// takes in one chunk.
    chunk_flows: usize,
    most: usize,
    /// Jobs the core may have waiting at most before it stops releasing.
    max_entries: usize,
    /// Emptied flow vectors of formatted jobs.
    spare: Vec<Vec<AttributedFlow>>,
    /// The sink and limit of the last retry, for the jobs after it.
    retrying_with: Option<(Arc<Plugin>, Option<usize>)>,
    /// Counted per failed attempt (and per tick the sink is missing), and
    /// per flow dropped for its size.
    on_failure: Box<dyn Fn() + Send>,
    on_too_large: Box<dyn Fn(u64) + Send>,
}

impl Formatting {
    /// `workers` threads do the per-flow work in all: the core's and
    /// `workers - 1` formatting ones. Jobs hold at most `most` flows.
    pub(super) fn new(
        workers: usize,
        most: usize,
        on_failure: Box<dyn Fn() + Send>,
        on_too_large: Box<dyn Fn(u64) + Send>,
    ) -> Self {
        let threads = workers.max(1) - 1;
        let (own_outcomes, outcomes) = mpsc::channel();
        let (jobs, threads) = if threads == 0 {
            (None, Vec::new())
        } else {
            let (jobs, queue) = mpsc::sync_channel::<Job>(2 * threads);
            let queue = Arc::new(std::sync::Mutex::new(queue));
            let handles = (0..threads)
                .map(|i| {
                    let (queue, outcomes) = (queue.clone(), own_outcomes.clone());
                    std::thread::Builder::new()
                        .name(format!("sink-{i}"))
                        .spawn(move || {
                            loop {
                                let job = queue.lock().unwrap().recv();
                                let Ok(job) = job else { return };
                                if outcomes.send(run(job)).is_err() {
                                    return;
                                }
                            }
                        })
                        .expect("spawning a sink worker")
                })
                .collect();
            (Some(jobs), handles)
        };
        Self {
            jobs,
            outcomes,
            own_outcomes,
            threads,
            entries: VecDeque::new(),
            first: 0,
            chunk_flows: most.max(1),
            most: most.max(1),
            max_entries: 4 * workers.max(1),
            retrying_with: None,
            spare: Vec::new(),
            on_failure,
            on_too_large,
        }
    }

    /// An empty vector for the next release's flows, reused: tens of
    /// thousands of flows a tick would otherwise land in freshly mapped
    /// pages each time.
    pub(super) fn spare_flows(&mut self) -> Vec<AttributedFlow> {
        self.spare.pop().unwrap_or_default()
    }

    /// Cuts a release's flows into jobs and starts them; `ids` go with the
    /// last. Without a sink the jobs wait as failed.
    pub(super) fn start(
        &mut self,
        mut flows: Vec<AttributedFlow>,
        ids: Vec<BatchId>,
        sink: Option<Arc<Plugin>>,
        limit: Option<usize>,
        mut buffer: impl FnMut() -> Vec<u8>,
    ) {
        if sink.is_none() && !flows.is_empty() {
            tracing::error!("sink plugin not loaded; holding flows");
            (self.on_failure)();
        }
        let mut ids = Some(ids);
        let total = flows.len();
        let mut cut = 0;
        let mut rest = flows.drain(..);
        // One job even for no flows: the release's batches go out in order.
        while cut < total || ids.is_some() {
            let n = self.chunk_flows.min(total - cut);
            let mut job = self.spare.pop().unwrap_or_default();
            job.extend(rest.by_ref().take(n));
            cut += n;
            let ids = if cut == total {
                ids.take().unwrap_or_default()
            } else {
                Vec::new()
            };
            let seq = self.first + self.entries.len() as u64;
            match &sink {
                _ if job.is_empty() => self.entries.push_back(Entry::Done {
                    formatted: Formatted::nothing(),
                    ids,
                }),
                None => self.entries.push_back(Entry::Failed { flows: job, ids }),
                Some(sink) => {
                    self.entries.push_back(Entry::Running { ids, retry: false });
                    self.submit(Job {
                        seq,
                        sink: sink.clone(),
                        flows: job,
                        limit,
                        buffer: buffer(),
                    });
                }
            }
        }
        drop(rest);
        self.keep_spare(flows);
    }

    fn keep_spare(&mut self, mut flows: Vec<AttributedFlow>) {
        if self.spare.len() < self.max_entries {
            flows.clear();
            self.spare.push(flows);
        }
    }

    /// Hands a job to a worker, or formats it here when none has room.
    fn submit(&mut self, job: Job) {
        let job = match &self.jobs {
            Some(jobs) => match jobs.try_send(job) {
                Ok(()) => return,
                Err(mpsc::TrySendError::Full(job) | mpsc::TrySendError::Disconnected(job)) => job,
            },
            None => job,
        };
        let _ = self.own_outcomes.send(run(job));
    }

    /// Tries the first failed job again (with the sink loaded now); once
    /// it succeeds, the others follow at once.
    pub(super) fn retry(&mut self, sink: Option<Arc<Plugin>>, limit: Option<usize>) {
        self.collect();
        if !self.has_failed() {
            return;
        }
        let Some(sink) = sink else {
            tracing::error!("sink plugin not loaded; holding flows");
            (self.on_failure)();
            return;
        };
        let retrying = self
            .entries
            .iter()
            .any(|e| matches!(e, Entry::Running { retry: true, .. }));
        if !retrying {
            self.retrying_with = Some((sink, limit));
            self.resubmit_failed(true);
        }
    }

    /// Submits the first failed job again (a probe), or all of them.
    fn resubmit_failed(&mut self, probe: bool) {
        let Some((sink, limit)) = self.retrying_with.clone() else {
            return;
        };
        for i in 0..self.entries.len() {
            let Entry::Failed { .. } = self.entries[i] else {
                continue;
            };
            let Entry::Failed { flows, ids } = self.take(i) else {
                unreachable!("matched above")
            };
            self.entries[i] = Entry::Running { ids, retry: probe };
            self.submit(Job {
                seq: self.first + i as u64,
                sink: sink.clone(),
                flows,
                limit,
                buffer: Vec::new(),
            });
            if probe {
                return;
            }
        }
    }

    /// Records what the workers (and the core) finished.
    fn collect(&mut self) {
        while let Ok(outcome) = self.outcomes.try_recv() {
            self.record(outcome);
        }
    }

    fn record(&mut self, Outcome { seq, flows, result }: Outcome) {
        let i = (seq - self.first) as usize;
        let Entry::Running { ids, retry } = self.take(i) else {
            unreachable!("an outcome is for a running job")
        };
        match result {
            Ok(formatted) => {
                if let Some(n) = formatted.shrunk_to {
                    self.chunk_flows = self.chunk_flows.min(n);
                } else if formatted.roomy
                    && let [(_, n)] = formatted.chunks[..]
                    && n as usize == self.chunk_flows
                {
                    self.chunk_flows = (2 * self.chunk_flows).min(self.most);
                }
                if formatted.too_large > 0 {
                    (self.on_too_large)(formatted.too_large);
                }
                self.entries[i] = Entry::Done { formatted, ids };
                self.keep_spare(flows);
                if retry {
                    self.resubmit_failed(false);
                }
            }
            Err(error) => {
                tracing::error!(%error, "sink plugin failed; retrying next tick");
                (self.on_failure)();
                self.entries[i] = Entry::Failed { flows, ids };
            }
        }
    }

    /// Entry `i`, leaving an empty placeholder for the caller to replace.
    fn take(&mut self, i: usize) -> Entry {
        let placeholder = Entry::Running {
            ids: Vec::new(),
            retry: false,
        };
        std::mem::replace(&mut self.entries[i], placeholder)
    }

    /// Hands over, in order, what finished with nothing unfinished before it.
    pub(super) fn ready(&mut self, mut give: impl FnMut(Ready)) {
        self.collect();
        while let Some(Entry::Done { .. }) = self.entries.front() {
            let Some(Entry::Done { formatted, ids }) = self.entries.pop_front() else {
                unreachable!("peeked")
            };
            self.first += 1;
            let last = formatted.chunks.len();
            let mut ids = Some(ids);
            for (i, (bytes, flows)) in formatted.chunks.into_iter().enumerate() {
                let batches = if i + 1 == last {
                    ids.take().unwrap_or_default()
                } else {
                    Vec::new()
                };
                give(Ready::Chunk {
                    bytes,
                    flows,
                    batches,
                });
            }
            if let Some(ids) = ids.filter(|ids| !ids.is_empty()) {
                give(Ready::Batches(ids));
            }
        }
    }

    /// Waits for every job with a worker to finish (tests, the simulator,
    /// benchmarks: what a tick started is then all out).
    pub(super) fn wait(&mut self) {
        self.collect();
        while self
            .entries
            .iter()
            .any(|e| matches!(e, Entry::Running { .. }))
        {
            match self.outcomes.recv() {
                Ok(outcome) => self.record(outcome),
                Err(_) => return,
            }
        }
    }

    /// Whether a failed job waits to be formatted again.
    pub(super) fn has_failed(&self) -> bool {
        self.entries
            .iter()
            .any(|e| matches!(e, Entry::Failed { .. }))
    }

    /// Whether so many jobs wait that the core should not release more.
    pub(super) fn is_backed_up(&self) -> bool {
        self.entries.len() >= self.max_entries
    }

    /// Jobs not yet handed to the outputs.
    pub(super) fn waiting(&self) -> usize {
        self.entries.len()
    }
}

fn run(job: Job) -> Outcome {
    let Job {
        seq,
        sink,
        flows,
        limit,
        buffer,
    } = job;
    let mut flows = flows;
    let result = format_job(&sink, &flows, limit, buffer);
    if result.is_ok() {
        flows.clear();
    }
    Outcome { seq, flows, result }
}

impl Drop for Formatting {
    fn drop(&mut self) {
        // Workers end once the queue is closed and their job is done.
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
