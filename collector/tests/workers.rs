//! The same input through cores with 1, 2 and 3 workers (the core thread
//! and 0, 1 or 2 running the real jsonl-sink component): the outputs get the
//! same chunks in the same order, batches are retired at the same ticks and
//! only once all their flows are out, and every flow's attribution is the
//! same. Inputs are drawn by proptest: two agents whose addresses change
//! owners, flows both ends report, batches arriving late, small sink calls
//! and an output limit that makes chunks be cut again.
//!
//! Each tick is followed by [`Core::finish_formatting`] in the comparison,
//! so the releases are the same whatever the worker count; a second
//! property lets formatting run behind the ticks (as in the collector),
//! with a sink that fails every second call, and checks that nothing is
//! retired early, lost or written twice.

mod common;

use std::{
    collections::{BTreeMap, HashMap},
    io,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use common::{
    fleet::{Fleet, S, flow, workload},
    journal::replayable,
    settings::core_settings,
};
use flowattr_collector::{
    clocks::ClockSample,
    core::{Arrival, Core, CoreParts, CoreSettings, Decision, Input},
    journal::{Journal, MemoryStore},
    metrics::CollectorMetrics,
    output::{Output, Outputs, Progress},
    ownership::{OwnershipConfig, OwnershipTable},
    remote::Regions,
};
use flowattr_model::{AttributedFlow, BatchId, FlowBatch};
use flowattr_plugin_runtime::{PluginDirectory, Runtime, RuntimeConfig, clock::ManualClock};
use proptest::prelude::*;

const T0: u64 = 1_800_000_000 * S;
const TICK: u64 = S / 10;
const AGENTS: [&str; 2] = ["agent-a", "agent-b"];

/// One batch of the drawn input.
#[derive(Debug, Clone)]
struct Shipment {
    agent: usize,
    /// Connections in it; each is reported by both ends, this agent's now
    /// and the other's `late` ticks later.
    flows: usize,
    late: u64,
    /// Ticks between this shipment and the next.
    gap: u64,
}

#[derive(Debug, Clone)]
struct Drawn {
    shipments: Vec<Shipment>,
    /// Fleet seconds an address keeps its owner.
    tenure_s: u64,
    sink_batch: usize,
    /// The probe output's chunk limit.
    limit: Option<usize>,
}

fn inputs() -> impl Strategy<Value = Drawn> {
    let shipment =
        (0..2usize, 0..40usize, 0..30u64, 0..4u64).prop_map(|(agent, flows, late, gap)| Shipment {
            agent,
            flows,
            late,
            gap,
        });
    (
        prop::collection::vec(shipment, 1..24),
        1..20u64,
        1..64usize,
        prop_oneof![Just(None), (2_000..20_000usize).prop_map(Some)],
    )
        .prop_map(|(shipments, tenure_s, sink_batch, limit)| Drawn {
            shipments,
            tenure_s,
            sink_batch,
            limit,
        })
}

/// An output that keeps every chunk it takes, durable at once, with an
/// optional chunk limit (as Kafka's message size is): the test's view of
/// what the core hands its outputs, in order.
#[derive(Clone, Default)]
struct Probe {
    chunks: Arc<Mutex<Vec<Vec<u8>>>>,
    /// The next number a chunk may have (releases without flows take a
    /// number but no chunk).
    next: Arc<AtomicU64>,
    limit: Option<usize>,
}

impl Output for Probe {
    fn name(&self) -> &str {
        "probe"
    }
    fn write(&mut self, seq: u64, chunk: &[u8]) -> io::Result<()> {
        let mut chunks = self.chunks.lock().unwrap();
        assert!(
            seq >= self.next.load(Ordering::Relaxed),
            "chunks in order, once each"
        );
        self.next.store(seq + 1, Ordering::Relaxed);
        assert!(
            self.limit.is_none_or(|l| chunk.len() <= l),
            "over the limit"
        );
        chunks.push(chunk.to_vec());
        Ok(())
    }
    fn commit(&mut self) -> io::Result<Progress> {
        Ok(Progress {
            durable_below: self.next.load(Ordering::Relaxed),
            resend_from: None,
        })
    }
    fn max_chunk_bytes(&self) -> Option<usize> {
        self.limit
    }
}

/// A core on the test clock with `workers`, the fleet's `sink`, a journal in
/// `store` and the probe as its output.
fn core(
    fleet: &Fleet,
    sink: &str,
    workers: usize,
    input: &Drawn,
    store: &MemoryStore,
    probe: &Probe,
    clock: &Arc<AtomicU64>,
) -> (Core, Arc<ManualClock>) {
    let plugin_clock = Arc::new(ManualClock::new(T0));
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(common::fleet::workspace().join("target/flowattr-test-cache")),
        clock: plugin_clock.clone(),
        instances: workers,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let (directory, _) = PluginDirectory::open(&runtime, fleet.plugins()).unwrap();
    let mut table = OwnershipTable::new(OwnershipConfig::default());
    table.allow("agent-a", ["10.1.0.0/16".parse().unwrap()]);
    table.allow("agent-b", ["10.2.0.0/16".parse().unwrap()]);
    let (journal, _) = Journal::with_store(Box::new(store.clone()), 1000).unwrap();
    let now = clock.clone();
    let core = Core::new(
        CoreSettings {
            hold: Duration::from_secs(2),
            sink: sink.into(),
            sink_batch: input.sink_batch,
            ..core_settings(workers)
        },
        CoreParts {
            table,
            journal,
            outputs: Outputs::new(vec![Box::new(probe.clone())], 64 << 20),
            regions: Regions::default(),
            forwarders: Vec::new(),
            sharing: None,
            plugins: Arc::new(directory),
            metrics: Arc::new(CollectorMetrics::new()),
            clock: Box::new(move || now.load(Ordering::Relaxed)),
            comparison: None,
        },
    );
    (core, plugin_clock)
}

/// The batches of `input`, each due at a tick: (tick, batch). Each of a
/// connection's two records has a local port unique in the run, which names
/// it in the output.
fn batches(input: &Drawn) -> Vec<(u64, FlowBatch)> {
    let mut out = Vec::new();
    let mut tick = 0;
    let mut port = 1024u16;
    let mut seq = [0u64; 2];
    for s in &input.shipments {
        let t = T0 + tick * TICK;
        let (mine, theirs) = (s.agent, 1 - s.agent);
        let mut own = Vec::new();
        let mut other = Vec::new();
        for i in 0..s.flows {
            let start = t - 3 * S + (i as u64 % 7) * S / 7;
            let epoch = start / (input.tenure_s * S);
            let (a_ip, b_ip) = (i % 5, (i * 3) % 5);
            let owner = |agent: usize, ip: usize| workload(&format!("w{agent}-{ip}-{epoch}"));
            let addr = |agent: usize, ip: usize, port: u16| {
                format!("10.{}.0.{}:{port}", agent + 1, ip + 10)
            };
            // The other end's port is unique too (server ports are not,
            // but the flaky sink writes only the local port).
            own.push(flow(
                &addr(mine, a_ip, port),
                &owner(mine, a_ip),
                &addr(theirs, b_ip, port + 20_000),
                start,
            ));
            other.push(flow(
                &addr(theirs, b_ip, port + 20_000),
                &owner(theirs, b_ip),
                &addr(mine, a_ip, port),
                start,
            ));
            port += 1;
        }
        let batch = |agent: usize, flows, at: u64, seq: &mut [u64; 2]| {
            seq[agent] += 1;
            FlowBatch {
                agent: AGENTS[agent].into(),
                incarnation: 1,
                seq: seq[agent],
                created_ns: at,
                complete_until_ns: at,
                flows,
            }
        };
        out.push((tick, batch(mine, own, t, &mut seq)));
        let late = tick + s.late;
        out.push((late, batch(theirs, other, T0 + late * TICK, &mut seq)));
        tick += s.gap;
    }
    out.sort_by_key(|(tick, _)| *tick);
    out
}

/// What one run showed.
#[derive(Debug, PartialEq)]
struct Run {
    chunks: Vec<Vec<u8>>,
    /// Per tick, the batches still in the journal.
    journaled: Vec<Vec<BatchId>>,
}

/// Runs `input` through a core with `workers`; with `behind`, formatting
/// is not waited for at each tick. After every tick, checks that each batch
/// retired has all its flows in the chunks so far.
fn run(fleet: &Fleet, sink: &str, input: &Drawn, workers: usize, behind: bool) -> Run {
    let store = MemoryStore::new();
    let probe = Probe {
        limit: input.limit,
        ..Probe::default()
    };
    let clock = Arc::new(AtomicU64::new(T0));
    let (mut core, plugin_clock) = core(fleet, sink, workers, input, &store, &probe, &clock);
    let due = batches(input);
    let mut flows_of: HashMap<BatchId, Vec<u16>> = HashMap::new();
    let last = due.last().map_or(0, |(t, _)| *t) + 60;
    let mut next = due.into_iter().peekable();
    let mut journaled = Vec::new();
    for tick in 0..=last {
        let t = T0 + tick * TICK;
        clock.store(t, Ordering::Relaxed);
        plugin_clock.set(t);
        while let Some((_, batch)) = next.next_if(|(at, _)| *at <= tick) {
            flows_of.insert(batch.id(), batch.flows.iter().map(local_port).collect());
            deliver(&mut core, batch, t);
        }
        core.tick();
        if !behind {
            core.finish_formatting();
        }
        let mut waiting: Vec<_> = replayable(&store).into_iter().collect();
        waiting.sort_by_key(|id| (id.agent.clone(), id.seq));
        let out = ports_out(&probe.chunks.lock().unwrap());
        for (id, ports) in &flows_of {
            if !waiting.contains(id) {
                for p in ports {
                    assert!(
                        out.contains_key(p),
                        "{id:?} retired before its flow {p} was out"
                    );
                }
            }
        }
        journaled.push(waiting);
    }
    // Ticks take microseconds here, sink calls milliseconds: behind, a
    // call that failed near the end is retried by the ticks after it, as
    // in a running collector.
    core.finish_formatting();
    for _ in 0..100 {
        if replayable(&store).is_empty() {
            break;
        }
        core.tick();
        core.finish_formatting();
    }
    let chunks = probe.chunks.lock().unwrap().clone();
    let out = ports_out(&chunks);
    let all: Vec<u16> = flows_of.values().flatten().copied().collect();
    assert_eq!(out.len(), all.len(), "every flow out");
    for p in &all {
        assert_eq!(out.get(p), Some(&1), "flow {p} out once");
    }
    assert!(replayable(&store).is_empty(), "every batch retired");
    Run { chunks, journaled }
}

fn local_port(f: &AttributedFlow) -> u16 {
    f.flow.local.port()
}

/// How often each local port appears in the chunks: JSON lines (with the
/// flow's local port) or the flaky sink's port lines.
fn ports_out(chunks: &[Vec<u8>]) -> BTreeMap<u16, usize> {
    let mut out = BTreeMap::new();
    for chunk in chunks {
        for line in std::str::from_utf8(chunk).unwrap().lines() {
            let port = match line.parse::<u16>() {
                Ok(port) => port,
                Err(_) => {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    v["local"]["port"].as_u64().unwrap() as u16
                }
            };
            *out.entry(port).or_default() += 1;
        }
    }
    out
}

fn deliver(core: &mut Core, batch: FlowBatch, t: u64) {
    let mut frame = Vec::new();
    flowattr_transport::codec::encode_batch(&batch, &mut frame).unwrap();
    core.handle(Input::Arrival(Arrival {
        peer: batch.agent.clone(),
        batch,
        body: frame.split_off(4),
        clock: Some(ClockSample {
            sent_ns: t,
            received_ns: t,
            rtt_ns: 1_000_000,
        }),
        reply: Box::new(|d| assert_eq!(d, Decision::Accepted)),
    }));
}

fn fleet() -> Fleet {
    let fleet = Fleet::new();
    fleet.add_fixture_plugin(
        "flood-sink",
        "flaky",
        "kind = \"sink\"\nwit = \"0.3.0\"\n[config]\nmode = \"flaky\"\n",
    );
    fleet
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("WORKERS_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(12),
        ..ProptestConfig::default()
    })]

    #[test]
    fn outputs_retirement_and_attributions_are_the_same_for_any_worker_count(input in inputs()) {
        let fleet = fleet();
        let one = run(&fleet, "jsonl-sink", &input, 1, false);
        for workers in [2, 3] {
            let many = run(&fleet, "jsonl-sink", &input, workers, false);
            // The chunks hold every flow's attribution, both sides.
            prop_assert_eq!(&one.chunks, &many.chunks, "{} workers: chunks", workers);
            prop_assert_eq!(&one.journaled, &many.journaled, "{} workers: retirement", workers);
        }
    }

    #[test]
    fn formatting_behind_the_ticks_with_a_failing_sink_loses_repeats_and_retires_early_nothing(
        input in inputs(),
    ) {
        let fleet = fleet();
        for workers in [1, 3] {
            run(&fleet, "jsonl-sink", &input, workers, true);
            run(&fleet, "flaky", &input, workers, true);
        }
    }
}
