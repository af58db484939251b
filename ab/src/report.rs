//! What a comparison found, and its terminal table.

use std::{collections::BTreeMap, fmt::Write as _};

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

/// One method's results.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodReport {
    pub attributed: u64,
    pub unattributed: u64,
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
    pub edges: EdgeCounts,
    /// The focus service's edges.
    pub focus_edges: Option<EdgeCounts>,
    /// The wrong edges with the most flows.
    pub wrong_edges: Vec<EdgeExample>,
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
    pub disagreements: Vec<Disagreement>,
    /// Misattribution over time.
    pub timeline: Vec<TimeBucket>,
}

impl Report {
    /// The report as a terminal table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let methods = [
            ("heartbeat", &self.heartbeat),
            (self.legacy_plugin.as_str(), &self.legacy),
        ];
        let _ = writeln!(
            out,
            "{} flows compared, {} with a known owner",
            self.flows, self.judged
        );
        let _ = writeln!(out, "{:<34} {:>16} {:>16}", "", methods[0].0, methods[1].0);
        let mut row = |label: &str, f: &dyn Fn(&MethodReport) -> String| {
            let _ = writeln!(
                out,
                "{label:<34} {:>16} {:>16}",
                f(methods[0].1),
                f(methods[1].1)
            );
        };
        row("attributed", &|m| m.attributed.to_string());
        row("misattributed (of judged)", &|m| {
            format!("{} ({:.2}%)", m.misattributed, m.misattributed_pct)
        });
        row("unattributed", &|m| m.unattributed.to_string());
        let mut reasons: Vec<&String> = self
            .heartbeat
            .unattributed_by_reason
            .keys()
            .chain(self.legacy.unattributed_by_reason.keys())
            .collect();
        reasons.sort();
        reasons.dedup();
        for reason in reasons {
            row(&format!("  {reason}"), &|m| {
                m.unattributed_by_reason
                    .get(reason)
                    .copied()
                    .unwrap_or(0)
                    .to_string()
            });
        }
        row("unattributed, not ambiguous", &|m| {
            format!(
                "{} ({:.2}%)",
                m.unattributed_unambiguous, m.unattributed_unambiguous_pct
            )
        });
        row("dependency edges", &|m| m.edges.total.to_string());
        row("  wrong edges", &|m| {
            format!("{} ({:.1}%)", m.edges.wrong, m.edges.wrong_pct())
        });
        if let Some(focus) = &self.focus {
            row(&format!("{focus} edges"), &|m| {
                m.focus_edges.map_or(0, |e| e.total).to_string()
            });
            row(&format!("  wrong {focus} edges"), &|m| {
                m.focus_edges.map_or_else(String::new, |e| {
                    format!("{} ({:.1}%)", e.wrong, e.wrong_pct())
                })
            });
        }
        let a = &self.agreement;
        let _ = writeln!(
            out,
            "\nagreement: same workload {}, different workloads {}, heartbeat only {}, {} only {}, neither {}",
            a.same_workload,
            a.different_workloads,
            a.heartbeat_only,
            self.legacy_plugin,
            a.legacy_only,
            a.neither
        );
        if !self.disagreements.is_empty() {
            let _ = writeln!(out, "\nexamples of disagreement:");
            let _ = writeln!(
                out,
                "  {:<14} {:<24} {:<22} {:<26} {:<26} truth",
                "start (s)", "local", "remote", "heartbeat", &self.legacy_plugin
            );
            for d in self.disagreements.iter().take(8) {
                let _ = writeln!(
                    out,
                    "  {:<14} {:<24} {:<22} {:<26} {:<26} {}",
                    d.start_ns / 1_000_000_000,
                    d.local,
                    d.remote,
                    d.heartbeat,
                    d.legacy,
                    d.truth.as_deref().unwrap_or("?")
                );
            }
        }
        out
    }
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
}
