//! The plugin's `[config]` table.

use serde::Deserialize;

/// The manifest's `[config]` table. Every key is optional; unknown keys are
/// refused, so a typo fails the load instead of being ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Whether chunks carry the `pid`, `cgroup_id` and `netns_id` columns
    /// (header flag bit 0). Default `true`; without them a reader sees 0.
    pub include_process: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            include_process: true,
        }
    }
}
