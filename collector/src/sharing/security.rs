//! How the collector's Kafka clients (the sharing's and the Kafka
//! output's) reach a broker: TLS and SASL settings, mapped to librdkafka's
//! properties once, so every client of a shell (producer, consumer, admin)
//! connects the same way.
//!
//! ```
//! use flowattr_collector::sharing::security::{KafkaSecurity, Protocol, SaslMechanism};
//!
//! let security = KafkaSecurity {
//!     protocol: Protocol::SaslSsl,
//!     ca: Some("/etc/flowattr/kafka/ca.pem".into()),
//!     sasl_mechanism: Some(SaslMechanism::ScramSha512),
//!     sasl_username: Some("collector-a".into()),
//!     sasl_password_env: Some("FLOWATTR_KAFKA_PASSWORD".into()),
//!     ..KafkaSecurity::default()
//! };
//! # unsafe { std::env::set_var("FLOWATTR_KAFKA_PASSWORD", "s3cret") };
//! let resolved = security.resolve().unwrap();
//! // Secrets never show in logs.
//! assert!(!format!("{resolved:?}").contains("s3cret"));
//! ```

use std::{collections::BTreeMap, fmt, path::PathBuf};

use rdkafka::ClientConfig;
use serde::Deserialize;

/// `security.protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// `sasl.mechanism` (GSSAPI is not offered: librdkafka is built without
/// Cyrus SASL).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// How to connect to the brokers (`[kafka.security]`, and `security` of a
/// Kafka output). Default: plaintext, no authentication.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSecurity {
    pub protocol: Protocol,
    /// The CA that signs the brokers' certificates (PEM); default: the
    /// system's. TLS protocols only.
    pub ca: Option<PathBuf>,
    /// This client's certificate (PEM), for brokers that want one.
    pub cert: Option<PathBuf>,
    /// Its private key (PEM, unencrypted); with `cert`.
    pub key: Option<PathBuf>,
    pub sasl_mechanism: Option<SaslMechanism>,
    pub sasl_username: Option<String>,
    /// A file holding the SASL password (a trailing newline is dropped).
    pub sasl_password_file: Option<PathBuf>,
    /// Or an environment variable holding it.
    pub sasl_password_env: Option<String>,
    /// Further librdkafka properties, set last, on every client.
    pub properties: BTreeMap<String, String>,
}

/// Why the security settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error("{0}")]
    Invalid(String),
    #[error("could not read the SASL password file {path}: {source}")]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the SASL password variable {0} is not set (or not UTF-8)")]
    PasswordEnv(String),
}

/// Properties whose values are secrets: never logged.
const SECRET: [&str; 3] = ["sasl.password", "ssl.key.password", "ssl.key.pem"];

/// The librdkafka properties of a [`KafkaSecurity`], passwords read. Its
/// `Debug` hides secret values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ResolvedSecurity {
    properties: Vec<(String, String)>,
}

impl fmt::Debug for ResolvedSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in &self.properties {
            if SECRET.contains(&k.as_str()) {
                map.entry(k, &"<hidden>");
            } else {
                map.entry(k, v);
            }
        }
        map.finish()
    }
}

impl ResolvedSecurity {
    /// Sets these properties on `config`.
    pub fn apply(&self, config: &mut ClientConfig) {
        for (k, v) in &self.properties {
            config.set(k, v);
        }
    }

    /// The value given for `property`, if any (secrets included: not for
    /// logs).
    pub fn get(&self, property: &str) -> Option<&str> {
        self.properties
            .iter()
            .rev()
            .find(|(k, _)| k == property)
            .map(|(_, v)| v.as_str())
    }
}

impl KafkaSecurity {
    /// Checks the settings and maps them to librdkafka properties, reading
    /// the password. librdkafka checks the files when a client is made.
    pub fn resolve(&self) -> Result<ResolvedSecurity, SecurityError> {
        let bad = |what: &str| Err(SecurityError::Invalid(what.to_owned()));
        let p = self.protocol;
        if !p.tls() && (self.ca.is_some() || self.cert.is_some() || self.key.is_some()) {
            return bad("ca, cert and key are for the ssl and sasl_ssl protocols");
        }
        if self.cert.is_some() != self.key.is_some() {
            return bad("cert and key go together");
        }
        let sasl_given = self.sasl_mechanism.is_some()
            || self.sasl_username.is_some()
            || self.sasl_password_file.is_some()
            || self.sasl_password_env.is_some();
        if sasl_given && !p.sasl() {
            return bad("sasl_* settings are for the sasl_plaintext and sasl_ssl protocols");
        }
        let mut out = vec![("security.protocol".to_owned(), p.as_str().to_owned())];
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        if let Some(ca) = &self.ca {
            out.push(("ssl.ca.location".into(), path(ca)));
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            out.push(("ssl.certificate.location".into(), path(cert)));
            out.push(("ssl.key.location".into(), path(key)));
        }
        if p.sasl() {
            let (Some(mechanism), Some(username)) = (self.sasl_mechanism, &self.sasl_username)
            else {
                return bad("sasl protocols need sasl_mechanism and sasl_username");
            };
            let password = match (&self.sasl_password_file, &self.sasl_password_env) {
                (Some(file), None) => std::fs::read_to_string(file)
                    .map_err(|source| SecurityError::PasswordFile {
                        path: file.clone(),
                        source,
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
                (None, Some(var)) => {
                    std::env::var(var).map_err(|_| SecurityError::PasswordEnv(var.clone()))?
                }
                _ => return bad("give exactly one of sasl_password_file and sasl_password_env"),
            };
            out.push(("sasl.mechanism".into(), mechanism.as_str().into()));
            out.push(("sasl.username".into(), username.clone()));
            out.push(("sasl.password".into(), password));
        }
        for (k, v) in &self.properties {
            out.push((k.clone(), v.clone()));
        }
        Ok(ResolvedSecurity { properties: out })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_by_default() {
        let r = KafkaSecurity::default().resolve().unwrap();
        assert_eq!(r.get("security.protocol"), Some("plaintext"));
        assert_eq!(r.get("sasl.mechanism"), None);
    }

    #[test]
    fn sasl_password_from_a_file_is_set_and_hidden() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "hunter2\n").unwrap();
        let s = KafkaSecurity {
            protocol: Protocol::SaslSsl,
            ca: Some("/ca.pem".into()),
            sasl_mechanism: Some(SaslMechanism::ScramSha256),
            sasl_username: Some("u".into()),
            sasl_password_file: Some(file),
            properties: [(
                "ssl.endpoint.identification.algorithm".into(),
                "none".into(),
            )]
            .into(),
            ..KafkaSecurity::default()
        };
        let r = s.resolve().unwrap();
        assert_eq!(r.get("sasl.password"), Some("hunter2"));
        assert_eq!(r.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(r.get("ssl.ca.location"), Some("/ca.pem"));
        assert_eq!(r.get("ssl.endpoint.identification.algorithm"), Some("none"));
        let shown = format!("{r:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("<hidden>"),
            "{shown}"
        );
    }

    #[test]
    fn inconsistent_settings_are_refused() {
        let refused = |s: KafkaSecurity| s.resolve().unwrap_err().to_string();
        let e = refused(KafkaSecurity {
            ca: Some("/ca".into()),
            ..KafkaSecurity::default()
        });
        assert!(e.contains("ssl"), "{e}");
        let e = refused(KafkaSecurity {
            protocol: Protocol::Ssl,
            cert: Some("/c".into()),
            ..KafkaSecurity::default()
        });
        assert!(e.contains("together"), "{e}");
        let e = refused(KafkaSecurity {
            protocol: Protocol::SaslPlaintext,
            sasl_mechanism: Some(SaslMechanism::Plain),
            sasl_username: Some("u".into()),
            ..KafkaSecurity::default()
        });
        assert!(e.contains("exactly one"), "{e}");
        let e = refused(KafkaSecurity {
            protocol: Protocol::SaslPlaintext,
            sasl_mechanism: Some(SaslMechanism::Plain),
            sasl_username: Some("u".into()),
            sasl_password_env: Some("FLOWATTR_TEST_NO_SUCH_VARIABLE".into()),
            ..KafkaSecurity::default()
        });
        assert!(e.contains("FLOWATTR_TEST_NO_SUCH_VARIABLE"), "{e}");
        let e = refused(KafkaSecurity {
            sasl_username: Some("u".into()),
            ..KafkaSecurity::default()
        });
        assert!(e.contains("sasl_plaintext"), "{e}");
    }
}
