//! What the collector knows, asked while it runs: the owner lookup
//! (`GET /v1/owner`: who owned an address at a time, as a flow starting
//! then would be answered), the service map with the table's size and the
//! agents' rates and clocks (`GET /v1/map`), and a page showing both
//! (`GET /`), served beside `/metrics`.
//!
//! The table lives on the core thread, so the HTTP shell ([`http`]) never
//! reads it: it hands a [`Query`] to a bounded channel ([`Queries`]) and
//! waits for the answer; the core answers a few queries between arrivals
//! and at every tick ([`QUERIES_PER_PASS`]), never waiting on HTTP. A full
//! channel is refused at once (503), so a flood of queries costs the core
//! at most a few answers per pass.
//!
//! ```no_run
//! # async fn f(queries: flowattr_collector::live::Queries) {
//! use flowattr_collector::live::Query;
//! let (reply, answer) = tokio::sync::oneshot::channel();
//! let address = "10.0.3.7".parse().unwrap();
//! queries.ask(Query::Owner { address, at_ns: None, reply }).unwrap();
//! let report = answer.await.unwrap();
//! println!("{:?}", report.answer);
//! # }
//! ```

pub mod http;
pub mod map;
pub mod owner;
pub mod time;

use std::{net::IpAddr, sync::mpsc, time::Duration};

use serde::{Deserialize, Serialize};

pub use map::{MapSnapshot, ServiceMap};
pub use owner::OwnerReport;

/// Queries the core answers per pass (between arrivals, and each tick).
pub const QUERIES_PER_PASS: usize = 8;

/// `[live]`: the owner lookup, the service map and the page, served on the
/// `[metrics]` endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveSection {
    /// Serve `/`, `/v1/owner` and `/v1/map` beside `/metrics`.
    pub enabled: bool,
    /// Edges the service map holds per window; a flow on a new edge past
    /// it is counted as dropped, not mapped. 0: no map (no cost per flow).
    pub max_edges: usize,
    /// The map shows the current window and the last whole one.
    #[serde(with = "flowattr_daemon::config::duration")]
    pub window: Duration,
    /// Queries waiting for the core; past it, requests get 503.
    pub queue: usize,
}

impl Default for LiveSection {
    fn default() -> Self {
        Self {
            enabled: true,
            max_edges: 2000,
            window: Duration::from_secs(600),
            queue: 32,
        }
    }
}

/// A question for the core thread, with where its answer goes.
pub enum Query {
    /// Who owned `address` at `at_ns` (default: now).
    Owner {
        address: IpAddr,
        at_ns: Option<u64>,
        reply: tokio::sync::oneshot::Sender<OwnerReport>,
    },
    /// The map, the table's size, the agents.
    Status {
        reply: tokio::sync::oneshot::Sender<LiveStatus>,
    },
}

/// Why a query was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The core has [`LiveSection::queue`] queries waiting.
    #[error("the collector's core has too many queries waiting; try again")]
    Busy,
    /// The core has stopped.
    #[error("the collector's core has stopped")]
    Stopped,
}

/// The sending end of the core's query channel (cheap to clone).
#[derive(Clone)]
pub struct Queries(pub(crate) mpsc::SyncSender<Query>);

impl Queries {
    /// Hands `query` to the core without waiting.
    pub fn ask(&self, query: Query) -> Result<(), Refused> {
        self.0.try_send(query).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => Refused::Busy,
            mpsc::TrySendError::Disconnected(_) => Refused::Stopped,
        })
    }
}

/// What `/v1/map` returns.
#[derive(Debug, Clone, Serialize)]
pub struct LiveStatus {
    pub collector: String,
    pub now_ns: u64,
    pub map: MapSnapshot,
    pub table: TableRow,
    pub agents: Vec<AgentRow>,
}

/// The ownership table's size.
#[derive(Debug, Clone, Serialize)]
pub struct TableRow {
    pub ranges: usize,
    pub addresses: usize,
    pub workloads: usize,
    pub memory_bytes: usize,
    pub max_ranges: usize,
}

/// One agent as this collector sees it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentRow {
    pub name: String,
    /// Flows received per second, over the last second or so.
    pub flows_per_second: f64,
    pub flows_total: u64,
    /// Its clock minus ours (measured from its frames), if measured.
    pub clock_offset_ns: Option<i64>,
    pub clock_trusted: Option<bool>,
    /// How far behind our clock its completeness watermark is.
    pub watermark_lag_ns: Option<u64>,
}

/// Per-agent flow rates from the received-flows counter, sampled once a
/// second by the core. Bounded by the agents heard (one entry each).
#[derive(Debug, Default)]
pub struct AgentRates {
    /// name → (total at the last sample, its time, flows per second).
    samples: rustc_hash::FxHashMap<String, (u64, u64, f64)>,
}

impl AgentRates {
    /// Records `agent`'s total at `now_ns`; the rate is over the time since
    /// the previous sample.
    pub fn sample(&mut self, agent: &str, total: u64, now_ns: u64) {
        match self.samples.get_mut(agent) {
            Some((last, at, rate)) => {
                let dt = now_ns.saturating_sub(*at);
                if dt > 0 {
                    *rate = total.saturating_sub(*last) as f64 * 1e9 / dt as f64;
                    (*last, *at) = (total, now_ns);
                }
            }
            None => {
                self.samples.insert(agent.to_owned(), (total, now_ns, 0.0));
            }
        }
    }

    /// `agent`'s rate and total, if sampled.
    pub fn get(&self, agent: &str) -> Option<(f64, u64)> {
        self.samples
            .get(agent)
            .map(|&(total, _, rate)| (rate, total))
    }

    /// Every agent sampled.
    pub fn agents(&self) -> impl Iterator<Item = &str> {
        self.samples.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_over_the_time_between_samples() {
        let mut r = AgentRates::default();
        r.sample("a", 100, 1_000_000_000);
        assert_eq!(r.get("a"), Some((0.0, 100)));
        r.sample("a", 600, 3_000_000_000);
        assert_eq!(r.get("a"), Some((250.0, 600)));
        r.sample("a", 600, 3_000_000_000);
        assert_eq!(r.get("a"), Some((250.0, 600)), "no time passed");
        assert_eq!(r.get("b"), None);
    }

    #[test]
    fn a_full_queue_is_refused_at_once() {
        let (tx, rx) = mpsc::sync_channel(1);
        let q = Queries(tx);
        let status = || Query::Status {
            reply: tokio::sync::oneshot::channel().0,
        };
        assert_eq!(q.ask(status()), Ok(()));
        assert_eq!(q.ask(status()), Err(Refused::Busy));
        drop(rx);
        assert_eq!(q.ask(status()), Err(Refused::Stopped));
    }
}
