//! Per-record cost of the `ipman` identity lookup through Wasm (the real
//! component, called through the runtime) against the same plugin code
//! called natively through the SDK harness, at batch sizes 1, 64 and 1024.
//!
//! Run with `cargo bench -p flowattr-plugin-runtime --bench ipman_wasm_vs_native`
//! after `scripts/build`. Criterion reports each case; the table printed at the
//! end gives the median nanoseconds per record and the Wasm/native ratio per
//! batch size. Before criterion starts it prints the fastest of 30
//! alternating blocks of calls at batch 1024 (the cost when nothing else
//! disturbs the run).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use criterion::{BenchmarkId, Criterion, Throughput};
use flowattr_model::LocalQuery;
use flowattr_plugin_runtime::{PluginDirectory, Runtime, RuntimeConfig, sha256_hex};
use flowattr_sdk::testing::Harness;
use serde_json::json;

const BATCHES: [usize; 3] = [1, 64, 1024];
const CONTAINERS: usize = 2_000;
const SHARED: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const QUERY_TIME_NS: u64 = 1_000_000_000;

fn container_ip(i: usize) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(
        0xfd00,
        0x10,
        0,
        0,
        0,
        0,
        (i >> 16) as u16,
        i as u16,
    ))
}

/// An IPMan state with `CONTAINERS` IPv6 containers, each also holding a
/// 16-port range of the shared IPv4 address.
fn state() -> serde_json::Value {
    let workloads: serde_json::Map<_, _> = (0..CONTAINERS)
        .map(|i| {
            (
                format!("c-{i}"),
                json!({"app": format!("app-{}", i % 40), "cluster": "prod", "region": "us-east-1"}),
            )
        })
        .collect();
    let assignments: Vec<_> = (0..CONTAINERS)
        .map(|i| json!({"ip": container_ip(i).to_string(), "workload": format!("c-{i}"), "since_ns": 0, "until_ns": null}))
        .collect();
    let allocations: Vec<_> = (0..CONTAINERS)
        .map(|i| {
            let lo = 20_000 + 16 * i as u32;
            json!({"ports": [lo, lo + 15], "workload": format!("c-{i}"), "since_ns": 0, "until_ns": null})
        })
        .collect();
    json!({
        "version": 1,
        "workloads": workloads,
        "assignments": assignments,
        "shared_ipv4": [{"address": SHARED.to_string(), "pool": [20_000, 60_000], "allocations": allocations}],
    })
}

/// A batch mixing IPv6 containers (3 in 4) and shared-IPv4 ports (1 in 4),
/// from 64 distinct containers, as one busy host's flows would.
fn queries(n: usize) -> Vec<LocalQuery> {
    (0..n)
        .map(|i| {
            let c = (i * 31) % 64;
            let local = if i % 4 == 3 {
                SocketAddr::new(IpAddr::V4(SHARED), 20_000 + 16 * c as u16 + (i % 16) as u16)
            } else {
                SocketAddr::new(container_ip(c), 443)
            };
            LocalQuery {
                local,
                protocol: Default::default(),
                time_ns: QUERY_TIME_NS,
                cgroup_id: 0,
                netns_id: 0,
                pid: 0,
            }
        })
        .collect()
}

fn component_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("wasm32-wasip2/release/ipman.wasm")
}

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let state_dir = tmp.path().join("ipman-state");
    std::fs::create_dir(&state_dir).unwrap();
    std::fs::write(state_dir.join("state.json"), state().to_string()).unwrap();

    // The real component in a drop-in directory.
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let wasm = std::fs::read(component_path()).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run scripts/build first",
            component_path().display()
        )
    });
    std::fs::write(plugins.join("ipman.wasm"), &wasm).unwrap();
    std::fs::write(
        plugins.join("ipman.toml"),
        format!(
            "kind = \"identity\"\nwit = \"0.3.0\"\nsha256 = \"{}\"\n[limits]\nmemory_mib = 64\ncall_timeout_ms = 1000\n\
             [capabilities]\nread_dirs = [{{ host = \"{}\", guest = \"/ipman\" }}]\n[config]\nstate = \"/ipman/state.json\"\n",
            sha256_hex(&wasm),
            state_dir.display()
        ),
    )
    .unwrap();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap();
    let (directory, report) = PluginDirectory::open(&runtime, &plugins).unwrap();
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let wasm_plugin = directory.get("ipman").unwrap();

    // The same plugin code, natively.
    let config = json!({"state": state_dir.join("state.json")}).to_string();
    let mut native = Harness::<ipman::Ipman>::new(&config).unwrap();
    native.set_now_ns(u64::MAX / 2);

    // Both must give the same answers before their speed means anything.
    let check = queries(1024);
    let (a, b) = (
        wasm_plugin.identify(&check).unwrap(),
        native.identify(&check),
    );
    for i in 0..check.len() {
        assert_eq!(
            a.resolve(i).unwrap().0,
            b.resolve(i).unwrap().0,
            "query {i}"
        );
    }

    let timing = std::env::args().any(|a| a == "--bench");
    if timing {
        // First: a figure that does not depend on how the long run goes.
        let batch = queries(1024);
        let fastest = fastest_blocks(
            || drop(native.identify(&batch)),
            || drop(wasm_plugin.identify(&batch).unwrap()),
        );
        println!(
            "  fastest of {BLOCKS} alternating blocks of {BLOCK_CALLS} calls, batch 1024: \
             native {:.1} ns, wasm {:.1} ns, {:.2}x",
            fastest.0 / 1024.0,
            fastest.1 / 1024.0,
            fastest.1 / fastest.0
        );
    }

    let mut criterion = Criterion::default().configure_from_args();
    let mut group = criterion.benchmark_group("ipman_identify");
    for n in BATCHES {
        let batch = queries(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("native", n), &batch, |bench, q| {
            bench.iter(|| native.identify(q))
        });
        group.bench_with_input(BenchmarkId::new("wasm", n), &batch, |bench, q| {
            bench.iter(|| wasm_plugin.identify(q).unwrap())
        });
    }
    group.finish();
    criterion.final_summary();
    // Under `cargo test` criterion runs each case once and records nothing.
    if timing {
        print_ratios();
    }
}

const BLOCKS: usize = 30;
const BLOCK_CALLS: u32 = 100;

/// Times `BLOCKS` blocks of `BLOCK_CALLS` calls of each side, alternating,
/// and returns each side's fastest block as nanoseconds per call. On a
/// machine whose slow stretches last hundreds of milliseconds, the fastest
/// block is the undisturbed cost; the median above shows how much the
/// disturbance moves it.
fn fastest_blocks(mut native: impl FnMut(), mut wasm: impl FnMut()) -> (f64, f64) {
    let time = |f: &mut dyn FnMut()| {
        let start = std::time::Instant::now();
        for _ in 0..BLOCK_CALLS {
            f();
        }
        start.elapsed().as_nanos() as f64 / f64::from(BLOCK_CALLS)
    };
    let mut best = (f64::MAX, f64::MAX);
    for _ in 0..BLOCKS {
        best.0 = best.0.min(time(&mut native));
        best.1 = best.1.min(time(&mut wasm));
    }
    best
}

/// Reads criterion's estimates back and prints ns/record and Wasm/native.
/// The median, not the mean: on a shared machine a few slow samples (another
/// process on the core) would otherwise decide the figure.
fn print_ratios() {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("criterion/ipman_identify");
    let median_ns = |side: &str, n: usize| -> Option<f64> {
        let text = std::fs::read_to_string(
            dir.join(side)
                .join(n.to_string())
                .join("new/estimates.json"),
        )
        .ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        v["median"]["point_estimate"].as_f64()
    };
    println!("\nipman identify, median per record   native      wasm   wasm/native");
    for n in BATCHES {
        match (median_ns("native", n), median_ns("wasm", n)) {
            (Some(native), Some(wasm)) => {
                let (native, wasm) = (native / n as f64, wasm / n as f64);
                println!(
                    "  batch {n:>4} {:>18.1} ns {:>7.1} ns {:>9.2}x",
                    native,
                    wasm,
                    wasm / native
                );
            }
            _ => println!("  batch {n:>4}   (no estimates found in {})", dir.display()),
        }
    }
}
