//! The machinery behind [`crate::export_plugin!`]: generated bindings, the
//! glue from WIT exports to the plugin traits, and type conversions. Not part
//! of the public API.

pub mod bindings;
mod convert;
mod glue;

pub use bindings::identity::exports::flowattr::plugin::identity::{
    Guest as IdentityGuest, LocalQueries as WitLocalQueries,
};
pub use bindings::identity::flowattr::plugin::types::{
    Answers as WitAnswers, FlowBatch as WitFlowBatch,
};
pub use bindings::policy::exports::flowattr::plugin::policy::{
    Guest as PolicyGuest, Verdict as WitVerdict,
};
pub use bindings::resolver::exports::flowattr::plugin::resolver::{
    Guest as ResolverGuest, IpEvent as WitIpEvent, ResolveQueries as WitResolveQueries,
};
pub use bindings::sink::exports::flowattr::plugin::sink::Guest as SinkGuest;
pub use glue::{content_type, decide, format, identify, ingest, init, resolve};
/// Reachable from plugin crates through the SDK, so they need no direct
/// wit-bindgen dependency.
pub use wit_bindgen;
