//! The writer: a batch of flows → one chunk (header, dictionaries,
//! columns), in one pass over the flows.
//!
//! Workloads, plugin names and whole attributions (workload, source, plugin,
//! validity) are deduplicated by value, not only by `Arc` identity: flows
//! built apart carry equal workloads in separate `Arc`s, and the chunk must
//! be the same bytes whichever way the flows were built.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use flowattr_sdk::{AttributedFlow, Attribution, Side, Workload};
use rustc_hash::FxHashMap;

use crate::layout::{self, col};
use crate::varint::{self, zigzag};

/// Turns batches into chunks; keeps its column buffers between batches.
pub(crate) struct Encoder {
    include_process: bool,
    columns: [Vec<u8>; col::COUNT],
}

/// An attribution, with its workload and plugin replaced by their indices.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct AttributionKey {
    workload: u32,
    plugin: u32,
    source: u8,
    start_ns: u64,
    end_ns: u64,
}

/// One dictionary: each distinct value once, in order of first use, with
/// its entries already written out.
struct Dictionary<K> {
    index: FxHashMap<K, u32>,
    bytes: Vec<u8>,
}

impl<K: Hash + Eq> Dictionary<K> {
    fn new() -> Self {
        Self {
            index: FxHashMap::default(),
            bytes: Vec::new(),
        }
    }

    /// The index of `key`, writing its entry with `write` if it is new.
    #[inline]
    fn intern(&mut self, key: K, write: impl FnOnce(&mut Vec<u8>)) -> u32 {
        let next = self.index.len() as u32;
        *self.index.entry(key).or_insert_with(|| {
            write(&mut self.bytes);
            next
        })
    }

    fn write_to(&self, out: &mut Vec<u8>) {
        varint::put(out, self.index.len() as u64);
        out.extend_from_slice(&self.bytes);
    }
}

/// A workload compared by value but hashed by its id alone: ids are all but
/// unique, so hashing every attribute would only cost time, while equality
/// still compares every attribute (two workloads sharing an id stay apart).
#[derive(Clone, Copy)]
struct ById<'a>(&'a Workload);

impl Hash for ById<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

impl PartialEq for ById<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for ById<'_> {}

/// The three dictionaries of one chunk, borrowing from its flows.
struct Dictionaries<'a> {
    plugins: Dictionary<&'a str>,
    workloads: Dictionary<ById<'a>>,
    /// Workload indices by `Arc` address: flows of one batch share their
    /// workloads' `Arc`s, and a pointer hash is cheaper than a value hash.
    workload_addresses: FxHashMap<*const Workload, u32>,
    attributions: Dictionary<AttributionKey>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    varint::put(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn put_workload(out: &mut Vec<u8>, w: &Workload) {
    put_str(out, &w.id);
    let optional = [&w.app, &w.cluster, &w.stack, &w.account, &w.region];
    let mask = optional
        .iter()
        .enumerate()
        .fold(0u8, |m, (bit, v)| m | (u8::from(v.is_some()) << bit));
    out.push(mask);
    for v in optional.into_iter().flatten() {
        put_str(out, v);
    }
    varint::put(out, w.labels.len() as u64);
    for (k, v) in &w.labels {
        put_str(out, k);
        put_str(out, v);
    }
}

impl<'a> Dictionaries<'a> {
    fn new() -> Self {
        Self {
            plugins: Dictionary::new(),
            workloads: Dictionary::new(),
            workload_addresses: FxHashMap::default(),
            attributions: Dictionary::new(),
        }
    }

    fn workload(&mut self, w: &'a Arc<Workload>) -> u32 {
        let address = Arc::as_ptr(w);
        if let Some(&index) = self.workload_addresses.get(&address) {
            return index;
        }
        let index = self.workloads.intern(ById(w), |out| put_workload(out, w));
        self.workload_addresses.insert(address, index);
        index
    }

    fn attribution(&mut self, a: &'a Attribution) -> u32 {
        let key = AttributionKey {
            workload: self.workload(&a.workload),
            plugin: self
                .plugins
                .intern(&a.plugin, |out| put_str(out, &a.plugin)),
            source: layout::source_code(a.source),
            start_ns: a.valid.start_ns,
            end_ns: a.valid.end_ns,
        };
        self.attributions.intern(key, |out| {
            varint::put(out, key.workload.into());
            out.push(key.source);
            varint::put(out, key.plugin.into());
            varint::put(out, key.start_ns);
            varint::put(out, key.end_ns);
        })
    }

    #[inline]
    fn side_code(&mut self, side: &'a Side) -> u64 {
        match side {
            Side::Pending => layout::SIDE_PENDING,
            Side::Unattributed(reason) => layout::reason_code(*reason).into(),
            Side::Attributed(a) => layout::SIDE_ATTRIBUTED + u64::from(self.attribution(a)),
        }
    }
}

#[inline]
fn put_address(columns: &mut [Vec<u8>; col::COUNT], ip: IpAddr, v4: usize, v6: usize) -> bool {
    match ip {
        IpAddr::V4(a) => {
            columns[v4].extend_from_slice(&a.octets());
            false
        }
        IpAddr::V6(a) => {
            columns[v6].extend_from_slice(&a.octets());
            true
        }
    }
}

impl Encoder {
    pub fn new(include_process: bool) -> Self {
        Self {
            include_process,
            columns: Default::default(),
        }
    }

    /// Appends one chunk holding `flows` to `out`.
    pub fn encode(&mut self, flows: &[AttributedFlow], out: &mut Vec<u8>) -> Result<(), String> {
        let rows = u32::try_from(flows.len())
            .map_err(|_| format!("a batch of {} flows is over 2^32 rows", flows.len()))?;
        for c in &mut self.columns {
            c.clear();
        }
        let mut dicts = Dictionaries::new();
        let c = &mut self.columns;
        let mut previous_start = 0u64;
        for f in flows {
            let flow = &f.flow;
            // Start: delta from the row before (the first row's from 0).
            let delta = flow.start_ns.wrapping_sub(previous_start) as i64;
            varint::put(&mut c[col::START], zigzag(delta));
            previous_start = flow.start_ns;
            let duration = flow.end_ns.wrapping_sub(flow.start_ns) as i64;
            varint::put(&mut c[col::DURATION], zigzag(duration));
            c[col::PROTOCOL].push(layout::protocol_code(flow.protocol));
            c[col::INITIATOR].push(layout::initiator_code(flow.initiator));
            c[col::END_STATE].push(layout::end_code(flow.end_state));
            let local_v6 = put_address(c, flow.local.ip(), col::LOCAL_V4, col::LOCAL_V6);
            let remote_v6 = put_address(c, flow.remote.ip(), col::REMOTE_V4, col::REMOTE_V6);
            c[col::FAMILIES].push(
                if local_v6 { layout::LOCAL_V6 } else { 0 }
                    | if remote_v6 { layout::REMOTE_V6 } else { 0 },
            );
            c[col::LOCAL_PORT].extend_from_slice(&flow.local.port().to_le_bytes());
            c[col::REMOTE_PORT].extend_from_slice(&flow.remote.port().to_le_bytes());
            varint::put(&mut c[col::BYTES_SENT], flow.bytes_sent);
            varint::put(&mut c[col::BYTES_RECEIVED], flow.bytes_received);
            varint::put(&mut c[col::PACKETS_SENT], flow.packets_sent);
            varint::put(&mut c[col::PACKETS_RECEIVED], flow.packets_received);
            varint::put(&mut c[col::RETRANSMITS], flow.retransmits.into());
            varint::put(&mut c[col::SRTT_US], flow.srtt_us.into());
            if self.include_process {
                varint::put(&mut c[col::PID], flow.pid.into());
                varint::put(&mut c[col::CGROUP_ID], flow.cgroup_id);
                varint::put(&mut c[col::NETNS_ID], flow.netns_id);
            }
            varint::put(&mut c[col::WEIGHT], f.weight.into());
            varint::put(&mut c[col::LOCAL_SIDE], dicts.side_code(&f.local));
            varint::put(&mut c[col::REMOTE_SIDE], dicts.side_code(&f.remote));
            c[col::RECORD_ID].extend_from_slice(&f.record_id.to_le_bytes());
        }

        let chunk_start = out.len();
        let body: usize = dicts.plugins.bytes.len()
            + dicts.workloads.bytes.len()
            + dicts.attributions.bytes.len()
            + c.iter().map(|c| c.len() + 5).sum::<usize>()
            + 15;
        out.reserve(layout::HEADER_LEN + body);
        out.extend_from_slice(&layout::MAGIC);
        out.push(layout::VERSION);
        out.push(if self.include_process {
            layout::FLAG_PROCESS
        } else {
            0
        });
        out.extend_from_slice(&rows.to_le_bytes());
        out.extend_from_slice(&[0; 4]); // body length, patched below
        dicts.plugins.write_to(out);
        dicts.workloads.write_to(out);
        dicts.attributions.write_to(out);
        for column in c.iter() {
            varint::put(out, column.len() as u64);
            out.extend_from_slice(column);
        }
        let body_len = out.len() - chunk_start - layout::HEADER_LEN;
        let Ok(body_len) = u32::try_from(body_len) else {
            out.truncate(chunk_start);
            return Err(format!(
                "a chunk of {body_len} bytes is over the format's 4 GiB; send smaller batches"
            ));
        };
        out[chunk_start + 10..chunk_start + 14].copy_from_slice(&body_len.to_le_bytes());
        Ok(())
    }
}
