//! The plugin's `[config]` table.

use serde::Deserialize;

/// Where the identity document is, as the plugin sees it (a path inside a
/// directory the manifest grants read-only).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Path of the instance identity document. Default
    /// `/ec2/instance-identity.json`.
    #[serde(default = "default_document")]
    pub document: String,
}

fn default_document() -> String {
    "/ec2/instance-identity.json".into()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            document: default_document(),
        }
    }
}
