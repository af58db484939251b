//! `flowattr ipman …` end to end: the real binary writing a state file as
//! IPMan would, and refusing bad changes without touching the file.

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};

/// Runs `flowattr ipman ARGS --state STATE` (`args` split on whitespace).
fn flowattr(state: &Path, args: &str) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_flowattr"))
        .arg("ipman")
        .args(args.split_whitespace())
        .arg("--state")
        .arg(state)
        .output()
        .expect("flowattr runs")
}

/// Runs a command that must succeed; returns its stdout.
fn ok(state: &Path, args: &str) -> String {
    let out = flowattr(state, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a command that must fail; returns its stderr.
fn refused(state: &Path, args: &str) -> String {
    let out = flowattr(state, args);
    assert!(!out.status.success(), "{args} should fail");
    assert!(out.stdout.is_empty(), "{args}");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn assign_release_reassign_allocate_and_show() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("run/ipman/state.json");
    let out = ok(
        &state,
        "assign --ip fd00::5 --workload c-web-1 --app web --cluster web-prod --stack prod \
         --account 123 --region us-east-1 --label pod=web-1 --at-ns 100",
    );
    assert_eq!(out, "assigned fd00::5 to c-web-1 at 100\n");
    ok(&state, "release --ip fd00::5 --at-ns 200");
    ok(
        &state,
        "assign --ip fd00::5 --workload c-api-7 --app api --at-ns 200",
    );
    ok(&state, "share --address 192.0.2.10 --pool 40000-59999");
    ok(
        &state,
        "allocate --address 192.0.2.10 --ports 40000-40999 --workload c-web-1 --at-ns 100",
    );
    ok(
        &state,
        "free --address 192.0.2.10 --ports 40000-40999 --at-ns 200",
    );
    // Named again without attributes: the workload keeps the ones it has.
    ok(
        &state,
        "allocate --address 192.0.2.10 --ports 40000-40999 --workload c-api-7 --at-ns 300",
    );

    let shown = ok(&state, "show");
    assert_eq!(shown, std::fs::read_to_string(&state).unwrap());
    let shown: Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(
        shown,
        json!({
            "version": 1,
            "workloads": {
                "c-api-7": {"app": "api"},
                "c-web-1": {"app": "web", "cluster": "web-prod", "stack": "prod",
                            "account": "123", "region": "us-east-1", "labels": {"pod": "web-1"}}
            },
            "assignments": [
                {"ip": "fd00::5", "workload": "c-web-1", "since_ns": 100, "until_ns": 200},
                {"ip": "fd00::5", "workload": "c-api-7", "since_ns": 200, "until_ns": null}
            ],
            "shared_ipv4": [
                {"address": "192.0.2.10", "pool": [40000, 59999], "allocations": [
                    {"ports": [40000, 40999], "workload": "c-web-1", "since_ns": 100, "until_ns": 200},
                    {"ports": [40000, 40999], "workload": "c-api-7", "since_ns": 300, "until_ns": null}
                ]}
            ]
        })
    );

    // Ten minutes and 1 ns after the releases at 200, both released entries go.
    let at = 200 + 10 * 60 * 1_000_000_000u64 + 1;
    let out = ok(&state, &format!("prune --older-than 10m --at-ns {at}"));
    assert_eq!(out, "pruned 2 entries released before 201\n");
    let pruned: Value = serde_json::from_str(&ok(&state, "show")).unwrap();
    assert_eq!(pruned["assignments"].as_array().unwrap().len(), 1);
    assert_eq!(pruned["workloads"], json!({"c-api-7": {"app": "api"}}));
}

#[test]
fn a_refused_command_exits_non_zero_with_one_line_and_leaves_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    ok(&state, "assign --ip 10.1.0.9 --workload c-db-2 --at-ns 100");
    let before = std::fs::read(&state).unwrap();
    let mtime = std::fs::metadata(&state).unwrap().modified().unwrap();

    for (args, want) in [
        (
            "release --ip 10.1.0.10",
            "error: 10.1.0.10 is not assigned\n",
        ),
        (
            "assign --ip 10.1.0.9 --workload c-web-1 --at-ns 150",
            "error: 10.1.0.9 is already assigned to c-db-2 (since 100)\n",
        ),
        (
            "release --ip 10.1.0.9 --at-ns 50",
            "error: the plugin would refuse the result: assignments[0]: \
             since_ns 100 is not before until_ns 50\n",
        ),
        (
            "allocate --address 192.0.2.10 --ports 1-2 --workload c-db-2",
            "error: 192.0.2.10 is not a shared IPv4 address\n",
        ),
    ] {
        assert_eq!(refused(&state, args), want, "{args}");
        assert_eq!(std::fs::read(&state).unwrap(), before, "{args}");
        let now = std::fs::metadata(&state).unwrap().modified().unwrap();
        assert_eq!(now, mtime, "{args}");
    }

    // A file the plugin would refuse is reported, not overwritten.
    let bad = r#"{"version": 1, "hosts": []}"#;
    std::fs::write(&state, bad).unwrap();
    let err = refused(&state, "assign --ip fd00::1 --workload c-x");
    assert!(err.starts_with("error: IPMan state file "), "{err}");
    assert!(err.contains("unknown field `hosts`"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(std::fs::read_to_string(&state).unwrap(), bad);
}
