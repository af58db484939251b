//! The plugin through the SDK harness, against real files in a temporary
//! directory: attribution, re-reading a replaced document, and refusing a
//! missing or malformed one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use ec2_disk::Ec2Disk;
use flowattr_sdk::host::Level;
use flowattr_sdk::testing::Harness;
use flowattr_sdk::{Answers, LocalQuery, Protocol, TimeRange, UnattributedReason};

/// 2024-05-01T12:00:00Z, the `pendingTime` of the documents below.
const LAUNCH: u64 = 1_714_564_800_000_000_000;
const SEC: u64 = 1_000_000_000;

fn document(instance: &str, private_ip: &str) -> String {
    format!(
        r#"{{"instanceId": "{instance}", "accountId": "123456789012", "region": "us-east-1",
            "privateIp": "{private_ip}", "ipv6Addresses": ["2600:1f18::5"],
            "pendingTime": "2024-05-01T12:00:00Z", "app": "web", "architecture": "x86_64"}}"#
    )
}

/// Replaces `path` the way a careful writer does (write aside, rename in),
/// with a distinct modification time so the change is visible to a stat.
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
    harness: Harness<Ec2Disk>,
}

/// A plugin over `contents` (no file when `None`), started at host time `now`.
fn setup(contents: Option<&str>, now: u64) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("instance-identity.json");
    if let Some(contents) = contents {
        replace(&path, contents, 1_000);
    }
    let config = serde_json::json!({ "document": path }).to_string();
    let harness = Harness::<Ec2Disk>::new(&config).unwrap();
    harness.set_now_ns(now);
    Setup {
        _dir: dir,
        path,
        harness,
    }
}

fn query(ip: &str, time_ns: u64) -> LocalQuery {
    LocalQuery {
        local: SocketAddr::new(ip.parse().unwrap(), 443),
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

fn errors(h: &Harness<Ec2Disk>) -> Vec<String> {
    h.take_logs()
        .into_iter()
        .filter(|(l, _)| *l == Level::Error)
        .map(|(_, m)| m)
        .collect()
}

#[test]
fn attributes_the_instances_v4_and_v6_addresses() {
    let now = LAUNCH + 100 * SEC;
    let mut s = setup(Some(&document("i-0abc", "10.0.0.5")), now);
    let answers = s.harness.identify(&[
        query("10.0.0.5", LAUNCH + SEC),
        query("2600:1f18::5", LAUNCH + 2 * SEC),
        query("::ffff:10.0.0.5", now),
    ]);
    let valid = TimeRange::new(LAUNCH, now + 1);
    for i in 0..3 {
        assert_eq!(id(&answers, i), Ok(("i-0abc".into(), valid)), "answer {i}");
    }
    assert_eq!(answers.workloads.len(), 1);
    let w = &answers.workloads[0];
    assert_eq!(
        (w.app.as_deref(), w.account.as_deref()),
        (Some("web"), Some("123456789012"))
    );
}

#[test]
fn other_addresses_are_not_found_so_the_next_plugin_answers() {
    let mut s = setup(Some(&document("i-0abc", "10.0.0.5")), LAUNCH + 100 * SEC);
    let answers = s
        .harness
        .identify(&[query("10.0.0.6", LAUNCH + SEC), query("fd00::1", LAUNCH)]);
    assert_eq!(id(&answers, 0), Err(UnattributedReason::NotFound));
    assert_eq!(id(&answers, 1), Err(UnattributedReason::NotFound));
}

#[test]
fn before_launch_is_a_gap() {
    let mut s = setup(Some(&document("i-0abc", "10.0.0.5")), LAUNCH + 100 * SEC);
    let answers = s
        .harness
        .identify(&[query("10.0.0.5", LAUNCH - 1), query("10.0.0.5", LAUNCH)]);
    assert_eq!(id(&answers, 0), Err(UnattributedReason::Gap));
    assert!(id(&answers, 1).is_ok());
}

#[test]
fn a_query_newer_than_the_host_clock_is_clock_skew() {
    let now = LAUNCH + 100 * SEC;
    let mut s = setup(Some(&document("i-0abc", "10.0.0.5")), now);
    let answers = s.harness.identify(&[
        query("10.0.0.5", now + 1),
        query("10.0.0.6", now + 1),
        query("10.0.0.5", now),
    ]);
    assert_eq!(id(&answers, 0), Err(UnattributedReason::ClockSkew));
    assert_eq!(id(&answers, 1), Err(UnattributedReason::ClockSkew));
    assert_eq!(
        id(&answers, 2),
        Ok(("i-0abc".into(), TimeRange::new(LAUNCH, now + 1)))
    );
}

#[test]
fn a_replaced_document_is_picked_up_once_queries_pass_the_last_check() {
    let t0 = LAUNCH + 100 * SEC;
    let mut s = setup(Some(&document("i-0abc", "10.0.0.5")), t0);
    let answers = s.harness.identify(&[query("10.0.0.5", t0)]);
    assert_eq!(id(&answers, 0).unwrap().0, "i-0abc");
    replace(&s.path, &document("i-0def", "10.0.0.5"), 2_000);

    // Up to the last check the old document was verified current: no re-read.
    let t1 = t0 + 10 * SEC;
    s.harness.set_now_ns(t1);
    let answers = s.harness.identify(&[query("10.0.0.5", t0)]);
    assert_eq!(
        id(&answers, 0),
        Ok(("i-0abc".into(), TimeRange::new(LAUNCH, t0 + 1)))
    );

    // A newer query makes the plugin look again and see the new instance.
    let answers = s
        .harness
        .identify(&[query("10.0.0.5", t0 + 1), query("10.0.0.5", t1)]);
    let valid = TimeRange::new(LAUNCH, t1 + 1);
    assert_eq!(id(&answers, 0), Ok(("i-0def".into(), valid)));
    assert_eq!(id(&answers, 1), Ok(("i-0def".into(), valid)));
    assert_eq!(answers.workloads.len(), 1);
}

#[test]
fn a_deleted_document_is_unavailable_and_the_old_identity_is_not_used() {
    let t0 = LAUNCH + 100 * SEC;
    let mut s = setup(Some(&document("i-0abc", "10.0.0.5")), t0);
    assert!(errors(&s.harness).is_empty());
    std::fs::remove_file(&s.path).unwrap();

    for (i, t) in [t0 + SEC, t0 + 2 * SEC].into_iter().enumerate() {
        s.harness.set_now_ns(t);
        let answers = s
            .harness
            .identify(&[query("10.0.0.5", t), query("10.0.0.6", t)]);
        assert_eq!(id(&answers, 0), Err(UnattributedReason::SourceUnavailable));
        assert_eq!(id(&answers, 1), Err(UnattributedReason::SourceUnavailable));
        assert!(answers.workloads.is_empty());
        // One error for the failure, not one per batch.
        let errors = errors(&s.harness);
        assert_eq!(errors.len(), usize::from(i == 0), "batch {i}: {errors:?}");
        if i == 0 {
            assert!(
                errors[0].contains("cannot read identity document"),
                "{errors:?}"
            );
            assert!(errors[0].contains(s.path.to_str().unwrap()), "{errors:?}");
        }
    }
}

#[test]
fn a_malformed_document_is_unavailable_and_the_old_identity_is_not_used() {
    let t0 = LAUNCH + 100 * SEC;
    let mut s = setup(Some(&document("i-0abc", "10.0.0.5")), t0);
    let bad = document("i-0def", "10.0.0.5").replace("10.0.0.5", "10.0.0.555");
    replace(&s.path, &bad, 2_000);

    s.harness.set_now_ns(t0 + SEC);
    let answers = s.harness.identify(&[query("10.0.0.5", t0 + SEC)]);
    assert_eq!(id(&answers, 0), Err(UnattributedReason::SourceUnavailable));
    let errors = errors(&s.harness);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("is refused: privateIp \"10.0.0.555\""),
        "{errors:?}"
    );

    // Fixed again: attributed again, from the new document.
    replace(&s.path, &document("i-0def", "10.0.0.5"), 3_000);
    s.harness.set_now_ns(t0 + 2 * SEC);
    let answers = s.harness.identify(&[query("10.0.0.5", t0 + 2 * SEC)]);
    assert_eq!(id(&answers, 0).unwrap().0, "i-0def");
}

#[test]
fn a_document_missing_at_start_is_used_once_it_appears() {
    let t0 = LAUNCH + 100 * SEC;
    let mut s = setup(None, t0);
    let errors_at_init = errors(&s.harness);
    assert_eq!(errors_at_init.len(), 1, "{errors_at_init:?}");
    let answers = s.harness.identify(&[query("10.0.0.5", t0)]);
    assert_eq!(id(&answers, 0), Err(UnattributedReason::SourceUnavailable));

    replace(&s.path, &document("i-0abc", "10.0.0.5"), 2_000);
    s.harness.set_now_ns(t0 + SEC);
    let answers = s.harness.identify(&[query("10.0.0.5", t0 + SEC)]);
    assert_eq!(
        id(&answers, 0),
        Ok(("i-0abc".into(), TimeRange::new(LAUNCH, t0 + SEC + 1)))
    );
}

#[test]
fn the_default_path_is_the_granted_ec2_directory() {
    let mut h = Harness::<Ec2Disk>::new("{}").unwrap();
    let logs = h.take_logs();
    assert!(
        logs.iter()
            .any(|(l, m)| *l == Level::Error && m.contains("/ec2/instance-identity.json")),
        "{logs:?}"
    );
    let answers = h.identify(&[query("10.0.0.5", 0)]);
    assert_eq!(id(&answers, 0), Err(UnattributedReason::SourceUnavailable));
}

#[test]
fn bad_configs_are_refused() {
    for (config, want) in [
        (r#"{"documnet": "/ec2/x.json"}"#, "unknown field `documnet`"),
        (r#"{"document": 7}"#, "invalid type"),
        (r#"{"document": ""}"#, "path is empty"),
    ] {
        let err = Harness::<Ec2Disk>::new(config).err().expect(config);
        assert!(err.contains(want), "{config}: {err}");
    }
}

#[test]
fn the_cli_fixture_gives_the_expected_answers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let input: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("fixtures/input.json")).unwrap()).unwrap();
    let expected: Answers =
        serde_json::from_slice(&std::fs::read(root.join("fixtures/expected.json")).unwrap())
            .unwrap();
    let queries: Vec<LocalQuery> = serde_json::from_value(input["queries"].clone()).unwrap();
    let document = root.join("examples/instance-identity.json");
    let config = serde_json::json!({ "document": document }).to_string();
    let mut h = Harness::<Ec2Disk>::new(&config).unwrap();
    h.set_now_ns(input["now_ns"].as_u64().unwrap());
    assert_eq!(h.identify(&queries), expected);
}
