//! `flowattr collector`: receives agents' batches, attributes remote sides
//! and writes flows out, until Ctrl-C or SIGTERM.

use std::{path::PathBuf, process::ExitCode};

use flowattr_collector::config::CollectorConfig;

/// Arguments of `flowattr collector`.
#[derive(clap::Args)]
pub struct CollectorArgs {
    /// TOML configuration (see collector/collector.example.toml); defaults
    /// for every key that is missing.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

pub fn run(args: CollectorArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => CollectorConfig::load(path)?,
        None => CollectorConfig::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(flowattr_collector::service::run(
        config,
        crate::signal::shutdown(),
    ))?;
    Ok(ExitCode::SUCCESS)
}
