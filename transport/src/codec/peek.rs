//! Reading a batch's id from the start of a frame body that may be cut
//! short or malformed further on, so a refusal can name the batch.
//!
//! Walks the protobuf fields by hand ([`super::scan`]): the frame's body
//! (tag 2) is followed into as far as the bytes go, and its id (tag 1,
//! written first) is decoded if it is complete.

use flowattr_model::BatchId;
use prost::Message as _;

use super::{
    convert::id_from_msg,
    scan::{Value, next_field, varint},
    wire::BatchIdMsg,
};

/// Field tags on the path to the batch id.
const FRAME_VERSION_TAG: u64 = 1;
const FRAME_BATCH_TAG: u64 = 2;
const BATCH_ID_TAG: u64 = 1;

/// The key of the frame's version field: tag 1, wire type varint.
const VERSION_KEY: u64 = FRAME_VERSION_TAG << 3;

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
    if varint(&mut body)? != VERSION_KEY {
        return None;
    }
    u32::try_from(varint(&mut body)?).ok()
}

/// The contents of the first length-delimited field `tag` in `buf`, cut to
/// the bytes present, and whether they are whole; `None` when the field is
/// absent or the walk hits bad bytes.
fn field(mut buf: &[u8], tag: u64) -> Option<(&[u8], bool)> {
    while !buf.is_empty() {
        if let (t, Value::Len(bytes, whole)) = next_field(&mut buf)?
            && t == tag
        {
            return Some((bytes, whole));
        }
    }
    None
}
