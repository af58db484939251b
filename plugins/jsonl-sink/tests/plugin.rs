//! The plugin through the SDK harness: every field of every flow read back
//! with serde_json, the exact text of a documented line, config handling.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::{Rng, Shape, flows, read_output, without_process, workloads};
use flowattr_sdk::testing::Harness;
use flowattr_sdk::{
    AttributedFlow, Attribution, AttributionSource, Flow, FlowEnd, Initiator, Side, SinkPlugin,
    TimeRange, UnattributedReason, Workload,
};
use jsonl_sink::{CONTENT_TYPE, JsonlSink};

fn sink(config: &str) -> Harness<JsonlSink> {
    Harness::<JsonlSink>::new(config).unwrap()
}

#[test]
fn every_field_of_every_flow_reads_back_in_each_configuration() {
    let mut rng = Rng::new(7);
    let pool = workloads(&mut rng, 40);
    let input = flows(&mut rng, 3_000, &pool);
    for (config, shape) in [
        ("{}", Shape::DEFAULT),
        (
            r#"{"time_format": "rfc3339"}"#,
            Shape {
                rfc3339: true,
                include_process: true,
            },
        ),
        (
            r#"{"include_process": false}"#,
            Shape {
                rfc3339: false,
                include_process: false,
            },
        ),
        (
            r#"{"include_process": false, "time_format": "rfc3339"}"#,
            Shape {
                rfc3339: true,
                include_process: false,
            },
        ),
    ] {
        let bytes = sink(config).format(&input).unwrap();
        let read = read_output(&bytes, shape);
        let want = if shape.include_process {
            input.clone()
        } else {
            without_process(&input)
        };
        assert_eq!(read.len(), want.len(), "{config}: one line per flow");
        for (i, (got, want)) in read.iter().zip(&want).enumerate() {
            assert_eq!(got, want, "{config}: flow {i}");
        }
    }
}

#[test]
fn workloads_written_once_per_batch_are_still_each_flows_own() {
    let mut rng = Rng::new(11);
    let mut pool = workloads(&mut rng, 30);
    // Two workloads that share an id but differ in an attribute stay apart.
    let mut twin = (*pool[0]).clone();
    twin.app = Some("twin".into());
    pool.push(std::sync::Arc::new(twin));
    let input = flows(&mut rng, 2_000, &pool);
    let mut h = sink("{}");
    let shared = h.format(&input).unwrap();
    assert!(
        shared == h.format(&common::unshared(&input)).unwrap(),
        "equal workloads in separate Arcs write the same bytes"
    );
    assert_eq!(read_output(&shared, Shape::DEFAULT), input);
    let twin_written = read_output(&shared, Shape::DEFAULT).iter().any(
        |f| matches!(&f.local, Side::Attributed(a) if a.workload.app.as_deref() == Some("twin")),
    );
    assert!(twin_written, "the twin was drawn and written as itself");
}

/// The README's example flow.
fn example() -> AttributedFlow {
    let mut flow = Flow::tcp(
        "10.0.0.1:40000".parse().unwrap(),
        "[2001:db8::2]:443".parse().unwrap(),
        1_714_564_800_123_456_789,
    );
    flow.end_ns = 1_714_564_801_123_456_789;
    flow.initiator = Initiator::Local;
    flow.end_state = FlowEnd::Closed;
    (flow.bytes_sent, flow.bytes_received) = (1200, 5400);
    (flow.packets_sent, flow.packets_received) = (10, 12);
    (flow.retransmits, flow.srtt_us) = (1, 250);
    (flow.pid, flow.cgroup_id, flow.netns_id) = (4242, 7, 4_026_531_840);
    let web = Workload {
        app: Some("web".into()),
        region: Some("us-east-1".into()),
        labels: BTreeMap::from([("team".into(), "edge".into())]),
        ..Workload::with_id("web-1")
    };
    AttributedFlow {
        flow,
        local: Side::Attributed(Attribution {
            workload: Arc::new(web),
            source: AttributionSource::Capture,
            plugin: "ipman".into(),
            valid: TimeRange::since(1_714_564_800_000_000_000),
        }),
        remote: Side::Unattributed(UnattributedReason::NotFound),
        weight: 1,
        // The first flow of batch node-1/1714564800000000000/42.
        record_id: 0x5d6c_620e_8e66_909b,
    }
}

#[test]
fn a_line_is_exactly_the_documented_text() {
    let ns = concat!(
        r#"{"start_ns":1714564800123456789,"end_ns":1714564801123456789,"#,
        r#""protocol":"tcp","initiator":"local","end_state":"closed","#,
        r#""local":{"ip":"10.0.0.1","port":40000,"#,
        r#""workload":{"id":"web-1","app":"web","region":"us-east-1","labels":{"team":"edge"}},"#,
        r#""source":"capture","plugin":"ipman","valid_from_ns":1714564800000000000,"valid_until_ns":null},"#,
        r#""remote":{"ip":"2001:db8::2","port":443,"unattributed":"not-found"},"#,
        r#""bytes_sent":1200,"bytes_received":5400,"packets_sent":10,"packets_received":12,"#,
        r#""retransmits":1,"srtt_us":250,"pid":4242,"cgroup_id":7,"netns_id":4026531840,"weight":1,"#,
        r#""record_id":"5d6c620e8e66909b","community_id":"1:TswRGTCe0RILtIXpSJli9uUBBf8="}"#,
        "\n"
    );
    let bytes = sink("{}").format(&[example()]).unwrap();
    assert_eq!(std::str::from_utf8(&bytes).unwrap(), ns);

    let rfc3339 = concat!(
        r#"{"start":"2024-05-01T12:00:00.123456789Z","end":"2024-05-01T12:00:01.123456789Z","#,
        r#""protocol":"tcp","initiator":"local","end_state":"closed","#,
        r#""local":{"ip":"10.0.0.1","port":40000,"#,
        r#""workload":{"id":"web-1","app":"web","region":"us-east-1","labels":{"team":"edge"}},"#,
        r#""source":"capture","plugin":"ipman","valid_from":"2024-05-01T12:00:00.000000000Z","valid_until":null},"#,
        r#""remote":{"ip":"2001:db8::2","port":443,"unattributed":"not-found"},"#,
        r#""bytes_sent":1200,"bytes_received":5400,"packets_sent":10,"packets_received":12,"#,
        r#""retransmits":1,"srtt_us":250,"weight":1,"#,
        r#""record_id":"5d6c620e8e66909b","community_id":"1:TswRGTCe0RILtIXpSJli9uUBBf8="}"#,
        "\n"
    );
    let bytes = sink(r#"{"time_format": "rfc3339", "include_process": false}"#)
        .format(&[example()])
        .unwrap();
    assert_eq!(std::str::from_utf8(&bytes).unwrap(), rfc3339);
}

#[test]
fn pending_sides_and_closed_validity_are_written_as_documented() {
    let mut f = example();
    f.remote = Side::Pending;
    if let Side::Attributed(a) = &mut f.local {
        a.valid.end_ns = 1_714_564_900_000_000_000;
    }
    let line = String::from_utf8(sink("{}").format(&[f]).unwrap()).unwrap();
    assert!(
        line.contains(r#""valid_until_ns":1714564900000000000}"#),
        "{line}"
    );
    assert!(
        line.contains(r#""port":443,"unattributed":"pending"}"#),
        "{line}"
    );
}

#[test]
fn record_and_community_ids_are_written_as_documented() {
    use flowattr_sdk::{BatchId, RecordIds};
    let batch = BatchId {
        agent: "node-1".into(),
        incarnation: 1_714_564_800_000_000_000,
        seq: 42,
    };
    assert_eq!(example().record_id, RecordIds::of(&batch).at(0));
    // No id assigned (outside a collector): null, never zeros.
    let mut f = example();
    f.record_id = 0;
    let line = String::from_utf8(sink("{}").format(&[f]).unwrap()).unwrap();
    assert!(line.contains(r#""record_id":null,"#), "{line}");
    // Both ends of one connection write the same Community ID.
    let mut other_end = example();
    (other_end.flow.local, other_end.flow.remote) = (example().flow.remote, example().flow.local);
    let lines = String::from_utf8(sink("{}").format(&[example(), other_end]).unwrap()).unwrap();
    let ids: Vec<&str> = lines
        .lines()
        .map(|l| l.split(r#""community_id":"#).nth(1).unwrap())
        .collect();
    assert_eq!(ids[0], ids[1]);
    // Redacted endpoints join nothing: null.
    let mut redacted = example();
    redacted.redact(flowattr_sdk::Redactions {
        remote_address: true,
        ..Default::default()
    });
    let line = String::from_utf8(sink("{}").format(&[redacted]).unwrap()).unwrap();
    assert!(line.ends_with("\"community_id\":null}\n"), "{line}");
}

#[test]
fn every_source_is_written_by_its_documented_name() {
    for (source, name) in [
        (AttributionSource::Capture, "capture"),
        (AttributionSource::Heartbeat, "heartbeat"),
        (AttributionSource::Resolver, "resolver"),
        (AttributionSource::Counterpart, "counterpart"),
        (AttributionSource::CaptureShared, "capture-shared"),
    ] {
        let mut f = example();
        if let Side::Attributed(a) = &mut f.local {
            a.source = source;
        }
        let line = String::from_utf8(sink("{}").format(&[f]).unwrap()).unwrap();
        let want = format!(r#""source":"{name}","plugin":"ipman""#);
        assert!(line.contains(&want), "{line}");
    }
}

#[test]
fn an_empty_batch_is_empty_output_and_each_flow_is_one_line() {
    let mut h = sink("{}");
    assert!(h.format(&[]).unwrap().is_empty());
    let three = vec![example(), example(), example()];
    let bytes = h.format(&three).unwrap();
    assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 3);
    assert!(bytes.ends_with(b"\n"));
    assert_eq!(h.plugin_mut().content_type(), CONTENT_TYPE);
    assert_eq!(CONTENT_TYPE, "application/x-ndjson");
}

#[test]
fn bad_configs_are_refused_naming_the_key() {
    for (config, want) in [
        (
            r#"{"include_proces": true}"#,
            "unknown field `include_proces`, expected `include_process` or `time_format`",
        ),
        (
            r#"{"time_format": "iso"}"#,
            "unknown variant `iso`, expected `ns` or `rfc3339`",
        ),
        (
            r#"{"include_process": "yes"}"#,
            "invalid type: string \"yes\", expected a boolean",
        ),
    ] {
        let err = Harness::<JsonlSink>::new(config).err().expect(config);
        assert!(err.starts_with("invalid config: "), "{config}: {err}");
        assert!(err.contains(want), "{config}: {err}");
    }
}
