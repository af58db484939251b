//! `flowattr show`: flow batches (JSON lines, as the agent writes them) as a
//! table a person can read.

use std::{io::BufRead, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use flowattr_model::{FlowBatch, Side};

/// Arguments of `flowattr show`.
#[derive(clap::Args)]
pub struct ShowArgs {
    /// A file of flow batches, one JSON object per line.
    file: PathBuf,
    /// Print at most this many flows.
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

pub fn run(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("cannot open {}", args.file.display()))?;
    println!(
        "{:<28} {:<28} {:>9} {:>7} {:>9} {:>9}  local workload",
        "local", "remote", "initiator", "end", "sent", "received"
    );
    let mut shown = 0;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        let batch: FlowBatch = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not a flow batch", args.file.display(), n + 1))?;
        for f in batch.flows {
            if shown == args.limit {
                return Ok(ExitCode::SUCCESS);
            }
            let local = match &f.local {
                Side::Attributed(a) => format!("{} (by {})", a.workload.id, a.plugin),
                Side::Unattributed(r) => format!("unattributed: {}", r.as_str()),
                Side::Pending => "pending".into(),
            };
            println!(
                "{:<28} {:<28} {:>9} {:>7} {:>9} {:>9}  {local}",
                f.flow.local.to_string(),
                f.flow.remote.to_string(),
                format!("{:?}", f.flow.initiator).to_lowercase(),
                format!("{:?}", f.flow.end_state).to_lowercase(),
                f.flow.bytes_sent,
                f.flow.bytes_received,
            );
            shown += 1;
        }
    }
    Ok(ExitCode::SUCCESS)
}
