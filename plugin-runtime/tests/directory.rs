//! The drop-in directory: refusals that name the file and field, hot
//! replacement without losing calls, watching, the compile cache.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use flowattr_plugin_runtime::{CacheOutcome, PluginDirectory, sha256_hex};

/// Opens a directory holding one plugin `p` and returns its single refusal.
fn refusal_for(wasm: &[u8], manifest: &str) -> (String, String) {
    let fx = Fixture::new();
    std::fs::write(fx.plugins().join("p.wasm"), wasm).unwrap();
    write_manifest(&fx.plugins(), "p", manifest);
    let dir = fx.open();
    assert!(dir.get("p").is_none(), "a bad plugin must not load");
    let refusals = dir.refusals();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    let r = &refusals[0];
    (
        r.file.file_name().unwrap().to_string_lossy().into_owned(),
        r.to_string(),
    )
}

#[test]
fn a_wrong_hash_is_refused_naming_the_manifest_and_field() {
    let wasm = component("misbehave");
    let manifest = format!(
        "sha256 = \"{}\"\n{}",
        "ab".repeat(32),
        misbehave_manifest("")
    );
    let (file, msg) = refusal_for(&wasm, &manifest);
    assert_eq!(file, "p.toml");
    assert!(
        msg.contains("field `sha256`") && msg.contains(&sha256_hex(&wasm)),
        "{msg}"
    );
}

#[test]
fn a_missing_hash_is_refused() {
    let (file, msg) = refusal_for(&component("misbehave"), &misbehave_manifest(""));
    assert_eq!(file, "p.toml");
    assert!(
        msg.contains("field `sha256`") && msg.contains("missing"),
        "{msg}"
    );
}

fn stamped(wasm: &[u8], manifest: &str) -> String {
    format!("sha256 = \"{}\"\n{manifest}", sha256_hex(wasm))
}

#[test]
fn an_unknown_kind_is_refused() {
    let wasm = component("misbehave");
    let (file, msg) = refusal_for(
        &wasm,
        &stamped(&wasm, "kind = \"teleporter\"\nwit = \"0.3.0\""),
    );
    assert_eq!(file, "p.toml");
    assert!(
        msg.contains("field `kind`") && msg.contains("teleporter"),
        "{msg}"
    );
}

#[test]
fn a_kind_the_component_does_not_implement_is_refused() {
    let wasm = component("misbehave");
    let (file, msg) = refusal_for(
        &wasm,
        &stamped(&wasm, "kind = \"resolver\"\nwit = \"0.3.0\""),
    );
    assert_eq!(file, "p.toml");
    assert!(
        msg.contains("field `kind`") && msg.contains("implements identity"),
        "{msg}"
    );
}

#[test]
fn a_wrong_wit_version_is_refused() {
    let wasm = component("misbehave");
    let (file, msg) = refusal_for(
        &wasm,
        &stamped(&wasm, "kind = \"identity\"\nwit = \"0.4.0\""),
    );
    assert_eq!(file, "p.toml");
    assert!(
        msg.contains("field `wit`") && msg.contains("0.4.0"),
        "{msg}"
    );
}

#[test]
fn a_config_the_plugin_rejects_is_refused() {
    let wasm = component("misbehave");
    let manifest = stamped(
        &wasm,
        &misbehave_manifest("[config]\nfavourite_colour = \"blue\"\n"),
    );
    let (file, msg) = refusal_for(&wasm, &manifest);
    assert_eq!(file, "p.toml");
    assert!(
        msg.contains("field `config`") && msg.contains("favourite_colour"),
        "{msg}"
    );
}

#[test]
fn a_missing_grant_directory_is_refused() {
    let wasm = component("misbehave");
    let extra =
        "[capabilities]\nread_dirs = [{ host = \"/nonexistent/flowattr\", guest = \"/x\" }]\n";
    let (file, msg) = refusal_for(&wasm, &stamped(&wasm, &misbehave_manifest(extra)));
    assert_eq!(file, "p.toml");
    assert!(
        msg.contains("field `capabilities.read_dirs[0].host`"),
        "{msg}"
    );
}

#[test]
fn bytes_that_are_not_a_component_are_refused_naming_the_wasm() {
    let junk = b"\0asm this is not a component".to_vec();
    let (file, msg) = refusal_for(&junk, &stamped(&junk, &misbehave_manifest("")));
    assert_eq!(file, "p.wasm");
    assert!(msg.contains("not a valid Wasm component"), "{msg}");
}

#[test]
fn a_component_without_a_manifest_is_refused() {
    let fx = Fixture::new();
    std::fs::write(fx.plugins().join("lonely.wasm"), component("misbehave")).unwrap();
    let dir = fx.open();
    let refusals = dir.refusals();
    assert_eq!(refusals.len(), 1);
    assert!(
        refusals[0].to_string().contains("lonely.toml"),
        "{}",
        refusals[0]
    );
}

#[test]
fn a_bad_new_version_keeps_the_old_one_running_and_says_why() {
    let fx = Fixture::new();
    let wasm = component("misbehave");
    install(
        &fx.plugins(),
        "p",
        &wasm,
        &misbehave_manifest("[config]\nworkload = \"v1\"\n"),
    );
    let dir = fx.open();
    write_manifest(
        &fx.plugins(),
        "p",
        &stamped(&wasm, "kind = \"identity\"\nwit = \"9.0.0\""),
    );
    let report = dir.reload();
    assert_eq!(report.refused.len(), 1);
    assert!(report.refused[0].kept_previous);
    assert!(
        report.refused[0]
            .to_string()
            .contains("previous version keeps running")
    );
    let answers = dir.get("p").unwrap().identify(&[query(80, 1)]).unwrap();
    assert_eq!(id_of(&answers, 0), "v1");

    // Reloading the same bad files keeps the refusal and the old version.
    let again = dir.reload();
    assert_eq!(again.refused, report.refused);
    assert!(again.unchanged.is_empty() && again.replaced.is_empty());
    assert_eq!(dir.refusals(), report.refused);
    assert!(dir.get("p").is_some());

    // Fixing the manifest clears the refusal.
    install(
        &fx.plugins(),
        "p",
        &wasm,
        &misbehave_manifest("[config]\nworkload = \"v2\"\n"),
    );
    let fixed = dir.reload();
    assert!(fixed.refused.is_empty(), "{fixed:?}");
    assert_eq!(fixed.replaced, vec!["p".to_owned()]);
}

#[test]
fn replacing_a_component_while_calls_are_in_flight_loses_no_call() {
    let fx = Fixture::new();
    let v1 = component("misbehave");
    let v2 = with_custom_section(&v1, "version 2");
    install(
        &fx.plugins(),
        "p",
        &v1,
        &misbehave_manifest("[config]\nworkload = \"v1\"\n"),
    );
    let dir = fx.open();

    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..2)
        .map(|_| {
            let dir = dir.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let plugin = dir.get("p").expect("always loaded");
                    let answers = plugin
                        .identify(&[query(80, 1), query(81, 1)])
                        .expect("no call fails");
                    seen.push(id_of(&answers, 0));
                }
                seen
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(50));
    // The new component lands first; until its manifest follows, the hash
    // does not match and the old version keeps serving.
    std::fs::write(fx.plugins().join("p.wasm"), &v2).unwrap();
    let report = dir.reload();
    assert_eq!(report.refused.len(), 1, "{report:?}");
    std::thread::sleep(Duration::from_millis(50));
    write_manifest(
        &fx.plugins(),
        "p",
        &stamped(&v2, &misbehave_manifest("[config]\nworkload = \"v2\"\n")),
    );
    let report = dir.reload();
    assert_eq!(report.replaced, vec!["p".to_owned()], "{report:?}");
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);

    for caller in callers {
        let seen = caller.join().expect("caller panicked");
        assert!(seen.iter().all(|id| id == "v1" || id == "v2"));
        let first_v2 = seen
            .iter()
            .position(|id| id == "v2")
            .expect("saw the new version");
        assert!(seen[..first_v2].iter().all(|id| id == "v1"));
        assert!(
            seen[first_v2..].iter().all(|id| id == "v2"),
            "never back to the old version"
        );
    }
    let plugin = dir.get("p").unwrap();
    assert_eq!(plugin.sha256(), sha256_hex(&v2));
}

#[test]
fn removing_the_files_unloads_the_plugin() {
    let fx = Fixture::new();
    install(
        &fx.plugins(),
        "p",
        &component("misbehave"),
        &misbehave_manifest(""),
    );
    let dir = fx.open();
    std::fs::remove_file(fx.plugins().join("p.toml")).unwrap();
    std::fs::remove_file(fx.plugins().join("p.wasm")).unwrap();
    let report = dir.reload();
    assert_eq!(report.removed, vec!["p".to_owned()]);
    assert!(dir.get("p").is_none());
}

#[test]
fn the_watcher_applies_changes_without_a_reload_call() {
    let fx = Fixture::new();
    let dir = fx.open();
    let _watch = dir.watch().unwrap();
    install(
        &fx.plugins(),
        "late",
        &component("misbehave"),
        &misbehave_manifest(""),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while dir.get("late").is_none() {
        assert!(
            Instant::now() < deadline,
            "the watcher never loaded the new plugin"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::remove_file(fx.plugins().join("late.toml")).unwrap();
    std::fs::remove_file(fx.plugins().join("late.wasm")).unwrap();
    while dir.get("late").is_some() {
        assert!(
            Instant::now() < deadline,
            "the watcher never unloaded the plugin"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_second_runtime_loads_from_the_compile_cache() {
    let fx = Fixture::new();
    install(
        &fx.plugins(),
        "p",
        &component("misbehave"),
        &misbehave_manifest(""),
    );
    let first = fx.open();
    assert_eq!(first.get("p").unwrap().cache_outcome(), CacheOutcome::Miss);
    let again = runtime(&fx.tmp.path().join("cache"));
    let (second, _) = PluginDirectory::open(&again, fx.plugins()).unwrap();
    let plugin = second.get("p").unwrap();
    assert_eq!(plugin.cache_outcome(), CacheOutcome::Hit);
    assert!(plugin.identify(&[query(80, 1)]).is_ok());
}

/// Sets a file's modification time to `ago` before now.
fn age(path: &std::path::Path, ago: Duration) {
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - ago)
        .unwrap();
}

fn modified_ago(path: &std::path::Path) -> Duration {
    std::fs::metadata(path)
        .unwrap()
        .modified()
        .unwrap()
        .elapsed()
        .unwrap_or_default()
}

#[test]
fn the_compile_cache_keeps_what_is_used_and_prunes_the_rest() {
    const DAY: Duration = Duration::from_secs(86_400);
    let fx = Fixture::new();
    let wasm = component("misbehave");
    install(&fx.plugins(), "p", &wasm, &misbehave_manifest(""));
    assert_eq!(
        fx.open().get("p").unwrap().cache_outcome(),
        CacheOutcome::Miss
    );

    // The entry just written, in this engine's directory.
    let cache = fx.tmp.path().join("cache");
    let engine_dir = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|d| d.is_dir())
        .unwrap();
    let entry = engine_dir.join(format!("{}.cwasm", sha256_hex(&wasm)));
    assert!(entry.exists());
    age(&entry, 13 * DAY);

    // What a fortnight and a crash leave behind, an older wasmtime's
    // entries, and files that are not the cache's.
    let unused = engine_dir.join("0000.cwasm");
    let leftover = engine_dir.join(".0000.cwasm.tmp-4242");
    let foreign = engine_dir.join("notes.txt");
    let old_engine = cache.join("00000000deadbeef");
    let recent_engine = cache.join("00000000feedface");
    std::fs::create_dir(&old_engine).unwrap();
    std::fs::create_dir(&recent_engine).unwrap();
    let old_engine_entry = old_engine.join("1111.cwasm");
    let recent_engine_entry = recent_engine.join("2222.cwasm");
    for (file, ago) in [
        (&unused, 15 * DAY),
        (&leftover, Duration::from_secs(2 * 3600)),
        (&foreign, 100 * DAY),
        (&old_engine_entry, 30 * DAY),
        (&recent_engine_entry, DAY),
    ] {
        std::fs::write(file, b"x").unwrap();
        age(file, ago);
    }

    // A new runtime prunes as it opens the cache; loading marks the entry used.
    let again = runtime(&cache);
    let (second, _) = PluginDirectory::open(&again, fx.plugins()).unwrap();
    assert_eq!(second.get("p").unwrap().cache_outcome(), CacheOutcome::Hit);
    assert!(
        modified_ago(&entry) < DAY,
        "a cache hit must mark the entry used"
    );
    for gone in [&unused, &leftover, &old_engine_entry, &old_engine] {
        assert!(!gone.exists(), "{} should be pruned", gone.display());
    }
    for kept in [&foreign, &recent_engine_entry] {
        assert!(kept.exists(), "{} should be kept", kept.display());
    }
}

#[test]
fn chains_are_ordered_by_manifest_order_then_name() {
    let fx = Fixture::new();
    let wasm = component("misbehave");
    install(
        &fx.plugins(),
        "b",
        &wasm,
        &format!("order = 5\n{}", misbehave_manifest("")),
    );
    install(
        &fx.plugins(),
        "a",
        &wasm,
        &format!("order = 5\n{}", misbehave_manifest("")),
    );
    install(
        &fx.plugins(),
        "z",
        &wasm,
        &format!("order = 1\n{}", misbehave_manifest("")),
    );
    let dir = fx.open();
    let names: Vec<_> = dir
        .chain(flowattr_plugin_runtime::manifest::PluginKind::Identity)
        .iter()
        .map(|p| p.name().to_owned())
        .collect();
    assert_eq!(names, ["z", "a", "b"]);
}
