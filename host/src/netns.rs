//! Network namespaces, for the demo and the root integration tests: each one
//! a "host" or "container" with its own addresses, joined by veth pairs.
//! A [`Netns`] deletes its namespace when dropped (the veth ends inside go
//! with it).

use std::{
    fs::File,
    io,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// Runs `ip` with `args`; its stderr becomes the error.
pub fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// A named network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
    file: File,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Netns {
    /// A new namespace named `fa-TAG-PID-N` with loopback up: `tag` keeps
    /// names readable, the process id and a counter keep them apart.
    pub fn new(tag: &str) -> io::Result<Netns> {
        let name = format!(
            "fa-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        let ns = Netns {
            file: File::open(format!("/run/netns/{name}"))?,
            name,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `ip -n NAME args`.
    pub fn ip(&self, args: &[&str]) -> io::Result<()> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// The namespace's inode number, as the capture reports it.
    pub fn inode(&self) -> u64 {
        self.file.metadata().map_or(0, |m| m.ino())
    }

    /// Runs `f` on a thread inside this namespace; sockets it creates live
    /// there.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
        self.spawn(f)?
            .join()
            .map_err(|_| io::Error::other("thread in the namespace panicked"))?
    }

    /// Starts `f` on a thread inside this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<std::thread::JoinHandle<io::Result<T>>> {
        let fd = self.file.try_clone()?;
        Ok(std::thread::spawn(move || {
            // SAFETY: setns on this thread only, with a namespace fd we own.
            let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        }))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Joins `a` and `b` with a veth pair and gives each end the addresses in
/// `a_addrs` / `b_addrs` (CIDR notation; IPv6 without duplicate detection).
/// Returns the two devices' names.
pub fn link(
    a: &Netns,
    a_addrs: &[&str],
    b: &Netns,
    b_addrs: &[&str],
) -> io::Result<(String, String)> {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let (va, vb) = (
        format!("fa{}a{n}", std::process::id() % 10000),
        format!("fa{}b{n}", std::process::id() % 10000),
    );
    ip(&[
        "link", "add", &va, "netns", &a.name, "type", "veth", "peer", "name", &vb, "netns", &b.name,
    ])?;
    for (ns, dev, addrs) in [(a, &va, a_addrs), (b, &vb, b_addrs)] {
        for addr in addrs {
            if addr.contains(':') {
                ns.ip(&["addr", "add", addr, "dev", dev, "nodad"])?;
            } else {
                ns.ip(&["addr", "add", addr, "dev", dev])?;
            }
        }
        ns.ip(&["link", "set", dev, "up"])?;
    }
    Ok((va, vb))
}
