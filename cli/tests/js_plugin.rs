//! The JavaScript plugin example through the real `flowattr` binary:
//! `plugin install`, `plugin check` and `plugin run` on the component
//! `scripts/build` made with componentize-js (`target/js/`); a JavaScript
//! exception's own message on the command's log; and the JS helper's unit
//! tests (`node --test sdk/js/test/`), so the test command runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flowattr_model::Answers;
use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn js_component(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let path = target.join(format!("js/{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/bootstrap (it installs componentize-js) and scripts/build",
        path.display()
    );
    path
}

fn flowattr(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowattr"))
        .args(args)
        .env("FLOWATTR_CACHE_DIR", cache)
        .env("NO_COLOR", "1")
        .output()
        .expect("flowattr runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn install(wasm: &Path, template: &Path, dir: &Path, extra: &[&str], cache: &Path) {
    let mut args = vec![
        "plugin",
        "install",
        wasm.to_str().unwrap(),
        "--manifest",
        template.to_str().unwrap(),
        "--dir",
        dir.to_str().unwrap(),
    ];
    args.extend(extra);
    let out = flowattr(&args, cache);
    assert!(out.status.success(), "install: {}", text(&out.stderr));
}

#[test]
fn the_example_installs_checks_and_answers_its_fixture() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, cache) = (tmp.path().join("plugins"), tmp.path().join("cache"));
    let example = workspace().join("examples/js-identity");
    install(
        &js_component("js-identity"),
        &example.join("js-identity.toml"),
        &dir,
        &["--grant", "/gce=state/gce"],
        &cache,
    );
    std::fs::copy(
        example.join("fixtures/state/instance.json"),
        dir.join("state/gce/instance.json"),
    )
    .unwrap();

    let out = flowattr(&["plugin", "check", dir.to_str().unwrap()], &cache);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let line = stdout
        .lines()
        .find(|l| l.starts_with("js-identity "))
        .unwrap_or_else(|| panic!("js-identity missing:\n{stdout}"));
    assert!(
        line.contains("loaded") && line.contains("identity"),
        "{line}"
    );
    assert!(stdout.contains("1 loaded, 0 refused"), "{stdout}");

    let input = example.join("fixtures/input.json");
    let out = flowattr(
        &[
            "plugin",
            "run",
            "js-identity",
            "--dir",
            dir.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ],
        &cache,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("one JSON object per line");
            match &v["answer"] {
                a if a["workload"].is_object() => a["workload"]["id"].as_str().unwrap().to_owned(),
                a => a["unattributed"].as_str().unwrap().to_owned(),
            }
        })
        .collect();
    let expected: Answers = serde_json::from_str(
        &std::fs::read_to_string(example.join("fixtures/expected.json")).unwrap(),
    )
    .unwrap();
    let want: Vec<String> = (0..expected.answers.len())
        .map(|i| match expected.resolve(i) {
            Ok((w, _)) => w.id.clone(),
            Err(reason) => reason.as_str().to_owned(),
        })
        .collect();
    assert_eq!(got, want);
    assert!(
        text(&out.stderr).contains("ns per record"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_javascript_exception_is_reported_in_its_own_words() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, cache) = (tmp.path().join("plugins"), tmp.path().join("cache"));
    let template = tmp.path().join("fixture.toml");
    std::fs::write(
        &template,
        "kind = \"identity\"\nwit = \"0.3.0\"\n[limits]\nmemory_mib = 64\ncall_timeout_ms = 1000\n",
    )
    .unwrap();
    install(&js_component("js-fixture"), &template, &dir, &[], &cache);
    let input = tmp.path().join("input.json");
    std::fs::write(
        &input,
        r#"{"now_ns": 2000, "queries": [{"local": "10.0.0.1:666", "time_ns": 1000}]}"#,
    )
    .unwrap();
    let out = flowattr(
        &[
            "plugin",
            "run",
            "fixture",
            "--dir",
            dir.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ],
        &cache,
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "identify threw TypeError: can't access property \"name\", query.owner is undefined"
        ) && stderr.contains("brokenLookup@fixtures/fixture-plugin.js:"),
        "{stderr}"
    );
}

#[test]
fn the_javascript_helpers_unit_tests_pass_under_node() {
    let out = Command::new("node")
        .args(["--test", "sdk/js/test/"])
        .current_dir(workspace())
        .output()
        .expect("node is installed (the JavaScript example needs it)");
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("# fail 0"),
        "{}",
        text(&out.stdout)
    );
}
