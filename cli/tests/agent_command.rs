//! `flowattr agent` refuses clearly what it cannot do: without root it says
//! so in one sentence and exits 1; a bad configuration names its key, and
//! so does a name the agent's certificate does not carry.

use std::os::unix::process::CommandExt;
use std::process::Command;

fn stderr_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn without_root_it_says_so_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("agent.toml");
    std::fs::write(&config, "[metrics]\nenabled = false\n").unwrap();
    // Readable by the unprivileged user the command runs as.
    let mut perms = std::fs::metadata(tmp.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(tmp.path(), perms).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flowattr"))
        .args(["agent", "--config"])
        .arg(&config)
        .uid(65534) // nobody; the tests themselves run as root
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("must run as root"), "{lines:?}");
}

#[test]
fn a_bad_configuration_names_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("agent.toml");
    std::fs::write(&config, "[batch]\nmax_age = \"2h\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flowattr"))
        .args(["agent", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("batch.max_age"), "{lines:?}");
}

#[test]
fn a_name_its_certificate_does_not_carry_is_refused_in_one_sentence() {
    let tmp = tempfile::tempdir().unwrap();
    flowattr_transport::certs::generate_dev_pki(tmp.path(), &[], &["ip-10-0-0-12"]).unwrap();
    let d = tmp.path().display();
    let config = tmp.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "name = \"web-1\"\n[metrics]\nenabled = false\n[transport]\ncollectors = [\"127.0.0.1:7443\"]\nca = \"{d}/ca.pem\"\ncert = \"{d}/ip-10-0-0-12.pem\"\nkey = \"{d}/ip-10-0-0-12.key\"\nspool_dir = \"{d}/spool\"\n"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flowattr"))
        .args(["agent", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert!(
        line.contains("\"web-1\"")
            && line.contains("\"ip-10-0-0-12\"")
            && line.contains("ip-10-0-0-12.pem"),
        "{line}"
    );
    assert!(
        !tmp.path().join("spool").exists(),
        "refused before the shipper starts"
    );
}
