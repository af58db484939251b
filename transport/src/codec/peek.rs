//! Reading a batch's id from the start of a frame body that may be cut
//! short or malformed further on, so a refusal can name the batch.
//!
//! Walks the protobuf fields by hand: the frame's body (tag 2) is followed
//! into as far as the bytes go, and its id (tag 1, written first) is decoded
//! if it is complete.

use flowattr_model::BatchId;
use prost::Message as _;

use super::{convert::id_from_msg, wire::BatchIdMsg};

/// Field tags on the path to the batch id.
const FRAME_VERSION_TAG: u64 = 1;
const FRAME_BATCH_TAG: u64 = 2;
const BATCH_ID_TAG: u64 = 1;

/// Protobuf wire types.
const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const FIXED32: u64 = 5;

/// The batch id in `body` (a frame body, possibly only its first bytes),
/// when it can be read; `None` otherwise. Never panics.
pub fn peek_batch_id(body: &[u8]) -> Option<BatchId> {
    let (batch, _) = field(body, FRAME_BATCH_TAG)?;
    match field(batch, BATCH_ID_TAG)? {
        (id, true) => BatchIdMsg::decode(id).ok().map(id_from_msg),
        (_, false) => None,
    }
}

/// The frame's version when it is the body's first field (as encoders
/// write it).
pub(super) fn version(mut body: &[u8]) -> Option<u32> {
    let key = varint(&mut body)?;
    if key != (FRAME_VERSION_TAG << 3) | VARINT {
        return None;
    }
    u32::try_from(varint(&mut body)?).ok()
}

/// The contents of the first length-delimited field `tag` in `buf`, cut to
/// the bytes present, and whether they are whole; `None` when the field is
/// absent or the walk hits bad bytes.
fn field(mut buf: &[u8], tag: u64) -> Option<(&[u8], bool)> {
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let (field, wire_type) = (key >> 3, key & 7);
        match wire_type {
            VARINT => {
                varint(&mut buf)?;
            }
            FIXED64 => buf = buf.get(8..)?,
            FIXED32 => buf = buf.get(4..)?,
            LEN => {
                let len = usize::try_from(varint(&mut buf)?).ok()?;
                let end = len.min(buf.len());
                if field == tag {
                    return Some((&buf[..end], end == len));
                }
                buf = &buf[end..];
            }
            _ => return None,
        }
    }
    None
}

/// Reads a varint off the front of `buf`.
fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for (i, &byte) in buf.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Some(value);
        }
    }
    None
}
