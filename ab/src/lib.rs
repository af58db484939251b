//! A/B comparison of attribution methods on the same flows.
//!
//! The collector runs the legacy resolver in `shadow` mode beside the
//! heartbeat method and records, for every flow it attributes, both answers
//! ([`Compared`]). A [`Tally`] counts them against a [`Truth`] (the
//! simulator's exact ground truth, recorded ownership intervals, or a file of
//! a service's known dependencies) and becomes a [`Report`]: a terminal
//! table, JSON for machines and a self-contained HTML page with charts.
//! Per method it counts flows by the [`AttributionPath`] that answered them,
//! unattributed flows by reason, right, wrong and missed dependency edges,
//! and keeps the first misattributed flows as examples.
//!
//! ```
//! use std::sync::Arc;
//! use flowattr_ab::{AttributionPath, Compared, Dependencies, Outcome, Tally};
//! use flowattr_model::{AttributionSource, UnattributedReason, Workload};
//!
//! let app = |id: &str, app: &str| Arc::new(Workload { app: Some(app.into()), ..Workload::with_id(id) });
//! let truth = Dependencies::parse("[services]\ngateway = [\"api\"]\n").unwrap();
//! let mut tally = Tally::new("sonar-legacy");
//! tally.add(&Compared {
//!     start_ns: 0,
//!     local: Some(app("gw-1", "gateway")),
//!     local_endpoint: None,
//!     remote: "10.0.0.7:443".parse().unwrap(),
//!     initiator: flowattr_model::Initiator::Local,
//!     heartbeat: Outcome::Attributed(app("api-1", "api")),
//!     heartbeat_path: Some(AttributionPath::new(AttributionSource::Heartbeat, "")),
//!     legacy: Outcome::Attributed(app("db-3", "db")),
//! }, &truth);
//! let report = tally.report(Some("gateway"), &truth);
//! assert_eq!(report.heartbeat.edges.wrong, 0);
//! assert_eq!(report.legacy.edges.wrong, 1);
//! assert_eq!(report.heartbeat.by_path[0].path, "heartbeat");
//! assert_eq!(report.legacy.by_path[0].path, "resolver:sonar-legacy");
//! # let _ = UnattributedReason::Conflict;
//! ```

pub mod html;
mod method;
mod record;
mod report;
#[cfg(test)]
mod sample;
mod table;
mod tally;
mod truth;

pub use record::{AttributionPath, Compared, Outcome, ReadError, read_records};
pub use report::{
    Disagreement, EdgeCounts, EdgeExample, MethodReport, Misattribution, MissedEdge, PathCount,
    Report, TimeBucket,
};
pub use tally::Tally;
use truth::Judgement;
pub use truth::{Dependencies, Ownership, OwnershipIntervals, Truth, TruthError};

use flowattr_model::UnattributedReason;

/// Reasons that mark a genuinely ambiguous case: the address changed hands,
/// is shared, or the clocks disagree at that moment. Leaving such a flow
/// unattributed is the right answer; every other reason is counted against
/// the method's unattributed budget.
pub fn is_ambiguous(reason: UnattributedReason) -> bool {
    matches!(
        reason,
        UnattributedReason::Conflict | UnattributedReason::ClockSkew
    )
}
