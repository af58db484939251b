//! Ownership and completeness sharing and the Kafka output against a real
//! Kafka-protocol broker (Tansu, in memory, on loopback). Fails (never skips) when `tansu`
//! is not installed.

mod common;

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::broker::Broker;
use flowattr_collector::{
    completeness::{Completeness, Mark, SharedMark},
    output::{
        Output,
        kafka::{KafkaOutput, KafkaOutputConfig},
    },
    ownership::{ClaimPolicy, OwnershipConfig, OwnershipTable, RangeUpdate},
    sharing::{
        KafkaSharing, SharingConfig,
        codec::{self, MalformedReason},
    },
};
use flowattr_model::{TimeRange, UnattributedReason, Workload};
use rdkafka::{
    ClientConfig, Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    producer::{BaseProducer, BaseRecord, Producer},
};

const S: u64 = 1_000_000_000;
const WAIT: Duration = Duration::from_secs(30);

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn table() -> OwnershipTable {
    let mut t = OwnershipTable::new(OwnershipConfig::default());
    for agent in ["agent-a", "agent-b", "agent-x"] {
        t.allow_any(agent);
    }
    t
}

fn sharing(broker: &Broker, topic: &str, name: &str) -> KafkaSharing {
    let config = SharingConfig {
        partitions: 3,
        ..SharingConfig::new(broker.address(), topic)
    };
    KafkaSharing::new(config, name).expect("the Kafka sharing starts")
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// `count` addresses `prefix.1 …` owned by `workload-i` (claimant
/// `agent`) from a minute ago to half a minute ago.
fn heartbeats(table: &mut OwnershipTable, prefix: &str, workload: &str, agent: &str, count: u32) {
    let now = now_ns();
    for i in 1..=count {
        let w = Arc::new(Workload::with_id(format!("{workload}-{i}")));
        let seen = TimeRange::new(now - 60 * S, now - 30 * S);
        table.heartbeat(ip(&format!("{prefix}.{i}")), &w, seen, agent, now);
    }
}

/// Who owned `ip` 45 s ago, per `table`.
fn owner(table: &OwnershipTable, ip_text: &str) -> Result<String, UnattributedReason> {
    let now = now_ns();
    table
        .lookup(ip(ip_text), now - 45 * S, now)
        .map(|(w, _)| w.id.clone())
}

fn answers_all(table: &OwnershipTable, prefix: &str, workload: &str, count: u32) -> bool {
    (1..=count).all(|i| owner(table, &format!("{prefix}.{i}")) == Ok(format!("{workload}-{i}")))
}

/// Applies what `sharing` has; returns the updates.
fn pump(sharing: &mut KafkaSharing, table: &mut OwnershipTable) -> Vec<RangeUpdate> {
    let updates = sharing.poll(10_000, Duration::from_millis(50));
    let now = now_ns();
    for u in &updates {
        table.apply(u, now);
    }
    updates
}

/// Calls `step` until it returns `Ok`; fails after `timeout` with `what`,
/// the state `step` last described in its `Err`, and the broker's log.
fn wait_until(
    what: &str,
    timeout: Duration,
    broker: &Broker,
    mut step: impl FnMut() -> Result<(), String>,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let state = match step() {
            Ok(()) => return,
            Err(state) => state,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}\n{state}\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `Ok` if `done`, else the sharings' counters.
fn done_or(done: bool, sharings: &[(&str, &KafkaSharing)]) -> Result<(), String> {
    if done {
        return Ok(());
    }
    Err(sharings
        .iter()
        .map(|(name, s)| format!("{name}: {:?}\n", s.counters()))
        .collect())
}

#[test]
fn two_collectors_share_their_ranges_both_ways() {
    let broker = Broker::start();
    broker.create_topic("ownership", 3);
    let (mut ta, mut tb) = (table(), table());
    let mut a = sharing(&broker, "ownership", "collector-a");
    let mut b = sharing(&broker, "ownership", "collector-b");
    assert!(
        a.warm_up(WAIT).unwrap().is_empty(),
        "a new topic has no history"
    );
    assert!(
        b.warm_up(WAIT).unwrap().is_empty(),
        "a new topic has no history"
    );

    heartbeats(&mut ta, "10.0.0", "api", "agent-a", 20);
    heartbeats(&mut tb, "10.1.0", "db", "agent-b", 20);
    // A second, later range on one address: still one message for it.
    let now = now_ns();
    let later = Arc::new(Workload::with_id("api-1-next"));
    ta.heartbeat(
        ip("10.0.0.1"),
        &later,
        TimeRange::new(now - 20 * S, now - 5 * S),
        "agent-a",
        now,
    );
    assert_eq!(owner(&tb, "10.0.0.1"), Err(UnattributedReason::NotFound));
    assert_eq!(owner(&ta, "10.1.0.1"), Err(UnattributedReason::NotFound));

    let changes_a = ta.drain_changes();
    assert_eq!(changes_a.len(), 21);
    assert_eq!(
        a.publish(&changes_a).messages,
        20,
        "one message per address"
    );
    assert_eq!(b.publish(&tb.drain_changes()).messages, 20);

    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    wait_until(
        "each collector answers the other's addresses",
        WAIT,
        &broker,
        || {
            got_a.extend(pump(&mut a, &mut ta));
            got_b.extend(pump(&mut b, &mut tb));
            done_or(
                answers_all(&tb, "10.0.0", "api", 20) && answers_all(&ta, "10.1.0", "db", 20),
                &[("a", &a), ("b", &b)],
            )
        },
    );
    // The later range arrived too, and the lookups tell the two apart (in
    // the middle of the range, well clear of the clock-skew margins).
    let t = now - 12 * S;
    assert_eq!(
        tb.lookup(ip("10.0.0.1"), t, now_ns()).unwrap().0.id,
        "api-1-next"
    );
    // Each received only the other's ranges: its own were skipped.
    assert!(got_a.iter().all(|u| &*u.claimant == "agent-b"));
    assert!(got_b.iter().all(|u| &*u.claimant == "agent-a"));
    wait_until(
        "both delivered and skipped their own messages",
        WAIT,
        &broker,
        || {
            pump(&mut a, &mut ta);
            pump(&mut b, &mut tb);
            let (ca, cb) = (a.counters(), b.counters());
            done_or(
                ca.delivered == 20
                    && cb.delivered == 20
                    && ca.own_skipped == 20
                    && cb.own_skipped == 20,
                &[("a", &a), ("b", &b)],
            )
        },
    );
    for c in [a.counters(), b.counters()] {
        assert_eq!(
            (c.published, c.publish_errors, c.consumed),
            (20, 0, 20),
            "{c:?}"
        );
        assert_eq!(c.malformed_total(), 0);
        assert!(c.broker_up && c.warmed_up, "{c:?}");
    }
    wait_until(
        "the lag is reported as zero",
        Duration::from_secs(10),
        &broker,
        || {
            done_or(
                a.counters().lag == 0 && b.counters().lag == 0,
                &[("a", &a), ("b", &b)],
            )
        },
    );
}

/// agent-a may claim 10.0.1.0/24, agent-b 10.0.2.0/24.
fn completeness() -> Completeness {
    let mut claims = ClaimPolicy::new();
    claims.allow("agent-a", ["10.0.1.0/24".parse().unwrap()]);
    claims.allow("agent-b", ["10.0.2.0/24".parse().unwrap()]);
    Completeness::new(&claims, 2 * S, 300 * S, 0)
}

/// Applies the watermarks `sharing` has to `completeness`; returns them.
fn pump_marks(sharing: &mut KafkaSharing, completeness: &mut Completeness) -> Vec<SharedMark> {
    let marks = sharing.poll_marks();
    for m in &marks {
        completeness.apply(m);
    }
    marks
}

fn mark_of(completeness: &Completeness, claimant: &str) -> Option<Mark> {
    completeness
        .marks()
        .find(|(c, _)| *c == claimant)
        .map(|(_, m)| m)
}

#[test]
fn two_collectors_share_their_agents_watermarks_beside_the_ranges() {
    let broker = Broker::start();
    broker.create_topic("ownership", 3);
    let (mut ta, mut tb) = (table(), table());
    let (mut ca, mut cb) = (completeness(), completeness());
    let mut a = sharing(&broker, "ownership", "collector-a");
    let mut b = sharing(&broker, "ownership", "collector-b");
    a.warm_up(WAIT).unwrap();
    b.warm_up(WAIT).unwrap();

    // agent-a reports to A, agent-b to B; ranges go out beside the marks.
    let now = now_ns();
    let (wa, wb) = (now - 20 * S, now - 10 * S);
    ca.report("agent-a", wa, now);
    cb.report("agent-b", wb, now);
    heartbeats(&mut ta, "10.0.1", "api", "agent-a", 3);
    a.publish(&ta.drain_changes());
    let shared = ca.drain_changes();
    assert_eq!(shared.len(), 1);
    let report = a.publish_marks(&shared);
    assert_eq!(report.messages, 1, "{report:?}");
    assert_eq!(b.publish_marks(&cb.drain_changes()).messages, 1);

    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    wait_until(
        "each collector knows the other's agent's watermark and A's ranges reached B",
        WAIT,
        &broker,
        || {
            got_a.extend(pump_marks(&mut a, &mut ca));
            got_b.extend(pump_marks(&mut b, &mut cb));
            pump(&mut a, &mut ta);
            pump(&mut b, &mut tb);
            done_or(
                mark_of(&ca, "agent-b").is_some()
                    && mark_of(&cb, "agent-a").is_some()
                    && answers_all(&tb, "10.0.1", "api", 3),
                &[("a", &a), ("b", &b)],
            )
        },
    );
    let sent = Mark {
        watermark_ns: wa,
        heard_ns: now,
    };
    assert_eq!(mark_of(&cb, "agent-a"), Some(sent));
    assert_eq!(got_b, vec![shared[0].clone()], "B got exactly A's mark");
    assert!(
        got_a.iter().all(|m| &*m.claimant == "agent-b"),
        "A never got its own back: {got_a:?}"
    );
    // What B learned makes flows towards agent-a's addresses complete there.
    cb.refresh(now);
    assert!(cb.is_complete(ip("10.0.1.9"), wa - 2 * S));
    assert!(!cb.is_complete(ip("10.0.1.9"), wa - 2 * S + 1));
    assert!(
        cb.drain_changes().is_empty(),
        "learned marks are not shared again"
    );

    // A newer watermark replaces the older one; an older one arriving later
    // changes nothing.
    let later = now_ns();
    ca.report("agent-a", wa + 5 * S, later);
    a.publish_marks(&ca.drain_changes());
    a.publish_marks(&[SharedMark {
        claimant: "agent-a".into(),
        mark: Mark {
            watermark_ns: wa - S,
            heard_ns: now - S,
        },
    }]);
    wait_until("B has agent-a's newer watermark", WAIT, &broker, || {
        pump_marks(&mut b, &mut cb);
        done_or(
            mark_of(&cb, "agent-a").map(|m| m.watermark_ns) == Some(wa + 5 * S)
                && b.counters().marks_received == 3,
            &[("a", &a), ("b", &b)],
        )
    });
    assert_eq!(
        mark_of(&cb, "agent-a"),
        Some(Mark {
            watermark_ns: wa + 5 * S,
            heard_ns: later
        })
    );

    wait_until(
        "both delivered and skipped their own messages",
        WAIT,
        &broker,
        || {
            pump_marks(&mut a, &mut ca);
            pump_marks(&mut b, &mut cb);
            pump(&mut a, &mut ta);
            pump(&mut b, &mut tb);
            let (xa, xb) = (a.counters(), b.counters());
            // A: 3 ranges and 3 watermark messages; B: 1 watermark message.
            done_or(
                xa.delivered == 6
                    && xb.delivered == 1
                    && xa.own_skipped == 6
                    && xb.own_skipped == 1,
                &[("a", &a), ("b", &b)],
            )
        },
    );
    let (xa, xb) = (a.counters(), b.counters());
    assert_eq!(
        (xa.marks_published, xa.marks_received, xa.consumed),
        (3, 1, 1),
        "{xa:?}"
    );
    assert_eq!(
        (
            xb.marks_published,
            xb.marks_received,
            xb.ranges_received,
            xb.consumed
        ),
        (1, 3, 3, 6),
        "{xb:?}"
    );
    for x in [xa, xb] {
        assert_eq!(x.malformed_total(), 0, "{x:?}");
        assert_eq!(
            (x.marks_waiting, x.marks_dropped, x.publish_errors),
            (0, 0, 0),
            "{x:?}"
        );
    }

    // A collector started later: its warm-up returns the ranges, and the
    // history's watermarks follow from `poll_marks`, each with the time its
    // agent was last heard (so old ones do not make an agent look alive).
    let mut c = sharing(&broker, "ownership", "collector-c");
    let history = c.warm_up(WAIT).expect("the history is read");
    assert_eq!(history.len(), 3, "only ranges: {history:?}");
    let mut cc = completeness();
    pump_marks(&mut c, &mut cc);
    assert_eq!(
        mark_of(&cc, "agent-a"),
        Some(Mark {
            watermark_ns: wa + 5 * S,
            heard_ns: later
        })
    );
    assert_eq!(
        mark_of(&cc, "agent-b"),
        Some(Mark {
            watermark_ns: wb,
            heard_ns: now
        })
    );
    cc.refresh(later + 301 * S);
    assert!(
        cc.is_complete(ip("10.0.1.9"), later + 300 * S),
        "agent-a is silent by then: not waited for"
    );
}

#[test]
fn malformed_watermark_messages_are_counted_and_never_applied() {
    let broker = Broker::start();
    broker.create_topic("ownership", 3);
    let mut b = sharing(&broker, "ownership", "collector-b");
    b.warm_up(WAIT).unwrap();
    let mut cb = completeness();

    let good = |claimant: &str, watermark_ns: u64| {
        codec::encode_marks(
            "collector-x",
            &[SharedMark {
                claimant: claimant.into(),
                mark: Mark {
                    watermark_ns,
                    heard_ns: now_ns(),
                },
            }],
        )
        .remove(0)
    };
    let before = good("agent-a", 100);
    let after = good("agent-b", 200);
    let one = r#"{"claimant":"agent-a","watermark_ns":999,"heard_ns":1}"#;
    let too_many = format!(
        r#"{{"v":1,"origin":"collector-x","marks":[{}]}}"#,
        vec![one; codec::MAX_MARKS_PER_MESSAGE + 1].join(",")
    );
    let one_bad = r#"{"v":1,"origin":"collector-x","marks":[
        {"claimant":"agent-a","watermark_ns":999,"heard_ns":1},
        {"claimant":"","watermark_ns":999,"heard_ns":1}]}"#;
    let messages: Vec<(String, Vec<u8>)> = vec![
        (before.key.clone(), before.payload.clone()),
        // Someone else's marks under collector-x's key, and the reverse.
        ("marks/collector-y".into(), before.payload.clone()),
        ("10.0.1.1".into(), before.payload.clone()),
        ("marks/collector-x".into(), too_many.into_bytes()),
        ("marks/collector-x".into(), one_bad.as_bytes().to_vec()),
        (after.key.clone(), after.payload.clone()),
    ];
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .create()
        .unwrap();
    for (key, payload) in &messages {
        producer
            .send(
                BaseRecord::to("ownership")
                    .partition(2)
                    .key(key)
                    .payload(payload),
            )
            .unwrap();
    }
    producer
        .flush(WAIT)
        .expect("the test messages are delivered");

    wait_until(
        "the good watermarks are applied and the bad messages counted",
        WAIT,
        &broker,
        || {
            pump_marks(&mut b, &mut cb);
            done_or(
                mark_of(&cb, "agent-b").is_some() && b.counters().malformed_total() == 4,
                &[("b", &b)],
            )
        },
    );
    assert_eq!(
        mark_of(&cb, "agent-a").unwrap().watermark_ns,
        100,
        "never 999"
    );
    let c = b.counters();
    assert_eq!(c.malformed(MalformedReason::Key), 2, "{c:?}");
    assert_eq!(c.malformed(MalformedReason::Limit), 1, "{c:?}");
    assert_eq!(c.malformed(MalformedReason::Claimant), 1, "{c:?}");
    assert_eq!((c.consumed, c.marks_received), (2, 2), "{c:?}");
}

#[test]
fn a_collector_started_later_warms_up_from_the_history() {
    let broker = Broker::start();
    broker.create_topic("ownership", 3);
    let (mut ta, mut tb) = (table(), table());
    let mut a = sharing(&broker, "ownership", "collector-a");
    let mut b = sharing(&broker, "ownership", "collector-b");
    a.warm_up(WAIT).unwrap();
    b.warm_up(WAIT).unwrap();
    heartbeats(&mut ta, "10.0.0", "api", "agent-a", 15);
    heartbeats(&mut tb, "10.1.0", "db", "agent-b", 15);
    a.publish(&ta.drain_changes());
    b.publish(&tb.drain_changes());
    wait_until("B has A's ranges", WAIT, &broker, || {
        pump(&mut b, &mut tb);
        done_or(answers_all(&tb, "10.0.0", "api", 15), &[("b", &b)])
    });
    wait_until(
        "A's and B's messages are all delivered",
        WAIT,
        &broker,
        || {
            done_or(
                a.counters().delivered == 15 && b.counters().delivered == 15,
                &[("a", &a), ("b", &b)],
            )
        },
    );

    // A restarts with an empty table: its warm-up brings back its own
    // earlier ranges as well as B's.
    drop(a);
    let mut ta2 = table();
    let mut a2 = sharing(&broker, "ownership", "collector-a");
    let history = a2.warm_up(WAIT).expect("the history is read");
    assert_eq!(history.len(), 30, "A's 15 and B's 15 ranges");
    let now = now_ns();
    for u in &history {
        ta2.apply(u, now);
    }
    assert!(answers_all(&ta2, "10.0.0", "api", 15));
    assert!(answers_all(&ta2, "10.1.0", "db", 15));
    assert!(a2.counters().warmed_up);

    // A brand-new collector C answers the same.
    let mut tc = table();
    let mut c = sharing(&broker, "ownership", "collector-c");
    for u in c.warm_up(WAIT).expect("the history is read") {
        tc.apply(&u, now_ns());
    }
    assert!(answers_all(&tc, "10.0.0", "api", 15));
    assert!(answers_all(&tc, "10.1.0", "db", 15));
    assert_eq!(tc.dump(), tb.dump(), "C's table equals B's");
    assert_eq!(ta2.dump(), tb.dump(), "restarted A's table equals B's");

    // After warm-up, A's new messages are not handed back to A.
    heartbeats(&mut ta2, "10.2.0", "web", "agent-a", 3);
    a2.publish(&ta2.drain_changes());
    wait_until(
        "C has restarted A's new ranges and A skipped them",
        WAIT,
        &broker,
        || {
            let back = pump(&mut a2, &mut ta2);
            assert!(back.is_empty(), "A got its own ranges back: {back:?}");
            pump(&mut c, &mut tc);
            done_or(
                answers_all(&tc, "10.2.0", "web", 3) && a2.counters().own_skipped == 3,
                &[("a2", &a2), ("c", &c)],
            )
        },
    );
}

#[test]
fn the_warm_up_reads_only_its_window() {
    let broker = Broker::start();
    broker.create_topic("ownership", 3);
    let mut ta = table();
    let mut a = sharing(&broker, "ownership", "collector-a");
    a.warm_up(WAIT).unwrap();
    // Two messages for one address (so one partition), 1.5 s apart.
    let now = now_ns();
    let old = Arc::new(Workload::with_id("old"));
    ta.heartbeat(
        ip("10.5.0.1"),
        &old,
        TimeRange::new(now - 120 * S, now - 100 * S),
        "agent-a",
        now,
    );
    a.publish(&ta.drain_changes());
    std::thread::sleep(Duration::from_millis(1500));
    let now = now_ns();
    let new = Arc::new(Workload::with_id("new"));
    ta.heartbeat(
        ip("10.5.0.1"),
        &new,
        TimeRange::new(now - 60 * S, now - 30 * S),
        "agent-a",
        now,
    );
    a.publish(&ta.drain_changes());
    wait_until("A's two messages are delivered", WAIT, &broker, || {
        done_or(a.counters().delivered == 2, &[("a", &a)])
    });

    let ids = |history: Vec<RangeUpdate>| -> Vec<String> {
        history.iter().map(|u| u.workload.id.clone()).collect()
    };
    let narrow = SharingConfig {
        partitions: 3,
        warmup_window: Duration::from_secs(1),
        ..SharingConfig::new(broker.address(), "ownership")
    };
    let mut c = KafkaSharing::new(narrow, "collector-c").unwrap();
    assert_eq!(
        ids(c.warm_up(WAIT).unwrap()),
        ["new"],
        "only the last second is read"
    );
    let mut d = sharing(&broker, "ownership", "collector-d");
    assert_eq!(
        ids(d.warm_up(WAIT).unwrap()),
        ["old", "new"],
        "the default window reads both"
    );
}

#[test]
fn malformed_messages_are_counted_and_never_applied() {
    let broker = Broker::start();
    broker.create_topic("ownership", 3);
    let mut tb = table();
    let mut b = sharing(&broker, "ownership", "collector-b");
    b.warm_up(WAIT).unwrap();

    let now = now_ns();
    let update = |addr: &str, id: &str| RangeUpdate {
        ip: ip(addr),
        workload: Arc::new(Workload::with_id(id)),
        range: TimeRange::new(now - 60 * S, now - 30 * S),
        claimant: "agent-x".into(),
    };
    let good_before = codec::encode("collector-x", &[update("10.9.0.1", "good-1")]);
    let good_after = codec::encode("collector-x", &[update("10.9.0.5", "good-5")]);
    let valid_v2 = codec::encode("collector-x", &[update("10.9.0.3", "evil-3")]);
    let v2 = String::from_utf8(valid_v2[0].payload.clone())
        .unwrap()
        .replace(r#""v":1"#, r#""v":2"#);
    let wrong_key = codec::encode("collector-x", &[update("10.9.0.4", "evil-4")]);
    let messages: Vec<(String, Vec<u8>)> = vec![
        (good_before[0].key.clone(), good_before[0].payload.clone()),
        ("10.9.0.2".into(), b"\x00\xffnot json at all".to_vec()),
        ("10.9.0.3".into(), v2.into_bytes()),
        ("10.9.0.40".into(), wrong_key[0].payload.clone()),
        (good_after[0].key.clone(), good_after[0].payload.clone()),
    ];
    // All on one partition, in this order, so the good ones surround the bad.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .create()
        .unwrap();
    for (key, payload) in &messages {
        producer
            .send(
                BaseRecord::to("ownership")
                    .partition(1)
                    .key(key)
                    .payload(payload),
            )
            .unwrap();
    }
    producer
        .flush(WAIT)
        .expect("the test messages are delivered");

    wait_until(
        "the good messages are applied and the bad ones counted",
        WAIT,
        &broker,
        || {
            pump(&mut b, &mut tb);
            let c = b.counters();
            done_or(
                owner(&tb, "10.9.0.1").is_ok()
                    && owner(&tb, "10.9.0.5").is_ok()
                    && c.malformed_total() == 3,
                &[("b", &b)],
            )
        },
    );
    assert_eq!(owner(&tb, "10.9.0.1").unwrap(), "good-1");
    assert_eq!(owner(&tb, "10.9.0.5").unwrap(), "good-5");
    for bad in ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.40"] {
        assert_eq!(owner(&tb, bad), Err(UnattributedReason::NotFound), "{bad}");
    }
    let c = b.counters();
    assert_eq!(c.malformed(MalformedReason::Syntax), 1, "{c:?}");
    assert_eq!(c.malformed(MalformedReason::Version), 1, "{c:?}");
    assert_eq!(c.malformed(MalformedReason::Key), 1, "{c:?}");
    assert_eq!(c.consumed, 2, "{c:?}");
    assert_eq!(
        tb.counters().updates,
        2,
        "only the good ranges reached the table"
    );
}

#[test]
fn sharing_survives_a_broker_outage_and_restart() {
    let mut broker = Broker::start();
    // No topic: the sharing creates it.
    let (mut ta, mut tb) = (table(), table());
    let mut a = sharing(&broker, "ownership", "collector-a");
    let mut b = sharing(&broker, "ownership", "collector-b");
    a.warm_up(WAIT).expect("A warms up on a topic it created");
    b.warm_up(WAIT).expect("B warms up");
    assert_eq!(broker.partitions("ownership"), Some(3));

    heartbeats(&mut ta, "10.0.0", "api", "agent-a", 5);
    a.publish(&ta.drain_changes());
    wait_until("B has A's first ranges", WAIT, &broker, || {
        pump(&mut b, &mut tb);
        done_or(
            answers_all(&tb, "10.0.0", "api", 5),
            &[("a", &a), ("b", &b)],
        )
    });

    // The broker goes away: nothing blocks, the tables still answer.
    broker.stop();
    wait_until("both see the broker down", WAIT, &broker, || {
        pump(&mut a, &mut ta);
        pump(&mut b, &mut tb);
        done_or(
            !a.counters().broker_up && !b.counters().broker_up,
            &[("a", &a), ("b", &b)],
        )
    });
    heartbeats(&mut ta, "10.3.0", "during", "agent-a", 4);
    let started = Instant::now();
    let published = a.publish(&ta.drain_changes());
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "publish blocked: {:?}",
        started.elapsed()
    );
    assert_eq!(published.messages + published.kept, 4, "{published:?}");
    // A watermark from during the outage is kept here (not in the queue)
    // and published once the topic is back.
    let during = SharedMark {
        claimant: "agent-a".into(),
        mark: Mark {
            watermark_ns: now_ns() - 5 * S,
            heard_ns: now_ns(),
        },
    };
    let started = Instant::now();
    a.publish_marks(std::slice::from_ref(&during));
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "publish_marks blocked: {:?}",
        started.elapsed()
    );
    assert_eq!(a.counters().marks_waiting, 1, "{:?}", a.counters());
    let started = Instant::now();
    assert!(b.poll(100, Duration::from_millis(100)).is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "poll blocked: {:?}",
        started.elapsed()
    );
    assert!(
        answers_all(&tb, "10.0.0", "api", 5),
        "B's table still answers"
    );
    assert!(
        answers_all(&ta, "10.3.0", "during", 4),
        "A's table still answers"
    );

    // A new, empty broker on the same port: the topic is created again,
    // what A queued during the outage arrives, and new ranges flow again.
    broker.restart();
    let (mut ca, mut cb) = (completeness(), completeness());
    wait_until(
        "B has what A published during the outage",
        WAIT,
        &broker,
        || {
            pump(&mut a, &mut ta);
            pump(&mut b, &mut tb);
            pump_marks(&mut a, &mut ca);
            pump_marks(&mut b, &mut cb);
            done_or(
                answers_all(&tb, "10.3.0", "during", 4)
                    && mark_of(&cb, "agent-a") == Some(during.mark),
                &[("a", &a), ("b", &b)],
            )
        },
    );
    assert_eq!(a.counters().marks_waiting, 0);
    heartbeats(&mut ta, "10.4.0", "after", "agent-a", 6);
    a.publish(&ta.drain_changes());
    wait_until(
        "B has A's ranges from after the restart",
        WAIT,
        &broker,
        || {
            pump(&mut a, &mut ta);
            pump(&mut b, &mut tb);
            done_or(
                answers_all(&tb, "10.4.0", "after", 6),
                &[("a", &a), ("b", &b)],
            )
        },
    );
    assert_eq!(
        broker.partitions("ownership"),
        Some(3),
        "the topic was created again"
    );
    let (ca, cb) = (a.counters(), b.counters());
    assert!(ca.broker_up && cb.broker_up, "{ca:?} {cb:?}");
    assert!(
        cb.repositions >= 1,
        "B read the new topic from its start: {cb:?}"
    );
    assert_eq!(ca.publish_errors, 0, "nothing A published was lost: {ca:?}");
    assert!(
        answers_all(&tb, "10.0.0", "api", 5),
        "B kept what it had before"
    );
}

/// Writes like the collector's output fan-out: a refused chunk is kept and
/// offered again.
fn write_retrying(out: &mut KafkaOutput, seq: u64, chunk: &[u8], broker: &Broker) {
    wait_until("the output takes the chunk", WAIT, broker, || {
        out.write(seq, chunk)
            .map_err(|e| format!("{e}: {:?}", out.counters()))
    });
}

/// Commits until every chunk before `below` is delivered; chunks reported
/// lost are written again, as the fan-out does.
fn deliver_all(out: &mut KafkaOutput, chunks: &[(u64, Vec<u8>)], below: u64, broker: &Broker) {
    wait_until("the output has delivered everything", WAIT, broker, || {
        let p = out.commit().map_err(|e| e.to_string())?;
        if let Some(from) = p.resend_from {
            for (seq, chunk) in chunks.iter().filter(|(s, _)| *s >= from) {
                out.write(*seq, chunk).map_err(|e| e.to_string())?;
            }
        }
        if p.durable_below >= below {
            Ok(())
        } else {
            Err(format!(
                "durable below {}: {:?}",
                p.durable_below,
                out.counters()
            ))
        }
    });
}

/// Every message on partition 0 of `topic`, from the beginning.
fn read_all(broker: &Broker, topic: &str, expected: usize) -> Vec<Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .set("group.id", "output-test")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut read = Vec::new();
    // Reads a little past the expected count, so extra messages show too.
    let deadline = Instant::now() + WAIT;
    let mut quiet_until = None;
    while Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            read.push(m.payload().unwrap_or_default().to_vec());
        }
        if read.len() >= expected {
            let until = *quiet_until.get_or_insert(Instant::now() + Duration::from_millis(500));
            if Instant::now() >= until {
                break;
            }
        }
    }
    read
}

#[test]
fn kafka_output_writes_each_chunk_as_one_message() {
    let broker = Broker::start();
    let config = KafkaOutputConfig {
        partitions: 1,
        ..KafkaOutputConfig::new(broker.address(), "flows")
    };
    let mut out = KafkaOutput::new(config).unwrap();
    let chunks: Vec<(u64, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                i,
                format!("{{\"flow\":{i}}}\n{{\"flow\":{}}}\n", i + 100).into_bytes(),
            )
        })
        .collect();
    // The first write waits for the output to create and see its topic.
    for (seq, chunk) in &chunks {
        write_retrying(&mut out, *seq, chunk, &broker);
    }
    assert_eq!(
        broker.partitions("flows"),
        Some(1),
        "the output created its topic"
    );
    deliver_all(&mut out, &chunks, 3, &broker);
    let c = out.counters();
    assert_eq!(
        (c.sent, c.delivered, c.failed, c.queue_full),
        (3, 3, 0, 0),
        "{c:?}"
    );
    assert_eq!(
        read_all(&broker, "flows", 3),
        chunks.into_iter().map(|(_, c)| c).collect::<Vec<_>>(),
        "each chunk is one message, in order"
    );
}

#[test]
fn kafka_output_loses_nothing_written_after_a_broker_restart() {
    let mut broker = Broker::start();
    let config = KafkaOutputConfig {
        partitions: 1,
        ..KafkaOutputConfig::new(broker.address(), "flows")
    };
    let mut out = KafkaOutput::new(config).unwrap();
    let before = vec![(0, b"before".to_vec())];
    write_retrying(&mut out, 0, b"before", &broker);
    deliver_all(&mut out, &before, 1, &broker);
    // An empty broker on the same port. It would take chunks for the topic
    // it lost and drop them once the topic is created again; the output
    // must wait for the topic instead.
    broker.restart();
    let after = vec![(1, b"after-1".to_vec()), (2, b"after-2".to_vec())];
    for (seq, chunk) in &after {
        write_retrying(&mut out, *seq, chunk, &broker);
    }
    deliver_all(&mut out, &after, 3, &broker);
    let got = read_all(&broker, "flows", 2);
    assert!(
        got.contains(&b"after-1".to_vec()) && got.contains(&b"after-2".to_vec()),
        "the new broker has what was written after the restart: {got:?}"
    );
    assert!(
        !got.contains(&b"before".to_vec()),
        "and nothing from before (the broker lost it)"
    );
}
