use std::{collections::BTreeMap, sync::Arc};

use flowattr_model::{TimeRange, Workload};

use super::*;

fn update(ip: &str, id: &str, start: u64, end: u64, claimant: &str) -> RangeUpdate {
    RangeUpdate {
        ip: ip.parse().unwrap(),
        workload: Arc::new(Workload::with_id(id)),
        range: TimeRange::new(start, end),
        claimant: claimant.into(),
    }
}

fn decode_str(key: &str, payload: &str) -> Result<Decoded, DecodeError> {
    decode(Some(key.as_bytes()), payload.as_bytes())
}

fn reason(key: &str, payload: &str) -> MalformedReason {
    decode_str(key, payload).unwrap_err().reason()
}

#[test]
fn round_trip_coalesces_per_address_in_order() {
    let full = Arc::new(Workload {
        id: "api-1".into(),
        app: Some("api".into()),
        cluster: Some("api-prod".into()),
        stack: Some("prod".into()),
        account: Some("123".into()),
        region: Some("eu-west-1".into()),
        labels: BTreeMap::from([("team".into(), "edge".into())]),
    });
    let mut a = update("10.0.0.9", "db-1", 5, 9, "agent-2");
    a.workload = full.clone();
    let updates = vec![
        a.clone(),
        update("10.0.0.7", "api-1", 100, 160, "agent-1"),
        update("fd00::1", "web-1", 1, 2, "agent-3"),
        update("10.0.0.7", "web-2", 300, 400, "agent-1"),
    ];
    let messages = encode("collector-a", &updates);
    let keys: Vec<_> = messages.iter().map(|m| m.key.as_str()).collect();
    assert_eq!(keys, ["10.0.0.7", "10.0.0.9", "fd00::1"]);

    let first = decode(Some(b"10.0.0.7"), &messages[0].payload).unwrap();
    assert_eq!(&*first.origin, "collector-a");
    assert_eq!(first.updates, vec![updates[1].clone(), updates[3].clone()]);
    let second = decode(Some(b"10.0.0.9"), &messages[1].payload).unwrap();
    assert_eq!(second.updates, vec![a]);
    assert_eq!(*second.updates[0].workload, *full);
    let third = decode(Some(b"fd00::1"), &messages[2].payload).unwrap();
    assert_eq!(third.updates, vec![updates[2].clone()]);
}

#[test]
fn ipv4_mapped_addresses_are_keyed_as_ipv4() {
    let messages = encode("c", &[update("::ffff:10.1.2.3", "w", 1, 2, "a")]);
    assert_eq!(messages[0].key, "10.1.2.3");
    let d = decode(Some(b"10.1.2.3"), &messages[0].payload).unwrap();
    assert_eq!(d.updates[0].ip, "10.1.2.3".parse::<IpAddr>().unwrap());
    // A key naming the same address in the mapped form matches too.
    assert!(decode(Some(b"::ffff:10.1.2.3"), &messages[0].payload).is_ok());
}

#[test]
fn many_ranges_of_one_address_are_split_under_the_bound() {
    let updates: Vec<_> = (0..MAX_RANGES_PER_MESSAGE as u64 * 2 + 1)
        .map(|i| update("10.0.0.1", "w", i * 10, i * 10 + 5, "a"))
        .collect();
    let messages = encode("c", &updates);
    assert_eq!(messages.len(), 3);
    let back: Vec<_> = messages
        .iter()
        .flat_map(|m| decode(Some(m.key.as_bytes()), &m.payload).unwrap().updates)
        .collect();
    assert_eq!(back, updates);
}

#[test]
fn ranges_of_one_workload_share_one_arc() {
    let messages = encode(
        "c",
        &[
            update("10.0.0.1", "w", 1, 2, "a"),
            update("10.0.0.1", "w", 5, 6, "a"),
        ],
    );
    let d = decode(Some(b"10.0.0.1"), &messages[0].payload).unwrap();
    assert!(Arc::ptr_eq(&d.updates[0].workload, &d.updates[1].workload));
    assert!(Arc::ptr_eq(&d.updates[0].claimant, &d.updates[1].claimant));
}

const GOOD: &str = r#"{"v":1,"origin":"c","ip":"10.0.0.1","ranges":[{"workload":{"id":"w"},"start_ns":1,"end_ns":2,"claimant":"a"}]}"#;

#[test]
fn unknown_fields_are_ignored() {
    assert!(decode_str("10.0.0.1", GOOD).is_ok());
    let newer = r#"{"v":1,"origin":"c","ip":"10.0.0.1","extra":{"x":[1]},"ranges":[
        {"workload":{"id":"w","team":"edge"},"start_ns":1,"end_ns":2,"claimant":"a","confidence":0.9}]}"#;
    let d = decode_str("10.0.0.1", newer).unwrap();
    assert_eq!(d.updates[0].workload.id, "w");
}

#[test]
fn versions_other_than_ours_are_refused() {
    let v2 = GOOD.replace(r#""v":1"#, r#""v":2"#);
    assert!(matches!(
        decode_str("10.0.0.1", &v2),
        Err(DecodeError::UnsupportedVersion { found: 2 })
    ));
    // A newer major version is refused as such even if its shape changed.
    assert!(matches!(
        decode_str("10.0.0.1", r#"{"v":7,"everything":"different"}"#),
        Err(DecodeError::UnsupportedVersion { found: 7 })
    ));
    assert!(matches!(
        decode_str("10.0.0.1", &GOOD.replace(r#""v":1,"#, "")),
        Err(DecodeError::MissingVersion)
    ));
    assert_eq!(
        reason("10.0.0.1", &GOOD.replace(r#""v":1"#, r#""v":0"#)),
        MalformedReason::Version
    );
}

#[test]
fn malformed_messages_are_refused_by_reason() {
    let cases = [
        (
            "10.0.0.1",
            "\u{0}\u{1}garbage".to_string(),
            MalformedReason::Syntax,
        ),
        ("10.0.0.1", "[1,2,3]".to_string(), MalformedReason::Syntax),
        (
            "10.0.0.1",
            r#"{"v":1}"#.to_string(),
            MalformedReason::Syntax,
        ),
        (
            "10.0.0.1",
            GOOD.replace(r#""start_ns":1"#, r#""start_ns":-1"#),
            MalformedReason::Syntax,
        ),
        (
            "10.0.0.1",
            GOOD.replace("\"ip\":\"10.0.0.1\"", "\"ip\":\"10.0.0.999\""),
            MalformedReason::Ip,
        ),
        ("10.0.0.2", GOOD.to_string(), MalformedReason::Key),
        ("not-an-ip", GOOD.to_string(), MalformedReason::Key),
        (
            "10.0.0.1",
            GOOD.replace(r#""start_ns":1"#, r#""start_ns":3"#),
            MalformedReason::Range,
        ),
        (
            "10.0.0.1",
            GOOD.replace(r#""id":"w""#, r#""id":"""#),
            MalformedReason::Workload,
        ),
        (
            "10.0.0.1",
            GOOD.replace(r#""workload":{"id":"w"},"#, ""),
            MalformedReason::Syntax,
        ),
        (
            "10.0.0.1",
            GOOD.replace(r#""claimant":"a""#, r#""claimant":"""#),
            MalformedReason::Claimant,
        ),
        (
            "10.0.0.1",
            GOOD.replace(r#""origin":"c""#, r#""origin":"""#),
            MalformedReason::Origin,
        ),
        (
            "10.0.0.1",
            r#"{"v":1,"origin":"c","ip":"10.0.0.1","ranges":[]}"#.to_string(),
            MalformedReason::Empty,
        ),
    ];
    for (key, payload, want) in cases {
        let err = decode_str(key, &payload).expect_err(&payload);
        assert_eq!(err.reason(), want, "{payload}: {err}");
        // Every error reads as a sentence for logs.
        assert!(!err.to_string().is_empty());
    }
    assert_eq!(
        decode(None, GOOD.as_bytes()).unwrap_err().reason(),
        MalformedReason::Key
    );
    assert_eq!(
        decode(Some(&[0xff, 0xfe]), GOOD.as_bytes())
            .unwrap_err()
            .reason(),
        MalformedReason::Key
    );
}

#[test]
fn one_bad_range_refuses_the_whole_message() {
    let two = r#"{"v":1,"origin":"c","ip":"10.0.0.1","ranges":[
        {"workload":{"id":"w"},"start_ns":1,"end_ns":2,"claimant":"a"},
        {"workload":{"id":"w"},"start_ns":9,"end_ns":2,"claimant":"a"}]}"#;
    assert!(matches!(
        decode_str("10.0.0.1", two),
        Err(DecodeError::InvalidRange {
            index: 1,
            start_ns: 9,
            end_ns: 2
        })
    ));
}

#[test]
fn reasons_have_distinct_indices_and_names() {
    for (i, r) in MalformedReason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
    }
    let mut names: Vec<_> = MalformedReason::ALL.iter().map(|r| r.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), MalformedReason::ALL.len());
}
