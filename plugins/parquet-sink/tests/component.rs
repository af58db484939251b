//! The real component (`target/wasm32-wasip2/release/parquet_sink.wasm`,
//! built by `scripts/build`), installed from the crate's manifest template
//! and called through the plugin runtime, as the collector will call it.

#[path = "../../arrow-sink/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::{realistic, varied};
use flow_arrow::arrow_array::RecordBatch;
use flowattr_plugin_runtime::manifest::Manifest;
use flowattr_plugin_runtime::{
    Plugin, Refusal, Runtime, RuntimeConfig, install_plugin, load_plugin_files,
};
use flowattr_sdk::testing::Harness;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet_sink::ParquetSink;

const TEMPLATE: &str = include_str!("../parquet-sink.toml");

fn component() -> Vec<u8> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = target.join("wasm32-wasip2/release/parquet_sink.wasm");
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/build first", path.display()))
}

/// A Parquet file's batches, each of its row groups whole.
fn read(file: &[u8]) -> Vec<RecordBatch> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::copy_from_slice(file)).unwrap();
    assert!(builder.metadata().num_row_groups() <= 1, "one row group");
    builder
        .with_batch_size(1 << 20)
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
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
    install_plugin(tmp.path(), "parquet-sink", &component(), &mut manifest, "").unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasm-cache")),
        ..RuntimeConfig::default()
    })
    .unwrap();
    let plugin = load_plugin_files(&runtime, &tmp.path().join("parquet-sink.toml"));
    (tmp, plugin)
}

#[test]
fn the_component_writes_a_whole_file_of_the_batch_the_native_plugin_builds() {
    let (_tmp, plugin) = load(TEMPLATE);
    let plugin = plugin.unwrap_or_else(|r| panic!("{r}"));
    assert_eq!(
        plugin.content_type().unwrap(),
        "application/vnd.apache.parquet"
    );
    let mut native = Harness::<ParquetSink>::new("{}").unwrap();
    for flows in [varied(21, 3_000, 40), realistic(22, 10_000, 50), vec![]] {
        let chunk = format(&plugin, &flows);
        assert!(
            chunk.starts_with(b"PAR1") && chunk.ends_with(b"PAR1"),
            "header and footer"
        );
        let want = flow_arrow::record_batch(&flows, true);
        let wasm = read(&chunk);
        let native = read(&native.format(&flows).unwrap());
        if flows.is_empty() {
            assert!(wasm.is_empty() && native.is_empty());
            continue;
        }
        assert_eq!(wasm.len(), 1, "one batch");
        assert_eq!(wasm[0], want, "the file holds the batch");
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
            TEMPLATE.replacen("compression = \"snappy\"", "compression = \"zstd\"", 1),
            "unknown variant `zstd`, expected one of `snappy`, `lz4`, `none`",
        ),
        (
            format!("{TEMPLATE}time_format = \"ns\"\n"),
            "unknown field `time_format`, expected `include_process` or `compression`",
        ),
    ] {
        let (_tmp, plugin) = load(&manifest);
        let refusal = plugin.err().expect("refused");
        assert!(
            refusal.file.ends_with("parquet-sink.toml"),
            "names the manifest: {refusal}"
        );
        assert!(refusal.reason.contains(want), "{refusal}");
    }
}
