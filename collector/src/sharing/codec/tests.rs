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

/// The ranges of a valid range message.
fn ranges(d: Decoded) -> Vec<RangeUpdate> {
    match d.content {
        Content::Ranges(r) => r,
        Content::Marks(m) => panic!("marks, not ranges: {m:?}"),
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
    assert_eq!(ranges(first), vec![updates[1].clone(), updates[3].clone()]);
    let second = ranges(decode(Some(b"10.0.0.9"), &messages[1].payload).unwrap());
    assert_eq!(second, vec![a]);
    assert_eq!(*second[0].workload, *full);
    let third = decode(Some(b"fd00::1"), &messages[2].payload).unwrap();
    assert_eq!(ranges(third), vec![updates[2].clone()]);
}

#[test]
fn ipv4_mapped_addresses_are_keyed_as_ipv4() {
    let messages = encode("c", &[update("::ffff:10.1.2.3", "w", 1, 2, "a")]);
    assert_eq!(messages[0].key, "10.1.2.3");
    let d = ranges(decode(Some(b"10.1.2.3"), &messages[0].payload).unwrap());
    assert_eq!(d[0].ip, "10.1.2.3".parse::<IpAddr>().unwrap());
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
        .flat_map(|m| ranges(decode(Some(m.key.as_bytes()), &m.payload).unwrap()))
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
    let d = ranges(decode(Some(b"10.0.0.1"), &messages[0].payload).unwrap());
    assert!(Arc::ptr_eq(&d[0].workload, &d[1].workload));
    assert!(Arc::ptr_eq(&d[0].claimant, &d[1].claimant));
}

const GOOD: &str = r#"{"v":1,"origin":"c","ip":"10.0.0.1","ranges":[{"workload":{"id":"w"},"start_ns":1,"end_ns":2,"claimant":"a"}]}"#;

#[test]
fn unknown_fields_are_ignored() {
    assert!(decode_str("10.0.0.1", GOOD).is_ok());
    let newer = r#"{"v":1,"origin":"c","ip":"10.0.0.1","extra":{"x":[1]},"ranges":[
        {"workload":{"id":"w","team":"edge"},"start_ns":1,"end_ns":2,"claimant":"a","confidence":0.9}]}"#;
    let d = ranges(decode_str("10.0.0.1", newer).unwrap());
    assert_eq!(d[0].workload.id, "w");
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

fn mark(claimant: &str, watermark_ns: u64, heard_ns: u64) -> SharedMark {
    SharedMark {
        claimant: claimant.into(),
        mark: Mark {
            watermark_ns,
            heard_ns,
        },
    }
}

/// The marks of a valid watermark message.
fn marks(d: Decoded) -> Vec<SharedMark> {
    match d.content {
        Content::Marks(m) => m,
        Content::Ranges(r) => panic!("ranges, not marks: {r:?}"),
    }
}

const GOOD_MARKS: &str =
    r#"{"v":1,"origin":"c","marks":[{"claimant":"a","watermark_ns":5,"heard_ns":7}]}"#;

#[test]
fn marks_round_trip_in_order_under_the_origin_key() {
    let sent = vec![
        mark(
            "agent-2",
            1_767_225_600_000_000_000,
            1_767_225_601_000_000_000,
        ),
        mark("agent-1", 0, 0),
        mark("agent-2", u64::MAX, u64::MAX),
    ];
    let messages = encode_marks("collector-a", &sent);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].key, "marks/collector-a");
    assert_eq!(marks_key("collector-a"), messages[0].key);
    let d = decode(Some(messages[0].key.as_bytes()), &messages[0].payload).unwrap();
    assert_eq!(&*d.origin, "collector-a");
    assert_eq!(marks(d), sent);
    assert!(encode_marks("c", &[]).is_empty());
    let d = decode_str("marks/c", GOOD_MARKS).unwrap();
    assert_eq!(marks(d), vec![mark("a", 5, 7)]);
}

#[test]
fn many_marks_are_split_under_the_bound() {
    let sent: Vec<_> = (0..MAX_MARKS_PER_MESSAGE as u64 * 2 + 1)
        .map(|i| mark(&format!("agent-{i}"), i, i + 1))
        .collect();
    let messages = encode_marks("c", &sent);
    assert_eq!(messages.len(), 3);
    let back: Vec<_> = messages
        .iter()
        .flat_map(|m| marks(decode(Some(m.key.as_bytes()), &m.payload).unwrap()))
        .collect();
    assert_eq!(back, sent);
    // The largest message the limits allow stays far below Kafka's 1 MB.
    let longest: Vec<_> = (0..MAX_MARKS_PER_MESSAGE)
        .map(|i| {
            mark(
                &format!("{i:0>width$}", width = MAX_CLAIMANT_LEN),
                u64::MAX,
                u64::MAX,
            )
        })
        .collect();
    let messages = encode_marks("c", &longest);
    assert_eq!(messages.len(), 1);
    assert!(
        messages[0].payload.len() < 200_000,
        "{}",
        messages[0].payload.len()
    );
    assert_eq!(
        marks(decode(Some(b"marks/c"), &messages[0].payload).unwrap()),
        longest
    );
}

#[test]
fn marks_no_reader_would_take_are_left_out_of_the_encoding() {
    let long = "x".repeat(MAX_CLAIMANT_LEN + 1);
    assert!(!valid_claimant(&long) && !valid_claimant(""));
    assert!(valid_claimant(&long[1..]));
    let messages = encode_marks("c", &[mark("", 1, 1), mark(&long, 1, 1), mark("a", 2, 3)]);
    assert_eq!(messages.len(), 1);
    let d = decode(Some(b"marks/c"), &messages[0].payload).unwrap();
    assert_eq!(marks(d), vec![mark("a", 2, 3)]);
    assert!(encode_marks("c", &[mark("", 1, 1)]).is_empty());
}

#[test]
fn unknown_fields_of_marks_are_ignored() {
    let newer = r#"{"v":1,"origin":"c","region":"eu","marks":[
        {"claimant":"a","watermark_ns":5,"heard_ns":7,"offset_ns":-3,"x":{"y":[1]}}]}"#;
    assert_eq!(
        marks(decode_str("marks/c", newer).unwrap()),
        vec![mark("a", 5, 7)]
    );
    // A newer major version is refused as such.
    assert_eq!(
        reason("marks/c", &GOOD_MARKS.replace(r#""v":1"#, r#""v":2"#)),
        MalformedReason::Version
    );
}

#[test]
fn malformed_watermark_messages_are_refused_by_reason() {
    let long = "x".repeat(MAX_CLAIMANT_LEN + 1);
    let cases = [
        ("marks/d", GOOD_MARKS.to_string(), MalformedReason::Key),
        ("c", GOOD_MARKS.to_string(), MalformedReason::Key),
        ("marks/", GOOD_MARKS.to_string(), MalformedReason::Key),
        ("10.0.0.1", GOOD_MARKS.to_string(), MalformedReason::Key),
        (
            "marks/",
            GOOD_MARKS.replace(r#""origin":"c""#, r#""origin":"""#),
            MalformedReason::Origin,
        ),
        (
            "marks/c",
            GOOD_MARKS.replace(r#""origin":"c","#, ""),
            MalformedReason::Syntax,
        ),
        (
            "marks/c",
            r#"{"v":1,"origin":"c","marks":[]}"#.to_string(),
            MalformedReason::Empty,
        ),
        (
            "marks/c",
            r#"{"v":1,"origin":"c","marks":{"a":1}}"#.to_string(),
            MalformedReason::Syntax,
        ),
        (
            "marks/c",
            GOOD_MARKS.replace(r#""claimant":"a""#, r#""claimant":"""#),
            MalformedReason::Claimant,
        ),
        (
            "marks/c",
            GOOD_MARKS.replace(r#""claimant":"a""#, &format!(r#""claimant":"{long}""#)),
            MalformedReason::Limit,
        ),
        (
            "marks/c",
            GOOD_MARKS.replace(r#""heard_ns":7"#, ""),
            MalformedReason::Syntax,
        ),
        (
            "marks/c",
            GOOD_MARKS.replace(r#""watermark_ns":5"#, r#""watermark_ns":-5"#),
            MalformedReason::Syntax,
        ),
        (
            "marks/c",
            GOOD_MARKS.replace(r#""watermark_ns":5"#, r#""watermark_ns":"5""#),
            MalformedReason::Syntax,
        ),
        // Both kinds at once: which one it is would be a guess.
        (
            "marks/c",
            GOOD_MARKS.replace(r#""origin":"c","#, r#""origin":"c","ip":"10.0.0.1","#),
            MalformedReason::Syntax,
        ),
        (
            "10.0.0.1",
            GOOD.replace(r#""ranges""#, r#""marks":[],"ranges""#),
            MalformedReason::Syntax,
        ),
    ];
    for (key, payload, want) in cases {
        let err = decode_str(key, &payload).expect_err(&payload);
        assert_eq!(err.reason(), want, "{key} {payload}: {err}");
        assert!(!err.to_string().is_empty());
    }
    assert_eq!(
        decode(None, GOOD_MARKS.as_bytes()).unwrap_err().reason(),
        MalformedReason::Key
    );
}

#[test]
fn one_bad_mark_refuses_the_whole_message() {
    let two = r#"{"v":1,"origin":"c","marks":[
        {"claimant":"a","watermark_ns":5,"heard_ns":7},
        {"claimant":"","watermark_ns":5,"heard_ns":7}]}"#;
    assert!(matches!(
        decode_str("marks/c", two),
        Err(DecodeError::EmptyMarkClaimant { index: 1 })
    ));
}

#[test]
fn a_message_with_too_many_marks_is_refused_with_its_count() {
    let one = r#"{"claimant":"a","watermark_ns":5,"heard_ns":7}"#;
    let list = |n: usize| vec![one; n].join(",");
    let at = format!(
        r#"{{"v":1,"origin":"c","marks":[{}]}}"#,
        list(MAX_MARKS_PER_MESSAGE)
    );
    assert_eq!(
        marks(decode_str("marks/c", &at).unwrap()).len(),
        MAX_MARKS_PER_MESSAGE
    );
    let over = format!(
        r#"{{"v":1,"origin":"c","marks":[{}]}}"#,
        list(MAX_MARKS_PER_MESSAGE + 10)
    );
    match decode_str("marks/c", &over) {
        Err(e @ DecodeError::TooManyMarks { count }) => {
            assert_eq!(count, MAX_MARKS_PER_MESSAGE + 10);
            assert_eq!(e.reason(), MalformedReason::Limit);
        }
        other => panic!("{other:?}"),
    }
    // The part past the limit is still checked: bad syntax there is syntax.
    let broken = over.replace(r#"7}]}"#, r#"7},]}"#);
    assert_eq!(reason("marks/c", &broken), MalformedReason::Syntax);
}

#[test]
fn a_reader_from_before_watermarks_refuses_them_as_syntax() {
    // What an older reader does: it knows only range messages. A watermark
    // message has no `ip`, so it is refused whole, never misread.
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct OldMessage {
        v: u64,
        origin: String,
        ip: String,
        ranges: Vec<serde::de::IgnoredAny>,
    }
    let messages = encode_marks("c", &[mark("a", 1, 2)]);
    assert!(serde_json::from_slice::<OldMessage>(&messages[0].payload).is_err());
    assert!(serde_json::from_str::<OldMessage>(GOOD).is_ok());
}
