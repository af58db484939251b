//! The domain model shared by the agent, the collector, the plugin runtime and
//! the plugin SDK: flows, workloads, attributions and the questions plugins
//! answer.
//!
//! These are plain Rust types (std addresses, serde for fixtures and configs).
//! The WIT contract in `wit/` mirrors them; the runtime and the SDK convert
//! between the two at the Wasm boundary, so nothing else sees generated types.

/// Maps keyed by addresses and ids the model builds itself (not by input
/// from the network): FxHash, which is cheap in Wasm too.
type FastMap<K, V> = std::collections::HashMap<K, V, rustc_hash::FxBuildHasher>;

mod answers;
mod attribution;
pub mod columns;
mod community_id;
mod dictionary;
mod flow;
mod query;
mod record_id;
mod time;
mod workload;

pub use answers::{Answer, AnswerScope, Answers, AnswersBuilder, Unanswered};
pub use attribution::{
    AttributedFlow, Attribution, AttributionSource, BatchId, FlowBatch, Redactions, Side, Verdict,
};
pub use community_id::{CommunityId, community_id, community_id_v1};
pub use dictionary::WorkloadDictionary;
pub use flow::{Flow, FlowEnd, Initiator, Protocol};
pub use query::{IpChange, IpEvent, LocalQuery, ResolveQuery};
pub use record_id::{RecordIds, record_id, record_id_hex};
pub use time::TimeRange;
pub use workload::{UnattributedReason, Workload};
