//! `flowattr ipman …`: play IPMan's part, for tests and demos. Assign and
//! release container addresses and shared-IPv4 port ranges in the state file
//! the `ipman` identity plugin reads (`plugins/ipman/STATE.md`).
//!
//! Each command reads the file, makes one change and writes the whole file
//! back by rename; a change the plugin would refuse is an error and leaves the
//! file as it was. The work is `ipman::admin`; this is parsing and printing.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ::ipman::admin::{RawWorkload, StateFile};
use anyhow::Context as _;
use clap::{Args, Subcommand};

/// Where IPMan writes its state on a host (the directory the plugin's
/// manifest grants).
const DEFAULT_STATE: &str = "/run/flowattr/ipman/state.json";

#[derive(Subcommand)]
pub enum IpmanCommand {
    /// Assign an address to a workload, defining the workload first (or
    /// updating the attributes given).
    Assign {
        /// The container's address, IPv4 or IPv6.
        #[arg(long)]
        ip: IpAddr,
        #[command(flatten)]
        workload: WorkloadArgs,
        #[command(flatten)]
        file: FileArgs,
        #[command(flatten)]
        at: AtArgs,
    },
    /// Release an assigned address: its assignment ends now (or at --at-ns).
    Release {
        /// The address to release.
        #[arg(long)]
        ip: IpAddr,
        #[command(flatten)]
        file: FileArgs,
        #[command(flatten)]
        at: AtArgs,
    },
    /// Declare a shared host IPv4 address and the ports handed out on it (or
    /// change the pool of one already shared).
    Share {
        /// The shared host IPv4 address.
        #[arg(long)]
        address: Ipv4Addr,
        /// The ports containers get ranges of, inclusive.
        #[arg(long, value_name = "FIRST-LAST", value_parser = parse_ports)]
        pool: (u16, u16),
        #[command(flatten)]
        file: FileArgs,
    },
    /// Allocate a port range of a shared IPv4 address to a workload, defining
    /// the workload first (or updating the attributes given).
    Allocate {
        /// The shared host IPv4 address.
        #[arg(long)]
        address: Ipv4Addr,
        /// Inclusive, inside the address's pool.
        #[arg(long, value_name = "FIRST-LAST", value_parser = parse_ports)]
        ports: (u16, u16),
        #[command(flatten)]
        workload: WorkloadArgs,
        #[command(flatten)]
        file: FileArgs,
        #[command(flatten)]
        at: AtArgs,
    },
    /// Free an allocated port range (exactly as allocated).
    Free {
        /// The shared host IPv4 address.
        #[arg(long)]
        address: Ipv4Addr,
        /// The range as allocated, inclusive.
        #[arg(long, value_name = "FIRST-LAST", value_parser = parse_ports)]
        ports: (u16, u16),
        #[command(flatten)]
        file: FileArgs,
        #[command(flatten)]
        at: AtArgs,
    },
    /// Drop entries released longer ago than DURATION.
    ///
    /// Drops assignments and allocations released before now (or --at-ns)
    /// minus DURATION, and the workloads only they named. Keep minutes:
    /// flows are attributed by their start time, possibly seconds later.
    Prune {
        /// e.g. `10m`, `1h`.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        older_than: Duration,
        #[command(flatten)]
        file: FileArgs,
        #[command(flatten)]
        at: AtArgs,
    },
    /// Print the state file.
    ///
    /// An empty state if there is none yet; exits 1 if the plugin would
    /// refuse the file.
    Show {
        #[command(flatten)]
        file: FileArgs,
    },
}

#[derive(Args)]
pub struct FileArgs {
    /// The state file; its directory is created if missing.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_STATE)]
    state: PathBuf,
}

#[derive(Args)]
pub struct AtArgs {
    /// When the change happens, in Unix-epoch nanoseconds. Default: now.
    #[arg(long, value_name = "NS")]
    at_ns: Option<u64>,
}

impl AtArgs {
    fn ns(&self) -> anyhow::Result<u64> {
        match self.at_ns {
            Some(ns) => Ok(ns),
            None => {
                let since_epoch = SystemTime::now().duration_since(UNIX_EPOCH)?;
                u64::try_from(since_epoch.as_nanos()).context("the clock is past 2554")
            }
        }
    }
}

/// The workload an entry names, and attributes to set on it.
#[derive(Args)]
pub struct WorkloadArgs {
    /// The workload (container) id.
    #[arg(long, value_name = "ID")]
    workload: String,
    /// The application.
    #[arg(long)]
    app: Option<String>,
    /// The cluster (deployment group).
    #[arg(long)]
    cluster: Option<String>,
    /// The stack (environment), e.g. `prod`.
    #[arg(long)]
    stack: Option<String>,
    /// The cloud account.
    #[arg(long)]
    account: Option<String>,
    /// The cloud region.
    #[arg(long)]
    region: Option<String>,
    /// A further attribute; repeat for more.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
}

impl WorkloadArgs {
    /// Defines the workload, or sets the attributes given on it (the others
    /// keep their values).
    fn define(self, file: &mut StateFile) -> anyhow::Result<String> {
        let mut attrs = file.workload(&self.workload).cloned().unwrap_or_default();
        let RawWorkload {
            app,
            cluster,
            stack,
            account,
            region,
            labels,
        } = &mut attrs;
        for (field, given) in [
            (app, self.app),
            (cluster, self.cluster),
            (stack, self.stack),
            (account, self.account),
            (region, self.region),
        ] {
            if given.is_some() {
                *field = given;
            }
        }
        labels.extend(self.labels);
        file.define_workload(&self.workload, attrs)?;
        Ok(self.workload)
    }
}

pub fn run(cmd: IpmanCommand) -> anyhow::Result<()> {
    match cmd {
        IpmanCommand::Assign {
            ip,
            workload,
            file,
            at,
        } => {
            let (mut state, at_ns) = (StateFile::open(file.state)?, at.ns()?);
            let workload = workload.define(&mut state)?;
            state.assign(ip, &workload, at_ns)?;
            state.save()?;
            println!("assigned {ip} to {workload} at {at_ns}");
        }
        IpmanCommand::Release { ip, file, at } => {
            let (mut state, at_ns) = (StateFile::open(file.state)?, at.ns()?);
            state.release(ip, at_ns)?;
            state.save()?;
            println!("released {ip} at {at_ns}");
        }
        IpmanCommand::Share {
            address,
            pool: (first, last),
            file,
        } => {
            let mut state = StateFile::open(file.state)?;
            state.share_ipv4(address, (first, last))?;
            state.save()?;
            println!("shared {address}, pool {first}-{last}");
        }
        IpmanCommand::Allocate {
            address,
            ports: (first, last),
            workload,
            file,
            at,
        } => {
            let (mut state, at_ns) = (StateFile::open(file.state)?, at.ns()?);
            let workload = workload.define(&mut state)?;
            state.allocate_ports(address, (first, last), &workload, at_ns)?;
            state.save()?;
            println!("allocated {address} ports {first}-{last} to {workload} at {at_ns}");
        }
        IpmanCommand::Free {
            address,
            ports: (first, last),
            file,
            at,
        } => {
            let (mut state, at_ns) = (StateFile::open(file.state)?, at.ns()?);
            state.free_ports(address, (first, last), at_ns)?;
            state.save()?;
            println!("freed {address} ports {first}-{last} at {at_ns}");
        }
        IpmanCommand::Prune {
            older_than,
            file,
            at,
        } => {
            let (mut state, at_ns) = (StateFile::open(file.state)?, at.ns()?);
            let nanos = u64::try_from(older_than.as_nanos()).unwrap_or(u64::MAX);
            let before_ns = at_ns.saturating_sub(nanos);
            let dropped = state.prune(before_ns);
            state.save()?;
            println!("pruned {dropped} entries released before {before_ns}");
        }
        IpmanCommand::Show { file } => {
            let state = StateFile::open(&file.state)?;
            match std::fs::read_to_string(state.path()) {
                Ok(text) => print!("{text}"),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => print!("{}", state.to_json()),
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot read {}", file.state.display()));
                }
            }
        }
    }
    Ok(())
}

/// `FIRST-LAST` (or one port) as an inclusive range.
fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .map_err(|e| format!("{p:?} is not a port (0-65535): {e}"))
    };
    match s.split_once('-') {
        Some((first, last)) => Ok((port(first)?, port(last)?)),
        None => port(s).map(|p| (p, p)),
    }
}

/// `KEY=VALUE`.
fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}
