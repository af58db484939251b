//! Attributed flows and what policies decide about them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Flow, TimeRange, UnattributedReason, Workload};

/// Where an attribution came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttributionSource {
    /// The local side, attributed at capture time by an identity plugin.
    Capture,
    /// A heartbeat-learned ownership range.
    Heartbeat,
    /// A resolver plugin (such as the legacy event stream).
    Resolver,
}

/// A workload, where the answer came from and for which time it holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attribution {
    /// Shared: many flows are attributed to the same workload.
    pub workload: Arc<Workload>,
    pub source: AttributionSource,
    /// Name of the plugin that answered; empty for the heartbeat table.
    pub plugin: String,
    pub valid: TimeRange,
}

/// One side of a flow.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    Attributed(Attribution),
    Unattributed(UnattributedReason),
    /// Not looked at yet (the remote side inside the agent).
    #[default]
    Pending,
}

/// A flow with both of its sides.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttributedFlow {
    pub flow: Flow,
    #[serde(default)]
    pub local: Side,
    #[serde(default)]
    pub remote: Side,
    /// How many flows this record stands for (more than 1 after sampling).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// Fields a policy may blank out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Redactions {
    pub local_address: bool,
    pub remote_address: bool,
    pub ports: bool,
    pub process: bool,
}

/// What a policy decides for one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Keep,
    Drop,
    /// Keep this flow as standing for `n` flows.
    Sample(u32),
    Redact(Redactions),
}
