//! The soak's processes: the broker and the two collectors, and the faults
//! done to them.

use std::{
    fs,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{load, write};

pub const OUTPUT_TOPIC: &str = "soak-flows";
pub const OUTPUT_PARTITIONS: i32 = 3;
/// The second collector's file output lives on a tmpfs this large.
const TMPFS_BYTES: u64 = 2 << 30;

/// The collectors' settings that bound their memory (see ARCHITECTURE.md,
/// "Memory"), and the bound's constants.
const MAX_HELD_FLOWS: u64 = 100_000;
const MAX_QUEUED_BYTES: u64 = 64 << 20;
const ARRIVAL_QUEUE_BYTES: u64 = 32 << 20;
const MAX_RANGES: u64 = 100_000;
/// A collector with its plugins loaded and no load (measured idle at about
/// 90 MiB on this machine), with room for allocator slack.
const BASE_BYTES: u64 = 160 << 20;
/// Per held flow: the decoded flow, its hold and counterpart entries.
const HELD_FLOW_BYTES: u64 = 1024;
const RANGE_BYTES: u64 = 64;
/// Frames between the receiver and the core: two channels of 16 and one
/// being handed over, each at most this large for the soak's batches.
const FRAMES_IN_FLIGHT_BYTES: u64 = 33 * (1 << 20);

/// What was done to the processes.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    pub collector_kills: u32,
    pub broker_restarts: u32,
    pub broker_freezes: u32,
    pub disk_fills: u32,
    pub sink_swaps: u32,
    /// Faults that could not be injected here, and why.
    pub skipped: Vec<String>,
}

fn free_tcp_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_udp_port() -> anyhow::Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Tansu on loopback with SQLite storage in the work directory.
pub struct Broker {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl Broker {
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let mut broker = Self {
            port: free_tcp_port()?,
            dir: dir.join("broker"),
            child: None,
            starts: 0,
        };
        fs::create_dir_all(&broker.dir)?;
        broker.spawn()?;
        Ok(broker)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = fs::File::create(self.dir.join(format!("tansu-{}.log", self.starts)))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let child = Command::new("tansu")
                .args([
                    "broker",
                    "--listener-url",
                    &url,
                    "--advertised-listener-url",
                    &url,
                ])
                // A relative path: Tansu takes the URL's path as relative.
                .args(["--storage-engine", "sqlite://tansu.db"])
                .current_dir(&self.dir)
                .args(["--cluster-id", "flowattr-soak"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log.try_clone()?)
                .spawn()
                .context("starting tansu (run scripts/bootstrap)")?;
            self.child = Some(child);
            if wait_for_tcp(&self.address(), Duration::from_secs(10)) {
                return Ok(());
            }
            self.kill();
            anyhow::ensure!(
                Instant::now() < deadline,
                "the broker did not start; see {}",
                self.dir.display()
            );
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(child.id(), libc::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the broker and starts it again on the same storage.
    pub fn restart(&mut self, faults: &mut Faults) -> anyhow::Result<()> {
        println!("soak: restarting the broker");
        self.kill();
        std::thread::sleep(Duration::from_secs(2));
        self.spawn()?;
        faults.broker_restarts += 1;
        Ok(())
    }

    /// Freezes the broker for `for_`: the Kafka outputs and sharing stall.
    pub fn freeze(
        &mut self,
        for_: Duration,
        collectors: &mut Collectors,
        faults: &mut Faults,
    ) -> anyhow::Result<()> {
        let pid = self.child.as_ref().context("the broker is running")?.id();
        println!(
            "soak: freezing the broker for {}",
            humantime::format_duration(for_)
        );
        signal(pid, libc::SIGSTOP);
        let until = Instant::now() + for_;
        while Instant::now() < until {
            collectors.sample_rss();
            std::thread::sleep(Duration::from_millis(250));
        }
        signal(pid, libc::SIGCONT);
        faults.broker_freezes += 1;
        Ok(())
    }

    pub fn stop(&mut self) {
        self.kill();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on a child's pid has no memory effects.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

fn wait_for_tcp(address: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect(address).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// One collector process and where it lives.
struct Collector {
    name: String,
    config: PathBuf,
    listen: SocketAddr,
    metrics: SocketAddr,
    out: PathBuf,
    plugins: PathBuf,
    child: Option<Child>,
    starts: u32,
    peak_rss: u64,
}

/// The two collectors.
pub struct Collectors {
    exe: PathBuf,
    dir: PathBuf,
    all: [Collector; 2],
    /// The tmpfs under the second collector's output, if mounted.
    tmpfs: Option<PathBuf>,
}

impl Collectors {
    pub fn start(
        exe: &Path,
        dir: &Path,
        plugins: &Path,
        broker: &Broker,
        agents: usize,
    ) -> anyhow::Result<Self> {
        let tmpfs_dir = dir.join("disk-2");
        fs::create_dir_all(&tmpfs_dir)?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={TMPFS_BYTES}"), "tmpfs"])
            .arg(&tmpfs_dir)
            .status()
            .is_ok_and(|s| s.success());
        let mut all = Vec::new();
        for n in 1..=2 {
            let name = format!("collector-{n}");
            let plugin_dir = dir.join(format!("plugins-{n}"));
            fs::create_dir_all(&plugin_dir)?;
            for file in ["jsonl-sink.wasm", "jsonl-sink.toml"] {
                fs::copy(plugins.join(file), plugin_dir.join(file))
                    .with_context(|| format!("copying {file} from {}", plugins.display()))?;
            }
            let out = if n == 2 {
                tmpfs_dir.join("out")
            } else {
                dir.join("out-1")
            };
            let c = Collector {
                config: dir.join(format!("{name}.toml")),
                listen: SocketAddr::from(([127, 0, 0, 1], free_udp_port()?)),
                metrics: SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?)),
                out,
                plugins: plugin_dir,
                name,
                child: None,
                starts: 0,
                peak_rss: 0,
            };
            write(&c.config, &c.toml(dir, broker, agents))?;
            all.push(c);
        }
        let all: [Collector; 2] = all
            .try_into()
            .map_err(|_| anyhow::anyhow!("two collectors"))?;
        let mut collectors = Self {
            exe: exe.to_owned(),
            dir: dir.to_owned(),
            all,
            tmpfs: mounted.then_some(tmpfs_dir),
        };
        for i in 0..2 {
            collectors.spawn(i)?;
        }
        Ok(collectors)
    }

    pub fn addrs(&self) -> [SocketAddr; 2] {
        [self.all[0].listen, self.all[1].listen]
    }

    pub fn output_dirs(&self) -> Vec<PathBuf> {
        self.all.iter().map(|c| c.out.clone()).collect()
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let c = &mut self.all[i];
        c.starts += 1;
        let log = fs::File::create(self.dir.join(format!("{}-{}.log", c.name, c.starts)))?;
        let child = Command::new(&self.exe)
            .args(["collector", "--config"])
            .arg(&c.config)
            .env("FLOWATTR_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting a collector")?;
        c.child = Some(child);
        // Up once its metrics answer (they start after the receiver).
        let deadline = Instant::now() + Duration::from_secs(60);
        while scrape(c.metrics).is_none() {
            if let Some(status) = c.child.as_mut().and_then(|ch| ch.try_wait().ok().flatten()) {
                anyhow::bail!(
                    "{} exited at start ({status}); see its log in {}",
                    c.name,
                    self.dir.display()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} did not start within a minute",
                c.name
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// SIGKILL, two seconds down, start again.
    pub fn kill_and_restart(&mut self, i: usize, faults: &mut Faults) -> anyhow::Result<()> {
        println!("soak: kill -9 {}", self.all[i].name);
        if let Some(mut child) = self.all[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        faults.collector_kills += 1;
        std::thread::sleep(Duration::from_secs(2));
        self.spawn(i)
    }

    /// Fills the second collector's tmpfs for `for_`, then frees it.
    pub fn fill_disk(&mut self, for_: Duration, faults: &mut Faults) -> anyhow::Result<()> {
        let Some(disk) = self.tmpfs.clone() else {
            faults
                .skipped
                .push("disk full: no tmpfs (mounting needs root)".into());
            return Ok(());
        };
        println!(
            "soak: filling {}'s disk for {}",
            self.all[1].name,
            humantime::format_duration(for_)
        );
        let filler = disk.join("filler");
        let file = fs::File::create(&filler)?;
        let free = free_bytes(&disk)?;
        use std::os::fd::AsRawFd;
        // All but a few blocks (tmpfs rounds), then the rest a page at a time.
        let mut taken = 0u64;
        for chunk in [free.saturating_sub(1 << 20), 1 << 16, 1 << 12] {
            loop {
                // SAFETY: fallocate(2) on a file descriptor we own.
                let rc = unsafe {
                    libc::fallocate(
                        file.as_raw_fd(),
                        0,
                        taken as libc::off_t,
                        chunk as libc::off_t,
                    )
                };
                if rc != 0 || chunk == 0 {
                    break;
                }
                taken += chunk;
                if chunk > 1 << 16 {
                    break;
                }
            }
        }
        anyhow::ensure!(taken > 0, "fallocate: {}", std::io::Error::last_os_error());
        let until = Instant::now() + for_;
        while Instant::now() < until {
            self.sample_rss();
            std::thread::sleep(Duration::from_millis(250));
        }
        drop(file);
        fs::remove_file(&filler)?;
        faults.disk_fills += 1;
        Ok(())
    }

    /// Installs the sink again into the second collector's watched plugin
    /// directory (write aside, rename over): it reloads while flows pass.
    pub fn swap_sink(&mut self, plugins: &Path, faults: &mut Faults) -> anyhow::Result<()> {
        println!("soak: hot-swapping {}'s sink plugin", self.all[1].name);
        let dir = &self.all[1].plugins;
        for file in ["jsonl-sink.wasm", "jsonl-sink.toml"] {
            let tmp = dir.join(format!(".{file}.new"));
            fs::copy(plugins.join(file), &tmp)?;
            fs::rename(&tmp, dir.join(file))?;
        }
        faults.sink_swaps += 1;
        Ok(())
    }

    /// Records each running collector's resident memory.
    pub fn sample_rss(&mut self) {
        for c in &mut self.all {
            if let Some(rss) = c.child.as_ref().and_then(|ch| rss_bytes(ch.id())) {
                c.peak_rss = c.peak_rss.max(rss);
            }
        }
    }

    pub fn peak_rss(&self) -> [u64; 2] {
        [self.all[0].peak_rss, self.all[1].peak_rss]
    }

    /// The memory bound of a collector with the soak's settings.
    pub fn rss_bound(&self) -> u64 {
        BASE_BYTES
            + MAX_HELD_FLOWS * HELD_FLOW_BYTES
            + ARRIVAL_QUEUE_BYTES
            + 2 * MAX_QUEUED_BYTES
            + MAX_RANGES * RANGE_BYTES
            + FRAMES_IN_FLIGHT_BYTES
    }

    /// Batches both collectors hold journaled and not yet written out;
    /// `None` while one does not answer.
    pub fn journaled(&self) -> Option<u64> {
        let mut total = 0.0;
        for c in &self.all {
            let text = scrape(c.metrics)?;
            total += flowattr_daemon::metrics::metric_sum(
                &text,
                "flowattr_collector_journal_batches",
                &[],
            ) + flowattr_daemon::metrics::metric_sum(
                &text,
                "flowattr_collector_arrivals_waiting",
                &[],
            );
        }
        Some(total as u64)
    }

    pub fn stop(&mut self) {
        for c in &mut self.all {
            if let Some(mut child) = c.child.take() {
                signal(child.id(), libc::SIGTERM);
                let _ = child.wait();
            }
        }
    }
}

impl Drop for Collectors {
    fn drop(&mut self) {
        for c in &mut self.all {
            if let Some(mut child) = c.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if let Some(disk) = &self.tmpfs {
            let _ = Command::new("umount").arg(disk).status();
        }
    }
}

impl Collector {
    fn toml(&self, dir: &Path, broker: &Broker, agents: usize) -> String {
        let pki = dir.join("pki");
        let claims: String = (0..agents)
            .map(|a| format!("{:?} = [{:?}]\n", load::agent_name(a), load::prefix(a)))
            .collect();
        format!(
            r#"name = "{name}"
listen = "{listen}"
data_dir = "{data}"
hold = "10s"
silent_after = "30s"
max_held_flows = {MAX_HELD_FLOWS}
max_queued_bytes = {MAX_QUEUED_BYTES}
arrival_queue_bytes = {ARRIVAL_QUEUE_BYTES}

[tls]
ca = "{pki}/ca.pem"
cert = "{pki}/{name}.pem"
key = "{pki}/{name}.key"

[ownership]
max_ranges = {MAX_RANGES}

[claims]
{claims}
[kafka]
brokers = "{broker}"
topic = "soak-ownership"
# The soak's faults are about delivery, not trust: sharing unsigned.
unauthenticated = true

[plugins]
directory = "{plugins}"
cache_dir = "{cache}"
watch = true
sink = "jsonl-sink"

[[outputs]]
type = "file"
dir = "{out}"
rotate_bytes = 16777216
keep_files = 0

[[outputs]]
type = "kafka"
brokers = "{broker}"
topic = "{OUTPUT_TOPIC}"
partitions = {OUTPUT_PARTITIONS}

[metrics]
enabled = true
listen = "{metrics}"
"#,
            name = self.name,
            listen = self.listen,
            data = dir.join(format!("data-{}", self.name)).display(),
            pki = pki.display(),
            broker = broker.address(),
            plugins = self.plugins.display(),
            cache = dir.join("cache").display(),
            out = self.out.display(),
            metrics = self.metrics,
        )
    }
}

/// `GET /metrics`, or `None` when nothing answers.
fn scrape(address: SocketAddr) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    // SAFETY: statvfs(3) writes into the zeroed struct we pass.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut s) };
    anyhow::ensure!(rc == 0, "statvfs: {}", std::io::Error::last_os_error());
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}
