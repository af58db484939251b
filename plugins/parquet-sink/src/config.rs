//! The plugin's `[config]` table.

use serde::Deserialize;

/// The manifest's `[config]` table. Every key is optional; unknown keys are
/// refused, so a typo fails the load instead of being ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Whether the `pid`, `cgroup_id` and `netns_id` columns carry values
    /// (otherwise they are null). Default `true`.
    pub include_process: bool,
    /// Page compression: `"snappy"` (the default, which every Parquet
    /// reader knows), `"lz4"` (LZ4_RAW) or `"none"`.
    pub compression: Compression,
}

/// The pages' compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Snappy,
    Lz4,
    None,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            include_process: true,
            compression: Compression::Snappy,
        }
    }
}
