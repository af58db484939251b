//! The writer against the reader: states built with [`StateFile`], saved,
//! then answered by the plugin itself through the SDK harness.

use std::net::SocketAddr;

use flowattr_sdk::host::Level;
use flowattr_sdk::testing::Harness;
use flowattr_sdk::{LocalQuery, Protocol};
use serde_json::json;

use super::*;
use crate::Ipman;

/// The host clock while the plugin answers.
const NOW: u64 = 10_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn app(app: &str) -> RawWorkload {
    RawWorkload {
        app: Some(app.into()),
        ..RawWorkload::default()
    }
}

/// An empty state whose file (and directory) does not exist yet.
fn empty() -> (tempfile::TempDir, StateFile) {
    let dir = tempfile::tempdir().unwrap();
    let state = StateFile::open(dir.path().join("run/ipman/state.json")).unwrap();
    (dir, state)
}

/// A state with workloads `c-a`, `c-b` and `c-c`.
fn with_workloads() -> (tempfile::TempDir, StateFile) {
    let (dir, mut state) = empty();
    for id in ["c-a", "c-b", "c-c"] {
        state.define_workload(id, app(id)).unwrap();
    }
    (dir, state)
}

/// The plugin over the file at `path`, host clock at `NOW`.
fn plugin(path: &Path) -> Harness<Ipman> {
    Harness::<Ipman>::with_now(NOW, &json!({ "state": path }).to_string()).unwrap()
}

fn errors(h: &Harness<Ipman>) -> Vec<String> {
    let logs = h.take_logs().into_iter();
    logs.filter(|(l, _)| *l == Level::Error)
        .map(|(_, m)| m)
        .collect()
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

/// Who the plugin, reading the saved file, says held each (endpoint, time):
/// a workload id, or why nobody (`Gap`, `NotFound`).
fn plugin_says(path: &Path, queries: &[(&str, u64)]) -> Vec<String> {
    let mut h = plugin(path);
    let queries: Vec<LocalQuery> = queries.iter().map(|&(e, t)| query(e, t)).collect();
    let answers = h.identify(&queries);
    assert_eq!(errors(&h), Vec::<String>::new());
    (0..queries.len())
        .map(|i| match answers.resolve(i) {
            Ok((workload, _)) => workload.id.clone(),
            Err(reason) => format!("{reason:?}"),
        })
        .collect()
}

#[test]
fn a_saved_assignment_is_attributed_by_the_plugin() {
    let (_dir, mut state) = empty();
    assert_eq!(
        state.to_json(),
        StateFile::open(state.path()).unwrap().to_json()
    );
    let web = RawWorkload {
        region: Some("us-east-1".into()),
        labels: [("pod".to_owned(), "web-1".to_owned())].into(),
        ..app("web")
    };
    state.define_workload("c-web-1", web).unwrap();
    state.assign(ip("fd00::5"), "c-web-1", 100).unwrap();
    state.assign(ip("::ffff:10.1.0.9"), "c-web-1", 100).unwrap();
    state.save().unwrap();

    let mut h = plugin(state.path());
    let answers = h.identify(&[query("[fd00::5]:443", 150)]);
    let (workload, valid) = answers.resolve(0).unwrap();
    assert_eq!(workload.id, "c-web-1");
    assert_eq!(workload.app.as_deref(), Some("web"));
    assert_eq!(workload.region.as_deref(), Some("us-east-1"));
    assert_eq!(workload.labels["pod"], "web-1");
    assert_eq!(valid, flowattr_sdk::TimeRange::new(100, NOW + 1));

    let says = plugin_says(
        state.path(),
        &[
            ("10.1.0.9:80", 150),
            ("[::ffff:10.1.0.9]:80", 150),
            ("[fd00::5]:443", 99),
            ("[fd00::6]:443", 150),
        ],
    );
    assert_eq!(says, ["c-web-1", "c-web-1", "Gap", "NotFound"]);
    // The mapped form was stored as IPv4, as STATE.md reads it.
    assert!(state.to_json().contains("\"ip\": \"10.1.0.9\""));
}

#[test]
fn a_reassigned_address_gives_each_owner_only_its_own_time() {
    let (_dir, mut state) = with_workloads();
    state.assign(ip("fd00::5"), "c-a", 100).unwrap();
    state.save().unwrap();
    // Each step from what the previous one wrote, as separate commands would.
    let path = state.path().to_owned();
    let mut state = StateFile::open(&path).unwrap();
    state.release(ip("fd00::5"), 200).unwrap();
    state.assign(ip("fd00::5"), "c-b", 200).unwrap();
    state.save().unwrap();
    let mut state = StateFile::open(&path).unwrap();
    state.release(ip("fd00::5"), 300).unwrap();
    state.assign(ip("fd00::5"), "c-a", 400).unwrap();
    state.save().unwrap();

    let times = [99, 150, 199, 200, 299, 300, 399, 400, 9_000];
    let queries: Vec<_> = times.iter().map(|&t| ("[fd00::5]:443", t)).collect();
    let says = plugin_says(&path, &queries);
    let want = [
        "Gap", "c-a", "c-a", "c-b", "c-b", "Gap", "Gap", "c-a", "c-a",
    ];
    assert_eq!(says, want, "at {times:?}");
}

#[test]
fn an_address_is_assigned_once_until_released() {
    let (_dir, mut state) = with_workloads();
    state.assign(ip("10.1.0.9"), "c-a", 100).unwrap();
    let twice = state.assign(ip("10.1.0.9"), "c-b", 150).unwrap_err();
    assert_eq!(
        twice.to_string(),
        "10.1.0.9 is already assigned to c-a (since 100)"
    );
    let mapped = state.assign(ip("::ffff:10.1.0.9"), "c-b", 150);
    assert!(matches!(mapped, Err(AdminError::AlreadyAssigned { .. })));
    let ghost = state.assign(ip("fd00::1"), "c-ghost", 150).unwrap_err();
    assert_eq!(ghost.to_string(), "workload \"c-ghost\" is not defined");
    let never = state.release(ip("fd00::9"), 150).unwrap_err();
    assert_eq!(never.to_string(), "fd00::9 is not assigned");
    let early = state.release(ip("10.1.0.9"), 100).unwrap_err();
    assert!(
        early
            .to_string()
            .contains("since_ns 100 is not before until_ns 100"),
        "{early}"
    );

    state.release(ip("10.1.0.9"), 200).unwrap();
    // Reassigning inside the released assignment's time would contradict it.
    let back = state.assign(ip("10.1.0.9"), "c-b", 199).unwrap_err();
    assert!(back.to_string().contains("overlap in time"), "{back}");
    state.assign(ip("10.1.0.9"), "c-b", 200).unwrap();

    state.share_ipv4(v4("192.0.2.10"), (40000, 59999)).unwrap();
    let shared = state.assign(ip("192.0.2.10"), "c-a", 300).unwrap_err();
    assert_eq!(
        shared.to_string(),
        "192.0.2.10 is a shared IPv4 address: allocate ports on it instead"
    );
    let assigned = state.share_ipv4(v4("10.1.0.9"), (1, 2)).unwrap_err();
    assert!(
        assigned
            .to_string()
            .contains("the address also has assignments"),
        "{assigned}"
    );
}

#[test]
fn a_shared_ipv4_address_is_attributed_by_port() {
    let (_dir, mut state) = with_workloads();
    let shared = v4("192.0.2.10");
    state.share_ipv4(shared, (40000, 59999)).unwrap();
    state
        .allocate_ports(shared, (40000, 40999), "c-a", 100)
        .unwrap();
    state
        .allocate_ports(shared, (41000, 41999), "c-b", 100)
        .unwrap();
    let taken = state.allocate_ports(shared, (40500, 41500), "c-c", 150);
    assert_eq!(
        taken.unwrap_err().to_string(),
        "ports 40500-41500 of 192.0.2.10 overlap 40000-40999, allocated to c-a"
    );
    let outside = state.allocate_ports(shared, (59990, 60010), "c-c", 150);
    assert!(
        outside
            .unwrap_err()
            .to_string()
            .contains("ports 59990-60010 are not a range inside the pool 40000-59999")
    );
    let not_shared = state.allocate_ports(v4("192.0.2.11"), (40000, 40999), "c-c", 150);
    assert!(matches!(not_shared, Err(AdminError::NotShared(_))));
    state.free_ports(shared, (40000, 40999), 200).unwrap();
    let again = state.free_ports(shared, (40000, 40999), 250).unwrap_err();
    assert_eq!(
        again.to_string(),
        "ports 40000-40999 of 192.0.2.10 are not allocated"
    );
    state
        .allocate_ports(shared, (40000, 40999), "c-c", 300)
        .unwrap();
    // A smaller pool would leave allocations outside it.
    let shrunk = state.share_ipv4(shared, (40000, 40999)).unwrap_err();
    assert!(shrunk.to_string().contains("not a range inside the pool"));
    state.save().unwrap();

    let says = plugin_says(
        state.path(),
        &[
            ("192.0.2.10:40500", 150),
            ("192.0.2.10:40500", 250),
            ("192.0.2.10:40500", 300),
            ("192.0.2.10:41999", 150),
            ("192.0.2.10:45000", 150),
            ("192.0.2.10:22", 150),
        ],
    );
    assert_eq!(says, ["c-a", "Gap", "c-c", "c-b", "Gap", "NotFound"]);
}

#[test]
fn a_refused_change_or_invalid_state_leaves_the_file_as_it_was() {
    let (_dir, mut state) = with_workloads();
    state.assign(ip("fd00::5"), "c-a", 100).unwrap();
    state.share_ipv4(v4("192.0.2.10"), (40000, 59999)).unwrap();
    state.save().unwrap();
    let path = state.path().to_owned();
    let bytes = std::fs::read(&path).unwrap();
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let json = state.to_json();

    assert!(state.assign(ip("fd00::5"), "c-b", 150).is_err());
    assert!(state.release(ip("fd00::6"), 150).is_err());
    assert!(state.release(ip("fd00::5"), 50).is_err());
    assert!(state.define_workload(" ", RawWorkload::default()).is_err());
    assert!(state.free_ports(v4("192.0.2.10"), (1, 2), 150).is_err());
    assert!(state.share_ipv4(v4("192.0.2.10"), (2, 1)).is_err());
    assert_eq!(state.to_json(), json, "refused changes are not kept");

    // A state the plugin would refuse is never written.
    state.raw.assignments[0].until_ns = Some(0);
    let err = state.save().unwrap_err();
    assert_eq!(
        err.to_string(),
        "the plugin would refuse the result: assignments[0]: since_ns 100 is not before until_ns 0"
    );
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
    let files: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(files, ["state.json"], "no temporary file is left");
}

#[test]
fn saves_in_quick_succession_are_each_visible_to_the_plugin() {
    let (_dir, mut state) = empty();
    state.define_workload("c-a", app("x")).unwrap();
    state.assign(ip("fd00::5"), "c-a", 100).unwrap();
    state.save().unwrap();
    let mut h = plugin(state.path());
    let app_at = |h: &mut Harness<Ipman>, t| {
        let answers = h.identify(&[query("[fd00::5]:443", t)]);
        answers.resolve(0).unwrap().0.app.clone().unwrap()
    };
    assert_eq!(app_at(&mut h, NOW), "x");

    // The same length, written well within the timestamp granularity.
    let path = state.path().to_owned();
    let meta = || std::fs::metadata(&path).unwrap();
    let (len, first) = (meta().len(), meta().modified().unwrap());
    state.define_workload("c-a", app("y")).unwrap();
    state.save().unwrap();
    let second = meta().modified().unwrap();
    assert_eq!(meta().len(), len);
    assert!(second > first, "{second:?} after {first:?}");
    state.save().unwrap();
    assert!(meta().modified().unwrap() > second);

    h.set_now_ns(NOW + 1);
    assert_eq!(app_at(&mut h, NOW + 1), "y");
}

#[test]
fn a_save_is_dated_after_the_previous_version_even_when_the_clock_is_behind_it() {
    let (_dir, mut state) = with_workloads();
    state.save().unwrap();
    // The previous version is dated an hour ahead (a clock step back, or a
    // coarse timestamp): the new one must still be later.
    let ahead = SystemTime::now() + Duration::from_secs(3600);
    let file = std::fs::File::options()
        .write(true)
        .open(state.path())
        .unwrap();
    file.set_modified(ahead).unwrap();
    drop(file);
    state.assign(ip("fd00::5"), "c-a", 100).unwrap();
    state.save().unwrap();
    let modified = std::fs::metadata(state.path()).unwrap().modified().unwrap();
    assert_eq!(modified, ahead + Duration::from_nanos(1));
}

#[test]
fn open_reads_a_missing_file_as_empty_and_refuses_a_bad_one() {
    let (dir, state) = empty();
    let empty: serde_json::Value = serde_json::from_str(&state.to_json()).unwrap();
    assert_eq!(
        empty,
        json!({"version": 1, "workloads": {}, "assignments": [], "shared_ipv4": []})
    );
    let path = dir.path().join("state.json");
    let overlapping = json!({
        "version": 1,
        "workloads": {"c-a": {}},
        "assignments": [
            {"ip": "fd00::5", "workload": "c-a", "since_ns": 1, "until_ns": null},
            {"ip": "fd00::5", "workload": "c-a", "since_ns": 5, "until_ns": null}
        ]
    });
    for (contents, want) in [
        ("{".to_owned(), "EOF while parsing"),
        (json!({"version": 2}).to_string(), "unsupported version 2"),
        (
            json!({"version": 1, "hosts": []}).to_string(),
            "unknown field `hosts`",
        ),
        (
            overlapping.to_string(),
            "assignments[0] and assignments[1] overlap in time for fd00::5",
        ),
    ] {
        std::fs::write(&path, &contents).unwrap();
        let err = StateFile::open(&path).unwrap_err().to_string();
        assert!(err.starts_with("IPMan state file "), "{err}");
        assert!(err.contains(want), "{contents}: {err}");
    }
}

#[test]
fn prune_drops_released_entries_and_the_workloads_only_they_named() {
    let (_dir, mut state) = with_workloads();
    state.define_workload("c-idle", app("idle")).unwrap();
    state.define_workload("c-d", app("d")).unwrap();
    state.assign(ip("fd00::1"), "c-a", 100).unwrap();
    state.release(ip("fd00::1"), 200).unwrap();
    state.assign(ip("fd00::2"), "c-b", 100).unwrap();
    state.assign(ip("fd00::3"), "c-c", 100).unwrap();
    state.release(ip("fd00::3"), 500).unwrap();
    state.assign(ip("fd00::4"), "c-d", 100).unwrap();
    state.release(ip("fd00::4"), 250).unwrap();
    let shared = v4("192.0.2.10");
    state.share_ipv4(shared, (40000, 59999)).unwrap();
    state
        .allocate_ports(shared, (40000, 40999), "c-d", 100)
        .unwrap();
    state.free_ports(shared, (40000, 40999), 250).unwrap();

    assert_eq!(state.prune(300), 3);
    assert_eq!(state.prune(300), 0);
    let json: serde_json::Value = serde_json::from_str(&state.to_json()).unwrap();
    let ips: Vec<&str> = json["assignments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["ip"].as_str().unwrap())
        .collect();
    assert_eq!(ips, ["fd00::2", "fd00::3"]);
    assert_eq!(json["shared_ipv4"][0]["allocations"], json!([]));
    for (id, kept) in [
        ("c-a", false),
        ("c-b", true),
        ("c-c", true),
        ("c-d", false),
        ("c-idle", true),
    ] {
        assert_eq!(state.workload(id).is_some(), kept, "{id}");
    }
    state.save().unwrap();
}
