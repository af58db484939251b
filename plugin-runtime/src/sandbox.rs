//! What one plugin instance's store holds: its WASI context (read-only
//! preopens, stdout and stderr into its log, nothing else), its memory and
//! resource caps, the host imports it may call (log, clock, and a sink's
//! output) and the workloads it has sent.

use std::path::PathBuf;
use std::sync::Arc;

use flowattr_model::columns::WorkloadTable;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::wit_host;
use crate::clock::Clock;
use crate::counters::Counters;
use crate::plugin_log::{LogOutput, PluginLog, SharedLog};
use crate::resources::MAX_RESOURCES;
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
    log: SharedLog,
    counters: Arc<Counters>,
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
    /// A fresh sandbox: no environment, arguments, stdin or network; stdout
    /// and stderr go to the plugin's log; only the granted directories,
    /// read-only. A granted directory that cannot be opened is an error.
    pub fn new(spec: &SandboxSpec) -> anyhow::Result<Self> {
        let log = PluginLog::shared(spec.name.clone(), spec.counters.clone());
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(LogOutput::stdout(&log))
            .stderr(LogOutput::stderr(&log));
        for (host, guest) in &spec.read_dirs {
            wasi.preopened_dir(host, guest, FsPerms::ReadOnly)
                .map_err(|e| anyhow::anyhow!("cannot grant {} as {guest}: {e}", host.display()))?;
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_RESOURCES);
        Ok(Self {
            wasi: wasi.build(),
            table,
            memory: MemoryCap {
                cap_bytes: spec.memory_cap_bytes,
                current_bytes: 0,
                peak_bytes: 0,
                exceeded: false,
            },
            log,
            counters: spec.counters.clone(),
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

    /// Counts an `open` refused for the resource cap.
    pub fn note_refused_resource(&mut self) {
        Counters::add(&self.counters.resources_refused, 1);
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

impl wit_host::Host for PluginState {
    fn log(&mut self, level: wit_host::Level, message: String) {
        self.log.lock().unwrap().write(level, "log", &message, 0);
    }

    fn now_ns(&mut self) -> u64 {
        self.clock.now_ns()
    }
}
