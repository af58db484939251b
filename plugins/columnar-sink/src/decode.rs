//! The reader: chunks → flows. Every length, count, index and code is
//! checked before it is used, so truncated or garbage input gives a
//! [`DecodeError`] naming the byte offset and the field — never a panic, and
//! never an allocation larger than a small multiple of the input.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use flowattr_sdk::{AttributedFlow, Attribution, Flow, Side, TimeRange, Workload};

use crate::layout::{self, col};
use crate::varint::{self, VarintError, unzigzag};

/// Why bytes could not be read as chunks. Offsets count from the start of
/// the input given to [`decode`] or [`decode_chunk`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The data ends (the input, or a column's declared length) before
    /// `what` does.
    #[error("{what} runs past the end of its data at byte {offset}")]
    Truncated { offset: usize, what: &'static str },
    /// The chunk does not start with `FACL`.
    #[error("no chunk at byte {offset}: the magic is {found:02x?}, not \"FACL\"")]
    BadMagic { offset: usize, found: [u8; 4] },
    /// A format version this reader does not know.
    #[error(
        "the chunk at byte {offset} is format version {version}; this reader reads versions 2 and 3"
    )]
    UnsupportedVersion { offset: usize, version: u8 },
    /// Header flags this reader does not know (they could change the layout).
    #[error("the chunk at byte {offset} has unknown flags {flags:#04x}")]
    UnknownFlags { offset: usize, flags: u8 },
    /// A varint longer than 64 bits.
    #[error("{what} at byte {offset}: varint longer than 64 bits")]
    VarintTooLong { offset: usize, what: &'static str },
    /// A string that is not UTF-8.
    #[error("{what} at byte {offset} is not UTF-8")]
    InvalidUtf8 { offset: usize, what: &'static str },
    /// A code outside its enum, or a value out of its type's range.
    #[error("{what} at byte {offset}: {value} is not a valid value")]
    InvalidValue {
        offset: usize,
        what: &'static str,
        value: u64,
    },
    /// An index past the end of its dictionary.
    #[error("{what} at byte {offset}: index {index} is past the {len} entries of its dictionary")]
    IndexOutOfRange {
        offset: usize,
        what: &'static str,
        index: u64,
        len: usize,
    },
    /// A count (rows, dictionary entries, labels) the remaining bytes cannot hold.
    #[error("{what} at byte {offset}: {count} entries cannot fit in the {room} bytes left")]
    CountTooLarge {
        offset: usize,
        what: &'static str,
        count: u64,
        room: usize,
    },
    /// Label keys not in strictly ascending byte order (so also no duplicates).
    #[error("workload labels at byte {offset}: keys are not in strictly ascending order")]
    LabelsOutOfOrder { offset: usize },
    /// A column's declared length differs from what its rows take.
    #[error("column {column} at byte {offset}: declared {declared} bytes, its rows take {used}")]
    ColumnLength {
        offset: usize,
        column: &'static str,
        declared: usize,
        used: usize,
    },
    /// The header's body length differs from what the sections take.
    #[error(
        "chunk at byte {offset}: the header declares a {declared}-byte body, its sections take {used}"
    )]
    BodyLength {
        offset: usize,
        declared: usize,
        used: usize,
    },
}

/// Reads every chunk of `bytes` (one, or several written back to back, as
/// in a file) into one list of flows. Empty input is no flows.
pub fn decode(bytes: &[u8]) -> Result<Vec<AttributedFlow>, DecodeError> {
    let mut flows = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        at = read_chunk(bytes, at, &mut flows)?;
    }
    Ok(flows)
}

/// Reads the first chunk of `bytes`: its flows, and the bytes after it.
pub fn decode_chunk(bytes: &[u8]) -> Result<(Vec<AttributedFlow>, &[u8]), DecodeError> {
    let mut flows = Vec::new();
    let end = read_chunk(bytes, 0, &mut flows)?;
    Ok((flows, &bytes[end..]))
}

/// A cursor over `buf[..end]`; errors report absolute offsets in `buf`.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
}

impl<'a> Reader<'a> {
    fn room(&self) -> usize {
        self.end - self.pos
    }

    fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.room() {
            return Err(DecodeError::Truncated {
                offset: self.end,
                what,
            });
        }
        let b = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let b = self.bytes(N, what)?;
        let mut a = [0; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        match varint::get(&self.buf[self.pos..self.end]) {
            Ok((v, n)) => {
                self.pos += n;
                Ok(v)
            }
            Err(VarintError::Truncated) => Err(DecodeError::Truncated {
                offset: self.end,
                what,
            }),
            Err(VarintError::TooLong) => Err(DecodeError::VarintTooLong {
                offset: self.pos,
                what,
            }),
        }
    }

    /// A varint that must fit in a `u32`.
    fn varint_u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let offset = self.pos;
        let v = self.varint(what)?;
        u32::try_from(v).map_err(|_| DecodeError::InvalidValue {
            offset,
            what,
            value: v,
        })
    }

    /// A count of entries that each take at least `min_bytes`.
    fn count(&mut self, what: &'static str, min_bytes: usize) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let count = self.varint(what)?;
        let room = self.room();
        if count > (room / min_bytes.max(1)) as u64 {
            return Err(DecodeError::CountTooLarge {
                offset,
                what,
                count,
                room,
            });
        }
        Ok(count as usize)
    }

    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let len = self.count(what, 1)?;
        let offset = self.pos;
        let b = self.bytes(len, what)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::InvalidUtf8 { offset, what })
    }

    /// A byte code mapped through `from`, or `InvalidValue`.
    fn code<T>(
        &mut self,
        what: &'static str,
        from: impl FnOnce(u64) -> Option<T>,
    ) -> Result<T, DecodeError> {
        let offset = self.pos;
        let code = self.u8(what)?;
        from(code.into()).ok_or(DecodeError::InvalidValue {
            offset,
            what,
            value: code.into(),
        })
    }

    /// An index into a dictionary of `len` entries.
    fn index(&mut self, what: &'static str, len: usize) -> Result<usize, DecodeError> {
        let offset = self.pos;
        let index = self.varint(what)?;
        if index >= len as u64 {
            return Err(DecodeError::IndexOutOfRange {
                offset,
                what,
                index,
                len,
            });
        }
        Ok(index as usize)
    }

    fn workload(&mut self) -> Result<Workload, DecodeError> {
        let id = self.string("workload id")?;
        let offset = self.pos;
        let mask = self.u8("workload presence mask")?;
        if mask & !layout::HAS_ALL != 0 {
            return Err(DecodeError::InvalidValue {
                offset,
                what: "workload presence mask",
                value: mask.into(),
            });
        }
        let mut attr = |bit: u8, what| -> Result<Option<String>, DecodeError> {
            if mask & bit == 0 {
                Ok(None)
            } else {
                self.string(what).map(Some)
            }
        };
        let app = attr(layout::HAS_APP, "workload app")?;
        let cluster = attr(layout::HAS_CLUSTER, "workload cluster")?;
        let stack = attr(layout::HAS_STACK, "workload stack")?;
        let account = attr(layout::HAS_ACCOUNT, "workload account")?;
        let region = attr(layout::HAS_REGION, "workload region")?;
        let n = self.count("workload labels", 2)?;
        let mut labels = BTreeMap::new();
        for _ in 0..n {
            let offset = self.pos;
            let k = self.string("label key")?;
            let v = self.string("label value")?;
            if labels.last_key_value().is_some_and(|(last, _)| *last >= k) {
                return Err(DecodeError::LabelsOutOfOrder { offset });
            }
            labels.insert(k, v);
        }
        Ok(Workload {
            id,
            app,
            cluster,
            stack,
            account,
            region,
            labels,
        })
    }

    /// The next column as its own reader, and the offset of its length.
    fn column(&mut self, c: usize) -> Result<(Reader<'a>, usize), DecodeError> {
        let offset = self.pos;
        let len = self.count(col::NAMES[c], 1)?;
        let start = self.pos;
        self.pos += len;
        Ok((
            Reader {
                buf: self.buf,
                pos: start,
                end: start + len,
            },
            offset,
        ))
    }
}

/// Reads column `c` (`rows` entries, or none when `present` is false),
/// calling `each(row, reader)` per row, and checks it used its declared bytes.
fn column(
    r: &mut Reader<'_>,
    c: usize,
    rows: usize,
    present: bool,
    mut each: impl FnMut(usize, &mut Reader<'_>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let (mut data, offset) = r.column(c)?;
    let start = data.pos;
    if present {
        for row in 0..rows {
            each(row, &mut data)?;
        }
    }
    if data.pos != data.end {
        return Err(DecodeError::ColumnLength {
            offset,
            column: col::NAMES[c],
            declared: data.end - start,
            used: data.pos - start,
        });
    }
    Ok(())
}

/// Picks one field of a row.
type FieldOf<T> = fn(&mut AttributedFlow) -> &mut T;

/// Reads the chunk at `at` into `flows`; returns where it ends.
fn read_chunk(
    bytes: &[u8],
    at: usize,
    flows: &mut Vec<AttributedFlow>,
) -> Result<usize, DecodeError> {
    let mut header = Reader {
        buf: bytes,
        pos: at,
        end: bytes.len(),
    };
    let magic = header.array::<4>("chunk header")?;
    if magic != layout::MAGIC {
        return Err(DecodeError::BadMagic {
            offset: at,
            found: magic,
        });
    }
    let version = header.u8("chunk header")?;
    if !(layout::OLDEST_READABLE_VERSION..=layout::VERSION).contains(&version) {
        return Err(DecodeError::UnsupportedVersion {
            offset: at,
            version,
        });
    }
    let flags = header.u8("chunk header")?;
    if flags & !layout::FLAG_PROCESS != 0 {
        return Err(DecodeError::UnknownFlags { offset: at, flags });
    }
    let process = flags & layout::FLAG_PROCESS != 0;
    let rows = u32::from_le_bytes(header.array("chunk header")?) as usize;
    let body_len = u32::from_le_bytes(header.array("chunk header")?) as usize;
    let body_start = header.pos;
    header.bytes(body_len, "chunk body")?;
    let mut r = Reader {
        buf: bytes,
        pos: body_start,
        end: body_start + body_len,
    };
    if rows > body_len / layout::min_row_bytes(version) {
        return Err(DecodeError::CountTooLarge {
            offset: at + 6,
            what: "rows",
            count: rows as u64,
            room: body_len,
        });
    }

    // Dictionaries.
    let n = r.count("plugin dictionary", 1)?;
    let mut plugins = Vec::with_capacity(n);
    for _ in 0..n {
        plugins.push(Arc::<str>::from(r.string("plugin name")?));
    }
    let n = r.count("workload dictionary", 3)?;
    let mut workloads = Vec::with_capacity(n);
    for _ in 0..n {
        workloads.push(Arc::new(r.workload()?));
    }
    let n = r.count("attribution dictionary", 5)?;
    let mut attributions = Vec::with_capacity(n);
    for _ in 0..n {
        let workload = r.index("attribution workload", workloads.len())?;
        let source = r.code("attribution source", layout::source_from)?;
        let plugin = r.index("attribution plugin", plugins.len())?;
        let start_ns = r.varint("attribution valid start")?;
        let end_ns = r.varint("attribution valid end")?;
        attributions.push(Attribution {
            workload: workloads[workload].clone(),
            source,
            plugin: plugins[plugin].clone(),
            valid: TimeRange::new(start_ns, end_ns),
        });
    }

    // Columns, into rows that start out blank.
    let first = flows.len();
    let unspecified = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0);
    flows.resize(
        first + rows,
        AttributedFlow {
            flow: Flow::tcp(unspecified, unspecified, 0),
            local: Side::Pending,
            remote: Side::Pending,
            weight: 0,
            record_id: 0,
        },
    );
    let rows_of = &mut flows[first..];
    let mut previous_start = 0u64;
    column(&mut r, col::START, rows, true, |i, d| {
        let delta = unzigzag(d.varint("start_ns")?);
        previous_start = previous_start.wrapping_add(delta as u64);
        rows_of[i].flow.start_ns = previous_start;
        Ok(())
    })?;
    column(&mut r, col::DURATION, rows, true, |i, d| {
        let f = &mut rows_of[i].flow;
        f.end_ns = f
            .start_ns
            .wrapping_add(unzigzag(d.varint("duration_ns")?) as u64);
        Ok(())
    })?;
    column(&mut r, col::PROTOCOL, rows, true, |i, d| {
        rows_of[i].flow.protocol = d.code("protocol", layout::protocol_from)?;
        Ok(())
    })?;
    column(&mut r, col::INITIATOR, rows, true, |i, d| {
        rows_of[i].flow.initiator = d.code("initiator", layout::initiator_from)?;
        Ok(())
    })?;
    column(&mut r, col::END_STATE, rows, true, |i, d| {
        rows_of[i].flow.end_state = d.code("end_state", layout::end_from)?;
        Ok(())
    })?;
    let mut families = vec![0u8; rows];
    column(&mut r, col::FAMILIES, rows, true, |i, d| {
        let offset = d.pos;
        families[i] = d.u8("families")?;
        if families[i] & !(layout::LOCAL_V6 | layout::REMOTE_V6) != 0 {
            return Err(DecodeError::InvalidValue {
                offset,
                what: "families",
                value: families[i].into(),
            });
        }
        Ok(())
    })?;
    for (c, bit, local) in [
        (col::LOCAL_V4, 0, true),
        (col::LOCAL_V6, layout::LOCAL_V6, true),
        (col::REMOTE_V4, 0, false),
        (col::REMOTE_V6, layout::REMOTE_V6, false),
    ] {
        let side_bit = if local {
            layout::LOCAL_V6
        } else {
            layout::REMOTE_V6
        };
        column(&mut r, c, rows, true, |i, d| {
            if families[i] & side_bit != bit {
                return Ok(());
            }
            let ip = if bit == 0 {
                IpAddr::V4(Ipv4Addr::from(d.array::<4>(col::NAMES[c])?))
            } else {
                IpAddr::V6(Ipv6Addr::from(d.array::<16>(col::NAMES[c])?))
            };
            let f = &mut rows_of[i].flow;
            if local {
                f.local.set_ip(ip);
            } else {
                f.remote.set_ip(ip);
            }
            Ok(())
        })?;
    }
    column(&mut r, col::LOCAL_PORT, rows, true, |i, d| {
        let port = u16::from_le_bytes(d.array("local_port")?);
        rows_of[i].flow.local.set_port(port);
        Ok(())
    })?;
    column(&mut r, col::REMOTE_PORT, rows, true, |i, d| {
        let port = u16::from_le_bytes(d.array("remote_port")?);
        rows_of[i].flow.remote.set_port(port);
        Ok(())
    })?;
    let counters: [(usize, FieldOf<u64>); 4] = [
        (col::BYTES_SENT, |f| &mut f.flow.bytes_sent),
        (col::BYTES_RECEIVED, |f| &mut f.flow.bytes_received),
        (col::PACKETS_SENT, |f| &mut f.flow.packets_sent),
        (col::PACKETS_RECEIVED, |f| &mut f.flow.packets_received),
    ];
    for (c, field) in counters {
        column(&mut r, c, rows, true, |i, d| {
            *field(&mut rows_of[i]) = d.varint(col::NAMES[c])?;
            Ok(())
        })?;
    }
    column(&mut r, col::RETRANSMITS, rows, true, |i, d| {
        rows_of[i].flow.retransmits = d.varint_u32("retransmits")?;
        Ok(())
    })?;
    column(&mut r, col::SRTT_US, rows, true, |i, d| {
        rows_of[i].flow.srtt_us = d.varint_u32("srtt_us")?;
        Ok(())
    })?;
    column(&mut r, col::PID, rows, process, |i, d| {
        rows_of[i].flow.pid = d.varint_u32("pid")?;
        Ok(())
    })?;
    column(&mut r, col::CGROUP_ID, rows, process, |i, d| {
        rows_of[i].flow.cgroup_id = d.varint("cgroup_id")?;
        Ok(())
    })?;
    column(&mut r, col::NETNS_ID, rows, process, |i, d| {
        rows_of[i].flow.netns_id = d.varint("netns_id")?;
        Ok(())
    })?;
    column(&mut r, col::WEIGHT, rows, true, |i, d| {
        rows_of[i].weight = d.varint_u32("weight")?;
        Ok(())
    })?;
    for (c, local) in [(col::LOCAL_SIDE, true), (col::REMOTE_SIDE, false)] {
        column(&mut r, c, rows, true, |i, d| {
            let offset = d.pos;
            let code = d.varint(col::NAMES[c])?;
            let side = if code == layout::SIDE_PENDING {
                Side::Pending
            } else if code < layout::SIDE_ATTRIBUTED {
                Side::Unattributed(layout::reason_from(code).ok_or(DecodeError::InvalidValue {
                    offset,
                    what: col::NAMES[c],
                    value: code,
                })?)
            } else {
                let k = code - layout::SIDE_ATTRIBUTED;
                let a = usize::try_from(k).ok().and_then(|k| attributions.get(k));
                let a = a.ok_or(DecodeError::IndexOutOfRange {
                    offset,
                    what: col::NAMES[c],
                    index: k,
                    len: attributions.len(),
                })?;
                Side::Attributed(a.clone())
            };
            if local {
                rows_of[i].local = side;
            } else {
                rows_of[i].remote = side;
            }
            Ok(())
        })?;
    }
    if version >= 3 {
        column(&mut r, col::RECORD_ID, rows, true, |i, d| {
            rows_of[i].record_id = u64::from_le_bytes(d.array("record_id")?);
            Ok(())
        })?;
    }
    if r.pos != r.end {
        return Err(DecodeError::BodyLength {
            offset: at,
            declared: body_len,
            used: r.pos - body_start,
        });
    }
    Ok(r.end)
}
