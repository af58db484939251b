//! Helpers shared by the CLI's integration tests.

pub mod collector_process;
pub mod screen;
