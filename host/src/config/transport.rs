//! `[transport]`: shipping batches to collectors over QUIC with mutual TLS
//! instead of writing JSON lines. Present means on.

use std::{path::PathBuf, time::Duration};

use flowattr_transport::{CollectorAddr, ShipperConfig, tls::TlsFiles};
use serde::{Deserialize, Deserializer};

/// `[transport]`: where batches go and how they wait on disk until a
/// collector acknowledges them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransportConfig {
    /// Collectors in failover order: `"IP:PORT"` (the collector's
    /// certificate must name the IP) or `"NAME@IP:PORT"`.
    #[serde(deserialize_with = "collectors")]
    pub collectors: Vec<CollectorAddr>,
    /// The CA that signs collectors' and agents' certificates (PEM).
    pub ca: PathBuf,
    /// This agent's certificate chain (PEM); its Common Name is the name
    /// collectors know the agent by, and so the agent's name.
    pub cert: PathBuf,
    /// This agent's private key (PEM).
    pub key: PathBuf,
    /// One file per batch not yet acknowledged; found again after a restart.
    #[serde(default = "spool_dir")]
    pub spool_dir: PathBuf,
    /// Past this the oldest spooled batch is dropped (counted).
    #[serde(default = "spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// Batches sent and not yet acknowledged before the pipeline waits.
    #[serde(default = "max_in_flight")]
    pub max_in_flight: usize,
    /// The first delay after a failure is drawn from 0 up to this; the
    /// ceiling doubles with each failure up to `retry_max`.
    #[serde(default = "retry_min", with = "flowattr_daemon::config::duration")]
    pub retry_min: Duration,
    #[serde(default = "retry_max", with = "flowattr_daemon::config::duration")]
    pub retry_max: Duration,
    /// A connection attempt fails after this.
    #[serde(
        default = "connect_timeout",
        with = "flowattr_daemon::config::duration"
    )]
    pub connect_timeout: Duration,
    /// A batch not acknowledged within this is sent again, and the
    /// collector failed over.
    #[serde(default = "ack_timeout", with = "flowattr_daemon::config::duration")]
    pub ack_timeout: Duration,
    /// At shutdown, spooled batches are sent for at most this long; the
    /// rest wait for the next start.
    #[serde(default = "shutdown_flush", with = "flowattr_daemon::config::duration")]
    pub shutdown_flush: Duration,
}

fn collectors<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<CollectorAddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

fn spool_dir() -> PathBuf {
    "/var/lib/flowattr/spool".into()
}

fn spool_max_bytes() -> u64 {
    1 << 30
}

fn max_in_flight() -> usize {
    8
}

fn retry_min() -> Duration {
    Duration::from_millis(100)
}

fn retry_max() -> Duration {
    Duration::from_secs(30)
}

fn connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn ack_timeout() -> Duration {
    Duration::from_secs(60)
}

fn shutdown_flush() -> Duration {
    Duration::from_secs(5)
}

impl TransportConfig {
    /// The shipper's configuration.
    pub fn shipper_config(&self) -> ShipperConfig {
        let tls = TlsFiles {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
        };
        ShipperConfig {
            spool_max_bytes: self.spool_max_bytes,
            max_in_flight: self.max_in_flight,
            retry_min: self.retry_min,
            retry_max: self.retry_max,
            connect_timeout: self.connect_timeout,
            ack_timeout: self.ack_timeout,
            ..ShipperConfig::new(self.collectors.clone(), tls, self.spool_dir.clone())
        }
    }

    pub(super) fn check(&self) -> Result<(), String> {
        if self.collectors.is_empty() {
            return Err("at `transport.collectors`: name at least one collector".into());
        }
        if self.max_in_flight == 0 {
            return Err("at `transport.max_in_flight`: must be at least 1".into());
        }
        if self.retry_min.is_zero() || self.retry_min > self.retry_max {
            return Err("at `transport.retry_min`: must be above 0 and at most `retry_max`".into());
        }
        Ok(())
    }
}
