//! A real `flowattr collector` process for tests and benchmarks: a
//! development PKI, the jsonl-sink component in a drop-in directory, a
//! configuration file, and the process itself (killed on drop).

#![allow(dead_code)] // The test and the benchmark use different parts.

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use flowattr_transport::certs;

pub struct CollectorProcess {
    child: Child,
    config: PathBuf,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub metrics: SocketAddr,
}

impl CollectorProcess {
    /// Writes a PKI for `agents` (who may claim any address), installs
    /// `sink` (a bundled sink plugin's crate name), and starts a collector
    /// holding flows for `hold`.
    pub fn start(dir: &Path, agents: &[&str], hold: &str, sink: &str) -> Self {
        Self::start_with(dir, agents, hold, sink, "")
    }

    /// [`CollectorProcess::start`] with more top-level settings (TOML lines,
    /// such as `workers = 2`).
    pub fn start_with(dir: &Path, agents: &[&str], hold: &str, sink: &str, settings: &str) -> Self {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        certs::generate_dev_pki(&dir.join("pki"), &["collector"], agents).unwrap();
        let status = Command::new(bin())
            .args(["plugin", "install"])
            .arg(workspace.join(format!(
                "target/wasm32-wasip2/release/{}.wasm",
                sink.replace('-', "_")
            )))
            .arg("--manifest")
            .arg(workspace.join(format!("plugins/{sink}/{sink}.toml")))
            .arg("--dir")
            .arg(dir.join("plugins"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "installing jsonl-sink (run scripts/build first)"
        );
        let addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
        let pki = dir.join("pki");
        let claims: String = agents
            .iter()
            .map(|a| format!("{a} = [\"any\"]\n"))
            .collect();
        let config = format!(
            "name = \"collector\"\nlisten = \"{addr}\"\ndata_dir = \"{data}\"\nhold = \"{hold}\"\n{settings}\n\
             [tls]\nca = \"{pki}/ca.pem\"\ncert = \"{pki}/collector.pem\"\nkey = \"{pki}/collector.key\"\n\
             [claims]\n{claims}\
             [plugins]\ndirectory = \"{plugins}\"\ncache_dir = \"{cache}\"\nwatch = false\nsink = \"{sink}\"\n\
             [[outputs]]\ntype = \"file\"\ndir = \"{out}\"\n\
             [metrics]\nlisten = \"{metrics}\"\n",
            data = dir.join("data").display(),
            pki = pki.display(),
            plugins = dir.join("plugins").display(),
            cache = dir.join("cache").display(),
            out = dir.join("out").display(),
        );
        let config_path = dir.join("collector.toml");
        std::fs::write(&config_path, config).unwrap();
        let child = spawn(&config_path);
        let mut this = Self {
            child,
            config: config_path,
            dir: dir.to_owned(),
            addr,
            metrics,
        };
        this.wait_up();
        this
    }

    fn wait_up(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(self.metrics).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("collector exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "collector did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no shutdown, nothing flushed.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Starts the process again with the same configuration and data.
    pub fn restart(&mut self) {
        self.child = spawn(&self.config);
        self.wait_up();
    }

    /// CPU time of the collector's threads (schedstat: nanoseconds).
    pub fn cpu_seconds(&self) -> f64 {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id())).unwrap();
        let ns: u64 = tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        ns as f64 / 1e9
    }

    /// Minor page faults the process has taken so far: each is a page of
    /// memory touched for the first time (freshly zeroed or newly mapped).
    pub fn minor_faults(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name (which is in parentheses): state is
        // field 3, minflt field 10.
        let after_name = &stat[stat.rfind(')').expect("stat has a name") + 2..];
        after_name.split(' ').nth(7).unwrap().parse().unwrap()
    }

    /// Flows this run of the process has written.
    pub fn flows_out(&self) -> u64 {
        self.metric("flowattr_collector_flows_out") as u64
    }

    /// A metric's value summed over its labels.
    pub fn metric(&self, name: &str) -> f64 {
        let text =
            flowattr_daemon::metrics::scrape(self.metrics).expect("collector metrics endpoint");
        flowattr_daemon::metrics::metric_sum(&text, name, &[])
    }

    /// The process's resident memory (VmRSS).
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .expect("VmRSS");
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    pub fn wait_flows(&self, n: u64, within: Duration) {
        let deadline = Instant::now() + within;
        while self.flows_out() < n {
            assert!(
                Instant::now() < deadline,
                "collector wrote {} of {n} flows",
                self.flows_out()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Bytes in the output directory.
    pub fn output_bytes(&self) -> u64 {
        std::fs::read_dir(self.dir.join("out"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Every flow line written to the output files so far (all runs).
    pub fn written_lines(&self) -> Vec<String> {
        let out = self.dir.join("out");
        let Ok(files) = flowattr_collector::output::files_of(&out, "flows", "jsonl") else {
            return Vec::new();
        };
        files
            .iter()
            .flat_map(|f| {
                std::fs::read_to_string(f)
                    .unwrap()
                    .lines()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_flowattr"))
}

fn spawn(config: &Path) -> Child {
    Command::new(bin())
        .arg("collector")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap()
}

/// A UDP port free now (for QUIC).
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A TCP port free now (for the metrics endpoint): a free UDP port may be
/// taken for TCP by another test's connection.
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
