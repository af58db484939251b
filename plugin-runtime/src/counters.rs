//! Per-plugin counters, updated lock-free on the call path and read as a
//! snapshot by metrics exporters and `flowattr plugin run`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// Live counters of one plugin (kept across instance rebuilds and reloads of
/// the same name).
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) calls: AtomicU64,
    pub(crate) records: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) traps: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) memory_exceeded: AtomicU64,
    pub(crate) rebuilds: AtomicU64,
    pub(crate) unavailable: AtomicU64,
    pub(crate) busy_ns: AtomicU64,
    pub(crate) log_lines: AtomicU64,
    pub(crate) log_suppressed: AtomicU64,
    pub(crate) resources_refused: AtomicU64,
    pub(crate) cache_rejected: AtomicU64,
}

/// A point-in-time copy of one plugin's counters ([`crate::Plugin::counters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CounterSnapshot {
    /// Calls that returned (successfully or with the plugin's own error).
    pub calls: u64,
    /// Records (queries, events, flows) passed in successful calls.
    pub records: u64,
    /// Calls where the plugin returned an error or a malformed answer.
    pub errors: u64,
    /// Calls that trapped (panic, unreachable, out-of-bounds…).
    pub traps: u64,
    /// Calls stopped at their deadline.
    pub timeouts: u64,
    /// Calls stopped for growing memory past the cap.
    pub memory_exceeded: u64,
    /// Instances rebuilt after a failure.
    pub rebuilds: u64,
    /// Calls refused while the instance was backing off after failures.
    pub unavailable: u64,
    /// Time spent inside the plugin, in nanoseconds.
    pub busy_ns: u64,
    /// Log lines written by the plugin.
    pub log_lines: u64,
    /// Log lines dropped by the rate limit.
    pub log_suppressed: u64,
    /// Opens refused because the instance held its cap of resources.
    pub resources_refused: u64,
    /// Compile-cache entries of its component that failed their check.
    pub cache_rejected: u64,
}

impl CounterSnapshot {
    /// Every counter with its stable name, for metric exporters.
    pub fn named(&self) -> [(&'static str, u64); 13] {
        [
            ("calls", self.calls),
            ("records", self.records),
            ("errors", self.errors),
            ("traps", self.traps),
            ("timeouts", self.timeouts),
            ("memory_exceeded", self.memory_exceeded),
            ("rebuilds", self.rebuilds),
            ("unavailable", self.unavailable),
            ("busy_ns", self.busy_ns),
            ("log_lines", self.log_lines),
            ("log_suppressed", self.log_suppressed),
            ("resources_refused", self.resources_refused),
            ("cache_rejected", self.cache_rejected),
        ]
    }
}

impl Counters {
    /// The current values.
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            calls: self.calls.load(Relaxed),
            records: self.records.load(Relaxed),
            errors: self.errors.load(Relaxed),
            traps: self.traps.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            memory_exceeded: self.memory_exceeded.load(Relaxed),
            rebuilds: self.rebuilds.load(Relaxed),
            unavailable: self.unavailable.load(Relaxed),
            busy_ns: self.busy_ns.load(Relaxed),
            log_lines: self.log_lines.load(Relaxed),
            log_suppressed: self.log_suppressed.load(Relaxed),
            resources_refused: self.resources_refused.load(Relaxed),
            cache_rejected: self.cache_rejected.load(Relaxed),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}
