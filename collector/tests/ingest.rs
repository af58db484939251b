//! Agents that lie or send too much, against a whole collector over real
//! QUIC with CA-signed certificates: a local side outside the agent's
//! claims goes out unattributed, a remote side it sent is computed here
//! instead, a batch of an agent not in `[claims]` is refused and stays in
//! its spool, a batch over the decoding limits is refused; each is counted,
//! and a good agent's batches keep going through.

mod common;

use std::time::Duration;

use common::fleet::{Fleet, S, batch, flow, local_of, now_ns, remote_of, ship_all, workload};
use flowattr_collector::service::Collector;
use flowattr_model::{Attribution, AttributionSource, Side, TimeRange};

const WAIT: Duration = Duration::from_secs(60);

/// The written flow whose local port is `port`.
fn by_port(lines: &[serde_json::Value], port: u64) -> &serde_json::Value {
    lines
        .iter()
        .find(|l| l["local"]["port"].as_u64() == Some(port))
        .unwrap_or_else(|| panic!("no flow from port {port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lies_and_floods_are_contained_and_counted_while_a_good_agent_goes_on() {
    let fleet = Fleet::new();
    let mut config = fleet.collector_config("collector-1");
    // agent-c has a certificate from the CA but is not listed.
    config.claims.remove("agent-c");
    config.ingest.max_flows_per_batch = 1000;
    let collector = Collector::start(config).await.unwrap();
    let addr = collector.local_addr();
    let m = collector.metrics().clone();
    let t = now_ns() - 100 * S;

    // The good agent: db-1 on 10.2.0.7.
    let good = fleet.agent("agent-b", &[addr]);
    ship_all(
        &good,
        &[batch(
            "agent-b",
            0,
            vec![flow("10.2.0.7:5432", &workload("db-1"), "10.1.0.5:6001", t)],
        )],
    )
    .await;

    // agent-a lies twice: it names an impostor at agent-b's address, and
    // sends the remote side of its own call already attributed.
    let liar = fleet.agent("agent-a", &[addr]);
    let mut forged = flow("10.1.0.5:6001", &workload("api-1"), "10.2.0.7:5432", t);
    forged.remote = Side::Attributed(Attribution {
        workload: workload("forged"),
        source: AttributionSource::Heartbeat,
        plugin: "ipman".into(),
        valid: TimeRange::new(t, t + S),
    });
    ship_all(
        &liar,
        &[batch(
            "agent-a",
            0,
            vec![
                flow("10.2.0.7:6000", &workload("impostor"), "10.1.0.9:1", t),
                forged,
            ],
        )],
    )
    .await;

    // agent-a also sends a batch over the flow limit: refused for good.
    let flood: Vec<_> = (0..1500)
        .map(|i| {
            flow(
                &format!("10.1.0.5:{}", 10_000 + i),
                &workload("api-1"),
                "10.9.9.9:1",
                t,
            )
        })
        .collect();
    liar.send(&batch("agent-a", 1, flood)).await.unwrap();

    // agent-c is not listed: refused, kept in its spool, offered again.
    let unclaimed = fleet.agent("agent-c", &[addr]);
    unclaimed
        .send(&batch(
            "agent-c",
            0,
            vec![flow("10.9.0.1:7000", &workload("x"), "10.2.0.7:5432", t)],
        ))
        .await
        .unwrap();

    let deadline = std::time::Instant::now() + WAIT;
    while liar.counters().snapshot().rejected < 1
        || unclaimed.counters().snapshot().refused_unclaimed < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?} {:?}",
            liar.counters().snapshot(),
            unclaimed.counters().snapshot()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c = unclaimed.counters().snapshot();
    assert_eq!(
        (c.spooled_batches, c.acked, c.rejected),
        (1, 0, 0),
        "kept, not dropped"
    );

    // The good agent's next batch still goes through.
    ship_all(
        &good,
        &[batch(
            "agent-b",
            1,
            vec![flow(
                "10.2.0.7:5433",
                &workload("db-1"),
                "10.1.0.5:6002",
                t + S,
            )],
        )],
    )
    .await;

    let lines = fleet.wait_written("collector-1", 4, WAIT);
    assert_eq!(
        lines.len(),
        4,
        "the over-limit and unclaimed batches write nothing"
    );
    assert_eq!(local_of(by_port(&lines, 6000)), "unattributed:conflict");
    assert_eq!(
        remote_of(by_port(&lines, 6001)),
        "db-1",
        "computed, not the forged side"
    );
    assert_eq!(local_of(by_port(&lines, 5433)), "db-1");
    assert!(
        !lines
            .iter()
            .any(|l| l.to_string().contains("impostor") || l.to_string().contains("forged"))
    );

    let authz = |agent: &str, what: &str| {
        m.value(
            "flowattr_collector_authorization",
            &[("agent", agent), ("what", what)],
        )
    };
    assert_eq!(authz("agent-a", "local_outside_claims"), 1.0);
    assert_eq!(authz("agent-a", "remote_recomputed"), 1.0);
    assert_eq!(authz("agent-b", "local_outside_claims"), 0.0);
    assert!(
        m.value(
            "flowattr_collector_batches",
            &[("agent", "agent-c"), ("outcome", "unclaimed")]
        ) >= 2.0
    );
    assert_eq!(
        m.value("flowattr_collector_receiver", &[("counter", "over_limit")]),
        1.0
    );
    assert_eq!(
        m.value(
            "flowattr_collector_batches",
            &[("agent", "agent-b"), ("outcome", "accepted")]
        ),
        2.0
    );
    collector.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclaimed_agents_are_taken_when_configured_with_their_local_sides_unattributed() {
    let fleet = Fleet::new();
    let mut config = fleet.collector_config("collector-1");
    config.claims.remove("agent-c");
    config.ingest.refuse_unclaimed_agents = false;
    let collector = Collector::start(config).await.unwrap();
    let agent = fleet.agent("agent-c", &[collector.local_addr()]);
    let t = now_ns() - 100 * S;
    ship_all(
        &agent,
        &[batch(
            "agent-c",
            0,
            vec![flow("10.9.0.1:7000", &workload("x"), "10.8.0.1:1", t)],
        )],
    )
    .await;
    let lines = fleet.wait_written("collector-1", 1, WAIT);
    assert_eq!(local_of(&lines[0]), "unattributed:conflict");
    let m = collector.metrics();
    assert_eq!(
        m.value(
            "flowattr_collector_authorization",
            &[("agent", "agent-c"), ("what", "local_outside_claims")]
        ),
        1.0
    );
    collector.shutdown().await;
}
