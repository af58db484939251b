//! Shared helpers of the agent's root integration tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use flowattr_host::capture::{Capture, CaptureSettings, WallClock, decode};
use flowattr_model::Flow;

/// Runs the real capture in the background and keeps every decoded flow.
pub struct Recorder {
    flows: Arc<Mutex<Vec<Flow>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Recorder {
    pub fn start(settings: CaptureSettings) -> Recorder {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let flows = Arc::new(Mutex::new(Vec::new()));
        let mut capture = runtime
            .block_on(async { Capture::start(settings) })
            .expect("capture starts (tests run as root)");
        let sink = flows.clone();
        runtime.spawn(async move {
            let mut events = Vec::new();
            let mut clock = WallClock::now();
            loop {
                events.clear();
                if capture
                    .read(&mut events, Duration::from_secs(1))
                    .await
                    .is_err()
                {
                    return;
                }
                clock = clock.refreshed();
                let mut flows = sink.lock().unwrap();
                flows.extend(events.iter().map(|e| decode(e, clock).expect("decodes")));
            }
        });
        Recorder {
            flows,
            _runtime: runtime,
        }
    }

    /// Waits (up to 10 s) until the flows of the namespaces `netns` satisfy
    /// `done`, and returns them.
    pub fn wait_for(&self, netns: &[u64], done: impl Fn(&[Flow]) -> bool) -> Vec<Flow> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mine: Vec<Flow> = self
                .flows
                .lock()
                .unwrap()
                .iter()
                .filter(|f| netns.contains(&f.netns_id))
                .cloned()
                .collect();
            if done(&mine) || Instant::now() > deadline {
                return mine;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The workspace's root directory.
pub fn workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Installs the bundled plugin `krate` (built by `scripts/build`) into the
/// drop-in directory `dir`, its read-only grant pointed at `state`.
pub fn install_bundled(dir: &std::path::Path, krate: &str, state: &std::path::Path) {
    let template = workspace().join(format!("plugins/{krate}/{krate}.toml"));
    let manifest = std::fs::read_to_string(template).unwrap();
    install(dir, krate, &manifest, Some(state));
}

/// Installs the component of crate `krate` (built by `scripts/build`) into
/// `dir` with the manifest `manifest`, its grants (if any) pointed at `state`.
pub fn install(
    dir: &std::path::Path,
    krate: &str,
    manifest: &str,
    state: Option<&std::path::Path>,
) {
    use flowattr_plugin_runtime::{install_plugin, manifest::Manifest};
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let wasm_path = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", krate.replace('-', "_")));
    let wasm = std::fs::read(&wasm_path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build first)", wasm_path.display()));
    let mut manifest = Manifest::parse(manifest).unwrap();
    if let Some(state) = state {
        for grant in &mut manifest.capabilities.read_dirs {
            grant.host = state.to_owned();
        }
        std::fs::create_dir_all(state).unwrap();
    }
    install_plugin(dir, krate, &wasm, &mut manifest, "").unwrap();
}
