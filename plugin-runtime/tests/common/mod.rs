//! Shared set-up for the runtime's integration tests: the real components
//! built by `scripts/build` (run by the README's test command), drop-in
//! directories in temp dirs, and a runtime with its own compile cache.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use flowattr_model::{Answers, LocalQuery};
use flowattr_plugin_runtime::{PluginDirectory, Runtime, RuntimeConfig, sha256_hex};

/// The workspace's target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// The bytes of a component built for `wasm32-wasip2` from crate `krate`.
pub fn component(krate: &str) -> Vec<u8> {
    let path = target_dir()
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", krate.replace('-', "_")));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the components first with scripts/build",
            path.display()
        )
    })
}

/// The same component with a custom section appended: a different file (and
/// hash) with the same behaviour, to stand for a new version.
pub fn with_custom_section(wasm: &[u8], note: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"flowattr-test";
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(note.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

/// Writes `NAME.wasm` and `NAME.toml` (with the right `sha256` added).
pub fn install(dir: &Path, name: &str, wasm: &[u8], manifest: &str) {
    std::fs::write(dir.join(format!("{name}.wasm")), wasm).unwrap();
    write_manifest(
        dir,
        name,
        &format!("sha256 = \"{}\"\n{manifest}", sha256_hex(wasm)),
    );
}

/// Writes `NAME.toml` as given.
pub fn write_manifest(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(format!("{name}.toml")), text).unwrap();
}

/// A runtime whose compile cache lives in `cache`.
pub fn runtime(cache: &Path) -> Runtime {
    Runtime::new(RuntimeConfig {
        cache_dir: Some(cache.to_owned()),
        ..RuntimeConfig::default()
    })
    .unwrap()
}

/// A temp drop-in directory and cache, and the directory opened on them.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    pub runtime: Runtime,
}

impl Fixture {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("plugins")).unwrap();
        let runtime = runtime(&tmp.path().join("cache"));
        Self { tmp, runtime }
    }

    pub fn plugins(&self) -> PathBuf {
        self.tmp.path().join("plugins")
    }

    pub fn open(&self) -> Arc<PluginDirectory> {
        let (dir, _) = PluginDirectory::open(&self.runtime, self.plugins()).unwrap();
        Arc::new(dir)
    }
}

/// A query for local port `port` on 10.0.0.1 at time `t`.
pub fn query(port: u16, t: u64) -> LocalQuery {
    LocalQuery {
        local: SocketAddr::from(([10, 0, 0, 1], port)),
        protocol: Default::default(),
        time_ns: t,
        cgroup_id: 0,
        netns_id: 0,
        pid: 0,
    }
}

/// The workload id of answer `i`.
pub fn id_of(answers: &Answers, i: usize) -> String {
    answers.resolve(i).expect("attributed").0.id.clone()
}

/// The misbehave fixture's manifest, with extra lines.
pub fn misbehave_manifest(extra: &str) -> String {
    format!(
        "kind = \"identity\"\nwit = \"0.3.0\"\n[limits]\nmemory_mib = 16\ncall_timeout_ms = 200\n{extra}"
    )
}

/// Runs `f` with every `tracing` event on this thread recorded (the plugin
/// runs on the calling thread); returns its result and the events' messages
/// and fields as written, before any formatter escapes them.
pub fn capture_logs<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
    use std::sync::Mutex;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[derive(Default)]
    struct Recorder(Arc<Mutex<Vec<String>>>);
    struct Fields(String);
    impl tracing::field::Visit for Fields {
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            self.0.push_str(&format!("{}={value} ", field.name()));
        }
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.push_str(&format!("{}={value:?} ", field.name()));
        }
    }
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorder {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }
    let lines = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Recorder(lines.clone()));
    let result = tracing::subscriber::with_default(subscriber, f);
    let lines = lines.lock().unwrap().clone();
    (result, lines)
}
