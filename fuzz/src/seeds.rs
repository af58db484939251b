//! Valid inputs for each target, made by the real encoders (or, for files
//! people write, taken from the repository), so fuzzing starts from inputs
//! that reach deep into each parser.

use std::{collections::BTreeMap, path::Path, sync::Arc};

use flowattr_model::{
    AttributedFlow, Attribution, AttributionSource, Flow, FlowBatch, Side, TimeRange,
    UnattributedReason, Workload,
};

/// The seeds of the target called `name`; `root` is the workspace.
pub fn of(name: &str, root: &Path) -> Vec<Vec<u8>> {
    match name {
        "frame_decoder" => frames(),
        "frame_reader" => frames()
            .into_iter()
            .flat_map(|f| [1u8, 7, 255].map(|chunk| [&[chunk][..], &f].concat()))
            .collect(),
        "sharing_message" => sharing(),
        "manifest" => manifests(root),
        "plugin_answers" => vec![
            vec![0, 3, 1, 2, 3, 4, 1, 0, 5, 0, 2, 7, 1, 1, 2],
            vec![0, 1, 9, 2, 1, 1, 0, 2, 2, 3, 1, 0, 1, 0, 3, 0, 0, 2, 0],
        ],
        "legacy_events" => vec![
            br#"{"address":"10.0.0.1","change":{"assigned":{"id":"w","app":"api"}},"event_time_ns":1,"arrival_time_ns":2}
{"address":"fd00::1","change":"released","event_time_ns":3,"arrival_time_ns":4}
not json
{"address":"10.0.0.1""#
                .to_vec(),
        ],
        "btf" => vec![tiny_btf()],
        _ => Vec::new(),
    }
}

fn batch() -> FlowBatch {
    let workload = Arc::new(Workload {
        id: "api-1".into(),
        app: Some("api".into()),
        labels: BTreeMap::from([("team".into(), "payments".into())]),
        ..Workload::default()
    });
    let mut attributed = AttributedFlow::new(Flow::tcp(
        "10.0.0.1:443".parse().unwrap(),
        "10.0.0.2:51000".parse().unwrap(),
        1_000,
    ));
    attributed.local = Side::Attributed(Attribution {
        workload,
        source: AttributionSource::Capture,
        plugin: "ec2-disk".into(),
        valid: TimeRange::new(0, u64::MAX),
    });
    let mut unattributed = AttributedFlow::new(Flow::tcp(
        "[fd00::1]:80".parse().unwrap(),
        "[fd00::2]:80".parse().unwrap(),
        u64::MAX,
    ));
    unattributed.local = Side::Unattributed(UnattributedReason::NotFound);
    FlowBatch {
        agent: "ip-10-0-0-1".into(),
        incarnation: 7,
        seq: 3,
        created_ns: 2_000,
        complete_until_ns: 1_500,
        flows: vec![attributed, unattributed],
    }
}

fn frames() -> Vec<Vec<u8>> {
    use flowattr_transport::codec;
    let batch = batch();
    let mut out = Vec::new();
    let mut frame = Vec::new();
    codec::encode_batch(&batch, &mut frame).unwrap();
    out.push(frame);
    let mut empty = Vec::new();
    codec::encode_batch(
        &FlowBatch {
            flows: Vec::new(),
            ..batch.clone()
        },
        &mut empty,
    )
    .unwrap();
    out.push(empty);
    let mut ack = Vec::new();
    codec::encode_ack(&batch.id(), &mut ack).unwrap();
    out.push(ack);
    let mut reject = Vec::new();
    codec::encode_reject(
        Some(&batch.id()),
        codec::RejectKind::Malformed,
        "no",
        &mut reject,
    )
    .unwrap();
    out.push(reject);
    out
}

fn sharing() -> Vec<Vec<u8>> {
    use flowattr_collector::completeness::{Mark, SharedMark};
    use flowattr_collector::ownership::RangeUpdate;
    use flowattr_collector::sharing::codec;
    let workload = batch().flows[0].local.clone();
    let Side::Attributed(a) = workload else {
        unreachable!("the batch's first flow is attributed")
    };
    let updates = [
        RangeUpdate {
            ip: "10.0.0.1".parse().unwrap(),
            workload: a.workload.clone(),
            range: TimeRange::new(1, 2),
            claimant: "agent-a".into(),
        },
        RangeUpdate {
            ip: "fd00::1".parse().unwrap(),
            workload: a.workload,
            range: TimeRange::since(3),
            claimant: "agent-b".into(),
        },
    ];
    let marks = [SharedMark {
        claimant: "agent-a".into(),
        mark: Mark {
            watermark_ns: 5,
            heard_ns: 6,
        },
    }];
    codec::encode("c1", &updates)
        .into_iter()
        .chain(codec::encode_marks("c1", &marks))
        .map(|e| {
            let mut m = vec![e.key.len() as u8];
            m.extend_from_slice(e.key.as_bytes());
            m.extend_from_slice(&e.payload);
            m
        })
        .collect()
}

fn manifests(root: &Path) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(root.join("plugins"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter_map(|p| std::fs::read(p).ok())
        .collect();
    out.sort();
    out
}

/// A BTF blob with one struct `sock` whose member `__sk_common` is a struct
/// with a member `skc_net` of an 8-byte int, as the agent looks them up.
fn tiny_btf() -> Vec<u8> {
    let strings = b"\0sock\0__sk_common\0skc_net\0sock_common\0long\0";
    let name = |s: &str| {
        let at = strings
            .windows(s.len() + 2)
            .position(|w| w[0] == 0 && &w[1..=s.len()] == s.as_bytes() && w[s.len() + 1] == 0)
            .unwrap();
        (at + 1) as u32
    };
    let info = |kind: u32, vlen: u32| (kind << 24) | vlen;
    let types: Vec<u32> = vec![
        // 1: int "long", 8 bytes, 64 bits
        name("long"),
        info(1, 0),
        8,
        64,
        // 2: struct sock_common { long skc_net at bit 64 }, 16 bytes
        name("sock_common"),
        info(4, 1),
        16,
        name("skc_net"),
        1,
        64,
        // 3: struct sock { sock_common __sk_common at 0 }, 16 bytes
        name("sock"),
        info(4, 1),
        16,
        name("__sk_common"),
        2,
        0,
    ];
    let type_bytes: Vec<u8> = types.iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut out = Vec::new();
    out.extend_from_slice(&0xeb9f_u16.to_le_bytes());
    out.push(1); // version
    out.push(0); // flags
    let hdr_len = 24u32;
    for w in [
        hdr_len,
        0,
        type_bytes.len() as u32,
        type_bytes.len() as u32,
        strings.len() as u32,
    ] {
        out.extend_from_slice(&w.to_le_bytes());
    }
    out.extend_from_slice(&type_bytes);
    out.extend_from_slice(strings);
    out
}
