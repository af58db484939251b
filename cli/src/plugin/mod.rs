//! `flowattr plugin …`: check a drop-in directory, run a plugin on a fixture,
//! install a built component into a drop-in directory, scaffold a new plugin
//! crate.

mod check;
mod install;
mod new;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use flowattr_plugin_runtime::clock::Clock;
use flowattr_plugin_runtime::{Runtime, RuntimeConfig};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Validate a drop-in directory (or one NAME.toml / NAME.wasm) and print
    /// what loaded and why anything was refused. Exits 1 if anything was.
    Check {
        /// A drop-in directory, or one plugin's manifest or component.
        path: PathBuf,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Run a plugin's real component on the records of a fixture file and
    /// print the results, the time per record and the memory it used.
    Run {
        /// The plugin's name (NAME of NAME.wasm in the directory).
        name: String,
        /// Fixture: JSON with `queries` (identity), `events` and `queries`
        /// (resolver) or `flows` (policy, sink); optional `now_ns` fixes the
        /// host clock.
        #[arg(long)]
        input: PathBuf,
        /// The drop-in directory.
        #[arg(long, default_value = "plugins")]
        dir: PathBuf,
        /// Run the batch this many times (for the timing).
        #[arg(long, default_value_t = 1)]
        repeat: u32,
        #[command(flatten)]
        cache: CacheArgs,
    },
    /// Copy a built component into a drop-in directory as NAME.wasm and write
    /// NAME.toml from a manifest template with its sha256 stamped in.
    Install {
        /// The built component (target/wasm32-wasip2/release/….wasm).
        wasm: PathBuf,
        /// Manifest template (a manifest without `sha256`).
        #[arg(long)]
        manifest: PathBuf,
        /// The drop-in directory.
        #[arg(long, default_value = "plugins")]
        dir: PathBuf,
        /// Plugin name; defaults to the template's file stem.
        #[arg(long)]
        name: Option<String>,
        /// Point a granted guest directory at another host directory:
        /// `/guest=host/path` (repeatable).
        #[arg(long = "grant", value_name = "GUEST=HOST")]
        grants: Vec<String>,
    },
    /// Create a Rust plugin crate NAME/ that builds, passes its native test
    /// and `plugin check` as generated: Cargo.toml, src/lib.rs, the manifest
    /// template NAME.toml and a README.
    New {
        /// The plugin's name: lowercase letters, digits and dashes.
        name: String,
        /// The plugin kind.
        #[arg(long, value_enum)]
        kind: new::Kind,
        /// Where to create NAME/.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The flowattr checkout's sdk/ directory [default: the checkout the
        /// crate is created in, else the one this binary was built from].
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
}

/// Where compiled components are cached.
#[derive(clap::Args)]
pub struct CacheArgs {
    /// Compile cache directory [default: $XDG_CACHE_HOME/flowattr/wasm or ~/.cache/flowattr/wasm].
    #[arg(long, env = "FLOWATTR_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every component afresh.
    #[arg(long)]
    no_cache: bool,
}

impl CacheArgs {
    /// The cache directory, unless caching is off.
    pub fn dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            None
        } else {
            self.cache_dir.clone().or_else(default_cache_dir)
        }
    }

    fn runtime(&self, clock: Option<Arc<dyn Clock>>) -> anyhow::Result<Runtime> {
        let mut config = RuntimeConfig {
            cache_dir: self.dir(),
            ..RuntimeConfig::default()
        };
        if let Some(clock) = clock {
            config.clock = clock;
        }
        Runtime::new(config)
    }
}

fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("flowattr/wasm"))
}

pub fn run(cmd: PluginCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::Check { path, cache } => check::check(&path, &cache.runtime(None)?),
        PluginCommand::Run {
            name,
            input,
            dir,
            repeat,
            cache,
        } => run::run(&name, &input, &dir, repeat, &cache),
        PluginCommand::Install {
            wasm,
            manifest,
            dir,
            name,
            grants,
        } => install::install(&wasm, &manifest, &dir, name.as_deref(), &grants),
        PluginCommand::New {
            name,
            kind,
            dir,
            sdk,
        } => new::new(&name, kind, &dir, sdk.as_deref()),
    }
}
