//! `flowattr owner ADDRESS --at TIME --collector URL`: who owned an address
//! at a time, asked of a running collector's `GET /v1/owner` (see
//! docs/owner-api.md), printed for a person or as the collector's JSON.

use std::{net::IpAddr, net::ToSocketAddrs, process::ExitCode};

use anyhow::{Context as _, bail};
use flowattr_collector::live::time::{format_time, parse_time};
use serde_json::Value;

/// Arguments of `flowattr owner`.
#[derive(clap::Args)]
pub struct OwnerArgs {
    /// The address (IPv4 or IPv6).
    address: String,
    /// When: RFC 3339 (2026-12-05T14:02:00Z, any offset) or Unix
    /// nanoseconds. Default: now.
    #[arg(long)]
    at: Option<String>,
    /// The collector's metrics endpoint, http://HOST:PORT.
    #[arg(long, default_value = "http://127.0.0.1:9465")]
    collector: String,
    /// Print the collector's answer as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: OwnerArgs) -> anyhow::Result<ExitCode> {
    let address: IpAddr = args
        .address
        .trim()
        .parse()
        .map_err(|_| anyhow::anyhow!("{:?} is not an IPv4 or IPv6 address", args.address))?;
    let at_ns = args
        .at
        .as_deref()
        .map(parse_time)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--at: {e}"))?;
    let endpoint = endpoint(&args.collector)?;
    let mut path = format!("/v1/owner?address={address}");
    if let Some(at) = at_ns {
        path.push_str(&format!("&at={at}"));
    }
    let (status, body) = flowattr_daemon::metrics::get(endpoint, &path)
        .with_context(|| format!("asking the collector at {}", args.collector))?;
    let answer: Value = serde_json::from_str(&body).with_context(|| {
        format!("the collector answered {status} with something that is not JSON: {body:.200}")
    })?;
    if status != 200 {
        bail!(
            "the collector answered {status}: {}",
            answer["error"].as_str().unwrap_or(&body)
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", readable(&answer));
    }
    Ok(ExitCode::SUCCESS)
}

/// `http://HOST:PORT[/]` (or `HOST:PORT`) as a socket address.
fn endpoint(url: &str) -> anyhow::Result<std::net::SocketAddr> {
    if url.starts_with("https://") {
        bail!("--collector {url:?}: the collector's endpoint serves plain HTTP; use http://");
    }
    let host = url.strip_prefix("http://").unwrap_or(url);
    let host = host.trim_end_matches('/');
    if host.contains('/') {
        bail!("--collector {url:?}: give only http://HOST:PORT");
    }
    host.to_socket_addrs()
        .with_context(|| format!("--collector {url:?}: not HOST:PORT"))?
        .next()
        .with_context(|| format!("--collector {url:?}: the host has no address"))
}

fn ns(v: &Value) -> Option<u64> {
    v.as_u64()
}

fn workload(w: &Value) -> String {
    let id = w["id"].as_str().unwrap_or("?");
    match w["app"].as_str() {
        Some(app) => format!("{id} (app {app})"),
        None => id.to_owned(),
    }
}

/// The answer for a person.
fn readable(a: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} at {}",
        a["address"].as_str().unwrap_or("?"),
        a["at"].as_str().unwrap_or("?")
    );
    let answer = &a["answer"];
    let said = match answer["status"].as_str() {
        Some("attributed") => {
            let valid = &answer["valid"];
            format!(
                "{} (by {}{}; the same answer from {} to {})",
                workload(&answer["workload"]),
                answer["source"].as_str().unwrap_or("?"),
                answer["plugin"]
                    .as_str()
                    .map(|p| format!(" {p}"))
                    .unwrap_or_default(),
                ns(&valid["start_ns"]).map_or("?".into(), format_time),
                ns(&valid["end_ns"]).map_or("?".into(), format_time),
            )
        }
        Some("unattributed") => {
            format!("unattributed: {}", answer["reason"].as_str().unwrap_or("?"))
        }
        Some("forwarded") => format!(
            "another region's address ({}): ask its collectors",
            answer["region"].as_str().unwrap_or("?")
        ),
        _ => answer.to_string(),
    };
    let _ = writeln!(out, "  answer:       {said}");
    let c = &a["completeness"];
    let waited: Vec<&str> = c["claimants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| x["waited"].as_bool() == Some(true))
        .filter_map(|x| x["name"].as_str())
        .collect();
    let watermark = c["watermark"].as_str().unwrap_or("none");
    let needed = ns(&c["needed_ns"]).map_or("?".into(), format_time);
    let _ = if c["complete"].as_bool() == Some(true) {
        writeln!(
            out,
            "  completeness: complete (watermark {watermark}, needed {needed}; agents {})",
            if waited.is_empty() {
                "none may claim it".to_owned()
            } else {
                waited.join(", ")
            }
        )
    } else {
        writeln!(
            out,
            "  completeness: not complete (watermark {watermark} has not reached {needed}; waiting for {})",
            waited.join(", ")
        )
    };
    let ranges = a["ranges"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let _ = writeln!(
        out,
        "  ranges:       {} of {} held for this address{}",
        ranges.len(),
        a["ranges_total"],
        a["forgotten_until_ns"]
            .as_u64()
            .map(|t| format!(" (forgotten before {})", format_time(t)))
            .unwrap_or_default()
    );
    for r in ranges {
        let _ = writeln!(
            out,
            "  {} {} – {}  {}  claimed by {} ({}){}",
            if r["holds_at"].as_bool() == Some(true) {
                "▶"
            } else {
                " "
            },
            r["start"].as_str().unwrap_or("?"),
            r["end"].as_str().unwrap_or("?"),
            workload(&r["workload"]),
            r["claimant"].as_str().unwrap_or("?"),
            r["source"].as_str().unwrap_or("?"),
            if r["expired"].as_bool() == Some(true) {
                ", expired"
            } else {
                ""
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_plain_http_host_and_port() {
        assert_eq!(
            endpoint("http://127.0.0.1:9465/").unwrap(),
            "127.0.0.1:9465".parse().unwrap()
        );
        assert_eq!(
            endpoint("127.0.0.1:1").unwrap(),
            "127.0.0.1:1".parse().unwrap()
        );
        assert!(
            endpoint("https://c:1")
                .unwrap_err()
                .to_string()
                .contains("plain HTTP")
        );
        assert!(
            endpoint("http://c:1/v1")
                .unwrap_err()
                .to_string()
                .contains("only")
        );
        assert!(endpoint("http://nowhere").is_err());
    }
}
