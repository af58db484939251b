//! The collector (`flowattr collector`): QUIC ingest, time-ranged IP
//! ownership learned from heartbeats and shared through Kafka, the hold queue,
//! remote attribution, cross-region forwarding, resolver fallback, A/B
//! comparison, and the policy and sink plugins that write attributed flows out.
//!
//! The collector is built by the collector issue; this crate holds its place
//! in the workspace layout so the architecture is visible from the start.

pub mod ownership;
