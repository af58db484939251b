//! `flowattr agent` refuses clearly what it cannot do: without root it says
//! so in one sentence and exits 1; a bad configuration names its key.

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
