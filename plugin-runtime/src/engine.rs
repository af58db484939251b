//! The one wasmtime engine a process uses for all its plugins: compiler
//! settings, the two halves of every call deadline (the epoch ticker that
//! stops guest code, the timer that stops a host call the guest waits in),
//! the linker with the host imports, and its compile cache.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::bindings::wit_host;
use crate::cache::{CompileCache, Loaded};
use crate::clock::{Clock, SystemClock};
use crate::sandbox::PluginState;
use crate::trust::TrustPolicy;

/// How often the engine's epoch advances; call deadlines are counted in these.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Threads the runtime's tokio pool may start for WASI file I/O. A read
/// that never returns (a FIFO without a writer, a hung network mount) keeps
/// its thread after the call is abandoned at its deadline; with every thread
/// stuck, later file I/O waits, and those calls end at their deadlines too.
pub const MAX_BLOCKING_THREADS: usize = 8;

/// How a [`Runtime`] is set up.
pub struct RuntimeConfig {
    /// Where compiled components are cached; `None` compiles every time.
    /// Entries unused for [`crate::cache::MAX_UNUSED`] are pruned. A
    /// directory not owned by this user, or writable by others, is not used.
    pub cache_dir: Option<PathBuf>,
    /// The clock plugins read through `host.now-ns`.
    pub clock: Arc<dyn Clock>,
    /// What plugins may be granted and which components are trusted.
    pub trust: TrustPolicy,
    /// Instances of one plugin that may exist at once, for callers on that
    /// many threads (the collector's sink workers); each holds up to the
    /// plugin's memory cap. One is made at load, the others when a call
    /// finds every instance busy.
    pub instances: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            clock: Arc::new(SystemClock),
            trust: TrustPolicy::default(),
            instances: 1,
        }
    }
}

/// Whether a component came from the compile cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    /// The entry failed its integrity check: removed, and compiled afresh.
    Rejected,
    Disabled,
}

/// The shared plugin engine. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: Engine,
    linker: Linker<PluginState>,
    cache: Option<CompileCache>,
    clock: Arc<dyn Clock>,
    trust: TrustPolicy,
    instances: usize,
    ticker: Arc<Ticker>,
    /// Drives WASI's timers and its blocking file I/O; `None` only while
    /// dropping.
    io: Option<tokio::runtime::Runtime>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.ticker.stop.store(true, Ordering::Relaxed);
        {
            let _lock = self.ticker.lock.lock().unwrap();
            self.ticker.wake.notify_one();
        }
        // Without waiting: the last clone may drop inside an async task, and
        // a thread stuck in a read never ends.
        if let Some(io) = self.io.take() {
            io.shutdown_background();
        }
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] while at least one call
/// runs, and sleeps otherwise, so an idle host pays no wakeups for deadlines.
#[derive(Default)]
struct Ticker {
    active: AtomicUsize,
    stop: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

/// Keeps the epoch ticking while a plugin call runs.
pub(crate) struct Ticking<'a>(&'a Ticker);

impl Drop for Ticking<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Runtime {
    /// Keeps call deadlines counting until the guard drops; hold it around
    /// every call into a plugin.
    pub(crate) fn ticking(&self) -> Ticking<'_> {
        let ticker = &*self.inner.ticker;
        if ticker.active.fetch_add(1, Ordering::SeqCst) == 0 {
            let _lock = ticker.lock.lock().unwrap();
            ticker.wake.notify_one();
        }
        Ticking(ticker)
    }

    /// Builds the engine and starts its epoch ticker.
    pub fn new(config: RuntimeConfig) -> anyhow::Result<Self> {
        let mut wasm = Config::new();
        wasm.wasm_component_model(true);
        wasm.epoch_interruption(true);
        wasm.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&wasm)
            .map_err(anyhow::Error::from)
            .context("cannot create the Wasm engine")?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("cannot link WASI")?;
        crate::resources::add_to_linker(&mut linker)
            .map_err(anyhow::Error::from)
            .context("cannot link the capped open-at")?;
        wit_host::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)
            .context("cannot link the host interface")?;
        crate::sink_output::add_to_linker(&mut linker)
            .map_err(anyhow::Error::from)
            .context("cannot link the sink output interface")?;

        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(MAX_BLOCKING_THREADS)
            .thread_name("wasm-io")
            .enable_time()
            .build()
            .context("cannot start the plugin I/O runtime")?;
        let ticker = Arc::new(Ticker::default());
        spawn_ticker(engine.clone(), ticker.clone())?;
        let cache = match config.cache_dir {
            Some(dir) => CompileCache::open(&dir, &engine)?,
            None => None,
        };
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                cache,
                clock: config.clock,
                trust: config.trust,
                instances: config.instances.max(1),
                ticker,
                io: Some(io),
            }),
        })
    }

    /// Runs `call` to completion on this thread, or drops it when `deadline`
    /// passes (`None`): whatever the guest waits in (a sleep, a poll, a file
    /// read pushed to the blocking pool) is abandoned with it. Safe to call
    /// from any thread, inside a tokio context or not: the call runs on a
    /// plain executor, and only its timers and blocking I/O go to this
    /// runtime's threads.
    pub(crate) fn run_bounded<F: Future>(&self, deadline: Duration, call: F) -> Option<F::Output> {
        let io = self.inner.io.as_ref().expect("present until dropped");
        let _context = io.enter();
        futures_executor::block_on(tokio::time::timeout(deadline, call)).ok()
    }

    /// What plugins may be granted and which components are trusted.
    pub(crate) fn trust(&self) -> &TrustPolicy {
        &self.inner.trust
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn linker(&self) -> &Linker<PluginState> {
        &self.inner.linker
    }

    /// Instances of one plugin that may exist at once.
    pub(crate) fn instances(&self) -> usize {
        self.inner.instances
    }

    pub(crate) fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    /// Compiles `bytes` (whose SHA-256 is `sha256`), or loads the compiled
    /// form from the cache.
    pub fn compile(&self, bytes: &[u8], sha256: &str) -> anyhow::Result<(Component, CacheOutcome)> {
        let Some(cache) = &self.inner.cache else {
            return Ok((
                Component::new(self.engine(), bytes)?,
                CacheOutcome::Disabled,
            ));
        };
        let outcome = match cache.load(self.engine(), sha256) {
            Loaded::Hit(component) => return Ok((component, CacheOutcome::Hit)),
            Loaded::Missing => CacheOutcome::Miss,
            Loaded::Rejected => CacheOutcome::Rejected,
        };
        let component = Component::new(self.engine(), bytes)?;
        cache.store(sha256, &component);
        Ok((component, outcome))
    }
}

fn spawn_ticker(engine: Engine, ticker: Arc<Ticker>) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            loop {
                {
                    let mut lock = ticker.lock.lock().unwrap();
                    while ticker.active.load(Ordering::SeqCst) == 0
                        && !ticker.stop.load(Ordering::Relaxed)
                    {
                        lock = ticker.wake.wait(lock).unwrap();
                    }
                }
                if ticker.stop.load(Ordering::Relaxed) {
                    return;
                }
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })
        .context("cannot start the epoch ticker")?;
    Ok(())
}
