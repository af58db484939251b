//! One loaded plugin: a validated, pre-instantiated component and the live
//! instance it calls. Calls are bounded by a deadline and a memory cap; a
//! trap, timeout or overrun is contained, counted and logged, and the
//! instance is rebuilt on a later call with backoff.
//!
//! A deadline has two halves: the epoch deadline traps guest code that runs
//! too long, and [`Runtime::run_bounded`] abandons a call whose guest waits
//! in a host call (a WASI sleep, poll or blocked read) past the same instant.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use flowattr_backoff::{Jitter, Policy};
use flowattr_model::columns::TableMismatch;
use flowattr_model::{Answers, AttributedFlow, IpEvent, LocalQuery, ResolveQuery, Verdict};
use sha2::{Digest, Sha256};
use wasmtime::Store;
use wasmtime::component::Component;

use crate::bindings::{identity, policy, resolver, sink, wit};
use crate::convert;
use crate::counters::{CounterSnapshot, Counters};
use crate::engine::{CacheOutcome, EPOCH_TICK, Runtime};
use crate::manifest::{FailurePolicy, FieldError, Manifest, PluginKind, Version, WIT_VERSION};
use crate::sandbox::{MemoryCapExceeded, PluginState, SandboxSpec};

/// Why a component was refused at load time.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A problem with the manifest (or something it promises, like the hash).
    #[error("{0}")]
    Manifest(#[from] FieldError),
    /// A problem with the component itself.
    #[error("{0}")]
    Component(String),
    /// A problem with its signature file (`NAME.wasm.sig`).
    #[error("{0}")]
    Signature(String),
}

/// Why a call did not return an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("plugin `{plugin}`: {failure}")]
pub struct CallError {
    pub plugin: Arc<str>,
    pub failure: Failure,
}

/// What went wrong in a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("stopped at its {0} ms deadline")]
    Timeout(u32),
    #[error("stopped for growing memory past its {0} MiB cap")]
    MemoryExceeded(u32),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned an error: {0}")]
    Plugin(String),
    #[error("unavailable for {0:?} more after {1} failures in a row")]
    BackingOff(Duration, u32),
    #[error("could not be rebuilt: {0}")]
    Rebuild(String),
    /// Its answers' workload table update did not fit the host's copy.
    #[error("lost track of its workload table: {0}")]
    TableMismatch(String),
    #[error("is a {actual} plugin, not {expected}")]
    WrongKind {
        expected: PluginKind,
        actual: PluginKind,
    },
}

impl Failure {
    /// Whether the instance was lost (and will be rebuilt).
    pub fn lost_instance(&self) -> bool {
        matches!(
            self,
            Self::Timeout(_) | Self::MemoryExceeded(_) | Self::Trap(_) | Self::TableMismatch(_)
        )
    }
}

enum KindPre {
    Identity(identity::IdentityPluginPre<PluginState>),
    Resolver(resolver::ResolverPluginPre<PluginState>),
    Policy(policy::PolicyPluginPre<PluginState>),
    Sink(sink::SinkPluginPre<PluginState>),
}

enum Exports {
    Identity(identity::IdentityPlugin),
    Resolver(resolver::ResolverPlugin),
    Policy(policy::PolicyPlugin),
    Sink(sink::SinkPlugin),
}

struct Live {
    store: Store<PluginState>,
    exports: Exports,
}

/// A plugin's instances and its health. Instances are made when a call
/// finds none idle and fewer than `most` exist, so a plugin called from
/// one thread has one; the health is the plugin's, not an instance's: after
/// a lost instance, rebuilds back off for all of them.
struct Instances {
    idle: Vec<Live>,
    /// Idle or in a call.
    existing: usize,
    most: usize,
    /// Lost and not yet rebuilt.
    lost: usize,
    failures: u32,
    retry_at: Option<Instant>,
    /// The rebuild backoff's randomness.
    jitter: Jitter,
}

impl Instances {
    fn new(first: Live, most: usize, jitter: Jitter) -> Self {
        Self {
            idle: vec![first],
            existing: 1,
            most: most.max(1),
            lost: 0,
            failures: 0,
            retry_at: None,
            jitter,
        }
    }

    fn backing_off(&self, now: Instant) -> Option<Duration> {
        let at = self.retry_at.filter(|at| self.lost > 0 && *at > now)?;
        Some(at - now)
    }
}

/// One call into the instance, borrowing its store for as long as it runs.
type CallFuture<'a, T> = Pin<Box<dyn Future<Output = wasmtime::Result<Result<T, String>>> + 'a>>;

/// A validated plugin, ready to call from any thread: calls from several
/// threads at once run on instances of their own, up to the runtime's
/// [`crate::RuntimeConfig::instances`], and wait beyond that.
pub struct Plugin {
    name: Arc<str>,
    manifest: Manifest,
    sha256: String,
    cache: CacheOutcome,
    runtime: Runtime,
    pre: KindPre,
    spec: SandboxSpec,
    config_json: String,
    counters: Arc<Counters>,
    instances: Mutex<Option<Instances>>,
    /// Signalled when an instance goes back idle or is lost.
    freed: Condvar,
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The backoff between rebuilds after the first: full jitter under a
/// ceiling of 50 ms doubling up to 30 s ([`flowattr_backoff`]).
pub const REBUILD_BACKOFF: Policy = Policy::new(Duration::from_millis(50), Duration::from_secs(30));

/// The wait before the `failures`-th rebuild in a row: none for the first
/// (one bad batch should not cost the batches after it), then a delay
/// drawn by [`REBUILD_BACKOFF`] for the failures after the first.
pub fn rebuild_delay(failures: u32, jitter: &mut Jitter) -> Duration {
    if failures <= 1 {
        return Duration::ZERO;
    }
    REBUILD_BACKOFF.delay(failures - 1, jitter)
}

impl Plugin {
    /// Validates and loads a component: its signature (`signature`, the
    /// contents of `NAME.wasm.sig`) when the runtime requires one, its hash
    /// against the manifest, that it implements the manifest's kind at a
    /// compatible WIT version, that its imports can be satisfied, that its
    /// grants exist under the allowed roots, and that `init` accepts the
    /// config.
    pub fn load(
        runtime: &Runtime,
        name: &str,
        manifest: Manifest,
        manifest_dir: &Path,
        wasm: &[u8],
        signature: Option<&[u8]>,
        counters: Arc<Counters>,
    ) -> Result<Self, LoadError> {
        runtime
            .trust()
            .verify(wasm, signature)
            .map_err(|why| LoadError::Signature(format!("{name}.wasm {why}")))?;
        let sha256 = sha256_hex(wasm);
        match &manifest.sha256 {
            None => {
                return Err(FieldError::new(
                    "sha256",
                    "is missing; `flowattr plugin install` stamps it",
                )
                .into());
            }
            Some(expected) if !expected.eq_ignore_ascii_case(&sha256) => {
                return Err(FieldError::new(
                    "sha256",
                    format!("is {expected} but {name}.wasm hashes to {sha256}"),
                )
                .into());
            }
            Some(_) => {}
        }
        let (component, cache) = runtime.compile(wasm, &sha256).map_err(|e| {
            LoadError::Component(format!("not a valid Wasm component: {}", e.root_cause()))
        })?;
        if cache == CacheOutcome::Rejected {
            Counters::add(&counters.cache_rejected, 1);
        }
        check_exports(runtime, &component, &manifest)?;
        let pre = runtime.linker().instantiate_pre(&component).map_err(|e| {
            LoadError::Component(format!("imports something this host does not offer: {e}"))
        })?;
        let world = |e: wasmtime::Error| {
            LoadError::Component(format!("does not match the {} world: {e}", manifest.kind))
        };
        let pre = match manifest.kind {
            PluginKind::Identity => {
                KindPre::Identity(identity::IdentityPluginPre::new(pre).map_err(world)?)
            }
            PluginKind::Resolver => {
                KindPre::Resolver(resolver::ResolverPluginPre::new(pre).map_err(world)?)
            }
            PluginKind::Policy => {
                KindPre::Policy(policy::PolicyPluginPre::new(pre).map_err(world)?)
            }
            PluginKind::Sink => KindPre::Sink(sink::SinkPluginPre::new(pre).map_err(world)?),
        };
        let mut read_dirs = manifest.resolved_read_dirs(manifest_dir);
        for (i, (host, _)) in read_dirs.iter_mut().enumerate() {
            let field = || format!("capabilities.read_dirs[{i}].host");
            if !host.is_dir() {
                return Err(FieldError::new(
                    field(),
                    format!("{} is not a directory", host.display()),
                )
                .into());
            }
            *host = runtime
                .trust()
                .check_grant(host, manifest_dir)
                .map_err(|why| FieldError::new(field(), why))?;
        }
        let name: Arc<str> = name.into();
        let spec = SandboxSpec {
            name: name.clone(),
            memory_cap_bytes: manifest.limits.memory_mib as usize * 1024 * 1024,
            read_dirs,
            clock: runtime.clock(),
            counters: counters.clone(),
        };
        let plugin = Self {
            config_json: manifest.config_json(),
            name,
            manifest,
            sha256,
            cache,
            runtime: runtime.clone(),
            pre,
            spec,
            counters,
            instances: Mutex::new(None),
            freed: Condvar::new(),
        };
        let live = plugin.instantiate().map_err(|e| match e {
            InstantiateError::Refused(msg) => LoadError::Manifest(FieldError::new(
                "config",
                format!("the plugin refused it: {msg}"),
            )),
            InstantiateError::Failed(msg) => {
                LoadError::Component(format!("failed to start: {msg}"))
            }
        })?;
        *plugin.instances.lock().unwrap() = Some(Instances::new(
            live,
            runtime.instances(),
            Jitter::from_entropy(),
        ));
        Ok(plugin)
    }

    /// The plugin's name (its file stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The manifest it was loaded with.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Whether a failed call should leave its batch unattributed (or, for a
    /// policy, dropped) rather than pass it on (`on_failure`).
    pub fn fails_closed(&self) -> bool {
        self.manifest.on_failure == FailurePolicy::FailClosed
    }

    /// Its kind.
    pub fn kind(&self) -> PluginKind {
        self.manifest.kind
    }

    /// Hex SHA-256 of its component.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Whether its compiled form came from the cache.
    pub fn cache_outcome(&self) -> CacheOutcome {
        self.cache
    }

    /// Its counters so far.
    pub fn counters(&self) -> CounterSnapshot {
        self.counters.snapshot()
    }

    /// Bytes of linear memory its idle instances hold now and held at most
    /// (summed), if it has any (instances in a call are not counted).
    pub fn memory_bytes(&self) -> Option<(usize, usize)> {
        let guard = self.instances.lock().unwrap();
        let idle = &guard.as_ref()?.idle;
        (!idle.is_empty()).then(|| {
            idle.iter()
                .map(|l| l.store.data().memory_bytes())
                .fold((0, 0), |(c, p), (lc, lp)| (c + lc, p + lp))
        })
    }

    /// Attributes local endpoints (identity plugins).
    pub fn identify(&self, queries: &[LocalQuery]) -> Result<Answers, CallError> {
        self.expect_kind(PluginKind::Identity)?;
        let input = convert::local_queries(queries);
        let answers = self.call(
            queries.len(),
            move |store, exports| {
                Box::pin(async move {
                    let Exports::Identity(b) = exports else {
                        unreachable!("kind checked above")
                    };
                    let answers = b
                        .flowattr_plugin_identity()
                        .call_identify(&mut *store, &input)
                        .await?;
                    read_answers(store, answers).map(Ok)
                })
            },
            |_| {},
        )?;
        self.checked_answers(answers, queries.len())
    }

    /// Feeds address events (resolver plugins).
    pub fn ingest(&self, events: &[IpEvent]) -> Result<(), CallError> {
        self.expect_kind(PluginKind::Resolver)?;
        let input: Vec<_> = events.iter().map(convert::ip_event).collect();
        self.call(
            events.len(),
            move |store, exports| {
                Box::pin(async move {
                    let Exports::Resolver(b) = exports else {
                        unreachable!("kind checked above")
                    };
                    b.flowattr_plugin_resolver()
                        .call_ingest(store, &input)
                        .await
                })
            },
            |_| {},
        )
    }

    /// Resolves remote addresses (resolver plugins).
    pub fn resolve(&self, queries: &[ResolveQuery]) -> Result<Answers, CallError> {
        self.expect_kind(PluginKind::Resolver)?;
        let input = convert::resolve_queries(queries);
        let answers = self.call(
            queries.len(),
            move |store, exports| {
                Box::pin(async move {
                    let Exports::Resolver(b) = exports else {
                        unreachable!("kind checked above")
                    };
                    let answers = b
                        .flowattr_plugin_resolver()
                        .call_resolve(&mut *store, &input)
                        .await?;
                    read_answers(store, answers).map(Ok)
                })
            },
            |_| {},
        )?;
        self.checked_answers(answers, queries.len())
    }

    /// One verdict per flow (policy plugins).
    pub fn decide(&self, flows: &[AttributedFlow]) -> Result<Vec<Verdict>, CallError> {
        self.expect_kind(PluginKind::Policy)?;
        let input = convert::flow_batch(flows);
        let verdicts = self.call(
            flows.len(),
            move |store, exports| {
                Box::pin(async move {
                    let Exports::Policy(b) = exports else {
                        unreachable!("kind checked above")
                    };
                    Ok(Ok(b
                        .flowattr_plugin_policy()
                        .call_decide(store, &input)
                        .await?))
                })
            },
            |_| {},
        )?;
        if verdicts.len() != flows.len() {
            return Err(self.plugin_error(format!(
                "returned {} verdicts for {} flows",
                verdicts.len(),
                flows.len()
            )));
        }
        Ok(verdicts.into_iter().map(convert::from_verdict).collect())
    }

    /// Formats flows into output bytes appended to `out` (sink plugins).
    /// On an error `out` is as it was. Pass a buffer that is reused from
    /// batch to batch: the bytes are copied into it straight from the
    /// plugin's memory.
    pub fn format(&self, flows: &[AttributedFlow], out: &mut Vec<u8>) -> Result<(), CallError> {
        self.expect_kind(PluginKind::Sink)?;
        let input = convert::flow_batch(flows);
        let kept = out.len();
        let buffer = std::mem::take(out);
        let result = self.call(
            flows.len(),
            move |store, exports| {
                store.data_mut().sink_output().begin(buffer);
                Box::pin(async move {
                    let Exports::Sink(b) = exports else {
                        unreachable!("kind checked above")
                    };
                    b.flowattr_plugin_sink()
                        .call_format(&mut *store, &input)
                        .await
                })
            },
            // Also after a call abandoned at its deadline: the buffer is the
            // caller's.
            |store| *out = store.data_mut().sink_output().end(),
        );
        if result.is_err() {
            out.truncate(kept);
        }
        result
    }

    /// The media type a sink produces.
    pub fn content_type(&self) -> Result<String, CallError> {
        self.expect_kind(PluginKind::Sink)?;
        self.call(
            0,
            |store, exports| {
                Box::pin(async move {
                    let Exports::Sink(b) = exports else {
                        unreachable!("kind checked above")
                    };
                    Ok(Ok(b
                        .flowattr_plugin_sink()
                        .call_content_type(store)
                        .await?))
                })
            },
            |_| {},
        )
    }

    fn expect_kind(&self, expected: PluginKind) -> Result<(), CallError> {
        let actual = self.kind();
        if actual == expected {
            Ok(())
        } else {
            Err(self.error(Failure::WrongKind { expected, actual }))
        }
    }

    fn checked_answers(
        &self,
        answers: Result<Answers, String>,
        queries: usize,
    ) -> Result<Answers, CallError> {
        let answers = answers.map_err(|m| self.plugin_error(m))?;
        answers
            .check_shape(queries)
            .map_err(|m| self.plugin_error(m))?;
        Ok(answers)
    }

    fn error(&self, failure: Failure) -> CallError {
        CallError {
            plugin: self.name.clone(),
            failure,
        }
    }

    fn plugin_error(&self, message: String) -> CallError {
        Counters::add(&self.counters.errors, 1);
        tracing::warn!(plugin = %self.name, %message, "Plugin returned an unusable answer.");
        self.error(Failure::Plugin(message))
    }

    /// Runs `f` on an idle instance (or a new one, rebuilding after a lost
    /// one once its backoff has passed) under the call deadline, then
    /// `after` on its store whether the call finished or was abandoned.
    fn call<T>(
        &self,
        records: usize,
        f: impl for<'a> FnOnce(&'a mut Store<PluginState>, &'a Exports) -> CallFuture<'a, T>,
        after: impl FnOnce(&mut Store<PluginState>),
    ) -> Result<T, CallError> {
        let mut live = self.take_instance()?;
        let timeout_ms = self.manifest.limits.call_timeout_ms;
        live.store.set_epoch_deadline(deadline_ticks(timeout_ms));
        live.store.data_mut().take_memory_exceeded();
        let started = Instant::now();
        let ticking = self.runtime.ticking();
        let result = self.runtime.run_bounded(
            Duration::from_millis(u64::from(timeout_ms)),
            f(&mut live.store, &live.exports),
        );
        drop(ticking);
        after(&mut live.store);
        Counters::add(&self.counters.busy_ns, started.elapsed().as_nanos() as u64);
        let Some(result) = result else {
            Counters::add(&self.counters.timeouts, 1);
            let failure = Failure::Timeout(timeout_ms);
            return Err(self.lose_instance(failure, "waiting in a host call"));
        };
        match result {
            Ok(Ok(v)) => {
                Counters::add(&self.counters.calls, 1);
                Counters::add(&self.counters.records, records as u64);
                self.give_back(live, true);
                Ok(v)
            }
            Ok(Err(message)) => {
                Counters::add(&self.counters.calls, 1);
                Counters::add(&self.counters.errors, 1);
                self.give_back(live, false);
                Err(self.error(Failure::Plugin(message)))
            }
            Err(e) => {
                let memory = live.store.data_mut().take_memory_exceeded()
                    || e.downcast_ref::<MemoryCapExceeded>().is_some();
                let failure = if let Some(m) = e.downcast_ref::<TableMismatch>() {
                    Counters::add(&self.counters.errors, 1);
                    Failure::TableMismatch(m.0.clone())
                } else if memory {
                    Counters::add(&self.counters.memory_exceeded, 1);
                    Failure::MemoryExceeded(self.manifest.limits.memory_mib)
                } else if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
                    Counters::add(&self.counters.timeouts, 1);
                    Failure::Timeout(self.manifest.limits.call_timeout_ms)
                } else {
                    Counters::add(&self.counters.traps, 1);
                    Failure::Trap(e.root_cause().to_string())
                };
                tracing::debug!(plugin = %self.name, details = ?e, "Plugin failure details.");
                drop(live);
                Err(self.lose_instance(failure, "running guest code"))
            }
        }
    }

    /// An idle instance, or a new one while fewer than the most exist (a
    /// rebuild of a lost one only once its backoff has passed); waits for
    /// one to come back idle when every instance is in a call.
    fn take_instance(&self) -> Result<Live, CallError> {
        let mut guard = self.instances.lock().unwrap();
        let rebuild = loop {
            let pool = guard.as_mut().expect("set at load");
            if let Some(live) = pool.idle.pop() {
                return Ok(live);
            }
            if pool.existing < pool.most {
                match pool.backing_off(Instant::now()) {
                    None => {
                        pool.existing += 1;
                        let rebuild = pool.lost > 0;
                        pool.lost = pool.lost.saturating_sub(1);
                        break rebuild;
                    }
                    Some(wait) if pool.existing == 0 => {
                        Counters::add(&self.counters.unavailable, 1);
                        return Err(self.error(Failure::BackingOff(wait, pool.failures)));
                    }
                    // The ones in calls come back sooner.
                    Some(_) => {}
                }
            }
            guard = self.freed.wait(guard).unwrap();
        };
        drop(guard);
        match self.instantiate() {
            Ok(live) => {
                if rebuild {
                    Counters::add(&self.counters.rebuilds, 1);
                    tracing::info!(plugin = %self.name, "Rebuilt the plugin instance.");
                }
                Ok(live)
            }
            Err(e) => {
                let message = e.message();
                self.forget_instance();
                tracing::warn!(plugin = %self.name, %message, "Could not rebuild the plugin instance.");
                Err(self.error(Failure::Rebuild(message)))
            }
        }
    }

    /// Puts an instance back after a call; a call that answered ends the
    /// plugin's failures in a row.
    fn give_back(&self, live: Live, answered: bool) {
        let mut guard = self.instances.lock().unwrap();
        let pool = guard.as_mut().expect("set at load");
        pool.idle.push(live);
        if answered {
            pool.failures = 0;
        }
        drop(guard);
        self.freed.notify_one();
    }

    /// Counts an instance lost after `failure` (already counted), stopped
    /// while `how`, and schedules its rebuild.
    fn lose_instance(&self, failure: Failure, how: &str) -> CallError {
        tracing::warn!(plugin = %self.name, error = %failure, stopped_while = how, "Plugin call failed; its instance will be rebuilt.");
        self.forget_instance();
        self.error(failure)
    }

    /// Takes an instance that is gone (lost in a call, or never rebuilt)
    /// off the pool's count and schedules its rebuild.
    fn forget_instance(&self) {
        let mut guard = self.instances.lock().unwrap();
        let pool = guard.as_mut().expect("set at load");
        pool.existing -= 1;
        pool.lost += 1;
        pool.failures = pool.failures.saturating_add(1);
        pool.retry_at = Some(Instant::now() + rebuild_delay(pool.failures, &mut pool.jitter));
        drop(guard);
        self.freed.notify_one();
    }

    /// A fresh instance: new store, instantiate from the pre-instance, `init`,
    /// within ten call deadlines (`init` may parse a large state file).
    fn instantiate(&self) -> Result<Live, InstantiateError> {
        let failed = |e: wasmtime::Error| InstantiateError::Failed(e.root_cause().to_string());
        let state =
            PluginState::new(&self.spec).map_err(|e| InstantiateError::Failed(e.to_string()))?;
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| s.limiter());
        store.epoch_deadline_trap();
        let limit_ms = self.manifest.limits.call_timeout_ms.saturating_mul(10);
        store.set_epoch_deadline(deadline_ticks(limit_ms));
        let _ticking = self.runtime.ticking();
        let config = self.config_json.as_str();
        let started = self
            .runtime
            .run_bounded(Duration::from_millis(u64::from(limit_ms)), async {
                Ok::<_, wasmtime::Error>(match &self.pre {
                    KindPre::Identity(pre) => {
                        let b = pre.instantiate_async(&mut store).await?;
                        let r = b
                            .flowattr_plugin_identity()
                            .call_init(&mut store, config)
                            .await?;
                        (Exports::Identity(b), r)
                    }
                    KindPre::Resolver(pre) => {
                        let b = pre.instantiate_async(&mut store).await?;
                        let r = b
                            .flowattr_plugin_resolver()
                            .call_init(&mut store, config)
                            .await?;
                        (Exports::Resolver(b), r)
                    }
                    KindPre::Policy(pre) => {
                        let b = pre.instantiate_async(&mut store).await?;
                        let r = b
                            .flowattr_plugin_policy()
                            .call_init(&mut store, config)
                            .await?;
                        (Exports::Policy(b), r)
                    }
                    KindPre::Sink(pre) => {
                        let b = pre.instantiate_async(&mut store).await?;
                        let r = b
                            .flowattr_plugin_sink()
                            .call_init(&mut store, config)
                            .await?;
                        (Exports::Sink(b), r)
                    }
                })
            });
        match started {
            None => Err(InstantiateError::Failed(format!(
                "did not finish `init` within {limit_ms} ms"
            ))),
            Some(Err(e)) => Err(failed(e)),
            Some(Ok((_, Err(msg)))) => Err(InstantiateError::Refused(msg)),
            Some(Ok((exports, Ok(())))) => Ok(Live { store, exports }),
        }
    }
}

/// Reads a call's answers against the instance's workload table. A table
/// mismatch is an error of the call (the instance is rebuilt); answers that
/// do not fit are a plugin error.
fn read_answers(
    store: &mut Store<PluginState>,
    answers: wit::Answers,
) -> wasmtime::Result<Result<Answers, String>> {
    Ok(convert::from_answers(
        answers,
        store.data_mut().workload_table(),
    )?)
}

enum InstantiateError {
    /// `init` returned an error about its config.
    Refused(String),
    /// Instantiation or `init` trapped.
    Failed(String),
}

impl InstantiateError {
    fn message(&self) -> String {
        match self {
            Self::Refused(m) => format!("init refused the config: {m}"),
            Self::Failed(m) => m.clone(),
        }
    }
}

fn deadline_ticks(timeout_ms: u32) -> u64 {
    u64::from(timeout_ms).div_ceil(EPOCH_TICK.as_millis() as u64) + 1
}

/// Checks the component exports the manifest's kind at a compatible version,
/// before linking, so the refusal names the right field.
fn check_exports(
    runtime: &Runtime,
    component: &Component,
    manifest: &Manifest,
) -> Result<(), LoadError> {
    let ty = component.component_type();
    let mut found = Vec::new();
    for (name, _) in ty.exports(runtime.engine()) {
        let Some(rest) = name.strip_prefix("flowattr:plugin/") else {
            continue;
        };
        let (iface, version) = rest.split_once('@').unwrap_or((rest, ""));
        found.push((iface.to_owned(), version.to_owned()));
    }
    let kind = manifest.kind.as_str();
    let Some((_, version)) = found.iter().find(|(iface, _)| iface == kind) else {
        if let Some((other, _)) = found.first() {
            return Err(FieldError::new(
                "kind",
                format!("is {kind} but the component implements {other}"),
            )
            .into());
        }
        return Err(LoadError::Component(format!(
            "exports no flowattr:plugin interface (expected flowattr:plugin/{kind}@{WIT_VERSION}); \
             is it built with flowattr-sdk's export_plugin!?"
        )));
    };
    let version: Version = version.parse().map_err(|e| {
        LoadError::Component(format!(
            "exports flowattr:plugin/{kind} with a bad version: {e}"
        ))
    })?;
    if !WIT_VERSION.is_compatible(&version) {
        return Err(FieldError::new(
            "wit",
            format!("the component implements WIT {version}; this host speaks {WIT_VERSION} and compatible"),
        )
        .into());
    }
    if !manifest.wit.is_compatible(&version) {
        return Err(FieldError::new(
            "wit",
            format!(
                "says {} but the component implements {version}",
                manifest.wit
            ),
        )
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_rebuild_is_at_once_then_jittered_under_a_doubling_ceiling() {
        let mut jitter = Jitter::seeded(1);
        assert_eq!(rebuild_delay(1, &mut jitter), Duration::ZERO);
        for (failures, ceiling_ms) in [(2, 50), (3, 100), (4, 200), (40, 30_000)] {
            let delays: Vec<_> = (0..200)
                .map(|_| rebuild_delay(failures, &mut jitter))
                .collect();
            let ceiling = Duration::from_millis(ceiling_ms);
            assert!(delays.iter().all(|d| *d <= ceiling), "{failures}");
            // Spread out, not one value: some in each half.
            assert!(delays.iter().any(|d| *d < ceiling / 2), "{failures}");
            assert!(delays.iter().any(|d| *d > ceiling / 2), "{failures}");
        }
    }

    #[test]
    fn deadline_rounds_up_and_adds_a_tick() {
        assert_eq!(deadline_ticks(1), 2);
        assert_eq!(deadline_ticks(100), 100 / EPOCH_TICK.as_millis() as u64 + 1);
    }
}
