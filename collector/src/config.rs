//! The collector's TOML configuration. Every key but the TLS files has a
//! default; `collector.example.toml` at the crate root lists them all.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer};

use crate::{
    ownership::{OwnershipConfig, Prefix},
    sharing::security::KafkaSecurity,
};

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorConfig {
    /// This collector's name: its certificate's name, and the origin of
    /// what it publishes to Kafka. Default: the host name.
    pub name: String,
    /// Where agents (and other regions' collectors) connect over QUIC.
    pub listen: SocketAddr,
    /// The journal of accepted batches and the forwarding spools.
    pub data_dir: PathBuf,
    /// The longest flows wait for completeness: until every agent that may
    /// claim their remote address has reported past them (then they leave
    /// at once). A flow still incomplete then goes out `incomplete`.
    #[serde(with = "flowattr_daemon::config::duration")]
    pub hold: Duration,
    /// An agent heard nothing from (directly or through Kafka) for this
    /// long is no longer waited for.
    #[serde(with = "flowattr_daemon::config::duration")]
    pub silent_after: Duration,
    /// Flows held at most; beyond it no batch is accepted until some leave.
    pub max_held_flows: usize,
    /// Threads doing the per-flow work: the core's (attribution) and
    /// `workers - 1` running the sink plugin, each with an instance of its
    /// own. 0 (the default): the machine's cores.
    pub workers: usize,
    /// Batch ids remembered to drop duplicates.
    pub remember_batches: usize,
    pub tls: TlsConfig,
    pub ownership: OwnershipSection,
    /// Which addresses each agent may claim, by certificate name: a list of
    /// prefixes, or `["any"]`. An agent not listed claims nothing.
    #[serde(deserialize_with = "claims")]
    pub claims: BTreeMap<String, Claim>,
    /// Sharing through Kafka; absent: this collector's table only.
    pub kafka: Option<KafkaSection>,
    /// Other regions: their prefixes and collectors.
    pub regions: Vec<RegionSection>,
    /// Certificate names of other regions' collectors allowed to forward
    /// flows here.
    pub forward_peers: Vec<String>,
    pub plugins: PluginsSection,
    /// Where attributed flows go; default: stdout.
    pub outputs: Vec<OutputSection>,
    /// What all outputs together may hold queued while one is down.
    pub max_queued_bytes: usize,
    /// Arrivals that may wait for room in the hold, by count and by bytes
    /// (frames and decoded flows); past either, the collector stops reading
    /// from agents, and QUIC flow control slows them.
    pub arrival_queue_batches: usize,
    pub arrival_queue_bytes: usize,
    pub metrics: MetricsSection,
    /// The owner lookup, service map and page on the metrics endpoint.
    pub live: crate::live::LiveSection,
    pub ingest: IngestSection,
    /// The legacy address-event stream, for resolver plugins.
    pub legacy: Option<LegacySection>,
    /// A/B records: each flow's remote side beside the shadow resolver's.
    pub ab: Option<AbSection>,
}

/// `[legacy]`: where the legacy address events come from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacySection {
    /// A JSON-lines file of address events that the collector follows as it
    /// grows (one `IpEvent` a line).
    pub events: PathBuf,
}

/// `[ab]`: the A/B comparison against the first `shadow` resolver.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbSection {
    /// The JSON-lines file compared flows are appended to (`flowattr ab`
    /// reads it).
    pub records: PathBuf,
    /// The legacy method's own hold: the shadow resolver is asked this long
    /// after a flow's start (or at release, if later). Default 0.
    #[serde(default, with = "flowattr_daemon::config::duration")]
    pub shadow_hold: Duration,
}

impl CollectorConfig {
    /// `workers`, with 0 read as the machine's cores.
    pub fn worker_threads(&self) -> usize {
        worker_threads(self.workers)
    }
}

/// A `workers` setting, with 0 read as the machine's cores.
pub fn worker_threads(workers: usize) -> usize {
    match workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            name: host_name(),
            listen: "0.0.0.0:7443".parse().expect("valid"),
            data_dir: PathBuf::from("/var/lib/flowattr/collector"),
            hold: Duration::from_secs(120),
            silent_after: Duration::from_secs(300),
            max_held_flows: 4_000_000,
            workers: 0,
            remember_batches: 100_000,
            tls: TlsConfig::default(),
            ownership: OwnershipSection::default(),
            claims: BTreeMap::new(),
            kafka: None,
            regions: Vec::new(),
            forward_peers: Vec::new(),
            plugins: PluginsSection::default(),
            outputs: vec![OutputSection::Stdout],
            max_queued_bytes: 256 << 20,
            arrival_queue_batches: 256,
            arrival_queue_bytes: 256 << 20,
            metrics: MetricsSection::default(),
            live: crate::live::LiveSection::default(),
            ingest: IngestSection::default(),
            legacy: None,
            ab: None,
        }
    }
}

/// `[ingest]`: what the collector takes from whom, and how much at once.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSection {
    /// Refuse batches from agents not listed in `[claims]` (the agent keeps
    /// them and offers them again). Default true; false writes their flows
    /// out with every local side they attributed unattributed.
    pub refuse_unclaimed_agents: bool,
    /// Flows in one batch at most (checked before decoding).
    pub max_flows_per_batch: usize,
    /// Workloads in one batch's dictionary at most.
    pub max_workloads_per_batch: usize,
    /// Labels of one workload at most.
    pub max_labels_per_workload: usize,
    /// Bytes of one string (names, workload fields, labels) at most.
    pub max_string_bytes: usize,
    /// Frame bytes read or waiting for an answer, over all agents.
    pub max_in_flight_bytes: usize,
    /// The same, per agent identity.
    pub max_in_flight_bytes_per_agent: usize,
    /// Connections one agent identity may hold at once.
    pub max_connections_per_agent: usize,
    /// Handshakes in progress past which new clients must prove their
    /// address first (a QUIC retry).
    pub max_pending_handshakes: usize,
    /// Frames decoded at once, off the async workers.
    pub decode_threads: usize,
}

impl Default for IngestSection {
    fn default() -> Self {
        let limits = flowattr_transport::codec::DecodeLimits::default();
        let receiver = flowattr_transport::ReceiverConfig::new(
            "0.0.0.0:0".parse().expect("valid"),
            flowattr_transport::tls::TlsFiles::in_dir(std::path::Path::new(""), ""),
        );
        Self {
            refuse_unclaimed_agents: true,
            max_flows_per_batch: limits.max_flows,
            max_workloads_per_batch: limits.max_workloads,
            max_labels_per_workload: limits.max_labels,
            max_string_bytes: limits.max_string_bytes,
            max_in_flight_bytes: receiver.max_in_flight_bytes,
            max_in_flight_bytes_per_agent: receiver.max_in_flight_bytes_per_identity,
            max_connections_per_agent: receiver.max_connections_per_identity,
            max_pending_handshakes: receiver.max_pending_handshakes,
            decode_threads: receiver.decode_threads,
        }
    }
}

impl IngestSection {
    /// The decoding limits these keys set.
    pub fn limits(&self) -> flowattr_transport::codec::DecodeLimits {
        flowattr_transport::codec::DecodeLimits {
            max_flows: self.max_flows_per_batch,
            max_workloads: self.max_workloads_per_batch,
            max_labels: self.max_labels_per_workload,
            max_string_bytes: self.max_string_bytes,
            ..Default::default()
        }
    }

    /// Sets the receiver's limits from these keys.
    pub fn apply(&self, receiver: &mut flowattr_transport::ReceiverConfig) {
        receiver.limits = self.limits();
        receiver.max_in_flight_bytes = self.max_in_flight_bytes;
        receiver.max_in_flight_bytes_per_identity = self.max_in_flight_bytes_per_agent;
        receiver.max_connections_per_identity = self.max_connections_per_agent;
        receiver.max_pending_handshakes = self.max_pending_handshakes;
        receiver.decode_threads = self.decode_threads;
    }
}

/// `[tls]`: PEM files.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The CA that signs agents' and collectors' certificates.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for TlsConfig {
    fn default() -> Self {
        let dir = PathBuf::from("/etc/flowattr/tls");
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("collector.pem"),
            key: dir.join("collector.key"),
        }
    }
}

/// `[ownership]`: see [`OwnershipConfig`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OwnershipSection {
    #[serde(with = "flowattr_daemon::config::duration")]
    pub merge_gap: Duration,
    #[serde(with = "flowattr_daemon::config::duration")]
    pub expire_after: Duration,
    pub max_ranges: usize,
    #[serde(with = "flowattr_daemon::config::duration")]
    pub max_skew: Duration,
}

impl Default for OwnershipSection {
    fn default() -> Self {
        let d = OwnershipConfig::default();
        Self {
            merge_gap: Duration::from_nanos(d.merge_gap_ns),
            expire_after: Duration::from_nanos(d.expire_after_ns),
            max_ranges: d.max_ranges,
            max_skew: Duration::from_nanos(d.max_skew_ns),
        }
    }
}

impl OwnershipSection {
    pub fn to_config(&self) -> OwnershipConfig {
        let ns = |d: Duration| d.as_nanos().min(u64::MAX as u128) as u64;
        OwnershipConfig {
            merge_gap_ns: ns(self.merge_gap),
            expire_after_ns: ns(self.expire_after),
            max_ranges: self.max_ranges,
            max_skew_ns: ns(self.max_skew),
        }
    }
}

/// What one agent may claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Any,
    Prefixes(Vec<Prefix>),
}

/// `[kafka]`: ownership sharing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSection {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Partitions of the topic, if this collector creates it.
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// How far back a starting collector reads shared history. Default:
    /// the ownership expiry.
    #[serde(default, deserialize_with = "optional_duration")]
    pub warmup: Option<Duration>,
    /// How the clients connect to the brokers (TLS, SASL).
    #[serde(default)]
    pub security: KafkaSecurity,
    /// This collector's Ed25519 private key (PKCS#8 PEM): every message it
    /// publishes is signed. Required unless `unauthenticated`.
    #[serde(default)]
    pub signing_key: Option<PathBuf>,
    /// The other collectors whose messages are taken: their public keys
    /// and the claimants (agents) each may speak for.
    #[serde(default)]
    pub origins: BTreeMap<String, OriginSection>,
    /// Take every well-formed message, signed or not (a warning at start).
    /// Default false: sharing without a signing key refuses to start.
    #[serde(default)]
    pub unauthenticated: bool,
    /// A message read larger than this is refused unparsed.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
}

/// `[kafka.origins.NAME]`: a collector whose sharing messages are trusted.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginSection {
    /// Its Ed25519 public keys (PEM `PUBLIC KEY`); more than one while it
    /// changes keys.
    pub public_keys: Vec<PathBuf>,
    /// The agents (certificate names) it may publish ranges and watermarks
    /// for, or `["any"]`.
    pub claimants: Vec<String>,
}

impl KafkaSection {
    /// The minimal section: `brokers` and `topic`, unauthenticated, the
    /// rest default.
    pub fn unauthenticated(brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            topic: topic.into(),
            partitions: default_partitions(),
            warmup: None,
            security: KafkaSecurity::default(),
            signing_key: None,
            origins: BTreeMap::new(),
            unauthenticated: true,
            max_message_bytes: default_max_message_bytes(),
        }
    }

    /// The sharing's settings for collector `name`, keys read.
    pub fn to_sharing_config(
        &self,
        name: &str,
        expire_after: Duration,
    ) -> Result<crate::sharing::SharingConfig, String> {
        use crate::sharing::auth::{Claimants, PublicKey, Signer, Trust};
        let mut c = crate::sharing::SharingConfig::new(&self.brokers, &self.topic);
        c.partitions = self.partitions;
        c.warmup_window = self.warmup.unwrap_or(expire_after);
        c.security = self.security.clone();
        c.max_message_bytes = self.max_message_bytes;
        if let Some(path) = &self.signing_key {
            let signer = Signer::from_pem_file(name, path)
                .map_err(|e| format!("at `kafka.signing_key`: {e}"))?;
            c.signer = Some(std::sync::Arc::new(signer));
        }
        if !self.unauthenticated {
            let mut trust = Trust::default();
            for (origin, o) in &self.origins {
                let keys = o
                    .public_keys
                    .iter()
                    .map(|p| PublicKey::from_pem_file(p))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("at `kafka.origins.{origin}.public_keys`: {e}"))?;
                let claimants = if o.claimants.iter().any(|c| c == "any") {
                    Claimants::Any
                } else {
                    Claimants::only(o.claimants.iter().map(String::as_str))
                };
                trust.add(origin, keys, claimants);
            }
            c.trust = Some(trust);
        }
        Ok(c)
    }

    fn check(&self, name: &str) -> Result<(), String> {
        if !self.unauthenticated && self.signing_key.is_none() {
            return Err(
                "at `kafka`: sharing needs `signing_key` (this collector's Ed25519 key) \
                        and `[kafka.origins.NAME]` for the collectors it trusts, or \
                        `unauthenticated = true` to take any message from anyone who can \
                        write to the topic"
                    .into(),
            );
        }
        for (origin, o) in &self.origins {
            if origin == name {
                return Err(format!(
                    "at `kafka.origins.{origin}`: this collector's own messages are verified with its signing key; do not list it"
                ));
            }
            if o.public_keys.is_empty() {
                return Err(format!(
                    "at `kafka.origins.{origin}.public_keys`: no key given"
                ));
            }
            if o.claimants.is_empty() {
                return Err(format!(
                    "at `kafka.origins.{origin}.claimants`: empty (list agents, or [\"any\"])"
                ));
            }
        }
        if self.max_message_bytes == 0 {
            return Err("at `kafka.max_message_bytes`: must be above zero".into());
        }
        self.security
            .resolve()
            .map(drop)
            .map_err(|e| format!("at `kafka.security`: {e}"))
    }
}

fn default_topic() -> String {
    "flowattr-ownership".into()
}

fn default_partitions() -> i32 {
    3
}

/// `[[regions]]`: another region.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSection {
    pub name: String,
    /// Its address prefixes.
    #[serde(deserialize_with = "prefixes")]
    pub prefixes: Vec<Prefix>,
    /// Its collectors, `ADDRESS:PORT` or `NAME@ADDRESS:PORT` where NAME is
    /// the certificate name (default `localhost`).
    pub collectors: Vec<String>,
}

/// `[plugins]`: the drop-in directory of resolver, policy and sink plugins.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsSection {
    pub directory: PathBuf,
    pub cache_dir: Option<PathBuf>,
    pub watch: bool,
    /// Host directories plugin grants may point under; a grant elsewhere
    /// is refused at load. Default: `/run/flowattr`, `/var/lib/flowattr`
    /// and the directory that holds `directory`.
    pub allowed_grant_roots: Option<Vec<PathBuf>>,
    /// Ed25519 public keys (hex). When any are set, only components with a
    /// `NAME.wasm.sig` by one of them load.
    pub trusted_keys: Vec<String>,
    /// The sink plugin that formats flows for the outputs.
    pub sink: String,
    /// Flows per sink call (one output chunk). A call carries its flows'
    /// distinct workloads once, so larger calls repeat them less.
    pub sink_batch: usize,
}

impl PluginsSection {
    /// The runtime's grant and signature policy.
    pub fn trust(&self) -> anyhow::Result<flowattr_plugin_runtime::TrustPolicy> {
        flowattr_plugin_runtime::TrustPolicy::new(
            self.allowed_grant_roots.clone(),
            &self.trusted_keys,
        )
        .map_err(|e| e.context("[plugins] trusted_keys"))
    }
}

impl Default for PluginsSection {
    fn default() -> Self {
        Self {
            directory: PathBuf::from("/etc/flowattr/plugins"),
            cache_dir: None,
            watch: true,
            allowed_grant_roots: None,
            trusted_keys: Vec::new(),
            sink: "jsonl-sink".into(),
            sink_batch: 16384,
        }
    }
}

/// `[[outputs]]`: one destination.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum OutputSection {
    Stdout,
    File {
        dir: PathBuf,
        #[serde(default = "default_prefix")]
        prefix: String,
        #[serde(default = "default_rotate_bytes")]
        rotate_bytes: u64,
        #[serde(
            default = "default_rotate_after",
            with = "flowattr_daemon::config::duration"
        )]
        rotate_after: Duration,
        #[serde(default = "default_keep_files")]
        keep_files: usize,
    },
    Kafka(KafkaOutputSection),
    Otlp(OtlpOutputSection),
}

/// `[[outputs]]` with `type = "otlp"`: OpenTelemetry logs over OTLP/HTTP
/// (protobuf), see [`crate::output::otlp`]. Needs a sink that writes OTLP
/// (`[plugins] sink = "otlp-sink"`); the collector refuses to start
/// otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpOutputSection {
    /// `http://` or `https://` URL; without a path, `/v1/logs` is added
    /// (`http://otel:4318` → `http://otel:4318/v1/logs`).
    pub endpoint: String,
    /// Headers sent with every request (`authorization`, a tenant id).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The most one request may take, answer included. Default 10s.
    #[serde(
        default = "default_otlp_timeout",
        with = "flowattr_daemon::config::duration"
    )]
    pub timeout: Duration,
    /// The largest request body; larger chunks are formatted again with
    /// fewer flows. Default 8 MiB (the OpenTelemetry Collector's receiver
    /// takes 20 MiB by default).
    #[serde(default = "default_otlp_max_request_bytes")]
    pub max_request_bytes: usize,
    /// Bytes of requests the output holds while the receiver is slow or
    /// down (then the collector's `max_queued_bytes`). Default 64 MiB.
    #[serde(default = "default_otlp_queue_bytes")]
    pub queue_bytes: usize,
    /// The first retry's longest wait; doubles up to `retry_max`.
    /// Defaults 100ms and 30s.
    #[serde(
        default = "default_otlp_retry_initial",
        with = "flowattr_daemon::config::duration"
    )]
    pub retry_initial: Duration,
    #[serde(
        default = "default_otlp_retry_max",
        with = "flowattr_daemon::config::duration"
    )]
    pub retry_max: Duration,
}

fn default_otlp_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_otlp_max_request_bytes() -> usize {
    8 << 20
}
fn default_otlp_queue_bytes() -> usize {
    64 << 20
}
fn default_otlp_retry_initial() -> Duration {
    Duration::from_millis(100)
}
fn default_otlp_retry_max() -> Duration {
    Duration::from_secs(30)
}

impl OtlpOutputSection {
    /// The output's settings; an endpoint that is not an http(s) URL is an
    /// error naming it.
    pub fn to_config(&self) -> Result<crate::output::otlp::OtlpOutputConfig, String> {
        let mut config = crate::output::otlp::OtlpOutputConfig::new(&self.endpoint)?;
        config.headers = self.headers.clone();
        config.timeout = self.timeout;
        config.max_request_bytes = self.max_request_bytes;
        config.queue_bytes = self.queue_bytes;
        config.retry_initial = self.retry_initial;
        config.retry_max = self.retry_max;
        Ok(config)
    }
}

/// `[[outputs]]` with `type = "kafka"`: see
/// [`KafkaOutputConfig`](crate::output::kafka::KafkaOutputConfig).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaOutputSection {
    pub brokers: String,
    pub topic: String,
    /// Create the topic when the broker does not know it. Default true.
    #[serde(default = "yes")]
    pub create: bool,
    #[serde(default = "default_partitions")]
    pub partitions: i32,
    /// Copies of each partition; default: the broker's default.
    #[serde(default)]
    pub replication_factor: Option<i32>,
    /// The largest message sent (lowered to the topic's own limit).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// How it connects (TLS, SASL): as `[kafka.security]`.
    #[serde(default)]
    pub security: KafkaSecurity,
    /// librdkafka producer properties, set over the collector's own
    /// (`compression.type`, …).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

fn default_max_message_bytes() -> usize {
    1_000_000
}

impl KafkaOutputSection {
    pub fn to_config(&self) -> crate::output::kafka::KafkaOutputConfig {
        crate::output::kafka::KafkaOutputConfig {
            create: self.create,
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            max_message_bytes: self.max_message_bytes,
            security: self.security.clone(),
            properties: self.properties.clone(),
            ..crate::output::kafka::KafkaOutputConfig::new(&self.brokers, &self.topic)
        }
    }
}

fn default_prefix() -> String {
    "flows".into()
}
fn default_rotate_bytes() -> u64 {
    256 << 20
}
fn default_rotate_after() -> Duration {
    Duration::from_secs(3600)
}
fn default_keep_files() -> usize {
    48
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    pub enabled: bool,
    pub listen: SocketAddr,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:9465".parse().expect("valid"),
        }
    }
}

pub use flowattr_daemon::config::ConfigError;

impl CollectorConfig {
    /// Parses a configuration; errors name the key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = flowattr_daemon::config::parse(text)?;
        config.check()?;
        Ok(config)
    }

    /// Reads and parses `path`.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        flowattr_daemon::config::load(path, Self::parse)
    }

    fn check(&self) -> Result<(), String> {
        if self.hold.is_zero() && self.kafka.is_some() {
            return Err(
                "hold: 0s with kafka sharing leaves no time for other collectors' heartbeats"
                    .into(),
            );
        }
        if let Some(kafka) = &self.kafka {
            kafka.check(&self.name)?;
        }
        if self.outputs.is_empty() {
            return Err("at `outputs`: at least one output is needed".into());
        }
        for output in &self.outputs {
            if let OutputSection::Otlp(otlp) = output {
                let config = otlp
                    .to_config()
                    .map_err(|e| format!("at `outputs` (otlp), `endpoint`: {e}"))?;
                if config.timeout.is_zero() || config.max_request_bytes == 0 {
                    return Err(
                        "at `outputs` (otlp): `timeout` and `max_request_bytes` must be above 0"
                            .into(),
                    );
                }
            }
        }
        for r in &self.regions {
            if r.collectors.is_empty() {
                return Err(format!(
                    "at `regions` ({}): no collectors to forward to",
                    r.name
                ));
            }
        }
        Ok(())
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "collector".into())
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    flowattr_daemon::config::duration::deserialize(d).map(Some)
}

fn prefixes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Prefix>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|p| p.parse().map_err(serde::de::Error::custom))
        .collect()
}

fn claims<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Claim>, D::Error> {
    let raw = BTreeMap::<String, Vec<String>>::deserialize(d)?;
    raw.into_iter()
        .map(|(agent, list)| {
            if list.iter().any(|p| p == "any") {
                return Ok((agent, Claim::Any));
            }
            let prefixes = list
                .iter()
                .map(|p| {
                    p.parse()
                        .map_err(|e| serde::de::Error::custom(format!("{agent}: {e}")))
                })
                .collect::<Result<_, D::Error>>()?;
            Ok((agent, Claim::Prefixes(prefixes)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = CollectorConfig::parse("").unwrap();
        assert_eq!(c.hold, Duration::from_secs(120));
        assert_eq!(c.outputs, vec![OutputSection::Stdout]);
        assert!(c.kafka.is_none());
        assert_eq!(c.ownership.to_config(), OwnershipConfig::default());
    }

    #[test]
    fn example_file_parses() {
        let text = include_str!("../collector.example.toml");
        let c = CollectorConfig::parse(text).unwrap();
        assert_eq!(c.claims.len(), 2);
        assert!(c.kafka.is_some());
        assert_eq!(c.outputs.len(), 2);
    }

    #[test]
    fn errors_name_the_key() {
        let e = CollectorConfig::parse("hold = \"soon\"").unwrap_err();
        assert!(e.starts_with("at `hold`"), "{e}");
        let e = CollectorConfig::parse("[claims]\nagent-a = [\"10.0.0.1/8\"]").unwrap_err();
        assert!(e.contains("claims") && e.contains("host bits"), "{e}");
        let e = CollectorConfig::parse("[[outputs]]\ntype = \"ftp\"").unwrap_err();
        assert!(e.starts_with("at `outputs"), "{e}");
        let e = CollectorConfig::parse("unknown = 1").unwrap_err();
        assert!(e.contains("unknown"), "{e}");
    }

    #[test]
    fn an_otlp_output_gets_its_logs_path_and_a_bad_endpoint_is_named() {
        let c = CollectorConfig::parse(
            "[[outputs]]\ntype = \"otlp\"\nendpoint = \"http://otel:4318\"\ntimeout = \"2s\"\nheaders = { authorization = \"Bearer x\" }",
        )
        .unwrap();
        let OutputSection::Otlp(otlp) = &c.outputs[0] else {
            panic!("{:?}", c.outputs)
        };
        let config = otlp.to_config().unwrap();
        assert_eq!(config.url, "http://otel:4318/v1/logs");
        assert_eq!(config.timeout, Duration::from_secs(2));
        assert_eq!(config.headers["authorization"], "Bearer x");
        assert_eq!(config.max_request_bytes, 8 << 20);
        let c = CollectorConfig::parse(
            "[[outputs]]\ntype = \"otlp\"\nendpoint = \"https://logs.example/otlp/v1/logs\"",
        )
        .unwrap();
        let OutputSection::Otlp(otlp) = &c.outputs[0] else {
            panic!()
        };
        assert_eq!(
            otlp.to_config().unwrap().url,
            "https://logs.example/otlp/v1/logs"
        );
        for bad in ["otel:4318", "ftp://otel/v1/logs", "http://"] {
            let e = CollectorConfig::parse(&format!(
                "[[outputs]]\ntype = \"otlp\"\nendpoint = \"{bad}\""
            ))
            .unwrap_err();
            assert!(
                e.starts_with("at `outputs` (otlp), `endpoint`"),
                "{bad}: {e}"
            );
        }
        let e = CollectorConfig::parse(
            "[[outputs]]\ntype = \"otlp\"\nendpoint = \"http://a\"\nretries = 3",
        )
        .unwrap_err();
        assert!(e.contains("retries"), "{e}");
    }
}
