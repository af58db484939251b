//! A real Kafka-protocol broker for tests: Tansu with in-memory storage on a
//! free loopback port.
//!
//! `Broker::start()` waits until the broker answers a Kafka metadata
//! request. `stop()` and `restart()` keep the port (an in-memory broker
//! comes back empty: topics and data are gone). The process is killed when
//! the `Broker` is dropped, also when a test panics. Without `tansu` (run
//! `scripts/bootstrap`) the test fails with a message saying so; it is never
//! skipped silently.

#![allow(dead_code)] // Each test crate uses a different part.

use std::{
    env, fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig,
    consumer::{BaseConsumer, Consumer},
};

/// How long a broker may take to start answering.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Broker {
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    starts: u32,
}

impl Broker {
    /// Starts a broker on a free loopback port and waits until it answers.
    pub fn start() -> Broker {
        let bin = tansu_binary();
        let port = free_port();
        let dir = tempfile::tempdir().expect("a temporary directory for the broker's log");
        let mut broker = Broker {
            bin,
            port,
            child: None,
            dir,
            starts: 0,
        };
        broker.spawn();
        broker
    }

    /// `host:port`, for `bootstrap.servers`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Creates a topic with `tansu topic create` and waits until the broker
    /// reports it with all its partitions.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        assert!(
            self.is_running(),
            "create_topic({name}): the broker is stopped"
        );
        let output = Command::new(&self.bin)
            .args(["topic", "create", name, "--partitions"])
            .arg(partitions.to_string())
            .args(["--broker", &self.url()])
            .output()
            .unwrap_or_else(|e| panic!("could not run {} topic create: {e}", self.bin.display()));
        assert!(
            output.status.success(),
            "tansu topic create {name} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.partitions(name) == Some(partitions as usize) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "topic {name} did not appear with {partitions} partitions within {START_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The topic's partition count as the broker reports it, `None` if it
    /// does not know the topic or does not answer.
    pub fn partitions(&self, topic: &str) -> Option<usize> {
        let client = metadata_client(&self.address());
        let metadata = client
            .fetch_metadata(Some(topic), Duration::from_secs(2))
            .ok()?;
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len())
            .filter(|&n| n > 0)
    }

    /// Kills the broker and waits until it is gone. Its data is lost.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: as in `signal`; a paused broker must be thawed to die
            // promptly and release its port.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGCONT) };
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the broker (SIGSTOP): connections stay open, nothing is
    /// answered, nothing is lost. [`Broker::resume`] thaws it.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("the broker is running");
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "signal {signal} to the broker failed");
    }

    /// Stops the broker (if running) and starts a new one on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The broker's log, for failure messages.
    pub fn log(&self) -> String {
        let mut text = String::new();
        for n in 1..=self.starts {
            let path = self.log_path(n);
            let log = fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            text.push_str(&format!("--- {} (last lines) ---\n", path.display()));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.dir.path().join(format!("tansu-{start}.log"))
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = fs::File::create(self.log_path(self.starts)).expect("the broker's log file");
        let url = self.url();
        let deadline = Instant::now() + START_TIMEOUT;
        // The port was just freed by the previous broker (or by
        // `free_port`); binding can fail for a moment, so retry the spawn.
        loop {
            let mut child = Command::new(&self.bin)
                .args(["broker", "--listener-url", &url])
                .args(["--advertised-listener-url", &url])
                .args(["--storage-engine", "memory://tansu/"])
                .args(["--cluster-id", "flowattr-test"])
                .env_remove("CLUSTER_ID")
                .env_remove("LISTENER_URL")
                .env_remove("ADVERTISED_LISTENER_URL")
                .env_remove("STORAGE_ENGINE")
                .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file handle"))
                .stderr(log.try_clone().expect("log file handle"))
                .spawn()
                .unwrap_or_else(|e| panic!("could not start {}: {e}", self.bin.display()));
            match wait_until_ready(&mut child, &self.address(), deadline) {
                Ok(()) => {
                    self.child = Some(child);
                    return;
                }
                Err(why) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    if Instant::now() >= deadline {
                        panic!(
                            "the tansu broker on {url} did not start: {why}\n{}",
                            self.log()
                        );
                    }
                    thread::sleep(Duration::from_millis(200));
                }
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until the broker answers a metadata request; an error if the
/// process exits first or the deadline passes.
fn wait_until_ready(child: &mut Child, address: &str, deadline: Instant) -> Result<(), String> {
    let client = metadata_client(address);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the broker exited with {status}"));
        }
        if let Ok(m) = client.fetch_metadata(None, Duration::from_millis(500))
            && !m.brokers().is_empty()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("no metadata answer within {START_TIMEOUT:?}"));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

fn metadata_client(address: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", address)
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "200")
        .set("log_level", "0")
        .create()
        .expect("a metadata client")
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `tansu` on `PATH` or in `~/.cargo/bin`; fails the test if absent.
fn tansu_binary() -> PathBuf {
    let on_path = env::var_os("PATH")
        .map(|p| {
            env::split_paths(&p)
                .map(|d| d.join("tansu"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    let in_cargo = cargo_home.map(|h| h.join("bin").join("tansu"));
    on_path
        .into_iter()
        .chain(in_cargo)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the tansu Kafka broker is not installed (not on PATH, not in ~/.cargo/bin); \
                 run scripts/bootstrap (it runs `cargo install --locked tansu --features dynostore`)"
            )
        })
}
