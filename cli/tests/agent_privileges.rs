//! `flowattr agent` drops root once its programs are attached: every thread
//! of the running agent is the configured unprivileged user with no
//! capabilities and `no_new_privs`, and flows are still captured, attributed
//! and written, and the kernel's counters still read. It is started with the
//! capability bounding set of the shipped systemd unit, so the unit's set is
//! shown to be enough.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The user the bootstrap creates for the agent.
const USER: &str = "flowattr";

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn field<'a>(status: &'a str, name: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {status}"))
        .trim()
}

fn scrape(port: u16) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// One loopback connection carrying a few bytes each way.
fn talk(listener: &TcpListener) {
    let mut c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut s, _) = listener.accept().unwrap();
    c.write_all(b"ping").unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).unwrap();
    s.write_all(b"pong").unwrap();
    c.read_exact(&mut buf).unwrap();
}

fn uids(status: &str) -> Vec<u32> {
    field(status, "Uid:")
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect()
}

/// The unit's `CapabilityBoundingSet`, as setpriv takes it (`+bpf,+chown`).
fn unit_capabilities() -> String {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/systemd/flowattr-agent.service"
    ))
    .unwrap();
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit bounds capabilities");
    let caps: Vec<String> = line
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(!caps.is_empty());
    caps.join(",")
}

#[test]
fn the_running_agent_is_an_unprivileged_user_and_still_captures() {
    let expected_uid = {
        let out = Command::new("id").args(["-u", USER]).output().unwrap();
        assert!(
            out.status.success(),
            "user {USER} missing: scripts/bootstrap creates it"
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // The plugin directory is read after the drop.
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(d.join("plugins")).unwrap();
    let metrics = free_port();
    let out = d.join("flows.jsonl");
    let config = d.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"priv-test\"\n[plugins]\ndirectory = \"{p}\"\ncache_dir = \"{c}\"\n[batch]\nmax_age = \"200ms\"\n[output]\npath = \"{o}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n[privileges]\nuser = \"{USER}\"\n",
            p = d.join("plugins").display(),
            c = d.join("cache").display(),
            o = out.display(),
        ),
    )
    .unwrap();
    let agent = Agent(
        Command::new("setpriv")
            .arg(format!("--bounding-set=-all,{}", unit_capabilities()))
            .arg("--inh-caps=-all")
            .arg(env!("CARGO_BIN_EXE_flowattr"))
            .args(["agent", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let pid = agent.0.id();

    // Flows between two loopback sockets, until the agent has written some
    // of them (it only serves metrics once capture runs).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let deadline = Instant::now() + Duration::from_secs(60);
    let written = loop {
        assert!(Instant::now() < deadline, "no flows written by the agent");
        talk(&listener);
        std::thread::sleep(Duration::from_millis(200));
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let ours = text
            .lines()
            .filter(|l| l.contains(&format!("\"127.0.0.1:{port}\"")))
            .count();
        if ours > 0 {
            break text;
        }
    };
    assert!(written.contains("priv-test"), "batches name the agent");

    // Every thread, not only the main one.
    let mut threads = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        assert_eq!(uids(&status), vec![expected_uid; 4], "{status}");
        assert_ne!(field(&status, "Gid:").split_whitespace().next(), Some("0"));
        assert_eq!(field(&status, "CapPrm:"), "0000000000000000", "{status}");
        assert_eq!(field(&status, "CapEff:"), "0000000000000000", "{status}");
        assert_eq!(field(&status, "CapAmb:"), "0000000000000000", "{status}");
        assert_eq!(field(&status, "NoNewPrivs:"), "1", "{status}");
        threads += 1;
    }
    assert!(threads > 1, "the agent runs several threads");

    // The kernel's counters are still read through the held map.
    let text = scrape(metrics);
    let state_changes = metric(
        &text,
        r#"flowattr_agent_kernel_events_total{event="state_changes"} "#,
    );
    assert!(state_changes > 0, "{text}");
    assert!(
        metric(&text, "flowattr_agent_records_read_total ") > 0,
        "{text}"
    );
    // The cache was handed over before the drop.
    let cache_owner =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(d.join("cache")).unwrap());
    assert_eq!(cache_owner, expected_uid);
    drop(agent);
}

#[test]
fn a_user_that_does_not_exist_is_refused_before_capture_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        "[metrics]\nenabled = false\n[privileges]\nuser = \"no-such-user-flowattr\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flowattr"))
        .args(["agent", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("\"no-such-user-flowattr\" does not exist")
            && lines[0].contains("useradd"),
        "{lines:?}"
    );
}
