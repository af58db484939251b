//! Agent metrics as Prometheus text on `GET /metrics`: events seen, records
//! written, drops by reason, attribution outcomes per plugin, batch sizes,
//! CPU time, the plugin runtime's per-plugin counters, and the transport's
//! spool and delivery counters.

use std::sync::{Arc, Mutex};

use flowattr_host_ebpf::Counter as KernelCounter;
use flowattr_plugin_runtime::PluginDirectory;
use flowattr_transport::shipper::{ShipperCounters, ShipperStats};
use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use crate::capture::{CounterReader, KernelCounters};

type Labels = Vec<(&'static str, String)>;

/// The agent's metrics, updated by the pipeline and read by the endpoint.
pub struct AgentMetrics {
    registry: Registry,
    /// Counters the kernel programs keep, by event.
    pub kernel_events: Family<Labels, Counter>,
    /// Records read from the ring buffer.
    pub records_read: Counter,
    /// Flows written out in batches.
    pub flows_written: Counter,
    /// Records or flows lost, by reason.
    pub dropped: Family<Labels, Counter>,
    /// Local attribution outcomes, by plugin (`cache` for cache hits).
    pub attribution: Family<Labels, Counter>,
    /// Flows whose local side stayed unattributed, by reason.
    pub local_unattributed: Family<Labels, Counter>,
    /// Flows per batch written.
    pub batch_flows: Histogram,
    /// Batches written.
    pub batches_written: Counter,
    /// User plus system CPU time of the agent process.
    pub cpu_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// The plugin runtime's counters, by plugin and counter.
    pub plugin: Family<Labels, Gauge>,
    /// Batches in the transport's spool, not yet acknowledged.
    pub spool_batches: Gauge,
    /// Bytes of the spooled batches.
    pub spool_bytes: Gauge,
    /// Transport events by event: `sent`, `acked`, `retried`, `failover`,
    /// `rejected` (batches; a rejected batch is dropped, its flows counted
    /// in `dropped{reason="rejected"}`), `refused_identity` (refusals of a
    /// batch naming another agent than the certificate; the batch is kept),
    /// `refused_unclaimed` (refusals because the collector's `[claims]` do
    /// not list this agent; the batch is kept).
    pub transport: Family<Labels, Counter>,
    /// Spooled batches a collector refuses for the agent name they carry,
    /// waiting to be offered again.
    pub transport_held_batches: Gauge,
    /// 1 while connected to a collector.
    pub transport_connected: Gauge,
    scrape: Mutex<ScrapeSources>,
}

#[derive(Default)]
struct ScrapeSources {
    kernel: Option<CounterReader>,
    kernel_seen: KernelCounters,
    /// Skipped program runs already counted, by program.
    skipped_seen: Vec<u64>,
    plugins: Vec<Arc<PluginDirectory>>,
    shipper: Option<(Arc<ShipperCounters>, ShipperStats)>,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentMetrics {
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("flowattr_agent"),
            kernel_events: Family::default(),
            records_read: Counter::default(),
            flows_written: Counter::default(),
            dropped: Family::default(),
            attribution: Family::default(),
            local_unattributed: Family::default(),
            batch_flows: Histogram::new(exponential_buckets(1.0, 4.0, 10)),
            batches_written: Counter::default(),
            cpu_seconds: Gauge::default(),
            plugin: Family::default(),
            spool_batches: Gauge::default(),
            spool_bytes: Gauge::default(),
            transport: Family::default(),
            transport_connected: Gauge::default(),
            transport_held_batches: Gauge::default(),
            scrape: Mutex::default(),
        };
        let registry = &mut m.registry;
        registry.register(
            "kernel_events",
            "Events counted by the eBPF programs",
            m.kernel_events.clone(),
        );
        registry.register(
            "records_read",
            "Records read from the kernel ring buffer",
            m.records_read.clone(),
        );
        registry.register(
            "flows_written",
            "Flows written out in batches",
            m.flows_written.clone(),
        );
        registry.register(
            "dropped",
            "Records or flows lost, by reason",
            m.dropped.clone(),
        );
        registry.register(
            "attribution",
            "Local attribution outcomes by plugin",
            m.attribution.clone(),
        );
        registry.register(
            "local_unattributed",
            "Flows whose local side stayed unattributed, by reason",
            m.local_unattributed.clone(),
        );
        registry.register(
            "batch_flows",
            "Flows per batch written",
            m.batch_flows.clone(),
        );
        registry.register(
            "batches_written",
            "Batches written",
            m.batches_written.clone(),
        );
        registry.register(
            "cpu_seconds",
            "User plus system CPU seconds used by the agent",
            m.cpu_seconds.clone(),
        );
        registry.register(
            "plugin",
            "Plugin runtime counters by plugin and counter",
            m.plugin.clone(),
        );
        registry.register(
            "spool_batches",
            "Batches in the transport spool, not yet acknowledged",
            m.spool_batches.clone(),
        );
        registry.register(
            "spool_bytes",
            "Bytes of the batches in the transport spool",
            m.spool_bytes.clone(),
        );
        registry.register(
            "transport",
            "Transport events by event: sent, acked, retried, failover, rejected (dropped), refused_identity and refused_unclaimed (kept) (batches)",
            m.transport.clone(),
        );
        registry.register(
            "transport_held_batches",
            "Spooled batches a collector refuses (for the agent name they carry, or an agent its claims do not list), kept to be offered again",
            m.transport_held_batches.clone(),
        );
        registry.register(
            "transport_connected",
            "1 while connected to a collector",
            m.transport_connected.clone(),
        );
        m
    }

    /// Counts `n` lost records or flows.
    pub fn count_drop(&self, reason: &str, n: u64) {
        self.dropped
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc_by(n);
    }

    /// Reads kernel counters from `reader` at every scrape.
    pub fn watch_kernel(&self, reader: CounterReader) {
        self.scrape.lock().unwrap().kernel = Some(reader);
    }

    /// Reports `directory`'s plugin counters at every scrape.
    pub fn watch_plugins(&self, directory: Arc<PluginDirectory>) {
        self.scrape.lock().unwrap().plugins.push(directory);
    }

    /// Reports the transport shipper's counters at every scrape.
    pub fn watch_shipper(&self, counters: Arc<ShipperCounters>) {
        self.scrape.lock().unwrap().shipper = Some((counters, ShipperStats::default()));
    }

    /// Refreshes scrape-time values and renders the text format.
    pub fn render(&self) -> String {
        self.refresh();
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    fn refresh(&self) {
        let mut guard = self.scrape.lock().unwrap();
        let sources = &mut *guard;
        if let Some(reader) = &sources.kernel {
            let now = reader.read();
            for counter in KernelCounter::ALL {
                let i = counter as usize;
                let delta = now[i].saturating_sub(sources.kernel_seen[i]);
                self.kernel_events
                    .get_or_create(&vec![("event", counter.name().to_owned())])
                    .inc_by(delta);
                if matches!(
                    counter,
                    KernelCounter::RingBufferFull | KernelCounter::SocketMapFull
                ) {
                    self.count_drop(counter.name(), delta);
                }
            }
            sources.kernel_seen = now;
            let skipped = reader.skipped_runs();
            sources.skipped_seen.resize(skipped.len(), 0);
            for (i, (program, runs)) in skipped.into_iter().enumerate() {
                let delta = runs.saturating_sub(sources.skipped_seen[i]);
                sources.skipped_seen[i] = runs;
                self.kernel_events
                    .get_or_create(&vec![("event", format!("skipped_runs_{program}"))])
                    .inc_by(delta);
                if program == flowattr_host_ebpf::names::DESTROY_PROGRAM {
                    // A skipped close is recovered at destruction; a skipped
                    // destruction may have been that recovery: counted as a
                    // possible drop (an upper bound).
                    self.count_drop("program_run_skipped", delta);
                }
            }
        }
        for directory in &sources.plugins {
            for plugin in directory.all() {
                for (name, value) in plugin.counters().named() {
                    let labels = vec![
                        ("plugin", plugin.name().to_owned()),
                        ("counter", name.to_owned()),
                    ];
                    self.plugin.get_or_create(&labels).set(value as i64);
                }
            }
        }
        if let Some((counters, seen)) = &mut sources.shipper {
            let now = counters.snapshot();
            self.spool_batches.set(now.spooled_batches as i64);
            self.spool_bytes.set(now.spool_bytes as i64);
            for (event, value, before) in [
                ("sent", now.sent, seen.sent),
                ("acked", now.acked, seen.acked),
                ("retried", now.retries, seen.retries),
                ("failover", now.failovers, seen.failovers),
                ("rejected", now.rejected, seen.rejected),
                (
                    "refused_identity",
                    now.refused_identity,
                    seen.refused_identity,
                ),
                (
                    "refused_unclaimed",
                    now.refused_unclaimed,
                    seen.refused_unclaimed,
                ),
            ] {
                self.transport
                    .get_or_create(&vec![("event", event.to_owned())])
                    .inc_by(value.saturating_sub(before));
            }
            let dropped = now.dropped_spool_full_flows;
            self.count_drop(
                "spool_full",
                dropped.saturating_sub(seen.dropped_spool_full_flows),
            );
            self.count_drop(
                "rejected",
                now.rejected_flows.saturating_sub(seen.rejected_flows),
            );
            self.transport_held_batches.set(now.held_identity as i64);
            self.transport_connected
                .set(i64::from(counters.connected_to().is_some()));
            *seen = now;
        }
        self.cpu_seconds.set(cpu_seconds());
    }
}

/// User plus system CPU time of this process.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_drops_and_attribution_with_labels() {
        let m = AgentMetrics::new();
        m.count_drop("policy", 3);
        m.attribution
            .get_or_create(&vec![
                ("plugin", "ipman".into()),
                ("outcome", "attributed".into()),
            ])
            .inc_by(5);
        m.batch_flows.observe(10.0);
        let text = m.render();
        assert!(
            text.contains(r#"flowattr_agent_dropped_total{reason="policy"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"flowattr_agent_attribution_total{plugin="ipman",outcome="attributed"} 5"#
            ),
            "{text}"
        );
        assert!(
            text.contains("flowattr_agent_batch_flows_count 1"),
            "{text}"
        );
        assert!(text.contains("flowattr_agent_cpu_seconds "), "{text}");
    }

    #[test]
    fn renders_the_shipper_counters_as_they_grow() {
        use std::sync::atomic::Ordering::Relaxed;
        let m = AgentMetrics::new();
        let shipper = Arc::new(ShipperCounters::default());
        m.watch_shipper(shipper.clone());
        shipper.spooled_batches.store(3, Relaxed);
        shipper.spool_bytes.store(4096, Relaxed);
        shipper.acked.store(5, Relaxed);
        shipper.dropped_spool_full_flows.store(100, Relaxed);
        shipper.refused_identity.store(4, Relaxed);
        shipper.refused_unclaimed.store(6, Relaxed);
        shipper.held_identity.store(2, Relaxed);
        shipper.rejected.store(1, Relaxed);
        shipper.rejected_flows.store(30, Relaxed);
        let text = m.render();
        for line in [
            "flowattr_agent_spool_batches 3",
            "flowattr_agent_spool_bytes 4096",
            r#"flowattr_agent_transport_total{event="acked"} 5"#,
            r#"flowattr_agent_dropped_total{reason="spool_full"} 100"#,
            "flowattr_agent_transport_connected 0",
            r#"flowattr_agent_transport_total{event="refused_identity"} 4"#,
            r#"flowattr_agent_transport_total{event="refused_unclaimed"} 6"#,
            "flowattr_agent_transport_held_batches 2",
            r#"flowattr_agent_transport_total{event="rejected"} 1"#,
            r#"flowattr_agent_dropped_total{reason="rejected"} 30"#,
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        shipper.acked.store(7, Relaxed);
        shipper.retries.store(2, Relaxed);
        let text = m.render();
        assert!(
            text.contains(r#"flowattr_agent_transport_total{event="acked"} 7"#),
            "{text}"
        );
        assert!(
            text.contains(r#"flowattr_agent_transport_total{event="retried"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"flowattr_agent_dropped_total{reason="spool_full"} 100"#),
            "{text}"
        );
    }
}
