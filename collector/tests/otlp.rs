//! OpenTelemetry logs through the real collector: agents ship real batches
//! over QUIC, the collector formats them with the real `otlp-sink`
//! component and its `otlp` output POSTs them to an OTLP/HTTP receiver in
//! the test (axum on loopback), which decodes every request with the
//! official OpenTelemetry protobuf messages (`opentelemetry-proto`) and
//! answers as the test scripts it: 2xx, 503 (with and without
//! `Retry-After`), 400, a partial success.

mod common;

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use common::fleet::{Fleet, S, batch, flow, now_ns, ship_all, workload};
use flowattr_collector::{
    config::{CollectorConfig, OtlpOutputSection, OutputSection},
    service::Collector,
};
use flowattr_model::{AttributedFlow, AttributionSource, Initiator, Side};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;

const WAIT: Duration = Duration::from_secs(60);

/// How the receiver answers one request.
#[derive(Clone)]
enum Answer {
    Ok,
    Status(u16, Option<&'static str>),
    PartialSuccess(i64),
}

/// One request as received.
struct Received {
    at: Instant,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
    status: u16,
}

#[derive(Default)]
struct Receiver {
    /// Answers for the next requests, in order; then 200.
    script: Mutex<VecDeque<Answer>>,
    received: Mutex<Vec<Received>>,
}

impl Receiver {
    /// The requests answered 2xx, decoded with the official messages.
    fn accepted(&self) -> Vec<ExportLogsServiceRequest> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .map(|r| ExportLogsServiceRequest::decode(r.body.as_slice()).unwrap())
            .collect()
    }

    /// Every flow of the accepted requests, read strictly.
    fn flows(&self) -> Vec<AttributedFlow> {
        self.accepted()
            .iter()
            .flat_map(|r| otlp_sink::read::read_request(r).unwrap())
            .collect()
    }

    fn requests(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

async fn logs(
    State(rx): State<Arc<Receiver>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = rx.script.lock().unwrap().pop_front().unwrap_or(Answer::Ok);
    let (status, response) = match answer {
        Answer::Ok => (
            200,
            ExportLogsServiceResponse::default()
                .encode_to_vec()
                .into_response(),
        ),
        Answer::PartialSuccess(rejected) => (
            200,
            ExportLogsServiceResponse {
                partial_success: Some(ExportLogsPartialSuccess {
                    rejected_log_records: rejected,
                    error_message: "too old".into(),
                }),
            }
            .encode_to_vec()
            .into_response(),
        ),
        Answer::Status(code, retry_after) => {
            let status = StatusCode::from_u16(code).unwrap();
            let mut response = (status, "try later").into_response();
            if let Some(after) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", after.parse().unwrap());
            }
            (code, response)
        }
    };
    rx.received.lock().unwrap().push(Received {
        at: Instant::now(),
        path: uri.path().to_owned(),
        headers,
        body: body.to_vec(),
        status,
    });
    response
}

/// An OTLP/HTTP logs receiver on a free loopback port.
async fn receiver(script: Vec<Answer>) -> (SocketAddr, Arc<Receiver>) {
    let rx = Arc::new(Receiver {
        script: Mutex::new(script.into()),
        ..Receiver::default()
    });
    let app = Router::new()
        .route("/v1/logs", post(logs))
        .with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, rx)
}

/// A collector formatting with `otlp-sink`, `per_chunk` flows a chunk,
/// sending to `addr` (no path: the output adds `/v1/logs`).
fn otlp_collector(fleet: &Fleet, addr: SocketAddr, per_chunk: usize) -> CollectorConfig {
    fleet.add_plugin("otlp-sink");
    let mut c = fleet.collector_config("collector-1");
    c.plugins.sink = "otlp-sink".into();
    c.plugins.sink_batch = per_chunk;
    c.outputs = vec![OutputSection::Otlp(OtlpOutputSection {
        endpoint: format!("http://{addr}"),
        headers: BTreeMap::from([("x-tenant".into(), "flows".into())]),
        timeout: Duration::from_secs(5),
        max_request_bytes: 8 << 20,
        queue_bytes: 1 << 20,
        retry_initial: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
    })];
    c
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// agent-a's api-1 (10.1.0.5) calls agent-b's db-1 (10.2.0.7), which
/// reports its side: four flows each way, a second apart.
async fn ship_calls(fleet: &Fleet, addr: SocketAddr) -> Vec<AttributedFlow> {
    let t = now_ns() - 300 * S;
    let (api, db) = (workload("api-1"), workload("db-1"));
    let mut sent = Vec::new();
    let b = fleet.agent("agent-b", &[addr]);
    let mut served: Vec<AttributedFlow> = (0..4)
        .map(|i| {
            flow(
                "10.2.0.7:5432",
                &db,
                &format!("10.1.0.5:{}", 40000 + i),
                t + i * S,
            )
        })
        .collect();
    for f in &mut served {
        f.flow.initiator = Initiator::Remote;
        f.flow.bytes_sent = 5_000;
        f.flow.bytes_received = 700;
    }
    ship_all(&b, &[batch("agent-b", 0, served.clone())]).await;
    sent.extend(served);
    let a = fleet.agent("agent-a", &[addr]);
    let mut calls: Vec<AttributedFlow> = (0..4)
        .map(|i| {
            flow(
                &format!("10.1.0.5:{}", 40000 + i),
                &api,
                "10.2.0.7:5432",
                t + i * S,
            )
        })
        .collect();
    for f in &mut calls {
        f.flow.initiator = Initiator::Local;
        f.flow.bytes_sent = 700;
        f.flow.bytes_received = 5_000;
    }
    ship_all(&a, &[batch("agent-a", 0, calls.clone())]).await;
    sent.extend(calls);
    sent
}

fn by_ports(flows: &[AttributedFlow]) -> BTreeMap<(u16, u16), AttributedFlow> {
    flows
        .iter()
        .map(|f| ((f.flow.local.port(), f.flow.remote.port()), f.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_reach_an_otlp_receiver_with_the_netflow_names_and_both_attributions() {
    let fleet = Fleet::new();
    let (rx_addr, rx) = receiver(vec![]).await;
    let collector = Collector::start(otlp_collector(&fleet, rx_addr, 16384))
        .await
        .unwrap();
    let sent = ship_calls(&fleet, collector.local_addr()).await;
    wait_for("8 records", || rx.flows().len() >= 8).await;

    {
        let received = rx.received.lock().unwrap();
        for r in received.iter() {
            assert_eq!(r.path, "/v1/logs");
            assert_eq!(r.headers["content-type"], "application/x-protobuf");
            assert_eq!(r.headers["x-tenant"], "flows");
        }
    }
    let got = by_ports(&rx.flows());
    assert_eq!(got.len(), 8, "each flow once");
    for want in &sent {
        let f = &got[&(want.flow.local.port(), want.flow.remote.port())];
        assert_eq!(
            f.flow, want.flow,
            "the flow's fields as the agent sent them"
        );
        assert_eq!(
            f.local, want.local,
            "the local side as the agent attributed it"
        );
        assert_ne!(f.record_id, 0, "the collector assigned a record id");
    }
    // Remote sides, attributed here from the other end's report of the same
    // connection, or from its heartbeats.
    for (ports, f) in &got {
        let want = if ports.0 == 5432 { "api-1" } else { "db-1" };
        let Side::Attributed(a) = &f.remote else {
            panic!("{ports:?}: {:?}", f.remote)
        };
        assert_eq!(a.workload.id, want, "{ports:?}");
        assert!(
            matches!(
                a.source,
                AttributionSource::Counterpart | AttributionSource::Heartbeat
            ),
            "{ports:?}: {:?}",
            a.source
        );
    }

    // The attributes themselves, as an OpenTelemetry pipeline sees them.
    let requests = rx.accepted();
    let resource = requests[0].resource_logs[0].resource.as_ref().unwrap();
    assert_eq!(resource.attributes[0].key, "service.name");
    let records: Vec<_> = requests
        .iter()
        .flat_map(|r| &r.resource_logs[0].scope_logs[0].log_records)
        .collect();
    let attr = |r: &opentelemetry_proto::tonic::logs::v1::LogRecord, key: &str| -> Value {
        r.attributes
            .iter()
            .find(|kv| kv.key == key)
            .unwrap_or_else(|| panic!("{key} missing"))
            .value
            .clone()
            .unwrap()
            .value
            .unwrap()
    };
    let text = |s: &str| Value::StringValue(s.into());
    let mut community = BTreeMap::<i64, Vec<Value>>::new();
    for r in &records {
        // Both ends' records say the client (10.1.0.5) is the source.
        assert_eq!(attr(r, "source.address"), text("10.1.0.5"));
        assert_eq!(attr(r, "destination.address"), text("10.2.0.7"));
        assert_eq!(attr(r, "destination.port"), Value::IntValue(5432));
        assert_eq!(attr(r, "network.transport"), text("tcp"));
        assert_eq!(attr(r, "network.type"), text("ipv4"));
        assert_eq!(attr(r, "network.io.bytes"), Value::IntValue(5_700));
        let Value::IntValue(port) = attr(r, "source.port") else {
            panic!()
        };
        let Value::IntValue(start) = attr(r, "network.flow.start") else {
            panic!()
        };
        assert_eq!(r.time_unix_nano, start as u64);
        assert_eq!(
            attr(r, "network.flow.end"),
            Value::IntValue(start + S as i64)
        );
        let (local, remote) = if attr(r, "flowattr.initiator") == text("local") {
            ("api-1", "db-1")
        } else {
            ("db-1", "api-1")
        };
        assert_eq!(attr(r, "flowattr.local.status"), text("attributed"));
        assert_eq!(attr(r, "flowattr.local.workload.id"), text(local));
        assert_eq!(attr(r, "flowattr.local.source"), text("capture"));
        assert_eq!(attr(r, "flowattr.local.plugin"), text("ipman"));
        assert_eq!(attr(r, "flowattr.remote.workload.id"), text(remote));
        let source = attr(r, "flowattr.remote.source");
        assert!(
            source == text("counterpart") || source == text("heartbeat"),
            "{source:?}"
        );
        assert!(matches!(attr(r, "flowattr.record_id"), Value::StringValue(h) if h.len() == 16));
        community
            .entry(port)
            .or_default()
            .push(attr(r, "flowattr.community_id"));
    }
    // Both ends' records of a connection share its Community ID.
    assert_eq!(community.len(), 4);
    for ids in community.values() {
        assert_eq!(ids.len(), 2);
        assert_eq!(ids[0], ids[1]);
    }
    let m = collector.metrics();
    wait_for("flows retired", || {
        m.value("flowattr_collector_flows_out", &[]) == 8.0
    })
    .await;
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_answers_503_loses_nothing_reorders_nothing_and_retires_nothing_early() {
    let fleet = Fleet::new();
    // Unavailable four times (the third asks for a second), then fine.
    let script = vec![
        Answer::Status(503, None),
        Answer::Status(503, None),
        Answer::Status(503, Some("1")),
        Answer::Status(503, None),
    ];
    let (rx_addr, rx) = receiver(script).await;
    let collector = Collector::start(otlp_collector(&fleet, rx_addr, 3))
        .await
        .unwrap();
    let m = collector.metrics().clone();
    let sent = ship_calls(&fleet, collector.local_addr()).await;

    wait_for("the first refusals", || rx.requests() >= 2).await;
    assert_eq!(
        m.value("flowattr_collector_flows_out", &[]),
        0.0,
        "nothing retired before the receiver answered 2xx"
    );
    wait_for("8 records", || rx.flows().len() >= 8).await;
    wait_for("flows retired", || {
        m.value("flowattr_collector_flows_out", &[]) == 8.0
    })
    .await;

    {
        let received = rx.received.lock().unwrap();
        let statuses: Vec<u16> = received.iter().map(|r| r.status).collect();
        assert_eq!(&statuses[..5], [503, 503, 503, 503, 200], "{statuses:?}");
        // The same chunk went again until taken, and only then the next ones.
        for r in &received[1..5] {
            assert!(r.body == received[0].body, "the front chunk is sent again");
        }
        let bodies: Vec<&Vec<u8>> = received[4..].iter().map(|r| &r.body).collect();
        assert!(statuses[4..].iter().all(|&s| s == 200), "{statuses:?}");
        for (i, a) in bodies.iter().enumerate() {
            for b in &bodies[i + 1..] {
                assert!(a != b, "each chunk taken once");
            }
        }
        // Retry-After: 1 was honoured.
        let waited = received[3].at - received[2].at;
        assert!(waited >= Duration::from_millis(950), "waited {waited:?}");
    }
    assert_eq!(
        by_ports(&rx.flows()).len(),
        sent.len(),
        "no loss, no repeat"
    );
    assert_eq!(rx.flows().len(), sent.len());
    assert_eq!(
        m.value("flowattr_collector_dropped", &[]),
        0.0,
        "a 503 drops nothing"
    );
    assert!(m.value("flowattr_collector_output_failures", &[]) >= 1.0);
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_refused_with_400_is_dropped_and_counted_and_a_partial_success_too() {
    let fleet = Fleet::new();
    // One flow a chunk: the first refused for good, the second partly.
    let script = vec![Answer::Status(400, None), Answer::PartialSuccess(1)];
    let (rx_addr, rx) = receiver(script).await;
    let collector = Collector::start(otlp_collector(&fleet, rx_addr, 1))
        .await
        .unwrap();
    let m = collector.metrics().clone();
    ship_calls(&fleet, collector.local_addr()).await;
    wait_for("8 requests", || rx.requests() >= 8).await;
    wait_for("flows retired", || {
        m.value("flowattr_collector_flows_out", &[]) == 8.0
    })
    .await;
    assert_eq!(rx.requests(), 8, "the refused request is not sent again");
    assert_eq!(rx.flows().len(), 7);
    assert_eq!(
        m.value(
            "flowattr_collector_dropped",
            &[("reason", "otlp_rejected:400")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "flowattr_collector_dropped",
            &[("reason", "otlp_partial_rejected")]
        ),
        1.0
    );
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_otlp_output_with_a_sink_that_does_not_write_otlp_is_refused_at_start() {
    let fleet = Fleet::new();
    let mut c = otlp_collector(&fleet, "127.0.0.1:9".parse().unwrap(), 100);
    c.plugins.sink = "jsonl-sink".into();
    let e = Collector::start(c).await.err().expect("refused");
    let e = format!("{e:#}");
    assert!(
        e.contains("an `otlp` output sends OTLP protobuf")
            && e.contains("\"application/x-ndjson\"")
            && e.contains("otlp-sink"),
        "{e}"
    );
}
