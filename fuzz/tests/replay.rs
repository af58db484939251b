//! Every fuzz target over its seeds, its checked-in corpus
//! (`fuzz/corpus/TARGET`) and every crash ever found (`fuzz/artifacts/TARGET`,
//! kept as regressions): none may panic.

use std::path::{Path, PathBuf};

fn inputs(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_target_takes_its_seeds_corpus_and_past_crashes() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = fuzz.join("..");
    let mut total = 0;
    for target in flowattr_fuzz::TARGETS {
        let seeds = flowattr_fuzz::seeds::of(target.name, &root);
        assert!(!seeds.is_empty(), "{} has seeds", target.name);
        for seed in &seeds {
            (target.run)(seed);
        }
        let kept = [fuzz.join("corpus"), fuzz.join("artifacts")]
            .iter()
            .flat_map(|d| inputs(&d.join(target.name)))
            .collect::<Vec<_>>();
        for (path, bytes) in &kept {
            let result = std::panic::catch_unwind(|| (target.run)(bytes));
            assert!(
                result.is_ok(),
                "{} panics on {}",
                target.name,
                path.display()
            );
        }
        total += seeds.len() + kept.len();
    }
    eprintln!("replayed {total} inputs");
}

#[test]
fn seeds_reach_past_the_first_check() {
    // A seed the parser refuses at once would start the fuzzer nowhere.
    use flowattr_transport::codec;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for frame in flowattr_fuzz::seeds::of("frame_decoder", &root) {
        codec::decode_frame(&frame, 1 << 20).unwrap();
    }
    let btf = flowattr_fuzz::seeds::of("btf", &root).remove(0);
    let btf = flowattr_host::capture::btf::Btf::parse(&btf).unwrap();
    let field = btf.field("sock.__sk_common.skc_net").unwrap();
    assert_eq!((field.offset, field.size), (8, 8));
    let legacy = flowattr_fuzz::seeds::of("legacy_events", &root).remove(0);
    let mut buf = legacy.clone();
    let polled = flowattr_collector::legacy::take_lines(&mut buf);
    assert_eq!((polled.events.len(), polled.malformed.len()), (2, 1));
    let manifests = flowattr_fuzz::seeds::of("manifest", &root);
    assert!(manifests.len() >= 4);
    for m in manifests {
        flowattr_plugin_runtime::manifest::Manifest::parse(std::str::from_utf8(&m).unwrap())
            .unwrap();
    }
    for m in flowattr_fuzz::seeds::of("sharing_message", &root) {
        let k = m[0] as usize;
        flowattr_collector::sharing::codec::decode(Some(&m[1..1 + k]), &m[1 + k..]).unwrap();
    }
}
