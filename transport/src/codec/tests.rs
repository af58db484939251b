//! Round trips, schema evolution and every decode error.

#[path = "../../tests/common/generate.rs"]
#[allow(dead_code)]
mod generate;

use std::sync::Arc;

use flowattr_model::{
    AttributedFlow, Attribution, AttributionSource, BatchId, Flow, FlowBatch, Side, TimeRange,
    UnattributedReason, Workload,
};
use prost::Message as _;

use super::{wire::*, *};

const MAX: usize = DEFAULT_MAX_FRAME_BYTES;

fn encoded(batch: &FlowBatch) -> Vec<u8> {
    let mut out = Vec::new();
    encode_batch(batch, &mut out).unwrap();
    out
}

/// A frame of `msg` as an encoder of another schema would write it.
fn frame_of(msg: &impl prost::Message) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

fn batch_msg(batch: &FlowBatch) -> BatchMsg {
    convert::batch_to_msg(batch)
}

fn frame_msg(batch: BatchMsg) -> FrameMsg {
    FrameMsg {
        version: PROTOCOL_VERSION,
        body: Some(Body::Batch(batch)),
        sent_ns: None,
    }
}

#[test]
fn many_generated_batches_round_trip_exactly() {
    let mut flows = 0;
    for seed in 0..200 {
        let batch = generate::batch(
            seed,
            seed * 7,
            (seed as usize * 13) % 300,
            1 + seed as usize % 5,
        );
        flows += batch.flows.len();
        let bytes = encoded(&batch);
        let back = decode_frame(&bytes, MAX).unwrap();
        assert_eq!(back, Frame::Batch(batch), "seed {seed}");
    }
    assert!(flows > 20_000);
}

/// `batch` with record ids on some of its flows, as a collector forwards
/// them (every other flow, and the extremes).
fn with_record_ids(mut batch: FlowBatch) -> FlowBatch {
    for (i, f) in batch.flows.iter_mut().enumerate() {
        f.record_id = match i % 4 {
            0 => 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(i as u64 + 1) | 1,
            1 => u64::MAX,
            2 => 1,
            _ => 0,
        };
    }
    batch
}

#[test]
fn record_ids_round_trip_and_are_written_only_when_assigned() {
    for seed in 0..50 {
        let batch = with_record_ids(generate::batch(seed, seed, 40 + seed as usize, 3));
        let back = decode_frame(&encoded(&batch), MAX).unwrap();
        assert_eq!(back, Frame::Batch(batch), "seed {seed}");
    }
    // An agent's batch (no ids) carries no record id field: not a byte more.
    let plain = generate::batch(3, 1, 100, 2);
    assert!(plain.flows.iter().all(|f| f.record_id == 0));
    let msg = batch_msg(&plain);
    assert!(msg.flows.iter().all(|f| f.record_id.is_none()));
    let ids = with_record_ids(plain.clone());
    // Each id: a 2-byte key (tag 20, fixed64) and 8 bytes.
    for ((with, without), f) in batch_msg(&ids).flows.iter().zip(&msg.flows).zip(&ids.flows) {
        let extra = if f.record_id == 0 { 0 } else { 10 };
        assert_eq!(with.encoded_len(), without.encoded_len() + extra);
    }
    // What an older version 2 peer (without the field) writes is read as
    // unassigned, and what it would skip is only the new field.
    let mut old = batch_msg(&ids);
    for f in &mut old.flows {
        f.record_id = None;
    }
    let Frame::Batch(back) = decode_frame(&frame_of(&frame_msg(old)), MAX).unwrap() else {
        panic!("a batch");
    };
    assert_eq!(back, plain);
}

#[test]
fn ipv4_mapped_ipv6_with_scope_stays_ipv6() {
    let local = "[::ffff:10.0.0.1%3]:80"
        .parse::<std::net::SocketAddr>()
        .unwrap();
    let mut flow = Flow::tcp(local, "10.0.0.1:80".parse().unwrap(), 7);
    if let std::net::SocketAddr::V6(v6) = &mut flow.local {
        v6.set_flowinfo(0xabcde);
    }
    let batch = FlowBatch {
        agent: "a".into(),
        incarnation: 1,
        seq: 2,
        created_ns: 3,
        complete_until_ns: 2,
        flows: vec![AttributedFlow::new(flow)],
    };
    let Frame::Batch(back) = decode_frame(&encoded(&batch), MAX).unwrap() else {
        panic!("not a batch");
    };
    assert!(back.flows[0].flow.local.is_ipv6());
    assert!(back.flows[0].flow.remote.is_ipv4());
    assert_eq!(back, batch);
}

#[test]
fn acks_and_rejects_round_trip() {
    let id = BatchId {
        agent: "agent-é".into(),
        incarnation: u64::MAX,
        seq: 0,
    };
    let mut out = Vec::new();
    encode_ack(&id, &mut out).unwrap();
    assert_eq!(decode_frame(&out, MAX).unwrap(), Frame::Ack(id.clone()));
    for id in [Some(&id), None] {
        for kind in [
            RejectKind::Unspecified,
            RejectKind::Malformed,
            RejectKind::Identity,
        ] {
            let mut out = Vec::new();
            encode_reject(id, kind, "no", &mut out).unwrap();
            let want = Frame::Reject {
                id: id.cloned(),
                kind,
                reason: "no".into(),
            };
            assert_eq!(decode_frame(&out, MAX).unwrap(), want);
        }
    }
}

#[test]
fn a_reject_without_a_kind_or_of_an_unknown_kind_is_unspecified() {
    let reject = |kind: Option<i32>| {
        // An older receiver's reject has no field 3 at all.
        let mut body = FrameMsg {
            version: PROTOCOL_VERSION,
            body: Some(Body::Reject(RejectMsg {
                id: None,
                reason: "no".into(),
                kind: 0,
            })),
            sent_ns: None,
        }
        .encode_to_vec();
        if let Some(kind) = kind {
            // Field 3 of the reject (tag 4): merged into the body.
            let mut extra = RejectMsg {
                id: None,
                reason: String::new(),
                kind,
            }
            .encode_to_vec();
            let mut field = vec![(4 << 3) | 2, extra.len() as u8];
            field.append(&mut extra);
            body.extend(field);
        }
        decode_body(&body).unwrap()
    };
    let unspecified = Frame::Reject {
        id: None,
        kind: RejectKind::Unspecified,
        reason: "no".into(),
    };
    assert_eq!(reject(None), unspecified);
    assert_eq!(reject(Some(77)), unspecified);
    assert!(matches!(
        reject(Some(2)),
        Frame::Reject {
            kind: RejectKind::Identity,
            ..
        }
    ));
}

#[test]
fn workloads_are_written_once_per_batch() {
    let workloads: Vec<Arc<Workload>> = (0..3)
        .map(|i| Arc::new(Workload::with_id(format!("container-unique-name-{i}"))))
        .collect();
    let flows = (0..10_000)
        .map(|i| {
            let mut f = AttributedFlow::new(Flow::tcp(
                "10.0.0.1:1000".parse().unwrap(),
                "10.0.0.2:80".parse().unwrap(),
                i,
            ));
            // Half share the dictionary's Arc, half are equal copies.
            let w = &workloads[i as usize % 3];
            let workload = if i % 2 == 0 {
                w.clone()
            } else {
                Arc::new((**w).clone())
            };
            f.local = Side::Attributed(Attribution {
                workload,
                source: AttributionSource::Capture,
                plugin: "ipman".into(),
                valid: TimeRange::since(0),
            });
            f
        })
        .collect();
    let batch = FlowBatch {
        agent: "a".into(),
        incarnation: 1,
        seq: 1,
        created_ns: 1,
        complete_until_ns: 0,
        flows,
    };
    let bytes = encoded(&batch);
    let needle = b"container-unique-name-";
    let count = bytes.windows(needle.len()).filter(|w| w == needle).count();
    assert_eq!(count, 3);
    let plugin = bytes.windows(5).filter(|w| w == b"ipman").count();
    assert_eq!(plugin, 1);
    assert_eq!(batch_msg(&batch).workloads.len(), 3);
    assert_eq!(decode_frame(&bytes, MAX).unwrap(), Frame::Batch(batch));
}

/// A newer peer's schema: the same messages with fields this version does
/// not know.
mod newer {
    use super::{AddrMsg, BatchIdMsg, SideMsg, WorkloadMsg};

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FrameMsg {
        #[prost(uint32, tag = "1")]
        pub version: u32,
        #[prost(message, optional, tag = "2")]
        pub batch: Option<BatchMsg>,
        /// A new frame field.
        #[prost(string, tag = "9")]
        pub trace_id: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BatchMsg {
        #[prost(message, optional, tag = "1")]
        pub id: Option<BatchIdMsg>,
        #[prost(fixed64, tag = "2")]
        pub created_ns: u64,
        #[prost(message, repeated, tag = "3")]
        pub workloads: Vec<WorkloadMsg>,
        #[prost(string, repeated, tag = "4")]
        pub plugins: Vec<String>,
        #[prost(message, repeated, tag = "5")]
        pub flows: Vec<FlowMsg>,
        #[prost(fixed64, tag = "6")]
        pub complete_until_ns: u64,
        /// A new batch field.
        #[prost(uint64, tag = "7")]
        pub dropped_before: u64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FlowMsg {
        #[prost(int32, tag = "1")]
        pub protocol: i32,
        #[prost(message, optional, tag = "2")]
        pub local: Option<AddrMsg>,
        #[prost(message, optional, tag = "3")]
        pub remote: Option<AddrMsg>,
        #[prost(int32, tag = "4")]
        pub initiator: i32,
        #[prost(int32, tag = "5")]
        pub end_state: i32,
        #[prost(fixed64, tag = "6")]
        pub start_ns: u64,
        #[prost(fixed64, tag = "7")]
        pub end_ns: u64,
        #[prost(uint64, tag = "8")]
        pub bytes_sent: u64,
        #[prost(uint64, tag = "9")]
        pub bytes_received: u64,
        #[prost(uint64, tag = "10")]
        pub packets_sent: u64,
        #[prost(uint64, tag = "11")]
        pub packets_received: u64,
        #[prost(uint32, tag = "12")]
        pub retransmits: u32,
        #[prost(uint32, tag = "13")]
        pub srtt_us: u32,
        #[prost(uint64, tag = "14")]
        pub cgroup_id: u64,
        #[prost(uint64, tag = "15")]
        pub netns_id: u64,
        #[prost(uint32, tag = "16")]
        pub pid: u32,
        #[prost(message, optional, tag = "17")]
        pub local_side: Option<SideMsg>,
        #[prost(message, optional, tag = "18")]
        pub remote_side: Option<SideMsg>,
        #[prost(uint32, tag = "19")]
        pub weight: u32,
        #[prost(fixed64, optional, tag = "20")]
        pub record_id: Option<u64>,
        /// New flow fields: a string, a nested message, a packed list.
        #[prost(string, tag = "21")]
        pub tls_sni: String,
        #[prost(message, optional, tag = "22")]
        pub gateway: Option<AddrMsg>,
        #[prost(uint32, repeated, tag = "23")]
        pub dscp: Vec<u32>,
    }
}

#[test]
fn a_newer_encoder_with_extra_fields_is_decoded() {
    let batch = generate::batch(42, 9, 500, 4);
    let old = batch_msg(&batch);
    let new = newer::FrameMsg {
        version: PROTOCOL_VERSION,
        trace_id: "trace-1".into(),
        batch: Some(newer::BatchMsg {
            id: old.id.clone(),
            created_ns: old.created_ns,
            workloads: old.workloads.clone(),
            plugins: old.plugins.clone(),
            complete_until_ns: old.complete_until_ns,
            dropped_before: 17,
            flows: old
                .flows
                .iter()
                .map(|f| newer::FlowMsg {
                    protocol: f.protocol,
                    local: f.local,
                    remote: f.remote,
                    initiator: f.initiator,
                    end_state: f.end_state,
                    start_ns: f.start_ns,
                    end_ns: f.end_ns,
                    bytes_sent: f.bytes_sent,
                    bytes_received: f.bytes_received,
                    packets_sent: f.packets_sent,
                    packets_received: f.packets_received,
                    retransmits: f.retransmits,
                    srtt_us: f.srtt_us,
                    cgroup_id: f.cgroup_id,
                    netns_id: f.netns_id,
                    pid: f.pid,
                    local_side: f.local_side,
                    remote_side: f.remote_side,
                    weight: f.weight,
                    record_id: f.record_id,
                    tls_sni: "example.org".into(),
                    gateway: f.remote,
                    dscp: vec![1, 2, 3],
                })
                .collect(),
        }),
    };
    let bytes = frame_of(&new);
    assert!(
        bytes.len() > encoded(&batch).len(),
        "the extra fields are on the wire"
    );
    assert_eq!(decode_frame(&bytes, MAX).unwrap(), Frame::Batch(batch));
}

#[test]
fn a_frame_kind_this_version_does_not_know_is_an_error() {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Future {
        #[prost(uint32, tag = "1")]
        version: u32,
        #[prost(string, tag = "5")]
        hello: String,
    }
    let bytes = frame_of(&Future {
        version: PROTOCOL_VERSION,
        hello: "hi".into(),
    });
    assert!(matches!(
        decode_frame(&bytes, MAX),
        Err(DecodeError::UnknownKind)
    ));
}

#[test]
fn every_cut_of_a_frame_is_truncated_and_the_id_is_read_when_present() {
    let batch = generate::batch(7, 3, 20, 2);
    let bytes = encoded(&batch);
    let mut with_id = 0;
    for n in 0..bytes.len() {
        match decode_frame(&bytes[..n], MAX) {
            Err(DecodeError::Truncated { expected, got }) => {
                assert_eq!(got, n);
                assert!(expected > n);
            }
            other => panic!("cut at {n}: {other:?}"),
        }
        if let Some(id) = peek_batch_id(bytes.get(LENGTH_PREFIX..n).unwrap_or_default()) {
            assert_eq!(id, batch.id());
            with_id += 1;
        }
    }
    // Every cut after the id's end reads it.
    assert!(with_id > bytes.len() - 100, "{with_id} of {}", bytes.len());
}

#[test]
fn oversized_frames_are_refused_from_the_prefix() {
    let bytes = encoded(&generate::batch(1, 1, 100, 1));
    let len = bytes.len() - LENGTH_PREFIX;
    let err = decode_frame(&bytes, len - 1).unwrap_err();
    assert!(matches!(err, DecodeError::Oversized { len: l, max } if l == len && max == len - 1));
    assert_eq!(err.class(), ErrorClass::Oversized);
    assert!(body_length(u32::MAX.to_be_bytes(), MAX).is_err());
    assert!(decode_frame(&bytes, len).is_ok());
}

#[test]
fn trailing_bytes_are_malformed() {
    let mut bytes = encoded(&generate::batch(1, 1, 3, 1));
    bytes.push(0);
    let err = decode_frame(&bytes, MAX).unwrap_err();
    assert!(matches!(err, DecodeError::TrailingBytes { extra: 1 }));
    assert_eq!(err.class(), ErrorClass::Malformed);
}

#[test]
fn garbage_is_malformed_and_flipped_bytes_never_panic() {
    let err = decode_body(&[0xff; 32]).unwrap_err();
    assert!(matches!(err, DecodeError::Unwalkable { .. }), "{err:?}");
    assert_eq!(err.class(), ErrorClass::Malformed);
    let bytes = encoded(&with_record_ids(generate::batch(5, 5, 50, 3)));
    let mut rng = generate::Rng(99);
    let mut errors = 0;
    for _ in 0..3_000 {
        let mut body = bytes[LENGTH_PREFIX..].to_vec();
        for _ in 0..1 + rng.below(3) {
            let i = rng.below(body.len() as u64) as usize;
            body[i] ^= 1 << rng.below(8);
        }
        if decode_body(&body).is_err() {
            errors += 1;
        }
        let _ = peek_batch_id(&body);
    }
    assert!(errors > 100, "{errors}");
}

fn with_flow(batch: &FlowBatch, edit: impl FnOnce(&mut BatchMsg)) -> Vec<u8> {
    let mut msg = batch_msg(batch);
    edit(&mut msg);
    frame_of(&frame_msg(msg))
}

fn attributed_batch() -> FlowBatch {
    let mut f = AttributedFlow::new(Flow::tcp(
        "10.0.0.1:1".parse().unwrap(),
        "10.0.0.2:2".parse().unwrap(),
        1,
    ));
    f.local = Side::Attributed(Attribution {
        workload: Arc::new(Workload::with_id("w")),
        source: AttributionSource::Capture,
        plugin: "p".into(),
        valid: TimeRange::since(0),
    });
    FlowBatch {
        agent: "a".into(),
        incarnation: 1,
        seq: 4,
        created_ns: 1,
        complete_until_ns: 1,
        flows: vec![f],
    }
}

#[test]
fn bad_enum_values_are_typed_errors_and_the_id_is_still_read() {
    let batch = attributed_batch();
    for (edit, want) in [
        (
            Box::new(|m: &mut BatchMsg| m.flows[0].protocol = 9) as Box<dyn Fn(&mut BatchMsg)>,
            "flow.protocol",
        ),
        (
            Box::new(|m: &mut BatchMsg| m.flows[0].initiator = -1),
            "flow.initiator",
        ),
        (
            Box::new(|m: &mut BatchMsg| m.flows[0].end_state = 5),
            "flow.end_state",
        ),
        (
            Box::new(|m: &mut BatchMsg| m.flows[0].local_side.as_mut().unwrap().source = 5),
            "side.source",
        ),
        (
            Box::new(|m: &mut BatchMsg| m.flows[0].local_side.as_mut().unwrap().kind = 3),
            "flow.local_side",
        ),
        (
            Box::new(|m: &mut BatchMsg| {
                m.flows[0].remote_side = Some(SideMsg {
                    kind: SideKind::Unattributed as i32,
                    reason: 8,
                    ..SideMsg::default()
                })
            }),
            "side.reason",
        ),
    ] {
        let bytes = with_flow(&batch, edit);
        match decode_frame(&bytes, MAX) {
            Err(DecodeError::BadEnum { field, .. }) => assert_eq!(field, want),
            other => panic!("{want}: {other:?}"),
        }
        assert_eq!(peek_batch_id(&bytes[LENGTH_PREFIX..]), Some(batch.id()));
    }
}

#[test]
fn dictionary_indexes_out_of_range_are_typed_errors() {
    let batch = attributed_batch();
    let bytes = with_flow(&batch, |m| {
        m.flows[0].local_side.as_mut().unwrap().workload = 1
    });
    assert!(matches!(
        decode_frame(&bytes, MAX),
        Err(DecodeError::IndexOutOfRange {
            field: "side.workload",
            index: 1,
            len: 1
        })
    ));
    let bytes = with_flow(&batch, |m| m.plugins.clear());
    assert!(matches!(
        decode_frame(&bytes, MAX),
        Err(DecodeError::IndexOutOfRange {
            field: "side.plugin",
            index: 0,
            len: 0
        })
    ));
}

#[test]
fn missing_fields_and_bad_ports_are_typed_errors() {
    let batch = attributed_batch();
    let bytes = with_flow(&batch, |m| m.flows[0].remote = None);
    assert!(matches!(
        decode_frame(&bytes, MAX),
        Err(DecodeError::Missing {
            field: "flow.remote"
        })
    ));
    let bytes = with_flow(&batch, |m| m.id = None);
    assert!(matches!(
        decode_frame(&bytes, MAX),
        Err(DecodeError::Missing { field: "batch.id" })
    ));
    let bytes = with_flow(&batch, |m| m.flows[0].local.as_mut().unwrap().port = 70_000);
    assert!(matches!(
        decode_frame(&bytes, MAX),
        Err(DecodeError::BadValue {
            field: "flow.local",
            value: 70_000
        })
    ));
}

#[test]
fn another_protocol_version_is_refused_even_when_its_body_differs() {
    let batch = attributed_batch();
    let mut msg = frame_msg(batch_msg(&batch));
    msg.version = PROTOCOL_VERSION + 1;
    let err = decode_frame(&frame_of(&msg), MAX).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::WrongVersion {
            got: 3,
            expected: 2
        }
    ));
    assert_eq!(err.class(), ErrorClass::Version);
    // A version 3 whose body this version cannot parse at all.
    let mut body = vec![0x08, 0x03];
    body.extend([0xff; 10]);
    assert!(matches!(
        decode_body(&body),
        Err(DecodeError::WrongVersion { got: 3, .. })
    ));
    // No version at all.
    let mut msg = frame_msg(batch_msg(&batch));
    msg.version = 0;
    assert!(matches!(
        decode_frame(&frame_of(&msg), MAX),
        Err(DecodeError::WrongVersion { got: 0, .. })
    ));
}

/// Version 1's schema: no watermark, no send time, fewer enum values.
mod v1 {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FrameMsg {
        #[prost(uint32, tag = "1")]
        pub version: u32,
        #[prost(message, optional, tag = "2")]
        pub batch: Option<BatchMsg>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct BatchMsg {
        #[prost(message, optional, tag = "1")]
        pub id: Option<super::BatchIdMsg>,
        #[prost(fixed64, tag = "2")]
        pub created_ns: u64,
        #[prost(message, repeated, tag = "3")]
        pub workloads: Vec<super::WorkloadMsg>,
        #[prost(string, repeated, tag = "4")]
        pub plugins: Vec<String>,
        #[prost(message, repeated, tag = "5")]
        pub flows: Vec<super::FlowMsg>,
    }
}

#[test]
fn version_1_frames_spooled_or_journaled_before_an_upgrade_are_still_read() {
    let mut batch = generate::batch(11, 2, 300, 3);
    for f in &mut batch.flows {
        for side in [&mut f.local, &mut f.remote] {
            match side {
                Side::Attributed(a) if a.source == AttributionSource::Counterpart => {
                    a.source = AttributionSource::Resolver;
                }
                Side::Attributed(a) if a.source == AttributionSource::CaptureShared => {
                    a.source = AttributionSource::Capture;
                }
                Side::Unattributed(r @ UnattributedReason::Incomplete) => {
                    *r = UnattributedReason::Gap;
                }
                _ => {}
            }
        }
    }
    let msg = batch_msg(&batch);
    let old = v1::FrameMsg {
        version: 1,
        batch: Some(v1::BatchMsg {
            id: msg.id,
            created_ns: msg.created_ns,
            workloads: msg.workloads,
            plugins: msg.plugins,
            flows: msg.flows,
        }),
    };
    batch.complete_until_ns = 0;
    let bytes = frame_of(&old);
    assert_eq!(decode_frame(&bytes, MAX).unwrap(), Frame::Batch(batch));
    assert_eq!(
        decode_body_stamped(&bytes[LENGTH_PREFIX..]).unwrap().1,
        None
    );
}

#[test]
fn the_new_watermark_and_enum_values_round_trip() {
    let mut batch = attributed_batch();
    batch.complete_until_ns = u64::MAX - 1;
    let mut remote = batch.flows[0].clone();
    remote.remote = Side::Unattributed(UnattributedReason::Incomplete);
    if let Side::Attributed(a) = &mut remote.local {
        a.source = AttributionSource::Counterpart;
    }
    batch.flows.push(remote);
    let bytes = encoded(&batch);
    assert_eq!(
        decode_frame(&bytes, MAX).unwrap(),
        Frame::Batch(batch.clone())
    );
    let msg = batch_msg(&batch);
    assert_eq!(msg.complete_until_ns, u64::MAX - 1);
    let side = msg.flows[1].local_side.unwrap();
    assert_eq!(side.source, SourceMsg::Counterpart as i32);
    let side = msg.flows[1].remote_side.unwrap();
    assert_eq!(side.reason, ReasonMsg::Incomplete as i32);
    // A local side attributed by its port on a shared address keeps saying
    // so: it must never come back as an address-level `capture`.
    let mut shared = attributed_batch();
    if let Side::Attributed(a) = &mut shared.flows[0].local {
        a.source = AttributionSource::CaptureShared;
    }
    let side = batch_msg(&shared).flows[0].local_side.unwrap();
    assert_eq!(side.source, SourceMsg::CaptureShared as i32);
    assert_eq!(side.source, 4);
    assert_eq!(
        decode_frame(&encoded(&shared), MAX).unwrap(),
        Frame::Batch(shared)
    );
    // Every value of both enums has a wire value and comes back.
    for reason in UnattributedReason::ALL {
        let mut b = attributed_batch();
        b.flows[0].remote = Side::Unattributed(reason);
        assert_eq!(decode_frame(&encoded(&b), MAX).unwrap(), Frame::Batch(b));
    }
    for source in AttributionSource::ALL {
        let mut b = attributed_batch();
        if let Side::Attributed(a) = &mut b.flows[0].local {
            a.source = source;
        }
        assert_eq!(decode_frame(&encoded(&b), MAX).unwrap(), Frame::Batch(b));
    }
}

#[test]
fn an_empty_batch_round_trips_with_its_watermark() {
    let mut batch = attributed_batch();
    batch.flows.clear();
    batch.complete_until_ns = 123;
    let bytes = encoded(&batch);
    assert_eq!(
        decode_frame(&bytes, MAX).unwrap(),
        Frame::Batch(batch.clone())
    );
    assert_eq!(peek_batch_id(&bytes[LENGTH_PREFIX..]), Some(batch.id()));
}

#[test]
fn stamping_appends_the_send_time_without_touching_the_body() {
    let batch = generate::batch(3, 1, 40, 2);
    let plain = encoded(&batch);
    let mut stamped = plain.clone();
    stamp_sent(&mut stamped, 1_700_000_000_000_000_000).unwrap();
    assert_eq!(stamped.len(), plain.len() + SENT_STAMP_BYTES);
    assert_eq!(
        stamped[LENGTH_PREFIX..plain.len()],
        plain[LENGTH_PREFIX..],
        "the body is as encoded"
    );
    let (frame, sent) = decode_body_stamped(&stamped[LENGTH_PREFIX..]).unwrap();
    assert_eq!(frame, Frame::Batch(batch.clone()));
    assert_eq!(sent, Some(1_700_000_000_000_000_000));
    assert_eq!(
        decode_frame(&stamped, MAX).unwrap(),
        Frame::Batch(batch.clone())
    );
    assert_eq!(peek_batch_id(&stamped[LENGTH_PREFIX..]), Some(batch.id()));
    // A resend stamps again; the last stamp counts.
    stamp_sent(&mut stamped, 7).unwrap();
    let (_, sent) = decode_body_stamped(&stamped[LENGTH_PREFIX..]).unwrap();
    assert_eq!(sent, Some(7));
    // What prost itself writes for the field is what the stamp writes.
    let mut msg = frame_msg(batch_msg(&batch));
    msg.sent_ns = Some(7);
    let mut reference = Vec::new();
    encode(Body::Batch(batch_msg(&batch)), &mut reference).unwrap();
    stamp_sent(&mut reference, 7).unwrap();
    assert_eq!(FrameMsg::decode(&reference[LENGTH_PREFIX..]).unwrap(), msg);
    // Acks and rejects are not stamped.
    let mut ack = Vec::new();
    encode_ack(&batch.id(), &mut ack).unwrap();
    assert_eq!(decode_body_stamped(&ack[LENGTH_PREFIX..]).unwrap().1, None);
}

#[test]
fn what_is_not_one_whole_frame_is_not_stamped() {
    let plain = encoded(&attributed_batch());
    for bytes in [
        &plain[..2],
        &plain[..plain.len() - 1],
        &[plain.as_slice(), &[0]].concat(),
    ] {
        let mut frame = bytes.to_vec();
        assert!(matches!(
            stamp_sent(&mut frame, 1),
            Err(StampError::NotOneFrame { .. })
        ));
        assert_eq!(frame, bytes, "left as it was");
    }
}

#[test]
fn a_capped_watermark_is_the_batch_s_watermark_and_nothing_else_changes() {
    let mut batch = generate::batch(3, 1, 40, 2);
    batch.complete_until_ns = 1_000;
    let mut frame = encoded(&batch);
    stamp_sent(&mut frame, 9).unwrap();
    cap_watermark(&mut frame, 400).unwrap();
    let (got, sent) = decode_body_stamped(&frame[LENGTH_PREFIX..]).unwrap();
    let mut expected = batch.clone();
    expected.complete_until_ns = 400;
    assert_eq!(got, Frame::Batch(expected));
    assert_eq!(sent, Some(9));
    assert_eq!(peek_batch_id(&frame[LENGTH_PREFIX..]), Some(batch.id()));
    // Capped again on a resend: the last counts, even 0.
    cap_watermark(&mut frame, 0).unwrap();
    let Frame::Batch(got) = decode_frame(&frame, MAX).unwrap() else {
        panic!("a batch");
    };
    assert_eq!(
        (got.complete_until_ns, got.flows.len()),
        (0, batch.flows.len())
    );
}

fn limited(bytes: &[u8], limits: &DecodeLimits) -> Result<Frame, DecodeError> {
    decode_body_limited(&bytes[LENGTH_PREFIX..], limits).map(|(f, _)| f)
}

#[test]
fn a_batch_over_any_decoding_limit_is_refused_before_decoding_and_its_id_read() {
    let batch = generate::batch(7, 7, 50, 4);
    let bytes = encoded(&batch);
    let loose = DecodeLimits::default();
    assert_eq!(
        limited(&bytes, &loose).unwrap(),
        Frame::Batch(batch.clone())
    );
    let over = |edit: fn(&mut DecodeLimits), what: &str| {
        let mut limits = loose;
        edit(&mut limits);
        match limited(&bytes, &limits) {
            Err(e @ DecodeError::OverLimit { what: w, .. }) => {
                assert!(w.contains(what), "{e}");
                assert_eq!(e.class(), ErrorClass::Limit);
            }
            other => panic!("{what}: {other:?}"),
        }
    };
    over(|l| l.max_flows = 49, "flows");
    over(|l| l.max_workloads = 3, "workloads");
    over(|l| l.max_plugins = 1, "plugin names");
    over(|l| l.max_labels = 1, "labels");
    over(|l| l.max_string_bytes = 8, "bytes of a string");
    // Exactly at the limits passes.
    let exact = DecodeLimits {
        max_flows: 50,
        ..loose
    };
    assert!(limited(&bytes, &exact).is_ok());
    assert_eq!(peek_batch_id(&bytes[LENGTH_PREFIX..]), Some(batch.id()));
}

#[test]
fn a_frame_of_empty_flows_is_refused_by_count_not_decoded() {
    // 16 MiB of two-byte empty flows: 8 million of them, which prost would
    // decode into gigabytes before any check.
    let mut batch = vec![0x0a, 0x03, 0x0a, 0x01, b'a'];
    let flows = (DEFAULT_MAX_FRAME_BYTES - 64) / 2;
    batch.reserve(flows * 2);
    for _ in 0..flows {
        batch.extend([0x2a, 0x00]);
    }
    let mut body = vec![0x08, PROTOCOL_VERSION as u8, 0x12];
    let mut len = batch.len();
    while len >= 0x80 {
        body.push((len as u8) | 0x80);
        len >>= 7;
    }
    body.push(len as u8);
    body.extend(batch);
    let started = std::time::Instant::now();
    let error = decode_body(&body).unwrap_err();
    assert!(
        matches!(
            error,
            DecodeError::OverLimit {
                what: "flows in a batch",
                count: 100_001,
                max: 100_000
            }
        ),
        "{error}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

#[test]
fn fields_the_walk_cannot_read_are_malformed_and_overlong_varints_too() {
    // A batch whose inner field runs past its end.
    let body = [0x08, 0x02, 0x12, 0x02, 0x2a, 0x05];
    assert!(matches!(
        decode_body(&body),
        Err(DecodeError::Unwalkable { message: "batch" })
    ));
    // A version varint of eleven bytes.
    let mut body = vec![0x08];
    body.extend([0xff; 10]);
    body.push(0x01);
    assert_eq!(
        decode_body(&body).unwrap_err().class(),
        ErrorClass::Malformed
    );
}
