//! The demo's network: one namespace holding a bridge, and one namespace
//! per workload plugged into it, all on 10.77.0.0/24. Everything here is
//! removed when dropped; namespaces a killed demo left behind are removed at
//! the next start.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::Context as _;
use flowattr_host::netns::{self, Netns, link};

/// Namespace names this demo makes start with this.
pub const PREFIX: &str = "fa-demo";

/// Deletes `fa-demo*` namespaces whose demo process is gone.
pub fn remove_stale() {
    let Ok(out) = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        // fa-demoTAG-PID-N
        let parts: Vec<&str> = name.split('-').collect();
        if name.starts_with(PREFIX)
            && parts.len() == 4
            && let Ok(pid) = parts[2].parse::<u32>()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = netns::ip(&["netns", "del", name]);
            eprintln!("removed namespace {name} left by an interrupted demo");
        }
    }
}

/// The bridge everyone plugs into.
pub struct Fabric {
    bridge: Netns,
    /// Every namespace plugged in so far, by name.
    plugged: std::sync::Mutex<Vec<String>>,
}

impl Fabric {
    pub fn new() -> anyhow::Result<Fabric> {
        let bridge = Netns::new("demonet")?;
        bridge.ip(&["link", "add", "br0", "type", "bridge"])?;
        bridge.ip(&["link", "set", "br0", "up"])?;
        Ok(Fabric {
            bridge,
            plugged: Default::default(),
        })
    }

    /// A new namespace holding `ip`/24, plugged into the bridge. The others
    /// forget the address's old hardware address at once (as a cloud's
    /// network does when an address moves), rather than after ARP times out.
    pub fn plug(&self, tag: &str, ip: Ipv4Addr) -> anyhow::Result<Netns> {
        let ns = Netns::new(&format!("demo{tag}"))?;
        let (_, bridge_end) = link(&ns, &[&format!("{ip}/24")], &self.bridge, &[])
            .with_context(|| format!("plugging {tag} in"))?;
        self.bridge
            .ip(&["link", "set", &bridge_end, "master", "br0"])?;
        let mut plugged = self.plugged.lock().expect("plugged");
        for other in plugged.iter() {
            // A namespace already gone has nothing to forget.
            let _ = netns::ip(&["-n", other, "neigh", "flush", "to", &ip.to_string()]);
        }
        plugged.push(ns.name.clone());
        Ok(ns)
    }
}

/// A workload: its namespace, and the server and caller running in it.
pub struct Workload {
    pub ip: Ipv4Addr,
    ns: Netns,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<std::io::Result<()>>>,
    /// Calls answered.
    pub calls: Arc<AtomicU64>,
}

impl Workload {
    pub fn new(ns: Netns, ip: Ipv4Addr) -> Workload {
        Workload {
            ip,
            ns,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            calls: Arc::default(),
        }
    }

    /// Serves `port`: every connection gets a short answer.
    pub fn serve(&mut self, port: u16) -> anyhow::Result<()> {
        let addr = SocketAddr::new(IpAddr::V4(self.ip), port);
        let listener = self.ns.run(move || TcpListener::bind(addr))??;
        listener.set_nonblocking(true)?;
        let stop = self.stop.clone();
        self.threads.push(self.ns.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                        let mut buf = [0u8; 64];
                        let _ = s.read(&mut buf);
                        let _ = s.write_all(b"ok\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })?);
        Ok(())
    }

    /// Calls `targets` in turn, one every `every`.
    pub fn call(&mut self, targets: Vec<SocketAddr>, every: Duration) -> anyhow::Result<()> {
        let (stop, calls) = (self.stop.clone(), self.calls.clone());
        self.threads.push(self.ns.spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let to = targets[i % targets.len()];
                i += 1;
                if let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_millis(300)) {
                    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                    let mut buf = [0u8; 8];
                    if s.write_all(b"hello\n").is_ok() && s.read(&mut buf).is_ok_and(|n| n > 0) {
                        calls.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(every);
            }
        })?);
        Ok(())
    }

    /// Stops its server and caller; the namespace (and its address) goes
    /// when the workload is dropped.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        self.stop();
    }
}
