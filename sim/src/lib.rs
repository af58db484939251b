//! `flowattr sim`: a deterministic (seeded) fleet simulator with ground
//! truth, for the A/B comparison of heartbeat attribution against the legacy
//! event-driven method.
//!
//! A [`Scenario`] (TOML) describes services, their dependencies and churn,
//! address pools, IPv6-only containers, load balancers, regions, clock skew
//! and the legacy event stream's delay and loss. The [`fleet`] generates
//! what agents would ship (flow batches, local side attributed at capture)
//! and the legacy events; [`run`] pushes them through the real collector
//! core in process, with the legacy plugin in shadow mode beside it, and
//! counts both methods' answers against the truth. [`sweep`] reruns a
//! scenario across a parameter.

pub mod connect;
mod drive;
pub use drive::Progress;
pub mod fleet;
mod judge;
mod pool;
pub mod run;
pub mod scenario;
pub mod sweep;

pub use connect::{ConnectOptions, ConnectOutcome, connect};
pub use judge::dependencies;
pub use run::{RunOptions, RunOutcome, install_collector_plugins, run};
pub use scenario::{Scenario, ScenarioError};
