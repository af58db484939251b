//! `flowattr plugin check`: a table of what loaded and why anything was refused.
//!
//! What a plugin logs while it starts (an identity document not there yet,
//! say) is its state, not a fault of the plugin: it is shown under the
//! plugin's row instead of going to the log.

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use flowattr_plugin_runtime::{Plugin, PluginDirectory, Refusal, Runtime, load_plugin_files};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{EnvFilter, Layer};

pub fn check(path: &Path, runtime: &Runtime) -> anyhow::Result<ExitCode> {
    let said = Said::default();
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(
                    EnvFilter::try_from_env("FLOWATTR_LOG")
                        .unwrap_or_else(|_| "warn".into())
                        .add_directive("plugin=off".parse()?),
                ),
        )
        .with(said.clone());
    let (loaded, refused): (Vec<Arc<Plugin>>, Vec<Refusal>) =
        tracing::subscriber::with_default(subscriber, || -> anyhow::Result<_> {
            Ok(if path.is_dir() {
                let (dir, report) = PluginDirectory::open(runtime, path)?;
                (dir.all(), report.refused)
            } else {
                match load_plugin_files(runtime, path) {
                    Ok(p) => (vec![Arc::new(p)], vec![]),
                    Err(r) => (vec![], vec![r]),
                }
            })
        })?;
    let said = said.0.lock().map(|l| l.clone()).unwrap_or_default();
    print!("{}", render(&loaded, &refused, &said));
    Ok(if refused.is_empty() && !loaded.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A line a plugin logged while it started: its name and message.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub plugin: String,
    pub message: String,
}

/// Collects plugins' log lines (target `plugin`) of level info and above.
#[derive(Clone, Default)]
struct Said(Arc<Mutex<Vec<Line>>>);

impl<S: tracing::Subscriber> Layer<S> for Said {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() != "plugin" || *meta.level() > tracing::Level::INFO {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        if let Ok(mut lines) = self.0.lock() {
            lines.push(Line {
                plugin: fields.plugin,
                message: fields.message,
            });
        }
    }
}

#[derive(Default)]
struct Fields {
    plugin: String,
    message: String,
}

impl tracing::field::Visit for Fields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "plugin" => self.plugin = value.to_owned(),
            "message" => self.message = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "plugin" => self.plugin = format!("{value:?}").trim_matches('"').to_owned(),
            "message" => self.message = format!("{value:?}"),
            _ => {}
        }
    }
}

/// The report: one row per plugin, loaded ones first, each followed by what
/// it said while it started.
pub fn render(loaded: &[Arc<Plugin>], refused: &[Refusal], said: &[Line]) -> String {
    let mut rows = vec![["PLUGIN", "STATUS", "KIND", "ORDER", "MODE", "DETAIL"].map(String::from)];
    for p in loaded {
        let m = p.manifest();
        rows.push([
            p.name().to_owned(),
            "loaded".into(),
            m.kind.to_string(),
            m.order.to_string(),
            format!("{:?}", m.mode).to_lowercase(),
            format!(
                "wit {} · {} MiB · {} ms · sha256 {}…",
                m.wit,
                m.limits.memory_mib,
                m.limits.call_timeout_ms,
                &p.sha256()[..12]
            ),
        ]);
    }
    for r in refused {
        rows.push([
            r.name.clone(),
            "REFUSED".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            r.to_string(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        for (c, w) in widths.iter().enumerate() {
            out.push_str(&format!("{:<w$}  ", row[c]));
        }
        out.push_str(&row[5]);
        out.push('\n');
        for line in said.iter().filter(|l| l.plugin == row[0]) {
            out.push_str(&format!("  └ state: {}\n", line.message));
        }
    }
    out.push_str(&format!(
        "{} loaded, {} refused\n",
        loaded.len(),
        refused.len()
    ));
    out
}
