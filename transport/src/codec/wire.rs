//! The protobuf messages on the wire, as Rust structs with prost's derive
//! macros: the schema lives here, with no `.proto` file or build step.
//!
//! Evolution rules (protobuf's): a field is never renumbered or retyped;
//! new fields take new tags and must be optional for the reader (an older
//! peer skips tags it does not know, a newer one reads absent fields as
//! their default). Enums: `0` is each enum's default. A new enum value is
//! refused by an older reader ([`super::DecodeError::BadEnum`]), so adding
//! one needs a protocol version both sides know.
//!
//! Versions:
//! - 1: the first.
//! - 2: `SourceMsg::Counterpart`, `SourceMsg::CaptureShared` (a local side
//!   attributed by its port on a shared address), `ReasonMsg::Incomplete`
//!   (new enum values); `BatchMsg.complete_until_ns` and `FrameMsg.sent_ns`
//!   (new fields). `CaptureShared` was added to version 2 before version 2
//!   was released, so every version 2 reader knows it. A version 1 frame is
//!   a version 2 frame without them, so frames written by version 1
//!   (spools, journals) are still read ([`super::OLDEST_READABLE_VERSION`]).
//!   `FlowMsg.record_id` (tag 20, optional, only on flows a collector
//!   forwards) was added within version 2: a reader without it skips the
//!   field, and the receiving collector then gives the flow a new id.

/// The one message a frame carries.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct FrameMsg {
    /// Protocol major version ([`super::PROTOCOL_VERSION`]).
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(oneof = "Body", tags = "2, 3, 4")]
    pub body: Option<Body>,
    /// When the sender sent this frame, Unix nanoseconds on its clock.
    /// Appended to an encoded frame at each send (see
    /// [`super::stamp_sent`]), after the body: a high tag, clear of the
    /// body kinds to come.
    #[prost(fixed64, optional, tag = "15")]
    pub sent_ns: Option<u64>,
}

/// What a frame is.
#[derive(Clone, PartialEq, prost::Oneof)]
pub(crate) enum Body {
    #[prost(message, tag = "2")]
    Batch(BatchMsg),
    #[prost(message, tag = "3")]
    Ack(AckMsg),
    #[prost(message, tag = "4")]
    Reject(RejectMsg),
}

/// A batch's identity.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct BatchIdMsg {
    #[prost(string, tag = "1")]
    pub agent: String,
    #[prost(fixed64, tag = "2")]
    pub incarnation: u64,
    #[prost(uint64, tag = "3")]
    pub seq: u64,
}

/// A batch of flows. Workloads and plugin names are written once each, in
/// dictionaries, and sides refer to them by index.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct BatchMsg {
    /// Tag 1 is written first, so a receiver can read the id of a batch
    /// whose flows it cannot decode (see `peek`).
    #[prost(message, optional, tag = "1")]
    pub id: Option<BatchIdMsg>,
    #[prost(fixed64, tag = "2")]
    pub created_ns: u64,
    #[prost(message, repeated, tag = "3")]
    pub workloads: Vec<WorkloadMsg>,
    #[prost(string, repeated, tag = "4")]
    pub plugins: Vec<String>,
    #[prost(message, repeated, tag = "5")]
    pub flows: Vec<FlowMsg>,
    /// The sender's completeness watermark (0: none).
    #[prost(fixed64, tag = "6")]
    pub complete_until_ns: u64,
}

/// "This batch is the collector's responsibility now."
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct AckMsg {
    #[prost(message, optional, tag = "1")]
    pub id: Option<BatchIdMsg>,
}

/// "This batch will not be accepted", and why.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct RejectMsg {
    /// Absent when the receiver could not read it.
    #[prost(message, optional, tag = "1")]
    pub id: Option<BatchIdMsg>,
    #[prost(string, tag = "2")]
    pub reason: String,
    /// Added within version 2 (a new field, so no version change): an
    /// older receiver leaves it out and it reads as `Unspecified`, an older
    /// agent skips it. A value this reader does not know also reads as
    /// `Unspecified`, not as a bad frame: the kind only advises the agent.
    #[prost(enumeration = "RejectKindMsg", tag = "3")]
    pub kind: i32,
}

/// [`super::RejectKind`] on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum RejectKindMsg {
    Unspecified = 0,
    Malformed = 1,
    Identity = 2,
    /// Added within version 2, as `kind` was: an older agent reads it as
    /// `Unspecified`.
    Unclaimed = 3,
}

/// A workload identity (the dictionary entry).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct WorkloadMsg {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, optional, tag = "2")]
    pub app: Option<String>,
    #[prost(string, optional, tag = "3")]
    pub cluster: Option<String>,
    #[prost(string, optional, tag = "4")]
    pub stack: Option<String>,
    #[prost(string, optional, tag = "5")]
    pub account: Option<String>,
    #[prost(string, optional, tag = "6")]
    pub region: Option<String>,
    #[prost(btree_map = "string, string", tag = "7")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A socket address. IPv4 when `v4` is present, IPv6 otherwise.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub(crate) struct AddrMsg {
    #[prost(fixed32, optional, tag = "1")]
    pub v4: Option<u32>,
    #[prost(fixed64, tag = "2")]
    pub v6_hi: u64,
    #[prost(fixed64, tag = "3")]
    pub v6_lo: u64,
    #[prost(uint32, tag = "4")]
    pub port: u32,
    #[prost(uint32, tag = "5")]
    pub flowinfo: u32,
    #[prost(uint32, tag = "6")]
    pub scope_id: u32,
}

/// One flow with its two sides and weight.
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct FlowMsg {
    #[prost(enumeration = "ProtocolMsg", tag = "1")]
    pub protocol: i32,
    #[prost(message, optional, tag = "2")]
    pub local: Option<AddrMsg>,
    #[prost(message, optional, tag = "3")]
    pub remote: Option<AddrMsg>,
    #[prost(enumeration = "InitiatorMsg", tag = "4")]
    pub initiator: i32,
    #[prost(enumeration = "FlowEndMsg", tag = "5")]
    pub end_state: i32,
    #[prost(fixed64, tag = "6")]
    pub start_ns: u64,
    #[prost(fixed64, tag = "7")]
    pub end_ns: u64,
    #[prost(uint64, tag = "8")]
    pub bytes_sent: u64,
    #[prost(uint64, tag = "9")]
    pub bytes_received: u64,
    #[prost(uint64, tag = "10")]
    pub packets_sent: u64,
    #[prost(uint64, tag = "11")]
    pub packets_received: u64,
    #[prost(uint32, tag = "12")]
    pub retransmits: u32,
    #[prost(uint32, tag = "13")]
    pub srtt_us: u32,
    #[prost(uint64, tag = "14")]
    pub cgroup_id: u64,
    #[prost(uint64, tag = "15")]
    pub netns_id: u64,
    #[prost(uint32, tag = "16")]
    pub pid: u32,
    /// Absent: pending.
    #[prost(message, optional, tag = "17")]
    pub local_side: Option<SideMsg>,
    /// Absent: pending.
    #[prost(message, optional, tag = "18")]
    pub remote_side: Option<SideMsg>,
    #[prost(uint32, tag = "19")]
    pub weight: u32,
    /// The output record's id, written only when one is assigned (a
    /// collector forwarding a flow to another region's): absent from an
    /// agent's batches, so they do not grow, and read as 0 (unassigned).
    #[prost(fixed64, optional, tag = "20")]
    pub record_id: Option<u64>,
}

/// One side of a flow.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub(crate) struct SideMsg {
    #[prost(enumeration = "SideKind", tag = "1")]
    pub kind: i32,
    /// Index into the batch's workloads (attributed).
    #[prost(uint32, tag = "2")]
    pub workload: u32,
    #[prost(enumeration = "SourceMsg", tag = "3")]
    pub source: i32,
    /// Index into the batch's plugin names (attributed).
    #[prost(uint32, tag = "4")]
    pub plugin: u32,
    #[prost(fixed64, tag = "5")]
    pub valid_start_ns: u64,
    #[prost(fixed64, tag = "6")]
    pub valid_end_ns: u64,
    /// Why (unattributed).
    #[prost(enumeration = "ReasonMsg", tag = "7")]
    pub reason: i32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum ProtocolMsg {
    Tcp = 0,
    Udp = 1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum InitiatorMsg {
    Unknown = 0,
    Local = 1,
    Remote = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum FlowEndMsg {
    Closed = 0,
    Ongoing = 1,
    Refused = 2,
    Reset = 3,
    Failed = 4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum SideKind {
    Pending = 0,
    Attributed = 1,
    Unattributed = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum SourceMsg {
    Capture = 0,
    Heartbeat = 1,
    Resolver = 2,
    Counterpart = 3,
    CaptureShared = 4,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, prost::Enumeration)]
#[repr(i32)]
pub(crate) enum ReasonMsg {
    NotFound = 0,
    SourceUnavailable = 1,
    Conflict = 2,
    Gap = 3,
    Expired = 4,
    ClockSkew = 5,
    PluginFailed = 6,
    Incomplete = 7,
}
