//! Flow records as the capture side fills them.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Transport protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    /// The IANA protocol number (6 for TCP, 17 for UDP).
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
        }
    }

    /// The protocol with IANA number `n`, if it is one flowattr captures.
    pub const fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Self::Tcp),
            17 => Some(Self::Udp),
            _ => None,
        }
    }
}

/// Which side opened the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Initiator {
    /// The local socket called connect.
    Local,
    /// The local socket accepted.
    Remote,
    /// The capture did not see the start.
    #[default]
    Unknown,
}

impl Initiator {
    /// Every case, in declaration order (the order of the WIT `initiator`
    /// enum, whose positions are the codes in a `flow-batch`).
    pub const ALL: [Self; 3] = [Self::Local, Self::Remote, Self::Unknown];
}

/// How a connection ended, or that it is still open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowEnd {
    #[default]
    Closed,
    /// An interval record of a connection that is still open.
    Ongoing,
    Refused,
    Reset,
    Failed,
}

impl FlowEnd {
    /// Every case, in declaration order (the order of the WIT `flow-end`
    /// enum, whose positions are the codes in a `flow-batch`).
    pub const ALL: [Self; 5] = [
        Self::Closed,
        Self::Ongoing,
        Self::Refused,
        Self::Reset,
        Self::Failed,
    ];
}

/// One captured flow, local side first. Times are Unix-epoch nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    #[serde(default)]
    pub protocol: Protocol,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    #[serde(default)]
    pub initiator: Initiator,
    #[serde(default)]
    pub end_state: FlowEnd,
    pub start_ns: u64,
    #[serde(default)]
    pub end_ns: u64,
    #[serde(default)]
    pub bytes_sent: u64,
    #[serde(default)]
    pub bytes_received: u64,
    #[serde(default)]
    pub packets_sent: u64,
    #[serde(default)]
    pub packets_received: u64,
    #[serde(default)]
    pub retransmits: u32,
    /// Smoothed round-trip time in microseconds, 0 when unknown.
    #[serde(default)]
    pub srtt_us: u32,
    #[serde(default)]
    pub cgroup_id: u64,
    #[serde(default)]
    pub netns_id: u64,
    #[serde(default)]
    pub pid: u32,
}

impl Flow {
    /// A TCP flow between two endpoints that started (and, so far, ended) at
    /// `start_ns`, with every counter zero and nothing known of its owner.
    pub fn tcp(local: SocketAddr, remote: SocketAddr, start_ns: u64) -> Self {
        Self {
            protocol: Protocol::Tcp,
            local,
            remote,
            initiator: Initiator::Unknown,
            end_state: FlowEnd::Closed,
            start_ns,
            end_ns: start_ns,
            bytes_sent: 0,
            bytes_received: 0,
            packets_sent: 0,
            packets_received: 0,
            retransmits: 0,
            srtt_us: 0,
            cgroup_id: 0,
            netns_id: 0,
            pid: 0,
        }
    }
}
