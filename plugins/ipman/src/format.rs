//! The state file as IPMan writes it (version 1), before validation.
//!
//! These types mirror the JSON one to one and refuse unknown fields: the
//! format is versioned, so a field this version does not know is a typo or a
//! newer writer, and either way guessing could misattribute. `STATE.md`
//! describes the format for writers. The same types serialize the file for
//! the native writer (the `admin` module), so the format is written down once.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// The only format version this plugin reads.
pub const VERSION: u64 = 1;

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    /// Checked by [`parse`] before the full parse.
    pub version: u64,
    #[serde(default)]
    pub workloads: BTreeMap<String, RawWorkload>,
    #[serde(default)]
    pub assignments: Vec<RawAssignment>,
    #[serde(default)]
    pub shared_ipv4: Vec<RawShared>,
    /// IPMan's record is complete before this instant (see `STATE.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_until_ns: Option<u64>,
}

/// A workload's attributes as the file holds them; its id is the key in
/// `workloads`. Every attribute is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkload {
    /// The application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// The cluster (deployment group) it runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// The stack (environment), e.g. `prod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// The cloud account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The cloud region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Any further attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One address assigned to one workload for `[since_ns, until_ns)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAssignment {
    pub ip: IpAddr,
    pub workload: String,
    pub since_ns: u64,
    /// `None` (JSON `null`) while still assigned.
    pub until_ns: Option<u64>,
}

/// A host IPv4 address shared by IPv6-only containers, by port range.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShared {
    pub address: Ipv4Addr,
    /// First and last port (inclusive) IPMan hands out on this address.
    pub pool: [u16; 2],
    #[serde(default)]
    pub allocations: Vec<RawAllocation>,
}

/// One port range of a shared address, held by one workload for
/// `[since_ns, until_ns)`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllocation {
    /// First and last port (inclusive).
    pub ports: [u16; 2],
    pub workload: String,
    pub since_ns: u64,
    pub until_ns: Option<u64>,
}

/// Just the version, read first so a newer file is refused as such rather than
/// for its unknown fields.
#[derive(Deserialize)]
struct VersionProbe {
    version: u64,
}

/// Parses the file's bytes, refusing any version but [`VERSION`].
pub fn parse(bytes: &[u8]) -> Result<RawState, String> {
    let probe: VersionProbe = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if probe.version != VERSION {
        return Err(format!(
            "unsupported version {} (this plugin reads version {VERSION})",
            probe.version
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}
