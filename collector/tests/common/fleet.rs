#![allow(dead_code)] // Each test crate uses a different part.

//! A small fleet for collector tests: a development PKI, a plugin directory
//! with the real sink (and resolver) components, collector configurations,
//! agents that ship real batches over QUIC, and a reader for the flows the
//! collectors write.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use flowattr_collector::config::{Claim, CollectorConfig, OutputSection};
use flowattr_model::{
    AttributedFlow, Attribution, AttributionSource, Flow, FlowBatch, Side, TimeRange, Workload,
};
use flowattr_transport::{CollectorAddr, Shipper, ShipperConfig, certs, tls::TlsFiles};

pub const S: u64 = 1_000_000_000;

/// The names every test's PKI holds certificates for.
pub const COLLECTORS: [&str; 4] = ["collector-1", "collector-2", "collector-3", "collector-eu"];
pub const AGENTS: [&str; 3] = ["agent-a", "agent-b", "agent-c"];

/// Which prefix each agent may claim: agent-a 10.1/16, agent-b 10.2/16, and
/// agent-c, the other region's agent, 10.9/16.
pub fn agent_prefix(agent: &str) -> &'static str {
    match agent {
        "agent-a" => "10.1.0.0/16",
        "agent-b" => "10.2.0.0/16",
        "agent-c" => "10.9.0.0/16",
        other => panic!("no prefix for {other}"),
    }
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// A temporary directory with a development PKI and the bundled sink and
/// resolver plugins.
pub struct Fleet {
    pub dir: tempfile::TempDir,
}

impl Fleet {
    pub fn new() -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        certs::generate_dev_pki(&dir.path().join("pki"), &COLLECTORS, &AGENTS).unwrap();
        let plugins = dir.path().join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        install(&plugins, "jsonl-sink", "jsonl-sink", None);
        Fleet { dir }
    }

    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    pub fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    /// Adds a bundled plugin (by crate name) to the plugin directory.
    pub fn add_plugin(&self, krate: &str) {
        install(&self.plugins(), krate, krate, None);
    }

    /// Adds a test fixture plugin (by crate name) as `name`, with `manifest`.
    pub fn add_fixture_plugin(&self, krate: &str, name: &str, manifest: &str) {
        use flowattr_plugin_runtime::{install_plugin, manifest::Manifest};
        let mut manifest = Manifest::parse(manifest).unwrap();
        install_plugin(&self.plugins(), name, &component(krate), &mut manifest, "").unwrap();
    }

    /// Adds a bundled plugin under another name, in `shadow` mode.
    pub fn add_shadow_plugin(&self, krate: &str, name: &str) {
        use flowattr_plugin_runtime::manifest::Mode;
        install(&self.plugins(), krate, name, Some(Mode::Shadow));
    }

    /// Writes the legacy event file (one line each) for `[legacy] events`.
    pub fn legacy_events(&self, lines: &[String]) -> PathBuf {
        let path = self.dir.path().join("legacy-events.jsonl");
        std::fs::write(
            &path,
            lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )
        .unwrap();
        path
    }

    /// Where collector `name` writes its flows.
    pub fn out_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join("out").join(name)
    }

    /// A collector on a free loopback port: hold 1 s, clocks within 100 ms
    /// (one loopback machine: a range of a second-long flow answers inside
    /// its interior), the fleet's claims, flows to files in
    /// [`Fleet::out_dir`], no metrics endpoint.
    pub fn collector_config(&self, name: &str) -> CollectorConfig {
        let mut c = CollectorConfig::parse("").unwrap();
        c.name = name.into();
        c.listen = "127.0.0.1:0".parse().unwrap();
        c.data_dir = self.dir.path().join("data").join(name);
        c.hold = Duration::from_secs(1);
        c.ownership.max_skew = Duration::from_millis(100);
        c.tls.ca = self.pki().join("ca.pem");
        c.tls.cert = self.pki().join(format!("{name}.pem"));
        c.tls.key = self.pki().join(format!("{name}.key"));
        for agent in AGENTS {
            c.claims.insert(
                agent.into(),
                Claim::Prefixes(vec![agent_prefix(agent).parse().unwrap()]),
            );
        }
        c.plugins.directory = self.plugins();
        c.plugins.cache_dir = Some(self.dir.path().join("cache"));
        c.plugins.watch = false;
        c.outputs = vec![OutputSection::File {
            dir: self.out_dir(name),
            prefix: "flows".into(),
            rotate_bytes: 1 << 30,
            rotate_after: Duration::from_secs(3600),
            keep_files: 0,
        }];
        c.metrics.enabled = false;
        c
    }

    /// An agent shipping to `collectors` (in failover order), spooling in
    /// its own directory.
    pub fn agent(&self, name: &str, collectors: &[SocketAddr]) -> Shipper {
        let addrs = collectors
            .iter()
            .map(|&a| CollectorAddr::new(a, "localhost"))
            .collect();
        let mut config = ShipperConfig::new(
            addrs,
            TlsFiles::in_dir(&self.pki(), name),
            self.dir.path().join("spool").join(name),
        );
        config.retry_max = Duration::from_millis(500);
        config.ack_timeout = Duration::from_secs(5);
        Shipper::start(config).unwrap()
    }

    /// Every flow collector `name` has written, as JSON.
    pub fn written(&self, name: &str) -> Vec<serde_json::Value> {
        let dir = self.out_dir(name);
        let Ok(files) = flowattr_collector::output::files_of(&dir, "flows", "jsonl") else {
            return Vec::new();
        };
        files
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Waits until collector `name` has written at least `n` flows.
    pub fn wait_written(&self, name: &str, n: usize, within: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        loop {
            let flows = self.written(name);
            if flows.len() >= n {
                return flows;
            }
            assert!(
                Instant::now() < deadline,
                "{name} wrote {} of {n} flows within {within:?}",
                flows.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn install(
    dir: &Path,
    krate: &str,
    name: &str,
    mode: Option<flowattr_plugin_runtime::manifest::Mode>,
) {
    use flowattr_plugin_runtime::{install_plugin, manifest::Manifest};
    let wasm = component(krate);
    let template = workspace().join(format!("plugins/{krate}/{krate}.toml"));
    let mut manifest = Manifest::parse(&std::fs::read_to_string(template).unwrap()).unwrap();
    if let Some(mode) = mode {
        manifest.mode = mode;
    }
    install_plugin(dir, name, &wasm, &mut manifest, "").unwrap();
}

/// The built component of crate `krate`.
fn component(krate: &str) -> Vec<u8> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let wasm_path = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", krate.replace('-', "_")));
    std::fs::read(&wasm_path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build first)", wasm_path.display()))
}

/// A legacy event line: `owner` was assigned `ip` at `at_ns` (and it
/// arrived then).
pub fn assigned(ip: &str, owner: &str, at_ns: u64) -> String {
    serde_json::to_string(&flowattr_model::IpEvent {
        address: ip.parse().unwrap(),
        change: flowattr_model::IpChange::Assigned(flowattr_model::Workload::with_id(owner)),
        event_time_ns: at_ns,
        arrival_time_ns: at_ns,
    })
    .unwrap()
}

/// Unix-epoch nanoseconds now.
pub fn now_ns() -> u64 {
    flowattr_collector::service::unix_now_ns()
}

/// A flow from `local` (attributed at capture to `workload`) to `remote`,
/// started `ago` before now and lasting a second.
pub fn flow(local: &str, workload: &Arc<Workload>, remote: &str, start_ns: u64) -> AttributedFlow {
    let mut f = AttributedFlow::new(Flow::tcp(
        local.parse().unwrap(),
        remote.parse().unwrap(),
        start_ns,
    ));
    f.flow.end_ns = start_ns + S;
    f.local = Side::Attributed(Attribution {
        workload: workload.clone(),
        source: AttributionSource::Capture,
        plugin: "ipman".into(),
        valid: TimeRange::new(start_ns, start_ns + S),
    });
    f
}

pub fn workload(id: &str) -> Arc<Workload> {
    Arc::new(Workload::with_id(id))
}

/// A batch of `agent`'s flows, stating its capture complete up to now
/// (every flow of the test is in it or an earlier one).
pub fn batch(agent: &str, seq: u64, flows: Vec<AttributedFlow>) -> FlowBatch {
    FlowBatch {
        agent: agent.into(),
        incarnation: 1,
        seq,
        created_ns: now_ns(),
        complete_until_ns: now_ns(),
        flows,
    }
}

/// The remote workload id of a written flow, or `unattributed:REASON`.
pub fn remote_of(line: &serde_json::Value) -> String {
    side_of(&line["remote"])
}

pub fn local_of(line: &serde_json::Value) -> String {
    side_of(&line["local"])
}

fn side_of(side: &serde_json::Value) -> String {
    match (&side["workload"]["id"], &side["unattributed"]) {
        (serde_json::Value::String(id), _) => id.clone(),
        (_, serde_json::Value::String(reason)) => format!("unattributed:{reason}"),
        _ => panic!("side without workload or reason: {side}"),
    }
}

/// Sends `batches` through `shipper` and waits until every one is
/// acknowledged.
pub async fn ship_all(shipper: &Shipper, batches: &[FlowBatch]) {
    for b in batches {
        shipper.send(b).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while shipper.counters().snapshot().spooled_batches > 0 {
        assert!(
            Instant::now() < deadline,
            "batches not acknowledged: {:?}",
            shipper.counters().snapshot()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
