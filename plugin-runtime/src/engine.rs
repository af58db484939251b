//! The one wasmtime engine a process uses for all its plugins: compiler
//! settings, the epoch ticker that enforces call deadlines, the linker with
//! the host imports, and its compile cache.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::bindings::wit_host;
use crate::cache::CompileCache;
use crate::clock::{Clock, SystemClock};
use crate::sandbox::PluginState;

/// How often the engine's epoch advances; call deadlines are counted in these.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// How a [`Runtime`] is set up.
pub struct RuntimeConfig {
    /// Where compiled components are cached; `None` compiles every time.
    /// Entries unused for [`crate::cache::MAX_UNUSED`] are pruned.
    pub cache_dir: Option<PathBuf>,
    /// The clock plugins read through `host.now-ns`.
    pub clock: Arc<dyn Clock>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Whether a component came from the compile cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
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
    ticker: Arc<Ticker>,
}

impl Drop for RuntimeInner {
    fn drop(&mut self) {
        self.ticker.stop.store(true, Ordering::Relaxed);
        let _lock = self.ticker.lock.lock().unwrap();
        self.ticker.wake.notify_one();
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
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(anyhow::Error::from)
            .context("cannot link WASI")?;
        wit_host::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)
            .map_err(anyhow::Error::from)
            .context("cannot link the host interface")?;
        crate::sink_output::add_to_linker(&mut linker)
            .map_err(anyhow::Error::from)
            .context("cannot link the sink output interface")?;

        let ticker = Arc::new(Ticker::default());
        spawn_ticker(engine.clone(), ticker.clone())?;
        let cache = config
            .cache_dir
            .map(|dir| CompileCache::open(&dir, &engine))
            .transpose()?;
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                cache,
                clock: config.clock,
                ticker,
            }),
        })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub(crate) fn linker(&self) -> &Linker<PluginState> {
        &self.inner.linker
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
        if let Some(component) = cache.load(self.engine(), sha256) {
            return Ok((component, CacheOutcome::Hit));
        }
        let component = Component::new(self.engine(), bytes)?;
        cache.store(sha256, &component);
        Ok((component, CacheOutcome::Miss))
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
