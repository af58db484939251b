//! `flowattr collector` as a process: killed (SIGKILL) in the middle of a
//! stream of batches and started again, it loses none of them — every flow
//! an agent sent reaches the output — because it acknowledges a batch only
//! after journaling it and replays the journal at start.

mod common;

use std::{collections::HashMap, time::Duration};

use common::collector_process::CollectorProcess;
use flowattr_model::{
    AttributedFlow, Attribution, AttributionSource, Flow, FlowBatch, Side, TimeRange, Workload,
};
use flowattr_transport::{CollectorAddr, Shipper, ShipperConfig, tls::TlsFiles};

const BATCHES: u64 = 40;
const FLOWS: u64 = 250;

fn batch(seq: u64, now: u64) -> FlowBatch {
    let workload = std::sync::Arc::new(Workload::with_id("api-1"));
    let flows = (0..FLOWS)
        .map(|i| {
            // Every flow has its own local port: 10,000 + seq × FLOWS + i.
            let port = 10_000 + (seq * FLOWS + i) as u16;
            let mut f = AttributedFlow::new(Flow::tcp(
                format!("10.1.0.5:{port}").parse().unwrap(),
                "10.2.0.7:443".parse().unwrap(),
                now - 30_000_000_000,
            ));
            f.local = Side::Attributed(Attribution {
                workload: workload.clone(),
                source: AttributionSource::Capture,
                plugin: "ipman".into(),
                valid: TimeRange::new(0, u64::MAX),
            });
            f
        })
        .collect();
    FlowBatch {
        agent: "agent-a".into(),
        incarnation: 1,
        seq,
        created_ns: now,
        complete_until_ns: 0,
        flows,
    }
}

#[test]
fn a_killed_collector_restarts_and_loses_no_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let mut collector = CollectorProcess::start(tmp.path(), &["agent-a"], "2s", "jsonl-sink");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut config = ShipperConfig::new(
        vec![CollectorAddr::new(collector.addr, "localhost")],
        TlsFiles::in_dir(&tmp.path().join("pki"), "agent-a"),
        tmp.path().join("spool"),
    );
    config.retry_max = Duration::from_millis(300);
    config.ack_timeout = Duration::from_secs(5);
    let shipper = runtime.block_on(async { Shipper::start(config) }).unwrap();

    runtime.block_on(async {
        for seq in 0..BATCHES / 2 {
            shipper.send(&batch(seq, now)).await.unwrap();
        }
    });
    // Acknowledged but still in the 2 s hold: only the journal has them.
    let acked = shipper.counters().snapshot().acked;
    assert!(acked > 0, "some batches acknowledged before the kill");
    collector.kill();
    let written_before_restart = collector.written_lines().len();
    assert!(
        (written_before_restart as u64) < acked * FLOWS,
        "the kill must catch acknowledged batches not yet written out"
    );

    // The agent goes on while the collector is down: its spool holds them.
    runtime.block_on(async {
        for seq in BATCHES / 2..BATCHES {
            shipper.send(&batch(seq, now)).await.unwrap();
        }
    });
    collector.restart();
    let left = runtime.block_on(shipper.shutdown(Duration::from_secs(60)));
    assert_eq!(left, 0, "every batch acknowledged after the restart");

    // Every flow of every batch reaches the output (at least once).
    let expected = (BATCHES * FLOWS) as usize;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let counts = loop {
        let mut counts: HashMap<u64, usize> = HashMap::new();
        for line in collector.written_lines() {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            *counts
                .entry(v["local"]["port"].as_u64().unwrap())
                .or_default() += 1;
        }
        if counts.len() >= expected || std::time::Instant::now() > deadline {
            break counts;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let missing: Vec<u64> = (0..BATCHES * FLOWS)
        .map(|i| 10_000 + i)
        .filter(|p| !counts.contains_key(p))
        .collect();
    assert!(
        missing.is_empty(),
        "{} flows lost, e.g. ports {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // Duplicates are whole batches written twice (a kill between writing
    // out and recording it), never partial: each port's count is 1 or the
    // batch's count.
    let duplicated = counts.values().filter(|&&n| n > 1).count();
    assert!(
        (duplicated as u64).is_multiple_of(FLOWS),
        "{duplicated} duplicated flows: not whole batches"
    );
}
