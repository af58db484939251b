//! The collector (`flowattr collector`): QUIC ingest, time-ranged IP
//! ownership learned from heartbeats and shared through Kafka, the hold queue,
//! remote attribution, cross-region forwarding, resolver fallback, A/B
//! comparison, and the policy and sink plugins that write attributed flows out.

pub mod clocks;
pub mod completeness;
pub mod config;
pub mod core;
pub mod counterpart;
pub mod dedupe;
pub mod hold;
pub mod journal;
pub mod legacy;
pub mod live;
pub mod metrics;
pub mod output;
pub mod ownership;
pub mod remote;
pub mod service;
pub mod shadow;
pub mod sharing;
