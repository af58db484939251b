//! What each column holds for flows written out by hand.

use std::collections::BTreeMap;
use std::sync::Arc;

use flow_arrow::arrow_array::cast::AsArray;
use flow_arrow::arrow_array::types::{
    Int32Type, TimestampNanosecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use flow_arrow::arrow_array::{Array, RecordBatch};
use flow_arrow::record_batch;
use flowattr_sdk::{
    AttributedFlow, Attribution, AttributionSource, Flow, FlowEnd, Initiator, Side, TimeRange,
    UnattributedReason, Workload,
};

/// Row `i` of a dictionary-encoded string column, `None` where null.
fn text(batch: &RecordBatch, column: &str, i: usize) -> Option<String> {
    let column = batch.column_by_name(column).unwrap();
    if column.is_null(i) {
        return None;
    }
    if let Some(d) = column.as_dictionary_opt::<Int32Type>() {
        let key = d.keys().value(i) as usize;
        return Some(d.values().as_string::<i32>().value(key).to_owned());
    }
    if let Some(d) = column.as_dictionary_opt::<UInt8Type>() {
        let key = d.keys().value(i) as usize;
        return Some(d.values().as_string::<i32>().value(key).to_owned());
    }
    Some(column.as_string::<i32>().value(i).to_owned())
}

fn time(batch: &RecordBatch, column: &str, i: usize) -> Option<i64> {
    let c = batch.column_by_name(column).unwrap();
    (!c.is_null(i)).then(|| c.as_primitive::<TimestampNanosecondType>().value(i))
}

fn flows() -> Vec<AttributedFlow> {
    let api = Arc::new(Workload {
        app: Some("api".into()),
        account: Some("123456789012".into()),
        labels: BTreeMap::from([("team".into(), "core".into())]),
        ..Workload::with_id("api-1")
    });
    let db = Arc::new(Workload {
        cluster: Some("db-prod".into()),
        ..Workload::with_id("db-1")
    });
    let mut out = AttributedFlow::new(Flow::tcp(
        "10.0.0.1:40000".parse().unwrap(),
        "[2001:db8::2]:5432".parse().unwrap(),
        1_000,
    ));
    out.flow.end_ns = 2_000;
    out.flow.initiator = Initiator::Local;
    (out.flow.bytes_sent, out.flow.bytes_received) = (10, 20);
    (out.flow.packets_sent, out.flow.packets_received) = (1, u64::MAX);
    out.flow.pid = 42;
    out.local = Side::Attributed(Attribution {
        workload: api.clone(),
        source: AttributionSource::Capture,
        plugin: "ipman".into(),
        valid: TimeRange::since(500),
    });
    out.remote = Side::Attributed(Attribution {
        workload: Arc::new((*db).clone()),
        source: AttributionSource::Counterpart,
        plugin: Arc::default(),
        valid: TimeRange::new(0, 3_000),
    });
    out.record_id = 7;
    let mut back = AttributedFlow::new(Flow::tcp(
        "10.0.0.1:443".parse().unwrap(),
        "192.0.2.9:50000".parse().unwrap(),
        u64::MAX,
    ));
    back.flow.initiator = Initiator::Remote;
    back.flow.end_state = FlowEnd::Reset;
    back.local = Side::Attributed(Attribution {
        workload: Arc::new((*api).clone()),
        source: AttributionSource::Heartbeat,
        plugin: "ipman".into(),
        valid: TimeRange::since(0),
    });
    back.remote = Side::Unattributed(UnattributedReason::ClockSkew);
    let mut blank = AttributedFlow::new(Flow::tcp(
        "0.0.0.0:0".parse().unwrap(),
        "0.0.0.0:0".parse().unwrap(),
        5,
    ));
    blank.remote = Side::Pending;
    blank.local = Side::Unattributed(UnattributedReason::NotFound);
    vec![out, back, blank]
}

#[test]
fn src_is_the_local_end_and_each_side_is_typed() {
    let batch = record_batch(&flows(), true);
    assert_eq!(batch.num_rows(), 3);
    assert_eq!(text(&batch, "srcaddr", 0).as_deref(), Some("10.0.0.1"));
    assert_eq!(text(&batch, "dstaddr", 0).as_deref(), Some("2001:db8::2"));
    let port = |c: &str, i| {
        batch
            .column_by_name(c)
            .unwrap()
            .as_primitive::<UInt16Type>()
            .value(i)
    };
    assert_eq!((port("srcport", 0), port("dstport", 0)), (40_000, 5432));
    let u64s = |c: &str, i| {
        batch
            .column_by_name(c)
            .unwrap()
            .as_primitive::<UInt64Type>()
            .value(i)
    };
    assert_eq!(u64s("bytes", 0), 30);
    assert_eq!(u64s("packets", 0), u64::MAX, "totals saturate");
    assert_eq!(u64s("record_id", 0), 7);
    assert!(
        batch.column_by_name("record_id").unwrap().is_null(1),
        "0 is no id"
    );
    assert_eq!(
        batch
            .column_by_name("protocol")
            .unwrap()
            .as_primitive::<UInt8Type>()
            .value(0),
        6
    );
    assert_eq!(text(&batch, "flow_direction", 0).as_deref(), Some("egress"));
    assert_eq!(
        text(&batch, "flow_direction", 1).as_deref(),
        Some("ingress")
    );
    assert_eq!(text(&batch, "flow_direction", 2), None, "initiator unknown");
    assert_eq!(text(&batch, "end_state", 1).as_deref(), Some("reset"));
    assert_eq!(
        (time(&batch, "start", 0), time(&batch, "end", 0)),
        (Some(1_000), Some(2_000))
    );
    assert_eq!(time(&batch, "start", 1), None, "past 2262");
    assert_eq!(
        batch
            .column_by_name("pid")
            .unwrap()
            .as_primitive::<UInt32Type>()
            .value(0),
        42
    );
    assert!(text(&batch, "community_id", 0).unwrap().starts_with("1:"));
    assert_eq!(text(&batch, "community_id", 2), None, "blanked endpoints");

    // The local side, attributed at capture.
    assert_eq!(text(&batch, "src_status", 0).as_deref(), Some("attributed"));
    assert_eq!(text(&batch, "src_workload_id", 0).as_deref(), Some("api-1"));
    assert_eq!(text(&batch, "src_app", 0).as_deref(), Some("api"));
    assert_eq!(
        text(&batch, "src_account_id", 0).as_deref(),
        Some("123456789012")
    );
    assert_eq!(
        text(&batch, "src_cluster", 0),
        None,
        "an attribute it lacks"
    );
    assert_eq!(text(&batch, "src_source", 1).as_deref(), Some("heartbeat"));
    assert_eq!(text(&batch, "src_plugin", 0).as_deref(), Some("ipman"));
    assert_eq!(time(&batch, "src_valid_from", 0), Some(500));
    assert_eq!(time(&batch, "src_valid_until", 0), None, "open-ended");
    let labels = batch.column_by_name("src_labels").unwrap().as_map();
    let entries = labels.value(0);
    assert_eq!(entries.column(0).as_string::<i32>().value(0), "team");
    assert_eq!(entries.column(1).as_string::<i32>().value(0), "core");
    assert!(labels.is_null(2), "no workload, no labels");
    assert_eq!(text(&batch, "src_status", 2).as_deref(), Some("not-found"));
    assert_eq!(text(&batch, "src_workload_id", 2), None);

    // The remote side: by the other end's report, unattributed, pending.
    assert_eq!(text(&batch, "dst_workload_id", 0).as_deref(), Some("db-1"));
    assert_eq!(text(&batch, "dst_cluster", 0).as_deref(), Some("db-prod"));
    assert_eq!(text(&batch, "dst_app", 0), None);
    assert_eq!(
        text(&batch, "dst_source", 0).as_deref(),
        Some("counterpart")
    );
    assert_eq!(text(&batch, "dst_plugin", 0).as_deref(), Some(""));
    assert_eq!(time(&batch, "dst_valid_until", 0), Some(3_000));
    assert_eq!(text(&batch, "dst_status", 1).as_deref(), Some("clock-skew"));
    assert_eq!(text(&batch, "dst_source", 1), None);
    assert_eq!(text(&batch, "dst_status", 2).as_deref(), Some("pending"));
}

#[test]
fn equal_workloads_are_one_dictionary_entry() {
    let batch = record_batch(&flows(), true);
    let ids = batch.column_by_name("src_workload_id").unwrap();
    let ids = ids.as_dictionary::<Int32Type>();
    // api-1 in two separate `Arc`s, and db-1: two entries.
    assert_eq!(ids.values().len(), 2);
    assert_eq!(ids.keys().value(0), ids.keys().value(1));
}

#[test]
fn without_process_the_process_columns_are_null() {
    let batch = record_batch(&flows(), false);
    for column in ["pid", "cgroup_id", "netns_id"] {
        assert_eq!(
            batch.column_by_name(column).unwrap().null_count(),
            3,
            "{column}"
        );
    }
}

#[test]
fn an_empty_batch_has_the_schema() {
    let batch = record_batch(&[], true);
    assert_eq!(
        (batch.num_rows(), batch.schema()),
        (0, flow_arrow::schema())
    );
    assert_eq!(batch.num_columns(), 23 + 2 * 12);
}
