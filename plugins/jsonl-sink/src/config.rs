//! The plugin's `[config]` table.

use serde::Deserialize;

/// The manifest's `[config]` table. Every key is optional; unknown keys are
/// refused, so a typo fails the load instead of being ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Whether each line carries `pid`, `cgroup_id` and `netns_id`.
    /// Default `true`.
    pub include_process: bool,
    /// How times are written. Default [`TimeFormat::Ns`].
    pub time_format: TimeFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            include_process: true,
            time_format: TimeFormat::Ns,
        }
    }
}

/// How times are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeFormat {
    /// Integer nanoseconds since the Unix epoch; the keys end in `_ns`
    /// (`start_ns`, `valid_from_ns`, …).
    #[default]
    Ns,
    /// RFC 3339 text in UTC with nine fractional digits
    /// (`2024-05-01T12:00:00.000000000Z`); the keys have no suffix
    /// (`start`, `valid_from`, …).
    Rfc3339,
}
