//! What the machine must offer before the programs can load: root, BTF and a
//! mounted tracefs. Each failure is one sentence an operator can act on.

use std::path::Path;

use thiserror::Error;

/// Why the capture cannot start on this machine.
#[derive(Debug, Error)]
pub enum SystemError {
    #[error("flowattr agent must run as root to load its eBPF programs (effective uid is {0})")]
    NotRoot(u32),
    #[error(
        "this kernel does not expose BTF at /sys/kernel/btf/vmlinux; flowattr agent needs a kernel built with CONFIG_DEBUG_INFO_BTF"
    )]
    NoBtf,
    #[error("tracefs is not mounted and mounting it at /sys/kernel/tracing failed: {0}")]
    Tracefs(std::io::Error),
}

const TRACEFS: &str = "/sys/kernel/tracing";

/// Checks root and BTF, and mounts tracefs when it is missing.
pub fn prepare() -> Result<(), SystemError> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(SystemError::NotRoot(euid));
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(SystemError::NoBtf);
    }
    ensure_tracefs()
}

fn ensure_tracefs() -> Result<(), SystemError> {
    let events = Path::new(TRACEFS).join("events");
    if events.exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    tracing::info!(path = TRACEFS, "mounting tracefs");
    let status = std::process::Command::new("mount")
        .args(["-t", "tracefs", "nodev", TRACEFS])
        .status()
        .map_err(SystemError::Tracefs)?;
    if !status.success() || !events.exists() {
        return Err(SystemError::Tracefs(std::io::Error::other(format!(
            "mount exited with {status}"
        ))));
    }
    Ok(())
}
