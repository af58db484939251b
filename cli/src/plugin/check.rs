//! `flowattr plugin check`: a table of what loaded and why anything was refused.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use flowattr_plugin_runtime::{Plugin, PluginDirectory, Refusal, Runtime, load_plugin_files};

pub fn check(path: &Path, runtime: &Runtime) -> anyhow::Result<ExitCode> {
    let (loaded, refused): (Vec<Arc<Plugin>>, Vec<Refusal>) = if path.is_dir() {
        let (dir, report) = PluginDirectory::open(runtime, path)?;
        (dir.all(), report.refused)
    } else {
        match load_plugin_files(runtime, path) {
            Ok(p) => (vec![Arc::new(p)], vec![]),
            Err(r) => (vec![], vec![r]),
        }
    };
    print!("{}", render(&loaded, &refused));
    Ok(if refused.is_empty() && !loaded.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The report: one row per plugin, loaded ones first.
pub fn render(loaded: &[Arc<Plugin>], refused: &[Refusal]) -> String {
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
    }
    out.push_str(&format!(
        "{} loaded, {} refused\n",
        loaded.len(),
        refused.len()
    ));
    out
}
