//! Helpers shared by the collector's integration tests.

pub mod broker;
pub mod fleet;
pub mod journal;
pub mod settings;
