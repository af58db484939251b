//! Flows → one [`RecordBatch`], a column builder per field.
//!
//! Each side keeps one workload index per row (`None` where it is not
//! attributed); the workload columns are dictionaries sharing the batch's
//! [`WorkloadDictionary`], one value per workload, so a workload's strings
//! are copied once per batch however many flows name it.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use arrow_array::builder::{MapBuilder, StringBuilder};
use arrow_array::types::{Int32Type, UInt8Type};
use arrow_array::{
    ArrayRef, DictionaryArray, Int32Array, RecordBatch, StringArray, TimestampNanosecondArray,
    UInt8Array, UInt16Array, UInt32Array, UInt64Array,
};
use flowattr_sdk::{
    AttributedFlow, Initiator, Side, TimeRange, Workload, WorkloadDictionary, community_id,
};

use crate::schema::{STATUS_VALUES, schema};

/// `end_state` values, by [`FlowEnd`](flowattr_sdk::FlowEnd) position.
const END_STATES: [&str; 5] = ["closed", "ongoing", "refused", "reset", "failed"];
/// `*_source` values, by [`AttributionSource`](flowattr_sdk::AttributionSource) position.
const SOURCES: [&str; 5] = [
    "capture",
    "heartbeat",
    "resolver",
    "counterpart",
    "capture-shared",
];
/// `flow_direction` values: who opened the connection.
const DIRECTIONS: [&str; 2] = ["egress", "ingress"];
/// `STATUS_VALUES` position of `pending`.
const PENDING: u8 = 9;

/// A time as the signed nanoseconds Arrow stores, `None` past year 2262.
fn timestamp(ns: u64) -> Option<i64> {
    i64::try_from(ns).ok()
}

fn timestamps(values: impl Iterator<Item = Option<i64>>) -> ArrayRef {
    Arc::new(TimestampNanosecondArray::from_iter(values).with_timezone("UTC"))
}

/// A dictionary column over a fixed list of values.
fn fixed<const N: usize>(keys: Vec<Option<u8>>, values: &[&str; N]) -> ArrayRef {
    let values = Arc::new(StringArray::from_iter_values(values.iter()));
    Arc::new(DictionaryArray::<UInt8Type>::new(
        UInt8Array::from(keys),
        values,
    ))
}

/// One side's columns as rows are added.
struct SideBuilder {
    status: Vec<Option<u8>>,
    workload: Vec<Option<i32>>,
    labels: MapBuilder<StringBuilder, StringBuilder>,
    source: Vec<Option<u8>>,
    plugin: Vec<Option<i32>>,
    valid_from: Vec<Option<i64>>,
    valid_until: Vec<Option<i64>>,
}

impl SideBuilder {
    fn new(n: usize) -> Self {
        Self {
            status: Vec::with_capacity(n),
            workload: Vec::with_capacity(n),
            labels: MapBuilder::new(None, StringBuilder::new(), StringBuilder::new()),
            source: Vec::with_capacity(n),
            plugin: Vec::with_capacity(n),
            valid_from: Vec::with_capacity(n),
            valid_until: Vec::with_capacity(n),
        }
    }

    fn push<'a>(&mut self, side: &'a Side, dicts: &mut Dictionaries<'a>) {
        let Side::Attributed(a) = side else {
            self.status.push(Some(match side {
                Side::Unattributed(reason) => 1 + *reason as u8,
                _ => PENDING,
            }));
            self.workload.push(None);
            self.labels.append(false).expect("keys and values in step");
            self.source.push(None);
            self.plugin.push(None);
            self.valid_from.push(None);
            self.valid_until.push(None);
            return;
        };
        self.status.push(Some(0));
        self.workload.push(Some(dicts.workload(&a.workload)));
        for (k, v) in &a.workload.labels {
            self.labels.keys().append_value(k);
            self.labels.values().append_value(v);
        }
        self.labels.append(true).expect("keys and values in step");
        self.source.push(Some(a.source as u8));
        self.plugin.push(Some(dicts.plugin(&a.plugin)));
        self.valid_from.push(timestamp(a.valid.start_ns));
        self.valid_until.push(match a.valid.end_ns {
            TimeRange::OPEN_END => None,
            end => timestamp(end),
        });
    }

    /// The side's columns in schema order.
    fn finish(mut self, values: &WorkloadValues, plugins: &ArrayRef, out: &mut Vec<ArrayRef>) {
        out.push(fixed(self.status, &STATUS_VALUES));
        for (values, has) in &values.attributes {
            let keys = self
                .workload
                .iter()
                .map(|k| k.filter(|&i| has.get(i as usize).copied().unwrap_or(true)));
            let keys = Int32Array::from_iter(keys);
            out.push(Arc::new(DictionaryArray::<Int32Type>::new(
                keys,
                values.clone(),
            )));
        }
        out.push(Arc::new(self.labels.finish()));
        out.push(fixed(self.source, &SOURCES));
        out.push(Arc::new(DictionaryArray::<Int32Type>::new(
            Int32Array::from(self.plugin),
            plugins.clone(),
        )));
        out.push(timestamps(self.valid_from.into_iter()));
        out.push(timestamps(self.valid_until.into_iter()));
    }
}

/// The batch's workloads and plugin names, each listed once.
struct Dictionaries<'a> {
    workloads: WorkloadDictionary<'a>,
    /// A batch names a handful of plugins, so a scan beats hashing.
    plugins: Vec<&'a str>,
}

impl<'a> Dictionaries<'a> {
    fn workload(&mut self, w: &'a Arc<Workload>) -> i32 {
        i32::try_from(self.workloads.index(w)).expect("fewer than 2^31 workloads in a batch")
    }

    fn plugin(&mut self, name: &'a str) -> i32 {
        let i = match self.plugins.iter().position(|p| *p == name) {
            Some(i) => i,
            None => {
                self.plugins.push(name);
                self.plugins.len() - 1
            }
        };
        i as i32
    }
}

/// The dictionary values of the workload columns (`workload_id`, `app`,
/// `cluster`, `stack`, `account_id`, `region`): one entry per workload, ""
/// where it lacks the attribute, with which workloads have it (`id`: all).
struct WorkloadValues {
    attributes: Vec<(ArrayRef, Vec<bool>)>,
}

impl WorkloadValues {
    fn of(workloads: &[&Arc<Workload>]) -> Self {
        let id: ArrayRef = Arc::new(StringArray::from_iter_values(
            workloads.iter().map(|w| w.id.as_str()),
        ));
        let mut attributes = vec![(id, Vec::new())];
        let optional: [fn(&Workload) -> &Option<String>; 5] = [
            |w| &w.app,
            |w| &w.cluster,
            |w| &w.stack,
            |w| &w.account,
            |w| &w.region,
        ];
        for get in optional {
            let values: ArrayRef = Arc::new(StringArray::from_iter_values(
                workloads.iter().map(|w| get(w).as_deref().unwrap_or("")),
            ));
            let has = workloads.iter().map(|w| get(w).is_some()).collect();
            attributes.push((values, has));
        }
        Self { attributes }
    }
}

fn addresses(flows: &[AttributedFlow], end: fn(&AttributedFlow) -> SocketAddr) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(flows.len(), flows.len() * 16);
    for f in flows {
        write!(b, "{}", end(f).ip()).expect("writing to memory");
        b.append_value("");
    }
    Arc::new(b.finish())
}

/// The flows as one batch of [`schema`]. Without `include_process`, the
/// `pid`, `cgroup_id` and `netns_id` columns are null.
pub fn record_batch(flows: &[AttributedFlow], include_process: bool) -> RecordBatch {
    let n = flows.len();
    let mut dicts = Dictionaries {
        workloads: WorkloadDictionary::new(),
        plugins: Vec::new(),
    };
    let (mut src, mut dst) = (SideBuilder::new(n), SideBuilder::new(n));
    for f in flows {
        src.push(&f.local, &mut dicts);
        dst.push(&f.remote, &mut dicts);
    }
    let u64s = |get: fn(&AttributedFlow) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(flows.iter().map(get)))
    };
    let u32s = |get: fn(&AttributedFlow) -> u32| -> ArrayRef {
        Arc::new(UInt32Array::from_iter_values(flows.iter().map(get)))
    };
    let process = |get: fn(&AttributedFlow) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter(
            flows.iter().map(|f| include_process.then(|| get(f))),
        ))
    };
    let mut community = StringBuilder::with_capacity(n, n * 30);
    for f in flows {
        match community_id(&f.flow) {
            Some(id) => community.append_value(id.as_str()),
            None => community.append_null(),
        }
    }
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(UInt64Array::from_iter(
            flows
                .iter()
                .map(|f| Some(f.record_id).filter(|&id| id != 0)),
        )),
        Arc::new(community.finish()),
        timestamps(flows.iter().map(|f| timestamp(f.flow.start_ns))),
        timestamps(flows.iter().map(|f| timestamp(f.flow.end_ns))),
        Arc::new(UInt8Array::from_iter_values(
            flows.iter().map(|f| f.flow.protocol.number()),
        )),
        addresses(flows, |f| f.flow.local),
        Arc::new(UInt16Array::from_iter_values(
            flows.iter().map(|f| f.flow.local.port()),
        )),
        addresses(flows, |f| f.flow.remote),
        Arc::new(UInt16Array::from_iter_values(
            flows.iter().map(|f| f.flow.remote.port()),
        )),
        fixed(
            flows
                .iter()
                .map(|f| match f.flow.initiator {
                    Initiator::Local => Some(0),
                    Initiator::Remote => Some(1),
                    Initiator::Unknown => None,
                })
                .collect(),
            &DIRECTIONS,
        ),
        fixed(
            flows.iter().map(|f| Some(f.flow.end_state as u8)).collect(),
            &END_STATES,
        ),
        u64s(|f| f.flow.packets_sent.saturating_add(f.flow.packets_received)),
        u64s(|f| f.flow.bytes_sent.saturating_add(f.flow.bytes_received)),
        u64s(|f| f.flow.packets_sent),
        u64s(|f| f.flow.packets_received),
        u64s(|f| f.flow.bytes_sent),
        u64s(|f| f.flow.bytes_received),
        u32s(|f| f.flow.retransmits),
        u32s(|f| f.flow.srtt_us),
        Arc::new(UInt32Array::from_iter(
            flows.iter().map(|f| include_process.then_some(f.flow.pid)),
        )),
        process(|f| f.flow.cgroup_id),
        process(|f| f.flow.netns_id),
        u32s(|f| f.weight),
    ];
    let values = WorkloadValues::of(dicts.workloads.workloads());
    let plugins: ArrayRef = Arc::new(StringArray::from_iter_values(dicts.plugins.iter()));
    src.finish(&values, &plugins, &mut columns);
    dst.finish(&values, &plugins, &mut columns);
    RecordBatch::try_new(schema(), columns).expect("the columns follow the schema")
}
