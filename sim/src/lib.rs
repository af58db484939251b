//! `flowattr sim`: a deterministic (seeded) fleet simulator with ground
//! truth, for the A/B comparison of heartbeat attribution against the legacy
//! event-driven method.
//!
//! A [`Scenario`] (TOML) describes services, their dependencies and churn,
//! address pools, IPv6-only containers, load balancers, regions, hosts'
//! clock skew, how agents fail (crashes, silences, lost and duplicated
//! batches, hosts without one), the network's delays, identity sources
//! that lag or lead, collector restarts, and the legacy event stream's
//! delay and loss. The [`fleet`] generates what hosts capture and the
//! legacy events; the agents attribute local sides through their hosts'
//! [`identity`] sources and ship batches with completeness watermarks;
//! [`run`] pushes them through the real collector core in process, with
//! the legacy plugin in shadow mode beside it, and counts both methods'
//! answers (and the agents' local ones) against the truth. [`sweep`]
//! reruns a scenario across a parameter; [`explore`] draws many harsh
//! scenarios at random and checks that no answer is wrong.

mod agents;
pub use agents::AgentStats;
pub mod connect;
mod drive;
pub use drive::Progress;
pub mod explore;
pub mod fleet;
pub mod identity;
mod judge;
mod pool;
pub mod run;
pub mod scenario;
pub mod sweep;

pub use connect::{ConnectOptions, ConnectOutcome, connect};
pub use judge::{LocalJudged, dependencies};
pub use run::{RunOptions, RunOutcome, install_collector_plugins, run};
pub use scenario::{Scenario, ScenarioError};
