//! The Wasm plugin runtime shared by the agent and the collector.
//!
//! Plugins are WebAssembly components implementing one world of the WIT
//! package in `wit/` (identity, resolver, policy or sink). This crate:
//!
//! - loads them from a drop-in directory ([`PluginDirectory`]) of `NAME.wasm`
//!   beside `NAME.toml` ([`manifest::Manifest`]), validating hash, kind, WIT
//!   version, grants and `init` before anything replaces a running version,
//!   and reloads when the directory changes ([`PluginDirectory::watch`]);
//! - compiles each component once (on-disk cache keyed by engine and content
//!   hash, pruned of entries unused for [`cache::MAX_UNUSED`]) and
//!   pre-instantiates it; one live instance per plugin is reused for every
//!   batch ([`Runtime`]);
//! - sandboxes each instance: read-only grants only (under the roots the
//!   daemon allows), a memory cap, a cap on open resources, a deadline per
//!   call that holds even while the guest waits in WASI; a trap, timeout or
//!   overrun is contained, counted and logged with the plugin's name, and the
//!   instance rebuilt with backoff ([`Plugin`], [`CallError`]);
//! - trusts only what others cannot write: the drop-in directory and its
//!   files, the compile cache (whose entries are hash-checked), and, with
//!   keys configured, only signed components ([`TrustPolicy`]);
//! - exposes typed, batch-first calls in the domain model's types
//!   ([`Plugin::identify`], [`Plugin::resolve`], …) and per-plugin counters.
//!
//! ```no_run
//! use flowattr_plugin_runtime::{PluginDirectory, Runtime, RuntimeConfig, manifest::PluginKind};
//! # fn main() -> anyhow::Result<()> {
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let (plugins, report) = PluginDirectory::open(&runtime, "plugins")?;
//! for refusal in &report.refused {
//!     eprintln!("{refusal}");
//! }
//! for plugin in plugins.chain(PluginKind::Identity) {
//!     let answers = plugin.identify(&[/* queries */])?;
//! #   let _ = answers;
//! }
//! # Ok(()) }
//! ```

mod bindings;
pub mod cache;
pub mod clock;
mod convert;
mod counters;
mod directory;
mod engine;
pub mod manifest;
mod plugin;
mod plugin_log;
pub mod policy;
mod ratelimit;
mod resources;
mod sandbox;
mod sink_output;
pub mod trust;
mod watch;

pub use counters::CounterSnapshot;
pub use directory::{
    PluginDirectory, Refusal, ReloadReport, copy_plugin, install_plugin, load_plugin_files,
};
pub use engine::{CacheOutcome, MAX_BLOCKING_THREADS, Runtime, RuntimeConfig};
pub use plugin::{CallError, Failure, LoadError, Plugin, sha256_hex};
pub use plugin_log::MAX_LINE;
pub use resources::MAX_RESOURCES;
pub use trust::TrustPolicy;
pub use watch::DirectoryWatcher;
