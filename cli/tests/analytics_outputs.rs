//! The Arrow IPC and Parquet outputs through a real `flowattr collector`
//! process, read back by a real DuckDB (the PyPI wheel `scripts/bootstrap`
//! installs; pyarrow reads the Arrow streams): two agents report both ends
//! of the same connections over QUIC, plus some to an outside address, and
//! DuckDB must find every flow, the documented column types, and the flows
//! per dependency edge that were sent.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::collector_process::CollectorProcess;
use flowattr_model::{
    AttributedFlow, Attribution, AttributionSource, Flow, FlowBatch, Initiator, Side, TimeRange,
    Workload,
};
use flowattr_transport::{CollectorAddr, Shipper, ShipperConfig, tls::TlsFiles};
use serde_json::{Value, json};

/// Connections from agent-a's three workloads to agent-b's two.
const CONNECTIONS: u64 = 600;
/// Flows from agent-a's workloads to an address no agent reports.
const OUTSIDE: u64 = 90;

fn attributed(workload: &Arc<Workload>) -> Side {
    Side::Attributed(Attribution {
        workload: workload.clone(),
        source: AttributionSource::Capture,
        plugin: "ipman".into(),
        valid: TimeRange::since(0),
    })
}

fn workload(id: String, app: &str) -> Arc<Workload> {
    Arc::new(Workload {
        app: Some(app.into()),
        region: Some("eu-west-1".into()),
        labels: BTreeMap::from([("team".to_string(), format!("{app}-team"))]),
        ..Workload::with_id(id)
    })
}

/// Both agents' batches (each end's record of every connection), and the
/// flows per (src workload, dst workload) a reader must count.
fn fleet(
    now: u64,
) -> (
    FlowBatch,
    FlowBatch,
    BTreeMap<(String, Option<String>), u64>,
) {
    let clients: Vec<_> = (0..3)
        .map(|i| workload(format!("web-{i}"), "web"))
        .collect();
    let servers: Vec<_> = (0..2).map(|i| workload(format!("db-{i}"), "db")).collect();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut edges = BTreeMap::new();
    let start = now - 30_000_000_000;
    for i in 0..CONNECTIONS + OUTSIDE {
        let c = (i % 3) as usize;
        let client: std::net::SocketAddr =
            format!("10.1.0.{}:{}", c + 1, 20_000 + i).parse().unwrap();
        let mut flow = if i < CONNECTIONS {
            let s = (i % 2) as usize;
            let server: std::net::SocketAddr = format!("10.2.0.{}:5432", s + 1).parse().unwrap();
            let mut theirs = Flow::tcp(server, client, start + i);
            theirs.initiator = Initiator::Remote;
            (theirs.bytes_sent, theirs.bytes_received) = (4_000, 300);
            let mut record = AttributedFlow::new(theirs);
            record.local = attributed(&servers[s]);
            b.push(record);
            let (src, dst) = (servers[s].id.clone(), clients[c].id.clone());
            *edges.entry((src.clone(), Some(dst.clone()))).or_default() += 1;
            *edges.entry((dst, Some(src))).or_default() += 1;
            Flow::tcp(client, server, start + i)
        } else {
            *edges.entry((clients[c].id.clone(), None)).or_default() += 1;
            Flow::tcp(client, "198.51.100.7:443".parse().unwrap(), start + i)
        };
        flow.initiator = Initiator::Local;
        (flow.bytes_sent, flow.bytes_received) = (300, 4_000);
        let mut record = AttributedFlow::new(flow);
        record.local = attributed(&clients[c]);
        a.push(record);
    }
    let batch = |agent: &str, flows| FlowBatch {
        agent: agent.into(),
        incarnation: 1,
        seq: 0,
        created_ns: now,
        complete_until_ns: 0,
        flows,
    };
    (batch("agent-a", a), batch("agent-b", b), edges)
}

/// Runs a collector writing through `sink`, ships both agents' batches,
/// waits for every flow to be written, and reads the output with DuckDB.
fn written_and_read(sink: &str, kind: &str) -> (Value, BTreeMap<(String, Option<String>), u64>) {
    let tmp = tempfile::tempdir().unwrap();
    let collector = CollectorProcess::start(tmp.path(), &["agent-a", "agent-b"], "2s", sink);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let (a, b, edges) = fleet(now);
    let total = (a.flows.len() + b.flows.len()) as u64;
    runtime.block_on(async {
        for batch in [a, b] {
            let config = ShipperConfig::new(
                vec![CollectorAddr::new(collector.addr, "localhost")],
                TlsFiles::in_dir(&tmp.path().join("pki"), &batch.agent),
                tmp.path().join("spool").join(&batch.agent),
            );
            let shipper = Shipper::start(config).unwrap();
            shipper.send(&batch).await.unwrap();
            assert_eq!(
                shipper.shutdown(Duration::from_secs(30)).await,
                0,
                "acknowledged"
            );
        }
    });
    collector.wait_flows(total, Duration::from_secs(60));
    let reader = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/readers/duckdb_flows.py");
    let out = Command::new("python3")
        .arg(reader)
        .arg(kind)
        .arg(tmp.path().join("out"))
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "DuckDB read the {kind} output (scripts/bootstrap installs duckdb and pyarrow): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (serde_json::from_slice(&out.stdout).unwrap(), edges)
}

fn check(sink: &str, kind: &str) {
    let (read, edges) = written_and_read(sink, kind);
    let total = 2 * CONNECTIONS + OUTSIDE;
    assert_eq!(read["rows"], json!(total), "{kind}: every flow, once");
    assert_eq!(
        read["distinct_record_ids"],
        json!(total),
        "{kind}: record ids"
    );
    assert_eq!(
        read["joined_connections"],
        json!(CONNECTIONS),
        "{kind}: both ends join on community_id"
    );
    assert_eq!(
        read["egress_from_a"],
        json!(CONNECTIONS + OUTSIDE),
        "{kind}: agent-a opened its flows"
    );
    let want: Vec<Value> = edges
        .iter()
        .map(|((src, dst), n)| json!([src, dst, n]))
        .collect();
    assert_eq!(
        read["edges"],
        json!(want),
        "{kind}: flows per dependency edge"
    );
    let types = &read["types"];
    for (column, want) in [
        ("record_id", "UBIGINT"),
        ("community_id", "VARCHAR"),
        ("start", "TIMESTAMPTZ_NS"),
        ("protocol", "UTINYINT"),
        ("srcaddr", "VARCHAR"),
        ("srcport", "USMALLINT"),
        ("bytes", "UBIGINT"),
        ("weight", "UINTEGER"),
        ("src_status", "VARCHAR"),
        ("src_workload_id", "VARCHAR"),
        ("dst_labels", "MAP(VARCHAR, VARCHAR)"),
        ("dst_valid_until", "TIMESTAMPTZ_NS"),
    ] {
        assert_eq!(
            types[column],
            json!(want),
            "{kind}: {column}'s type; all: {types}"
        );
    }
    assert_eq!(
        types.as_object().unwrap().len(),
        flow_columns(),
        "{kind}: every column"
    );
}

/// The documented columns: 23 of the flow, 12 of each side.
fn flow_columns() -> usize {
    23 + 2 * 12
}

#[test]
fn duckdb_reads_the_arrow_output() {
    check("arrow-sink", "arrow");
}

#[test]
fn duckdb_reads_the_parquet_output() {
    check("parquet-sink", "parquet");
}
