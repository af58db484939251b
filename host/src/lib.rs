//! The capture agent (`flowattr agent`): loads the eBPF programs of
//! `host-ebpf`, turns kernel records into flow records, attributes each
//! flow's local side at capture time through the identity plugin chain, runs
//! policy plugins, and writes batches out.
//!
//! Pure cores ([`attribution`], [`policy`], [`batcher`], [`capture::decode`])
//! with thin I/O shells ([`capture`], [`output`], [`metrics`]) wired together
//! by [`agent`].

pub mod agent;
pub mod attribution;
pub mod batcher;
pub mod capture;
pub mod config;
pub mod metrics;
pub mod netns;
pub mod output;
pub mod privileges;

/// The policy chain, shared with the collector.
pub use flowattr_plugin_runtime::policy;
