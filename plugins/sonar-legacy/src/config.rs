//! The plugin's `[config]` table and the settings derived from it.

use serde::Deserialize;

const NS_PER_SEC: u64 = 1_000_000_000;

/// The manifest's `[config]` table. Every field is optional.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The legacy hold: how long after a flow's start the attributor waits
    /// for events before answering. Default 0 (no hold).
    pub hold_secs: u64,
    /// Events that arrived longer ago than this (by the host clock) are
    /// pruned, except each address's newest event. Default 86400 (a day).
    pub retention_secs: u64,
    /// Most events kept; beyond it the oldest are pruned (and counted and
    /// logged). Default 1,000,000.
    pub max_events: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            hold_secs: 0,
            retention_secs: 86_400,
            max_events: 1_000_000,
        }
    }
}

/// The config checked and converted to nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// `hold_secs` in nanoseconds.
    pub hold_ns: u64,
    /// `retention_secs` in nanoseconds.
    pub retention_ns: u64,
    /// `max_events`, at least 1.
    pub max_events: usize,
}

impl TryFrom<Config> for Settings {
    type Error = String;

    fn try_from(c: Config) -> Result<Self, String> {
        let ns = |field: &str, secs: u64| {
            secs.checked_mul(NS_PER_SEC)
                .ok_or_else(|| format!("{field}: {secs} seconds is too long"))
        };
        if c.max_events == 0 {
            return Err("max_events: must be at least 1".into());
        }
        Ok(Self {
            hold_ns: ns("hold_secs", c.hold_secs)?,
            retention_ns: ns("retention_secs", c.retention_secs)?,
            max_events: c.max_events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: &str) -> Result<Settings, String> {
        let config: Config = serde_json::from_str(json).map_err(|e| e.to_string())?;
        Settings::try_from(config)
    }

    #[test]
    fn defaults_and_conversion() {
        assert_eq!(
            settings("{}").unwrap(),
            Settings {
                hold_ns: 0,
                retention_ns: 86_400 * NS_PER_SEC,
                max_events: 1_000_000
            }
        );
        let s = settings(r#"{"hold_secs": 900, "retention_secs": 60, "max_events": 5}"#).unwrap();
        assert_eq!(
            s,
            Settings {
                hold_ns: 900 * NS_PER_SEC,
                retention_ns: 60 * NS_PER_SEC,
                max_events: 5
            }
        );
    }

    #[test]
    fn bad_configs_are_refused() {
        for (json, want) in [
            (r#"{"hold": 900}"#, "unknown field `hold`"),
            (r#"{"hold_secs": -1}"#, "invalid value"),
            (r#"{"max_events": 0}"#, "max_events: must be at least 1"),
            (
                r#"{"hold_secs": 18446744073709551615}"#,
                "hold_secs: 18446744073709551615 seconds is too long",
            ),
            (r#"{"retention_secs": 20000000000}"#, "retention_secs"),
        ] {
            let err = settings(json).expect_err(json);
            assert!(err.contains(want), "{json}: {err}");
        }
    }
}
