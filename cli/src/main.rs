//! `flowattr`: the one command users run. Subcommands are thin: parsing and
//! printing here, the work in the library crates.

mod ab;
mod agent;
mod bundled;
mod certs;
mod collector;
mod demo;
mod ipman;
mod owner;
mod plugin;
mod show;
mod signal;
mod sim;
mod soak;

use clap::{Parser, Subcommand};

/// Attribute network flows to the workloads at both ends.
#[derive(Parser)]
#[command(name = "flowattr", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report an A/B comparison from a collector's records file.
    Ab(ab::AbArgs),
    /// Capture TCP flows with eBPF and attribute their local side (root).
    Agent(agent::AgentArgs),
    /// Write a development CA and certificates for collectors and agents.
    Certs(certs::CertsArgs),
    /// Receive agents' batches over QUIC, attribute remote sides, write flows out.
    Collector(collector::CollectorArgs),
    /// The whole product on this machine (root): namespaces, churn, agent, collector, A/B.
    Demo(demo::DemoArgs),
    /// Play IPMan: assign and release container addresses in its state file.
    #[command(subcommand)]
    Ipman(ipman::IpmanCommand),
    /// Who owned an address at a time: asks a running collector.
    Owner(owner::OwnerArgs),
    /// Check, run and install Wasm plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Print flow batches (JSON lines, as the agent writes them) as a table.
    Show(show::ShowArgs),
    /// Simulate a fleet with ground truth and compare heartbeat attribution with the legacy method.
    Sim(sim::SimArgs),
    /// Two collectors, a broker and agents as real processes under faults: prove no flow is lost or wrong.
    Soak(soak::SoakArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOWATTR_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Ab(args) => ab::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Certs(args) => certs::run(args),
        Command::Collector(args) => collector::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Ipman(cmd) => ipman::run(cmd).map(|()| std::process::ExitCode::SUCCESS),
        Command::Owner(args) => owner::run(args),
        Command::Plugin(cmd) => plugin::run(cmd),
        Command::Show(args) => show::run(args),
        Command::Sim(args) => sim::run(args),
        Command::Soak(args) => soak::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
