//! `flowattr plugin run`: the real component on fixture records.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, bail};
use flowattr_model::{Answers, AttributedFlow, IpEvent, LocalQuery, ResolveQuery};
use flowattr_plugin_runtime::clock::{Clock, ManualClock};
use flowattr_plugin_runtime::manifest::PluginKind;
use flowattr_plugin_runtime::{Plugin, PluginDirectory};
use serde::Deserialize;
use serde_json::{Value, json};

use super::CacheArgs;

/// A fixture file: the records for the plugin's kind.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    /// Fixes the host clock the plugin reads.
    now_ns: Option<u64>,
    #[serde(default)]
    queries: Vec<Value>,
    #[serde(default)]
    events: Vec<IpEvent>,
    #[serde(default)]
    flows: Vec<AttributedFlow>,
}

pub fn run(
    name: &str,
    input: &Path,
    dir: &Path,
    repeat: u32,
    cache: &CacheArgs,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(input)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let fixture: Fixture = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid fixture", input.display()))?;
    let clock = fixture
        .now_ns
        .map(|t| Arc::new(ManualClock::new(t)) as Arc<dyn Clock>);
    let runtime = cache.runtime(clock)?;
    let (plugins, report) = PluginDirectory::open(&runtime, dir)?;
    let Some(plugin) = plugins.get(name) else {
        if let Some(r) = report.refused.iter().find(|r| r.name == name) {
            bail!("plugin {name} was refused: {r}");
        }
        bail!("no plugin {name} in {}", dir.display());
    };

    let repeat = repeat.max(1);
    let started = Instant::now();
    let (records, output) = match plugin.kind() {
        PluginKind::Identity => {
            let queries: Vec<LocalQuery> = parse_all(fixture.queries, "queries")?;
            let mut answers = Answers::default();
            for _ in 0..repeat {
                answers = plugin.identify(&queries)?;
            }
            let out = queries
                .iter()
                .enumerate()
                .map(|(i, q)| json!({"query": q, "answer": answer(&answers, i)}));
            (queries.len(), out.collect::<Vec<_>>())
        }
        PluginKind::Resolver => {
            let queries: Vec<ResolveQuery> = parse_all(fixture.queries, "queries")?;
            plugin.ingest(&fixture.events)?;
            let mut answers = Answers::default();
            for _ in 0..repeat {
                answers = plugin.resolve(&queries)?;
            }
            let out = queries
                .iter()
                .enumerate()
                .map(|(i, q)| json!({"query": q, "answer": answer(&answers, i)}));
            (queries.len(), out.collect())
        }
        PluginKind::Policy => {
            let mut verdicts = Vec::new();
            for _ in 0..repeat {
                verdicts = plugin.decide(&fixture.flows)?;
            }
            (
                fixture.flows.len(),
                verdicts.iter().map(|v| json!({"verdict": v})).collect(),
            )
        }
        PluginKind::Sink => {
            let mut bytes = Vec::new();
            for _ in 0..repeat {
                bytes.clear();
                plugin.format(&fixture.flows, &mut bytes)?;
            }
            // Text formats print as text; binary ones (Arrow, Parquet) as hex.
            let output = match String::from_utf8(bytes) {
                Ok(text) => json!({"content_type": plugin.content_type()?, "output": text}),
                Err(e) => json!({
                    "content_type": plugin.content_type()?,
                    "bytes": e.as_bytes().len(),
                    "output_hex": hex::encode(e.as_bytes()),
                }),
            };
            (fixture.flows.len(), vec![output])
        }
    };
    let wall = started.elapsed();
    for line in output {
        println!("{line}");
    }
    eprintln!("{}", summary(&plugin, records, repeat, wall));
    Ok(ExitCode::SUCCESS)
}

fn parse_all<T: serde::de::DeserializeOwned>(
    values: Vec<Value>,
    field: &str,
) -> anyhow::Result<Vec<T>> {
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            serde_json::from_value(v).with_context(|| format!("fixture field `{field}[{i}]`"))
        })
        .collect()
}

fn answer(answers: &Answers, i: usize) -> Value {
    match answers.resolve(i) {
        Ok((workload, valid)) => json!({"workload": workload, "valid": valid}),
        Err(reason) => json!({"unattributed": reason}),
    }
}

fn summary(plugin: &Plugin, records: usize, repeat: u32, wall: std::time::Duration) -> String {
    let c = plugin.counters();
    let per_record = if c.records == 0 {
        0.0
    } else {
        c.busy_ns as f64 / c.records as f64
    };
    let (current, peak) = plugin.memory_bytes().unwrap_or((0, 0));
    format!(
        "{}: {records} records × {repeat} runs in {:.1} ms; {per_record:.0} ns per record inside the plugin; \
         memory {:.1} MiB (peak {:.1} MiB of {} MiB)",
        plugin.name(),
        wall.as_secs_f64() * 1e3,
        current as f64 / (1 << 20) as f64,
        peak as f64 / (1 << 20) as f64,
        plugin.manifest().limits.memory_mib,
    )
}
