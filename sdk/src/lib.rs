//! The Rust SDK for flowattr plugins.
//!
//! A plugin is a plain Rust type that implements one trait per plugin kind —
//! [`IdentityPlugin`], [`ResolverPlugin`], [`PolicyPlugin`] or [`SinkPlugin`] —
//! and registers it with [`export_plugin!`]. The SDK owns the WIT bindings, so
//! authors see only the domain types re-exported here; it forwards the `log`
//! crate and panics to the host's structured log; and [`testing::Harness`]
//! runs a plugin natively under `cargo test`, with the host's clock and log
//! faked, so a plugin's logic is tested without Wasm.
//!
//! ```
//! use std::sync::Arc;
//!
//! use flowattr_sdk::{Answers, AnswersBuilder, IdentityPlugin, LocalQuery, Plugin};
//!
//! #[derive(serde::Deserialize)]
//! struct Config { workload: String }
//!
//! /// Workloads are kept as `Arc`s: answers share them.
//! struct Fixed(Arc<flowattr_sdk::Workload>);
//!
//! impl Plugin for Fixed {
//!     type Config = Config;
//!     fn init(config: Config) -> Result<Self, String> {
//!         Ok(Fixed(Arc::new(flowattr_sdk::Workload::with_id(config.workload))))
//!     }
//! }
//!
//! impl IdentityPlugin for Fixed {
//!     fn identify(&mut self, queries: &[LocalQuery]) -> Answers {
//!         let mut out = AnswersBuilder::with_capacity(queries.len());
//!         for q in queries {
//!             out.attributed(&self.0, flowattr_sdk::TimeRange::new(q.time_ns, q.time_ns + 1));
//!         }
//!         out.finish()
//!     }
//! }
//!
//! flowattr_sdk::export_plugin!(Fixed as identity);
//!
//! // Natively, the same type runs under the test harness:
//! let mut h = flowattr_sdk::testing::Harness::<Fixed>::new(r#"{"workload": "web"}"#).unwrap();
//! let q = LocalQuery {
//!     local: "10.0.0.1:80".parse().unwrap(),
//!     protocol: Default::default(),
//!     time_ns: 5, cgroup_id: 0, netns_id: 0, pid: 0,
//! };
//! assert_eq!(h.identify(&[q]).resolve(0).unwrap().0.id, "web");
//! ```
//!
//! See `sdk/README.md` for the walk from `cargo new` to a loaded plugin.

pub mod host;
mod kinds;
pub mod source;
pub mod testing;

#[doc(hidden)]
pub mod __private;

pub use flowattr_model::{
    Answer, AnswerScope, Answers, AnswersBuilder, AttributedFlow, Attribution, AttributionSource,
    BatchId, CommunityId, Flow, FlowEnd, Initiator, IpChange, IpEvent, LocalQuery, Protocol,
    RecordIds, Redactions, ResolveQuery, Side, TimeRange, Unanswered, UnattributedReason, Verdict,
    Workload, WorkloadDictionary, community_id, community_id_v1, record_id_hex,
};
pub use kinds::{IdentityPlugin, Plugin, PolicyPlugin, ResolverPlugin, SinkPlugin};

/// Registers a type as this component's plugin. Use it once per crate, naming
/// the kind: `identity`, `resolver`, `policy` or `sink`. It expands to the
/// component's exports only when building for Wasm, so native builds (tests,
/// benchmarks linking several plugins) see just the plain type.
///
/// ```text
/// flowattr_sdk::export_plugin!(MyPlugin as identity);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty as identity) => {
        $crate::__export!($plugin, IdentityGuest, identity, __export_identity_world, {
            fn identify(
                queries: $crate::__private::WitLocalQueries,
            ) -> $crate::__private::WitAnswers {
                $crate::__private::identify(&PLUGIN, queries)
            }
        });
    };
    ($plugin:ty as resolver) => {
        $crate::__export!($plugin, ResolverGuest, resolver, __export_resolver_world, {
            fn ingest(events: Vec<$crate::__private::WitIpEvent>) -> Result<(), String> {
                $crate::__private::ingest(&PLUGIN, events)
            }
            fn resolve(
                queries: $crate::__private::WitResolveQueries,
            ) -> $crate::__private::WitAnswers {
                $crate::__private::resolve(&PLUGIN, queries)
            }
        });
    };
    ($plugin:ty as policy) => {
        $crate::__export!($plugin, PolicyGuest, policy, __export_policy_world, {
            fn decide(
                batch: $crate::__private::WitFlowBatch,
            ) -> Vec<$crate::__private::WitVerdict> {
                $crate::__private::decide(&PLUGIN, batch)
            }
        });
    };
    ($plugin:ty as sink) => {
        $crate::__export!($plugin, SinkGuest, sink, __export_sink_world, {
            fn content_type() -> String {
                $crate::__private::content_type(&PLUGIN)
            }
            fn format(batch: $crate::__private::WitFlowBatch) -> Result<(), String> {
                $crate::__private::format(&PLUGIN, batch)
            }
        });
    };
}

/// What every kind's export shares: the instance slot, `init`, and the
/// generated export glue for the kind's world. Wasm builds only.
#[doc(hidden)]
#[macro_export]
macro_rules! __export {
    ($plugin:ty, $guest:ident, $world:ident, $export:ident, { $($methods:tt)* }) => {
        #[cfg(target_family = "wasm")]
        const _: () = {
            ::std::thread_local! {
                static PLUGIN: ::core::cell::RefCell<::core::option::Option<$plugin>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }
            struct Export;
            impl $crate::__private::$guest for Export {
                fn init(config_json: String) -> Result<(), String> {
                    $crate::__private::init::<$plugin>(&PLUGIN, &config_json)
                }
                $($methods)*
            }
            $crate::__private::bindings::$world::$export!(Export with_types_in $crate::__private::bindings::$world);
        };
    };
}

// Lets the generated bindings name this crate as `flowattr_sdk` both here and
// in the plugin crates where `export_plugin!` expands.
extern crate self as flowattr_sdk;
