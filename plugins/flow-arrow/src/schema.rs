//! The schema: every column's name, type and nullability, in order.

use std::sync::{Arc, LazyLock};

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// The values of a side's `status` column: `attributed`, each
/// [`UnattributedReason`](flowattr_sdk::UnattributedReason) by name, then
/// `pending`.
pub const STATUS_VALUES: [&str; 10] = [
    "attributed",
    "not-found",
    "source-unavailable",
    "conflict",
    "gap",
    "expired",
    "clock-skew",
    "plugin-failed",
    "incomplete",
    "pending",
];

/// The schema of every batch [`record_batch`](crate::record_batch) builds.
pub fn schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(build);
    SCHEMA.clone()
}

pub(crate) fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// A string column stored as a dictionary with `key` indices.
fn dictionary(key: DataType) -> DataType {
    DataType::Dictionary(Box::new(key), Box::new(DataType::Utf8))
}

/// `map<utf8, utf8>` as `MapBuilder` builds it (entries `key`, `value`).
pub(crate) fn labels() -> DataType {
    let entries = Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, true),
    ]);
    DataType::Map(
        Arc::new(Field::new("entries", DataType::Struct(entries), false)),
        false,
    )
}

fn side(prefix: &str) -> Vec<Field> {
    let name = |column: &str| format!("{prefix}_{column}");
    let workload = |column: &str| Field::new(name(column), dictionary(DataType::Int32), true);
    vec![
        Field::new(name("status"), dictionary(DataType::UInt8), false),
        workload("workload_id"),
        workload("app"),
        workload("cluster"),
        workload("stack"),
        workload("account_id"),
        workload("region"),
        Field::new(name("labels"), labels(), true),
        Field::new(name("source"), dictionary(DataType::UInt8), true),
        workload("plugin"),
        Field::new(name("valid_from"), timestamp(), true),
        Field::new(name("valid_until"), timestamp(), true),
    ]
}

fn build() -> SchemaRef {
    use DataType::{UInt8, UInt16, UInt32, UInt64, Utf8};
    let mut fields = vec![
        Field::new("record_id", UInt64, true),
        Field::new("community_id", Utf8, true),
        Field::new("start", timestamp(), true),
        Field::new("end", timestamp(), true),
        Field::new("protocol", UInt8, false),
        Field::new("srcaddr", Utf8, false),
        Field::new("srcport", UInt16, false),
        Field::new("dstaddr", Utf8, false),
        Field::new("dstport", UInt16, false),
        Field::new("flow_direction", dictionary(UInt8), true),
        Field::new("end_state", dictionary(UInt8), false),
        Field::new("packets", UInt64, false),
        Field::new("bytes", UInt64, false),
        Field::new("packets_sent", UInt64, false),
        Field::new("packets_received", UInt64, false),
        Field::new("bytes_sent", UInt64, false),
        Field::new("bytes_received", UInt64, false),
        Field::new("retransmits", UInt32, false),
        Field::new("srtt_us", UInt32, false),
        Field::new("pid", UInt32, true),
        Field::new("cgroup_id", UInt64, true),
        Field::new("netns_id", UInt64, true),
        Field::new("weight", UInt32, false),
    ];
    fields.extend(side("src"));
    fields.extend(side("dst"));
    Arc::new(Schema::new(fields))
}
