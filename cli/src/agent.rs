//! `flowattr agent`: the capture agent, until Ctrl-C or SIGTERM.

use std::{path::PathBuf, process::ExitCode};

use flowattr_host::config::AgentConfig;

/// Arguments of `flowattr agent`.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// TOML configuration (see host/agent.example.toml); defaults for every
    /// key that is missing, and for everything without a file.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => AgentConfig::load(path)?,
        None => AgentConfig::default(),
    };
    // Before any thread starts, so every thread inherits it.
    flowattr_host::privileges::forbid_new_privileges()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(flowattr_host::agent::run(config, crate::signal::shutdown()))?;
    Ok(ExitCode::SUCCESS)
}
