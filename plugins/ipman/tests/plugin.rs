//! The plugin through the SDK harness, against real state files in a
//! temporary directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use flowattr_sdk::host::Level;
use flowattr_sdk::testing::Harness;
use flowattr_sdk::{AnswerScope, Answers, LocalQuery, Protocol, TimeRange, UnattributedReason};
use ipman::Ipman;
use serde_json::{Value, json};

const NOW: u64 = 10_000;

fn state() -> Value {
    json!({
        "version": 1,
        "workloads": {
            "c-web-1": {"app": "web", "cluster": "web-prod", "stack": "prod", "account": "123",
                        "region": "us-east-1"},
            "c-api-7": {"app": "api", "cluster": "api-prod", "labels": {"pod": "api-7"}}
        },
        "assignments": [
            {"ip": "fd00::5", "workload": "c-web-1", "since_ns": 100, "until_ns": 200},
            {"ip": "fd00::5", "workload": "c-api-7", "since_ns": 300, "until_ns": null}
        ],
        "shared_ipv4": [
            {"address": "192.0.2.10", "pool": [40000, 59999], "allocations": [
                {"ports": [40000, 40999], "workload": "c-web-1", "since_ns": 100, "until_ns": null}
            ]}
        ]
    })
}

/// Replaces `path` the way IPMan must (write aside, rename in), with a
/// distinct modification time so the change is visible to a stat.
fn replace(path: &Path, contents: &str, mtime_secs: u64) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).unwrap();
    let file = std::fs::File::options().write(true).open(&tmp).unwrap();
    file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime_secs))
        .unwrap();
    drop(file);
    std::fs::rename(&tmp, path).unwrap();
}

struct Setup {
    _dir: tempfile::TempDir,
    path: PathBuf,
    harness: Harness<Ipman>,
}

/// A plugin over `contents` (no file when `None`), with the host clock at `NOW`.
fn setup(contents: Option<&Value>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    if let Some(contents) = contents {
        replace(&path, &contents.to_string(), 1_000);
    }
    let config = json!({ "state": path }).to_string();
    let harness = Harness::<Ipman>::new(&config).unwrap();
    harness.set_now_ns(NOW);
    Setup {
        _dir: dir,
        path,
        harness,
    }
}

fn query(endpoint: &str, time_ns: u64) -> LocalQuery {
    LocalQuery {
        local: endpoint.parse::<SocketAddr>().unwrap(),
        protocol: Protocol::Tcp,
        time_ns,
        cgroup_id: 0,
        netns_id: 0,
        pid: 0,
    }
}

fn id(answers: &Answers, i: usize) -> Result<(String, TimeRange), UnattributedReason> {
    answers.resolve(i).map(|(w, valid)| (w.id.clone(), valid))
}

fn errors(h: &Harness<Ipman>) -> Vec<String> {
    h.take_logs()
        .into_iter()
        .filter(|(l, _)| *l == Level::Error)
        .map(|(_, m)| m)
        .collect()
}

#[test]
fn answers_are_valid_for_the_assignment_cut_at_the_last_check() {
    let mut s = setup(Some(&state()));
    let answers = s.harness.identify(&[
        query("[fd00::5]:443", 150),
        query("[fd00::5]:443", 5_000),
        query("192.0.2.10:40123", 5_000),
    ]);
    assert_eq!(
        id(&answers, 0),
        Ok(("c-web-1".into(), TimeRange::new(100, 200)))
    );
    assert_eq!(
        id(&answers, 1),
        Ok(("c-api-7".into(), TimeRange::new(300, NOW + 1)))
    );
    assert_eq!(
        id(&answers, 2),
        Ok(("c-web-1".into(), TimeRange::new(100, NOW + 1)))
    );
    // The container owns fd00::5, but only holds its ports of the shared
    // address: that answer must never read as the address's owner.
    assert_eq!(answers.scope(0), Some(AnswerScope::Address));
    assert_eq!(answers.scope(1), Some(AnswerScope::Address));
    assert_eq!(answers.scope(2), Some(AnswerScope::Port));
    assert_eq!(answers.workloads.len(), 2);
    let api = &answers.workloads[answers
        .workloads
        .iter()
        .position(|w| w.id == "c-api-7")
        .unwrap()];
    assert_eq!(api.labels.get("pod").map(String::as_str), Some("api-7"));
}

#[test]
fn a_reused_address_gives_the_old_owner_then_a_gap_then_the_new_owner() {
    let mut s = setup(Some(&state()));
    let answers = s.harness.identify(&[
        query("[fd00::5]:443", 199),
        query("[fd00::5]:443", 250),
        query("[fd00::5]:443", 300),
    ]);
    assert_eq!(id(&answers, 0).unwrap().0, "c-web-1");
    assert_eq!(id(&answers, 1), Err(UnattributedReason::Gap));
    assert_eq!(id(&answers, 2).unwrap().0, "c-api-7");
}

#[test]
fn shared_ipv4_ports_gap_inside_the_pool_and_not_found_port_scoped_outside() {
    let mut s = setup(Some(&state()));
    let answers = s.harness.identify(&[
        query("192.0.2.10:41000", 5_000),
        query("192.0.2.10:40000", 50),
        query("192.0.2.10:22", 5_000),
        query("192.0.2.99:40000", 5_000),
        query("[fd00::6]:443", 5_000),
    ]);
    assert_eq!(id(&answers, 0), Err(UnattributedReason::Gap));
    assert_eq!(id(&answers, 1), Err(UnattributedReason::Gap));
    assert_eq!(id(&answers, 2), Err(UnattributedReason::NotFound));
    // The host's own port on the shared address: the next plugin's answer
    // must hold for that port only.
    assert!(answers.shared_not_found(2));
    assert_eq!(id(&answers, 3), Err(UnattributedReason::NotFound));
    assert_eq!(id(&answers, 4), Err(UnattributedReason::NotFound));
    assert!(!answers.shared_not_found(3) && !answers.shared_not_found(4));
}

#[test]
fn a_query_newer_than_the_host_clock_is_clock_skew() {
    let mut s = setup(Some(&state()));
    let answers = s
        .harness
        .identify(&[query("[fd00::5]:443", NOW + 1), query("[fd00::5]:443", NOW)]);
    assert_eq!(id(&answers, 0), Err(UnattributedReason::ClockSkew));
    assert_eq!(
        id(&answers, 1),
        Ok(("c-api-7".into(), TimeRange::new(300, NOW + 1)))
    );
}

#[test]
fn a_new_state_is_read_only_for_queries_past_the_last_check() {
    let mut s = setup(Some(&state()));
    assert!(id(&s.harness.identify(&[query("[fd00::5]:443", NOW)]), 0).is_ok());

    // IPMan releases fd00::5 at NOW + 500 (after the plugin's last check at NOW,
    // so no earlier answer contradicts it).
    let mut next = state();
    next["assignments"][1]["until_ns"] = json!(NOW + 500);
    replace(&s.path, &next.to_string(), 2_000);

    // Up to the last check the old state was verified current: no re-read.
    s.harness.set_now_ns(NOW + 1_000);
    let answers = s.harness.identify(&[query("[fd00::5]:443", NOW)]);
    assert_eq!(
        id(&answers, 0),
        Ok(("c-api-7".into(), TimeRange::new(300, NOW + 1)))
    );

    // A newer query reads the new state.
    let answers = s.harness.identify(&[
        query("[fd00::5]:443", NOW + 1),
        query("[fd00::5]:443", NOW + 500),
    ]);
    assert_eq!(
        id(&answers, 0),
        Ok(("c-api-7".into(), TimeRange::new(300, NOW + 500)))
    );
    assert_eq!(id(&answers, 1), Err(UnattributedReason::Gap));
}

#[test]
fn an_inconsistent_state_is_refused_whole_and_the_old_one_is_not_kept() {
    let mut s = setup(Some(&state()));
    assert!(errors(&s.harness).is_empty());
    let mut bad = state();
    bad["assignments"][0]["until_ns"] = json!(301);
    replace(&s.path, &bad.to_string(), 2_000);

    for (i, now) in [NOW + 1, NOW + 2].into_iter().enumerate() {
        s.harness.set_now_ns(now);
        // Even entries the bad file does not touch are not answered.
        let answers = s
            .harness
            .identify(&[query("[fd00::5]:443", now), query("192.0.2.10:40000", now)]);
        assert_eq!(id(&answers, 0), Err(UnattributedReason::SourceUnavailable));
        assert_eq!(id(&answers, 1), Err(UnattributedReason::SourceUnavailable));
        let errors = errors(&s.harness);
        assert_eq!(errors.len(), usize::from(i == 0), "batch {i}: {errors:?}");
        if i == 0 {
            assert!(
                errors[0].contains("assignments[0] and assignments[1] overlap in time for fd00::5"),
                "{errors:?}"
            );
        }
    }

    // Fixed: answered again.
    replace(&s.path, &state().to_string(), 3_000);
    s.harness.set_now_ns(NOW + 3);
    let answers = s.harness.identify(&[query("[fd00::5]:443", NOW + 3)]);
    assert_eq!(id(&answers, 0).unwrap().0, "c-api-7");
}

#[test]
fn an_unknown_version_is_refused() {
    let mut s = setup(Some(&json!({"version": 2, "hosts": []})));
    let errors = errors(&s.harness);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("unsupported version 2"), "{errors:?}");
    let answers = s.harness.identify(&[query("[fd00::5]:443", NOW)]);
    assert_eq!(id(&answers, 0), Err(UnattributedReason::SourceUnavailable));
}

#[test]
fn a_missing_state_is_unavailable_until_it_appears() {
    let mut s = setup(None);
    let errors_at_init = errors(&s.harness);
    assert_eq!(errors_at_init.len(), 1, "{errors_at_init:?}");
    assert!(
        errors_at_init[0].contains("cannot read IPMan state file"),
        "{errors_at_init:?}"
    );
    let answers = s.harness.identify(&[query("[fd00::5]:443", NOW)]);
    assert_eq!(id(&answers, 0), Err(UnattributedReason::SourceUnavailable));
    assert!(
        errors(&s.harness).is_empty(),
        "the same failure is logged once"
    );

    replace(&s.path, &state().to_string(), 2_000);
    s.harness.set_now_ns(NOW + 1);
    let answers = s.harness.identify(&[query("[fd00::5]:443", NOW + 1)]);
    assert_eq!(
        id(&answers, 0),
        Ok(("c-api-7".into(), TimeRange::new(300, NOW + 2)))
    );
}

#[test]
fn a_full_batch_from_many_containers_is_answered_in_order() {
    let mut workloads = serde_json::Map::new();
    let mut assignments = Vec::new();
    let mut allocations = Vec::new();
    for c in 0..256u32 {
        workloads.insert(format!("c-{c}"), json!({"app": format!("app-{}", c % 7)}));
        assignments.push(
            json!({"ip": format!("fd00::{c:x}"), "workload": format!("c-{c}"),
                                "since_ns": 100, "until_ns": null}),
        );
        let first = 40000 + c * 64;
        allocations.push(
            json!({"ports": [first, first + 63], "workload": format!("c-{c}"),
                                "since_ns": 100, "until_ns": null}),
        );
    }
    let big = json!({"version": 1, "workloads": workloads, "assignments": assignments,
                     "shared_ipv4": [{"address": "192.0.2.10", "pool": [40000, 59999],
                                      "allocations": allocations}]});
    let mut s = setup(Some(&big));
    let queries: Vec<LocalQuery> = (0..1024u32)
        .map(|i| {
            let c = (i * 37) % 256;
            if i % 2 == 0 {
                query(&format!("[fd00::{c:x}]:443"), 5_000)
            } else {
                query(&format!("192.0.2.10:{}", 40000 + c * 64 + i % 64), 5_000)
            }
        })
        .collect();
    let answers = s.harness.identify(&queries);
    for i in 0..1024u32 {
        let c = (i * 37) % 256;
        assert_eq!(
            id(&answers, i as usize),
            Ok((format!("c-{c}"), TimeRange::new(100, NOW + 1)))
        );
        let want = if i % 2 == 0 {
            AnswerScope::Address
        } else {
            AnswerScope::Port
        };
        assert_eq!(answers.scope(i as usize), Some(want), "query {i}");
    }
    assert_eq!(answers.workloads.len(), 256);
}

#[test]
fn bad_configs_are_refused() {
    for (config, want) in [
        (r#"{"stat": "/ipman/state.json"}"#, "unknown field `stat`"),
        (r#"{"state": ["/ipman/state.json"]}"#, "invalid type"),
        (r#"{"state": ""}"#, "path is empty"),
    ] {
        let err = Harness::<Ipman>::new(config).err().expect(config);
        assert!(err.contains(want), "{config}: {err}");
    }
}

#[test]
fn the_default_path_is_the_granted_ipman_directory() {
    let h = Harness::<Ipman>::new("{}").unwrap();
    let errors = errors(&h);
    assert!(
        errors.iter().any(|m| m.contains("/ipman/state.json")),
        "{errors:?}"
    );
}

#[test]
fn the_cli_fixture_gives_the_expected_answers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| -> Value {
        serde_json::from_slice(&std::fs::read(root.join(p)).unwrap()).unwrap()
    };
    let input = read("fixtures/input.json");
    let expected: Answers = serde_json::from_value(read("fixtures/expected.json")).unwrap();
    let queries: Vec<LocalQuery> = serde_json::from_value(input["queries"].clone()).unwrap();
    let config = json!({ "state": root.join("examples/state.json") }).to_string();
    let mut h = Harness::<Ipman>::new(&config).unwrap();
    assert!(errors(&h).is_empty());
    h.set_now_ns(input["now_ns"].as_u64().unwrap());
    assert_eq!(h.identify(&queries), expected);
}

#[test]
fn past_where_ipman_vouches_for_its_record_nothing_is_answered() {
    // IPMan's record is complete before 350: c-api-7's assignment from 300
    // is known, but whatever happened at or after 350 may not be yet.
    let mut lagging = state();
    lagging["current_until_ns"] = json!(350);
    let mut s = setup(Some(&lagging));
    let answers = s.harness.identify(&[
        query("[fd00::5]:443", 320),
        query("[fd00::5]:443", 350),
        query("[fd00::5]:443", 5_000),
    ]);
    assert_eq!(
        id(&answers, 0),
        Ok(("c-api-7".into(), TimeRange::new(300, 350))),
        "valid only up to where the record is complete"
    );
    assert_eq!(id(&answers, 1), Err(UnattributedReason::SourceUnavailable));
    assert_eq!(id(&answers, 2), Err(UnattributedReason::SourceUnavailable));
}
