//! The live view end to end: a real `flowattr collector` process takes real
//! batches from two agents over QUIC; `GET /v1/owner` and `flowattr owner`
//! answer across an address's change of owner, a conflict and an address
//! never seen, and refuse bad input; the page at `/` is rendered by headless
//! Chromium (installed by scripts/bootstrap) and its service map read back
//! from the DOM after its script ran.

#[path = "common/collector_process.rs"]
mod collector_process;

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Output},
    sync::Arc,
    time::{Duration, Instant},
};

use collector_process::CollectorProcess;
use flowattr_collector::live::time::format_time;
use flowattr_model::{
    AttributedFlow, Attribution, AttributionSource, Flow, FlowBatch, Initiator, Side, TimeRange,
    Workload,
};
use flowattr_transport::{CollectorAddr, Shipper, ShipperConfig, tls::TlsFiles};
use serde_json::Value;

const S: u64 = 1_000_000_000;

fn now_ns() -> u64 {
    flowattr_collector::service::unix_now_ns()
}

fn workload(id: &str, app: Option<&str>) -> Arc<Workload> {
    let mut w = Workload::with_id(id);
    w.app = app.map(str::to_owned);
    Arc::new(w)
}

/// A flow `local` (attributed at capture to `owner`) ↔ `remote` over
/// `[start, end)`, opened by `initiator`.
fn flow(
    local: &str,
    owner: &Arc<Workload>,
    remote: &str,
    initiator: Initiator,
    start: u64,
    end: u64,
) -> AttributedFlow {
    let mut f = AttributedFlow::new(Flow::tcp(
        local.parse().unwrap(),
        remote.parse().unwrap(),
        start,
    ));
    f.flow.end_ns = end;
    f.flow.initiator = initiator;
    f.flow.bytes_sent = 1000;
    f.flow.bytes_received = 24;
    f.local = Side::Attributed(Attribution {
        workload: owner.clone(),
        source: AttributionSource::Capture,
        plugin: "ipman".into(),
        valid: TimeRange::new(start, end),
    });
    f
}

fn batch(agent: &str, seq: u64, flows: Vec<AttributedFlow>) -> FlowBatch {
    FlowBatch {
        agent: agent.into(),
        incarnation: 1,
        seq,
        created_ns: now_ns(),
        complete_until_ns: now_ns(),
        flows,
    }
}

fn agent(dir: &Path, name: &str, collector: SocketAddr) -> Shipper {
    let mut config = ShipperConfig::new(
        vec![CollectorAddr::new(collector, "collector")],
        TlsFiles::in_dir(&dir.join("pki"), name),
        dir.join("spool").join(name),
    );
    config.retry_max = Duration::from_millis(500);
    Shipper::start(config).unwrap()
}

/// Sends `b` and waits until it is acknowledged.
async fn ship(shipper: &Shipper, b: FlowBatch) {
    shipper.send(&b).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while shipper.counters().snapshot().spooled_batches > 0 {
        assert!(Instant::now() < deadline, "batch not acknowledged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn owner_http(metrics: SocketAddr, query: &str) -> (u16, Value) {
    let (status, body) =
        flowattr_daemon::metrics::get(metrics, &format!("/v1/owner?{query}")).unwrap();
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, json)
}

fn flowattr(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowattr"))
        .args(args)
        .output()
        .expect("flowattr runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn answer_of(report: &Value) -> String {
    let a = &report["answer"];
    match a["status"].as_str().unwrap() {
        "attributed" => a["workload"]["id"].as_str().unwrap().to_owned(),
        "unattributed" => format!("unattributed:{}", a["reason"].as_str().unwrap()),
        other => other.to_owned(),
    }
}

/// The page's DOM once its script has run (and refreshed at least once:
/// headless Chromium's virtual time runs its 5 s timer within the budget).
fn dump_dom(url: &str, scratch: &Path) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=12000",
            "--dump-dom",
        ])
        .arg(format!(
            "--user-data-dir={}",
            scratch.join("chromium").display()
        ))
        .arg(url)
        .output()
        .expect("chromium is installed by scripts/bootstrap");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn owner_lookup_and_live_page_through_a_real_collector() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let collector = CollectorProcess::start(dir, &["agent-a", "agent-b"], "1s", "jsonl-sink");
    let t = now_ns();
    let (web, shop) = (
        workload("api-a", Some("web")),
        workload("api-b", Some("shop")),
    );
    let db = workload("db-1", Some("db"));
    let (cache_a, cache_b) = (workload("cache-a", None), workload("cache-b", None));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (a, b) = (
            agent(dir, "agent-a", collector.addr),
            agent(dir, "agent-b", collector.addr),
        );
        // db-1 holds 10.0.4.1 throughout; a client it never heard of calls it.
        ship(
            &b,
            batch(
                "agent-b",
                0,
                vec![flow(
                    "10.0.4.1:5432",
                    &db,
                    "10.0.9.9:50000",
                    Initiator::Remote,
                    t - 400 * S,
                    t - 30 * S,
                )],
            ),
        )
        .await;
        // 10.0.3.7 is api-a's (web), then after a gap api-b's (shop); both
        // call db-1. 10.0.3.8 is claimed by two workloads at once.
        ship(
            &a,
            batch(
                "agent-a",
                0,
                vec![
                    flow(
                        "10.0.3.7:40001",
                        &web,
                        "10.0.4.1:5432",
                        Initiator::Local,
                        t - 300 * S,
                        t - 250 * S,
                    ),
                    flow(
                        "10.0.3.7:40002",
                        &web,
                        "10.0.4.1:5432",
                        Initiator::Local,
                        t - 250 * S,
                        t - 200 * S,
                    ),
                    flow(
                        "10.0.3.8:40003",
                        &cache_a,
                        "10.0.4.1:5432",
                        Initiator::Local,
                        t - 300 * S,
                        t - 200 * S,
                    ),
                ],
            ),
        )
        .await;
        ship(
            &b,
            batch(
                "agent-b",
                1,
                vec![
                    flow(
                        "10.0.3.7:40004",
                        &shop,
                        "10.0.4.1:5432",
                        Initiator::Local,
                        t - 150 * S,
                        t - 60 * S,
                    ),
                    flow(
                        "10.0.3.8:40005",
                        &cache_b,
                        "10.0.4.1:5432",
                        Initiator::Local,
                        t - 250 * S,
                        t - 150 * S,
                    ),
                ],
            ),
        )
        .await;
        let _ = a.shutdown(Duration::from_secs(2)).await;
        let _ = b.shutdown(Duration::from_secs(2)).await;
    });
    collector.wait_flows(6, Duration::from_secs(30));
    let m = collector.metrics;

    // The change of owner, by Unix nanoseconds and by RFC 3339.
    let (status, before) = owner_http(m, &format!("address=10.0.3.7&at={}", t - 250 * S));
    assert_eq!(status, 200, "{before}");
    assert_eq!(answer_of(&before), "api-a", "{before}");
    assert_eq!(before["answer"]["source"], "heartbeat");
    assert_eq!(before["completeness"]["complete"], true, "{before}");
    let ranges = before["ranges"].as_array().unwrap();
    assert_eq!(ranges.len(), 2, "{before}");
    assert_eq!(
        (
            &ranges[0]["workload"]["id"],
            &ranges[0]["claimant"],
            ranges[0]["holds_at"].as_bool()
        ),
        (&Value::from("api-a"), &Value::from("agent-a"), Some(true))
    );
    assert_eq!(ranges[0]["start_ns"], t - 300 * S);
    assert_eq!(ranges[0]["end_ns"], t - 200 * S);
    assert_eq!(
        (&ranges[1]["workload"]["id"], &ranges[1]["claimant"]),
        (&Value::from("api-b"), &Value::from("agent-b"))
    );
    assert_eq!(
        ranges[1]["source"], "heartbeat",
        "agent-b sent its batches here"
    );
    let claimants: Vec<&str> = before["completeness"]["claimants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(claimants, ["agent-a", "agent-b"]);
    let at = format_time(t - 100 * S).replace(':', "%3A");
    let (_, after) = owner_http(m, &format!("address=10.0.3.7&at={at}"));
    assert_eq!(answer_of(&after), "api-b", "{after}");
    let (_, between) = owner_http(m, &format!("address=10.0.3.7&at={}", t - 175 * S));
    assert_eq!(answer_of(&between), "unattributed:gap", "{between}");
    // The conflict, and an address never seen.
    let (_, contested) = owner_http(m, &format!("address=10.0.3.8&at={}", t - 225 * S));
    assert_eq!(
        answer_of(&contested),
        "unattributed:conflict",
        "{contested}"
    );
    assert_eq!(contested["ranges"].as_array().unwrap().len(), 2);
    let (_, never) = owner_http(m, &format!("address=10.0.3.99&at={}", t - 100 * S));
    assert_eq!(answer_of(&never), "unattributed:not-found", "{never}");
    assert_eq!(never["ranges_total"], 0);
    // `at` defaults to now, which no agent has reported past yet: a flow
    // starting now would wait, and the answer says so.
    let (_, now) = owner_http(m, "address=10.0.3.99");
    assert_eq!(answer_of(&now), "unattributed:incomplete", "{now}");
    assert_eq!(now["completeness"]["complete"], false, "{now}");
    assert!(now["at_ns"].as_u64().unwrap() >= t, "{now}");
    // Bad input is refused with what is wrong.
    for (query, why) in [
        ("address=10.0.3", "not an IPv4 or IPv6 address"),
        ("address=10.0.3.7&at=noon", "neither RFC 3339"),
        ("at=0", "missing `address`"),
    ] {
        let (status, body) = owner_http(m, query);
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(why),
            "{query}: {body}"
        );
    }

    // The command, readable and as JSON.
    let url = format!("http://{m}");
    let out = flowattr(&[
        "owner",
        "10.0.3.7",
        "--at",
        &format_time(t - 250 * S),
        "--collector",
        &url,
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("answer:       api-a (app web) (by heartbeat"),
        "{stdout}"
    );
    assert!(stdout.contains("completeness: complete"), "{stdout}");
    assert!(
        stdout.contains("claimed by agent-a (heartbeat)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("claimed by agent-b (heartbeat)"),
        "{stdout}"
    );
    let out = flowattr(&[
        "owner",
        "10.0.3.7",
        "--at",
        &(t - 100 * S).to_string(),
        "--collector",
        &url,
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer_of(&json), "api-b");
    let out = flowattr(&[
        "owner",
        "10.0.3.8",
        "--at",
        &format_time(t - 225 * S),
        "--collector",
        &url,
    ]);
    assert!(
        text(&out.stdout).contains("answer:       unattributed: conflict"),
        "{}",
        text(&out.stdout)
    );
    let out = flowattr(&[
        "owner",
        "10.0.3.99",
        "--collector",
        &url,
        "--at",
        &format_time(t - 100 * S),
    ]);
    assert!(
        text(&out.stdout).contains("unattributed: not-found"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stdout).contains("0 of 0 held"),
        "{}",
        text(&out.stdout)
    );
    for (args, why) in [
        (
            vec!["owner", "10.0.3", "--collector", &url],
            "not an IPv4 or IPv6 address",
        ),
        (
            vec!["owner", "10.0.3.7", "--at", "noon", "--collector", &url],
            "--at: \"noon\" is neither",
        ),
        (
            vec!["owner", "10.0.3.7", "--collector", "https://x:1"],
            "plain HTTP",
        ),
    ] {
        let out = flowattr(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            text(&out.stderr).contains(why),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }

    // The map as JSON: services, the unattributed caller, bytes.
    let (status, body) = flowattr_daemon::metrics::get(m, "/v1/map").unwrap();
    assert_eq!(status, 200, "{body}");
    let map: Value = serde_json::from_str(&body).unwrap();
    let edge = |from: &str, to: &str| {
        map["map"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["from"] == from && e["to"] == to)
            .cloned()
            .unwrap_or_else(|| panic!("no edge {from} → {to}: {map}"))
    };
    assert_eq!(edge("web", "db")["flows"], 2);
    assert_eq!(edge("web", "db")["bytes"], 2048);
    assert_eq!(edge("shop", "db")["flows"], 1);
    assert_eq!(edge("unattributed:not-found", "db")["unattributed"], true);
    assert_eq!(map["table"]["addresses"], 3, "{map}");
    let agents: Vec<&str> = map["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(agents, ["agent-a", "agent-b"], "{map}");

    // The page, rendered by Chromium: nodes and edges drawn by its script,
    // the agents listed, and at least one refresh from /v1/map.
    let dom = dump_dom(&format!("http://{m}/"), dir);
    for node in [
        "web",
        "shop",
        "db",
        "cache-a",
        "cache-b",
        "unattributed:not-found",
    ] {
        assert!(
            dom.contains(&format!("data-name=\"{node}\"")),
            "node {node}:\n{dom}"
        );
    }
    assert!(
        dom.contains("class=\"node unattributed\" data-name=\"unattributed:not-found\""),
        "{dom}"
    );
    for (from, to, flows) in [("web", "db", 2), ("shop", "db", 1), ("cache-a", "db", 1)] {
        let edge = format!("data-from=\"{from}\" data-to=\"{to}\" data-flows=\"{flows}\"");
        assert!(dom.contains(&edge), "edge {edge}:\n{dom}");
    }
    assert!(
        dom.contains("class=\"edge unattributed\" data-from=\"unattributed:not-found\""),
        "{dom}"
    );
    assert!(
        dom.contains("<td>agent-a</td>") && dom.contains("<td>agent-b</td>"),
        "{dom}"
    );
    assert!(
        dom.contains("data-refreshes=\""),
        "the page refreshed itself:\n{dom}"
    );
    assert!(
        dom.contains("<form id=\"owner\" action=\"/v1/owner\""),
        "{dom}"
    );
}
