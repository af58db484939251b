//! What a comparison found: the report's types, as JSON shows them (the
//! terminal table is in [`crate::table`], the page in [`crate::html`]).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::{Compared, Judgement, Outcome};

/// Dependency edges (source service → destination service) by judgement.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct EdgeCounts {
    pub total: u64,
    pub right: u64,
    pub wrong: u64,
    /// Edges ground truth says nothing about.
    pub unknown: u64,
    /// Real dependencies (known to ground truth) that no flow of this
    /// method made; not among `total`.
    pub missed: u64,
}

impl EdgeCounts {
    pub(crate) fn count(&mut self, j: Judgement) {
        self.total += 1;
        match j {
            Judgement::Correct => self.right += 1,
            Judgement::Wrong => self.wrong += 1,
            Judgement::Unknown => self.unknown += 1,
        }
    }

    /// Wrong edges as a share of judged ones, in percent.
    pub fn wrong_pct(&self) -> f64 {
        let judged = self.right + self.wrong;
        if judged == 0 {
            0.0
        } else {
            100.0 * self.wrong as f64 / judged as f64
        }
    }
}

/// A wrong edge and how many flows made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeExample {
    pub source: String,
    pub destination: String,
    pub flows: u64,
}

/// A real dependency that no flow of a method made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissedEdge {
    pub source: String,
    pub destination: String,
}

/// The flows one attribution path answered, and how many were wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathCount {
    /// The path's label ([`crate::AttributionPath::label`]: `heartbeat`,
    /// `counterpart`, `resolver:PLUGIN`), `unrecorded` for flows whose
    /// records did not say, `other` past the first 32 paths.
    pub path: String,
    pub attributed: u64,
    /// ... of which ground truth could judge.
    pub judged: u64,
    pub misattributed: u64,
}

/// A flow a method attributed to the wrong workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Misattribution {
    /// The attribution path that gave the answer (as [`PathCount::path`]).
    pub path: String,
    pub start_ns: u64,
    /// The local workload's id, `-` when unattributed.
    pub local: String,
    /// The local endpoint, when the records carry it.
    pub local_endpoint: Option<String>,
    pub remote: String,
    /// The workload the method named.
    pub answer: String,
    /// The workload that really owned the remote address.
    pub truth: String,
}

/// One method's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodReport {
    pub attributed: u64,
    pub unattributed: u64,
    /// Every reason ([`flowattr_model::UnattributedReason::ALL`]), by its
    /// name, zeros included.
    pub unattributed_by_reason: BTreeMap<String, u64>,
    /// Unattributed for a reason other than genuine ambiguity (conflict,
    /// clock skew).
    pub unattributed_unambiguous: u64,
    /// ... as a share of all flows, in percent.
    pub unattributed_unambiguous_pct: f64,
    /// Attributed flows ground truth could judge.
    pub judged: u64,
    pub misattributed: u64,
    /// Misattributed as a share of judged, in percent.
    pub misattributed_pct: f64,
    /// Attributed flows by the path that attributed them, most first.
    pub by_path: Vec<PathCount>,
    /// The first misattributed flows seen (at most 20).
    pub misattributed_examples: Vec<Misattribution>,
    pub edges: EdgeCounts,
    /// The focus service's edges.
    pub focus_edges: Option<EdgeCounts>,
    /// The wrong edges with the most flows.
    pub wrong_edges: Vec<EdgeExample>,
    /// Real dependencies no flow made, the focus service's first (at most
    /// 20; `edges.missed` counts them all).
    pub missed_edges: Vec<MissedEdge>,
}

/// How the two methods' answers relate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Agreement {
    pub same_workload: u64,
    pub different_workloads: u64,
    pub heartbeat_only: u64,
    pub legacy_only: u64,
    pub neither: u64,
}

/// A flow the methods answered differently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disagreement {
    pub start_ns: u64,
    pub local: String,
    pub remote: String,
    pub heartbeat: String,
    pub legacy: String,
    /// The real owner, when known.
    pub truth: Option<String>,
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Attributed(w) => w.id.clone(),
        Outcome::Unattributed(r) => format!("unattributed ({})", r.as_str()),
    }
}

impl Disagreement {
    pub(crate) fn of(record: &Compared, owner: Option<&str>) -> Self {
        Self {
            start_ns: record.start_ns,
            local: record
                .local
                .as_ref()
                .map_or_else(|| "-".to_owned(), |w| w.id.clone()),
            remote: record.remote.to_string(),
            heartbeat: describe(&record.heartbeat),
            legacy: describe(&record.legacy),
            truth: owner.map(str::to_owned),
        }
    }
}

/// Judged and misattributed flows in one stretch of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TimeBucket {
    pub start_ns: u64,
    pub judged: u64,
    pub heartbeat_wrong: u64,
    pub legacy_wrong: u64,
}

impl TimeBucket {
    /// Merges neighbouring buckets until at most `max` remain.
    pub(crate) fn coarsen(buckets: Vec<TimeBucket>, max: usize) -> Vec<TimeBucket> {
        let (Some(first), Some(last)) = (buckets.first(), buckets.last()) else {
            return buckets;
        };
        let span = last.start_ns - first.start_ns;
        let width = (span / max as u64).max(1) + 1;
        let origin = first.start_ns;
        let mut out: Vec<TimeBucket> = Vec::new();
        for b in buckets {
            let start = origin + (b.start_ns - origin) / width * width;
            match out.last_mut() {
                Some(o) if o.start_ns == start => {
                    o.judged += b.judged;
                    o.heartbeat_wrong += b.heartbeat_wrong;
                    o.legacy_wrong += b.legacy_wrong;
                }
                _ => out.push(TimeBucket {
                    start_ns: start,
                    ..b
                }),
            }
        }
        out
    }
}

/// The comparison's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub legacy_plugin: String,
    /// The service whose edges are counted apart.
    pub focus: Option<String>,
    pub flows: u64,
    /// Flows whose real owner ground truth knows.
    pub judged: u64,
    pub heartbeat: MethodReport,
    pub legacy: MethodReport,
    pub agreement: Agreement,
    /// Flows the methods answered differently: those where the heartbeat
    /// method was wrong first, then the legacy method's wrong ones.
    pub disagreements: Vec<Disagreement>,
    /// Misattribution over time.
    pub timeline: Vec<TimeBucket>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarsening_keeps_every_count() {
        let buckets: Vec<_> = (0..1440u64)
            .map(|m| TimeBucket {
                start_ns: m * 60_000_000_000,
                judged: 2,
                heartbeat_wrong: 0,
                legacy_wrong: m % 2,
            })
            .collect();
        let out = TimeBucket::coarsen(buckets, 60);
        assert!(out.len() <= 60, "{}", out.len());
        assert_eq!(out.iter().map(|b| b.judged).sum::<u64>(), 2880);
        assert_eq!(out.iter().map(|b| b.legacy_wrong).sum::<u64>(), 720);
        assert!(out.windows(2).all(|w| w[0].start_ns < w[1].start_ns));
    }

    #[test]
    fn the_json_carries_examples_paths_reasons_and_missed_edges() {
        let v = serde_json::to_value(crate::sample::report()).unwrap();
        let hb = &v["heartbeat"];
        assert_eq!(hb["misattributed_examples"][0]["path"], "heartbeat");
        assert_eq!(hb["misattributed_examples"][0]["truth"], "api-1");
        assert_eq!(hb["misattributed_examples"][0]["answer"], "batch-7");
        assert_eq!(hb["by_path"][0]["path"], "heartbeat");
        assert_eq!(hb["by_path"][0]["misattributed"], 1);
        assert_eq!(hb["unattributed_by_reason"]["incomplete"], 1);
        assert_eq!(hb["edges"]["missed"], 2);
        assert_eq!(
            hb["missed_edges"][0],
            serde_json::json!({"source": "gateway", "destination": "auth"})
        );
        assert_eq!(v["legacy"]["by_path"][0]["path"], "resolver:sonar-legacy");
    }
}
