//! `flowattr ab`: the A/B report from a collector's records file (`[ab]
//! records`), judged against recorded ownership intervals and/or a file of
//! known dependencies.

use std::{
    io::BufReader,
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use flowattr_ab::{Dependencies, OwnershipIntervals, Report, Tally, Truth, read_records};

/// Arguments of `flowattr ab`.
#[derive(clap::Args)]
pub struct AbArgs {
    /// The collector's A/B records (JSON lines).
    #[arg(long)]
    records: PathBuf,
    /// Recorded ownership: JSON lines of {address, from_ns, to_ns, workload}.
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Flows starting this close to a change of owner are not judged.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    truth_tolerance: Duration,
    /// Known dependencies (TOML: [services] NAME = ["DEP", …]).
    #[arg(long)]
    deps: Option<PathBuf>,
    /// The service whose dependency edges are counted apart.
    #[arg(long)]
    focus: Option<String>,
    /// The shadow resolver's name, for the report.
    #[arg(long, default_value = "sonar-legacy")]
    legacy_name: String,
    #[command(flatten)]
    out: ReportFiles,
}

/// Where reports go besides the terminal.
#[derive(clap::Args)]
pub struct ReportFiles {
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the self-contained HTML report here.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

impl ReportFiles {
    /// Writes the JSON (with `extra` fields merged in) and HTML reports asked for.
    pub fn write(
        &self,
        report: &Report,
        title: &str,
        extra: serde_json::Value,
    ) -> anyhow::Result<()> {
        if let Some(path) = &self.json {
            let mut value = serde_json::to_value(report)?;
            if let (Some(obj), serde_json::Value::Object(more)) = (value.as_object_mut(), extra) {
                obj.extend(more);
            }
            std::fs::write(path, serde_json::to_vec_pretty(&value)?)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("JSON report: {}", path.display());
        }
        if let Some(path) = &self.html {
            std::fs::write(path, report.html(title))
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!("HTML report: {}", path.display());
        }
        Ok(())
    }
}

fn open(path: &Path) -> anyhow::Result<BufReader<std::fs::File>> {
    Ok(BufReader::new(std::fs::File::open(path).with_context(
        || format!("cannot open {}", path.display()),
    )?))
}

pub fn run(args: AbArgs) -> anyhow::Result<ExitCode> {
    let records =
        read_records(open(&args.records)?).with_context(|| args.records.display().to_string())?;
    let intervals = match &args.truth {
        Some(p) => OwnershipIntervals::read(open(p)?, args.truth_tolerance.as_nanos() as u64)
            .with_context(|| p.display().to_string())?,
        None => OwnershipIntervals::default(),
    };
    let deps = match &args.deps {
        Some(p) => Dependencies::parse(
            &std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        )
        .with_context(|| p.display().to_string())?,
        None => Dependencies::default(),
    };
    if args.truth.is_none() && args.deps.is_none() {
        eprintln!(
            "no --truth or --deps: reporting agreement only, nothing is judged right or wrong"
        );
    }
    let truth = (intervals, deps);
    let mut tally = Tally::new(&args.legacy_name);
    for r in &records {
        tally.add(r, &truth as &dyn Truth);
    }
    let report = tally.report(args.focus.as_deref(), &truth);
    print!("{}", report.table());
    args.out.write(
        &report,
        "flowattr A/B: heartbeat vs legacy",
        serde_json::json!({}),
    )?;
    Ok(ExitCode::SUCCESS)
}
