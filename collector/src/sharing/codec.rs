//! The wire format of shared ownership ranges and completeness watermarks:
//! pure encoding and decoding, no Kafka.
//!
//! The sharing topic carries two kinds of message, both JSON with a format
//! version `v` and the publishing collector's name `origin`.
//!
//! **Range messages** carry every changed range of **one address** from one
//! collector. Their Kafka key is the address as text, so all updates of an
//! address go to one partition and stay in order there:
//!
//! ```json
//! {"v":1,"origin":"collector-a","ip":"10.0.0.7","ranges":[
//!   {"workload":{"id":"api-1","app":"api"},"start_ns":100,"end_ns":160,"claimant":"agent-1"}]}
//! ```
//!
//! **Watermark messages** carry the completeness watermarks of agents
//! connected to the publishing collector (see [`crate::completeness`]), up
//! to [`MAX_MARKS_PER_MESSAGE`] of them. Their key is `marks/<origin>`, so
//! one collector's watermarks stay in order on one partition (order does
//! not matter for correctness: a watermark and its `heard_ns` only move
//! forward, and the reader keeps the highest), and a key can never be
//! mistaken for an address:
//!
//! ```json
//! {"v":1,"origin":"collector-a","marks":[
//!   {"claimant":"agent-1","watermark_ns":1767225600000000000,"heard_ns":1767225601000000000}]}
//! ```
//!
//! Both times are on the publishing collector's clock, as the completeness
//! keeps them. A message with a `marks` field is a watermark message; one
//! that has `marks` and also `ip` or `ranges` is refused (which kind it is
//! would be a guess).
//!
//! - `v` is the **major** format version. Fields may be added without
//!   changing it (readers ignore fields they do not know, also inside
//!   `workload` and inside a mark); it changes only when an old reader
//!   would misread a new message, and a reader refuses versions newer than
//!   its own. Watermark messages did not need a new version: a reader from
//!   before them finds no `ip` and refuses them as `syntax` (counted,
//!   nothing applied), which is what a collector not yet upgraded does
//!   with them during a rolling upgrade.
//! - `origin` names the publishing collector, so a collector can recognise
//!   its own messages.
//! - Every message is checked whole before anything of it is used: a
//!   message with one bad range or mark is refused entirely
//!   ([`DecodeError`], with a [`MalformedReason`] for counting).
//! - Decoding bounds what one watermark message may make a reader hold: at
//!   most [`MAX_MARKS_PER_MESSAGE`] marks, claimant names of at most
//!   [`MAX_CLAIMANT_LEN`] bytes; past either, the message is refused as
//!   `limit`. Encoding never writes such a message (see [`encode_marks`]).
//!
//! ```
//! use std::sync::Arc;
//! use flowattr_collector::{ownership::RangeUpdate, sharing::codec};
//! use flowattr_model::{TimeRange, Workload};
//!
//! let update = RangeUpdate {
//!     ip: "10.0.0.7".parse().unwrap(),
//!     workload: Arc::new(Workload::with_id("api-1")),
//!     range: TimeRange::new(100, 160),
//!     claimant: "agent-1".into(),
//! };
//! let messages = codec::encode("collector-a", &[update.clone()]);
//! assert_eq!(messages.len(), 1);
//! assert_eq!(messages[0].key, "10.0.0.7");
//! let decoded = codec::decode(Some(messages[0].key.as_bytes()), &messages[0].payload).unwrap();
//! assert_eq!(&*decoded.origin, "collector-a");
//! assert_eq!(decoded.content, codec::Content::Ranges(vec![update]));
//! ```
//!
//! ```
//! use flowattr_collector::{
//!     completeness::{Mark, SharedMark},
//!     sharing::codec,
//! };
//!
//! let mark = SharedMark {
//!     claimant: "agent-1".into(),
//!     mark: Mark { watermark_ns: 100, heard_ns: 120 },
//! };
//! let messages = codec::encode_marks("collector-a", &[mark.clone()]);
//! assert_eq!(messages[0].key, "marks/collector-a");
//! let decoded = codec::decode(Some(messages[0].key.as_bytes()), &messages[0].payload).unwrap();
//! assert_eq!(decoded.content, codec::Content::Marks(vec![mark]));
//! ```

use std::{borrow::Cow, collections::BTreeMap, net::IpAddr, sync::Arc};

use flowattr_model::{TimeRange, Workload};
use serde::{Deserialize, Serialize, de::IgnoredAny};

use crate::{
    completeness::{Mark, SharedMark},
    ownership::RangeUpdate,
};

/// The major format version this collector writes and reads.
pub const FORMAT_VERSION: u64 = 1;

/// At most this many ranges go in one message; an address with more is
/// split over several messages (same key, so still in order). Keeps a
/// message far below Kafka's default 1 MB limit.
pub const MAX_RANGES_PER_MESSAGE: usize = 256;

/// At most this many marks go in one watermark message (more are split
/// over several), and a reader refuses a message with more. With claimants
/// at their longest a message stays under 200 KB.
pub const MAX_MARKS_PER_MESSAGE: usize = 512;

/// The longest claimant name (bytes) a watermark message may carry: an
/// agent's certificate name, at most a DNS name's 253 bytes in practice.
pub const MAX_CLAIMANT_LEN: usize = 256;

/// The longest origin name (bytes) a message may carry.
pub const MAX_ORIGIN_LEN: usize = 256;

/// The longest workload field (id, app, cluster, stack, account, region,
/// a label's key or value), in bytes.
pub const MAX_FIELD_LEN: usize = 1024;

/// At most this many labels per workload.
pub const MAX_LABELS: usize = 64;

/// The largest message read by default (Kafka's default message limit);
/// a larger one is refused before it is parsed.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_000_000;

/// The key of watermark messages is this, then the origin.
pub const MARKS_KEY_PREFIX: &str = "marks/";

/// One message ready to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The Kafka message key: the address as text, or
    /// [`MARKS_KEY_PREFIX`] and the origin.
    pub key: String,
    /// The JSON value.
    pub payload: Vec<u8>,
}

/// A valid message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The collector that published it.
    pub origin: Arc<str>,
    pub content: Content,
}

/// What a valid message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Ranges, all of one address (at least one).
    Ranges(Vec<RangeUpdate>),
    /// Agents' completeness watermarks (at least one, at most
    /// [`MAX_MARKS_PER_MESSAGE`]), in the order written.
    Marks(Vec<SharedMark>),
}

/// Why a message was refused. Nothing of a refused message is used.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The value is not JSON of the message's shape.
    #[error("the message is not an ownership update: {0}")]
    Syntax(#[source] serde_json::Error),
    /// The value has no format version.
    #[error("the message has no format version (`v`)")]
    MissingVersion,
    /// The format version is not one this collector reads.
    #[error(
        "the message has format version {found}; this collector reads version {}",
        FORMAT_VERSION
    )]
    UnsupportedVersion { found: u64 },
    /// The `ip` field is not an address.
    #[error("the message's address {ip:?} is not an IP address")]
    BadIp { ip: String },
    /// The message has no key, or its key is not its address.
    #[error("the message's key {key:?} does not match its address {ip}")]
    KeyMismatch { key: Option<String>, ip: IpAddr },
    /// A range ends before it starts.
    #[error("range {index} of the message ends ({end_ns}) before it starts ({start_ns})")]
    InvalidRange {
        index: usize,
        start_ns: u64,
        end_ns: u64,
    },
    /// A range's workload has an empty id.
    #[error("range {index} of the message has an empty workload id")]
    EmptyWorkloadId { index: usize },
    /// A range has an empty claimant.
    #[error("range {index} of the message has an empty claimant")]
    EmptyClaimant { index: usize },
    /// The message does not say which collector published it.
    #[error("the message has an empty origin")]
    EmptyOrigin,
    /// The message carries no range.
    #[error("the message carries no range")]
    NoRanges,
    /// The message has `marks` and also `ip` or `ranges`.
    #[error("the message carries both watermarks and ranges")]
    MixedKinds,
    /// A watermark message's key is not [`MARKS_KEY_PREFIX`] and its origin.
    #[error(
        "the watermark message's key {key:?} is not \"{MARKS_KEY_PREFIX}\" and its origin {origin:?}"
    )]
    MarksKeyMismatch { key: Option<String>, origin: String },
    /// A watermark message carries no mark.
    #[error("the watermark message carries no mark")]
    NoMarks,
    /// A watermark message carries more than [`MAX_MARKS_PER_MESSAGE`] marks.
    #[error(
        "the watermark message carries {count} marks; at most {} are read",
        MAX_MARKS_PER_MESSAGE
    )]
    TooManyMarks { count: usize },
    /// A mark has an empty claimant.
    #[error("mark {index} of the message has an empty claimant")]
    EmptyMarkClaimant { index: usize },
    /// A mark's or range's claimant is longer than [`MAX_CLAIMANT_LEN`]
    /// bytes.
    #[error(
        "mark or range {index} of the message names a claimant of {len} bytes; at most {} are read",
        MAX_CLAIMANT_LEN
    )]
    ClaimantTooLong { index: usize, len: usize },
    /// The message is larger than the reader takes.
    #[error("the message has {len} bytes; at most {max} are read")]
    TooLarge { len: usize, max: usize },
    /// A range message carries more than [`MAX_RANGES_PER_MESSAGE`] ranges.
    #[error(
        "the message carries {count} ranges; at most {} are read",
        MAX_RANGES_PER_MESSAGE
    )]
    TooManyRanges { count: usize },
    /// The origin is longer than [`MAX_ORIGIN_LEN`] bytes.
    #[error(
        "the message's origin has {len} bytes; at most {} are read",
        MAX_ORIGIN_LEN
    )]
    OriginTooLong { len: usize },
    /// A workload field is longer than [`MAX_FIELD_LEN`] bytes, or a
    /// workload has more than [`MAX_LABELS`] labels.
    #[error("range {index} of the message has a workload past the limits ({what})")]
    WorkloadTooLarge { index: usize, what: &'static str },
}

/// The kind of a [`DecodeError`], for counters and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MalformedReason {
    Syntax,
    Version,
    Ip,
    Key,
    Range,
    Workload,
    Claimant,
    Origin,
    Empty,
    /// Past a decode-side limit (message bytes, ranges or marks per
    /// message, string lengths, labels).
    Limit,
    /// Authentication (see [`auth`](super::auth)): no signature headers.
    Unsigned,
    /// Signed by an origin this reader does not trust.
    UnknownOrigin,
    /// Signed with a key this reader does not trust for its origin.
    UnknownKey,
    /// The signature does not verify (forged or altered).
    BadSignature,
    /// The payload's origin is not the signed origin.
    OriginMismatch,
    /// A range or mark for a claimant its origin may not speak for.
    NotAllowed,
}

impl MalformedReason {
    /// Every reason, in the order of [`MalformedReason::index`].
    pub const ALL: [MalformedReason; 16] = [
        Self::Syntax,
        Self::Version,
        Self::Ip,
        Self::Key,
        Self::Range,
        Self::Workload,
        Self::Claimant,
        Self::Origin,
        Self::Empty,
        Self::Limit,
        Self::Unsigned,
        Self::UnknownOrigin,
        Self::UnknownKey,
        Self::BadSignature,
        Self::OriginMismatch,
        Self::NotAllowed,
    ];

    /// Position in [`MalformedReason::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Stable name for metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Syntax => "syntax",
            Self::Version => "version",
            Self::Ip => "ip",
            Self::Key => "key",
            Self::Range => "range",
            Self::Workload => "workload",
            Self::Claimant => "claimant",
            Self::Origin => "origin",
            Self::Empty => "empty",
            Self::Limit => "limit",
            Self::Unsigned => "unsigned",
            Self::UnknownOrigin => "unknown_origin",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::OriginMismatch => "origin_mismatch",
            Self::NotAllowed => "not_allowed",
        }
    }
}

impl DecodeError {
    pub fn reason(&self) -> MalformedReason {
        match self {
            Self::Syntax(_) | Self::MixedKinds => MalformedReason::Syntax,
            Self::MissingVersion | Self::UnsupportedVersion { .. } => MalformedReason::Version,
            Self::BadIp { .. } => MalformedReason::Ip,
            Self::KeyMismatch { .. } | Self::MarksKeyMismatch { .. } => MalformedReason::Key,
            Self::InvalidRange { .. } => MalformedReason::Range,
            Self::EmptyWorkloadId { .. } => MalformedReason::Workload,
            Self::EmptyClaimant { .. } | Self::EmptyMarkClaimant { .. } => {
                MalformedReason::Claimant
            }
            Self::EmptyOrigin => MalformedReason::Origin,
            Self::NoRanges | Self::NoMarks => MalformedReason::Empty,
            Self::TooManyMarks { .. }
            | Self::ClaimantTooLong { .. }
            | Self::TooLarge { .. }
            | Self::TooManyRanges { .. }
            | Self::OriginTooLong { .. }
            | Self::WorkloadTooLarge { .. } => MalformedReason::Limit,
        }
    }
}

// What is written. Borrowed, so encoding copies nothing but the bytes.
#[derive(Serialize)]
struct OutMessage<'a> {
    v: u64,
    origin: &'a str,
    ip: &'a str,
    ranges: Vec<OutRange<'a>>,
}

#[derive(Serialize)]
struct OutRange<'a> {
    workload: &'a Workload,
    start_ns: u64,
    end_ns: u64,
    claimant: &'a str,
}

#[derive(Serialize)]
struct OutMarks<'a> {
    v: u64,
    origin: &'a str,
    marks: Vec<OutMark<'a>>,
}

#[derive(Serialize)]
struct OutMark<'a> {
    claimant: &'a str,
    watermark_ns: u64,
    heard_ns: u64,
}

// What is read. Lenient: unknown fields are ignored (the model's `Workload`
// refuses them, so the wire has its own).
#[derive(Deserialize)]
struct Header {
    v: Option<u64>,
    // Only whether they are there: which kind of message this is.
    #[serde(default)]
    marks: Option<IgnoredAny>,
    #[serde(default)]
    ip: Option<IgnoredAny>,
    #[serde(default)]
    ranges: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct InMarks<'a> {
    #[serde(borrow)]
    origin: Cow<'a, str>,
    // Counted before they are taken: a message with more than the limit is
    // refused without keeping them (see `BoundedMarks`).
    #[serde(borrow)]
    marks: BoundedMarks<'a>,
}

#[derive(Deserialize)]
struct InMark<'a> {
    #[serde(borrow)]
    claimant: Cow<'a, str>,
    watermark_ns: u64,
    heard_ns: u64,
}

/// The elements of a list, or how many there were past the limit `N`:
/// the sequence is read one element at a time and stops keeping them (it
/// still checks the syntax) once past `N`, so a huge message costs no
/// memory beyond the limit.
enum Bounded<T, const N: usize> {
    Within(Vec<T>),
    Over(usize),
}

type BoundedMarks<'a> = Bounded<InMark<'a>, MAX_MARKS_PER_MESSAGE>;
type BoundedRanges<'a> = Bounded<InRange<'a>, MAX_RANGES_PER_MESSAGE>;

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Bounded<T, N> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T, const N: usize>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> serde::de::Visitor<'de> for Visit<T, N> {
            type Value = Bounded<T, N>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "a list of at most {N} elements")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<T>()? {
                    if items.len() == N {
                        let mut count = items.len() + 1;
                        while seq.next_element::<IgnoredAny>()?.is_some() {
                            count += 1;
                        }
                        return Ok(Bounded::Over(count));
                    }
                    items.push(item);
                }
                Ok(Bounded::Within(items))
            }
        }
        d.deserialize_seq(Visit(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct InMessage<'a> {
    #[serde(borrow)]
    origin: Cow<'a, str>,
    #[serde(borrow)]
    ip: Cow<'a, str>,
    #[serde(borrow)]
    ranges: BoundedRanges<'a>,
}

// Strings are borrowed from the payload where they can be (no escapes), so
// their lengths are checked before any is copied.
#[derive(Deserialize)]
struct InRange<'a> {
    #[serde(borrow)]
    workload: InWorkload<'a>,
    start_ns: u64,
    end_ns: u64,
    #[serde(borrow)]
    claimant: Cow<'a, str>,
}

#[derive(Deserialize)]
struct InWorkload<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(default, borrow)]
    app: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    cluster: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    stack: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    account: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    region: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    labels: BTreeMap<Cow<'a, str>, Cow<'a, str>>,
}

impl InWorkload<'_> {
    /// Which limit the workload is past, if any.
    fn past_limits(&self) -> Option<&'static str> {
        let long = |s: &Option<Cow<'_, str>>| s.as_ref().is_some_and(|s| s.len() > MAX_FIELD_LEN);
        if self.id.len() > MAX_FIELD_LEN {
            return Some("id");
        }
        if [
            &self.app,
            &self.cluster,
            &self.stack,
            &self.account,
            &self.region,
        ]
        .into_iter()
        .any(long)
        {
            return Some("field");
        }
        if self.labels.len() > MAX_LABELS {
            return Some("labels");
        }
        if self
            .labels
            .iter()
            .any(|(k, v)| k.len() > MAX_FIELD_LEN || v.len() > MAX_FIELD_LEN)
        {
            return Some("label");
        }
        None
    }

    fn into_workload(self) -> Workload {
        let own = |s: Option<Cow<'_, str>>| s.map(Cow::into_owned);
        Workload {
            id: self.id.into_owned(),
            app: own(self.app),
            cluster: own(self.cluster),
            stack: own(self.stack),
            account: own(self.account),
            region: own(self.region),
            labels: self
                .labels
                .into_iter()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        }
    }
}

/// Whether every reader would take a range of this update (its workload
/// and claimant within the limits).
pub fn valid_update(u: &RangeUpdate) -> bool {
    let w = &u.workload;
    let short = |s: &Option<String>| s.as_ref().is_none_or(|s| s.len() <= MAX_FIELD_LEN);
    valid_claimant(&u.claimant)
        && !w.id.is_empty()
        && w.id.len() <= MAX_FIELD_LEN
        && [&w.app, &w.cluster, &w.stack, &w.account, &w.region]
            .into_iter()
            .all(short)
        && w.labels.len() <= MAX_LABELS
        && w.labels
            .iter()
            .all(|(k, v)| k.len() <= MAX_FIELD_LEN && v.len() <= MAX_FIELD_LEN)
}

/// The text form of an address used for keys: IPv4-mapped IPv6 addresses
/// are written as IPv4, like the ownership table reports them.
pub fn key_of(ip: IpAddr) -> String {
    ip.to_canonical().to_string()
}

/// Coalesces `updates` per address: one message per address (more only
/// past [`MAX_RANGES_PER_MESSAGE`]), addresses in ascending order, ranges
/// in their given order. An update every reader would refuse (see
/// [`valid_update`]) is left out rather than make its whole message
/// refused; check with [`valid_update`] first to count them.
pub fn encode(origin: &str, updates: &[RangeUpdate]) -> Vec<Encoded> {
    let mut by_ip: BTreeMap<IpAddr, Vec<&RangeUpdate>> = BTreeMap::new();
    for u in updates.iter().filter(|u| valid_update(u)) {
        by_ip.entry(u.ip.to_canonical()).or_default().push(u);
    }
    let mut out = Vec::with_capacity(by_ip.len());
    for (ip, ranges) in by_ip {
        let key = key_of(ip);
        for chunk in ranges.chunks(MAX_RANGES_PER_MESSAGE) {
            let message = OutMessage {
                v: FORMAT_VERSION,
                origin,
                ip: &key,
                ranges: chunk
                    .iter()
                    .map(|u| OutRange {
                        workload: &u.workload,
                        start_ns: u.range.start_ns,
                        end_ns: u.range.end_ns,
                        claimant: &u.claimant,
                    })
                    .collect(),
            };
            let payload =
                serde_json::to_vec(&message).expect("a message of strings and numbers serializes");
            out.push(Encoded {
                key: key.clone(),
                payload,
            });
        }
    }
    out
}

/// Whether every reader would take a mark with this claimant.
pub fn valid_claimant(claimant: &str) -> bool {
    !claimant.is_empty() && claimant.len() <= MAX_CLAIMANT_LEN
}

/// The key of `origin`'s watermark messages.
pub fn marks_key(origin: &str) -> String {
    format!("{MARKS_KEY_PREFIX}{origin}")
}

/// Watermark messages for `marks`, [`MAX_MARKS_PER_MESSAGE`] to a message,
/// in their given order. A mark whose claimant every reader would refuse
/// (see [`valid_claimant`]) is left out rather than make its whole message
/// refused; check with [`valid_claimant`] first to count them.
pub fn encode_marks(origin: &str, marks: &[SharedMark]) -> Vec<Encoded> {
    let valid: Vec<&SharedMark> = marks
        .iter()
        .filter(|m| valid_claimant(&m.claimant))
        .collect();
    let key = marks_key(origin);
    valid
        .chunks(MAX_MARKS_PER_MESSAGE)
        .map(|chunk| {
            let message = OutMarks {
                v: FORMAT_VERSION,
                origin,
                marks: chunk
                    .iter()
                    .map(|m| OutMark {
                        claimant: &m.claimant,
                        watermark_ns: m.mark.watermark_ns,
                        heard_ns: m.mark.heard_ns,
                    })
                    .collect(),
            };
            Encoded {
                key: key.clone(),
                payload: serde_json::to_vec(&message)
                    .expect("a message of strings and numbers serializes"),
            }
        })
        .collect()
}

/// [`decode`], refusing a payload over `max_bytes` before it is parsed.
pub fn decode_within(
    key: Option<&[u8]>,
    payload: &[u8],
    max_bytes: usize,
) -> Result<Decoded, DecodeError> {
    if payload.len() > max_bytes {
        return Err(DecodeError::TooLarge {
            len: payload.len(),
            max: max_bytes,
        });
    }
    decode(key, payload)
}

/// Checks and decodes one message (its Kafka key and value), of either
/// kind, within the limits (ranges and marks per message, string lengths);
/// see [`decode_within`] for the size.
pub fn decode(key: Option<&[u8]>, payload: &[u8]) -> Result<Decoded, DecodeError> {
    // The version first, so a newer format is refused as such even when its
    // shape changed.
    let header: Header = serde_json::from_slice(payload).map_err(DecodeError::Syntax)?;
    match header.v {
        None => return Err(DecodeError::MissingVersion),
        Some(FORMAT_VERSION) => {}
        Some(found) => return Err(DecodeError::UnsupportedVersion { found }),
    }
    if header.marks.is_some() {
        if header.ip.is_some() || header.ranges.is_some() {
            return Err(DecodeError::MixedKinds);
        }
        return decode_marks(key, payload);
    }
    let message: InMessage<'_> = serde_json::from_slice(payload).map_err(DecodeError::Syntax)?;
    let ip: IpAddr = message.ip.parse().map_err(|_| DecodeError::BadIp {
        ip: message.ip.clone().into_owned(),
    })?;
    let ip = ip.to_canonical();
    let key_ip = key
        .and_then(|k| std::str::from_utf8(k).ok())
        .and_then(|k| k.parse::<IpAddr>().ok())
        .map(|k| k.to_canonical());
    if key_ip != Some(ip) {
        return Err(DecodeError::KeyMismatch {
            key: key.map(|k| String::from_utf8_lossy(k).into_owned()),
            ip,
        });
    }
    if message.origin.is_empty() {
        return Err(DecodeError::EmptyOrigin);
    }
    if message.origin.len() > MAX_ORIGIN_LEN {
        return Err(DecodeError::OriginTooLong {
            len: message.origin.len(),
        });
    }
    let ranges = match message.ranges {
        Bounded::Over(count) => return Err(DecodeError::TooManyRanges { count }),
        Bounded::Within(ranges) => ranges,
    };
    if ranges.is_empty() {
        return Err(DecodeError::NoRanges);
    }
    for (index, r) in ranges.iter().enumerate() {
        if r.end_ns < r.start_ns {
            return Err(DecodeError::InvalidRange {
                index,
                start_ns: r.start_ns,
                end_ns: r.end_ns,
            });
        }
        if r.workload.id.is_empty() {
            return Err(DecodeError::EmptyWorkloadId { index });
        }
        if r.claimant.is_empty() {
            return Err(DecodeError::EmptyClaimant { index });
        }
        if r.claimant.len() > MAX_CLAIMANT_LEN {
            return Err(DecodeError::ClaimantTooLong {
                index,
                len: r.claimant.len(),
            });
        }
        if let Some(what) = r.workload.past_limits() {
            return Err(DecodeError::WorkloadTooLarge { index, what });
        }
    }
    // Ranges of one message usually share workloads and claimants: one
    // `Arc` each.
    let mut workloads: Vec<Arc<Workload>> = Vec::new();
    let mut claimants: Vec<Arc<str>> = Vec::new();
    let updates = ranges
        .into_iter()
        .map(|r| {
            let workload = r.workload.into_workload();
            let workload = match workloads.iter().find(|w| ***w == workload) {
                Some(w) => w.clone(),
                None => {
                    let w = Arc::new(workload);
                    workloads.push(w.clone());
                    w
                }
            };
            let claimant = match claimants.iter().find(|c| ***c == *r.claimant) {
                Some(c) => c.clone(),
                None => {
                    let c: Arc<str> = r.claimant.as_ref().into();
                    claimants.push(c.clone());
                    c
                }
            };
            RangeUpdate {
                ip,
                workload,
                range: TimeRange::new(r.start_ns, r.end_ns),
                claimant,
            }
        })
        .collect();
    Ok(Decoded {
        origin: message.origin.into(),
        content: Content::Ranges(updates),
    })
}

fn decode_marks(key: Option<&[u8]>, payload: &[u8]) -> Result<Decoded, DecodeError> {
    let message: InMarks<'_> = serde_json::from_slice(payload).map_err(DecodeError::Syntax)?;
    if message.origin.is_empty() {
        return Err(DecodeError::EmptyOrigin);
    }
    let key_matches = key
        .and_then(|k| k.strip_prefix(MARKS_KEY_PREFIX.as_bytes()))
        .is_some_and(|k| k == message.origin.as_bytes());
    if !key_matches {
        return Err(DecodeError::MarksKeyMismatch {
            key: key.map(|k| String::from_utf8_lossy(k).into_owned()),
            origin: message.origin.into_owned(),
        });
    }
    if message.origin.len() > MAX_ORIGIN_LEN {
        return Err(DecodeError::OriginTooLong {
            len: message.origin.len(),
        });
    }
    let marks = match message.marks {
        Bounded::Over(count) => return Err(DecodeError::TooManyMarks { count }),
        Bounded::Within(marks) => marks,
    };
    if marks.is_empty() {
        return Err(DecodeError::NoMarks);
    }
    for (index, m) in marks.iter().enumerate() {
        if m.claimant.is_empty() {
            return Err(DecodeError::EmptyMarkClaimant { index });
        }
        if m.claimant.len() > MAX_CLAIMANT_LEN {
            return Err(DecodeError::ClaimantTooLong {
                index,
                len: m.claimant.len(),
            });
        }
    }
    Ok(Decoded {
        origin: message.origin.into(),
        content: Content::Marks(
            marks
                .into_iter()
                .map(|m| SharedMark {
                    claimant: m.claimant.as_ref().into(),
                    mark: Mark {
                        watermark_ns: m.watermark_ns,
                        heard_ns: m.heard_ns,
                    },
                })
                .collect(),
        ),
    })
}

#[cfg(test)]
mod tests;
