//! TOML configuration files: every error names the key (`at `batch.max_age`:
//! …`) or the file.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Parses TOML `text` into `T`; the error names the offending key.
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let de = toml::Deserializer::parse(text).map_err(|e| e.to_string())?;
    serde_path_to_error::deserialize(de).map_err(|e| format!("at `{}`: {}", e.path(), e.inner()))
}

/// Reads the file at `path` and parses it with `parse` (which may add its
/// own checks); errors name the file.
pub fn load<T>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|message| ConfigError::Invalid {
        path: path.to_owned(),
        message,
    })
}

/// `#[serde(with = "flowattr_daemon::config::duration")]`: a duration
/// written for people, such as `"100ms"`, `"60s"` or `"15m"`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        #[serde(with = "duration")]
        wait: Duration,
        inner: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        count: u32,
    }

    #[test]
    fn parses_and_names_the_key_of_an_error() {
        let ok: Example = parse("wait = \"150ms\"\n[inner]\ncount = 3").unwrap();
        assert_eq!((ok.wait, ok.inner.count), (Duration::from_millis(150), 3));
        let e = parse::<Example>("wait = \"soon\"\n[inner]\ncount = 3").unwrap_err();
        assert!(e.starts_with("at `wait`"), "{e}");
        let e = parse::<Example>("wait = \"1s\"\n[inner]\ncount = -1").unwrap_err();
        assert!(e.starts_with("at `inner.count`"), "{e}");
    }

    #[test]
    fn load_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let missing = dir.join("missing.toml");
        let e = load(&missing, parse::<Example>).unwrap_err();
        assert!(e.to_string().contains("missing.toml"), "{e}");
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "wait = 1").unwrap();
        let e = load(&bad, parse::<Example>).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}: at `wait`", bad.display())),
            "{e}"
        );
    }
}
