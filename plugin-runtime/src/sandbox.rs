//! What one plugin instance's store holds: its WASI context (read-only
//! preopens and nothing else), its memory cap, the host imports it may call
//! (log, clock, and a sink's output) and the workloads it has sent.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use flowattr_model::columns::WorkloadTable;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::wit_host;
use crate::clock::Clock;
use crate::counters::Counters;
use crate::ratelimit::{Admit, LOG_BURST, LOG_PER_SECOND, RateLimiter};
use crate::sink_output::SinkOutput;

/// Raised inside a call when the plugin asks for more memory than its cap.
#[derive(Debug, thiserror::Error)]
#[error("memory cap of {cap_bytes} bytes exceeded (asked for {desired_bytes})")]
pub struct MemoryCapExceeded {
    pub cap_bytes: usize,
    pub desired_bytes: usize,
}

/// The store data of one plugin instance.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryCap,
    log: PluginLog,
    clock: Arc<dyn Clock>,
    sink_output: SinkOutput,
    workload_table: WorkloadTable,
}

/// Everything needed to build a [`PluginState`].
pub struct SandboxSpec {
    pub name: Arc<str>,
    pub memory_cap_bytes: usize,
    /// Host directory and guest path of each read-only grant.
    pub read_dirs: Vec<(PathBuf, String)>,
    pub clock: Arc<dyn Clock>,
    pub counters: Arc<Counters>,
}

impl PluginState {
    /// A fresh sandbox: no environment, arguments, stdio or network; only the
    /// granted directories, read-only. A granted directory that cannot be
    /// opened is an error.
    pub fn new(spec: &SandboxSpec) -> anyhow::Result<Self> {
        let mut wasi = WasiCtxBuilder::new();
        for (host, guest) in &spec.read_dirs {
            wasi.preopened_dir(host, guest, FsPerms::ReadOnly)
                .map_err(|e| anyhow::anyhow!("cannot grant {} as {guest}: {e}", host.display()))?;
        }
        Ok(Self {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            memory: MemoryCap {
                cap_bytes: spec.memory_cap_bytes,
                current_bytes: 0,
                peak_bytes: 0,
                exceeded: false,
            },
            log: PluginLog {
                name: spec.name.clone(),
                limiter: RateLimiter::new(LOG_BURST, LOG_PER_SECOND),
                counters: spec.counters.clone(),
            },
            clock: spec.clock.clone(),
            sink_output: SinkOutput::new(spec.memory_cap_bytes),
            workload_table: WorkloadTable::default(),
        })
    }

    /// The chunk a sink's `format` call writes through `output.write`.
    pub fn sink_output(&mut self) -> &mut SinkOutput {
        &mut self.sink_output
    }

    /// The workloads this instance has sent, which its answers refer to.
    pub fn workload_table(&mut self) -> &mut WorkloadTable {
        &mut self.workload_table
    }

    /// Bytes of linear memory the instance holds now, and at most so far.
    pub fn memory_bytes(&self) -> (usize, usize) {
        (self.memory.current_bytes, self.memory.peak_bytes)
    }

    /// Clears the "cap exceeded" mark before a call; returns whether the last
    /// call hit it.
    pub fn take_memory_exceeded(&mut self) -> bool {
        std::mem::take(&mut self.memory.exceeded)
    }

    /// The memory limiter wasmtime consults on every growth.
    pub fn limiter(&mut self) -> &mut MemoryCap {
        &mut self.memory
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps the total linear memory of one instance.
pub struct MemoryCap {
    cap_bytes: usize,
    current_bytes: usize,
    peak_bytes: usize,
    exceeded: bool,
}

impl wasmtime::ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.current_bytes - current.min(self.current_bytes) + desired;
        if total > self.cap_bytes {
            self.exceeded = true;
            // An error (not `Ok(false)`) traps at once, so the instance stops
            // here instead of limping on after a failed allocation.
            return Err(MemoryCapExceeded {
                cap_bytes: self.cap_bytes,
                desired_bytes: total,
            }
            .into());
        }
        self.current_bytes = total;
        self.peak_bytes = self.peak_bytes.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// A plugin's log: tagged with its name, rate-limited, counted.
struct PluginLog {
    name: Arc<str>,
    limiter: RateLimiter,
    counters: Arc<Counters>,
}

impl PluginLog {
    fn write(&mut self, level: wit_host::Level, message: &str) {
        let suppressed = match self.limiter.admit(Instant::now()) {
            Admit::Write { suppressed } => suppressed,
            Admit::Suppress => {
                Counters::add(&self.counters.log_suppressed, 1);
                return;
            }
        };
        Counters::add(&self.counters.log_lines, 1);
        if suppressed > 0 {
            tracing::warn!(plugin = %self.name, suppressed, "Plugin log lines were dropped by the rate limit.");
        }
        let plugin = &*self.name;
        match level {
            wit_host::Level::Trace => tracing::trace!(target: "plugin", plugin, "{message}"),
            wit_host::Level::Debug => tracing::debug!(target: "plugin", plugin, "{message}"),
            wit_host::Level::Info => tracing::info!(target: "plugin", plugin, "{message}"),
            wit_host::Level::Warn => tracing::warn!(target: "plugin", plugin, "{message}"),
            wit_host::Level::Error => tracing::error!(target: "plugin", plugin, "{message}"),
        }
    }
}

impl wit_host::Host for PluginState {
    fn log(&mut self, level: wit_host::Level, message: String) {
        self.log.write(level, &message);
    }

    fn now_ns(&mut self) -> u64 {
        self.clock.now_ns()
    }
}
