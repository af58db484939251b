//! Plugin manifests: the `NAME.toml` beside each `NAME.wasm`.
//!
//! Parsing is pure and strict: unknown fields are refused, and every error
//! names the field it is about, so an operator can fix a manifest from the
//! message alone.
//!
//! ```toml
//! kind = "identity"          # identity | resolver | policy | sink
//! wit = "0.3.0"              # WIT package version the component implements
//! sha256 = "…"               # of NAME.wasm; stamped by `flowattr plugin install`
//! order = 10                 # lower runs first within its kind
//! mode = "active"            # active | shadow
//! on_failure = "skip"        # skip | fail-closed
//!
//! [limits]
//! memory_mib = 64
//! call_timeout_ms = 100
//!
//! [capabilities]
//! read_dirs = [{ host = "/run/flowattr/ipman", guest = "/ipman" }]
//!
//! [config]                   # passed to the plugin's `init` as JSON
//! state = "/ipman/state.json"
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The WIT package version this runtime implements.
pub const WIT_VERSION: Version = Version {
    major: 0,
    minor: 3,
    patch: 0,
};

/// The four plugin kinds, one WIT world each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    Identity,
    Resolver,
    Policy,
    Sink,
}

impl PluginKind {
    /// The name used in manifests and in the WIT interface.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Resolver => "resolver",
            Self::Policy => "policy",
            Self::Sink => "sink",
        }
    }
}

impl fmt::Display for PluginKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether a plugin's answers are used or only recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Its answers are used.
    #[default]
    Active,
    /// It runs on the same input, but its answers are only recorded (A/B).
    Shadow,
}

/// What callers do when a plugin call fails (trap, timeout, error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Carry on without this plugin: the next plugin in the chain answers,
    /// a policy keeps the flows.
    #[default]
    Skip,
    /// Stop here: the batch is unattributed (reason `plugin-failed`), a policy
    /// drops the flows (counted).
    FailClosed,
}

/// Resource limits of one plugin instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Cap on the instance's linear memory, in MiB (1–4096).
    pub memory_mib: u32,
    /// Deadline of one call, in milliseconds (1–60000).
    pub call_timeout_ms: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_mib: 64,
            call_timeout_ms: 100,
        }
    }
}

/// A host directory the plugin may read, and where it appears inside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadDir {
    /// Host path; relative paths are relative to the manifest's directory.
    pub host: PathBuf,
    /// Absolute path under which the plugin sees it.
    pub guest: String,
}

/// What the plugin may touch. Nothing is granted unless listed here.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Capabilities {
    /// Directories granted read-only.
    pub read_dirs: Vec<ReadDir>,
}

/// A parsed, validated manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub kind: PluginKind,
    /// The WIT package version the component implements.
    pub wit: Version,
    /// Hex SHA-256 of the `.wasm`; required in a drop-in directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Lower runs first within its kind; ties are broken by name.
    #[serde(default)]
    pub order: i32,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub on_failure: FailurePolicy,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Passed to the plugin's `init` as a JSON object.
    #[serde(default)]
    pub config: toml::Table,
}

/// A manifest problem, naming the field it is about.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl Manifest {
    /// Parses and validates manifest text.
    pub fn parse(text: &str) -> Result<Self, FieldError> {
        let de = toml::Deserializer::parse(text)
            .map_err(|e| FieldError::new("(syntax)", one_line(&e.to_string())))?;
        let manifest: Manifest = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "(top level)".to_owned()
            } else {
                path
            };
            FieldError::new(field, one_line(&e.into_inner().to_string()))
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), FieldError> {
        if !WIT_VERSION.is_compatible(&self.wit) {
            return Err(FieldError::new(
                "wit",
                format!(
                    "plugin implements WIT {}; this host speaks {}",
                    self.wit,
                    WIT_VERSION.compatible_range()
                ),
            ));
        }
        if let Some(sha) = &self.sha256
            && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(FieldError::new("sha256", "must be 64 hexadecimal digits"));
        }
        if !(1..=4096).contains(&self.limits.memory_mib) {
            return Err(FieldError::new(
                "limits.memory_mib",
                "must be between 1 and 4096",
            ));
        }
        if !(1..=60_000).contains(&self.limits.call_timeout_ms) {
            return Err(FieldError::new(
                "limits.call_timeout_ms",
                "must be between 1 and 60000",
            ));
        }
        let mut guests = std::collections::HashSet::new();
        for (i, dir) in self.capabilities.read_dirs.iter().enumerate() {
            let field = format!("capabilities.read_dirs[{i}].guest");
            if !dir.guest.starts_with('/') {
                return Err(FieldError::new(
                    field,
                    "must be an absolute path such as \"/data\"",
                ));
            }
            if dir.guest.split('/').any(|c| c == "..") {
                return Err(FieldError::new(field, "must not contain \"..\""));
            }
            if !guests.insert(dir.guest.trim_end_matches('/')) {
                return Err(FieldError::new(
                    field,
                    format!("{} is granted twice", dir.guest),
                ));
            }
        }
        Ok(())
    }

    /// The `[config]` table as the JSON text passed to the plugin's `init`.
    pub fn config_json(&self) -> String {
        serde_json::to_string(&self.config).expect("a TOML table always serialises to JSON")
    }

    /// Points the granted directory the plugin sees as `guest` at `host`.
    pub fn grant(&mut self, guest: &str, host: impl Into<PathBuf>) -> Result<(), FieldError> {
        let dir = self
            .capabilities
            .read_dirs
            .iter_mut()
            .find(|d| d.guest == guest)
            .ok_or_else(|| {
                FieldError::new("capabilities.read_dirs", format!("grants no {guest}"))
            })?;
        dir.host = host.into();
        Ok(())
    }

    /// Host directories granted read-only, resolved against `manifest_dir`.
    pub fn resolved_read_dirs(&self, manifest_dir: &Path) -> Vec<(PathBuf, String)> {
        self.capabilities
            .read_dirs
            .iter()
            .map(|d| (manifest_dir.join(&d.host), d.guest.clone()))
            .collect()
    }

    /// The manifest as TOML text.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a manifest always serialises to TOML")
    }
}

fn one_line(s: &str) -> String {
    // toml's messages carry a source excerpt over several lines; keep the
    // last line, which says what is wrong.
    s.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or(s)
        .to_owned()
}

/// A `MAJOR.MINOR.PATCH` version of the WIT package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    /// Semver compatibility: same major, and for 0.x the same minor.
    pub fn is_compatible(&self, other: &Version) -> bool {
        self.major == other.major && (self.major != 0 || self.minor == other.minor)
    }

    fn compatible_range(&self) -> String {
        if self.major == 0 {
            format!("{}.{}.x", self.major, self.minor)
        } else {
            format!("{}.x", self.major)
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl std::str::FromStr for Version {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a MAJOR.MINOR.PATCH version");
        let mut parts = s.split('.').map(|p| p.parse::<u32>().map_err(|_| bad()));
        let v = Version {
            major: parts.next().ok_or_else(bad)??,
            minor: parts.next().ok_or_else(bad)??,
            patch: parts.next().ok_or_else(bad)??,
        };
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }
}

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        kind = "identity"
        wit = "0.3.0"
        sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
        order = 5
        [limits]
        memory_mib = 16
        [capabilities]
        read_dirs = [{ host = "state", guest = "/state" }]
        [config]
        state = "/state/s.json"
        nested = { a = 1 }
    "#;

    #[test]
    fn a_grant_points_a_guest_directory_elsewhere_or_names_the_missing_one() {
        let mut m = Manifest::parse(GOOD).unwrap();
        m.grant("/state", "/run/state").unwrap();
        assert_eq!(
            m.capabilities.read_dirs[0].host,
            PathBuf::from("/run/state")
        );
        let err = m.grant("/other", "/x").unwrap_err();
        assert_eq!(err.field, "capabilities.read_dirs");
        assert_eq!(m.capabilities.read_dirs.len(), 1, "nothing else changed");
    }

    #[test]
    fn parses_a_full_manifest() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(m.kind, PluginKind::Identity);
        assert_eq!(m.order, 5);
        assert_eq!(
            m.limits,
            Limits {
                memory_mib: 16,
                call_timeout_ms: 100
            }
        );
        assert_eq!(m.mode, Mode::Active);
        assert_eq!(m.on_failure, FailurePolicy::Skip);
        let json: serde_json::Value = serde_json::from_str(&m.config_json()).unwrap();
        assert_eq!(json["state"], "/state/s.json");
        assert_eq!(json["nested"]["a"], 1);
        let dirs = m.resolved_read_dirs(Path::new("/plugins"));
        assert_eq!(
            dirs,
            vec![(PathBuf::from("/plugins/state"), "/state".to_owned())]
        );
        assert_eq!(Manifest::parse(&m.to_toml()).unwrap(), m);
    }

    fn field_of(text: &str) -> String {
        Manifest::parse(text).unwrap_err().field
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of("kind = \"transmogrify\"\nwit = \"0.3.0\""), "kind");
        assert_eq!(field_of("kind = \"sink\"\nwit = \"0.4.0\""), "wit");
        assert_eq!(field_of("kind = \"sink\"\nwit = \"one\""), "wit");
        assert_eq!(
            field_of("kind = \"sink\"\nwit = \"0.3.0\"\nsha256 = \"xyz\""),
            "sha256"
        );
        assert_eq!(
            field_of("kind = \"sink\"\nwit = \"0.3.0\"\n[limits]\nmemory_mib = \"lots\""),
            "limits.memory_mib"
        );
        assert_eq!(
            field_of("kind = \"sink\"\nwit = \"0.3.0\"\n[limits]\nmemory_mib = 0"),
            "limits.memory_mib"
        );
        assert_eq!(
            field_of("kind = \"sink\"\nwit = \"0.3.0\"\ncolour = 1"),
            "colour"
        );
        assert_eq!(
            field_of(
                "kind = \"sink\"\nwit = \"0.3.0\"\n[capabilities]\nread_dirs = [{host=\"/x\", guest=\"x\"}]"
            ),
            "capabilities.read_dirs[0].guest"
        );
        assert_eq!(field_of("kind = "), "(syntax)");
        let e = Manifest::parse("kind = \"sink\"\nwit = \"0.1.0\"").unwrap_err();
        assert!(e.to_string().contains("0.3.x"), "{e}");
    }

    #[test]
    fn unknown_top_level_field_is_named_in_the_message() {
        let e = Manifest::parse("kind = \"sink\"\nwit = \"0.3.0\"\ncolour = 1").unwrap_err();
        assert!(e.message.contains("colour"), "{e}");
    }

    #[test]
    fn version_compatibility_follows_semver() {
        let v = |s: &str| s.parse::<Version>().unwrap();
        assert!(v("0.1.0").is_compatible(&v("0.1.7")));
        assert!(!v("0.1.0").is_compatible(&v("0.2.0")));
        assert!(v("1.0.0").is_compatible(&v("1.4.0")));
        assert!(!v("1.0.0").is_compatible(&v("2.0.0")));
        assert!("1.2".parse::<Version>().is_err());
        assert!("1.2.3.4".parse::<Version>().is_err());
    }
}
