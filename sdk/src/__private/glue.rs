//! From WIT exports to the plugin traits: parse the config, keep the plugin
//! instance, convert each batch in and out.

use std::cell::RefCell;
use std::thread::LocalKey;

use flowattr_model::columns::SentWorkloads;

use super::convert;
use super::{WitAnswers, WitFlowBatch, WitIpEvent, WitLocalQueries, WitResolveQueries, WitVerdict};
use crate::kinds::Plugin;
use crate::{IdentityPlugin, PolicyPlugin, ResolverPlugin, SinkPlugin};

/// Where the export macro keeps the plugin instance.
pub type Slot<P> = LocalKey<RefCell<Option<P>>>;

thread_local! {
    /// The workloads this instance has sent the host (see `answers` in the WIT).
    static SENT: RefCell<SentWorkloads> = RefCell::default();
}

fn wit_answers(answers: crate::Answers) -> WitAnswers {
    SENT.with(|sent| convert::wit_answers(answers, &mut sent.borrow_mut()))
}

/// Parses the config, builds the plugin and stores it; also routes `log` and
/// panics to the host.
pub fn init<P: Plugin>(slot: &'static Slot<P>, config_json: &str) -> Result<(), String> {
    crate::host::install();
    let plugin = crate::testing::build::<P>(config_json)?;
    slot.with(|s| *s.borrow_mut() = Some(plugin));
    Ok(())
}

fn with_plugin<P, R>(slot: &'static Slot<P>, f: impl FnOnce(&mut P) -> R) -> R {
    slot.with(|s| {
        let mut s = s.borrow_mut();
        // The host always calls `init` first; a call without it is a host bug
        // and trapping makes the host rebuild the instance.
        let plugin = s.as_mut().expect("flowattr plugin called before init");
        f(plugin)
    })
}

pub fn identify<P: IdentityPlugin>(slot: &'static Slot<P>, queries: WitLocalQueries) -> WitAnswers {
    let queries = convert::local_queries(queries);
    wit_answers(with_plugin(slot, |p| p.identify(&queries)))
}

pub fn ingest<P: ResolverPlugin>(
    slot: &'static Slot<P>,
    events: Vec<WitIpEvent>,
) -> Result<(), String> {
    let events = events.into_iter().map(convert::ip_event).collect();
    with_plugin(slot, |p| p.ingest(events))
}

pub fn resolve<P: ResolverPlugin>(
    slot: &'static Slot<P>,
    queries: WitResolveQueries,
) -> WitAnswers {
    let queries = convert::resolve_queries(queries);
    wit_answers(with_plugin(slot, |p| p.resolve(&queries)))
}

pub fn decide<P: PolicyPlugin>(slot: &'static Slot<P>, batch: WitFlowBatch) -> Vec<WitVerdict> {
    let flows = convert::attributed_flows(batch);
    with_plugin(slot, |p| p.decide(&flows))
        .into_iter()
        .map(convert::wit_verdict)
        .collect()
}

pub fn content_type<P: SinkPlugin>(slot: &'static Slot<P>) -> String {
    with_plugin(slot, |p| p.content_type())
}

/// Formats the batch and hands the bytes to the host in one `output.write`
/// (the host copies them out of this instance's memory).
pub fn format<P: SinkPlugin>(slot: &'static Slot<P>, batch: WitFlowBatch) -> Result<(), String> {
    let flows = convert::attributed_flows(batch);
    let bytes = with_plugin(slot, |p| p.format(&flows))?;
    super::bindings::sink::flowattr::plugin::output::write(&bytes);
    Ok(())
}
