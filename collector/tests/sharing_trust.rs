//! A trustworthy sharing channel against the real broker (Tansu, in memory,
//! on loopback): signed messages from trusted origins keep flowing while
//! garbage, forged, overreaching and oversized messages produced straight
//! onto the topic are refused, counted by reason, and change nothing; and
//! the TLS settings reach librdkafka. Fails (never skips) without `tansu`.

mod common;

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::broker::Broker;
use flowattr_collector::{
    completeness::{Mark, SharedMark},
    config::{KafkaSection, OriginSection},
    ownership::{OwnershipConfig, OwnershipTable, RangeUpdate},
    sharing::{
        KafkaSharing, SharingConfig, SharingError,
        auth::{self, Signer},
        codec::{self, MalformedReason},
        security::{KafkaSecurity, Protocol},
    },
};
use flowattr_model::{TimeRange, UnattributedReason, Workload};
use rdkafka::{
    ClientConfig, ClientContext,
    config::FromClientConfigAndContext,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{BaseProducer, BaseRecord, Producer},
};

const S: u64 = 1_000_000_000;
const WAIT: Duration = Duration::from_secs(30);
const TOPIC: &str = "ownership";

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// An Ed25519 key pair as PEM files `NAME.key` and `NAME.pub` in `dir`
/// (what `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout`
/// write).
fn key_files(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let (private, public) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.pub")),
    );
    std::fs::write(&private, pair.serialize_pem()).unwrap();
    std::fs::write(&public, pair.public_key_pem()).unwrap();
    (private, public)
}

/// `[kafka]` of collector `name`: its key, and `trusted` origins with
/// their public keys and claimants.
fn section(
    broker: &Broker,
    key: &Path,
    trusted: &[(&str, &Path, &[&str])],
    max_message_bytes: usize,
) -> KafkaSection {
    let origins: BTreeMap<String, OriginSection> = trusted
        .iter()
        .map(|(name, public, claimants)| {
            (
                name.to_string(),
                OriginSection {
                    public_keys: vec![public.to_path_buf()],
                    claimants: claimants.iter().map(|c| c.to_string()).collect(),
                },
            )
        })
        .collect();
    KafkaSection {
        partitions: 3,
        signing_key: Some(key.to_path_buf()),
        origins,
        unauthenticated: false,
        max_message_bytes,
        ..KafkaSection::unauthenticated(broker.address(), TOPIC)
    }
}

fn start(section: &KafkaSection, name: &str) -> KafkaSharing {
    let config = section
        .to_sharing_config(name, Duration::from_secs(900))
        .expect("the keys load");
    KafkaSharing::new(config, name).expect("the Kafka sharing starts")
}

fn table() -> OwnershipTable {
    let mut t = OwnershipTable::new(OwnershipConfig::default());
    for agent in ["agent-a", "agent-b"] {
        t.allow_any(agent);
    }
    t
}

fn update(addr: &str, id: &str, claimant: &str) -> RangeUpdate {
    let now = now_ns();
    RangeUpdate {
        ip: ip(addr),
        workload: Arc::new(Workload::with_id(id)),
        range: TimeRange::new(now - 60 * S, now - 30 * S),
        claimant: claimant.into(),
    }
}

fn owner(table: &OwnershipTable, addr: &str) -> Result<String, UnattributedReason> {
    let now = now_ns();
    table
        .lookup(ip(addr), now - 45 * S, now)
        .map(|(w, _)| w.id.clone())
}

fn headers(origin: &str, key_id: &str, signature: &[u8]) -> OwnedHeaders {
    OwnedHeaders::new()
        .insert(Header {
            key: auth::ORIGIN_HEADER,
            value: Some(origin.as_bytes()),
        })
        .insert(Header {
            key: auth::KEY_ID_HEADER,
            value: Some(key_id.as_bytes()),
        })
        .insert(Header {
            key: auth::SIGNATURE_HEADER,
            value: Some(signature),
        })
}

/// One message as an attacker (or a broken collector) produces it.
struct Injected {
    what: &'static str,
    key: String,
    payload: Vec<u8>,
    headers: Option<OwnedHeaders>,
    reason: MalformedReason,
}

fn signed(
    what: &'static str,
    signer: &Signer,
    topic: &str,
    key: String,
    payload: Vec<u8>,
    reason: MalformedReason,
) -> Injected {
    let sig = signer.sign(topic, key.as_bytes(), &payload);
    Injected {
        what,
        headers: Some(headers(&sig.origin, &sig.key_id, &sig.bytes)),
        key,
        payload,
        reason,
    }
}

#[test]
fn forged_garbage_and_overreaching_messages_are_refused_while_signed_ranges_keep_flowing() {
    let broker = Broker::start();
    broker.create_topic(TOPIC, 3);
    let dir = tempfile::tempdir().unwrap();
    let (a_key, a_pub) = key_files(dir.path(), "collector-a");
    let (b_key, b_pub) = key_files(dir.path(), "collector-b");
    let (evil_key, _) = key_files(dir.path(), "collector-evil");
    const MAX: usize = 64 << 10;
    let mut a = start(
        &section(
            &broker,
            &a_key,
            &[("collector-b", &b_pub, &["agent-b"])],
            MAX,
        ),
        "collector-a",
    );
    let mut b = start(
        &section(
            &broker,
            &b_key,
            &[("collector-a", &a_pub, &["agent-a"])],
            MAX,
        ),
        "collector-b",
    );
    a.warm_up(WAIT).unwrap();
    b.warm_up(WAIT).unwrap();
    let mut tb = table();

    // Good traffic before the attack.
    let before: Vec<RangeUpdate> = (1..=5)
        .map(|i| update(&format!("10.1.0.{i}"), &format!("good-{i}"), "agent-a"))
        .collect();
    a.publish(&before);

    // What the attacker sends, with a's real key where a broken-into
    // collector-a would have it.
    let signer_a = Signer::from_pem_file("collector-a", &a_key).unwrap();
    let evil = Signer::from_pem_file("collector-evil", &evil_key).unwrap();
    let evil_as_a = Signer::from_pem_file("collector-a", &evil_key).unwrap();
    let range_msg = |origin: &str, addr: &str, claimant: &str| {
        codec::encode(origin, &[update(addr, "evil", claimant)]).remove(0)
    };
    let m = range_msg("collector-a", "10.1.9.1", "agent-a");
    let forged = evil_as_a.sign(TOPIC, m.key.as_bytes(), &m.payload);
    let many: Vec<RangeUpdate> = (0..=codec::MAX_RANGES_PER_MESSAGE)
        .map(|i| update("10.1.9.8", &format!("evil-{i}"), "agent-a"))
        .collect();
    let one =
        String::from_utf8(codec::encode("collector-a", &many[..1]).remove(0).payload).unwrap();
    let ranges_json = |n: usize| {
        let r = &one[one.find("[{").unwrap() + 1..one.rfind("}]").unwrap() + 1];
        vec![r; n].join(",")
    };
    let over_count = format!(
        r#"{{"v":1,"origin":"collector-a","ip":"10.1.9.8","ranges":[{}]}}"#,
        ranges_json(codec::MAX_RANGES_PER_MESSAGE + 1)
    );
    // Within the broker's limit, over the reader's.
    let oversized = format!(
        r#"{{"v":1,"origin":"collector-a","ip":"10.1.9.9","ranges":[{}],"pad":"{}"}}"#,
        ranges_json(1),
        "x".repeat(MAX)
    );
    let marks_b = codec::encode_marks(
        "collector-a",
        &[SharedMark {
            claimant: "agent-b".into(),
            mark: Mark {
                watermark_ns: now_ns(),
                heard_ns: now_ns(),
            },
        }],
    )
    .remove(0);
    let m2 = range_msg("collector-a", "10.1.9.2", "agent-a");
    let m3 = range_msg("collector-a", "10.1.9.3", "agent-a");
    let injected = vec![
        Injected {
            what: "garbage, unsigned",
            key: "10.1.9.4".into(),
            payload: b"\x00\xff\x13garbage".to_vec(),
            headers: None,
            reason: MalformedReason::Unsigned,
        },
        Injected {
            what: "a good-looking message, unsigned",
            key: m2.key.clone(),
            payload: m2.payload.clone(),
            headers: None,
            reason: MalformedReason::Unsigned,
        },
        Injected {
            what: "garbage with a random signature under a's key id",
            key: "10.1.9.4".into(),
            payload: b"garbage".to_vec(),
            headers: Some(headers(
                "collector-a",
                signer_a.public_key().id(),
                &[7u8; 64],
            )),
            reason: MalformedReason::BadSignature,
        },
        Injected {
            what: "a range forged as collector-a (another key, a's key id)",
            key: m.key.clone(),
            payload: m.payload.clone(),
            headers: Some(headers(
                "collector-a",
                signer_a.public_key().id(),
                &forged.bytes,
            )),
            reason: MalformedReason::BadSignature,
        },
        Injected {
            what: "a's real message altered after signing",
            key: m3.key.clone(),
            payload: m3
                .payload
                .iter()
                .map(|&c| if c == b'e' { b'E' } else { c })
                .collect(),
            headers: {
                let s = signer_a.sign(TOPIC, m3.key.as_bytes(), &m3.payload);
                Some(headers(&s.origin, &s.key_id, &s.bytes))
            },
            reason: MalformedReason::BadSignature,
        },
        signed(
            "a's message replayed from another topic",
            &signer_a,
            "other-region-ownership",
            m3.key.clone(),
            m3.payload.clone(),
            MalformedReason::BadSignature,
        ),
        signed(
            "an untrusted origin",
            &evil,
            TOPIC,
            "10.1.9.5".into(),
            range_msg("collector-evil", "10.1.9.5", "agent-a").payload,
            MalformedReason::UnknownOrigin,
        ),
        signed(
            "collector-a's name with a key b does not trust it with",
            &evil_as_a,
            TOPIC,
            "10.1.9.6".into(),
            range_msg("collector-a", "10.1.9.6", "agent-a").payload,
            MalformedReason::UnknownKey,
        ),
        signed(
            "a, validly signed, speaking for agent-b",
            &signer_a,
            TOPIC,
            "10.1.9.7".into(),
            range_msg("collector-a", "10.1.9.7", "agent-b").payload,
            MalformedReason::NotAllowed,
        ),
        signed(
            "a, validly signed, with agent-b's watermark",
            &signer_a,
            TOPIC,
            marks_b.key.clone(),
            marks_b.payload.clone(),
            MalformedReason::NotAllowed,
        ),
        signed(
            "a signing a payload that names collector-b",
            &signer_a,
            TOPIC,
            "10.1.9.10".into(),
            range_msg("collector-b", "10.1.9.10", "agent-b").payload,
            MalformedReason::OriginMismatch,
        ),
        signed(
            "a, validly signed, over the ranges a message may carry",
            &signer_a,
            TOPIC,
            "10.1.9.8".into(),
            over_count.into_bytes(),
            MalformedReason::Limit,
        ),
        signed(
            "a, validly signed, over the reader's message size",
            &signer_a,
            TOPIC,
            "10.1.9.9".into(),
            oversized.into_bytes(),
            MalformedReason::Limit,
        ),
        signed(
            "a, validly signed, garbage",
            &signer_a,
            TOPIC,
            "10.1.9.11".into(),
            b"{not json".to_vec(),
            MalformedReason::Syntax,
        ),
    ];
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.address())
        .create()
        .unwrap();
    for (i, m) in injected.iter().enumerate() {
        let mut record = BaseRecord::to(TOPIC)
            .partition((i % 3) as i32)
            .key(&m.key)
            .payload(&m.payload);
        if let Some(h) = &m.headers {
            record = record.headers(h.clone());
        }
        producer
            .send(record)
            .unwrap_or_else(|(e, _)| panic!("{}: {e}", m.what));
    }
    producer
        .flush(WAIT)
        .expect("the injected messages are delivered");

    // Good traffic after the attack.
    let after: Vec<RangeUpdate> = (1..=5)
        .map(|i| update(&format!("10.1.1.{i}"), &format!("later-{i}"), "agent-a"))
        .collect();
    a.publish(&after);

    let mut expected = [0u64; MalformedReason::ALL.len()];
    for m in &injected {
        expected[m.reason.index()] += 1;
    }
    let deadline = Instant::now() + WAIT;
    loop {
        let now = now_ns();
        for u in b.poll(10_000, Duration::from_millis(50)) {
            tb.apply(&u, now);
        }
        let c = b.counters();
        let good = (1..=5).all(|i| {
            owner(&tb, &format!("10.1.0.{i}")).is_ok() && owner(&tb, &format!("10.1.1.{i}")).is_ok()
        });
        if good && c.malformed_total() == injected.len() as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "timed out: good ranges in: {good}; b: {c:?}\n{}",
            broker.log()
        );
    }
    for i in 1..=5 {
        assert_eq!(
            owner(&tb, &format!("10.1.0.{i}")).unwrap(),
            format!("good-{i}")
        );
        assert_eq!(
            owner(&tb, &format!("10.1.1.{i}")).unwrap(),
            format!("later-{i}")
        );
    }
    for i in 1..=11 {
        let addr = format!("10.1.9.{i}");
        assert_eq!(
            owner(&tb, &addr),
            Err(UnattributedReason::NotFound),
            "{addr}"
        );
    }
    let c = b.counters();
    for reason in MalformedReason::ALL {
        assert_eq!(
            c.malformed(reason),
            expected[reason.index()],
            "{} refusals; {c:?}",
            reason.as_str()
        );
    }
    assert_eq!(c.consumed, 10, "only a's ten good messages; {c:?}");
    assert_eq!(
        tb.counters().updates,
        10,
        "only the good ranges reached the table"
    );
    assert!(
        b.poll_marks().is_empty(),
        "agent-b's watermark from collector-a was never taken"
    );
    // b also publishes, and a takes b's (the other way round works too).
    b.publish(&[update("10.2.0.1", "b-1", "agent-b")]);
    let mut ta = table();
    let deadline = Instant::now() + WAIT;
    while owner(&ta, "10.2.0.1").is_err() {
        for u in a.poll(10_000, Duration::from_millis(50)) {
            ta.apply(&u, now_ns());
        }
        assert!(
            Instant::now() < deadline,
            "a never took b's range: {:?}",
            a.counters()
        );
    }
}

#[test]
fn a_collector_that_trusts_no_one_but_itself_takes_only_its_own_history() {
    let broker = Broker::start();
    broker.create_topic(TOPIC, 3);
    let dir = tempfile::tempdir().unwrap();
    let (a_key, _) = key_files(dir.path(), "collector-a");
    let (c_key, _) = key_files(dir.path(), "collector-c");
    // An unauthenticated collector publishes unsigned; a signed one
    // trusting nobody publishes too.
    let open = KafkaSharing::new(
        SharingConfig {
            partitions: 3,
            ..SharingConfig::new(broker.address(), TOPIC)
        },
        "collector-open",
    )
    .unwrap();
    let mut a = start(&section(&broker, &a_key, &[], 1 << 20), "collector-a");
    a.warm_up(WAIT).unwrap();
    open.publish(&[update("10.3.0.1", "open-1", "agent-a")]);
    a.publish(&[update("10.3.0.2", "mine-2", "agent-a")]);
    open.flush(WAIT).unwrap();
    a.flush(WAIT).unwrap();
    // A restarted collector-a reads its own signed history; the unsigned
    // message is refused.
    drop(a);
    let mut a = start(&section(&broker, &a_key, &[], 1 << 20), "collector-a");
    let mut t = table();
    for u in a.warm_up(WAIT).unwrap() {
        t.apply(&u, now_ns());
    }
    assert_eq!(owner(&t, "10.3.0.2").unwrap(), "mine-2");
    assert_eq!(owner(&t, "10.3.0.1"), Err(UnattributedReason::NotFound));
    assert_eq!(a.counters().malformed(MalformedReason::Unsigned), 1);
    // A key for another name is refused at start.
    let wrong = section(&broker, &c_key, &[], 1 << 20)
        .to_sharing_config("collector-c", Duration::from_secs(900))
        .unwrap();
    let err = KafkaSharing::new(wrong, "collector-a").err().unwrap();
    assert!(matches!(err, SharingError::Config(_)), "{err}");
}

/// Client errors and log lines librdkafka reports, captured.
#[derive(Clone, Default)]
struct Errors(Arc<Mutex<Vec<String>>>);

impl ClientContext for Errors {
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.0.lock().unwrap().push(format!("{fac}: {message}"));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.0.lock().unwrap().push(format!("{error}: {reason}"));
    }
}

impl rdkafka::consumer::ConsumerContext for Errors {}

#[test]
fn tls_settings_reach_librdkafka() {
    // Tansu 0.6 takes `--cert`/`--key` but never wraps its listener in
    // TLS (the acceptor it builds is unused), so what can be shown here is
    // that the settings reach librdkafka: it loads the CA, a TLS client
    // gets nothing from a plaintext listener (Tansu reads the ClientHello
    // as a frame and waits; librdkafka reports the broker down), and a CA
    // that is not there is refused when the client is made.
    let broker = Broker::start();
    broker.create_topic(TOPIC, 3);
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::CertificateParams::new(vec!["flowattr-test-ca".into()])
        .unwrap()
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let tls = KafkaSecurity {
        protocol: Protocol::Ssl,
        ca: Some(ca_file.clone()),
        ..KafkaSecurity::default()
    };
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.address())
        .set("socket.connection.setup.timeout.ms", "1000")
        .set("log_level", "7")
        .set("debug", "security,broker");
    tls.resolve().unwrap().apply(&mut config);
    let errors = Errors::default();
    let consumer = BaseConsumer::from_config_and_context(&config, errors.clone()).unwrap();
    assert!(
        consumer
            .fetch_metadata(None, Duration::from_secs(3))
            .is_err(),
        "a TLS client got metadata from a plaintext listener"
    );
    // Client errors come as events of the consumer's queue.
    for _ in 0..30 {
        let _ = consumer.poll(Duration::from_millis(100));
    }
    let seen = errors.0.lock().unwrap().join("\n");
    // librdkafka was built with TLS and SCRAM, and loaded our CA.
    assert!(
        seen.contains("builtin.features") && seen.contains("ssl") && seen.contains("sasl_scram"),
        "{seen}"
    );
    assert!(
        seen.contains(&format!(
            "Loading CA certificate(s) from file {}",
            ca_file.display()
        )),
        "the CA setting did not reach librdkafka: {seen}"
    );

    // The sharing itself over TLS to the plaintext listener: it starts, but
    // never reaches the broker, while a plaintext one does.
    let sharing_tls = KafkaSharing::new(
        SharingConfig {
            security: tls.clone(),
            ..SharingConfig::new(broker.address(), TOPIC)
        },
        "collector-tls",
    )
    .unwrap();
    let mut plain =
        KafkaSharing::new(SharingConfig::new(broker.address(), TOPIC), "collector-p").unwrap();
    plain.warm_up(WAIT).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let c = sharing_tls.counters();
    assert!(!c.broker_up && !c.warmed_up, "{c:?}");

    let missing = KafkaSecurity {
        ca: Some(dir.path().join("no-such-ca.pem")),
        ..tls
    };
    let err = KafkaSharing::new(
        SharingConfig {
            security: missing,
            ..SharingConfig::new(broker.address(), TOPIC)
        },
        "collector-bad-ca",
    )
    .err()
    .expect("a missing CA is refused");
    assert!(matches!(err, SharingError::Client(_)), "{err}");
    assert!(
        err.to_string().contains("no-such-ca") || format!("{err:?}").contains("ssl"),
        "{err:?}"
    );
}
