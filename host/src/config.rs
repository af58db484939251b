//! The agent's TOML configuration. Every key is optional; the defaults suit
//! one host. `agent.example.toml` at the crate root lists them all.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::capture::CaptureSettings;

mod transport;

pub use transport::TransportConfig;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// The name the agent puts on its batches ([`AgentConfig::agent_name`]).
    /// With `[transport]` collectors know the agent by its certificate, so
    /// the certificate names it, and a name given here must be the same.
    /// Without: the name on the JSON lines (default: the host name).
    pub name: Option<String>,
    pub capture: CaptureConfig,
    pub plugins: PluginsConfig,
    pub attribution: AttributionConfig,
    pub batch: BatchConfig,
    pub output: OutputConfig,
    pub metrics: MetricsConfig,
    pub privileges: PrivilegesConfig,
    /// When present, batches go to collectors over QUIC instead of
    /// `[output]`.
    pub transport: Option<TransportConfig>,
}

/// `[capture]`: the kernel side.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Live TCP sockets tracked at once (the kernel map's size).
    pub max_sockets: u32,
    /// Kernel-to-agent ring buffer size in bytes (a power of two).
    pub ring_buffer_bytes: u32,
    /// A live connection is reported at least this often ("0s": only at
    /// close).
    #[serde(with = "flowattr_daemon::config::duration")]
    pub report_interval: Duration,
    /// The ring buffer is read at most this often, so records are taken in
    /// bursts rather than one wakeup each.
    #[serde(with = "flowattr_daemon::config::duration")]
    pub poll_interval: Duration,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        let d = CaptureSettings::default();
        Self {
            max_sockets: d.max_sockets,
            ring_buffer_bytes: d.ring_buffer_bytes,
            report_interval: d.report_interval,
            poll_interval: Duration::from_millis(100),
        }
    }
}

impl CaptureConfig {
    /// The settings the capture takes.
    pub fn settings(&self) -> CaptureSettings {
        CaptureSettings {
            max_sockets: self.max_sockets,
            ring_buffer_bytes: self.ring_buffer_bytes,
            report_interval: self.report_interval,
        }
    }
}

/// `[plugins]`: the drop-in directory of identity and policy plugins.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    pub directory: PathBuf,
    /// Compiled-component cache (default: `/var/cache/flowattr` for an
    /// agent that drops root, else a `flowattr` directory in the user's
    /// cache location).
    pub cache_dir: Option<PathBuf>,
    /// Reload when files in the directory change.
    pub watch: bool,
    /// Host directories plugin grants may point under; a grant elsewhere
    /// is refused at load. Default: `/run/flowattr`, `/var/lib/flowattr`
    /// and the directory that holds `directory`.
    pub allowed_grant_roots: Option<Vec<PathBuf>>,
    /// Ed25519 public keys (hex). When any are set, only components with a
    /// `NAME.wasm.sig` by one of them load.
    pub trusted_keys: Vec<String>,
}

impl PluginsConfig {
    /// The runtime's grant and signature policy.
    pub fn trust(&self) -> anyhow::Result<flowattr_plugin_runtime::TrustPolicy> {
        flowattr_plugin_runtime::TrustPolicy::new(
            self.allowed_grant_roots.clone(),
            &self.trusted_keys,
        )
        .map_err(|e| e.context("[plugins] trusted_keys"))
    }
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            directory: "/etc/flowattr/plugins".into(),
            cache_dir: None,
            watch: true,
            allowed_grant_roots: None,
            trusted_keys: Vec::new(),
        }
    }
}

/// `[attribution]`: the local-side answer cache.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttributionConfig {
    /// Local endpoints whose answers are cached for their validity range.
    pub cache_entries: usize,
}

impl Default for AttributionConfig {
    fn default() -> Self {
        Self {
            cache_entries: 65_536,
        }
    }
}

/// `[batch]`: when a batch is closed and written out.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BatchConfig {
    /// Flows per batch at most.
    pub max_flows: usize,
    /// A batch is closed this long after its first flow at the latest
    /// (checked every 100 ms); with no flows, an empty batch (carrying the
    /// watermark) this long after the last batch.
    #[serde(with = "flowattr_daemon::config::duration")]
    pub max_age: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_flows: 10_000,
            max_age: Duration::from_secs(60),
        }
    }
}

/// `[output]`: where batches go when no `[transport]` is configured.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputConfig {
    /// A file to append JSON lines to (one batch per line); stdout when
    /// absent.
    pub path: Option<PathBuf>,
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Serve `GET /metrics` at all.
    pub enabled: bool,
    /// Address serving `GET /metrics`.
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9464)),
        }
    }
}

/// `[privileges]`: who the agent is once capture is attached.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivilegesConfig {
    /// The unprivileged user the agent becomes (no capabilities left);
    /// `"root"` keeps root.
    pub user: String,
}

impl Default for PrivilegesConfig {
    fn default() -> Self {
        Self {
            user: "flowattr".into(),
        }
    }
}

impl PrivilegesConfig {
    /// Keeps root: for an agent run inside a test process, whose other
    /// tests still need root.
    pub fn keep_root() -> Self {
        Self {
            user: "root".into(),
        }
    }
}

pub use flowattr_daemon::config::ConfigError;

impl AgentConfig {
    /// Parses `text`; errors name the offending key.
    pub fn parse(text: &str) -> Result<AgentConfig, String> {
        let config: AgentConfig = flowattr_daemon::config::parse(text)?;
        config.check()?;
        Ok(config)
    }

    /// Reads and parses the file at `path`.
    pub fn load(path: &std::path::Path) -> Result<AgentConfig, ConfigError> {
        flowattr_daemon::config::load(path, Self::parse)
    }

    fn check(&self) -> Result<(), String> {
        if self.batch.max_flows == 0 {
            return Err("at `batch.max_flows`: must be at least 1".into());
        }
        if self.batch.max_age.is_zero() || self.batch.max_age > Duration::from_secs(60) {
            return Err("at `batch.max_age`: must be between 1ms and 60s".into());
        }
        if self.capture.poll_interval > Duration::from_secs(1) {
            return Err("at `capture.poll_interval`: must be at most 1s".into());
        }
        if self.capture.max_sockets == 0 {
            return Err("at `capture.max_sockets`: must be at least 1".into());
        }
        if self.name.as_deref() == Some("") {
            return Err("at `name`: must not be empty".into());
        }
        if let Some(transport) = &self.transport {
            transport.check()?;
        }
        Ok(())
    }
}

impl AgentConfig {
    /// The name the agent runs under. With `[transport]`: the name in its
    /// certificate, as collectors read it (a collector refuses every batch
    /// that names anyone else); refused, in one sentence naming both names
    /// and the file, when `name` says otherwise. Without: `name`, else the
    /// host name.
    pub fn agent_name(&self) -> Result<String, String> {
        let Some(transport) = &self.transport else {
            return Ok(self.name.clone().unwrap_or_else(host_name));
        };
        let cert = &transport.cert;
        let certified = flowattr_transport::tls::certificate_identity(cert)
            .map_err(|e| format!("at `transport.cert`: {e}"))?
            .0;
        match &self.name {
            Some(name) if *name != certified => Err(format!(
                "`name` is {name:?} but the agent's certificate {} names {certified:?}, and collectors refuse every batch that names anyone but its certificate: remove `name` (the certificate names the agent) or use a certificate issued for {name:?}",
                cert.display()
            )),
            _ => Ok(certified),
        }
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = AgentConfig::parse("").unwrap();
        assert_eq!(c.batch.max_age, Duration::from_secs(60));
        assert_eq!(c.capture.report_interval, Duration::from_secs(30));
        assert_eq!(c.plugins.directory, PathBuf::from("/etc/flowattr/plugins"));
        assert!(!c.agent_name().unwrap().is_empty(), "the host name");
    }

    /// A configuration shipping with the certificate of `certified`,
    /// naming the agent `name` (when given).
    fn shipping(pki: &std::path::Path, certified: &str, name: Option<&str>) -> AgentConfig {
        flowattr_transport::certs::generate_dev_pki(pki, &[], &[certified]).unwrap();
        let d = pki.display();
        let name = name.map_or(String::new(), |n| format!("name = {n:?}\n"));
        AgentConfig::parse(&format!(
            "{name}[transport]\ncollectors = [\"127.0.0.1:7443\"]\nca = \"{d}/ca.pem\"\ncert = \"{d}/{certified}.pem\"\nkey = \"{d}/{certified}.key\"\n"
        ))
        .unwrap()
    }

    #[test]
    fn a_shipping_agent_is_named_by_its_certificate() {
        let pki = tempfile::tempdir().unwrap();
        let unnamed = shipping(pki.path(), "ip-10-0-0-12", None);
        assert_eq!(unnamed.agent_name().unwrap(), "ip-10-0-0-12");
        let same = shipping(pki.path(), "ip-10-0-0-12", Some("ip-10-0-0-12"));
        assert_eq!(same.agent_name().unwrap(), "ip-10-0-0-12");
        // Without transport the configured name stands.
        let local = AgentConfig::parse("name = \"lines\"").unwrap();
        assert_eq!(local.agent_name().unwrap(), "lines");
    }

    #[test]
    fn a_name_the_certificate_does_not_carry_is_refused_in_one_sentence() {
        let pki = tempfile::tempdir().unwrap();
        let config = shipping(pki.path(), "ip-10-0-0-12", Some("web-1"));
        let e = config.agent_name().unwrap_err();
        let cert = pki.path().join("ip-10-0-0-12.pem");
        assert_eq!(
            e,
            format!(
                "`name` is \"web-1\" but the agent's certificate {} names \"ip-10-0-0-12\", and collectors refuse every batch that names anyone but its certificate: remove `name` (the certificate names the agent) or use a certificate issued for \"web-1\"",
                cert.display()
            )
        );
        assert!(!e.contains('\n'));
        // A certificate that cannot be read names the key and the file.
        std::fs::remove_file(&cert).unwrap();
        let e = config.agent_name().unwrap_err();
        assert!(
            e.contains("transport.cert") && e.contains("ip-10-0-0-12.pem"),
            "{e}"
        );
    }

    #[test]
    fn example_file_parses() {
        let text = include_str!("../agent.example.toml");
        let c = AgentConfig::parse(text).unwrap();
        assert_eq!(c.batch.max_flows, 10_000);
        assert_eq!(
            c.output.path,
            Some(PathBuf::from("/var/lib/flowattr/flows.jsonl"))
        );
    }

    #[test]
    fn the_example_transport_section_parses_when_uncommented() {
        let text = include_str!("../agent.example.toml");
        let start = text.find("# [transport]").expect("a [transport] example");
        let (before, section) = text.split_at(start);
        // Uncomment the example's settings (`# key = value`), not its prose.
        let section: String = section
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(s) if s.starts_with('[') || s.contains(" = ") => s,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let c = AgentConfig::parse(&format!("{before}{section}")).unwrap();
        let t = c.transport.expect("a [transport] section");
        assert_eq!(t.collectors.len(), 2);
        assert_eq!(t.collectors[1].server_name, "collector-2");
        assert_eq!(t.max_in_flight, 8);
        let shipper = t.shipper_config();
        assert_eq!(shipper.spool_dir, PathBuf::from("/var/lib/flowattr/spool"));
        assert_eq!(shipper.ack_timeout, Duration::from_secs(60));
        assert_eq!(AgentConfig::parse(text).unwrap().transport, None);
    }

    #[test]
    fn transport_errors_name_the_key() {
        let files = "ca = \"c\"\ncert = \"c\"\nkey = \"k\"\n";
        let e = AgentConfig::parse(&format!("[transport]\ncollectors = [\"nowhere\"]\n{files}"))
            .unwrap_err();
        assert!(
            e.contains("transport.collectors") && e.contains("IP:PORT"),
            "{e}"
        );
        let e = AgentConfig::parse(&format!("[transport]\ncollectors = []\n{files}")).unwrap_err();
        assert!(e.contains("transport.collectors"), "{e}");
        let e = AgentConfig::parse("[transport]\ncollectors = [\"127.0.0.1:7443\"]\n").unwrap_err();
        assert!(e.contains("ca"), "{e}");
    }

    #[test]
    fn errors_name_the_key() {
        let e = AgentConfig::parse("[batch]\nmax_age = \"soon\"").unwrap_err();
        assert!(e.contains("batch.max_age"), "{e}");
        let e = AgentConfig::parse("[batch]\nmax_age = \"5m\"").unwrap_err();
        assert!(e.contains("batch.max_age") && e.contains("60s"), "{e}");
        let e = AgentConfig::parse("[capture]\nmax_socket = 5").unwrap_err();
        assert!(e.contains("max_socket"), "{e}");
    }
}
