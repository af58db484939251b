//! JavaScript plugins (componentize-js with `sdk/js/flowattr.js`) in the real
//! runtime: the example identity plugin (`examples/js-identity`) answers its
//! fixture exactly as `expected.json` says and follows its document as it
//! changes; the helper's workload table holds across batches; a thrown
//! JavaScript error reaches the host log as its own message, the instance is
//! rebuilt, and `init`'s exception is the plugin's refusal. The components
//! are built by `scripts/build` into `target/js/`.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;

use common::*;
use flowattr_model::{Answers, LocalQuery, Protocol};
use std::sync::Arc;

use flowattr_plugin_runtime::clock::ManualClock;
use flowattr_plugin_runtime::{Failure, Plugin, PluginDirectory, Runtime, RuntimeConfig};

/// A JavaScript component built by `scripts/build`.
fn js_component(name: &str) -> Vec<u8> {
    let path = target_dir().join(format!("js/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build it with scripts/build (after scripts/bootstrap installs sdk/js's npm packages)",
            path.display()
        )
    })
}

/// A runtime whose compile cache is shared by these tests (a 12 MiB
/// JavaScript component takes seconds to compile), private to the user as
/// the cache requires.
fn js_runtime(clock: Option<Arc<ManualClock>>) -> Runtime {
    use std::os::unix::fs::PermissionsExt as _;
    let cache = target_dir().join("js/test-cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut config = RuntimeConfig {
        cache_dir: Some(cache),
        ..RuntimeConfig::default()
    };
    if let Some(clock) = clock {
        config.clock = clock;
    }
    Runtime::new(config).unwrap()
}

/// The plugin `name` of the drop-in directory `fx.plugins()`.
fn open(runtime: &Runtime, fx: &Fixture, name: &str) -> Arc<Plugin> {
    let (dir, report) = PluginDirectory::open(runtime, fx.plugins()).unwrap();
    dir.get(name)
        .unwrap_or_else(|| panic!("{name} did not load: {report:?}"))
}

fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/js-identity")
}

fn manifest(grant: &std::path::Path, config: &str) -> String {
    format!(
        "kind = \"identity\"\nwit = \"0.3.0\"\n[limits]\nmemory_mib = 64\ncall_timeout_ms = 2000\n\
         [capabilities]\nread_dirs = [{{ host = \"{}\", guest = \"/data\" }}]\n[config]\n{config}",
        grant.display()
    )
}

fn local(address: &str, time_ns: u64) -> LocalQuery {
    LocalQuery {
        local: address.parse::<SocketAddr>().unwrap(),
        protocol: Protocol::default(),
        time_ns,
        cgroup_id: 0,
        netns_id: 0,
        pid: 0,
    }
}

/// What each answer says: the workload id or the reason.
fn outcomes(answers: &Answers) -> Vec<String> {
    (0..answers.answers.len())
        .map(|i| match answers.resolve(i) {
            Ok((w, _)) => w.id.clone(),
            Err(reason) => reason.as_str().to_owned(),
        })
        .collect()
}

#[test]
fn the_example_answers_its_fixture_as_expected() {
    #[derive(serde::Deserialize)]
    struct Input {
        now_ns: u64,
        queries: Vec<LocalQuery>,
    }
    let fx = Fixture::new();
    let clock = Arc::new(ManualClock::new(0));
    let runtime = js_runtime(Some(clock.clone()));
    let data = fx.tmp.path().join("gce");
    std::fs::create_dir(&data).unwrap();
    std::fs::copy(
        example_dir().join("fixtures/state/instance.json"),
        data.join("instance.json"),
    )
    .unwrap();
    install(
        &fx.plugins(),
        "js-identity",
        &js_component("js-identity"),
        &manifest(&data, "document = \"/data/instance.json\"\n"),
    );
    let plugin = open(&runtime, &fx, "js-identity");

    let input: Input = serde_json::from_str(
        &std::fs::read_to_string(example_dir().join("fixtures/input.json")).unwrap(),
    )
    .unwrap();
    let expected: Answers = serde_json::from_str(
        &std::fs::read_to_string(example_dir().join("fixtures/expected.json")).unwrap(),
    )
    .unwrap();
    clock.set(input.now_ns);
    let answers = plugin.identify(&input.queries).unwrap();
    assert_eq!(outcomes(&answers), outcomes(&expected));
    for i in 0..answers.answers.len() {
        match (answers.resolve(i), expected.resolve(i)) {
            (Ok((w, valid)), Ok((want, want_valid))) => {
                assert_eq!(**w, **want, "answer {i}'s workload");
                assert_eq!(valid, want_valid, "answer {i}'s validity");
            }
            (got, want) => assert_eq!(got.err(), want.err(), "answer {i}"),
        }
    }
}

#[test]
fn the_example_follows_its_document_and_never_answers_from_a_bad_one() {
    let fx = Fixture::new();
    let data = fx.tmp.path().join("gce");
    std::fs::create_dir(&data).unwrap();
    install(
        &fx.plugins(),
        "js-identity",
        &js_component("js-identity"),
        &manifest(&data, "document = \"/data/instance.json\"\n"),
    );
    let plugin = fx
        .open()
        .get("js-identity")
        .expect("loads without its document");
    let ask = || outcomes(&plugin.identify(&[local("10.128.0.7:443", 1)]).unwrap());

    let ((), logs) = capture_logs(|| assert_eq!(ask(), ["source-unavailable"]));
    assert!(
        logs.iter()
            .any(|l| l.contains("/data/instance.json is unusable") && l.contains("no-entry")),
        "{logs:?}"
    );

    let good = std::fs::read_to_string(example_dir().join("fixtures/state/instance.json")).unwrap();
    std::fs::write(data.join("instance.json"), &good).unwrap();
    assert_eq!(ask(), ["checkout-7"]);

    let ((), logs) = capture_logs(|| {
        std::fs::write(data.join("instance.json"), "{ not json").unwrap();
        assert_eq!(ask(), ["source-unavailable"], "never the previous version");
    });
    assert!(
        logs.iter().any(|l| l.contains("SyntaxError: JSON.parse")),
        "the parser's own message: {logs:?}"
    );

    let moved = good.replace("10.128.0.7", "10.128.0.9");
    std::fs::write(data.join("instance.json"), moved).unwrap();
    assert_eq!(ask(), ["not-found"]);
    assert_eq!(
        outcomes(&plugin.identify(&[local("10.128.0.9:443", 1)]).unwrap()),
        ["checkout-7"]
    );
    assert_eq!(plugin.counters().traps, 0);
}

#[test]
fn the_workload_table_holds_across_batches() {
    let fx = Fixture::new();
    let data = fx.tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    install(
        &fx.plugins(),
        "fixture",
        &js_component("js-fixture"),
        &manifest(&data, ""),
    );
    let runtime = js_runtime(None);
    let plugin = open(&runtime, &fx, "fixture");
    for batch in 0..5u64 {
        let queries: Vec<_> = (0..100)
            .map(|i| local(&format!("10.0.{batch}.{i}:80"), 1_000 + i))
            .collect();
        let answers = plugin.identify(&queries).unwrap();
        assert_eq!(answers.answers.len(), 100);
        let (w, valid) = answers.resolve(99).unwrap();
        assert_eq!(w.id, "fixture");
        assert_eq!(
            w.labels.get("written").map(String::as_str),
            Some("in-javascript")
        );
        assert_eq!((valid.start_ns, valid.end_ns), (1_099, 1_000_001_099));
    }
    let c = plugin.counters();
    assert_eq!((c.calls, c.errors, c.traps, c.rebuilds), (5, 0, 0, 0));
}

#[test]
fn a_thrown_error_reaches_the_log_as_its_own_message_and_the_instance_is_rebuilt() {
    let fx = Fixture::new();
    let data = fx.tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("note.txt"), "hello").unwrap();
    install(
        &fx.plugins(),
        "fixture",
        &js_component("js-fixture"),
        &manifest(&data, ""),
    );
    let runtime = js_runtime(None);
    let plugin = open(&runtime, &fx, "fixture");

    let (err, logs) =
        capture_logs(|| plugin.identify(&[local("10.0.0.1:80", 1), local("10.0.0.1:666", 1)]));
    let err = err.unwrap_err();
    assert!(matches!(err.failure, Failure::Trap(_)), "{err}");
    let line = logs
        .iter()
        .find(|l| l.contains("identify threw"))
        .unwrap_or_else(|| panic!("no line of the plugin's own: {logs:?}"));
    assert!(
        line.contains(
            "identify threw TypeError: can't access property \"name\", query.owner is undefined \
             (at brokenLookup@fixtures/fixture-plugin.js:"
        ),
        "{line}"
    );

    // A bad answer is named, not guessed at.
    let (err, logs) = capture_logs(|| plugin.identify(&[local("10.0.0.1:667", 1)]));
    assert!(matches!(err.unwrap_err().failure, Failure::Trap(_)));
    assert!(
        logs.iter()
            .any(|l| l.contains("answer 0: \"nope\" is not an unattributed reason")),
        "{logs:?}"
    );

    // Rebuilt (after the backoff of two failures in a row, at most 100 ms);
    // and 300 reads in one call hold at most one descriptor at a time (the
    // host allows 256).
    std::thread::sleep(std::time::Duration::from_millis(150));
    let answers = plugin.identify(&[local("10.0.0.1:668", 7)]).unwrap();
    assert_eq!(outcomes(&answers), ["fixture"]);
    let c = plugin.counters();
    assert_eq!((c.traps, c.rebuilds, c.resources_refused), (2, 2, 0));
}

#[test]
fn an_exception_in_init_is_the_plugins_refusal_with_its_message() {
    let fx = Fixture::new();
    let data = fx.tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    install(
        &fx.plugins(),
        "fixture",
        &js_component("js-fixture"),
        &manifest(&data, "refuse = \"no state directory configured\"\n"),
    );
    let (dir, refusals) = PluginDirectory::open(&js_runtime(None), fx.plugins()).unwrap();
    assert!(dir.get("fixture").is_none());
    let text = format!("{refusals:?}");
    assert!(
        text.contains("Error: no state directory configured (at init@fixtures/fixture-plugin.js:"),
        "{text}"
    );
}
