//! What the machine must offer before the programs can load: root and BTF.
//! Each failure is one sentence an operator can act on. (The programs attach
//! to raw tracepoints by name, so tracefs is not needed.)

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
}

/// Checks root and BTF.
pub fn prepare() -> Result<(), SystemError> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(SystemError::NotRoot(euid));
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(SystemError::NoBtf);
    }
    Ok(())
}
