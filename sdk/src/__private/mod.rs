//! The machinery behind [`crate::export_plugin!`]: generated bindings, the
//! glue from WIT exports to the plugin traits, and type conversions. Not part
//! of the public API.

pub mod bindings;
mod convert;
mod glue;

pub use bindings::identity::exports::flowattr::plugin::identity::{
    Guest as IdentityGuest, LocalQuery as WitLocalQuery,
};
pub use bindings::identity::flowattr::plugin::types::{
    AttributedFlow as WitAttributedFlow, Answers as WitAnswers,
};
pub use bindings::policy::exports::flowattr::plugin::policy::{
    Guest as PolicyGuest, Verdict as WitVerdict,
};
pub use bindings::resolver::exports::flowattr::plugin::resolver::{
    Guest as ResolverGuest, IpEvent as WitIpEvent, ResolveQuery as WitResolveQuery,
};
pub use bindings::sink::exports::flowattr::plugin::sink::Guest as SinkGuest;
/// Reachable from plugin crates through the SDK, so they need no direct
/// wit-bindgen dependency.
pub use wit_bindgen;
pub use glue::{content_type, decide, format, identify, ingest, init, resolve};
