//! The plugin's `[config]` table.

use serde::Deserialize;

/// Where IPMan's state file is, as the plugin sees it (a path inside a
/// directory the manifest grants read-only).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Path of the state file. Default `/ipman/state.json`.
    #[serde(default = "default_state")]
    pub state: String,
}

fn default_state() -> String {
    "/ipman/state.json".into()
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state: default_state(),
        }
    }
}
