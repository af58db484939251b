//! Plugins that try to escape their limits, against the real hostile
//! component: waits in WASI past the deadline, leaked descriptors, floods of
//! stdout and stderr, and the trust checks on the compile cache, the drop-in
//! directory, grants and signatures. Each case is contained, counted and
//! reported, and the host goes on serving good calls.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use flowattr_plugin_runtime::{
    CacheOutcome, Failure, MAX_LINE, MAX_RESOURCES, PluginDirectory, Runtime, RuntimeConfig,
    TrustPolicy,
};

/// The misbehave manifest with a 500 ms deadline.
fn manifest(extra: &str) -> String {
    format!(
        "kind = \"identity\"\nwit = \"0.3.0\"\n[limits]\nmemory_mib = 16\ncall_timeout_ms = 500\n{extra}"
    )
}

/// Grants `granted` as `/data` and sets `config` lines.
fn granting(granted: &Path, config: &str) -> String {
    manifest(&format!(
        "[capabilities]\nread_dirs = [{{ host = \"{}\", guest = \"/data\" }}]\n[config]\n{config}",
        granted.display()
    ))
}

/// Calls port `port`, expecting the deadline to stop it within a margin,
/// then checks a good batch is served by a rebuilt instance.
fn stopped_at_deadline(plugin: &flowattr_plugin_runtime::Plugin, port: u16) {
    let started = Instant::now();
    let err = plugin.identify(&[query(port, 1)]).unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.failure, Failure::Timeout(500), "{err}");
    assert!(
        took >= Duration::from_millis(450),
        "stopped early: {took:?}"
    );
    assert!(took < Duration::from_millis(1500), "held the host {took:?}");

    let answers = plugin
        .identify(&[query(80, 2)])
        .expect("the next batch is served");
    assert_eq!(id_of(&answers, 0), "misbehave");
    let c = plugin.counters();
    assert_eq!((c.timeouts, c.rebuilds, c.calls), (1, 1, 1), "{c:?}");
}

#[test]
fn a_wasi_sleep_of_20_s_ends_at_the_500_ms_deadline() {
    let fx = Fixture::new();
    install(
        &fx.plugins(),
        "sleepy",
        &component("misbehave"),
        &manifest(""),
    );
    let plugin = fx.open().get("sleepy").unwrap();
    stopped_at_deadline(&plugin, 10);
}

#[test]
fn a_poll_on_a_ten_minute_timer_ends_at_the_deadline() {
    let fx = Fixture::new();
    install(
        &fx.plugins(),
        "poller",
        &component("misbehave"),
        &manifest(""),
    );
    let plugin = fx.open().get("poller").unwrap();
    stopped_at_deadline(&plugin, 11);
}

#[test]
fn reading_a_fifo_in_its_grant_ends_at_the_deadline() {
    let fx = Fixture::new();
    let granted = fx.tmp.path().join("granted");
    std::fs::create_dir(&granted).unwrap();
    let fifo = granted.join("fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    install(
        &fx.plugins(),
        "reader",
        &component("misbehave"),
        &granting(&granted, "probe_paths = [\"/data/fifo\"]\n"),
    );
    let plugin = fx.open().get("reader").unwrap();
    stopped_at_deadline(&plugin, 4000);

    // The abandoned open still waits on one of the runtime's blocking
    // threads: a writer that comes and goes releases it.
    drop(std::fs::OpenOptions::new().write(true).open(&fifo).unwrap());
}

#[test]
fn opening_files_without_closing_is_refused_at_the_cap() {
    let fx = Fixture::new();
    let granted = fx.tmp.path().join("granted");
    std::fs::create_dir(&granted).unwrap();
    std::fs::write(granted.join("inside.txt"), "12345").unwrap();
    install(
        &fx.plugins(),
        "leaky",
        &component("misbehave"),
        &granting(&granted, "leak_path = \"/data/inside.txt\"\n"),
    );
    let plugin = fx.open().get("leaky").unwrap();
    let fds = || std::fs::read_dir("/proc/self/fd").unwrap().count();
    let before = fds();

    let answers = plugin.identify(&[query(12, 1)]).unwrap();
    let id = id_of(&answers, 0);
    let opened: usize = id
        .strip_prefix("opened:")
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{id}"));
    assert!(
        opened > 100 && opened < MAX_RESOURCES,
        "opened {opened} files: {id}"
    );
    assert!(!id.ends_with("never refused"), "{id}");
    assert_eq!(plugin.counters().resources_refused, 1);
    assert!(
        fds() <= before + MAX_RESOURCES,
        "host descriptors grew from {before} to {}",
        fds()
    );

    assert_eq!(
        id_of(&plugin.identify(&[query(80, 2)]).unwrap(), 0),
        "misbehave"
    );
}

#[test]
fn stdout_and_stderr_reach_the_host_log_cut_cleaned_and_rate_limited() {
    let fx = Fixture::new();
    install(
        &fx.plugins(),
        "loud",
        &component("misbehave"),
        &manifest(""),
    );
    let plugin = fx.open().get("loud").unwrap();

    let (answers, logs) = capture_logs(|| plugin.identify(&[query(13, 1)]));
    assert_eq!(id_of(&answers.unwrap(), 0), "misbehave");
    for source in ["stdout", "stderr"] {
        let line = logs
            .iter()
            .find(|l| l.contains(&format!("source={source}")))
            .unwrap_or_else(|| panic!("no {source} line in {logs:#?}"));
        assert!(line.contains(&format!("{source} line")), "{line}");
        assert!(!line.chars().any(|c| c.is_control()), "{line:?}");
        assert!(line.contains("more bytes cut"), "{line}");
        assert!(line.len() < MAX_LINE + 200, "{} bytes", line.len());
    }
    assert_eq!(plugin.counters().log_lines, 2);

    // Floods share the log's rate limit: 1,000 lines, about the burst kept.
    plugin.identify(&[query(7, 2)]).unwrap();
    let c = plugin.counters();
    assert_eq!(c.log_lines + c.log_suppressed, 1002);
    assert!(c.log_lines <= 112, "{c:?}");
}

#[test]
fn a_panic_printed_to_stderr_appears_in_the_host_log() {
    let fx = Fixture::new();
    install(
        &fx.plugins(),
        "panicky",
        &component("misbehave"),
        &manifest(""),
    );
    let plugin = fx.open().get("panicky").unwrap();

    let (result, logs) = capture_logs(|| plugin.identify(&[query(14, 1)]));
    assert!(matches!(result.unwrap_err().failure, Failure::Trap(_)));
    assert!(
        logs.iter()
            .any(|l| l.contains("source=stderr") && l.contains("traceback through stderr")),
        "{logs:#?}"
    );
    assert!(plugin.identify(&[query(80, 2)]).is_ok());
}

fn cache_entries(cache: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(cache)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .flat_map(|e| std::fs::read_dir(e.path()).unwrap().flatten())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect()
}

/// Opens the plugin directory of `fx` on a fresh runtime with cache `cache`.
fn load_with_cache(fx: &Fixture, cache: &Path) -> std::sync::Arc<flowattr_plugin_runtime::Plugin> {
    let runtime = runtime(cache);
    let (dir, report) = PluginDirectory::open(&runtime, fx.plugins()).unwrap();
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    dir.get("p").unwrap()
}

#[test]
fn a_tampered_cache_entry_is_removed_counted_and_recompiled() {
    let fx = Fixture::new();
    install(&fx.plugins(), "p", &component("misbehave"), &manifest(""));
    let cache = fx.tmp.path().join("own-cache");
    assert_eq!(
        load_with_cache(&fx, &cache).cache_outcome(),
        CacheOutcome::Miss
    );
    let [entry] = &cache_entries(&cache)[..] else {
        panic!("one entry");
    };
    let mut bytes = std::fs::read(&entry).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&entry, &bytes).unwrap();

    let plugin = load_with_cache(&fx, &cache);
    assert_eq!(plugin.cache_outcome(), CacheOutcome::Rejected);
    assert_eq!(plugin.counters().cache_rejected, 1);
    assert!(plugin.identify(&[query(80, 1)]).is_ok());
    // The bad entry was replaced by a good one.
    assert_eq!(
        load_with_cache(&fx, &cache).cache_outcome(),
        CacheOutcome::Hit
    );
}

#[test]
fn a_cache_others_can_write_or_own_is_not_used() {
    let fx = Fixture::new();
    install(&fx.plugins(), "p", &component("misbehave"), &manifest(""));
    let cache = fx.tmp.path().join("shared-cache");
    assert_eq!(
        load_with_cache(&fx, &cache).cache_outcome(),
        CacheOutcome::Miss
    );

    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let plugin = load_with_cache(&fx, &cache);
    assert_eq!(plugin.cache_outcome(), CacheOutcome::Disabled);
    assert!(plugin.identify(&[query(80, 1)]).is_ok());

    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755)).unwrap();
    let engine_dir = cache_entries(&cache)[0].parent().unwrap().to_owned();
    std::os::unix::fs::chown(&engine_dir, Some(65534), None).unwrap();
    assert_eq!(
        load_with_cache(&fx, &cache).cache_outcome(),
        CacheOutcome::Disabled
    );
}

#[test]
fn a_plugin_directory_or_file_others_can_write_is_refused() {
    let fx = Fixture::new();
    let wasm = component("misbehave");
    install(&fx.plugins(), "good", &wasm, &manifest(""));
    install(&fx.plugins(), "open", &wasm, &manifest(""));
    install(&fx.plugins(), "foreign", &wasm, &manifest(""));
    let perms = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    perms(&fx.plugins().join("open.wasm"), 0o666);
    std::os::unix::fs::chown(fx.plugins().join("foreign.toml"), Some(65534), None).unwrap();

    let (dir, report) = PluginDirectory::open(&fx.runtime, fx.plugins()).unwrap();
    let reason = |name: &str| {
        report
            .refused
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.to_string())
            .unwrap_or_else(|| panic!("{name} not refused: {report:?}"))
    };
    let open = reason("open");
    assert!(
        open.contains("open.wasm: is writable by everyone"),
        "{open}"
    );
    let foreign = reason("foreign");
    assert!(
        foreign.contains("foreign.toml: is owned by uid 65534"),
        "{foreign}"
    );
    assert!(dir.get("good").unwrap().identify(&[query(80, 1)]).is_ok());

    perms(&fx.plugins(), 0o777);
    let err = PluginDirectory::open(&fx.runtime, fx.plugins())
        .err()
        .expect("refused");
    assert!(
        err.to_string().contains("is writable by everyone")
            && err.to_string().contains("nothing in it is trusted"),
        "{err}"
    );
    // A reload of the open directory keeps what runs and loads nothing new.
    install(&fx.plugins(), "late", &wasm, &manifest(""));
    dir.reload();
    assert!(dir.get("late").is_none());
    assert!(dir.get("good").unwrap().identify(&[query(80, 2)]).is_ok());
}

#[test]
fn grants_outside_the_allowed_roots_are_refused() {
    let fx = Fixture::new();
    let wasm = component("misbehave");
    let allowed = fx.tmp.path().join("allowed");
    let elsewhere = fx.tmp.path().join("elsewhere");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::os::unix::fs::symlink("/etc", allowed.join("etc")).unwrap();
    install(&fx.plugins(), "root", &wasm, &granting(Path::new("/"), ""));
    install(&fx.plugins(), "inside", &wasm, &granting(&allowed, ""));
    install(&fx.plugins(), "outside", &wasm, &granting(&elsewhere, ""));
    install(
        &fx.plugins(),
        "link",
        &wasm,
        &granting(&allowed.join("etc"), ""),
    );
    let runtime = Runtime::new(RuntimeConfig {
        trust: TrustPolicy::new(Some(vec![allowed.clone()]), &[]).unwrap(),
        ..RuntimeConfig::default()
    })
    .unwrap();

    let (dir, report) = PluginDirectory::open(&runtime, fx.plugins()).unwrap();
    let mut refused: Vec<_> = report.refused.iter().map(|r| r.name.as_str()).collect();
    refused.sort();
    assert_eq!(refused, ["link", "outside", "root"], "{report:?}");
    for r in &report.refused {
        let text = r.to_string();
        assert!(
            text.contains("capabilities.read_dirs[0].host")
                && text.contains("outside the directories this daemon allows grants under"),
            "{text}"
        );
    }
    assert!(dir.get("inside").unwrap().identify(&[query(80, 1)]).is_ok());

    // The default allows the drop-in directory's parent, and not `/`.
    let (_, report) = PluginDirectory::open(&fx.runtime, fx.plugins()).unwrap();
    let mut refused: Vec<_> = report.refused.iter().map(|r| r.name.as_str()).collect();
    refused.sort();
    assert_eq!(refused, ["link", "root"], "{report:?}");
}

#[test]
fn with_keys_configured_only_components_they_signed_load() {
    use ring::signature::{Ed25519KeyPair, KeyPair as _};
    let rng = ring::rand::SystemRandom::new();
    let keys: Vec<_> = (0..2)
        .map(|_| {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
            Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
        })
        .collect();
    let fx = Fixture::new();
    let wasm = component("misbehave");
    let sign = |name: &str, key: &Ed25519KeyPair, bytes: &[u8]| {
        let sig = hex::encode(key.sign(bytes).as_ref());
        std::fs::write(fx.plugins().join(format!("{name}.wasm.sig")), sig).unwrap();
    };
    for name in ["signed", "unsigned", "stranger", "other-bytes"] {
        install(&fx.plugins(), name, &wasm, &manifest(""));
    }
    sign("signed", &keys[0], &wasm);
    sign("stranger", &keys[1], &wasm);
    sign("other-bytes", &keys[0], b"something else");
    let trusted = hex::encode(keys[0].public_key().as_ref());
    let runtime = Runtime::new(RuntimeConfig {
        trust: TrustPolicy::new(None, &[trusted]).unwrap(),
        ..RuntimeConfig::default()
    })
    .unwrap();

    let (dir, report) = PluginDirectory::open(&runtime, fx.plugins()).unwrap();
    let reason = |name: &str| {
        report
            .refused
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.to_string())
            .unwrap_or_else(|| panic!("{name} not refused: {report:?}"))
    };
    assert!(reason("unsigned").contains("unsigned.wasm: unsigned.wasm is not signed"));
    assert!(reason("stranger").contains(
        "stranger.wasm.sig: stranger.wasm has a signature that no configured key verifies"
    ));
    assert!(reason("other-bytes").contains("no configured key verifies"));
    assert_eq!(report.refused.len(), 3, "{report:?}");
    assert!(dir.get("signed").unwrap().identify(&[query(80, 1)]).is_ok());

    // Without keys, signatures are not required.
    let (dir, report) = PluginDirectory::open(&fx.runtime, fx.plugins()).unwrap();
    assert!(report.refused.is_empty(), "{report:?}");
    assert_eq!(dir.all().len(), 4);
}
