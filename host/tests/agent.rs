//! The whole agent on real traffic between network namespaces: the bundled
//! `ipman` and `ec2-disk` plugins attribute each flow's local side from
//! IPMan's state (written with the IPMan-side tool) and the instance identity
//! document; after an address moves to another workload, new flows carry the
//! new workload and none of the old; flows from a shared IPv4 address are told
//! apart by port. Every batch carries a watermark that no later flow ended
//! before, and an idle agent still advances it. Needs root (CI runs as root)
//! and `scripts/build`.

mod common;

use flowattr_host::netns::{Netns, link};

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{install, install_bundled};
use flowattr_host::config::{AgentConfig, PrivilegesConfig};
use flowattr_model::{AttributedFlow, FlowBatch, Side};
use ipman::admin::{RawWorkload, StateFile};

/// The agent running in the background with its output file.
struct RunningAgent {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    output: PathBuf,
}

impl RunningAgent {
    fn start(config: AgentConfig) -> RunningAgent {
        let output = config.output.path.clone().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            runtime.block_on(flowattr_host::agent::run(config, async {
                let _ = stopped.await;
            }))
        });
        let agent = RunningAgent {
            stop: Some(stop),
            thread: Some(thread),
            output,
        };
        // Capturing once the output file exists (the agent opens it last).
        let deadline = Instant::now() + Duration::from_secs(30);
        while !agent.output.exists() {
            assert!(Instant::now() < deadline, "agent did not start");
            assert!(
                !agent.thread.as_ref().unwrap().is_finished(),
                "agent stopped early"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    fn batches(&self) -> Vec<FlowBatch> {
        std::fs::read_to_string(&self.output)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is a batch"))
            .collect()
    }

    /// Flows written so far whose local address is one of `locals`, waiting
    /// (up to 10 s) until there are at least `n`.
    fn flows_from(&self, locals: &[IpAddr], n: usize) -> Vec<AttributedFlow> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let flows: Vec<AttributedFlow> = self
                .batches()
                .into_iter()
                .flat_map(|b| b.flows)
                .filter(|f| locals.contains(&f.flow.local.ip()))
                .collect();
            if flows.len() >= n || Instant::now() > deadline {
                return flows;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.thread
            .take()
            .unwrap()
            .join()
            .unwrap()
            .expect("agent ran cleanly");
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn workload_of(flow: &AttributedFlow) -> String {
    match &flow.local {
        Side::Attributed(a) => a.workload.id.clone(),
        Side::Unattributed(reason) => format!("unattributed:{}", reason.as_str()),
        Side::Pending => "pending".into(),
    }
}

fn app(name: &str) -> RawWorkload {
    RawWorkload {
        app: Some(name.into()),
        ..RawWorkload::default()
    }
}

fn config(tmp: &Path, plugins: &Path) -> AgentConfig {
    let mut config = AgentConfig {
        name: Some("test-agent".into()),
        // The test process itself keeps root for the tests after this one.
        privileges: PrivilegesConfig::keep_root(),
        ..AgentConfig::default()
    };
    config.plugins.directory = plugins.to_owned();
    config.plugins.cache_dir = Some(tmp.join("cache"));
    config.batch.max_age = Duration::from_millis(200);
    config.output.path = Some(tmp.join("flows.jsonl"));
    config.metrics.listen = "127.0.0.1:19475".parse().unwrap();
    config
}

/// A server in `ns` on `addr` answering every connection with 3 bytes.
fn serve(ns: &Netns, addr: SocketAddr) {
    let listener = ns.run(move || TcpListener::bind(addr).unwrap()).unwrap();
    ns.spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { return };
            let mut buf = [0u8; 16];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"ok\n");
        }
    })
    .unwrap();
}

/// A client in `ns`, bound to `local` (port 0 for any), sending 5 bytes to
/// `to` and reading the answer.
fn exchange(ns: &Netns, local: SocketAddr, to: SocketAddr) {
    ns.run(move || {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(to),
            socket2::Type::STREAM,
            None,
        )
        .unwrap();
        socket.bind(&local.into()).unwrap();
        socket.connect(&to.into()).unwrap();
        let mut s: TcpStream = socket.into();
        s.write_all(b"hello").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, b"ok\n");
    })
    .unwrap();
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn local_sides_carry_the_workload_that_owned_the_address_at_flow_start() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    let (ec2_state, ipman_state) = (tmp.path().join("state/ec2"), tmp.path().join("state/ipman"));
    install_bundled(&plugins, "ipman", &ipman_state);
    install_bundled(&plugins, "ec2-disk", &ec2_state);

    // "c1": a container with its own IPv4 and IPv6 addresses. "shared": the
    // container host's IPv4 address, shared by IPv6-only containers through
    // port ranges; outside the pool it is the host's own (the instance in
    // the identity document). "peer": the remote end.
    let c1 = Netns::new("c1").unwrap();
    let shared = Netns::new("shr").unwrap();
    let peer = Netns::new("peer").unwrap();
    link(
        &c1,
        &["10.81.0.2/24", "fd00:81::2/64"],
        &peer,
        &["10.81.0.9/24", "fd00:81::9/64"],
    )
    .unwrap();
    link(&shared, &["10.82.0.2/24"], &peer, &["10.82.0.9/24"]).unwrap();
    std::fs::write(
        ec2_state.join("instance-identity.json"),
        r#"{"instanceId": "i-0host", "accountId": "123456789012", "region": "us-east-1",
            "privateIp": "10.82.0.2", "app": "container-host"}"#,
    )
    .unwrap();

    let mut state = StateFile::open(ipman_state.join("state.json")).unwrap();
    for id in ["c-old", "c-new", "c-x", "c-y"] {
        state.define_workload(id, app(id)).unwrap();
    }
    let t0 = now_ns();
    state.assign(ip("10.81.0.2"), "c-old", t0).unwrap();
    state.assign(ip("fd00:81::2"), "c-old", t0).unwrap();
    state
        .share_ipv4("10.82.0.2".parse().unwrap(), (40000, 41999))
        .unwrap();
    state
        .allocate_ports("10.82.0.2".parse().unwrap(), (40000, 40999), "c-x", t0)
        .unwrap();
    state
        .allocate_ports("10.82.0.2".parse().unwrap(), (41000, 41999), "c-y", t0)
        .unwrap();
    state.save().unwrap();

    let agent = RunningAgent::start(config(tmp.path(), &plugins));
    serve(&peer, addr("10.81.0.9:7000"));
    serve(&peer, addr("[fd00:81::9]:7000"));
    serve(&peer, addr("10.82.0.9:7000"));

    exchange(&c1, addr("10.81.0.2:0"), addr("10.81.0.9:7000"));
    exchange(&c1, addr("[fd00:81::2]:0"), addr("[fd00:81::9]:7000"));
    exchange(&shared, addr("10.82.0.2:40001"), addr("10.82.0.9:7000"));
    exchange(&shared, addr("10.82.0.2:41001"), addr("10.82.0.9:7000"));
    exchange(&shared, addr("10.82.0.2:35001"), addr("10.82.0.9:7000"));

    let c1_ips = [ip("10.81.0.2"), ip("fd00:81::2")];
    let first = agent.flows_from(&c1_ips, 2);
    assert_eq!(first.len(), 2, "{first:#?}");
    for f in &first {
        assert_eq!(workload_of(f), "c-old", "{f:#?}");
    }
    let by_port = agent.flows_from(&[ip("10.82.0.2")], 3);
    let port_owner = |port: u16| {
        let f: Vec<_> = by_port
            .iter()
            .filter(|f| f.flow.local.port() == port)
            .collect();
        assert_eq!(f.len(), 1, "one flow from port {port}: {by_port:#?}");
        workload_of(f[0])
    };
    assert_eq!(port_owner(40001), "c-x");
    assert_eq!(port_owner(41001), "c-y");
    assert_eq!(
        port_owner(35001),
        "i-0host",
        "outside the pool: the host's own traffic"
    );
    // The peer's sockets are on this machine too, but nothing claims its
    // addresses: unattributed, never someone else's workload.
    let peer_side = agent.flows_from(&[ip("10.81.0.9"), ip("10.82.0.9"), ip("fd00:81::9")], 5);
    assert_eq!(peer_side.len(), 5, "{peer_side:#?}");
    assert!(
        peer_side
            .iter()
            .all(|f| workload_of(f) == "unattributed:not-found"),
        "{peer_side:#?}"
    );

    // The container stops; its addresses go to another workload.
    let t1 = now_ns();
    for a in c1_ips {
        state.release(a, t1).unwrap();
        state.assign(a, "c-new", t1).unwrap();
    }
    state.save().unwrap();
    exchange(&c1, addr("10.81.0.2:0"), addr("10.81.0.9:7000"));
    exchange(&c1, addr("[fd00:81::2]:0"), addr("[fd00:81::9]:7000"));

    let all = agent.flows_from(&c1_ips, 4);
    assert_eq!(all.len(), 4, "{all:#?}");
    for f in &all {
        let expected = if f.flow.start_ns < t1 {
            "c-old"
        } else {
            "c-new"
        };
        assert_eq!(workload_of(f), expected, "{f:#?}");
    }
    assert_eq!(all.iter().filter(|f| f.flow.start_ns >= t1).count(), 2);

    let metrics = http_get("127.0.0.1:19475", "/metrics");
    for needle in [
        r#"flowattr_agent_attribution_total{plugin="ipman",outcome="attributed"}"#,
        r#"flowattr_agent_attribution_total{plugin="ec2-disk",outcome="attributed"} "#,
        r#"flowattr_agent_kernel_events_total{event="final_records"}"#,
        r#"flowattr_agent_dropped_total{reason="ring_buffer_full"} 0"#,
    ] {
        assert!(metrics.contains(needle), "{needle} in:\n{metrics}");
    }
    agent.stop();
}

/// A plain HTTP/1.0 GET (the agent's metrics endpoint).
fn http_get(host: &str, path: &str) -> String {
    let mut s = TcpStream::connect(host).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    text
}

#[test]
fn policy_plugins_drop_and_redact_before_batching_and_drops_are_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    install(
        &plugins,
        "port-policy",
        "kind = \"policy\"\nwit = \"0.3.0\"\n[config]\ndrop_ports = [7101]\nredact_process = true\n",
        None,
    );
    let client = Netns::new("pcli").unwrap();
    let server = Netns::new("psrv").unwrap();
    link(&client, &["10.83.0.1/24"], &server, &["10.83.0.2/24"]).unwrap();
    let mut config = config(tmp.path(), &plugins);
    config.metrics.listen = "127.0.0.1:19477".parse().unwrap();
    let agent = RunningAgent::start(config);
    serve(&server, addr("10.83.0.2:7100"));
    serve(&server, addr("10.83.0.2:7101"));
    exchange(&client, addr("10.83.0.1:0"), addr("10.83.0.2:7101"));
    exchange(&client, addr("10.83.0.1:0"), addr("10.83.0.2:7100"));

    agent.flows_from(&[ip("10.83.0.1"), ip("10.83.0.2")], 2);
    // Give a dropped flow time to show up if it were (wrongly) kept.
    std::thread::sleep(Duration::from_millis(500));
    let kept = agent.flows_from(&[ip("10.83.0.1"), ip("10.83.0.2")], 2);
    assert_eq!(kept.len(), 2, "both sides of the 7100 exchange: {kept:#?}");
    for f in &kept {
        assert!(
            f.flow.local.port() == 7100 || f.flow.remote.port() == 7100,
            "{f:#?}"
        );
        assert_eq!(
            (f.flow.pid, f.flow.cgroup_id),
            (0, 0),
            "process redacted: {f:#?}"
        );
    }
    let metrics = http_get("127.0.0.1:19477", "/metrics");
    assert!(
        metrics.contains(r#"flowattr_agent_dropped_total{reason="policy"} 2"#),
        "{metrics}"
    );
    agent.stop();
}

#[test]
fn flows_closed_just_before_shutdown_are_still_written() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let client = Netns::new("scli").unwrap();
    let server = Netns::new("ssrv").unwrap();
    link(&client, &["10.84.0.1/24"], &server, &["10.84.0.2/24"]).unwrap();
    let mut config = config(tmp.path(), &plugins);
    config.metrics.enabled = false;
    // Nothing is read or flushed on its own before the stop below.
    config.capture.poll_interval = Duration::from_secs(1);
    config.batch.max_age = Duration::from_secs(60);
    let output = config.output.path.clone().unwrap();
    let agent = RunningAgent::start(config);
    serve(&server, addr("10.84.0.2:7200"));
    exchange(&client, addr("10.84.0.1:0"), addr("10.84.0.2:7200"));
    std::thread::sleep(Duration::from_millis(50));
    agent.stop();

    let flows: Vec<AttributedFlow> = std::fs::read_to_string(output)
        .unwrap()
        .lines()
        .flat_map(|l| serde_json::from_str::<FlowBatch>(l).unwrap().flows)
        .filter(|f| f.flow.local.port() == 7200 || f.flow.remote.port() == 7200)
        .collect();
    assert_eq!(flows.len(), 2, "both sides written at shutdown: {flows:#?}");
}

#[test]
fn every_batch_carries_a_watermark_no_later_flow_ended_before_and_idle_agents_still_send_it() {
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let client = Netns::new("wcli").unwrap();
    let server = Netns::new("wsrv").unwrap();
    link(&client, &["10.86.0.1/24"], &server, &["10.86.0.2/24"]).unwrap();
    let mut config = config(tmp.path(), &plugins);
    config.metrics.enabled = false;
    let agent = RunningAgent::start(config);
    serve(&server, addr("10.86.0.2:7300"));
    for _ in 0..6 {
        exchange(&client, addr("10.86.0.1:0"), addr("10.86.0.2:7300"));
        std::thread::sleep(Duration::from_millis(120));
    }
    let ours = |f: &AttributedFlow| f.flow.local.port() == 7300 || f.flow.remote.port() == 7300;
    assert_eq!(
        agent
            .flows_from(&[ip("10.86.0.1"), ip("10.86.0.2")], 12)
            .len(),
        12
    );
    let last_end = agent
        .batches()
        .iter()
        .flat_map(|b| &b.flows)
        .filter(|f| ours(f))
        .map(|f| f.flow.end_ns)
        .max()
        .unwrap();
    // Nothing of ours for a while: max_age is 200ms in these tests.
    std::thread::sleep(Duration::from_millis(800));
    agent.stop();

    let batches: Vec<FlowBatch> = std::fs::read_to_string(tmp.path().join("flows.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut watermark = 0;
    for b in &batches {
        assert!(b.complete_until_ns >= watermark, "never goes back");
        assert!(b.complete_until_ns <= b.created_ns);
        for f in b.flows.iter().filter(|f| ours(f)) {
            assert!(
                f.flow.end_ns >= watermark,
                "a flow that ended at {} came after a batch complete until {watermark}",
                f.flow.end_ns
            );
        }
        watermark = b.complete_until_ns;
    }
    // Our traffic stopped, yet a batch every max_age (empty, unless the
    // host had other traffic) carried the watermark well past its end.
    let after = batches.iter().filter(|b| b.created_ns > last_end).count();
    assert!(after >= 3, "{after} batches after the traffic");
    assert!(
        watermark > last_end + 300_000_000,
        "{watermark} vs {last_end}"
    );
}
