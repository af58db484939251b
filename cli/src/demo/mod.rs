//! `flowattr demo`: the whole product on one machine, as root. Network
//! namespaces stand in for an instance and a few containers; their
//! addresses are assigned through IPMan's state; real traffic flows between
//! them; workloads stop and hand their addresses to new ones mid-run. The
//! real agent (eBPF capture, `ipman` and `ec2-disk` from a drop-in
//! directory) ships over QUIC to the real collector, which attributes remote
//! sides from heartbeats, runs `sonar-legacy` as the load-balancer fallback
//! and again in shadow for the A/B, and reads the legacy event stream, which
//! arrives late as in production. At the end every attributed flow is
//! checked against who really owned each address, and the A/B table and HTML
//! report are written. Everything it made is removed, also on Ctrl-C.

mod children;
mod fabric;
mod ledger;
mod results;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use flowattr_model::Workload as Identity;
use flowattr_plugin_runtime::{copy_plugin, manifest::Mode};

use self::{
    children::Child,
    fabric::{Fabric, Workload},
    ledger::Ledger,
};
use crate::ab::ReportFiles;

/// Arguments of `flowattr demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the demo keeps its files (emptied first).
    #[arg(long, default_value = "target/demo")]
    dir: PathBuf,
    /// Where the bundled plugins are installed [default: plugins/ here, or
    /// of the checkout this flowattr was built in].
    #[arg(long, default_value_os_t = crate::bundled::path("plugins"), hide_default_value = true)]
    plugins: PathBuf,
    /// How late the legacy event stream reports each address change.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    legacy_delay: Duration,
    #[command(flatten)]
    out: ReportFiles,
}

const HOLD: Duration = Duration::from_secs(3);
const APP_PORT: u16 = 8080;
const DB_PORT: u16 = 5432;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, last)
}

fn identity(id: &str, app: &str) -> Identity {
    Identity {
        app: Some(app.into()),
        cluster: Some(format!("{app}-demo")),
        ..Identity::with_id(id)
    }
}

/// A free loopback port (TCP or UDP as asked).
fn free_port(udp: bool) -> anyhow::Result<u16> {
    Ok(if udp {
        std::net::UdpSocket::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port()
    })
}

/// Installs `name` from the bundle into `dir` under `as_name`, with grants
/// pointed at `grants` and the given mode.
fn install(
    bundle: &Path,
    name: &str,
    dir: &Path,
    as_name: &str,
    mode: Mode,
    grants: &[(&str, &Path)],
) -> anyhow::Result<()> {
    copy_plugin(
        bundle,
        name,
        dir,
        as_name,
        "# Installed by flowattr demo.\n",
        |m| {
            m.mode = mode;
            grants
                .iter()
                .try_for_each(|(guest, host)| m.grant(guest, *host))
        },
    )
}

/// Sleeps `d` unless interrupted; false when interrupted.
/// Whether every directory from `/` down to `dir` lets other users in.
fn reachable_by_others(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(dir) = dir.canonicalize() else {
        return false;
    };
    dir.ancestors()
        .all(|d| std::fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

fn pause(d: Duration, interrupted: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if interrupted.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !interrupted.load(Ordering::Relaxed)
}

/// Waits until something listens on TCP `port`, or `within` passes.
fn wait_listening(port: u16, within: Duration, child: &mut Child) -> anyhow::Result<()> {
    let end = Instant::now() + within;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        child.check_running()?;
        anyhow::ensure!(
            Instant::now() < end,
            "nothing listens on port {port} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "flowattr demo needs root: it makes network namespaces and loads eBPF programs.\n\
             Without root, see the same comparison on a simulated fleet: flowattr sim"
        );
        return Ok(ExitCode::FAILURE);
    }
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, interrupted.clone())?;
    }
    fabric::remove_stale();
    let outcome = run_as_root(&args, &interrupted);
    if interrupted.load(Ordering::Relaxed) {
        eprintln!("interrupted: namespaces and processes removed");
        return Ok(ExitCode::from(130));
    }
    outcome
}

fn run_as_root(args: &DemoArgs, interrupted: &AtomicBool) -> anyhow::Result<ExitCode> {
    let dir = std::path::absolute(&args.dir)?;
    let bundle = std::path::absolute(&args.plugins)?;
    crate::bundled::require(&bundle, "sonar-legacy.wasm", "--plugins")?;
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["state/ipman", "state/ec2", "out"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let step = |s: &str| eprintln!("\x1b[1m== {s}\x1b[0m");

    step("certificates, plugins and configuration");
    flowattr_transport::certs::generate_dev_pki(
        &dir.join("pki"),
        &["demo-collector"],
        &["demo-host"],
    )?;
    let (agent_plugins, collector_plugins) =
        (dir.join("agent-plugins"), dir.join("collector-plugins"));
    install(
        &bundle,
        "ipman",
        &agent_plugins,
        "ipman",
        Mode::Active,
        &[("/ipman", &dir.join("state/ipman"))],
    )?;
    install(
        &bundle,
        "ec2-disk",
        &agent_plugins,
        "ec2-disk",
        Mode::Active,
        &[("/ec2", &dir.join("state/ec2"))],
    )?;
    install(
        &bundle,
        "sonar-legacy",
        &collector_plugins,
        "sonar-legacy",
        Mode::Active,
        &[],
    )?;
    install(
        &bundle,
        "sonar-legacy",
        &collector_plugins,
        "sonar-legacy-shadow",
        Mode::Shadow,
        &[],
    )?;
    install(
        &bundle,
        "jsonl-sink",
        &collector_plugins,
        "jsonl-sink",
        Mode::Active,
        &[],
    )?;
    let gateway_id = "i-0demo0000gateway";
    std::fs::write(
        dir.join("state/ec2/instance-identity.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "instanceId": gateway_id, "accountId": "123456789012", "region": "us-east-1",
            "privateIp": ip(10).to_string(), "app": "gateway", "cluster": "gateway-demo",
        }))?,
    )?;
    let (quic, collector_metrics, agent_metrics) =
        (free_port(true)?, free_port(false)?, free_port(false)?);
    let d = dir.display();
    std::fs::write(
        dir.join("collector.toml"),
        format!(
            r#"name = "demo-collector"
listen = "127.0.0.1:{quic}"
data_dir = "{d}/collector"
hold = "{hold}s"
[tls]
ca = "{d}/pki/ca.pem"
cert = "{d}/pki/demo-collector.pem"
key = "{d}/pki/demo-collector.key"
[claims]
demo-host = ["10.77.0.0/24"]
[plugins]
directory = "{d}/collector-plugins"
watch = false
sink = "jsonl-sink"
[[outputs]]
type = "file"
dir = "{d}/out"
[metrics]
listen = "127.0.0.1:{collector_metrics}"
[legacy]
events = "{d}/legacy-events.jsonl"
[ab]
records = "{d}/ab-records.jsonl"
"#,
            hold = HOLD.as_secs()
        ),
    )?;
    // The agent drops root to `flowattr` once capture is attached, and then
    // reads its plugins from `dir`: where that user cannot reach `dir`, the
    // demo's agent keeps root, and says so.
    let agent_user = if reachable_by_others(&dir) {
        "flowattr"
    } else {
        step(&format!(
            "note: {d} is not reachable by other users, so the demo's agent keeps root instead of dropping to flowattr"
        ));
        "root"
    };
    std::fs::write(
        dir.join("agent.toml"),
        format!(
            r#"name = "demo-host"
[plugins]
directory = "{d}/agent-plugins"
watch = true
[batch]
max_age = "1s"
[transport]
collectors = ["localhost@127.0.0.1:{quic}"]
ca = "{d}/pki/ca.pem"
cert = "{d}/pki/demo-host.pem"
key = "{d}/pki/demo-host.key"
spool_dir = "{d}/spool"
[metrics]
listen = "127.0.0.1:{agent_metrics}"
[privileges]
user = "{agent_user}"
"#
        ),
    )?;

    step(
        "network namespaces: one instance and four containers on a bridge; addresses assigned through IPMan",
    );
    let mut ledger = Ledger::new(
        &dir.join("state/ipman/state.json"),
        dir.join("legacy-events.jsonl"),
        args.legacy_delay,
    )?;
    let fabric = Fabric::new()?;
    let mut gateway = Workload::new(fabric.plug("gw", ip(10))?, ip(10));
    ledger.assign(
        IpAddr::V4(ip(10)),
        &identity(gateway_id, "gateway"),
        false,
        true,
    )?;
    let spawn = |tag: &str,
                 id: &str,
                 app: &str,
                 last: u8,
                 known: bool,
                 ledger: &mut Ledger|
     -> anyhow::Result<Workload> {
        let w = Workload::new(fabric.plug(tag, ip(last))?, ip(last));
        ledger.assign(IpAddr::V4(ip(last)), &identity(id, app), true, known)?;
        Ok(w)
    };
    let mut db = spawn("db1", "c-db-1", "db", 31, true, &mut ledger)?;
    let mut api1 = spawn("api1", "c-api-1", "api", 21, true, &mut ledger)?;
    let mut api2 = spawn("api2", "c-api-2", "api", 22, true, &mut ledger)?;
    // A report worker the gateway never calls, whose address an api
    // instance scaled out later takes over.
    let mut report3 = spawn("report3", "c-report-3", "report", 23, true, &mut ledger)?;

    step("flowattr collector and flowattr agent (eBPF capture, QUIC with mutual TLS)");
    let mut collector = Child::spawn(
        "collector",
        &["collector", "--config", &format!("{d}/collector.toml")],
        &dir.join("collector.log"),
    )?;
    wait_listening(collector_metrics, Duration::from_secs(60), &mut collector)?;
    let mut agent = Child::spawn(
        "agent",
        &["agent", "--config", &format!("{d}/agent.toml")],
        &dir.join("agent.log"),
    )?;
    wait_listening(agent_metrics, Duration::from_secs(60), &mut agent)?;

    let api_targets = vec![
        SocketAddr::new(IpAddr::V4(ip(21)), APP_PORT),
        SocketAddr::new(IpAddr::V4(ip(22)), APP_PORT),
    ];
    let db_target = vec![SocketAddr::new(IpAddr::V4(ip(31)), DB_PORT)];
    db.serve(DB_PORT)?;
    for api in [&mut api1, &mut api2] {
        api.serve(APP_PORT)?;
        api.call(db_target.clone(), Duration::from_millis(300))?;
    }
    report3.call(db_target.clone(), Duration::from_millis(300))?;
    gateway.call(api_targets, Duration::from_millis(100))?;
    step(&format!(
        "traffic: gateway -> api (10.77.0.21, .22) -> db; the legacy stream reports changes {} late",
        humantime::format_duration(args.legacy_delay)
    ));
    // Stops `old`, releases its address and, 3 s later, gives it to a new
    // workload that serves the same port (and calls the db, if `calls_db`).
    let hand_over = |old: Workload,
                     (tag, id, app): (&str, &str, &str),
                     calls_db: bool,
                     ledger: &mut Ledger|
     -> anyhow::Result<Option<Workload>> {
        let last = old.ip.octets()[3];
        drop(old);
        ledger.release(IpAddr::V4(ip(last)), true)?;
        if !pause(Duration::from_secs(3), interrupted) {
            return Ok(None);
        }
        let mut new = spawn(tag, id, app, last, false, ledger)?;
        new.serve(APP_PORT)?;
        if calls_db {
            new.call(db_target.clone(), Duration::from_millis(300))?;
        }
        Ok(Some(new))
    };
    let mut late = Vec::new();
    // Scaling out: the new api instance gets the batch worker's address and
    // the gateway starts calling it. Until the late event arrives the legacy
    // method names the batch worker: an edge gateway → batch that never was.
    if pause(Duration::from_secs(4), interrupted) {
        step("churn: c-report-3 stops; 3 s later c-api-3 gets 10.77.0.23 and the gateway calls it");
        if let Some(api3) = hand_over(report3, ("api3", "c-api-3", "api"), true, &mut ledger)? {
            gateway.call(
                vec![SocketAddr::new(IpAddr::V4(ip(23)), APP_PORT)],
                Duration::from_millis(100),
            )?;
            late.push(api3);
        }
    }
    if pause(Duration::from_secs(5), interrupted) {
        step(
            "churn: c-api-2 stops; 3 s later c-batch-7 gets 10.77.0.22 and serves on the same port",
        );
        late.extend(hand_over(
            api2,
            ("batch7", "c-batch-7", "batch"),
            true,
            &mut ledger,
        )?);
    }
    if pause(Duration::from_secs(6), interrupted) {
        step("churn: c-api-1 stops; 3 s later c-cache-4 gets 10.77.0.21");
        late.extend(hand_over(
            api1,
            ("cache4", "c-cache-4", "cache"),
            false,
            &mut ledger,
        )?);
    }
    pause(Duration::from_secs(10), interrupted);
    gateway.stop();
    for w in &mut late {
        w.stop();
    }
    db.stop();
    if interrupted.load(Ordering::Relaxed) {
        return Ok(ExitCode::from(130));
    }

    step("draining: the agent ships its last batches, the collector waits out its hold");
    pause(Duration::from_secs(2), interrupted);
    agent.stop(Duration::from_secs(15));
    results::wait_written(collector_metrics, HOLD, Duration::from_secs(60))?;
    collector.stop(Duration::from_secs(15));
    ledger.finish(&dir.join("truth.jsonl"))?;
    drop((gateway, db, late, fabric));

    results::report(&dir, &args.out)
}
