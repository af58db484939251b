//! `flowattr sim --connect`: a scenario shipped in real time over QUIC with
//! mutual TLS to a running collector (the real `Collector`, with the real
//! `sonar-legacy` fallback and shadow and the real sink), which follows the
//! simulator's legacy event file and writes its A/B records; the records,
//! judged by the ground truth the simulator writes, show no heartbeat
//! misattribution. Takes a minute of real time.

use std::{path::PathBuf, time::Duration};

use flowattr_ab::{OwnershipIntervals, Tally, read_records};
use flowattr_collector::{
    config::{AbSection, Claim, CollectorConfig, LegacySection, OutputSection},
    service::Collector,
};
use flowattr_sim::{
    ConnectOptions, Scenario, connect, connect::agent_identity, install_collector_plugins,
};
use flowattr_transport::CollectorAddr;

const SCENARIO: &str = r#"
name = "connect-test"
seed = 5
duration = "1m"
[agents]
batch_interval = "2s"
per_region = 2
[collector]
sink = "jsonl-sink"
[addresses]
reuse_after = "3s"
[legacy]
delay_median = "5s"
delay_sigma = 0.3
loss = 0.0
[[regions]]
name = "r1"
ipv4 = "10.60.0.0/16"
ipv6 = "fd00:60::/64"
load_balancers = "10.61.0.0/24"
[[services]]
name = "web"
region = "r1"
kind = "vm"
instances = 6
lifetime = "10m"
calls_per_minute = 40
depends_on = ["api"]
[[services]]
name = "api"
region = "r1"
kind = "container"
instances = 6
lifetime = "1m"
calls_per_minute = 0
"#;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn a_scenario_shipped_to_a_running_collector_is_attributed_and_compared() {
    let scenario = Scenario::parse(SCENARIO).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pki = tmp.path().join("pki");
    flowattr_transport::certs::generate_dev_pki(&pki, &["collector-1"], &[]).unwrap();
    let plugins = tmp.path().join("plugins");
    install_collector_plugins(&scenario, &workspace().join("plugins"), &plugins).unwrap();
    let (events, records, truth) = (
        tmp.path().join("events.jsonl"),
        tmp.path().join("ab.jsonl"),
        tmp.path().join("truth.jsonl"),
    );

    let mut config = CollectorConfig::parse("").unwrap();
    config.name = "collector-1".into();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.data_dir = tmp.path().join("data");
    config.hold = Duration::from_secs(2);
    config.tls.ca = pki.join("ca.pem");
    config.tls.cert = pki.join("collector-1.pem");
    config.tls.key = pki.join("collector-1.key");
    let region = &scenario.regions[0];
    config.claims.insert(
        agent_identity("r1"),
        Claim::Prefixes(vec![region.ipv4, region.ipv6]),
    );
    config.plugins.directory = plugins;
    config.plugins.cache_dir = Some(workspace().join("target/flowattr-test-cache"));
    config.plugins.watch = false;
    config.plugins.sink = "jsonl-sink".into();
    config.outputs = vec![OutputSection::File {
        dir: tmp.path().join("out"),
        prefix: "flows".into(),
        rotate_bytes: 1 << 30,
        rotate_after: Duration::from_secs(3600),
        keep_files: 0,
    }];
    config.metrics.enabled = false;
    config.legacy = Some(LegacySection {
        events: events.clone(),
    });
    config.ab = Some(AbSection {
        records: records.clone(),
        shadow_hold: Duration::ZERO,
    });
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let collector = runtime.block_on(Collector::start(config)).unwrap();

    let outcome = connect(
        &scenario,
        &ConnectOptions {
            collectors: vec![(
                "r1".into(),
                vec![CollectorAddr::new(collector.local_addr(), "collector-1")],
            )],
            pki,
            legacy_events: events,
            truth: truth.clone(),
            work_dir: tmp.path().to_owned(),
            progress: None,
        },
    )
    .unwrap();
    assert_eq!(outcome.left_in_spools, 0, "every batch acknowledged");
    assert!(outcome.flows_shipped > 300, "{outcome:?}");
    assert!(
        outcome.fleet.addresses_reused > 0,
        "addresses changed hands: {outcome:?}"
    );

    // Every shipped flow comes out compared once it has waited its hold.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let compared = loop {
        let text = std::fs::read_to_string(&records).unwrap_or_default();
        let compared = read_records(text.as_bytes()).unwrap();
        if compared.len() as u64 >= outcome.flows_shipped || std::time::Instant::now() > deadline {
            break compared;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(compared.len() as u64, outcome.flows_shipped);
    let truth = OwnershipIntervals::read(
        std::io::BufReader::new(std::fs::File::open(&truth).unwrap()),
        1_000_000_000,
    )
    .unwrap();
    let mut tally = Tally::new("sonar-legacy");
    for c in &compared {
        tally.add(c, &truth);
    }
    let report = tally.report(Some("web"), &truth);
    println!("{}", report.table());
    assert!(
        report.judged as f64 > 0.9 * report.flows as f64,
        "{}",
        report.table()
    );
    assert_eq!(report.heartbeat.misattributed, 0, "{}", report.table());
    assert!(
        report.heartbeat.attributed as f64 >= 0.98 * report.flows as f64,
        "{}",
        report.table()
    );
    runtime.block_on(collector.shutdown());
}
