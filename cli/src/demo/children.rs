//! The agent and collector as child processes of the demo: stopped with
//! SIGTERM (then SIGKILL) when dropped, and told by the kernel to stop if the
//! demo itself dies.

use std::{
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

/// A running `flowattr` subcommand.
pub struct Child {
    name: &'static str,
    child: Option<std::process::Child>,
}

impl Child {
    /// Starts `flowattr ARGS`, its output in `log`.
    pub fn spawn(name: &'static str, args: &[&str], log: &Path) -> anyhow::Result<Child> {
        let exe = std::env::current_exe().context("finding the flowattr binary")?;
        let out = std::fs::File::create(log)?;
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .env("FLOWATTR_LOG", "info");
        // SAFETY: prctl is async-signal-safe; it only sets this child's
        // parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting flowattr {name}"))?;
        Ok(Child {
            name,
            child: Some(child),
        })
    }

    /// Fails if the process has exited.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        let child = self.child.as_mut().context("already stopped")?;
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "flowattr {} exited early ({status}); see its log",
                self.name
            );
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: signalling our own child by pid.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
