//! Attribute keys. The flow's own fields use the names the OpenTelemetry
//! Collector's NetFlow receiver (`receiver/netflowreceiver`) writes, so
//! dashboards and queries built for it read these records too; everything
//! that receiver has no name for is under `flowattr.`. The table in
//! `docs/output-schema.md` is the contract; a key never changes its type
//! or meaning.

pub const SOURCE_ADDRESS: &str = "source.address";
pub const SOURCE_PORT: &str = "source.port";
pub const DESTINATION_ADDRESS: &str = "destination.address";
pub const DESTINATION_PORT: &str = "destination.port";
pub const NETWORK_TRANSPORT: &str = "network.transport";
pub const NETWORK_TYPE: &str = "network.type";
pub const NETWORK_IO_BYTES: &str = "network.io.bytes";
pub const NETWORK_IO_PACKETS: &str = "network.io.packets";
pub const NETWORK_FLOW_START: &str = "network.flow.start";
pub const NETWORK_FLOW_END: &str = "network.flow.end";

pub const INITIATOR: &str = "flowattr.initiator";
pub const END_STATE: &str = "flowattr.end_state";
pub const BYTES_SENT: &str = "flowattr.bytes_sent";
pub const BYTES_RECEIVED: &str = "flowattr.bytes_received";
pub const PACKETS_SENT: &str = "flowattr.packets_sent";
pub const PACKETS_RECEIVED: &str = "flowattr.packets_received";
pub const RETRANSMITS: &str = "flowattr.retransmits";
pub const SRTT_US: &str = "flowattr.srtt_us";
pub const PID: &str = "flowattr.pid";
pub const CGROUP_ID: &str = "flowattr.cgroup_id";
pub const NETNS_ID: &str = "flowattr.netns_id";
pub const WEIGHT: &str = "flowattr.weight";
pub const RECORD_ID: &str = "flowattr.record_id";
pub const COMMUNITY_ID: &str = "flowattr.community_id";

/// The keys of one side's attribution: `flowattr.local.*` or
/// `flowattr.remote.*`.
pub struct SideKeys {
    pub prefix: &'static str,
    pub status: &'static str,
    pub reason: &'static str,
    pub source: &'static str,
    pub plugin: &'static str,
    pub valid_from: &'static str,
    pub valid_until: &'static str,
    /// `[id, app, cluster, stack, account, region]` under `….workload.`.
    pub workload: [&'static str; 6],
    /// Each label is this followed by its key.
    pub label: &'static str,
}

macro_rules! side_keys {
    ($p:literal) => {
        SideKeys {
            prefix: $p,
            status: concat!($p, ".status"),
            reason: concat!($p, ".reason"),
            source: concat!($p, ".source"),
            plugin: concat!($p, ".plugin"),
            valid_from: concat!($p, ".valid_from"),
            valid_until: concat!($p, ".valid_until"),
            workload: [
                concat!($p, ".workload.id"),
                concat!($p, ".workload.app"),
                concat!($p, ".workload.cluster"),
                concat!($p, ".workload.stack"),
                concat!($p, ".workload.account"),
                concat!($p, ".workload.region"),
            ],
            label: concat!($p, ".workload.label."),
        }
    };
}

pub const LOCAL: SideKeys = side_keys!("flowattr.local");
pub const REMOTE: SideKeys = side_keys!("flowattr.remote");

/// The record's `event_name`.
pub const EVENT_NAME: &str = "flowattr.flow";
/// The instrumentation scope's name.
pub const SCOPE_NAME: &str = "flowattr.otlp-sink";
