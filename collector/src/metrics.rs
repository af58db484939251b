//! Collector metrics as Prometheus text on `GET /metrics`: flows in and
//! out, remote attribution outcomes by reason, the ownership table's size and
//! memory, hold-queue depth, duplicates and drops by reason, outputs, Kafka
//! sharing, per-agent rates and the plugin runtime's per-plugin counters.

use std::sync::{Arc, Mutex};

use flowattr_plugin_runtime::PluginDirectory;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::{output::OutputStatus, ownership::OwnershipCounters, remote::RemoteCounts};

type Labels = Vec<(&'static str, String)>;
/// A gauge of seconds.
type Seconds = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The collector's metrics, updated by the core and read by the endpoint.
pub struct CollectorMetrics {
    registry: Registry,
    /// Flows received, by agent (certificate name).
    pub flows_in: Family<Labels, Counter>,
    /// Batches received, by agent and outcome (accepted, duplicate, rejected).
    pub batches: Family<Labels, Counter>,
    /// Flows every output has for good (synced, or delivered).
    pub flows_out: Counter,
    /// Remote-side outcomes: heartbeat, resolver, forwarded, unattributed,
    /// with the reason or plugin.
    pub remote: Family<Labels, Counter>,
    /// Flows removed before output, by reason (policy, …).
    pub dropped: Family<Labels, Counter>,
    /// Legacy address events read from the event file, by outcome.
    pub legacy_events: Family<Labels, Counter>,
    /// Heartbeats and shared updates taken by the table, by outcome.
    pub ownership: Family<Labels, Counter>,
    /// Sides an agent sent that the collector did not take as sent, by
    /// agent and what (`local_outside_claims`, `remote_recomputed`).
    pub authorization: Family<Labels, Counter>,
    /// The QUIC receiver's counters, by counter (over_limit, retries, …).
    pub receiver: Family<Labels, Gauge>,
    pub table_ranges: Gauge,
    pub table_addresses: Gauge,
    pub table_memory_bytes: Gauge,
    pub hold_flows: Gauge,
    pub hold_batches: Gauge,
    /// Held flows indexed for matching with their other end.
    pub counterpart_index: Gauge,
    /// Times a batch had to wait because the hold queue or the outputs were
    /// full.
    pub backpressure: Counter,
    /// Per output: queued bytes and whether it is up.
    pub output_queued_bytes: Family<Labels, Gauge>,
    pub output_up: Family<Labels, Gauge>,
    pub output_failures: Family<Labels, Gauge>,
    /// Batches journaled and not yet written out.
    pub journal_batches: Gauge,
    /// Arrivals waiting for room in the hold, and their bytes.
    pub arrivals_waiting: Gauge,
    pub arrivals_waiting_bytes: Gauge,
    /// Runs of released flows being formatted or waiting for an earlier run
    /// to be, before they reach the outputs.
    pub formatting_jobs: Gauge,
    /// Sink plugin calls that failed or found no sink (flows kept, retried).
    pub sink_failures: Counter,
    /// Each sender's measured clock offset (its clock minus ours), and
    /// whether it is trusted (1) for remote attribution.
    pub agent_clock_offset: Family<Labels, Seconds>,
    pub agent_clock_trusted: Family<Labels, Gauge>,
    /// How far behind now each agent's completeness watermark is.
    pub agent_watermark_lag: Family<Labels, Seconds>,
    /// Kafka sharing counters, by name (published, consumed, malformed, lag…).
    pub sharing: Family<Labels, Gauge>,
    /// Sharing messages refused since start, by reason (malformed, past a
    /// limit, failing authentication).
    pub sharing_refused: Family<Labels, Gauge>,
    /// The plugin runtime's counters, by plugin and counter.
    pub plugin: Family<Labels, Gauge>,
    plugins: Mutex<Option<Arc<PluginDirectory>>>,
    receiver_counters: Mutex<Option<Arc<flowattr_transport::server::ReceiverCounters>>>,
}

impl Default for CollectorMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl CollectorMetrics {
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("flowattr_collector"),
            flows_in: Family::default(),
            batches: Family::default(),
            flows_out: Counter::default(),
            remote: Family::default(),
            dropped: Family::default(),
            legacy_events: Family::default(),
            ownership: Family::default(),
            authorization: Family::default(),
            receiver: Family::default(),
            table_ranges: Gauge::default(),
            table_addresses: Gauge::default(),
            table_memory_bytes: Gauge::default(),
            hold_flows: Gauge::default(),
            counterpart_index: Gauge::default(),
            hold_batches: Gauge::default(),
            backpressure: Counter::default(),
            output_queued_bytes: Family::default(),
            output_up: Family::default(),
            output_failures: Family::default(),
            journal_batches: Gauge::default(),
            arrivals_waiting: Gauge::default(),
            arrivals_waiting_bytes: Gauge::default(),
            formatting_jobs: Gauge::default(),
            sink_failures: Counter::default(),
            agent_clock_offset: Family::default(),
            agent_clock_trusted: Family::default(),
            agent_watermark_lag: Family::default(),
            sharing: Family::default(),
            sharing_refused: Family::default(),
            plugin: Family::default(),
            plugins: Mutex::default(),
            receiver_counters: Mutex::default(),
        };
        let r = &mut m.registry;
        r.register("flows_in", "Flows received, by agent", m.flows_in.clone());
        r.register(
            "batches",
            "Batches received, by agent and outcome",
            m.batches.clone(),
        );
        r.register(
            "flows_out",
            "Flows every output has for good (synced to disk, or delivered and acknowledged)",
            m.flows_out.clone(),
        );
        r.register(
            "remote",
            "Remote-side attribution outcomes (outcome, reason or plugin)",
            m.remote.clone(),
        );
        r.register(
            "dropped",
            "Flows removed before output, by reason",
            m.dropped.clone(),
        );
        r.register(
            "legacy_events",
            "Legacy address events read from the event file, by outcome (taken, malformed)",
            m.legacy_events.clone(),
        );
        r.register(
            "ownership",
            "Heartbeats and shared updates taken by the ownership table, by outcome",
            m.ownership.clone(),
        );
        r.register(
            "table_ranges",
            "Ownership ranges held",
            m.table_ranges.clone(),
        );
        r.register(
            "table_addresses",
            "Addresses in the ownership table",
            m.table_addresses.clone(),
        );
        r.register(
            "table_memory_bytes",
            "Estimated heap use of the ownership table",
            m.table_memory_bytes.clone(),
        );
        r.register(
            "hold_flows",
            "Flows waiting in the hold queue",
            m.hold_flows.clone(),
        );
        r.register(
            "counterpart_index",
            "Held flows indexed for matching with their other end's report",
            m.counterpart_index.clone(),
        );
        r.register(
            "hold_batches",
            "Batches waiting in the hold queue",
            m.hold_batches.clone(),
        );
        r.register(
            "backpressure",
            "Batches that waited because the hold queue or the outputs were full",
            m.backpressure.clone(),
        );
        r.register(
            "output_queued_bytes",
            "Bytes queued for an output that is down or slow",
            m.output_queued_bytes.clone(),
        );
        r.register(
            "output_up",
            "Whether an output takes what it is given",
            m.output_up.clone(),
        );
        r.register(
            "output_failures",
            "Failed writes to an output (each retried)",
            m.output_failures.clone(),
        );
        r.register(
            "journal_batches",
            "Accepted batches not yet written out",
            m.journal_batches.clone(),
        );
        r.register(
            "arrivals_waiting",
            "Arrived batches waiting for room in the hold",
            m.arrivals_waiting.clone(),
        );
        r.register(
            "arrivals_waiting_bytes",
            "Bytes of arrived batches waiting for room in the hold (frames and decoded flows)",
            m.arrivals_waiting_bytes.clone(),
        );
        r.register(
            "formatting_jobs",
            "Runs of released flows with the sink plugin or waiting behind an earlier run",
            m.formatting_jobs.clone(),
        );
        r.register(
            "sink_failures",
            "Sink calls that failed or found no sink plugin (flows kept and retried)",
            m.sink_failures.clone(),
        );
        r.register(
            "agent_clock_offset_seconds",
            "Each sender's measured clock offset from this collector's (its clock minus ours)",
            m.agent_clock_offset.clone(),
        );
        r.register(
            "agent_clock_trusted",
            "Whether a sender's clock is within max_skew (1), so its flows are used for remote attribution",
            m.agent_clock_trusted.clone(),
        );
        r.register(
            "agent_watermark_lag_seconds",
            "How far behind now each agent's completeness watermark is (flows towards its addresses wait that long)",
            m.agent_watermark_lag.clone(),
        );
        r.register("sharing", "Kafka ownership sharing", m.sharing.clone());
        r.register(
            "authorization",
            "Flow sides an agent sent that were not taken as sent, by agent and what (local_outside_claims: unattributed; remote_recomputed: reset to pending)",
            m.authorization.clone(),
        );
        r.register(
            "receiver",
            "QUIC receiver counters: frames refused by reason (malformed, truncated, oversized, version, over_limit), connections and handshakes refused, retries, bytes in flight",
            m.receiver.clone(),
        );
        r.register(
            "sharing_refused",
            "Kafka sharing messages refused since start, by reason (syntax, limit, unsigned, bad_signature, not_allowed, …); nothing of them is used",
            m.sharing_refused.clone(),
        );
        r.register(
            "plugin",
            "Plugin runtime counters, by plugin",
            m.plugin.clone(),
        );
        m
    }

    /// Counts one pass of remote attribution.
    pub fn count_remote(&self, counts: &RemoteCounts, region_name: impl Fn(usize) -> String) {
        let inc = |labels: Labels, n: u64| self.remote.get_or_create(&labels).inc_by(n);
        if counts.heartbeat > 0 {
            inc(vec![("outcome", "heartbeat".into())], counts.heartbeat);
        }
        if counts.counterpart > 0 {
            inc(vec![("outcome", "counterpart".into())], counts.counterpart);
        }
        for (plugin, n) in &counts.resolver {
            inc(
                vec![("outcome", "resolver".into()), ("plugin", plugin.clone())],
                *n,
            );
        }
        for (reason, n) in &counts.unattributed {
            inc(
                vec![
                    ("outcome", "unattributed".into()),
                    ("reason", reason.as_str().into()),
                ],
                *n,
            );
        }
        for (region, n) in &counts.forwarded {
            inc(
                vec![
                    ("outcome", "forwarded".into()),
                    ("region", region_name(*region)),
                ],
                *n,
            );
        }
    }

    /// Counts what the ownership table did with a batch of claims.
    pub fn count_ownership(&self, c: &OwnershipCounters) {
        for (outcome, n) in [
            ("inserted", c.inserted),
            ("merged", c.merged),
            ("covered", c.covered),
            ("conflict", c.conflicts),
            ("refused", c.refused),
            ("invalid", c.invalid),
            ("stale", c.stale),
            ("expired", c.expired),
            ("evicted", c.evicted),
        ] {
            if n > 0 {
                self.ownership
                    .get_or_create(&vec![("outcome", outcome.into())])
                    .inc_by(n);
            }
        }
    }

    pub fn count_drop(&self, reason: &str, n: u64) {
        self.dropped
            .get_or_create(&vec![("reason", reason.into())])
            .inc_by(n);
    }

    /// Sets the outputs' gauges.
    pub fn set_outputs(&self, status: &[OutputStatus]) {
        for s in status {
            let labels = vec![("output", s.name.clone())];
            self.output_queued_bytes
                .get_or_create(&labels)
                .set(s.queued_bytes as i64);
            self.output_up.get_or_create(&labels).set(i64::from(s.up));
            self.output_failures
                .get_or_create(&labels)
                .set(s.failures as i64);
        }
    }

    /// Exports the receiver's counters at every scrape.
    pub fn watch_receiver(&self, counters: Arc<flowattr_transport::server::ReceiverCounters>) {
        *self.receiver_counters.lock().unwrap() = Some(counters);
    }

    /// Exports this directory's plugin counters at every scrape.
    pub fn watch_plugins(&self, directory: Arc<PluginDirectory>) {
        *self.plugins.lock().unwrap() = Some(directory);
    }

    /// Refreshes scrape-time values and renders the text format.
    pub fn render(&self) -> String {
        if let Some(counters) = &*self.receiver_counters.lock().unwrap() {
            for (counter, value) in counters.snapshot().named() {
                self.receiver
                    .get_or_create(&vec![("counter", counter.into())])
                    .set(value as i64);
            }
        }
        if let Some(directory) = &*self.plugins.lock().unwrap() {
            for plugin in directory.all() {
                for (counter, value) in plugin.counters().named() {
                    let labels = vec![
                        ("plugin", plugin.name().to_owned()),
                        ("counter", counter.into()),
                    ];
                    self.plugin.get_or_create(&labels).set(value as i64);
                }
            }
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// The value of a counter or gauge in the rendered text (tests and the
    /// CLI): the sum over every series of `name` whose labels include all
    /// of `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        flowattr_daemon::metrics::metric_sum(&self.render(), name, labels)
    }
}

#[cfg(test)]
mod tests {
    use flowattr_model::UnattributedReason;

    use super::*;

    #[test]
    fn remote_outcomes_render_with_their_labels() {
        let m = CollectorMetrics::new();
        let counts = RemoteCounts {
            heartbeat: 5,
            counterpart: 4,
            resolver: vec![("sonar-legacy".into(), 2)],
            unattributed: vec![(UnattributedReason::Conflict, 3)],
            forwarded: vec![(0, 1)],
            resolver_failures: vec![],
        };
        m.count_remote(&counts, |_| "eu".into());
        m.count_remote(&counts, |_| "eu".into());
        assert_eq!(
            m.value("flowattr_collector_remote", &[("outcome", "heartbeat")]),
            10.0
        );
        assert_eq!(
            m.value("flowattr_collector_remote", &[("reason", "conflict")]),
            6.0
        );
        assert_eq!(
            m.value("flowattr_collector_remote", &[("region", "eu")]),
            2.0
        );
        assert_eq!(
            m.value("flowattr_collector_remote", &[("outcome", "counterpart")]),
            8.0
        );
        assert_eq!(m.value("flowattr_collector_remote", &[]), 30.0);
    }
}
