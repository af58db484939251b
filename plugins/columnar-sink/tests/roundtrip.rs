//! Chunks through the SDK harness and back through `decode`: generated
//! flows round-trip exactly, the README's worked example is byte for byte
//! what the writer produces, and truncated or corrupted chunks are refused
//! with a typed error instead of a panic.

mod common;

use std::sync::Arc;

use columnar_sink::{CONTENT_TYPE, ColumnarSink, DecodeError, decode, decode_chunk};
use common::{realistic, unshared, varied, without_process};
use flowattr_sdk::testing::Harness;
use flowattr_sdk::{
    AttributedFlow, Attribution, AttributionSource, Flow, Initiator, Side, SinkPlugin, TimeRange,
    UnattributedReason, Workload,
};

fn format(config: &str, flows: &[AttributedFlow]) -> Vec<u8> {
    Harness::<ColumnarSink>::new(config)
        .unwrap()
        .format(flows)
        .unwrap()
}

#[test]
fn generated_flows_round_trip_exactly() {
    for (seed, n, workloads) in [
        (1, 0, 1),
        (2, 1, 1),
        (3, 2, 3),
        (4, 1_000, 5),
        (5, 5_000, 200),
    ] {
        let flows = varied(seed, n, workloads);
        let chunk = format("{}", &flows);
        let back = decode(&chunk).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        assert_eq!(back.len(), flows.len(), "seed {seed}");
        for (i, (got, want)) in back.iter().zip(&flows).enumerate() {
            assert_eq!(got, want, "seed {seed}, flow {i}");
        }
    }
    let flows = realistic(6, 10_000, 50);
    assert_eq!(decode(&format("{}", &flows)).unwrap(), flows);
}

#[test]
fn without_process_columns_the_fields_read_as_zero() {
    let flows = varied(7, 500, 10);
    let chunk = format(r#"{"include_process": false}"#, &flows);
    assert_eq!(chunk[5], 0, "flag bit 0 clear");
    assert_eq!(decode(&chunk).unwrap(), without_process(&flows));
    assert_eq!(format("{}", &flows)[5], 1, "flag bit 0 set by default");
}

#[test]
fn a_workload_is_stored_once_however_many_copies_arrive() {
    let flows = realistic(8, 2_000, 20);
    let copies = unshared(&flows);
    let chunk = format("{}", &flows);
    assert_eq!(
        format("{}", &copies),
        chunk,
        "the same bytes from shared and unshared workloads"
    );
    // 20 workloads plus 5 load balancers seen remotely: far fewer than the flows.
    let workloads = dictionary_sizes(&chunk).1;
    assert!((21..=25).contains(&workloads), "{workloads} workloads");
}

#[test]
fn chunks_written_back_to_back_read_as_one_list() {
    let (a, b) = (varied(9, 300, 4), realistic(10, 700, 30));
    let mut bytes = format("{}", &a);
    let first_len = bytes.len();
    bytes.extend(format(r#"{"include_process": false}"#, &b));
    let mut both = a.clone();
    both.extend(without_process(&b));
    assert_eq!(decode(&bytes).unwrap(), both);
    let (first, rest) = decode_chunk(&bytes).unwrap();
    assert_eq!(first, a);
    assert_eq!(rest.len(), bytes.len() - first_len);
    assert_eq!(decode(&[]).unwrap(), vec![]);
}

#[test]
fn content_type_and_config_refusals() {
    let mut h = Harness::<ColumnarSink>::new("{}").unwrap();
    assert_eq!(h.plugin_mut().content_type(), CONTENT_TYPE);
    assert_eq!(CONTENT_TYPE, "application/x-flowattr-columnar");
    for (config, want) in [
        (
            r#"{"include_proces": false}"#,
            "unknown field `include_proces`, expected `include_process`",
        ),
        (
            r#"{"include_process": 1}"#,
            "invalid type: integer `1`, expected a boolean",
        ),
    ] {
        let err = Harness::<ColumnarSink>::new(config).err().expect(config);
        assert!(err.starts_with("invalid config: "), "{config}: {err}");
        assert!(err.contains(want), "{config}: {err}");
    }
}

/// The README's worked example.
fn example() -> AttributedFlow {
    let mut flow = Flow::tcp(
        "10.0.0.1:40000".parse().unwrap(),
        "[2001:db8::2]:443".parse().unwrap(),
        1_714_564_800_000_000_000,
    );
    flow.end_ns = flow.start_ns + 1_500_000;
    flow.initiator = Initiator::Local;
    (flow.bytes_sent, flow.bytes_received) = (1200, 5400);
    (flow.packets_sent, flow.packets_received) = (10, 12);
    flow.srtt_us = 250;
    (flow.pid, flow.cgroup_id, flow.netns_id) = (4242, 7, 4_026_531_840);
    AttributedFlow {
        flow,
        local: Side::Attributed(Attribution {
            workload: Arc::new(Workload {
                app: Some("web".into()),
                ..Workload::with_id("web-1")
            }),
            source: AttributionSource::Capture,
            plugin: "ipman".into(),
            valid: TimeRange::since(1_714_564_700_000_000_000),
        }),
        remote: Side::Unattributed(UnattributedReason::NotFound),
        weight: 1,
        record_id: 0x5d6c_620e_8e66_909b,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_readme_example_is_byte_for_byte_what_is_written() {
    let want = concat!(
        // header: magic, version 3, flags (process), 1 row, body length 137
        "4641434c",
        "03",
        "01",
        "01000000",
        "89000000",
        // plugins: 1, "ipman"
        "01",
        "05",
        "69706d616e",
        // workloads: 1, "web-1", mask (app), "web", 0 labels
        "01",
        "05",
        "7765622d31",
        "01",
        "03",
        "776562",
        "00",
        // attributions: 1, workload 0, capture, plugin 0, valid start, valid end (open)
        "01",
        "00",
        "00",
        "00",
        "80b0b2ffaaf0d6e517",
        "ffffffffffffffffff01",
        // start_ns (zigzag delta from 0), duration_ns (zigzag 1,500,000)
        "09",
        "80809c86bfe6adcb2f",
        "04",
        "c08db701",
        // protocol tcp, initiator local, end_state closed, families (remote is IPv6)
        "01",
        "00",
        "01",
        "00",
        "01",
        "00",
        "01",
        "02",
        // local_v4 10.0.0.1, local_v6 empty, remote_v4 empty, remote_v6 2001:db8::2
        "04",
        "0a000001",
        "00",
        "00",
        "10",
        "20010db8000000000000000000000002",
        // local_port 40000, remote_port 443 (u16 little-endian)
        "02",
        "409c",
        "02",
        "bb01",
        // bytes 1200, 5400; packets 10, 12; retransmits 0; srtt_us 250
        "02",
        "b009",
        "02",
        "982a",
        "01",
        "0a",
        "01",
        "0c",
        "01",
        "00",
        "02",
        "fa01",
        // pid 4242, cgroup_id 7, netns_id 4026531840
        "02",
        "9221",
        "01",
        "07",
        "05",
        "808080800f",
        // weight 1, local side attribution 0 (code 9), remote side not-found (code 1)
        "01",
        "01",
        "01",
        "09",
        "01",
        "01",
        // record_id 0x5d6c620e8e66909b (u64 little-endian)
        "08",
        "9b90668e0e626c5d",
    );
    let chunk = format("{}", &[example()]);
    assert_eq!(hex(&chunk), want);
    assert_eq!(decode(&chunk).unwrap(), vec![example()]);
}

/// Plugin and workload dictionary sizes of a chunk.
fn dictionary_sizes(chunk: &[u8]) -> (u64, u64) {
    fn varint(b: &[u8], at: &mut usize) -> u64 {
        let (mut v, mut shift) = (0, 0);
        loop {
            let byte = b[*at];
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return v;
            }
            shift += 7;
        }
    }
    let mut at = 14;
    let plugins = varint(chunk, &mut at);
    for _ in 0..plugins {
        at += varint(chunk, &mut at) as usize;
    }
    (plugins, varint(chunk, &mut at))
}

#[test]
fn every_truncation_is_an_error() {
    let mut flows = varied(11, 40, 6);
    flows.push(example());
    let chunk = format("{}", &flows);
    // (An empty input is no chunks at all, and reads as no flows.)
    for len in 1..chunk.len() {
        assert!(
            decode(&chunk[..len]).is_err(),
            "a chunk cut to {len} bytes read"
        );
    }
    // A cut at the very start reports the header, later cuts the body.
    assert!(matches!(
        decode(&chunk[..10]),
        Err(DecodeError::Truncated {
            what: "chunk header",
            ..
        })
    ));
    assert!(matches!(
        decode(&chunk[..100]),
        Err(DecodeError::Truncated {
            what: "chunk body",
            ..
        })
    ));
}

#[test]
fn corrupted_chunks_never_panic() {
    let chunk = format("{}", &varied(12, 30, 5));
    let mut rng = common::Rng::new(99);
    let mut refused = 0;
    for _ in 0..20_000 {
        let mut bad = chunk.clone();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bad.len() as u64) as usize;
            bad[at] = rng.next() as u8;
        }
        refused += usize::from(decode(&bad).is_err());
    }
    assert!(refused > 10_000, "most corruptions are caught: {refused}");
    for len in 1..2_000 {
        let garbage: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        assert!(decode(&garbage).is_err());
        let mut headed = b"FACL\x03\x01".to_vec();
        headed.extend(&garbage);
        let _ = decode(&headed);
    }
}

/// Where `pattern` first occurs in `bytes`.
fn find(bytes: &[u8], pattern: &[u8]) -> usize {
    bytes
        .windows(pattern.len())
        .position(|w| w == pattern)
        .expect("pattern present")
}

/// `chunk` with its byte at `at` set to `value`.
fn with(chunk: &[u8], at: usize, value: u8) -> Vec<u8> {
    let mut c = chunk.to_vec();
    c[at] = value;
    c
}

#[test]
fn each_kind_of_damage_has_its_own_error() {
    let chunk = format("{}", &[example()]);
    let e = |bytes: &[u8]| decode(bytes).unwrap_err();
    assert_eq!(
        e(&with(&chunk, 0, b'X')),
        DecodeError::BadMagic {
            offset: 0,
            found: *b"XACL"
        }
    );
    assert_eq!(
        e(&with(&chunk, 4, 4)),
        DecodeError::UnsupportedVersion {
            offset: 0,
            version: 4
        }
    );
    assert_eq!(
        e(&with(&chunk, 5, 0x81)),
        DecodeError::UnknownFlags {
            offset: 0,
            flags: 0x81
        }
    );
    assert!(matches!(
        e(&with(&chunk, 6, 200)),
        DecodeError::CountTooLarge {
            what: "rows",
            count: 200,
            ..
        }
    ));
    // The attribution's workload index (byte 35) points past the one workload.
    assert_eq!(
        e(&with(&chunk, 35, 1)),
        DecodeError::IndexOutOfRange {
            offset: 35,
            what: "attribution workload",
            index: 1,
            len: 1
        }
    );
    // The attribution's source (byte 36) is not one of the five.
    assert_eq!(
        e(&with(&chunk, 36, 5)),
        DecodeError::InvalidValue {
            offset: 36,
            what: "attribution source",
            value: 5
        }
    );
    // The protocol column's byte is not tcp or udp.
    let protocol = find(&chunk, &[1, 0, 1, 0, 1, 0, 1, 2]) + 1;
    assert_eq!(
        e(&with(&chunk, protocol, 7)),
        DecodeError::InvalidValue {
            offset: protocol,
            what: "protocol",
            value: 7
        }
    );
    // The local side's code names attribution 1 of 1.
    let local_side = chunk.len() - 12;
    assert_eq!(
        e(&with(&chunk, local_side, 10)),
        DecodeError::IndexOutOfRange {
            offset: local_side,
            what: "local_side",
            index: 1,
            len: 1
        }
    );
    // A byte more than the header says: a second chunk that is not one.
    let mut longer = chunk.clone();
    longer.push(0);
    assert!(matches!(e(&longer), DecodeError::Truncated { .. }));
    // The body is one byte longer than its sections.
    let mut padded = chunk.clone();
    padded.push(0);
    padded[10] += 1;
    assert_eq!(
        e(&padded),
        DecodeError::BodyLength {
            offset: 0,
            declared: 138,
            used: 137
        }
    );
    // The weight column declares 2 bytes but its one row takes 1.
    let mut long_column = chunk.clone();
    let weight = chunk.len() - 15;
    long_column[weight] = 2;
    long_column.insert(weight + 2, 0);
    long_column[10] += 1;
    assert_eq!(
        e(&long_column),
        DecodeError::ColumnLength {
            offset: weight,
            column: "weight",
            declared: 2,
            used: 1
        }
    );
    // Messages say where and what.
    assert_eq!(
        e(&with(&chunk, 36, 5)).to_string(),
        "attribution source at byte 36: 5 is not a valid value"
    );
}

#[test]
fn a_format_2_chunk_reads_with_unassigned_record_ids() {
    // Format 2 is format 3 without the record id column (the last one).
    let v3 = format("{}", &[example()]);
    let mut v2 = v3[..v3.len() - 9].to_vec();
    v2[4] = 2;
    v2[10] -= 9;
    let mut want = example();
    want.record_id = 0;
    assert_eq!(decode(&v2).unwrap(), vec![want]);
    // A format 3 chunk cut before the column is short, not a format 2 one.
    assert!(decode(&v3[..v3.len() - 9]).is_err());
}

#[test]
fn record_ids_and_community_ids_read_back() {
    let flows = realistic(14, 1_000, 20);
    let back = decode(&format("{}", &flows)).unwrap();
    let ids: std::collections::HashSet<u64> = back.iter().map(|f| f.record_id).collect();
    assert_eq!(ids.len(), flows.len(), "one batch: every id distinct");
    for (got, want) in back.iter().zip(&flows) {
        assert_eq!(got.record_id, want.record_id);
        // The Community ID is computed from the columns it hashes.
        assert_eq!(
            columnar_sink::community_id(&got.flow),
            flowattr_sdk::community_id(&want.flow)
        );
    }
    assert!(
        back.iter()
            .all(|f| columnar_sink::community_id(&f.flow).is_some())
    );
}

#[test]
fn labels_out_of_order_are_refused() {
    let mut f = example();
    if let Side::Attributed(a) = &mut f.local {
        Arc::make_mut(&mut a.workload).labels =
            [("a".to_string(), "1".to_string()), ("b".into(), "2".into())].into();
    }
    let chunk = format("{}", &[f]);
    // Swap the keys "a" and "b" in place: the second label is out of order.
    let at = find(&chunk, b"\x01a\x011\x01b\x012");
    let mut swapped = chunk.clone();
    swapped[at + 1] = b'b';
    swapped[at + 5] = b'a';
    assert_eq!(
        decode(&swapped).unwrap_err(),
        DecodeError::LabelsOutOfOrder { offset: at + 4 }
    );
}

#[test]
fn realistic_batch_is_a_fraction_of_its_json_lines() {
    let flows = realistic(13, 10_000, 50);
    let columnar = format("{}", &flows).len();
    let jsonl = Harness::<jsonl_sink::JsonlSink>::new("{}")
        .unwrap()
        .format(&flows)
        .unwrap()
        .len();
    let ratio = jsonl as f64 / columnar as f64;
    println!(
        "10,000 flows, 50 workloads: jsonl {jsonl} bytes ({:.0}/flow), columnar {columnar} bytes ({:.1}/flow), {ratio:.1}x smaller",
        jsonl as f64 / 1e4,
        columnar as f64 / 1e4
    );
    assert!(ratio > 10.0, "columnar is only {ratio:.1}x smaller");
    // 55 bytes a flow, and 8 for its record id.
    assert!(columnar < 72 * flows.len(), "{columnar} bytes");
}
