//! The wire format of shared ownership ranges: pure encoding and decoding,
//! no Kafka.
//!
//! One message carries every changed range of **one address** from one
//! collector. Its Kafka key is the address as text, so all updates of an
//! address go to one partition and stay in order there. The value is JSON:
//!
//! ```json
//! {"v":1,"origin":"collector-a","ip":"10.0.0.7","ranges":[
//!   {"workload":{"id":"api-1","app":"api"},"start_ns":100,"end_ns":160,"claimant":"agent-1"}]}
//! ```
//!
//! - `v` is the **major** format version. Fields may be added without
//!   changing it (readers ignore fields they do not know, also inside
//!   `workload`); it changes only when an old reader would misread a new
//!   message, and a reader refuses versions newer than its own.
//! - `origin` names the publishing collector, so a collector can recognise
//!   its own messages.
//! - Every message is checked whole before anything of it is used: a
//!   message with one bad range is refused entirely ([`DecodeError`], with a
//!   [`MalformedReason`] for counting).
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
//! assert_eq!(decoded.updates, vec![update]);
//! ```

use std::{borrow::Cow, collections::BTreeMap, net::IpAddr, sync::Arc};

use flowattr_model::{TimeRange, Workload};
use serde::{Deserialize, Serialize};

use crate::ownership::RangeUpdate;

/// The major format version this collector writes and reads.
pub const FORMAT_VERSION: u64 = 1;

/// At most this many ranges go in one message; an address with more is
/// split over several messages (same key, so still in order). Keeps a
/// message far below Kafka's default 1 MB limit.
pub const MAX_RANGES_PER_MESSAGE: usize = 256;

/// One message ready to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// The address as text (the Kafka message key).
    pub key: String,
    /// The JSON value.
    pub payload: Vec<u8>,
}

/// A valid message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The collector that published it.
    pub origin: Arc<str>,
    /// Its ranges, all of one address.
    pub updates: Vec<RangeUpdate>,
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
}

impl MalformedReason {
    /// Every reason, in the order of [`MalformedReason::index`].
    pub const ALL: [MalformedReason; 9] = [
        Self::Syntax,
        Self::Version,
        Self::Ip,
        Self::Key,
        Self::Range,
        Self::Workload,
        Self::Claimant,
        Self::Origin,
        Self::Empty,
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
        }
    }
}

impl DecodeError {
    pub fn reason(&self) -> MalformedReason {
        match self {
            Self::Syntax(_) => MalformedReason::Syntax,
            Self::MissingVersion | Self::UnsupportedVersion { .. } => MalformedReason::Version,
            Self::BadIp { .. } => MalformedReason::Ip,
            Self::KeyMismatch { .. } => MalformedReason::Key,
            Self::InvalidRange { .. } => MalformedReason::Range,
            Self::EmptyWorkloadId { .. } => MalformedReason::Workload,
            Self::EmptyClaimant { .. } => MalformedReason::Claimant,
            Self::EmptyOrigin => MalformedReason::Origin,
            Self::NoRanges => MalformedReason::Empty,
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

// What is read. Lenient: unknown fields are ignored (the model's `Workload`
// refuses them, so the wire has its own).
#[derive(Deserialize)]
struct Header {
    v: Option<u64>,
}

#[derive(Deserialize)]
struct InMessage<'a> {
    #[serde(borrow)]
    origin: Cow<'a, str>,
    #[serde(borrow)]
    ip: Cow<'a, str>,
    ranges: Vec<InRange>,
}

#[derive(Deserialize)]
struct InRange {
    workload: InWorkload,
    start_ns: u64,
    end_ns: u64,
    claimant: String,
}

#[derive(Deserialize)]
struct InWorkload {
    id: String,
    #[serde(default)]
    app: Option<String>,
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    stack: Option<String>,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

impl From<InWorkload> for Workload {
    fn from(w: InWorkload) -> Self {
        Workload {
            id: w.id,
            app: w.app,
            cluster: w.cluster,
            stack: w.stack,
            account: w.account,
            region: w.region,
            labels: w.labels,
        }
    }
}

/// The text form of an address used for keys: IPv4-mapped IPv6 addresses
/// are written as IPv4, like the ownership table reports them.
pub fn key_of(ip: IpAddr) -> String {
    ip.to_canonical().to_string()
}

/// Coalesces `updates` per address: one message per address (more only
/// past [`MAX_RANGES_PER_MESSAGE`]), addresses in ascending order, ranges
/// in their given order.
pub fn encode(origin: &str, updates: &[RangeUpdate]) -> Vec<Encoded> {
    let mut by_ip: BTreeMap<IpAddr, Vec<&RangeUpdate>> = BTreeMap::new();
    for u in updates {
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

/// Checks and decodes one message (its Kafka key and value).
pub fn decode(key: Option<&[u8]>, payload: &[u8]) -> Result<Decoded, DecodeError> {
    // The version first, so a newer format is refused as such even when its
    // shape changed.
    let header: Header = serde_json::from_slice(payload).map_err(DecodeError::Syntax)?;
    match header.v {
        None => return Err(DecodeError::MissingVersion),
        Some(FORMAT_VERSION) => {}
        Some(found) => return Err(DecodeError::UnsupportedVersion { found }),
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
    if message.ranges.is_empty() {
        return Err(DecodeError::NoRanges);
    }
    for (index, r) in message.ranges.iter().enumerate() {
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
    }
    // Ranges of one message usually share workloads and claimants: one
    // `Arc` each.
    let mut workloads: Vec<Arc<Workload>> = Vec::new();
    let mut claimants: Vec<Arc<str>> = Vec::new();
    let updates = message
        .ranges
        .into_iter()
        .map(|r| {
            let workload = Workload::from(r.workload);
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
                    let c: Arc<str> = r.claimant.into();
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
        updates,
    })
}

#[cfg(test)]
mod tests;
