//! The wire encoding of frames between agents and collectors: pure, no I/O.
//!
//! A frame is a `u32` big-endian length followed by that many bytes of one
//! protobuf message ([`wire`]'s `FrameMsg`): the protocol version and a
//! batch, an ack or a reject, and the time the sender sent it. A batch
//! writes each workload and plugin name once, in dictionaries its flows
//! refer to by index, so 10,000 flows of a few containers carry a few
//! workload records, not 10,000.
//!
//! A frame is encoded once (and spooled so); each send stamps its own copy
//! with the send time ([`stamp_sent`]), which appends a field rather than
//! encoding the body again.
//!
//! ```
//! use flowattr_model::FlowBatch;
//! use flowattr_transport::codec::{self, Frame, LENGTH_PREFIX};
//!
//! let batch = FlowBatch { agent: "a".into(), incarnation: 1, seq: 0, created_ns: 5, complete_until_ns: 4, flows: vec![] };
//! let mut bytes = Vec::new();
//! codec::encode_batch(&batch, &mut bytes).unwrap();
//! let frame = codec::decode_frame(&bytes, codec::DEFAULT_MAX_FRAME_BYTES).unwrap();
//! assert_eq!(frame, Frame::Batch(batch.clone()));
//!
//! codec::stamp_sent(&mut bytes, 6).unwrap();
//! let stamped = codec::decode_body_stamped(&bytes[LENGTH_PREFIX..]).unwrap();
//! assert_eq!(stamped, (Frame::Batch(batch), Some(6)));
//! ```

mod convert;
mod limits;
mod peek;
mod scan;
#[cfg(test)]
mod tests;
mod wire;

use flowattr_model::{BatchId, FlowBatch};
use prost::Message as _;

pub use limits::DecodeLimits;
pub use peek::peek_batch_id;
use wire::{AckMsg, Body, FrameMsg, RejectKindMsg, RejectMsg};

/// The protocol's major version, carried in every frame and in the ALPN
/// (the history is in [`wire`]'s documentation).
pub const PROTOCOL_VERSION: u32 = 2;

/// The oldest version whose frames are still decoded: each version since
/// only added fields and enum values, so frames spooled or journaled by an
/// older peer are read after an upgrade. Peers on the network must speak
/// [`PROTOCOL_VERSION`] ([`ALPN`]).
pub const OLDEST_READABLE_VERSION: u32 = 1;

/// The QUIC application protocol (ALPN) of this major version; a peer that
/// offers another is refused during the handshake.
pub const ALPN: &[u8] = b"flowattr/2";

/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// Bytes [`stamp_sent`] adds to a frame.
pub const SENT_STAMP_BYTES: usize = 9;

/// Bytes [`cap_watermark`] adds to a frame: the key of the frame's batch
/// body (tag 2, length-delimited), its length 9, the key of the batch's
/// `complete_until_ns` (tag 6, fixed64) and the value.
const WATERMARK_CAP: [u8; 3] = [(2 << 3) | 2, 9, (6 << 3) | 1];

/// The key of the frame's `sent_ns` field: tag 15, wire type fixed64.
const SENT_STAMP_KEY: u8 = (15 << 3) | 1;

/// The default largest frame body a receiver accepts (16 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 << 20;

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Flows for the collector (agent to collector).
    Batch(FlowBatch),
    /// The collector has taken responsibility for this batch.
    Ack(BatchId),
    /// The collector will not accept this batch; `id` is `None` when it
    /// could not be read.
    Reject {
        /// The batch, when the receiver could read its id.
        id: Option<BatchId>,
        /// Why, for the agent to act on.
        kind: RejectKind,
        /// Why, for the agent's log.
        reason: String,
    },
}

/// Why a batch was refused, so the agent knows whether to keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RejectKind {
    /// Not said: a receiver from before the kind existed, a refusal of
    /// none of the kinds below, or a kind this reader does not know.
    #[default]
    Unspecified,
    /// The frame could not be decoded, or was not a batch: these bytes
    /// will never be accepted, so the agent drops the batch.
    Malformed,
    /// The batch names another agent than the sender's certificate: it
    /// will be accepted once the two agree (a certificate issued for the
    /// name, or the agent run under its certificate's name), so the agent
    /// keeps it and offers it again.
    Identity,
    /// The sender's certificate is not in the collector's `[claims]`: it
    /// will be accepted once the collector lists it, so the agent keeps
    /// the batch and offers it again, as for [`RejectKind::Identity`].
    Unclaimed,
}

impl RejectKind {
    /// A short name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Malformed => "malformed",
            Self::Identity => "identity",
            Self::Unclaimed => "unclaimed",
        }
    }

    /// Whether the agent keeps a batch refused so and offers it again: the
    /// refusal is about who sent it, not what it holds.
    pub fn keeps_batch(self) -> bool {
        matches!(self, Self::Identity | Self::Unclaimed)
    }
}

impl std::fmt::Display for RejectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than the frame needs.
    #[error("truncated frame: expected {expected} bytes, got {got}")]
    Truncated { expected: usize, got: usize },
    /// The length prefix exceeds the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    Oversized { len: usize, max: usize },
    /// The body is not a valid protobuf message of the expected shape.
    #[error("malformed frame: {0}")]
    Malformed(#[source] prost::DecodeError),
    /// Bytes after the frame's end.
    #[error("{extra} bytes after the end of the frame")]
    TrailingBytes { extra: usize },
    /// An enum field holds a value this version does not know.
    #[error("bad value {value} for enum field {field}")]
    BadEnum { field: &'static str, value: i32 },
    /// A dictionary index past the end of its table.
    #[error("{field} index {index} out of range (table of {len})")]
    IndexOutOfRange {
        field: &'static str,
        index: u32,
        len: usize,
    },
    /// A number outside its field's range (such as a port above 65535).
    #[error("bad value {value} for field {field}")]
    BadValue { field: &'static str, value: u64 },
    /// A required field is absent.
    #[error("missing field {field}")]
    Missing { field: &'static str },
    /// The frame is of a protocol version this peer cannot read.
    #[error("frame of protocol version {got}, this peer speaks {expected}")]
    WrongVersion { got: u32, expected: u32 },
    /// The frame carries no body this version knows.
    #[error("frame of unknown kind")]
    UnknownKind,
    /// A batch holds more of something than [`DecodeLimits`] allow
    /// (checked before decoding).
    #[error("over a decoding limit: at least {count} {what}, at most {max} allowed")]
    OverLimit {
        what: &'static str,
        count: usize,
        max: usize,
    },
    /// A message whose fields cannot be walked (a bad key or wire type, a
    /// varint past 64 bits, a field running past its message's end).
    #[error("malformed frame: the {message} message is not protobuf")]
    Unwalkable { message: &'static str },
}

/// The class of a decode error, as receivers count them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Not a frame of the expected shape (including bad values and indexes).
    Malformed,
    /// Cut short.
    Truncated,
    /// Longer than the maximum.
    Oversized,
    /// Another protocol version.
    Version,
    /// Over a [`DecodeLimits`] limit.
    Limit,
}

impl ErrorClass {
    /// A short name, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Truncated => "truncated",
            Self::Oversized => "oversized",
            Self::Version => "version",
            Self::Limit => "over_limit",
        }
    }
}

impl DecodeError {
    /// The counter this error belongs to.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Truncated { .. } => ErrorClass::Truncated,
            Self::Oversized { .. } => ErrorClass::Oversized,
            Self::WrongVersion { .. } => ErrorClass::Version,
            Self::OverLimit { .. } => ErrorClass::Limit,
            Self::Malformed(_)
            | Self::Unwalkable { .. }
            | Self::TrailingBytes { .. }
            | Self::BadEnum { .. }
            | Self::IndexOutOfRange { .. }
            | Self::BadValue { .. }
            | Self::Missing { .. }
            | Self::UnknownKind => ErrorClass::Malformed,
        }
    }
}

/// A frame too large for its `u32` length prefix.
#[derive(Debug, thiserror::Error)]
#[error("frame of {len} bytes does not fit a 32-bit length")]
pub struct FrameTooLarge {
    /// The encoded body's length.
    pub len: usize,
}

/// A frame that [`stamp_sent`] cannot stamp.
#[derive(Debug, thiserror::Error)]
pub enum StampError {
    /// The bytes are not exactly one frame (a damaged spool file): sent as
    /// they are, the receiver's decoding says what is wrong.
    #[error("not one whole frame: its length prefix announces {announced} bytes, {present} follow")]
    NotOneFrame { announced: usize, present: usize },
    /// The stamp would not fit the length prefix.
    #[error(transparent)]
    TooLarge(#[from] FrameTooLarge),
}

/// Appends `batch` as one frame to `out`.
pub fn encode_batch(batch: &FlowBatch, out: &mut Vec<u8>) -> Result<(), FrameTooLarge> {
    encode(Body::Batch(convert::batch_to_msg(batch)), out)
}

/// Appends an ack of `id` as one frame to `out`.
pub fn encode_ack(id: &BatchId, out: &mut Vec<u8>) -> Result<(), FrameTooLarge> {
    let body = Body::Ack(AckMsg {
        id: Some(convert::id_to_msg(id)),
    });
    encode(body, out)
}

/// Appends a reject of `id` (when known) of `kind`, for `reason`, as one
/// frame to `out`.
pub fn encode_reject(
    id: Option<&BatchId>,
    kind: RejectKind,
    reason: &str,
    out: &mut Vec<u8>,
) -> Result<(), FrameTooLarge> {
    let kind = match kind {
        RejectKind::Unspecified => RejectKindMsg::Unspecified,
        RejectKind::Malformed => RejectKindMsg::Malformed,
        RejectKind::Identity => RejectKindMsg::Identity,
        RejectKind::Unclaimed => RejectKindMsg::Unclaimed,
    };
    let body = Body::Reject(RejectMsg {
        id: id.map(convert::id_to_msg),
        reason: reason.to_owned(),
        kind: kind as i32,
    });
    encode(body, out)
}

fn encode(body: Body, out: &mut Vec<u8>) -> Result<(), FrameTooLarge> {
    let msg = FrameMsg {
        version: PROTOCOL_VERSION,
        body: Some(body),
        sent_ns: None,
    };
    // The length is patched in afterwards: `Message::encode` would size the
    // whole message first, walking every flow once more. `encode_raw` is
    // the derive's own (hidden but required) trait method.
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX]);
    msg.encode_raw(out);
    let len = out.len() - start - LENGTH_PREFIX;
    let Ok(prefix) = u32::try_from(len) else {
        out.truncate(start);
        return Err(FrameTooLarge { len });
    };
    out[start..start + LENGTH_PREFIX].copy_from_slice(&prefix.to_be_bytes());
    Ok(())
}

/// Stamps `frame` (exactly one frame, length prefix included) with the
/// time it is sent, Unix nanoseconds on the sender's clock: appends the
/// frame's `sent_ns` field after the body and lengthens the prefix by
/// [`SENT_STAMP_BYTES`]. The body is not encoded again: protobuf merges
/// fields that follow a message's others, and of a field given twice the
/// last counts, so a stamped frame may be stamped again.
pub fn stamp_sent(frame: &mut Vec<u8>, sent_ns: u64) -> Result<(), StampError> {
    append_fields(frame, &[SENT_STAMP_KEY], sent_ns)
}

/// Sets the watermark (`complete_until_ns`) of the batch in `frame`
/// (exactly one batch frame) to `complete_until_ns`, without encoding it
/// again: appends the batch body once more with that field alone, which
/// protobuf merges into the body (the last value of a field counts). The
/// shipper lowers a batch's watermark this way while an older batch is
/// still unanswered.
pub fn cap_watermark(frame: &mut Vec<u8>, complete_until_ns: u64) -> Result<(), StampError> {
    append_fields(frame, &WATERMARK_CAP, complete_until_ns)
}

/// Appends `key` bytes and `value` (fixed64) to one whole frame, updating
/// its length prefix.
fn append_fields(frame: &mut Vec<u8>, key: &[u8], value: u64) -> Result<(), StampError> {
    let Some((prefix, body)) = frame.split_first_chunk::<LENGTH_PREFIX>() else {
        return Err(StampError::NotOneFrame {
            announced: 0,
            present: frame.len(),
        });
    };
    let announced = u32::from_be_bytes(*prefix) as usize;
    if announced != body.len() {
        return Err(StampError::NotOneFrame {
            announced,
            present: body.len(),
        });
    }
    let len = announced + key.len() + 8;
    let prefix = u32::try_from(len).map_err(|_| FrameTooLarge { len })?;
    frame[..LENGTH_PREFIX].copy_from_slice(&prefix.to_be_bytes());
    frame.extend_from_slice(key);
    frame.extend_from_slice(&value.to_le_bytes());
    Ok(())
}

/// The body length a length prefix announces, refused when it exceeds
/// `max_frame_bytes`.
pub fn body_length(
    prefix: [u8; LENGTH_PREFIX],
    max_frame_bytes: usize,
) -> Result<usize, DecodeError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max_frame_bytes {
        return Err(DecodeError::Oversized {
            len,
            max: max_frame_bytes,
        });
    }
    Ok(len)
}

/// Decodes exactly one whole frame (length prefix and body) from `bytes`,
/// within the default [`DecodeLimits`].
pub fn decode_frame(bytes: &[u8], max_frame_bytes: usize) -> Result<Frame, DecodeError> {
    let Some((prefix, rest)) = bytes.split_first_chunk::<LENGTH_PREFIX>() else {
        return Err(DecodeError::Truncated {
            expected: LENGTH_PREFIX,
            got: bytes.len(),
        });
    };
    let len = body_length(*prefix, max_frame_bytes)?;
    match rest.len().cmp(&len) {
        std::cmp::Ordering::Less => Err(DecodeError::Truncated {
            expected: LENGTH_PREFIX + len,
            got: bytes.len(),
        }),
        std::cmp::Ordering::Greater => Err(DecodeError::TrailingBytes {
            extra: rest.len() - len,
        }),
        std::cmp::Ordering::Equal => decode_body(rest),
    }
}

/// Decodes a frame body (the bytes after the length prefix), within the
/// default [`DecodeLimits`].
pub fn decode_body(body: &[u8]) -> Result<Frame, DecodeError> {
    decode_body_stamped(body).map(|(frame, _)| frame)
}

/// Decodes a frame body within the default [`DecodeLimits`], with the
/// sender's send time when it stamped one ([`stamp_sent`]; `None` from a
/// sender that does not).
pub fn decode_body_stamped(body: &[u8]) -> Result<(Frame, Option<u64>), DecodeError> {
    decode_body_limited(body, &DecodeLimits::default())
}

/// [`decode_body_stamped`] within `limits`, checked on the bytes before
/// anything is decoded.
pub fn decode_body_limited(
    body: &[u8],
    limits: &DecodeLimits,
) -> Result<(Frame, Option<u64>), DecodeError> {
    // Checked before decoding: another version's body may not parse at all.
    if let Some(got) = peek::version(body).filter(|&v| !readable(v)) {
        return Err(wrong_version(got));
    }
    limits::check(body, limits)?;
    let msg = FrameMsg::decode(body).map_err(DecodeError::Malformed)?;
    if !readable(msg.version) {
        return Err(wrong_version(msg.version));
    }
    let frame = match msg.body.ok_or(DecodeError::UnknownKind)? {
        Body::Batch(batch) => Frame::Batch(convert::batch_from_msg(batch)?),
        Body::Ack(ack) => {
            let id = ack.id.ok_or(DecodeError::Missing { field: "ack.id" })?;
            Frame::Ack(convert::id_from_msg(id))
        }
        Body::Reject(reject) => Frame::Reject {
            id: reject.id.map(convert::id_from_msg),
            kind: match RejectKindMsg::try_from(reject.kind) {
                Ok(RejectKindMsg::Malformed) => RejectKind::Malformed,
                Ok(RejectKindMsg::Identity) => RejectKind::Identity,
                Ok(RejectKindMsg::Unclaimed) => RejectKind::Unclaimed,
                Ok(RejectKindMsg::Unspecified) | Err(_) => RejectKind::Unspecified,
            },
            reason: reject.reason,
        },
    };
    Ok((frame, msg.sent_ns))
}

fn readable(version: u32) -> bool {
    (OLDEST_READABLE_VERSION..=PROTOCOL_VERSION).contains(&version)
}

fn wrong_version(got: u32) -> DecodeError {
    DecodeError::WrongVersion {
        got,
        expected: PROTOCOL_VERSION,
    }
}
