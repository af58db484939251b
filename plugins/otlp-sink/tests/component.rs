//! The real component (`target/wasm32-wasip2/release/otlp_sink.wasm`, built
//! by `scripts/build`), installed from the crate's manifest template and
//! called through the plugin runtime, as the collector calls it.

mod common;

use std::path::{Path, PathBuf};

use common::{varied, without_process};
use flowattr_plugin_runtime::manifest::Manifest;
use flowattr_plugin_runtime::{
    Plugin, Refusal, Runtime, RuntimeConfig, install_plugin, load_plugin_files,
};
use flowattr_sdk::testing::Harness;
use otlp_sink::OtlpSink;
use otlp_sink::read::read_chunk;

const TEMPLATE: &str = include_str!("../otlp-sink.toml");

fn component() -> Vec<u8> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = target.join("wasm32-wasip2/release/otlp_sink.wasm");
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/build first", path.display()))
}

fn format(plugin: &Plugin, flows: &[flowattr_sdk::AttributedFlow]) -> Vec<u8> {
    let mut chunk = Vec::new();
    plugin.format(flows, &mut chunk).unwrap();
    chunk
}

/// Installs the component with `manifest` into a temp directory and loads it.
fn load(manifest: &str) -> (tempfile::TempDir, Result<Plugin, Refusal>) {
    let tmp = tempfile::tempdir().unwrap();
    let mut manifest = Manifest::parse(manifest).unwrap();
    install_plugin(tmp.path(), "otlp-sink", &component(), &mut manifest, "").unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-cache")),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let plugin = load_plugin_files(&runtime, &tmp.path().join("otlp-sink.toml"));
    (tmp, plugin)
}

#[test]
fn the_component_writes_what_the_native_plugin_writes_and_it_decodes() {
    let (_tmp, plugin) = load(TEMPLATE);
    let plugin = plugin.unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(plugin.content_type().unwrap(), "application/x-protobuf");
    let mut native =
        Harness::<OtlpSink>::new(r#"{"resource": {"service.name": "flowattr"}}"#).unwrap();
    for flows in [varied(21, 3_000, 40), varied(22, 10_000, 50), vec![]] {
        let chunk = format(&plugin, &flows);
        assert_eq!(read_chunk(&chunk).unwrap(), flows);
        assert!(
            chunk == native.format(&flows).unwrap(),
            "Wasm and native chunks differ"
        );
    }
}

#[test]
fn the_config_reaches_the_component() {
    let manifest = TEMPLATE
        .replacen("include_process = true", "include_process = false", 1)
        .replacen(
            "\"service.name\" = \"flowattr\"",
            "\"service.name\" = \"edge\"",
            1,
        );
    assert_ne!(manifest, TEMPLATE);
    let (_tmp, plugin) = load(&manifest);
    let plugin = plugin.unwrap_or_else(|r| panic!("{r}"));
    let flows = varied(23, 500, 10);
    let chunk = format(&plugin, &flows);
    assert_eq!(read_chunk(&chunk).unwrap(), without_process(&flows));
    let native = Harness::<OtlpSink>::new(
        r#"{"include_process": false, "resource": {"service.name": "edge"}}"#,
    )
    .unwrap()
    .format(&flows)
    .unwrap();
    assert!(chunk == native, "the resource reached the component");
}

#[test]
fn a_malformed_config_is_refused_at_load_with_the_reason() {
    for (manifest, want) in [
        (
            TEMPLATE.replacen("include_process = true", "include_process = \"yes\"", 1),
            "invalid type: string \"yes\", expected a boolean",
        ),
        (
            TEMPLATE.replacen("include_process = true", "compression = \"gzip\"", 1),
            "unknown field `compression`",
        ),
    ] {
        let (_tmp, plugin) = load(&manifest);
        let refusal = plugin.err().expect("refused");
        assert!(
            refusal
                .reason
                .contains("the plugin refused it: invalid config: "),
            "{refusal}"
        );
        assert!(refusal.reason.contains(want), "{refusal}");
    }
}
