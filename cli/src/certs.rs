//! `flowattr certs`: a development PKI for QUIC with mutual TLS — a CA and
//! a certificate and key for each collector and agent, as PEM files.

use std::{path::PathBuf, process::ExitCode};

use flowattr_transport::certs::{self, ExistingCa};

/// Arguments of `flowattr certs`.
#[derive(clap::Args)]
pub struct CertsArgs {
    /// Directory to write `ca.pem`, `ca.key`, `NAME.pem` and `NAME.key` to.
    #[arg(long)]
    out: PathBuf,
    /// A collector's name: its certificate is valid for this DNS name,
    /// `localhost`, 127.0.0.1 and ::1.
    #[arg(long = "collector", value_name = "NAME")]
    collectors: Vec<String>,
    /// An agent's name: the Common Name collectors know it by.
    #[arg(long = "agent", value_name = "NAME")]
    agents: Vec<String>,
    /// Generate a new CA even if `ca.pem` exists (certificates the old one
    /// signed stop working); by default an existing CA signs the new
    /// certificates.
    #[arg(long)]
    replace_ca: bool,
}

pub fn run(args: CertsArgs) -> anyhow::Result<ExitCode> {
    let collectors: Vec<&str> = args.collectors.iter().map(String::as_str).collect();
    let agents: Vec<&str> = args.agents.iter().map(String::as_str).collect();
    let existing = if args.replace_ca {
        ExistingCa::Replace
    } else {
        ExistingCa::Reuse
    };
    let pki = certs::generate_dev_pki_with(&args.out, &collectors, &agents, existing)?;
    if pki.reused_ca {
        println!(
            "signed with the existing CA {}",
            args.out.join("ca.pem").display()
        );
    }
    for path in &pki.written {
        println!("wrote {}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}
