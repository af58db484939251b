//! `flowattr plugin new`: every kind's generated crate, as generated, passes
//! its own native tests, builds for wasm32-wasip2, installs and passes
//! `flowattr plugin check`; the identity one also answers through the real
//! runtime. The crates are made inside the workspace's `target/` (so the SDK
//! is found by path and the checkout's Cargo.lock applies) and built with the
//! workspace's target directory, reusing what it already built.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn flowattr(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowattr"))
        .args(args)
        .env("FLOWATTR_CACHE_DIR", cache)
        .output()
        .expect("flowattr runs")
}

fn cargo(krate: &Path, args: &[&str]) -> Output {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(args)
        .current_dir(krate)
        .env("CARGO_TARGET_DIR", target_dir())
        .output()
        .expect("cargo runs")
}

fn ok(what: &str, out: &Output) -> String {
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "{what} failed:\n{stdout}\n{}",
        text(&out.stderr)
    );
    stdout
}

/// A directory under the workspace's target directory, removed at the end.
fn scratch() -> tempfile::TempDir {
    let parent = workspace().join("target/plugin-new-tests");
    std::fs::create_dir_all(&parent).unwrap();
    tempfile::tempdir_in(parent).unwrap()
}

#[test]
fn every_kind_builds_tests_installs_and_passes_check_as_generated() {
    let tmp = scratch();
    let cache = tmp.path().join("cache");
    let dropin = tmp.path().join("dropin");
    let kinds = ["identity", "resolver", "policy", "sink"];
    for kind in kinds {
        // Names no crate of the workspace has: the wasm lands in the shared
        // target directory.
        let name = format!("scaffolded-{kind}");
        let dir = tmp.path().to_str().unwrap();
        ok(
            "plugin new",
            &flowattr(
                &["plugin", "new", &name, "--kind", kind, "--dir", dir],
                &cache,
            ),
        );
        let krate = tmp.path().join(&name);
        for file in ["Cargo.toml", "src/lib.rs", "README.md", "Cargo.lock"] {
            assert!(krate.join(file).is_file(), "{kind}: {file} missing");
        }
        let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains("flowattr-sdk = { path = \"../../../../sdk\" }"),
            "the SDK by path inside the checkout:\n{manifest}"
        );

        let tests = ok(
            &format!("{kind}: cargo test"),
            &cargo(&krate, &["test", "--release", "--lib"]),
        );
        assert!(
            tests.contains("test result: ok.") && !tests.contains(" 0 passed"),
            "{kind}: its native tests ran:\n{tests}"
        );
        ok(
            &format!("{kind}: cargo build --target wasm32-wasip2"),
            &cargo(&krate, &["build", "--release", "--target", "wasm32-wasip2"]),
        );
        let wasm = target_dir().join(format!(
            "wasm32-wasip2/release/{}.wasm",
            name.replace('-', "_")
        ));
        let template = krate.join(format!("{name}.toml"));
        ok(
            &format!("{kind}: plugin install"),
            &flowattr(
                &[
                    "plugin",
                    "install",
                    wasm.to_str().unwrap(),
                    "--manifest",
                    template.to_str().unwrap(),
                    "--dir",
                    dropin.to_str().unwrap(),
                ],
                &cache,
            ),
        );
    }

    let check = ok(
        "plugin check",
        &flowattr(&["plugin", "check", dropin.to_str().unwrap()], &cache),
    );
    for kind in kinds {
        let line = check
            .lines()
            .find(|l| l.starts_with(&format!("scaffolded-{kind} ")))
            .unwrap_or_else(|| panic!("scaffolded-{kind} missing:\n{check}"));
        assert!(line.contains("loaded") && line.contains(kind), "{line}");
    }
    assert!(check.contains("4 loaded, 0 refused"), "{check}");

    // The identity template answers from its manifest's example config.
    let input = tmp.path().join("input.json");
    std::fs::write(
        &input,
        r#"{"now_ns": 2000, "queries": [
            {"local": "10.1.0.7:443", "time_ns": 1000},
            {"local": "10.1.0.8:443", "time_ns": 1000}]}"#,
    )
    .unwrap();
    let run = ok(
        "plugin run",
        &flowattr(
            &[
                "plugin",
                "run",
                "scaffolded-identity",
                "--dir",
                dropin.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
            ],
            &cache,
        ),
    );
    let lines: Vec<&str> = run.lines().collect();
    assert_eq!(lines.len(), 2, "{run}");
    assert!(
        lines[0].contains(r#""id":"scaffolded-identity-example""#),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(r#""unattributed":"not-found""#),
        "{}",
        lines[1]
    );
}

#[test]
fn a_bad_name_kind_or_existing_directory_is_refused_clearly() {
    let tmp = scratch();
    let cache = tmp.path().join("cache");
    let dir = tmp.path().to_str().unwrap();
    let out = flowattr(
        &[
            "plugin",
            "new",
            "My_Plugin",
            "--kind",
            "identity",
            "--dir",
            dir,
        ],
        &cache,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("\"My_Plugin\" is not a plugin name"),
        "{}",
        text(&out.stderr)
    );

    let out = flowattr(
        &["plugin", "new", "p", "--kind", "exporter", "--dir", dir],
        &cache,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("possible values: identity, resolver, policy, sink"),
        "{}",
        text(&out.stderr)
    );

    std::fs::create_dir(tmp.path().join("taken")).unwrap();
    std::fs::write(tmp.path().join("taken/keep.txt"), "mine").unwrap();
    let out = flowattr(
        &["plugin", "new", "taken", "--kind", "sink", "--dir", dir],
        &cache,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("taken already exists"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("taken/keep.txt")).unwrap(),
        "mine",
        "left alone"
    );
    assert!(!tmp.path().join("taken/Cargo.toml").exists());
}
