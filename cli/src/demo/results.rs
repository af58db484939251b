//! The end of the demo: wait for the collector to write everything out,
//! check every attributed side against who really owned the address, and
//! print a sample of flows and the A/B table.

use std::{
    io::BufReader,
    net::IpAddr,
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use flowattr_ab::{OwnershipIntervals, Tally, read_records};

use crate::ab::ReportFiles;

/// Flows starting this close to a change of owner are not judged.
const TOLERANCE: Duration = Duration::from_secs(1);

/// Waits until the collector holds nothing and its output count has
/// settled.
pub fn wait_written(port: u16, hold: Duration, within: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    std::thread::sleep(hold + Duration::from_secs(1));
    let mut last = -1.0;
    loop {
        let text = flowattr_daemon::metrics::scrape(([127, 0, 0, 1], port).into())
            .context("collector metrics")?;
        let out = flowattr_daemon::metrics::metric_sum(&text, "flowattr_collector_flows_out", &[]);
        let held =
            flowattr_daemon::metrics::metric_sum(&text, "flowattr_collector_hold_flows", &[]);
        if held == 0.0 && out == last {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < within,
            "the collector still holds {held} flows after {within:?}"
        );
        last = out;
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// One side of an output line: (ip, workload id if attributed, how).
fn side(line: &serde_json::Value, which: &str) -> Option<(IpAddr, Option<String>, String)> {
    let s = &line[which];
    let ip = s["ip"].as_str()?.parse().ok()?;
    let id = s["workload"]["id"].as_str().map(str::to_owned);
    let how = match (&id, s["unattributed"].as_str()) {
        (Some(_), _) => {
            let plugin = s["plugin"].as_str().unwrap_or("");
            let source = s["source"].as_str().unwrap_or("");
            if plugin.is_empty() {
                source.to_owned()
            } else {
                format!("{source}:{plugin}")
            }
        }
        (None, Some(reason)) => format!("unattributed: {reason}"),
        (None, None) => "?".into(),
    };
    Some((ip, id, how))
}

pub fn report(dir: &Path, out: &ReportFiles) -> anyhow::Result<ExitCode> {
    let truth = OwnershipIntervals::read(
        BufReader::new(std::fs::File::open(dir.join("truth.jsonl"))?),
        TOLERANCE.as_nanos() as u64,
    )?;
    let mut lines = Vec::new();
    for file in flowattr_collector::output::files_of(&dir.join("out"), "flows", "jsonl")? {
        for l in std::fs::read_to_string(&file)?.lines() {
            lines.push(
                serde_json::from_str::<serde_json::Value>(l)
                    .with_context(|| file.display().to_string())?,
            );
        }
    }
    // Only the demo's own flows (the host has other traffic).
    lines.retain(|l| {
        l["local"]["ip"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.77.0."))
    });
    let (mut checked, mut unjudged, mut wrong) = (0u64, 0u64, Vec::new());
    for l in &lines {
        let start = l["start_ns"].as_u64().unwrap_or(0);
        for which in ["local", "remote"] {
            let Some((ip, Some(id), how)) = side(l, which) else {
                continue;
            };
            match truth.owner_at(ip, start) {
                Some(owner) if owner == id => checked += 1,
                Some(owner) => wrong.push(format!(
                    "{which} {ip} at {start}: {id} ({how}), really {owner}"
                )),
                None => unjudged += 1,
            }
        }
    }

    println!("\nA sample of attributed flows (the collector's output):");
    println!(
        "{:<22} {:<22} {:<26} {:<22} remote by",
        "local", "local workload", "remote", "remote workload"
    );
    // The new owners of reused addresses first.
    let mut sample: Vec<&serde_json::Value> = Vec::new();
    for app in ["batch", "cache"] {
        sample.extend(
            lines
                .iter()
                .filter(|l| l["remote"]["workload"]["app"] == app)
                .take(2),
        );
    }
    sample.extend(
        lines
            .iter()
            .filter(|l| l["local"]["workload"]["app"] == "gateway")
            .take(4),
    );
    sample.extend(
        lines
            .iter()
            .filter(|l| l["local"]["workload"]["app"] == "db")
            .take(4),
    );
    for l in sample {
        let (Some((_, lid, _)), Some((rip, rid, how))) = (side(l, "local"), side(l, "remote"))
        else {
            continue;
        };
        println!(
            "{:<22} {:<22} {:<26} {:<22} {}",
            format!(
                "{}:{}",
                l["local"]["ip"].as_str().unwrap_or("?"),
                l["local"]["port"]
            ),
            lid.unwrap_or_else(|| "-".into()),
            format!("{rip}:{}", l["remote"]["port"]),
            rid.unwrap_or_else(|| "-".into()),
            how
        );
    }

    let records = read_records(BufReader::new(std::fs::File::open(
        dir.join("ab-records.jsonl"),
    )?))?;
    let mut tally = Tally::new("sonar-legacy");
    for r in records.iter().filter(|r| r.local.is_some()) {
        tally.add(r, &truth);
    }
    let report = tally.report(Some("gateway"), &truth);
    println!(
        "\nA/B: heartbeat attribution vs the legacy method (shadow), judged by who really owned each address:\n"
    );
    print!("{}", report.table());
    std::fs::write(
        dir.join("ab.html"),
        report.html("flowattr demo: heartbeat vs legacy"),
    )?;
    println!("\nHTML report: {}", dir.join("ab.html").display());
    println!(
        "\nchecked {} attributed sides of {} flows against recorded ownership: {} right, {} wrong, {} too close to a change of owner to judge",
        checked + wrong.len() as u64 + unjudged,
        lines.len(),
        checked,
        wrong.len(),
        unjudged
    );
    for w in wrong.iter().take(10) {
        println!("  WRONG: {w}");
    }
    out.write(
        &report,
        "flowattr demo: heartbeat vs legacy",
        serde_json::json!({
            "demo": {"flows": lines.len(), "sides_right": checked, "sides_wrong": wrong.len(), "sides_unjudged": unjudged}
        }),
    )?;
    if lines.is_empty() {
        anyhow::bail!(
            "the collector wrote no flows of the demo's workloads; see {}/agent.log and collector.log",
            dir.display()
        );
    }
    Ok(if wrong.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
