//! What one batch frame may hold, checked on the encoded bytes before any
//! of it is decoded: protobuf lets a few bytes stand for an element of a
//! repeated field (two bytes make an empty flow, which decodes into a
//! ~200-byte struct), so a frame's size alone does not bound what decoding
//! it allocates. A 16 MiB frame of empty flows would be a gigabyte.
//!
//! The walk ([`check`]) counts the batch's flows, workloads, plugin names
//! and each workload's labels, and measures every string, stopping at the
//! first count past its limit; it allocates nothing.

use super::{
    DecodeError,
    scan::{Value, next_field},
};

/// Limits on one batch, checked before it is decoded. The defaults are
/// sized from real batches with ample room: an agent closes a batch at
/// 10,000 flows by default (`[batch] max_flows`), a node's workloads number
/// in the tens, a workload's labels in the tens, its strings (ids, names,
/// label keys and values, Kubernetes' limits included) in the hundreds of
/// bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Flows in one batch (default 100,000: ten agent batches).
    pub max_flows: usize,
    /// Workloads in one batch's dictionary (default 10,000).
    pub max_workloads: usize,
    /// Plugin names in one batch's dictionary (default 256).
    pub max_plugins: usize,
    /// Labels of one workload (default 256).
    pub max_labels: usize,
    /// Bytes of any one string: agent name, workload fields, label keys
    /// and values, plugin names (default 4 KiB).
    pub max_string_bytes: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_flows: 100_000,
            max_workloads: 10_000,
            max_plugins: 256,
            max_labels: 256,
            max_string_bytes: 4096,
        }
    }
}

/// Field tags the walk follows (see [`super::wire`]).
mod tag {
    pub const FRAME_BATCH: u64 = 2;
    pub const BATCH_ID: u64 = 1;
    pub const BATCH_WORKLOADS: u64 = 3;
    pub const BATCH_PLUGINS: u64 = 4;
    pub const BATCH_FLOWS: u64 = 5;
    pub const ID_AGENT: u64 = 1;
    /// Workload string fields: id, app, cluster, stack, account, region.
    pub const WORKLOAD_STRINGS: std::ops::RangeInclusive<u64> = 1..=6;
    pub const WORKLOAD_LABELS: u64 = 7;
    /// A map entry's key and value.
    pub const ENTRY_STRINGS: std::ops::RangeInclusive<u64> = 1..=2;
}

/// Checks a frame body against `limits`. A body that is not a batch passes
/// (it allocates no more than its own size); a batch over a limit is
/// [`DecodeError::OverLimit`], one whose fields cannot be walked is
/// [`DecodeError::Unwalkable`].
pub fn check(body: &[u8], limits: &DecodeLimits) -> Result<(), DecodeError> {
    let mut counts = Counts::default();
    fields(body, "frame", |t, v| match (t, v) {
        (tag::FRAME_BATCH, Value::Len(batch, _)) => check_batch(batch, limits, &mut counts),
        _ => Ok(()),
    })
}

/// Running counts over every piece of the batch (protobuf merges a message
/// given twice, so the pieces' repeated fields add up).
#[derive(Default)]
struct Counts {
    flows: usize,
    workloads: usize,
    plugins: usize,
}

fn check_batch(
    batch: &[u8],
    limits: &DecodeLimits,
    counts: &mut Counts,
) -> Result<(), DecodeError> {
    fields(batch, "batch", |t, v| {
        let Value::Len(bytes, _) = v else {
            return Ok(());
        };
        match t {
            tag::BATCH_FLOWS => bump(&mut counts.flows, limits.max_flows, "flows in a batch"),
            tag::BATCH_WORKLOADS => {
                bump(
                    &mut counts.workloads,
                    limits.max_workloads,
                    "workloads in a batch",
                )?;
                check_workload(bytes, limits)
            }
            tag::BATCH_PLUGINS => {
                bump(
                    &mut counts.plugins,
                    limits.max_plugins,
                    "plugin names in a batch",
                )?;
                string(bytes, limits)
            }
            tag::BATCH_ID => fields(bytes, "batch id", |t, v| match (t, v) {
                (tag::ID_AGENT, Value::Len(s, _)) => string(s, limits),
                _ => Ok(()),
            }),
            _ => Ok(()),
        }
    })
}

fn check_workload(workload: &[u8], limits: &DecodeLimits) -> Result<(), DecodeError> {
    let mut labels = 0;
    fields(workload, "workload", |t, v| match (t, v) {
        (t, Value::Len(s, _)) if tag::WORKLOAD_STRINGS.contains(&t) => string(s, limits),
        (tag::WORKLOAD_LABELS, Value::Len(entry, _)) => {
            bump(&mut labels, limits.max_labels, "labels of a workload")?;
            fields(entry, "label", |t, v| match (t, v) {
                (t, Value::Len(s, _)) if tag::ENTRY_STRINGS.contains(&t) => string(s, limits),
                _ => Ok(()),
            })
        }
        _ => Ok(()),
    })
}

/// Calls `each` with every field of `buf` (a whole message); a field that
/// cannot be read, or is cut short, is [`DecodeError::Unwalkable`].
fn fields<'a>(
    mut buf: &'a [u8],
    message: &'static str,
    mut each: impl FnMut(u64, Value<'a>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    while !buf.is_empty() {
        match next_field(&mut buf) {
            Some((_, Value::Len(_, false))) | None => {
                return Err(DecodeError::Unwalkable { message });
            }
            Some((t, value)) => each(t, value)?,
        }
    }
    Ok(())
}

fn bump(count: &mut usize, max: usize, what: &'static str) -> Result<(), DecodeError> {
    *count += 1;
    if *count > max {
        return Err(DecodeError::OverLimit {
            what,
            count: *count,
            max,
        });
    }
    Ok(())
}

fn string(s: &[u8], limits: &DecodeLimits) -> Result<(), DecodeError> {
    if s.len() > limits.max_string_bytes {
        return Err(DecodeError::OverLimit {
            what: "bytes of a string",
            count: s.len(),
            max: limits.max_string_bytes,
        });
    }
    Ok(())
}
