//! The plugin's `[config]` table.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The manifest's `[config]` table. Every key is optional; unknown keys are
/// refused, so a typo fails the load instead of being ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Whether each record carries `flowattr.pid`, `flowattr.cgroup_id`
    /// and `flowattr.netns_id`. Default `true`.
    pub include_process: bool,
    /// The OTLP resource's attributes (strings), the same on every record
    /// of a chunk. Default `service.name = "flowattr"`.
    pub resource: BTreeMap<String, String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            include_process: true,
            resource: BTreeMap::from([("service.name".into(), "flowattr".into())]),
        }
    }
}
