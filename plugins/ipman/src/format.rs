//! The state file as IPMan writes it (version 1), before validation.
//!
//! These types mirror the JSON one to one and refuse unknown fields: the
//! format is versioned, so a field this version does not know is a typo or a
//! newer writer, and either way guessing could misattribute. `STATE.md`
//! describes the format for writers.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::Deserialize;

/// The only format version this plugin reads.
pub const VERSION: u64 = 1;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    #[allow(dead_code)] // checked by `parse` before the full parse
    pub version: u64,
    #[serde(default)]
    pub workloads: BTreeMap<String, RawWorkload>,
    #[serde(default)]
    pub assignments: Vec<RawAssignment>,
    #[serde(default)]
    pub shared_ipv4: Vec<RawShared>,
}

/// A workload's attributes; its id is the key in `workloads`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWorkload {
    pub app: Option<String>,
    pub cluster: Option<String>,
    pub stack: Option<String>,
    pub account: Option<String>,
    pub region: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One address assigned to one workload for `[since_ns, until_ns)`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAssignment {
    pub ip: IpAddr,
    pub workload: String,
    pub since_ns: u64,
    /// `None` (JSON `null`) while still assigned.
    pub until_ns: Option<u64>,
}

/// A host IPv4 address shared by IPv6-only containers, by port range.
#[derive(Debug, Deserialize)]
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
#[derive(Debug, Deserialize)]
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
