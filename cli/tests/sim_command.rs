//! `flowattr sim` and `flowattr ab` end to end: the real binary runs the
//! default scenario through the real collector core and the real bundled
//! components (installed in `plugins/` by `scripts/build`), writes the JSON
//! and HTML reports, and the HTML is rendered by headless Chromium (installed
//! by `scripts/bootstrap`) with its charts on screen.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn flowattr(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowattr"))
        .args(args)
        .current_dir(cwd)
        .env(
            "FLOWATTR_CACHE_DIR",
            workspace().join("target/flowattr-test-cache"),
        )
        .output()
        .expect("flowattr runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn sim_prints_the_comparison_and_writes_reports_that_chromium_renders() {
    let tmp = tempfile::tempdir().unwrap();
    let (json, html) = (tmp.path().join("ab.json"), tmp.path().join("ab.html"));
    let out = flowattr(
        &[
            "sim",
            "scenarios/default.toml",
            "--duration",
            "20m",
            "--json",
            json.to_str().unwrap(),
            "--html",
            html.to_str().unwrap(),
        ],
        &workspace(),
    );
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("misattributed (of judged)"), "{stdout}");
    assert!(stdout.contains("wrong gateway edges"), "{stdout}");

    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["heartbeat"]["misattributed"], 0, "{report}");
    assert!(
        report["legacy"]["misattributed"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert_eq!(report["flows"], report["records"], "every record compared");
    assert_eq!(report["seed"], 20261126);

    // Headless Chromium renders the page: both methods' lines inside the
    // timeline, right and wrong edge bars inside the edges chart.
    common::screen::check_ab_report(
        &html,
        tmp.path(),
        &[
            flowattr_ab::html::RIGHT_COLOUR,
            flowattr_ab::html::WRONG_COLOUR,
        ],
    );
}

#[test]
fn a_bad_scenario_is_refused_with_its_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let scenario = tmp.path().join("bad.toml");
    let text_in = std::fs::read_to_string(workspace().join("scenarios/default.toml"))
        .unwrap()
        .replace("\"search\", \"profile\"", "\"search\", \"nowhere\"");
    std::fs::write(&scenario, text_in).unwrap();
    let json = tmp.path().join("out.json");
    let out = flowattr(
        &[
            "sim",
            scenario.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
        &workspace(),
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("services.gateway: depends on unknown service \"nowhere\""),
        "{err}"
    );
    assert!(!json.exists(), "nothing written");
}

#[test]
fn ab_judges_a_records_file_by_recorded_ownership_and_known_dependencies() {
    let tmp = tempfile::tempdir().unwrap();
    let w = |id: &str, app: &str| serde_json::json!({"id": id, "app": app});
    let s = 1_000_000_000u64;
    let record = |start: u64, remote: &str, hb: serde_json::Value, legacy: serde_json::Value| {
        serde_json::json!({
            "start_ns": start, "local": w("gw-1", "gateway"), "remote": remote, "initiator": "local",
            "heartbeat": hb, "legacy": legacy,
        })
    };
    let lines = [
        record(
            100 * s,
            "10.0.0.7:80",
            serde_json::json!({"attributed": w("api-2", "api")}),
            serde_json::json!({"attributed": w("batch-9", "batch")}),
        ),
        record(
            110 * s,
            "10.0.0.7:80",
            serde_json::json!({"attributed": w("api-2", "api")}),
            serde_json::json!({"attributed": w("api-2", "api")}),
        ),
        record(
            120 * s,
            "10.0.0.8:80",
            serde_json::json!({"unattributed": "clock-skew"}),
            serde_json::json!({"unattributed": "not-found"}),
        ),
    ];
    let records = tmp.path().join("ab.jsonl");
    std::fs::write(
        &records,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let truth = tmp.path().join("owners.jsonl");
    std::fs::write(
        &truth,
        format!("{}\n", serde_json::json!({"address": "10.0.0.7", "from_ns": 50 * s, "to_ns": 500 * s, "workload": w("api-2", "api")})),
    )
    .unwrap();
    let deps = tmp.path().join("deps.toml");
    std::fs::write(&deps, "[services]\ngateway = [\"api\"]\n").unwrap();
    let json = tmp.path().join("report.json");
    let out = flowattr(
        &[
            "ab",
            "--records",
            records.to_str().unwrap(),
            "--truth",
            truth.to_str().unwrap(),
            "--deps",
            deps.to_str().unwrap(),
            "--focus",
            "gateway",
            "--json",
            json.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["flows"], 3);
    assert_eq!(r["judged"], 2);
    assert_eq!(r["heartbeat"]["misattributed"], 0);
    assert_eq!(r["legacy"]["misattributed"], 1);
    assert_eq!(
        r["legacy"]["focus_edges"]["wrong"], 1,
        "gateway -> batch is not a dependency"
    );
    assert_eq!(r["heartbeat"]["focus_edges"]["right"], 1);
    assert_eq!(r["heartbeat"]["unattributed_by_reason"]["clock-skew"], 1);

    // A malformed records file is refused with its line.
    std::fs::write(&records, format!("{}\n{{oops\n", lines[0])).unwrap();
    let out = flowattr(&["ab", "--records", records.to_str().unwrap()], tmp.path());
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("line 2"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn sim_finds_the_bundled_scenario_and_plugins_from_any_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let out = flowattr(&["sim", "--duration", "5m"], tmp.path());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("sonar-legacy-shadow"), "{stdout}");

    let out = flowattr(
        &[
            "sim",
            "--duration",
            "5m",
            "--plugins",
            tmp.path().to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no sonar-legacy.wasm in") && stderr.contains("pass --plugins DIR"),
        "{stderr}"
    );
}
