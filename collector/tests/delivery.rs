//! Nothing lost under faults: a Kafka client that is not ours reads every
//! flow of a collector run with the example configuration; a collector
//! stopped between handing chunks to Kafka and their delivery delivers them
//! after its restart; a flood of arrivals while the output is down stays
//! within the configured bounds and loses nothing; acknowledged batches
//! survive a power loss.

mod common;

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use common::{
    broker::Broker,
    fleet::{Fleet, S, batch, flow, now_ns, ship_all, workload},
    journal::replayable,
    settings::core_settings,
};
use flowattr_collector::{
    clocks::ClockSample,
    config::{CollectorConfig, KafkaOutputSection, OutputSection},
    core::{Arrival, Core, CoreParts, Decision, Input},
    journal::{Journal, MemoryStore},
    metrics::CollectorMetrics,
    output::{FileOutput, FileOutputConfig, Outputs},
    ownership::{OwnershipConfig, OwnershipTable},
    remote::Regions,
    service::Collector,
};
use flowattr_model::{AttributedFlow, BatchId, FlowBatch};
use flowattr_plugin_runtime::{PluginDirectory, Runtime, RuntimeConfig, clock::ManualClock};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
};

const WAIT: Duration = Duration::from_secs(60);

/// Every message of every partition of `topic`, read by a plain rdkafka
/// consumer from the beginning, until the JSON lines in them hold `want`
/// distinct record ids (and a second more, so extra copies show) or WAIT.
fn consume(brokers: &str, topic: &str, partitions: i32, want: usize) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "not-ours")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut messages = Vec::new();
    let mut ids = HashSet::new();
    let deadline = Instant::now() + WAIT;
    let mut quiet_until = None;
    while Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let payload = m.payload().unwrap_or_default().to_vec();
            ids.extend(record_ids(&payload));
            messages.push(payload);
        }
        if ids.len() >= want {
            let until = *quiet_until.get_or_insert(Instant::now() + Duration::from_secs(1));
            if Instant::now() >= until {
                break;
            }
        }
    }
    messages
}

/// The record ids of a chunk of JSON lines.
fn record_ids(chunk: &[u8]) -> Vec<String> {
    std::str::from_utf8(chunk)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["record_id"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn distinct_ids(messages: &[Vec<u8>]) -> HashSet<String> {
    messages.iter().flat_map(|m| record_ids(m)).collect()
}

/// `n` flows of agent-a, each on its own local port from `first_port`.
fn flows(n: u32, first_port: u32) -> Vec<AttributedFlow> {
    let t = now_ns() - 100 * S;
    (0..n)
        .map(|i| {
            let port = first_port + i;
            flow(
                &format!(
                    "10.1.{}.{}:{}",
                    port / 60_000,
                    5 + port % 200,
                    1024 + port % 60_000
                ),
                &workload("api-1"),
                "10.2.0.7:443",
                t,
            )
        })
        .collect()
}

/// The collector the README's example configuration describes, pointed at
/// this test's broker, PKI, plugins and directories.
fn example_config(fleet: &Fleet, broker: &Broker) -> CollectorConfig {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("collector.example.toml");
    let mut c = CollectorConfig::load(&path).unwrap();
    let test = fleet.collector_config("collector-1");
    c.name = test.name;
    c.listen = test.listen;
    c.data_dir = test.data_dir;
    c.tls = test.tls;
    c.claims = test.claims;
    c.plugins.directory = test.plugins.directory;
    c.plugins.cache_dir = test.plugins.cache_dir;
    c.plugins.watch = false;
    c.metrics.enabled = false;
    c.hold = test.hold;
    c.ownership.max_skew = test.ownership.max_skew;
    if let Some(k) = &mut c.kafka {
        k.brokers = broker.address();
        // The example's keys, made here (as `openssl genpkey -algorithm
        // ed25519` would).
        let keys = fleet.out_dir("sharing-keys");
        std::fs::create_dir_all(&keys).unwrap();
        let key_pair = |name: &str| {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
            let (private, public) = (
                keys.join(format!("{name}.key")),
                keys.join(format!("{name}.pub")),
            );
            std::fs::write(&private, pair.serialize_pem()).unwrap();
            std::fs::write(&public, pair.public_key_pem()).unwrap();
            (private, public)
        };
        k.signing_key = Some(key_pair("collector-1").0);
        for (name, origin) in &mut k.origins {
            origin.public_keys = vec![key_pair(name).1];
        }
    }
    for o in &mut c.outputs {
        match o {
            OutputSection::Kafka(k) => k.brokers = broker.address(),
            OutputSection::File { dir, .. } => *dir = fleet.out_dir("collector-1"),
            OutputSection::Stdout | OutputSection::Otlp(_) => {}
        }
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_consumer_reads_every_flow_of_a_collector_run_with_the_example_configuration() {
    let fleet = Fleet::new();
    let broker = Broker::start();
    let config = example_config(&fleet, &broker);
    let (topic, partitions, limit) = config
        .outputs
        .iter()
        .find_map(|o| match o {
            OutputSection::Kafka(k) => Some((k.topic.clone(), k.partitions, k.max_message_bytes)),
            _ => None,
        })
        .expect("the example has a Kafka output");
    assert_eq!(broker.partitions(&topic), None, "nobody created the topic");
    let collector = Collector::start(config).await.unwrap();
    let a = fleet.agent("agent-a", &[collector.local_addr()]);
    // 10,000 flows released together, in one sink call (sink_batch 16384):
    // megabytes of JSON lines, several times a broker's message limit.
    const FLOWS: usize = 10_000;
    let batches: Vec<FlowBatch> = (0..4)
        .map(|b| batch("agent-a", b, flows(2500, 2500 * b as u32)))
        .collect();
    ship_all(&a, &batches).await;

    let messages = tokio::task::spawn_blocking({
        let broker_addr = broker.address();
        let topic = topic.clone();
        move || consume(&broker_addr, &topic, partitions, FLOWS)
    })
    .await
    .unwrap();
    assert_eq!(
        broker.partitions(&topic),
        Some(partitions as usize),
        "the collector created its output topic"
    );
    let ids = distinct_ids(&messages);
    assert_eq!(ids.len(), FLOWS, "every flow reached the consumer");
    let total: usize = messages.iter().map(Vec::len).sum();
    assert!(total > 2 * limit, "{total} bytes: not more than the limit");
    assert!(
        messages.len() >= total.div_ceil(limit),
        "{} messages for {total} bytes",
        messages.len()
    );
    for m in &messages {
        assert!(
            m.len() <= limit,
            "a message of {} bytes over the limit {limit}",
            m.len()
        );
    }
    let m = collector.metrics();
    let deadline = Instant::now() + WAIT;
    while m.value("flowattr_collector_flows_out", &[]) < FLOWS as f64 {
        assert!(
            Instant::now() < deadline,
            "flows_out never counted the delivered flows"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_stopped_before_kafka_delivered_delivers_after_its_restart() {
    let fleet = Fleet::new();
    let broker = Broker::start();
    let mut config = fleet.collector_config("collector-1");
    config.outputs = vec![OutputSection::Kafka(KafkaOutputSection {
        partitions: 1,
        ..kafka_output(&broker, "flows")
    })];
    let collector = Collector::start(config.clone()).await.unwrap();
    let a = fleet.agent("agent-a", &[collector.local_addr()]);
    ship_all(&a, &[batch("agent-a", 0, flows(100, 0))]).await;
    wait_for_metric(&collector, "flowattr_collector_flows_out", 100.0).await;

    // The broker freezes: chunks go to the producer and are never
    // acknowledged. The batch stays journaled, its flows not counted out.
    broker.pause();
    ship_all(&a, &[batch("agent-a", 1, flows(100, 100))]).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let m = collector.metrics();
    assert_eq!(m.value("flowattr_collector_journal_batches", &[]), 1.0);
    assert_eq!(m.value("flowattr_collector_flows_out", &[]), 100.0);
    collector.shutdown().await;

    broker.resume();
    let collector = Collector::start(config).await.unwrap();
    let got = tokio::task::spawn_blocking({
        let addr = broker.address();
        move || distinct_ids(&consume(&addr, "flows", 1, 200))
    })
    .await
    .unwrap();
    assert_eq!(
        got.len(),
        200,
        "the journal replayed what Kafka had not acknowledged"
    );
    collector.shutdown().await;
}

fn kafka_output(broker: &Broker, topic: &str) -> KafkaOutputSection {
    KafkaOutputSection {
        brokers: broker.address(),
        topic: topic.into(),
        create: true,
        partitions: 3,
        replication_factor: None,
        max_message_bytes: 1_000_000,
        properties: Default::default(),
        security: Default::default(),
    }
}

async fn wait_for_metric(collector: &Collector, name: &str, at_least: f64) {
    let deadline = Instant::now() + WAIT;
    while collector.metrics().value(name, &[]) < at_least {
        assert!(
            Instant::now() < deadline,
            "{name} stayed at {}",
            collector.metrics().value(name, &[])
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_while_the_output_is_down_stays_within_the_bounds_and_loses_nothing() {
    let fleet = Fleet::new();
    let mut config = fleet.collector_config("collector-1");
    let out = fleet.out_dir("collector-1");
    config.outputs = vec![OutputSection::File {
        dir: out.clone(),
        prefix: "flows".into(),
        rotate_bytes: 1,
        rotate_after: Duration::from_secs(3600),
        keep_files: 0,
    }];
    config.max_held_flows = 1000;
    config.max_queued_bytes = 64 << 10;
    config.arrival_queue_batches = 4;
    config.arrival_queue_bytes = 1 << 20;
    let collector = Collector::start(config).await.unwrap();
    // The output directory turns into a file: every write fails.
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::write(&out, b"not a directory").unwrap();

    let a = fleet.agent("agent-a", &[collector.local_addr()]);
    const BATCHES: u64 = 60;
    for b in 0..BATCHES {
        a.send(&batch("agent-a", b, flows(100, 100 * b as u32)))
            .await
            .unwrap();
    }
    let m = collector.metrics().clone();
    let mut peak = (0.0f64, 0.0f64, 0.0f64);
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        peak.0 = peak.0.max(m.value("flowattr_collector_hold_flows", &[]));
        peak.1 = peak
            .1
            .max(m.value("flowattr_collector_arrivals_waiting", &[]));
        peak.2 = peak
            .2
            .max(m.value("flowattr_collector_arrivals_waiting_bytes", &[]));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (held, waiting, waiting_bytes) = peak;
    assert!(
        held <= 1100.0,
        "held {held} flows, bound 1000 (+ one batch)"
    );
    assert!(waiting <= 4.0, "{waiting} arrivals waited, bound 4");
    let batch_cost = 200_000.0; // a 100-flow batch's frame and flows, generously
    assert!(
        waiting_bytes <= (1 << 20) as f64 + batch_cost,
        "{waiting_bytes} bytes waited, bound 1 MiB (+ one batch)"
    );
    let s = a.counters().snapshot();
    assert!(s.acked < BATCHES, "the agent was slowed: {s:?}");
    assert_eq!(
        (s.rejected, s.dropped_spool_full),
        (0, 0),
        "and not failed: {s:?}"
    );

    // Back up: every flow is written, each once.
    std::fs::remove_file(&out).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let lines = fleet.wait_written("collector-1", (BATCHES * 100) as usize, WAIT * 2);
    let ids: HashSet<&str> = lines
        .iter()
        .map(|l| l["record_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), (BATCHES * 100) as usize);
    assert_eq!(lines.len(), ids.len(), "no flow written twice");
    collector.shutdown().await;
}

/// A core on a test clock whose journal is a [`MemoryStore`], writing JSON
/// lines into `dir`.
fn core_on(
    store: &MemoryStore,
    fleet: &Fleet,
    dir: &str,
    clock: &Arc<AtomicU64>,
) -> (Core, Arc<ManualClock>) {
    let plugin_clock = Arc::new(ManualClock::new(clock.load(Ordering::Relaxed)));
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: None,
        clock: plugin_clock.clone(),
        instances: 2,
        ..RuntimeConfig::default()
    })
    .unwrap();
    let (directory, _) = PluginDirectory::open(&runtime, fleet.plugins()).unwrap();
    let mut table = OwnershipTable::new(OwnershipConfig::default());
    table.allow("agent-a", ["10.1.0.0/16".parse().unwrap()]);
    let (journal, recovery) = Journal::with_store(Box::new(store.clone()), 1000).unwrap();
    let output = FileOutput::new(FileOutputConfig {
        dir: fleet.out_dir(dir),
        prefix: "flows".into(),
        extension: "jsonl".into(),
        rotate_bytes: 1 << 30,
        rotate_after: Duration::from_secs(86_400),
        keep_files: 0,
        file_per_chunk: false,
    })
    .unwrap();
    let now = clock.clone();
    let mut core = Core::new(
        core_settings(2),
        CoreParts {
            table,
            journal,
            outputs: Outputs::new(vec![Box::new(output)], 64 << 20),
            regions: Regions::default(),
            forwarders: Vec::new(),
            sharing: None,
            plugins: Arc::new(directory),
            metrics: Arc::new(CollectorMetrics::new()),
            clock: Box::new(move || now.load(Ordering::Relaxed)),
            comparison: None,
        },
    );
    core.recover(recovery, flowattr_collector::service::decode_journal_body);
    (core, plugin_clock)
}

#[test]
fn every_acknowledged_batch_survives_a_power_loss() {
    let fleet = Fleet::new();
    let store = MemoryStore::new();
    let t0 = now_ns();
    let clock = Arc::new(AtomicU64::new(t0));
    let (mut core, _) = core_on(&store, &fleet, "before", &clock);
    let acked: Arc<Mutex<Vec<BatchId>>> = Arc::default();
    // Each acknowledgement checks, the moment it is given, that a machine
    // losing its power then would replay the batch.
    let not_durable: Arc<Mutex<Vec<BatchId>>> = Arc::default();
    for seq in 0..20u64 {
        let mut b = batch("agent-a", seq, flows(10, 10 * seq as u32));
        b.created_ns = t0;
        b.complete_until_ns = t0;
        let mut frame = Vec::new();
        flowattr_transport::codec::encode_batch(&b, &mut frame).unwrap();
        let (acked, not_durable, store) = (acked.clone(), not_durable.clone(), store.clone());
        let id = b.id();
        core.handle(Input::Arrival(Arrival {
            peer: "agent-a".into(),
            batch: b,
            body: frame.split_off(4),
            clock: Some(ClockSample {
                sent_ns: t0,
                received_ns: t0,
                rtt_ns: 1_000_000,
            }),
            reply: Box::new(move |d| {
                assert_eq!(d, Decision::Accepted);
                if !replayable(&store.power_loss()).contains(&id) {
                    not_durable.lock().unwrap().push(id.clone());
                }
                acked.lock().unwrap().push(id);
            }),
        }));
    }
    assert_eq!(acked.lock().unwrap().len(), 20);
    assert!(
        not_durable.lock().unwrap().is_empty(),
        "acknowledged before durable: {:?}",
        not_durable.lock().unwrap()
    );

    // The power goes before anything is written out; a new core on what
    // the disk kept writes every acknowledged flow.
    let after = store.power_loss();
    drop(core);
    let (mut core, plugin_clock) = core_on(&after, &fleet, "after", &clock);
    for step in 1..=100 {
        let t = t0 + step * S / 10;
        clock.store(t, Ordering::Relaxed);
        plugin_clock.set(t);
        core.tick();
    }
    core.finish_formatting();
    let written = fleet.written("after");
    let per_port: HashMap<u64, usize> = written.iter().fold(HashMap::new(), |mut m, l| {
        *m.entry(l["local"]["port"].as_u64().unwrap()).or_default() += 1;
        m
    });
    assert_eq!(
        per_port.len(),
        200,
        "every acknowledged flow, written after the power loss"
    );
    assert!(per_port.values().all(|&n| n == 1));
}
