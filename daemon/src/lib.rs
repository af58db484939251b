//! What every long-running flowattr process (`flowattr agent`,
//! `flowattr collector`) shares: its TOML configuration file, read with
//! errors that name the offending key, and its Prometheus endpoint.

pub mod config;
pub mod metrics;
