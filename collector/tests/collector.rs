//! Whole collectors: agents ship real batches over QUIC with mutual TLS,
//! collectors learn ownership from heartbeats, share it through a real
//! Kafka-protocol broker (Tansu on loopback), forward across regions, and
//! write flows through the real jsonl-sink component into files.

mod common;

use std::{collections::BTreeMap, time::Duration};

use common::{
    broker::Broker,
    fleet::{Fleet, S, assigned, batch, flow, local_of, now_ns, remote_of, ship_all, workload},
};
use flowattr_collector::{
    config::{KafkaSection, RegionSection},
    service::Collector,
};

const WAIT: Duration = Duration::from_secs(60);

/// (local workload, remote workload or reason) of every written flow, by
/// the flow's local port (each test flow has its own).
fn outcomes(lines: &[serde_json::Value]) -> BTreeMap<u64, (String, String)> {
    lines
        .iter()
        .map(|l| {
            (
                l["local"]["port"].as_u64().unwrap(),
                (local_of(l), remote_of(l)),
            )
        })
        .collect()
}

fn kafka(broker: &Broker, topic: &str) -> Option<KafkaSection> {
    Some(KafkaSection {
        partitions: 3,
        ..KafkaSection::unauthenticated(broker.address(), topic)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_collector_attributes_remote_sides_by_the_range_holding_the_flow_start() {
    let fleet = Fleet::new();
    let collector = Collector::start(fleet.collector_config("collector-1"))
        .await
        .unwrap();
    let addr = collector.local_addr();
    let t = now_ns() - 300 * S;
    let (api, db, db_new) = (workload("api-1"), workload("db-1"), workload("db-2"));

    // agent-b's host: 10.2.0.7 was db-1's, then (after 20 s unused) db-2's.
    let b = fleet.agent("agent-b", &[addr]);
    ship_all(
        &b,
        &[batch(
            "agent-b",
            0,
            vec![
                flow("10.2.0.7:5432", &db, "10.1.0.5:40000", t),
                flow("10.2.0.7:5432", &db, "10.1.0.5:40001", t + 10 * S),
                flow("10.2.0.7:5432", &db_new, "10.1.0.5:40002", t + 40 * S),
            ],
        )],
    )
    .await;
    // agent-a's api-1 calls 10.2.0.7 during each owner's time, in the gap
    // between them, and calls an address nobody claims.
    let a = fleet.agent("agent-a", &[addr]);
    ship_all(
        &a,
        &[batch(
            "agent-a",
            0,
            vec![
                flow("10.1.0.5:1001", &api, "10.2.0.7:5432", t + 5 * S),
                flow("10.1.0.5:1002", &api, "10.2.0.7:5432", t + 40 * S + S / 2),
                flow("10.1.0.5:1003", &api, "10.2.0.7:5432", t + 30 * S),
                flow("10.1.0.5:1004", &api, "10.2.99.1:80", t + 5 * S),
            ],
        )],
    )
    .await;

    let lines = fleet.wait_written("collector-1", 7, WAIT);
    let got = outcomes(&lines);
    assert_eq!(got[&1001], ("api-1".into(), "db-1".into()));
    assert_eq!(got[&1002], ("api-1".into(), "db-2".into()));
    assert_eq!(got[&1003], ("api-1".into(), "unattributed:gap".into()));
    assert_eq!(
        got[&1004],
        ("api-1".into(), "unattributed:not-found".into())
    );
    // The other direction: api-1's own heartbeats attribute db's remote side.
    // api-1's heartbeats (5 s to 41.5 s, merged across gaps under 30 s)
    // attribute db's remote side too, except before api-1's first flow.
    let db_side: BTreeMap<u64, String> = lines
        .iter()
        .filter(|l| l["local"]["port"] == 5432)
        .map(|l| (l["remote"]["port"].as_u64().unwrap(), remote_of(l)))
        .collect();
    assert_eq!(db_side[&40000], "unattributed:not-found");
    assert_eq!(db_side[&40001], "api-1");
    assert_eq!(db_side[&40002], "api-1");
    let m = collector.metrics();
    assert_eq!(m.value("flowattr_collector_flows_out", &[]), 7.0);
    assert_eq!(
        m.value("flowattr_collector_remote", &[("outcome", "heartbeat")]),
        4.0
    );
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cannot_claim_addresses_outside_its_prefixes() {
    let fleet = Fleet::new();
    let collector = Collector::start(fleet.collector_config("collector-1"))
        .await
        .unwrap();
    let addr = collector.local_addr();
    let t = now_ns() - 100 * S;
    // agent-a claims agent-b's address for an impostor...
    let a = fleet.agent("agent-a", &[addr]);
    ship_all(
        &a,
        &[batch(
            "agent-a",
            0,
            vec![flow(
                "10.2.0.7:5432",
                &workload("impostor"),
                "10.1.0.5:1",
                t,
            )],
        )],
    )
    .await;
    // ...and agent-a's api-1 calls that address: nothing may name the impostor.
    ship_all(
        &a,
        &[batch(
            "agent-a",
            1,
            vec![flow(
                "10.1.0.5:2001",
                &workload("api-1"),
                "10.2.0.7:5432",
                t,
            )],
        )],
    )
    .await;
    let lines = fleet.wait_written("collector-1", 2, WAIT);
    let got = outcomes(&lines);
    // agent-b, who may claim it, never reported: nobody can say.
    assert_eq!(got[&2001].1, "unattributed:incomplete");
    let m = collector.metrics();
    assert!(m.value("flowattr_collector_ownership", &[("outcome", "refused")]) >= 1.0);
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_batches_are_acknowledged_and_taken_once() {
    let fleet = Fleet::new();
    let collector = Collector::start(fleet.collector_config("collector-1"))
        .await
        .unwrap();
    let addr = collector.local_addr();
    let t = now_ns() - 100 * S;
    let b = batch(
        "agent-a",
        7,
        vec![flow("10.1.0.5:3001", &workload("api-1"), "10.2.0.7:1", t)],
    );
    // Two shippers with their own spools: the same batch id twice, the way
    // an agent re-sends after a lost acknowledgement.
    ship_all(&fleet.agent("agent-a", &[addr]), std::slice::from_ref(&b)).await;
    let second = {
        let spool = fleet.dir.path().join("spool-second");
        let mut c = flowattr_transport::ShipperConfig::new(
            vec![flowattr_transport::CollectorAddr::new(addr, "localhost")],
            flowattr_transport::tls::TlsFiles::in_dir(&fleet.pki(), "agent-a"),
            spool,
        );
        c.ack_timeout = Duration::from_secs(5);
        flowattr_transport::Shipper::start(c).unwrap()
    };
    ship_all(&second, std::slice::from_ref(&b)).await;
    fleet.wait_written("collector-1", 1, WAIT);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fleet.written("collector-1").len(), 1);
    let m = collector.metrics();
    assert_eq!(
        m.value("flowattr_collector_batches", &[("outcome", "duplicate")]),
        1.0
    );
    assert_eq!(
        m.value("flowattr_collector_batches", &[("outcome", "accepted")]),
        1.0
    );
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_larger_than_one_sink_call_is_written_chunk_by_chunk_every_flow_once() {
    let fleet = Fleet::new();
    let mut config = fleet.collector_config("collector-1");
    config.plugins.sink_batch = 3;
    let collector = Collector::start(config).await.unwrap();
    let addr = collector.local_addr();
    let t = now_ns() - 100 * S;
    let api = workload("api-1");
    let batches: Vec<_> = (0..2)
        .map(|b| {
            let flows = (0..5)
                .map(|i| {
                    flow(
                        &format!("10.1.0.5:{}", 3000 + 10 * b + i),
                        &api,
                        "10.2.0.7:1",
                        t,
                    )
                })
                .collect();
            batch("agent-a", b as u64, flows)
        })
        .collect();
    ship_all(&fleet.agent("agent-a", &[addr]), &batches).await;
    let written = fleet.wait_written("collector-1", 10, WAIT);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fleet.written("collector-1").len(), 10, "no flow twice");
    let ports: std::collections::BTreeSet<_> = outcomes(&written).into_keys().collect();
    let expected: std::collections::BTreeSet<u64> = (0..2)
        .flat_map(|b| (0..5).map(move |i| 3000 + 10 * b + i))
        .collect();
    assert_eq!(ports, expected);
    let m = collector.metrics();
    assert_eq!(m.value("flowattr_collector_flows_out", &[]), 10.0);
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_failing_partway_through_a_release_loses_and_repeats_no_flow() {
    let fleet = Fleet::new();
    fleet.add_fixture_plugin(
        "flood-sink",
        "flaky",
        "kind = \"sink\"\nwit = \"0.3.0\"\n[config]\nmode = \"flaky\"\n",
    );
    let mut config = fleet.collector_config("collector-1");
    config.plugins.sink = "flaky".into();
    config.plugins.sink_batch = 3;
    // One instance, so the failures fall as described below; several
    // workers' instances each fail every second call of their own (see
    // tests/workers.rs).
    config.workers = 1;
    let collector = Collector::start(config).await.unwrap();
    let t = now_ns() - 100 * S;
    let api = workload("api-1");
    let flows = (0..7)
        .map(|i| flow(&format!("10.1.0.5:{}", 3000 + i), &api, "10.2.0.7:1", t))
        .collect();
    let agent = fleet.agent("agent-a", &[collector.local_addr()]);
    ship_all(&agent, &[batch("agent-a", 0, flows)]).await;
    // The sink writes 3 flows, fails, and the 4 left are formatted again on
    // the next ticks (3, a failure, then 1).
    let out = fleet.out_dir("collector-1");
    let written = || -> Vec<u16> {
        flowattr_collector::output::files_of(&out, "flows", "bin")
            .unwrap_or_default()
            .iter()
            .flat_map(|f| {
                let text = std::fs::read_to_string(f).unwrap();
                text.lines().map(|l| l.parse().unwrap()).collect::<Vec<_>>()
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + WAIT;
    while written().len() < 7 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut ports = written();
    ports.sort_unstable();
    assert_eq!(ports, (3000..3007).collect::<Vec<u16>>());
    let m = collector.metrics();
    assert_eq!(m.value("flowattr_collector_flows_out", &[]), 7.0);
    assert_eq!(m.value("flowattr_collector_sink_failures", &[]), 2.0);
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_collectors_share_ownership_through_kafka_and_a_late_third_warms_up() {
    let broker = Broker::start();
    let fleet = Fleet::new();
    let config = |name: &str| {
        let mut c = fleet.collector_config(name);
        c.kafka = kafka(&broker, "ownership");
        c.hold = Duration::from_secs(3);
        c
    };
    let c1 = Collector::start(config("collector-1")).await.unwrap();
    let c2 = Collector::start(config("collector-2")).await.unwrap();
    let t = now_ns() - 120 * S;
    let (api, db) = (workload("api-1"), workload("db-1"));

    // Each collector receives one agent's batches only.
    let a = fleet.agent("agent-a", &[c1.local_addr()]);
    let b = fleet.agent("agent-b", &[c2.local_addr()]);
    // Each agent's first flow (to an address nobody claims) starts its
    // range a second before the flows checked, which then fall inside both
    // ranges' interiors.
    let lead = |local: &str, w| flow(local, w, "192.0.2.1:1", t - S);
    let a_flows: Vec<_> = std::iter::once(lead("10.1.0.5:3999", &api))
        .chain((0..20).map(|i| {
            flow(
                &format!("10.1.0.5:{}", 4000 + i),
                &api,
                "10.2.0.7:5432",
                t + i * S,
            )
        }))
        .collect();
    let b_flows: Vec<_> = std::iter::once(lead("10.2.0.7:4999", &db))
        .chain((0..20).map(|i| {
            flow(
                &format!("10.2.0.7:{}", 5000 + i),
                &db,
                "10.1.0.5:443",
                t + i * S,
            )
        }))
        .collect();
    let (a_batch, b_batch) = (
        [batch("agent-a", 0, a_flows)],
        [batch("agent-b", 0, b_flows)],
    );
    tokio::join!(ship_all(&a, &a_batch), ship_all(&b, &b_batch));

    for (name, remote) in [("collector-1", "db-1"), ("collector-2", "api-1")] {
        let lines = fleet.wait_written(name, 21, WAIT);
        for line in lines.iter().filter(|l| l["remote"]["ip"] != "192.0.2.1") {
            assert_eq!(remote_of(line), remote, "{name}: {line}");
        }
    }

    // A third collector, started now, knows both from the shared history.
    let c3 = Collector::start(config("collector-3")).await.unwrap();
    let late = fleet.agent("agent-a", &[c3.local_addr()]);
    ship_all(
        &late,
        &[batch(
            "agent-a",
            100,
            vec![flow("10.1.0.5:6000", &api, "10.2.0.7:5432", t + 3 * S)],
        )],
    )
    .await;
    let lines = fleet.wait_written("collector-3", 1, WAIT);
    assert_eq!(remote_of(&lines[0]), "db-1");
    for c in [c1, c2, c3] {
        c.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribution_goes_on_while_the_broker_is_down_and_sharing_resumes() {
    let mut broker = Broker::start();
    let fleet = Fleet::new();
    let config = |name: &str| {
        let mut c = fleet.collector_config(name);
        c.kafka = kafka(&broker, "ownership");
        c.hold = Duration::from_secs(3);
        c
    };
    let c1 = Collector::start(config("collector-1")).await.unwrap();
    let c2 = Collector::start(config("collector-2")).await.unwrap();
    let a = fleet.agent("agent-a", &[c1.local_addr()]);
    let b = fleet.agent("agent-b", &[c2.local_addr()]);
    let t = now_ns() - 120 * S;
    let (api, db, cache) = (workload("api-1"), workload("db-1"), workload("cache-1"));
    ship_all(
        &b,
        &[batch(
            "agent-b",
            0,
            vec![flow("10.2.0.7:5432", &db, "10.1.0.5:1", t)],
        )],
    )
    .await;
    // The range has reached c1 through Kafka (a busy machine may take
    // longer than the hold to get it there).
    let received = || {
        c1.metrics().value(
            "flowattr_collector_sharing",
            &[("counter", "ranges_received")],
        )
    };
    let deadline = std::time::Instant::now() + WAIT;
    while received() < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "c1 never heard of db-1"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ship_all(
        &a,
        &[batch(
            "agent-a",
            0,
            vec![flow("10.1.0.5:7001", &api, "10.2.0.7:5432", t + S / 2)],
        )],
    )
    .await;
    let lines = fleet.wait_written("collector-1", 1, WAIT);
    assert_eq!(remote_of(&lines[0]), "db-1");

    broker.stop();
    // c1 still attributes from its table.
    ship_all(
        &a,
        &[batch(
            "agent-a",
            1,
            vec![flow("10.1.0.5:7002", &api, "10.2.0.7:5432", t + S / 2)],
        )],
    )
    .await;
    let lines = fleet.wait_written("collector-1", 2, WAIT);
    assert_eq!(outcomes(&lines)[&7002].1, "db-1");

    // While the broker is down, c2 learns a new owner; once it is back,
    // c1 hears of it.
    ship_all(
        &b,
        &[batch(
            "agent-b",
            1,
            vec![flow("10.2.0.8:6379", &cache, "10.1.0.5:1", t)],
        )],
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.restart();
    let deadline = std::time::Instant::now() + WAIT;
    while received() < 2.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "c1 never heard of cache-1"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ship_all(
        &a,
        &[batch(
            "agent-a",
            2,
            vec![flow("10.1.0.5:7003", &api, "10.2.0.8:6379", t + S / 2)],
        )],
    )
    .await;
    let lines = fleet.wait_written("collector-1", 3, WAIT);
    assert_eq!(outcomes(&lines)[&7003].1, "cache-1");
    c1.shutdown().await;
    c2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_to_another_region_is_forwarded_and_attributed_there() {
    let fleet = Fleet::new();
    let mut eu_config = fleet.collector_config("collector-eu");
    eu_config.forward_peers = vec!["collector-1".into()];
    let eu = Collector::start(eu_config).await.unwrap();
    let mut us_config = fleet.collector_config("collector-1");
    us_config.regions = vec![RegionSection {
        name: "eu".into(),
        prefixes: vec!["10.9.0.0/16".parse().unwrap()],
        collectors: vec![format!("localhost@{}", eu.local_addr())],
    }];
    let us = Collector::start(us_config).await.unwrap();
    let t = now_ns() - 100 * S;

    // agent-c lives in eu: its heartbeats reach only the eu collector.
    let c = fleet.agent("agent-c", &[eu.local_addr()]);
    ship_all(
        &c,
        &[batch(
            "agent-c",
            0,
            vec![flow("10.9.0.4:8080", &workload("eu-svc"), "10.9.0.5:1", t)],
        )],
    )
    .await;
    let a = fleet.agent("agent-a", &[us.local_addr()]);
    ship_all(
        &a,
        &[batch(
            "agent-a",
            0,
            vec![flow(
                "10.1.0.5:9001",
                &workload("api-1"),
                "10.9.0.4:8080",
                t + S / 2,
            )],
        )],
    )
    .await;

    let lines = fleet.wait_written("collector-eu", 2, WAIT);
    let got = outcomes(&lines);
    assert_eq!(got[&9001], ("api-1".into(), "eu-svc".into()));
    // The us collector wrote nothing of it.
    assert!(fleet.written("collector-1").is_empty());
    assert_eq!(
        us.metrics()
            .value("flowattr_collector_remote", &[("outcome", "forwarded")]),
        1.0
    );
    us.shutdown().await;
    eu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_resolver_answers_only_for_addresses_the_table_does_not_know() {
    use flowattr_collector::config::LegacySection;
    let fleet = Fleet::new();
    fleet.add_plugin("sonar-legacy");
    let t = now_ns() - 300 * S;
    // The legacy stream knows a load balancer, and (stale) names an owner
    // for an address the heartbeats know better.
    let events = fleet.legacy_events(&[
        assigned("10.5.0.1", "lb-frontend", t - 600 * S),
        assigned("10.2.0.7", "stale-owner", t - 600 * S),
    ]);
    let mut config = fleet.collector_config("collector-1");
    config.legacy = Some(LegacySection { events });
    let collector = Collector::start(config).await.unwrap();
    let addr = collector.local_addr();
    // Let the follower read the events before any flow is released.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let b = fleet.agent("agent-b", &[addr]);
    ship_all(
        &b,
        &[batch(
            "agent-b",
            0,
            vec![flow("10.2.0.7:5432", &workload("db-1"), "10.1.0.5:1", t)],
        )],
    )
    .await;
    let a = fleet.agent("agent-a", &[addr]);
    let api = workload("api-1");
    ship_all(
        &a,
        &[batch(
            "agent-a",
            0,
            vec![
                flow("10.1.0.5:1101", &api, "10.5.0.1:443", t),
                // After db-1's range: the table knows the address, so the
                // legacy answer ("stale-owner") is not used.
                flow("10.1.0.5:1102", &api, "10.2.0.7:5432", t + 100 * S),
            ],
        )],
    )
    .await;
    let lines = fleet.wait_written("collector-1", 3, WAIT);
    let got = outcomes(&lines);
    assert_eq!(got[&1101].1, "lb-frontend");
    let lb = lines.iter().find(|l| l["local"]["port"] == 1101).unwrap();
    assert_eq!(lb["remote"]["source"], "resolver");
    assert_eq!(lb["remote"]["plugin"], "sonar-legacy");
    assert_eq!(got[&1102].1, "unattributed:not-found");
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_legacy_resolver_is_recorded_beside_each_flow_and_changes_nothing() {
    use flowattr_collector::config::{AbSection, LegacySection};
    let fleet = Fleet::new();
    fleet.add_plugin("sonar-legacy");
    fleet.add_shadow_plugin("sonar-legacy", "legacy-shadow");
    let t = now_ns() - 300 * S;
    // The legacy stream still names the address's previous owner, and has a
    // line that is not an event.
    let events = fleet.legacy_events(&[
        assigned("10.2.0.7", "old-db", t - 600 * S),
        "not an event".to_owned(),
    ]);
    let records = fleet.out_dir("ab.jsonl");
    let mut config = fleet.collector_config("collector-1");
    config.legacy = Some(LegacySection { events });
    config.ab = Some(AbSection {
        records: records.clone(),
        shadow_hold: Duration::ZERO,
    });
    let collector = Collector::start(config).await.unwrap();
    let addr = collector.local_addr();
    // Let the follower read the events before any flow is released.
    tokio::time::sleep(Duration::from_millis(600)).await;

    let b = fleet.agent("agent-b", &[addr]);
    ship_all(
        &b,
        &[batch(
            "agent-b",
            0,
            vec![flow("10.2.0.7:5432", &workload("db-2"), "10.1.0.5:1", t)],
        )],
    )
    .await;
    let a = fleet.agent("agent-a", &[addr]);
    ship_all(
        &a,
        &[batch(
            "agent-a",
            0,
            vec![flow(
                "10.1.0.5:1101",
                &workload("api-1"),
                "10.2.0.7:5432",
                t + S / 2,
            )],
        )],
    )
    .await;
    let lines = fleet.wait_written("collector-1", 2, WAIT);
    assert_eq!(
        outcomes(&lines)[&1101].1,
        "db-2",
        "the shadow's answer changes nothing"
    );

    let deadline = std::time::Instant::now() + WAIT;
    let compared = loop {
        let text = std::fs::read_to_string(&records).unwrap_or_default();
        let compared = flowattr_ab::read_records(text.as_bytes()).unwrap();
        if compared.len() >= 2 || std::time::Instant::now() > deadline {
            break compared;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(compared.len(), 2, "one record per flow: {compared:?}");
    let to_db = compared.iter().find(|c| c.remote.port() == 5432).unwrap();
    assert_eq!(to_db.heartbeat.workload().unwrap().id, "db-2");
    assert_eq!(
        to_db.legacy.workload().unwrap().id,
        "old-db",
        "the legacy method's stale answer, recorded"
    );
    assert_eq!(to_db.local.as_ref().unwrap().id, "api-1");
    let malformed = flowattr_daemon::metrics::metric_sum(
        &collector.metrics().render(),
        "flowattr_collector_legacy_events",
        &[("outcome", "malformed")],
    );
    assert_eq!(malformed, 1.0, "the line that is not an event is counted");
    let taken = flowattr_daemon::metrics::metric_sum(
        &collector.metrics().render(),
        "flowattr_collector_legacy_events",
        &[("outcome", "taken")],
    );
    assert_eq!(taken, 1.0);
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_that_is_down_queues_reports_and_catches_up() {
    use flowattr_collector::config::OutputSection;
    let fleet = Fleet::new();
    let mut config = fleet.collector_config("collector-1");
    // A new file for every chunk, so a missing directory fails every write.
    let out = fleet.out_dir("collector-1");
    config.outputs = vec![OutputSection::File {
        dir: out.clone(),
        prefix: "flows".into(),
        rotate_bytes: 1,
        rotate_after: Duration::from_secs(3600),
        keep_files: 0,
    }];
    let collector = Collector::start(config).await.unwrap();
    // The output directory turns into a file: the output is down.
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::write(&out, b"not a directory").unwrap();
    let a = fleet.agent("agent-a", &[collector.local_addr()]);
    let t = now_ns() - 100 * S;
    let flows = (0..50)
        .map(|i| {
            flow(
                &format!("10.1.0.5:{}", 1200 + i),
                &workload("api-1"),
                "10.2.0.7:1",
                t,
            )
        })
        .collect();
    ship_all(&a, &[batch("agent-a", 0, flows)]).await;
    let m = collector.metrics();
    let deadline = std::time::Instant::now() + WAIT;
    while m.value("flowattr_collector_output_queued_bytes", &[]) == 0.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the output failure was not reported"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(m.value("flowattr_collector_output_up", &[]), 0.0);
    assert!(m.value("flowattr_collector_output_failures", &[]) >= 1.0);
    assert_eq!(m.value("flowattr_collector_journal_batches", &[]), 1.0);

    // Back up: the queued flows are written, none lost.
    std::fs::remove_file(&out).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let lines = fleet.wait_written("collector-1", 50, WAIT);
    assert_eq!(outcomes(&lines).len(), 50);
    assert_eq!(m.value("flowattr_collector_output_up", &[]), 1.0);
    assert_eq!(m.value("flowattr_collector_journal_batches", &[]), 0.0);
    collector.shutdown().await;
}
