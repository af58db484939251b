//! Frame encoding and decoding of 10,000-flow batches, in flows per second,
//! beside the JSON-lines encoding the agent writes without a transport (the
//! ratio is the figure to read; absolute numbers depend on the machine).
//!
//! `cargo bench -p flowattr-transport --bench codec`

#[path = "../tests/common/generate.rs"]
#[allow(dead_code)]
mod generate;

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowattr_model::FlowBatch;
use flowattr_transport::codec;

const FLOWS: usize = 10_000;

fn batch() -> FlowBatch {
    // A host with a handful of containers.
    generate::batch(1, 1, FLOWS, 5)
}

fn bench(c: &mut Criterion) {
    let batch = batch();
    let mut frame = Vec::new();
    codec::encode_batch(&batch, &mut frame).unwrap();
    let json = serde_json::to_vec(&batch).unwrap();
    println!(
        "10,000-flow batch: frame {} bytes ({:.1} per flow), JSON {} bytes ({:.1} per flow)",
        frame.len(),
        frame.len() as f64 / FLOWS as f64,
        json.len(),
        json.len() as f64 / FLOWS as f64,
    );

    let mut group = c.benchmark_group("codec_10k_flows");
    group.throughput(Throughput::Elements(FLOWS as u64));
    group.sample_size(20);
    group.bench_function("frame_encode", |b| {
        let mut out = Vec::with_capacity(frame.len());
        b.iter(|| {
            out.clear();
            codec::encode_batch(black_box(&batch), &mut out).unwrap();
        })
    });
    group.bench_function("frame_decode", |b| {
        b.iter(|| codec::decode_frame(black_box(&frame), codec::DEFAULT_MAX_FRAME_BYTES).unwrap())
    });
    group.bench_function("frame_encode_decode", |b| {
        let mut out = Vec::with_capacity(frame.len());
        b.iter(|| {
            out.clear();
            codec::encode_batch(black_box(&batch), &mut out).unwrap();
            codec::decode_frame(&out, codec::DEFAULT_MAX_FRAME_BYTES).unwrap()
        })
    });
    group.bench_function("json_encode_decode", |b| {
        let mut out = Vec::with_capacity(json.len());
        b.iter(|| {
            out.clear();
            serde_json::to_writer(&mut out, black_box(&batch)).unwrap();
            serde_json::from_slice::<FlowBatch>(&out).unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
