//! The real component (`target/wasm32-wasip2/release/arrow_sink.wasm`,
//! built by `scripts/build`), installed from the crate's manifest template
//! and called through the plugin runtime, as the collector will call it.

mod common;

use std::path::{Path, PathBuf};

use arrow_sink::{ArrowSink, read_streams};
use common::{realistic, varied};
use flowattr_plugin_runtime::manifest::Manifest;
use flowattr_plugin_runtime::{
    Plugin, Refusal, Runtime, RuntimeConfig, install_plugin, load_plugin_files,
};
use flowattr_sdk::testing::Harness;

const TEMPLATE: &str = include_str!("../arrow-sink.toml");

fn component() -> Vec<u8> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = target.join("wasm32-wasip2/release/arrow_sink.wasm");
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
    install_plugin(tmp.path(), "arrow-sink", &component(), &mut manifest, "").unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-cache")),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let plugin = load_plugin_files(&runtime, &tmp.path().join("arrow-sink.toml"));
    (tmp, plugin)
}

#[test]
fn the_component_writes_the_batch_the_native_plugin_builds() {
    let (_tmp, plugin) = load(TEMPLATE);
    let plugin = plugin.unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(
        plugin.content_type().unwrap(),
        "application/vnd.apache.arrow.stream"
    );
    let mut native = Harness::<ArrowSink>::new("{}").unwrap();
    for flows in [varied(21, 3_000, 40), realistic(22, 10_000, 50), vec![]] {
        let chunk = format(&plugin, &flows);
        let wasm = read_streams(&chunk).unwrap();
        let native = read_streams(&native.format(&flows).unwrap()).unwrap();
        assert_eq!(wasm.len(), 1, "one batch per chunk");
        assert_eq!(wasm[0].num_rows(), flows.len());
        for (i, field) in wasm[0].schema().fields().iter().enumerate() {
            assert_eq!(
                wasm[0].column(i).to_data(),
                native[0].column(i).to_data(),
                "column {}",
                field.name()
            );
        }
    }
    assert_eq!(plugin.counters().records, 13_000);
}

#[test]
fn a_malformed_config_is_refused_at_load_with_the_reason() {
    for (manifest, want) in [
        (
            TEMPLATE.replacen("compression = \"lz4\"", "compression = \"zstd\"", 1),
            "unknown variant `zstd`, expected `lz4` or `none`",
        ),
        (
            format!("{TEMPLATE}time_format = \"ns\"\n"),
            "unknown field `time_format`, expected `include_process` or `compression`",
        ),
    ] {
        let (_tmp, plugin) = load(&manifest);
        let refusal = plugin.err().expect("refused");
        assert!(
            refusal.file.ends_with("arrow-sink.toml"),
            "names the manifest: {refusal}"
        );
        assert!(refusal.reason.contains(want), "{refusal}");
    }
}
