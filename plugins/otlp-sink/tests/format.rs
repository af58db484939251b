//! The sink's output, decoded with the official OTLP messages: every flow
//! reads back whole, the attributes are the documented ones, and the
//! request's nesting is what an OTLP receiver expects.

mod common;

use common::{varied, without_process};
use flowattr_sdk::testing::Harness;
use flowattr_sdk::{AttributedFlow, Flow, Initiator};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use otlp_sink::read::read_chunk;
use otlp_sink::{CONTENT_TYPE, OtlpSink};
use prost::Message;

fn sink(config: &str) -> Harness<OtlpSink> {
    Harness::<OtlpSink>::new(config).unwrap()
}

#[test]
fn every_flow_reads_back_from_the_official_messages() {
    let mut s = sink("{}");
    for (seed, n, workloads) in [(1, 1, 1), (2, 500, 3), (3, 3_000, 40)] {
        let flows = varied(seed, n, workloads);
        let chunk = s.format(&flows).unwrap();
        assert_eq!(read_chunk(&chunk).unwrap(), flows, "seed {seed}");
    }
}

#[test]
fn without_process_the_process_attributes_are_left_out() {
    let mut s = sink(r#"{"include_process": false}"#);
    let flows = varied(4, 300, 10);
    let chunk = s.format(&flows).unwrap();
    let request = ExportLogsServiceRequest::decode(chunk.as_slice()).unwrap();
    let record = &request.resource_logs[0].scope_logs[0].log_records[0];
    assert!(record.attributes.iter().all(|kv| kv.key != "flowattr.pid"));
    assert_eq!(read_chunk(&chunk).unwrap(), without_process(&flows));
}

#[test]
fn one_resource_one_scope_and_a_record_per_flow_with_the_netflow_names() {
    let mut s =
        sink(r#"{"resource": {"service.name": "flows", "deployment.environment": "test"}}"#);
    let mut flow = Flow::tcp(
        "10.0.0.1:40000".parse().unwrap(),
        "[2001:db8::2]:443".parse().unwrap(),
        1_000,
    );
    flow.end_ns = 2_000;
    flow.bytes_sent = 100;
    flow.bytes_received = 50;
    flow.packets_sent = 3;
    flow.packets_received = 2;
    let local = AttributedFlow::new(Flow {
        initiator: Initiator::Local,
        ..flow.clone()
    });
    let remote = AttributedFlow::new(Flow {
        initiator: Initiator::Remote,
        ..flow
    });
    let chunk = s.format(&[local, remote]).unwrap();
    let request = ExportLogsServiceRequest::decode(chunk.as_slice()).unwrap();
    assert_eq!(request.resource_logs.len(), 1);
    let rl = &request.resource_logs[0];
    let resource: Vec<(&str, &Value)> = rl
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .map(|kv| {
            (
                kv.key.as_str(),
                kv.value.as_ref().unwrap().value.as_ref().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        resource,
        [
            ("deployment.environment", &Value::StringValue("test".into())),
            ("service.name", &Value::StringValue("flows".into())),
        ]
    );
    assert_eq!(rl.scope_logs.len(), 1);
    let scope = rl.scope_logs[0].scope.as_ref().unwrap();
    assert_eq!(scope.name, "flowattr.otlp-sink");
    let records = &rl.scope_logs[0].log_records;
    assert_eq!(records.len(), 2);
    let get = |i: usize, key: &str| -> Value {
        records[i]
            .attributes
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
    // The local end connected: it is the source.
    assert_eq!(get(0, "source.address"), text("10.0.0.1"));
    assert_eq!(get(0, "source.port"), Value::IntValue(40000));
    assert_eq!(get(0, "destination.address"), text("2001:db8::2"));
    assert_eq!(get(0, "destination.port"), Value::IntValue(443));
    // The remote end connected: it is.
    assert_eq!(get(1, "source.address"), text("2001:db8::2"));
    assert_eq!(get(1, "destination.port"), Value::IntValue(40000));
    assert_eq!(get(0, "network.transport"), text("tcp"));
    assert_eq!(get(0, "network.type"), text("ipv4"));
    assert_eq!(get(0, "network.io.bytes"), Value::IntValue(150));
    assert_eq!(get(0, "network.io.packets"), Value::IntValue(5));
    assert_eq!(get(0, "network.flow.start"), Value::IntValue(1_000));
    assert_eq!(get(0, "network.flow.end"), Value::IntValue(2_000));
    assert_eq!(get(0, "flowattr.local.status"), text("unattributed"));
    assert_eq!(get(0, "flowattr.local.reason"), text("pending"));
    assert_eq!(get(0, "flowattr.weight"), Value::IntValue(1));
    assert!(
        matches!(get(0, "flowattr.community_id"), Value::StringValue(c) if c.starts_with("1:"))
    );
    assert_eq!(records[0].time_unix_nano, 1_000);
    assert_eq!(records[0].observed_time_unix_nano, 2_000);
    assert_eq!(records[0].event_name, "flowattr.flow");
    assert!(records[0].body.is_none());
}

#[test]
fn an_empty_batch_is_an_empty_chunk_and_the_content_type_is_protobuf() {
    let mut s = sink("{}");
    assert!(s.format(&[]).unwrap().is_empty());
    assert_eq!(CONTENT_TYPE, "application/x-protobuf");
}

#[test]
fn a_config_with_an_unknown_key_is_refused() {
    let e = Harness::<OtlpSink>::new(r#"{"compression": "gzip"}"#)
        .err()
        .unwrap();
    assert!(e.contains("unknown field `compression`"), "{e}");
}

#[test]
fn workloads_shared_across_records_encode_the_same_as_unshared_ones() {
    let mut s = sink("{}");
    let flows = varied(5, 400, 5);
    let unshared: Vec<AttributedFlow> = flows
        .iter()
        .map(|f| {
            let mut f = f.clone();
            for side in [&mut f.local, &mut f.remote] {
                if let flowattr_sdk::Side::Attributed(a) = side {
                    a.workload = std::sync::Arc::new((*a.workload).clone());
                }
            }
            f
        })
        .collect();
    assert_eq!(s.format(&flows).unwrap(), s.format(&unshared).unwrap());
}
