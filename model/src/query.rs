//! The questions plugins answer and the events resolvers learn from.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::{Protocol, Workload};

/// One local endpoint to attribute at a time, with what the capture knows of
/// the socket's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalQuery {
    pub local: SocketAddr,
    #[serde(default)]
    pub protocol: Protocol,
    pub time_ns: u64,
    #[serde(default)]
    pub cgroup_id: u64,
    #[serde(default)]
    pub netns_id: u64,
    #[serde(default)]
    pub pid: u32,
}

/// What an address event says happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IpChange {
    Assigned(Workload),
    Released,
}

/// One address event, with when it happened and when it reached the consumer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpEvent {
    pub address: IpAddr,
    pub change: IpChange,
    pub event_time_ns: u64,
    pub arrival_time_ns: u64,
}

/// One remote address to resolve at `time_ns` (a flow's start), asked at
/// `asked_at_ns`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveQuery {
    pub address: IpAddr,
    pub time_ns: u64,
    pub asked_at_ns: u64,
}
