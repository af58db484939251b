//! Run a plugin natively under `cargo test`, without Wasm.
//!
//! [`Harness`] builds a plugin from the same JSON config the host would pass,
//! the same way the Wasm glue does, and calls it with the same shape checks the
//! host applies. The host's clock is a settable fake ([`Harness::set_now_ns`])
//! and log lines are captured ([`Harness::take_logs`]).
//!
//! ```text
//! let mut h = Harness::<MyPlugin>::new(r#"{"workload": "web"}"#).unwrap();
//! h.set_now_ns(1_000);
//! let answers = h.identify(&[query]);
//! assert_eq!(answers.resolve(0).unwrap().0.id, "web");
//! ```

use std::cell::{Cell, RefCell};

use crate::host::Level;
use crate::kinds::Plugin;
use crate::{
    Answers, AttributedFlow, IdentityPlugin, IpEvent, LocalQuery, PolicyPlugin, ResolveQuery,
    ResolverPlugin, SinkPlugin, Verdict,
};

thread_local! {
    static NOW_NS: Cell<u64> = const { Cell::new(0) };
    static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
pub(crate) fn set_fake_now_ns(now_ns: u64) {
    NOW_NS.with(|n| n.set(now_ns));
}

#[cfg_attr(target_family = "wasm", allow(dead_code))]
pub(crate) fn fake_now_ns() -> u64 {
    NOW_NS.with(Cell::get)
}

#[cfg_attr(target_family = "wasm", allow(dead_code))]
pub(crate) fn capture_log(level: Level, message: &str) {
    LOGS.with(|l| l.borrow_mut().push((level, message.to_owned())));
}

/// Parses a plugin's JSON config and builds it; shared by the Wasm glue and
/// the harness so both refuse the same configs with the same words.
pub(crate) fn build<P: Plugin>(config_json: &str) -> Result<P, String> {
    let config: P::Config =
        serde_json::from_str(config_json).map_err(|e| format!("invalid config: {e}"))?;
    P::init(config)
}

/// A plugin running natively, with the host's services faked.
pub struct Harness<P> {
    plugin: P,
}

impl<P: Plugin> Harness<P> {
    /// Builds the plugin from `config_json` (the manifest's `[config]` as JSON).
    /// The host clock reads whatever it was last set to on this thread (0 at
    /// first); use [`Harness::with_now`] when `init` reads the clock.
    pub fn new(config_json: &str) -> Result<Self, String> {
        crate::host::install();
        Ok(Self {
            plugin: build::<P>(config_json)?,
        })
    }

    /// Sets the host clock to `now_ns`, then builds the plugin.
    pub fn with_now(now_ns: u64, config_json: &str) -> Result<Self, String> {
        NOW_NS.with(|n| n.set(now_ns));
        Self::new(config_json)
    }

    /// The plugin itself, for calls the harness does not wrap.
    pub fn plugin_mut(&mut self) -> &mut P {
        &mut self.plugin
    }

    /// Sets what [`crate::host::now_ns`] returns on this thread.
    pub fn set_now_ns(&self, now_ns: u64) {
        NOW_NS.with(|n| n.set(now_ns));
    }

    /// Takes the log lines the plugin wrote on this thread so far.
    pub fn take_logs(&self) -> Vec<(Level, String)> {
        LOGS.with(|l| std::mem::take(&mut *l.borrow_mut()))
    }
}

impl<P: IdentityPlugin> Harness<P> {
    /// Calls `identify`, panicking if the answers do not fit the batch (the
    /// host would count such a batch as a plugin failure).
    pub fn identify(&mut self, queries: &[LocalQuery]) -> Answers {
        let answers = self.plugin.identify(queries);
        if let Err(e) = answers.check_shape(queries.len()) {
            panic!("identify: {e}");
        }
        answers
    }
}

impl<P: ResolverPlugin> Harness<P> {
    /// Calls `ingest`.
    pub fn ingest(&mut self, events: Vec<IpEvent>) -> Result<(), String> {
        self.plugin.ingest(events)
    }

    /// Calls `resolve`, panicking if the answers do not fit the batch.
    pub fn resolve(&mut self, queries: &[ResolveQuery]) -> Answers {
        let answers = self.plugin.resolve(queries);
        if let Err(e) = answers.check_shape(queries.len()) {
            panic!("resolve: {e}");
        }
        answers
    }
}

impl<P: PolicyPlugin> Harness<P> {
    /// Calls `decide`, panicking unless there is one verdict per flow.
    pub fn decide(&mut self, flows: &[AttributedFlow]) -> Vec<Verdict> {
        let verdicts = self.plugin.decide(flows);
        assert_eq!(verdicts.len(), flows.len(), "decide: one verdict per flow");
        verdicts
    }
}

impl<P: SinkPlugin> Harness<P> {
    /// Calls `format`.
    pub fn format(&mut self, flows: &[AttributedFlow]) -> Result<Vec<u8>, String> {
        self.plugin.format(flows)
    }
}
