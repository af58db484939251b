//! Per-flow cost of the JSON-lines, Arrow IPC and Parquet sink plugins side
//! by side, natively (the plugin type called through the SDK harness) and
//! through Wasm (the real component called through the plugin runtime, as
//! the collector calls it), on realistic batches of 1,000 and 10,000 flows
//! over 50 workloads.
//!
//! ```sh
//! scripts/build     # builds the components
//! cargo bench -p arrow-sink --bench sinks
//! ```
//!
//! Prints one table: ns per flow native and in Wasm, their ratio, output
//! bytes per flow, and the Wasm instance's peak memory; then the cost of
//! reading the Arrow streams back, and what a Parquet file per rotation
//! (instead of one per chunk) would save. Under `cargo test` it runs each
//! case once, as a check.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow_sink::ArrowSink;
use flowattr_plugin_runtime::manifest::Manifest;
use flowattr_plugin_runtime::{Plugin, Runtime, RuntimeConfig, install_plugin, load_plugin_files};
use flowattr_sdk::testing::Harness;
use flowattr_sdk::{AttributedFlow, Side, UnattributedReason};
use jsonl_sink::JsonlSink;
use parquet::arrow::ArrowWriter;
use parquet_sink::ParquetSink;

const BATCHES: [usize; 2] = [1_000, 10_000];
const WORKLOADS: usize = 50;

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

/// Installs a built component with its manifest template and loads it.
fn load(runtime: &Runtime, dir: &Path, krate: &str, template: &str) -> Plugin {
    let wasm_path = target_dir()
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", krate.replace('-', "_")));
    let wasm = std::fs::read(&wasm_path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/build first", wasm_path.display()));
    let mut manifest = Manifest::parse(template).unwrap();
    install_plugin(dir, krate, &wasm, &mut manifest, "").unwrap();
    load_plugin_files(runtime, &dir.join(format!("{krate}.toml"))).unwrap_or_else(|r| panic!("{r}"))
}

/// Seconds of the fastest call of `f`, over about `budget` of calls after a
/// warm-up (or one call when `quick`). The fastest, not the median: on a
/// shared machine the other processes only ever add time.
fn time(quick: bool, budget: Duration, mut f: impl FnMut() -> usize) -> f64 {
    if quick {
        black_box(f());
        return 0.0;
    }
    let warm = Instant::now();
    while warm.elapsed() < budget / 4 {
        black_box(f());
    }
    let mut fastest = f64::MAX;
    let (started, mut runs) = (Instant::now(), 0);
    while started.elapsed() < budget || runs < 5 {
        let t = Instant::now();
        black_box(f());
        fastest = fastest.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    fastest
}

/// The same flows with both sides unattributed: nothing but the flow record
/// crosses into Wasm, which isolates what the workloads' strings cost there.
fn without_workloads(flows: &[AttributedFlow]) -> Vec<AttributedFlow> {
    let unattributed = Side::Unattributed(UnattributedReason::NotFound);
    flows
        .iter()
        .map(|f| AttributedFlow {
            local: unattributed.clone(),
            remote: unattributed.clone(),
            ..f.clone()
        })
        .collect()
}

/// A sink's formatting, called natively.
type Format<'a> = Box<dyn FnMut(&[AttributedFlow]) -> Vec<u8> + 'a>;

struct Sink<'a> {
    name: &'static str,
    native: Format<'a>,
    wasm: Plugin,
    /// Whether two outputs hold the same flows: the same bytes for text;
    /// the same columns for Arrow and Parquet, whose LZ4 and Snappy blocks
    /// differ between 32- and 64-bit builds.
    same: fn(&[u8], &[u8]) -> bool,
}

fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a == b
}

fn same_streams(a: &[u8], b: &[u8]) -> bool {
    arrow_sink::read_streams(a).unwrap() == arrow_sink::read_streams(b).unwrap()
}

fn parquet_batches(file: &[u8]) -> Vec<flow_arrow::arrow_array::RecordBatch> {
    let file = bytes::Bytes::copy_from_slice(file);
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn same_files(a: &[u8], b: &[u8]) -> bool {
    parquet_batches(a) == parquet_batches(b)
}

/// Formats into `chunk`, reused from call to call as the collector reuses
/// its buffers.
fn wasm_format<'a>(plugin: &Plugin, flows: &[AttributedFlow], chunk: &'a mut Vec<u8>) -> &'a [u8] {
    chunk.clear();
    plugin.format(flows, chunk).unwrap();
    chunk
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let budget = Duration::from_secs(2);
    let tmp = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();

    let mut jsonl = Harness::<JsonlSink>::new("{}").unwrap();
    let mut arrow = Harness::<ArrowSink>::new("{}").unwrap();
    let mut parquet = Harness::<ParquetSink>::new("{}").unwrap();
    let mut sinks = [
        Sink {
            name: "jsonl",
            native: Box::new(move |f| jsonl.format(f).unwrap()),
            wasm: load(
                &runtime,
                tmp.path(),
                "jsonl-sink",
                include_str!("../../jsonl-sink/jsonl-sink.toml"),
            ),
            same: same_bytes,
        },
        Sink {
            name: "arrow",
            native: Box::new(move |f| arrow.format(f).unwrap()),
            wasm: load(
                &runtime,
                tmp.path(),
                "arrow-sink",
                include_str!("../arrow-sink.toml"),
            ),
            same: same_streams,
        },
        Sink {
            name: "parquet",
            native: Box::new(move |f| parquet.format(f).unwrap()),
            wasm: load(
                &runtime,
                tmp.path(),
                "parquet-sink",
                include_str!("../../parquet-sink/parquet-sink.toml"),
            ),
            same: same_files,
        },
    ];

    if !quick {
        println!("\nrealistic batches, {WORKLOADS} workloads; fastest of ~2 s of calls");
        println!(
            "{:<9} {:>6} {:>13} {:>13} {:>12} {:>11} {:>14}",
            "sink",
            "batch",
            "native ns/flow",
            "wasm ns/flow",
            "wasm/native",
            "bytes/flow",
            "wasm peak MiB"
        );
    }
    for n in BATCHES {
        let flows = common::realistic(n as u64, n, WORKLOADS);
        for sink in &mut sinks {
            // Both must write the same flows before their speeds mean anything.
            let bytes = (sink.native)(&flows);
            let mut chunk = Vec::new();
            assert!(
                (sink.same)(wasm_format(&sink.wasm, &flows, &mut chunk), &bytes),
                "{}: Wasm and native differ",
                sink.name
            );
            let native = time(quick, budget, || (sink.native)(&flows).len());
            let wasm = time(quick, budget, || {
                wasm_format(&sink.wasm, &flows, &mut chunk).len()
            });
            if quick {
                continue;
            }
            let per_flow = |secs: f64| secs * 1e9 / n as f64;
            let peak = sink.wasm.memory_bytes().map_or(0, |(_, peak)| peak);
            println!(
                "{:<9} {n:>6} {:>13.0} {:>13.0} {:>11.1}x {:>11.1} {:>14.1}",
                sink.name,
                per_flow(native),
                per_flow(wasm),
                wasm / native,
                bytes.len() as f64 / n as f64,
                peak as f64 / (1 << 20) as f64,
            );
        }
    }
    let flows = common::realistic(7, 10_000, WORKLOADS);
    let bare = without_workloads(&flows);
    let mut chunk = Vec::new();
    for sink in &mut sinks {
        let with = time(quick, budget, || {
            wasm_format(&sink.wasm, &flows, &mut chunk).len()
        });
        let without = time(quick, budget, || {
            wasm_format(&sink.wasm, &bare, &mut chunk).len()
        });
        if !quick {
            println!(
                "{} in Wasm, batch 10000: {:.0} ns/flow with workloads, {:.0} without (sides unattributed)",
                sink.name,
                with * 1e9 / 1e4,
                without * 1e9 / 1e4
            );
        }
    }
    let chunk = Harness::<ArrowSink>::new("{}")
        .unwrap()
        .format(&flows)
        .unwrap();
    let read = time(quick, budget, || {
        arrow_sink::read_streams(&chunk).unwrap().len()
    });
    if !quick {
        println!(
            "arrow read (native, arrow-ipc), batch 10000: {:.0} ns/flow",
            read * 1e9 / 1e4
        );
    }
    rotation(quick, budget);
}

/// What a native output writing one Parquet file per rotation would write,
/// against the sink's file per chunk: ten chunks of 10,000 flows as ten
/// files, as one file of ten row groups, and as one file of one row group
/// (all ten chunks held until rotation).
fn rotation(quick: bool, budget: Duration) {
    let chunks: Vec<_> = (0..10)
        .map(|i| common::realistic(100 + i, 10_000, WORKLOADS))
        .collect();
    let mut sink = Harness::<ParquetSink>::new("{}").unwrap();
    let properties = || {
        parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build()
    };
    let one_file = |batches: &[flow_arrow::arrow_array::RecordBatch]| {
        let mut out = Vec::new();
        let mut w =
            ArrowWriter::try_new(&mut out, flow_arrow::schema(), Some(properties())).unwrap();
        for b in batches {
            w.write(b).unwrap();
            w.flush().unwrap();
        }
        w.close().unwrap();
        out.len()
    };
    let mut per_chunk = 0;
    let t_files = time(quick, budget, || {
        per_chunk = chunks.iter().map(|c| sink.format(c).unwrap().len()).sum();
        per_chunk
    });
    let mut groups = 0;
    let t_groups = time(quick, budget, || {
        let batches: Vec<_> = chunks
            .iter()
            .map(|c| flow_arrow::record_batch(c, true))
            .collect();
        groups = one_file(&batches);
        groups
    });
    let all: Vec<_> = chunks.concat();
    let mut whole = 0;
    let t_whole = time(quick, budget, || {
        whole = one_file(&[flow_arrow::record_batch(&all, true)]);
        whole
    });
    if !quick {
        println!("\nParquet, 10 chunks of 10,000 realistic flows (native):");
        for (what, bytes, secs) in [
            ("a file per chunk (the sink)", per_chunk, t_files),
            ("one file, a row group per chunk", groups, t_groups),
            ("one file, one row group", whole, t_whole),
        ] {
            println!(
                "  {what:<34} {:>6.1} bytes/flow {:>6.0} ns/flow",
                bytes as f64 / 1e5,
                secs * 1e9 / 1e5
            );
        }
    }
}
