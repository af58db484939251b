//! The real component (`target/wasm32-wasip2/release/jsonl_sink.wasm`, built
//! by `scripts/build`), installed from the crate's manifest template and
//! called through the plugin runtime, as the collector will call it.

mod common;

use std::path::{Path, PathBuf};

use common::{Rng, Shape, flows, read_output, workloads};
use flowattr_plugin_runtime::manifest::Manifest;
use flowattr_plugin_runtime::{
    Plugin, Refusal, Runtime, RuntimeConfig, install_plugin, load_plugin_files,
};
use flowattr_sdk::testing::Harness;
use jsonl_sink::JsonlSink;

const TEMPLATE: &str = include_str!("../jsonl-sink.toml");

fn component() -> Vec<u8> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = target.join("wasm32-wasip2/release/jsonl_sink.wasm");
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/build first", path.display()))
}

/// One chunk, formatted into a fresh buffer.
fn format(plugin: &Plugin, flows: &[flowattr_sdk::AttributedFlow]) -> Vec<u8> {
    let mut chunk = Vec::new();
    plugin.format(flows, &mut chunk).unwrap();
    chunk
}

/// Installs the component with `manifest` into a temp directory and loads it.
fn load(manifest: &str) -> (tempfile::TempDir, Result<Plugin, Refusal>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut manifest = Manifest::parse(manifest).unwrap();
    install_plugin(tmp.path(), "jsonl-sink", &component(), &mut manifest, "").unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-cache")),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let plugin = load_plugin_files(&runtime, &tmp.path().join("jsonl-sink.toml"));
    (tmp, plugin)
}

/// The template with one line of its `[config]` replaced.
fn template_with(from: &str, to: &str) -> String {
    assert!(TEMPLATE.contains(from), "the template has `{from}`");
    TEMPLATE.replacen(from, to, 1)
}

#[test]
fn the_component_writes_what_the_native_plugin_writes_and_it_reads_back() {
    let (_tmp, plugin) = load(TEMPLATE);
    let plugin = plugin.unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(plugin.content_type().unwrap(), "application/x-ndjson");

    let mut rng = Rng::new(42);
    let pool = workloads(&mut rng, 50);
    let input = flows(&mut rng, 2_000, &pool);
    let bytes = format(&plugin, &input);
    assert_eq!(read_output(&bytes, Shape::DEFAULT), input);
    let native = Harness::<JsonlSink>::new("{}")
        .unwrap()
        .format(&input)
        .unwrap();
    assert!(bytes == native, "Wasm and native output differ");
    assert!(format(&plugin, &[]).is_empty());
    // A reused buffer: the chunk is appended to what it holds.
    let mut reused = b"kept".to_vec();
    plugin.format(&input[..10], &mut reused).unwrap();
    assert!(reused.starts_with(b"kept{") && reused.ends_with(b"}\n"));
    assert_eq!(&reused[4..], format(&plugin, &input[..10]).as_slice());
    assert_eq!(plugin.counters().records, 2_020);
}

#[test]
fn the_config_reaches_the_component() {
    let manifest = template_with("time_format = \"ns\"", "time_format = \"rfc3339\"");
    let manifest = manifest.replacen("include_process = true", "include_process = false", 1);
    let (_tmp, plugin) = load(&manifest);
    let plugin = plugin.unwrap_or_else(|r| panic!("{r}"));
    let mut rng = Rng::new(3);
    let pool = workloads(&mut rng, 5);
    let input = flows(&mut rng, 200, &pool);
    let shape = Shape {
        rfc3339: true,
        include_process: false,
    };
    let bytes = format(&plugin, &input);
    assert_eq!(read_output(&bytes, shape), common::without_process(&input));
}

#[test]
fn a_malformed_config_is_refused_at_load_with_the_reason() {
    for (manifest, want) in [
        (
            template_with("time_format = \"ns\"", "time_format = \"iso\""),
            "unknown variant `iso`, expected `ns` or `rfc3339`",
        ),
        (
            format!("{TEMPLATE}\nflush_every = 10\n"),
            "unknown field `flush_every`, expected `include_process` or `time_format`",
        ),
    ] {
        let (_tmp, plugin) = load(&manifest);
        let refusal = plugin.err().expect("refused");
        assert!(
            refusal.file.ends_with("jsonl-sink.toml"),
            "names the manifest: {refusal}"
        );
        assert!(
            refusal
                .reason
                .starts_with("field `config`: the plugin refused it: invalid config: "),
            "{refusal}"
        );
        assert!(refusal.reason.contains(want), "{refusal}");
    }
}
