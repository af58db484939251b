//! Workload identities and the reasons an address has none.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A workload identity: a stable id plus descriptive attributes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Any further attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Workload {
    /// A workload with only an id.
    pub fn with_id(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            ..Self::default()
        }
    }
}

/// Why an address could not be attributed. Leaving a flow unattributed with a
/// reason is acceptable; attributing it to the wrong workload is not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnattributedReason {
    /// The source knows nothing about this address at that time.
    NotFound,
    /// The source of truth could not be read (missing or malformed).
    SourceUnavailable,
    /// More than one workload claims the address for that time.
    Conflict,
    /// The time falls between two known ownership ranges.
    Gap,
    /// What was known has expired without confirmation.
    Expired,
    /// The clocks involved disagree beyond tolerance.
    ClockSkew,
    /// The plugin that should have answered failed.
    PluginFailed,
    /// Not every source that may know the answer had reported that far in
    /// time within the maximum wait (an agent late, silent or unreachable).
    Incomplete,
}

impl UnattributedReason {
    /// Every reason, in declaration order (the order of the WIT
    /// `unattributed-reason` enum, which the plugin answer codes follow).
    pub const ALL: [Self; 8] = [
        Self::NotFound,
        Self::SourceUnavailable,
        Self::Conflict,
        Self::Gap,
        Self::Expired,
        Self::ClockSkew,
        Self::PluginFailed,
        Self::Incomplete,
    ];

    /// The reason's stable kebab-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not-found",
            Self::SourceUnavailable => "source-unavailable",
            Self::Conflict => "conflict",
            Self::Gap => "gap",
            Self::Expired => "expired",
            Self::ClockSkew => "clock-skew",
            Self::PluginFailed => "plugin-failed",
            Self::Incomplete => "incomplete",
        }
    }
}
