//! One trait per plugin kind. Each mirrors a WIT world in `wit/worlds.wit`,
//! with plain Rust types instead of generated ones.

use serde::de::DeserializeOwned;

use crate::{Answers, AttributedFlow, IpEvent, LocalQuery, ResolveQuery, Verdict};

/// How every plugin starts: from its manifest's `[config]` table.
pub trait Plugin: Sized + 'static {
    /// The manifest's `[config]` table, deserialised. Use `serde_json::Value`
    /// to take anything, or a struct with `#[serde(deny_unknown_fields)]` so a
    /// typo in a manifest is refused at load time.
    type Config: DeserializeOwned;

    /// Builds the plugin from its config. An `Err` refuses the plugin with
    /// that message, and the host keeps any previous version running.
    fn init(config: Self::Config) -> Result<Self, String>;
}

/// Attributes the local side of flows at capture time (runs in the agent).
pub trait IdentityPlugin: Plugin {
    /// Answers every query, in order. An answer's validity range tells the
    /// host how long it may cache it; make it no wider than you know to be true.
    fn identify(&mut self, queries: &[LocalQuery]) -> Answers;
}

/// Attributes remote addresses from a stream of address events (runs in the
/// collector, as fallback or as the legacy side of an A/B comparison).
pub trait ResolverPlugin: Plugin {
    /// Takes a batch of events. An `Err` rejects the whole batch.
    fn ingest(&mut self, events: Vec<IpEvent>) -> Result<(), String>;

    /// Answers every query, in order.
    fn resolve(&mut self, queries: &[ResolveQuery]) -> Answers;
}

/// Decides to keep, drop, sample or redact attributed flows.
pub trait PolicyPlugin: Plugin {
    /// One verdict per flow, in order.
    fn decide(&mut self, flows: &[AttributedFlow]) -> Vec<Verdict>;
}

/// Formats attributed flows into the bytes of an output format.
pub trait SinkPlugin: Plugin {
    /// Media type of the output, such as `application/x-ndjson`.
    fn content_type(&self) -> String;

    /// Formats one batch into one chunk of output.
    fn format(&mut self, flows: &[AttributedFlow]) -> Result<Vec<u8>, String>;
}
