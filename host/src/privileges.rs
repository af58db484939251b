//! Least privilege: once the agent's programs are loaded and attached, and
//! everything only root may open is open, the agent becomes an ordinary
//! user with no capabilities.
//!
//! What keeps working without privileges: the ring buffer, maps and program
//! statistics are used through file descriptors the agent already holds
//! (the kernel checks rights when a descriptor is made, not when it is
//! used); the metrics socket is bound, the output file and the TLS key are
//! read. What the agent writes later, its spool and compile cache, is handed
//! to the user before the drop. `no_new_privs` is set first, while the
//! process has one thread, so every thread inherits it: nothing the agent
//! could ever execute gains privileges.
//!
//! A user id change applies to every thread (glibc signals each one), and
//! the kernel clears the permitted, effective and ambient capabilities of a
//! thread whose user ids all become non-zero, so no thread keeps root.

use std::{
    ffi::CString,
    io,
    os::unix::fs::lchown,
    path::{Path, PathBuf},
};

/// What the configuration's `[privileges] user` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// The configured user is not in the user database.
    #[error(
        "user \"{0}\" does not exist, and the agent drops root to it once capture is attached: create it (useradd --system --no-create-home --shell /usr/sbin/nologin {0}) or name another in [privileges] user"
    )]
    NoSuchUser(String),
    /// The configured user is root in disguise.
    #[error(
        "[privileges] user \"{0}\" has uid 0: name an unprivileged user, or \"root\" to keep root"
    )]
    RootInDisguise(String),
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn sys(what: impl Into<String>) -> impl FnOnce(io::Error) -> PrivilegeError {
    let what = what.into();
    move |source| PrivilegeError::Sys { what, source }
}

fn check(rc: libc::c_int, what: &str) -> Result<(), PrivilegeError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(sys(what)(io::Error::last_os_error()))
    }
}

/// Sets `no_new_privs` on the calling thread, and so on every thread it
/// starts from now on. Call it while the process has one thread.
pub fn forbid_new_privileges() -> Result<(), PrivilegeError> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    check(rc, "setting no_new_privs")
}

/// The user to become, or `None` for `"root"` (keep root).
pub fn resolve(user: &str) -> Result<Option<Target>, PrivilegeError> {
    if user == "root" {
        return Ok(None);
    }
    let name = CString::new(user).map_err(|_| PrivilegeError::NoSuchUser(user.into()))?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: passwd is plain data; all-zero is a valid value to be filled.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live storage of the length given;
    // getpwnam_r writes strings into `buf` only.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut found,
        )
    };
    if rc != 0 {
        return Err(sys(format!("looking up user {user}"))(
            io::Error::from_raw_os_error(rc),
        ));
    }
    if found.is_null() {
        return Err(PrivilegeError::NoSuchUser(user.into()));
    }
    if pwd.pw_uid == 0 {
        return Err(PrivilegeError::RootInDisguise(user.into()));
    }
    Ok(Some(Target {
        name: user.into(),
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    }))
}

/// Creates `dir` if needed and gives it, and everything in it, to `target`.
/// Symbolic links are changed themselves, never followed.
pub fn hand_over(dir: &Path, target: &Target) -> Result<(), PrivilegeError> {
    std::fs::create_dir_all(dir).map_err(sys(format!("creating {}", dir.display())))?;
    let mut pending: Vec<PathBuf> = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        lchown(&path, Some(target.uid), Some(target.gid)).map_err(sys(format!(
            "giving {} to {}",
            path.display(),
            target.name
        )))?;
        let meta =
            std::fs::symlink_metadata(&path).map_err(sys(format!("reading {}", path.display())))?;
        if meta.is_dir() {
            for entry in
                std::fs::read_dir(&path).map_err(sys(format!("listing {}", path.display())))?
            {
                pending.push(
                    entry
                        .map_err(sys(format!("listing {}", path.display())))?
                        .path(),
                );
            }
        }
    }
    Ok(())
}

/// Becomes `target` for good: its group only, then its user ids, all three
/// of each, so neither can be taken back.
pub fn drop_to(target: &Target) -> Result<(), PrivilegeError> {
    let gid = target.gid;
    // SAFETY: a one-element array that outlives the call.
    check(
        unsafe { libc::setgroups(1, &gid) },
        "dropping supplementary groups",
    )?;
    // SAFETY: integer arguments only.
    check(unsafe { libc::setresgid(gid, gid, gid) }, "changing group")?;
    // SAFETY: integer arguments only.
    check(
        unsafe { libc::setresuid(target.uid, target.uid, target.uid) },
        "changing user",
    )?;
    // SAFETY: integer arguments only; expected to fail.
    if unsafe { libc::setuid(0) } == 0 {
        return Err(sys("dropping root")(io::Error::other(
            "root could be taken back",
        )));
    }
    Ok(())
}

/// The capability sets of the calling thread, from `/proc/thread-self/status`:
/// (permitted, effective), as the kernel's hexadecimal masks.
pub fn capabilities() -> io::Result<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/thread-self/status")?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .ok_or_else(|| io::Error::other(format!("no {name} in the thread's status")))
    };
    Ok((field("CapPrm:")?, field("CapEff:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_keeps_root_and_unknown_users_are_named() {
        assert_eq!(resolve("root").unwrap(), None);
        let e = resolve("no-such-user-flowattr-test").unwrap_err();
        assert!(
            e.to_string()
                .contains("\"no-such-user-flowattr-test\" does not exist"),
            "{e}"
        );
        assert!(matches!(
            resolve("bad\0name"),
            Err(PrivilegeError::NoSuchUser(_))
        ));
    }

    #[test]
    fn a_user_resolves_to_the_ids_the_system_gives_it() {
        let nobody = resolve("nobody").unwrap().expect("nobody exists");
        let id = |flag: &str| {
            let out = std::process::Command::new("id")
                .args([flag, "nobody"])
                .output()
                .unwrap();
            String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .parse::<u32>()
                .unwrap()
        };
        assert_eq!((nobody.uid, nobody.gid), (id("-u"), id("-g")));
    }
}
