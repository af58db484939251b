//! `flowattr certs` writes a PKI whose files the transport's TLS loads: a
//! collector's server configuration, an agent's client configuration, and
//! the agent's name as its peer identity. Run again, it signs new
//! certificates with the existing CA.

use std::process::{Command, Output};

use flowattr_transport::tls::{self, PeerIdentity, TlsFiles};

fn certs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flowattr"))
        .arg("certs")
        .args(args)
        .output()
        .expect("flowattr runs")
}

fn stdout_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn writes_a_pki_the_transport_loads() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let out = certs(&[
        "--out",
        dir.to_str().unwrap(),
        "--collector",
        "collector-1",
        "--agent",
        "agent-a",
        "--agent",
        "agent-b",
    ]);
    assert!(out.status.success(), "{out:?}");
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 8, "{lines:?}");
    for name in ["ca.pem", "ca.key", "collector-1.pem", "agent-b.key"] {
        let line = format!("wrote {}", dir.join(name).display());
        assert!(lines.contains(&line), "{line} in {lines:?}");
    }
    tls::server_config(&TlsFiles::in_dir(&dir, "collector-1"), 8).unwrap();
    for agent in ["agent-a", "agent-b"] {
        let files = TlsFiles::in_dir(&dir, agent);
        tls::client_config(&files).unwrap();
        let cert = &tls::load_certificates(&files.cert).unwrap()[0];
        assert_eq!(
            PeerIdentity::from_certificate(cert),
            Some(PeerIdentity(agent.into()))
        );
    }

    let ca = std::fs::read(dir.join("ca.pem")).unwrap();
    let out = certs(&["--out", dir.to_str().unwrap(), "--agent", "agent-c"]);
    assert!(out.status.success(), "{out:?}");
    let lines = stdout_lines(&out);
    assert!(
        lines[0].starts_with("signed with the existing CA"),
        "{lines:?}"
    );
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), ca);
    tls::client_config(&TlsFiles::in_dir(&dir, "agent-c")).unwrap();
}

#[test]
fn a_name_that_cannot_be_a_file_name_is_refused_in_one_sentence() {
    let tmp = tempfile::tempdir().unwrap();
    let out = certs(&[
        "--out",
        tmp.path().to_str().unwrap(),
        "--agent",
        "../escape",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("../escape"), "{stderr}");
    assert!(std::fs::read_dir(tmp.path()).unwrap().next().is_none());
}
