//! `flowattr demo` as CI runs it (root): network namespaces, real traffic,
//! address churn, the real agent (eBPF) and collector over QUIC, the legacy
//! stream late. Every attributed side of every flow written must match the
//! workload that owned the address at that time; the legacy method must be
//! caught misattributing; nothing the demo made may be left behind, also
//! when it is interrupted.

mod common;

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

/// One demo at a time: two agents would each capture the other's flows.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn demo(dir: &Path, json: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flowattr"));
    cmd.args(["demo", "--dir"])
        .arg(dir)
        .arg("--plugins")
        .arg(workspace().join("plugins"))
        .arg("--json")
        .arg(json)
        .env(
            "FLOWATTR_CACHE_DIR",
            workspace().join("target/flowattr-test-cache"),
        );
    cmd
}

/// A temporary directory the demo's agent can still reach once it has
/// dropped root (a fresh one is root's alone).
fn reachable_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    tmp
}

/// Namespaces and processes the demo run `pid` (in `dir`) left behind.
fn leftovers(pid: u32, dir: &Path) -> (Vec<String>, Vec<String>) {
    let netns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .filter_map(|l| l.split_whitespace().next())
    .filter(|n| n.starts_with("fa-demo") && n.contains(&format!("-{pid}-")))
    .map(str::to_owned)
    .collect();
    let dir = dir.to_string_lossy().into_owned();
    let procs = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&dir) && !c.contains(" demo "))
        .collect();
    (netns, procs)
}

#[test]
fn every_attributed_flow_matches_the_owner_of_its_address_at_the_time() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = reachable_tempdir();
    let (dir, json) = (tmp.path().join("demo"), tmp.path().join("demo.json"));
    let child = demo(&dir, &json)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["demo"]["sides_wrong"], 0, "{stdout}");
    assert!(r["demo"]["sides_right"].as_u64().unwrap() > 300, "{r}");
    assert_eq!(r["heartbeat"]["misattributed"], 0, "{stdout}");
    assert!(
        r["legacy"]["misattributed"].as_u64().unwrap() > 10,
        "the late legacy stream misattributes: {stdout}"
    );
    // The report worker's address went to an api instance the gateway
    // calls: the late legacy stream makes an edge gateway → report.
    assert_eq!(r["heartbeat"]["edges"]["wrong"], 0, "{stdout}");
    let legacy_wrong = r["legacy"]["wrong_edges"].as_array().unwrap();
    assert!(
        legacy_wrong
            .iter()
            .any(|e| e["source"] == "gateway" && e["destination"] == "report"),
        "the legacy method's wrong edge gateway -> report: {stdout}"
    );
    assert!(
        stdout.contains("c-batch-7") && stdout.contains("c-cache-4"),
        "flows to the new owners:\n{stdout}"
    );
    // The demo's page: its 40-second timeline and the legacy method's wrong
    // edge drawn inside their charts.
    common::screen::check_ab_report(
        &dir.join("ab.html"),
        &dir,
        &[
            flowattr_ab::html::RIGHT_COLOUR,
            flowattr_ab::html::WRONG_COLOUR,
        ],
    );
    assert_eq!(
        leftovers(pid, &dir),
        (vec![], vec![]),
        "namespaces and processes removed"
    );
}

#[test]
fn an_interrupted_demo_removes_everything_it_made() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = reachable_tempdir();
    let (dir, json) = (tmp.path().join("demo"), tmp.path().join("demo.json"));
    let mut child = demo(&dir, &json).spawn().unwrap();
    let pid = child.id();
    // Into the traffic phase: namespaces, agent and collector all up.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !std::fs::read_to_string(dir.join("legacy-events.jsonl"))
        .is_ok_and(|t| t.lines().count() >= 4)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the demo did not get going"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(3));
    let (netns, procs) = leftovers(pid, &dir);
    assert!(
        netns.len() >= 5 && procs.len() == 2,
        "running: {netns:?} {procs:?}"
    );
    // SAFETY: signalling our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(
        leftovers(pid, &dir),
        (vec![], vec![]),
        "namespaces and processes removed"
    );
    assert!(!json.exists(), "no report from an interrupted run");
}

#[test]
fn without_root_it_says_so_and_offers_the_simulator() {
    let out = Command::new(env!("CARGO_BIN_EXE_flowattr"))
        .args(["demo"])
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs root") && err.contains("flowattr sim"),
        "{err}"
    );
}
