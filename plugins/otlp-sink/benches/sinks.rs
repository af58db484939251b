//! Per-flow cost of `otlp-sink` beside `jsonl-sink`, natively (the plugin
//! type through the SDK harness) and in Wasm (the real components through
//! the plugin runtime, as the collector calls them), on realistic batches
//! of 1,000 and 10,000 flows over 50 workloads.
//!
//! ```sh
//! scripts/build     # builds the components
//! cargo bench -p otlp-sink --bench sinks
//! ```
//!
//! Prints ns per flow native and in Wasm, output bytes per flow and the
//! Wasm instance's peak memory. Under `cargo test` it runs each case once.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flowattr_plugin_runtime::manifest::Manifest;
use flowattr_plugin_runtime::{Plugin, Runtime, RuntimeConfig, install_plugin, load_plugin_files};
use flowattr_sdk::AttributedFlow;
use flowattr_sdk::testing::Harness;
use jsonl_sink::JsonlSink;
use otlp_sink::OtlpSink;

const BATCHES: [usize; 2] = [1_000, 10_000];
const WORKLOADS: usize = 50;

/// Installs a built component with its manifest template and loads it.
fn load(runtime: &Runtime, dir: &Path, krate: &str, template: &str) -> Plugin {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", krate.replace('-', "_")));
    let wasm = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/build first", path.display()));
    let mut manifest = Manifest::parse(template).unwrap();
    install_plugin(dir, krate, &wasm, &mut manifest, "").unwrap();
    load_plugin_files(runtime, &dir.join(format!("{krate}.toml"))).unwrap_or_else(|r| panic!("{r}"))
}

/// Seconds of the fastest of about `budget` of calls after a warm-up (one
/// call when `quick`): other processes on a shared machine only add time.
fn time(quick: bool, budget: Duration, mut f: impl FnMut() -> usize) -> f64 {
    if quick {
        black_box(f());
        return 0.0;
    }
    let warm = Instant::now();
    while warm.elapsed() < budget / 4 {
        black_box(f());
    }
    let (started, mut fastest, mut runs) = (Instant::now(), f64::MAX, 0);
    while started.elapsed() < budget || runs < 5 {
        let t = Instant::now();
        black_box(f());
        fastest = fastest.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    fastest
}

type Format<'a> = Box<dyn FnMut(&[AttributedFlow]) -> Vec<u8> + 'a>;

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let budget = Duration::from_secs(2);
    let tmp = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let mut jsonl = Harness::<JsonlSink>::new("{}").unwrap();
    let mut otlp = Harness::<OtlpSink>::new("{}").unwrap();
    let mut sinks: [(&str, Format, Plugin); 2] = [
        (
            "jsonl",
            Box::new(move |f| jsonl.format(f).unwrap()),
            load(
                &runtime,
                tmp.path(),
                "jsonl-sink",
                include_str!("../../jsonl-sink/jsonl-sink.toml"),
            ),
        ),
        (
            "otlp",
            Box::new(move |f| otlp.format(f).unwrap()),
            load(
                &runtime,
                tmp.path(),
                "otlp-sink",
                include_str!("../otlp-sink.toml"),
            ),
        ),
    ];
    if !quick {
        println!("\nrealistic batches, {WORKLOADS} workloads; fastest of ~2 s of calls");
        println!(
            "{:<6} {:>6} {:>15} {:>13} {:>11} {:>14}",
            "sink", "batch", "native ns/flow", "wasm ns/flow", "bytes/flow", "wasm peak MiB"
        );
    }
    for n in BATCHES {
        let flows = common::realistic(n as u64, n, WORKLOADS);
        for (name, native, wasm) in &mut sinks {
            let bytes = native(&flows);
            let mut chunk = Vec::new();
            wasm.format(&flows, &mut chunk).unwrap();
            assert!(chunk == bytes, "{name}: Wasm and native differ");
            let native_s = time(quick, budget, || native(&flows).len());
            let wasm_s = time(quick, budget, || {
                chunk.clear();
                wasm.format(&flows, &mut chunk).unwrap();
                chunk.len()
            });
            if quick {
                continue;
            }
            let peak = wasm.memory_bytes().map_or(0, |(_, peak)| peak);
            println!(
                "{name:<6} {n:>6} {:>15.0} {:>13.0} {:>11.1} {:>14.1}",
                native_s * 1e9 / n as f64,
                wasm_s * 1e9 / n as f64,
                bytes.len() as f64 / n as f64,
                peak as f64 / (1 << 20) as f64,
            );
        }
    }
}
