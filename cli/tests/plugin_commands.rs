//! `flowattr plugin install|check|run` end to end: the real binary on the
//! real bundled components (built by `scripts/build`), each plugin's fixture
//! answered through Wasm exactly as its `expected.json` says.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use flowattr_model::Answers;
use serde_json::Value;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn component(krate: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    let path = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", krate.replace('-', "_")));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build first",
        path.display()
    );
    path
}

fn flowattr(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowattr"))
        .args(args)
        .env("FLOWATTR_CACHE_DIR", cache)
        .output()
        .expect("flowattr runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A drop-in directory with the three bundled plugins, grants pointed at
/// `state/…` inside it and seeded with the example data.
fn bundled(tmp: &Path) -> PathBuf {
    let dir = tmp.join("plugins");
    let cache = tmp.join("cache");
    let ws = workspace();
    for (krate, grant) in [
        ("ec2-disk", Some("/ec2=state/ec2")),
        ("ipman", Some("/ipman=state/ipman")),
        ("sonar-legacy", None),
    ] {
        let template = ws.join(format!("plugins/{krate}/{krate}.toml"));
        let wasm = component(krate);
        let mut args = vec![
            "plugin",
            "install",
            wasm.to_str().unwrap(),
            "--manifest",
            template.to_str().unwrap(),
            "--dir",
            dir.to_str().unwrap(),
        ];
        if let Some(g) = grant {
            args.extend(["--grant", g]);
        }
        let out = flowattr(&args, &cache);
        assert!(
            out.status.success(),
            "install {krate}: {}",
            text(&out.stderr)
        );
    }
    std::fs::copy(
        ws.join("plugins/ipman/examples/state.json"),
        dir.join("state/ipman/state.json"),
    )
    .unwrap();
    std::fs::copy(
        ws.join("plugins/ec2-disk/examples/instance-identity.json"),
        dir.join("state/ec2/instance-identity.json"),
    )
    .unwrap();
    dir
}

#[test]
fn check_lists_the_three_bundled_plugins_as_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundled(tmp.path());
    let out = flowattr(
        &["plugin", "check", dir.to_str().unwrap()],
        &tmp.path().join("cache"),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for name in ["ec2-disk", "ipman", "sonar-legacy"] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{stdout}"));
        assert!(line.contains("loaded"), "{line}");
    }
    assert!(stdout.contains("3 loaded, 0 refused"), "{stdout}");
}

#[test]
fn check_shows_a_missing_identity_source_as_a_state_not_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundled(tmp.path());
    std::fs::remove_file(dir.join("state/ec2/instance-identity.json")).unwrap();
    let out = flowattr(
        &["plugin", "check", dir.to_str().unwrap()],
        &tmp.path().join("cache"),
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("3 loaded, 0 refused"), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let row = lines
        .iter()
        .position(|l| l.starts_with("ec2-disk"))
        .expect("ec2-disk row");
    assert!(
        lines[row + 1]
            .starts_with("  └ state: cannot read identity document /ec2/instance-identity.json"),
        "{stdout}"
    );
    // The other identity plugin found its source and says so.
    assert!(
        stdout.contains("  └ state: Loaded IPMan state file /ipman/state.json"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("cannot read").count(), 1, "{stdout}");
    assert!(!stderr.contains("ERROR"), "{stderr}");
}

#[test]
fn check_refuses_a_tampered_component_and_exits_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundled(tmp.path());
    let mut wasm = std::fs::read(dir.join("ipman.wasm")).unwrap();
    wasm.push(0);
    std::fs::write(dir.join("ipman.wasm"), wasm).unwrap();
    let out = flowattr(
        &["plugin", "check", dir.to_str().unwrap()],
        &tmp.path().join("cache"),
    );
    let stdout = text(&out.stdout);
    assert!(!out.status.success());
    assert!(
        stdout.contains("REFUSED") && stdout.contains("ipman.toml: field `sha256`"),
        "{stdout}"
    );
    assert!(stdout.contains("2 loaded, 1 refused"), "{stdout}");
}

/// What `plugin run` printed for each query: a workload id or a reason.
fn outcomes(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("one JSON object per line");
            match &v["answer"] {
                a if a["workload"].is_object() => a["workload"]["id"].as_str().unwrap().to_owned(),
                a => a["unattributed"].as_str().unwrap().to_owned(),
            }
        })
        .collect()
}

fn expected(plugin: &str) -> Vec<String> {
    let text = std::fs::read_to_string(
        workspace().join(format!("plugins/{plugin}/fixtures/expected.json")),
    )
    .unwrap();
    let answers: Answers = serde_json::from_str(&text).unwrap();
    (0..answers.answers.len())
        .map(|i| match answers.resolve(i) {
            Ok((w, _)) => w.id.clone(),
            Err(reason) => reason.as_str().to_owned(),
        })
        .collect()
}

#[test]
fn run_answers_each_fixture_through_the_real_component_as_expected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundled(tmp.path());
    for plugin in ["ipman", "ec2-disk", "sonar-legacy"] {
        let input = workspace().join(format!("plugins/{plugin}/fixtures/input.json"));
        let out = flowattr(
            &[
                "plugin",
                "run",
                plugin,
                "--dir",
                dir.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
            ],
            &tmp.path().join("cache"),
        );
        assert!(out.status.success(), "{plugin}: {}", text(&out.stderr));
        assert_eq!(outcomes(&text(&out.stdout)), expected(plugin), "{plugin}");
        let summary = text(&out.stderr);
        assert!(
            summary.contains("ns per record") && summary.contains("MiB"),
            "{summary}"
        );
    }
}

#[test]
fn run_names_an_unknown_plugin() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = bundled(tmp.path());
    let input = workspace().join("plugins/ipman/fixtures/input.json");
    let out = flowattr(
        &[
            "plugin",
            "run",
            "nope",
            "--dir",
            dir.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ],
        &tmp.path().join("cache"),
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no plugin nope"),
        "{}",
        text(&out.stderr)
    );
}
