//! runtime
mod bindings;
pub mod clock;
mod convert;
mod counters;
mod engine;
pub mod manifest;
mod plugin;
mod ratelimit;
mod sandbox;

pub use counters::CounterSnapshot;
pub use engine::{CacheOutcome, Runtime, RuntimeConfig};
pub use plugin::{CallError, Failure, LoadError, Plugin, sha256_hex};
mod directory;
pub use directory::{PluginDirectory, ReloadReport, Refusal};
mod watch;
pub use watch::DirectoryWatcher;
