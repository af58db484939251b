//! Counting compared flows against ground truth.

use std::collections::{BTreeMap, HashMap};

use crate::{
    Compared, Judgement, Outcome, Truth, is_ambiguous,
    report::{Agreement, Disagreement, EdgeCounts, EdgeExample, MethodReport, Report, TimeBucket},
};

const MINUTE_NS: u64 = 60_000_000_000;
/// Disagreements kept as examples.
const EXAMPLES: usize = 12;
/// Wrong edges listed per method.
const WRONG_EDGES_LISTED: usize = 10;

/// Flows behind one dependency edge, by judgement.
#[derive(Debug, Clone, Copy, Default)]
struct EdgeStat {
    flows: u64,
    correct: u64,
    wrong: u64,
}

/// One method's counts.
#[derive(Debug, Default)]
struct MethodTally {
    attributed: u64,
    unattributed: BTreeMap<&'static str, u64>,
    unattributed_unambiguous: u64,
    judged: u64,
    misattributed: u64,
    /// source service → destination service → flows.
    edges: HashMap<String, HashMap<String, EdgeStat>>,
}

/// A service's name for edges: its `app`, else its id.
fn service(w: &flowattr_model::Workload) -> &str {
    w.app.as_deref().unwrap_or(&w.id)
}

impl MethodTally {
    fn add(&mut self, record: &Compared, outcome: &Outcome, owner: Option<&str>) -> Judgement {
        let workload = match outcome {
            Outcome::Unattributed(reason) => {
                *self.unattributed.entry(reason.as_str()).or_default() += 1;
                if !is_ambiguous(*reason) {
                    self.unattributed_unambiguous += 1;
                }
                return Judgement::Unknown;
            }
            Outcome::Attributed(w) => w,
        };
        self.attributed += 1;
        let judgement = match owner {
            None => Judgement::Unknown,
            Some(id) if id == workload.id => Judgement::Correct,
            Some(_) => Judgement::Wrong,
        };
        if judgement != Judgement::Unknown {
            self.judged += 1;
        }
        if judgement == Judgement::Wrong {
            self.misattributed += 1;
        }
        if let Some(local) = &record.local {
            // The edge runs from the side that opened the connection.
            let (src, dst) = match record.initiator {
                flowattr_model::Initiator::Remote => (service(workload), service(local)),
                _ => (service(local), service(workload)),
            };
            let by_dst = match self.edges.get_mut(src) {
                Some(m) => m,
                None => self.edges.entry(src.to_owned()).or_default(),
            };
            let stat = match by_dst.get_mut(dst) {
                Some(s) => s,
                None => by_dst.entry(dst.to_owned()).or_default(),
            };
            stat.flows += 1;
            match judgement {
                Judgement::Correct => stat.correct += 1,
                Judgement::Wrong => stat.wrong += 1,
                Judgement::Unknown => {}
            }
        }
        judgement
    }

    /// Judges an edge: the dependency truth when it has one; else an edge is
    /// right when a correctly attributed flow made it, and wrong when only
    /// misattributed flows did.
    fn edge_judgement(src: &str, dst: &str, stat: &EdgeStat, truth: &dyn Truth) -> Judgement {
        match truth.depends(src, dst) {
            Some(true) => Judgement::Correct,
            Some(false) => Judgement::Wrong,
            None if stat.correct > 0 => Judgement::Correct,
            None if stat.wrong > 0 => Judgement::Wrong,
            None => Judgement::Unknown,
        }
    }

    fn report(&self, flows: u64, focus: Option<&str>, truth: &dyn Truth) -> MethodReport {
        let mut edges = EdgeCounts::default();
        let mut focus_edges = focus.map(|_| EdgeCounts::default());
        let mut wrong = Vec::new();
        for (src, by_dst) in &self.edges {
            for (dst, stat) in by_dst {
                let j = Self::edge_judgement(src, dst, stat, truth);
                edges.count(j);
                if Some(src.as_str()) == focus
                    && let Some(f) = &mut focus_edges
                {
                    f.count(j);
                }
                if j == Judgement::Wrong {
                    wrong.push(EdgeExample {
                        source: src.clone(),
                        destination: dst.clone(),
                        flows: stat.flows,
                    });
                }
            }
        }
        wrong.sort_by(|a, b| {
            b.flows
                .cmp(&a.flows)
                .then_with(|| a.source.cmp(&b.source))
                .then_with(|| a.destination.cmp(&b.destination))
        });
        wrong.truncate(WRONG_EDGES_LISTED);
        MethodReport {
            attributed: self.attributed,
            unattributed: self.unattributed.values().sum(),
            unattributed_by_reason: self
                .unattributed
                .iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect(),
            unattributed_unambiguous: self.unattributed_unambiguous,
            unattributed_unambiguous_pct: pct(self.unattributed_unambiguous, flows),
            judged: self.judged,
            misattributed: self.misattributed,
            misattributed_pct: pct(self.misattributed, self.judged),
            edges,
            focus_edges,
            wrong_edges: wrong,
        }
    }
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// Running counts of compared flows.
#[derive(Debug)]
pub struct Tally {
    legacy_plugin: String,
    flows: u64,
    judged: u64,
    heartbeat: MethodTally,
    legacy: MethodTally,
    agreement: Agreement,
    /// Disagreements where truth shows a method wrong, then the others.
    examples_wrong: Vec<Disagreement>,
    examples_other: Vec<Disagreement>,
    /// minute → (judged flows, heartbeat wrong, legacy wrong).
    minutes: BTreeMap<u64, (u64, u64, u64)>,
}

impl Tally {
    /// An empty tally; `legacy_plugin` names the shadow resolver compared.
    pub fn new(legacy_plugin: impl Into<String>) -> Self {
        Self {
            legacy_plugin: legacy_plugin.into(),
            flows: 0,
            judged: 0,
            heartbeat: MethodTally::default(),
            legacy: MethodTally::default(),
            agreement: Agreement::default(),
            examples_wrong: Vec::new(),
            examples_other: Vec::new(),
            minutes: BTreeMap::new(),
        }
    }

    /// Counts one compared flow.
    pub fn add(&mut self, record: &Compared, truth: &dyn Truth) {
        self.flows += 1;
        let owner = truth.owner(record);
        let hb = self.heartbeat.add(record, &record.heartbeat, owner);
        let legacy = self.legacy.add(record, &record.legacy, owner);
        let minute = self.minutes.entry(record.start_ns / MINUTE_NS).or_default();
        if owner.is_some() {
            self.judged += 1;
            minute.0 += 1;
            minute.1 += u64::from(hb == Judgement::Wrong);
            minute.2 += u64::from(legacy == Judgement::Wrong);
        }
        let same = match (&record.heartbeat, &record.legacy) {
            (Outcome::Attributed(a), Outcome::Attributed(b)) if a.id == b.id => {
                self.agreement.same_workload += 1;
                true
            }
            (Outcome::Attributed(_), Outcome::Attributed(_)) => {
                self.agreement.different_workloads += 1;
                false
            }
            (Outcome::Attributed(_), Outcome::Unattributed(_)) => {
                self.agreement.heartbeat_only += 1;
                false
            }
            (Outcome::Unattributed(_), Outcome::Attributed(_)) => {
                self.agreement.legacy_only += 1;
                false
            }
            (Outcome::Unattributed(_), Outcome::Unattributed(_)) => {
                self.agreement.neither += 1;
                true
            }
        };
        if !same {
            let list = if hb == Judgement::Wrong || legacy == Judgement::Wrong {
                &mut self.examples_wrong
            } else {
                &mut self.examples_other
            };
            if list.len() < EXAMPLES {
                list.push(Disagreement::of(record, owner));
            }
        }
    }

    /// The report; `focus` names the service whose edges are counted apart
    /// (the gateway); edges are judged with `truth`'s dependencies where it
    /// has them, else by the flows that made them.
    pub fn report(&self, focus: Option<&str>, truth: &dyn Truth) -> Report {
        let timeline = self
            .minutes
            .iter()
            .map(|(&minute, &(judged, hb, legacy))| TimeBucket {
                start_ns: minute * MINUTE_NS,
                judged,
                heartbeat_wrong: hb,
                legacy_wrong: legacy,
            })
            .collect();
        Report {
            legacy_plugin: self.legacy_plugin.clone(),
            focus: focus.map(str::to_owned),
            flows: self.flows,
            judged: self.judged,
            heartbeat: self.heartbeat.report(self.flows, focus, truth),
            legacy: self.legacy.report(self.flows, focus, truth),
            agreement: self.agreement,
            disagreements: self
                .examples_wrong
                .iter()
                .chain(&self.examples_other)
                .take(EXAMPLES)
                .cloned()
                .collect(),
            timeline: TimeBucket::coarsen(timeline, 60),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flowattr_model::{Initiator, UnattributedReason, Workload};

    use super::*;
    use crate::Dependencies;

    fn w(id: &str, app: &str) -> Arc<Workload> {
        Arc::new(Workload {
            app: Some(app.into()),
            ..Workload::with_id(id)
        })
    }

    struct Owner(&'static str);

    impl Truth for Owner {
        fn owner(&self, _: &Compared) -> Option<&str> {
            Some(self.0)
        }
        fn depends(&self, _: &str, _: &str) -> Option<bool> {
            None
        }
    }

    fn compared(initiator: Initiator, hb: Outcome, legacy: Outcome) -> Compared {
        Compared {
            start_ns: 61_000_000_000,
            local: Some(w("db-1", "db")),
            remote: "10.0.0.9:40000".parse().unwrap(),
            initiator,
            heartbeat: hb,
            legacy,
        }
    }

    #[test]
    fn an_inbound_flow_makes_an_edge_from_the_remote_side() {
        let mut t = Tally::new("legacy");
        let api = Outcome::Attributed(w("api-1", "api"));
        t.add(
            &compared(Initiator::Remote, api.clone(), api),
            &Owner("api-1"),
        );
        let deps = Dependencies::parse("[services]\napi = [\"db\"]\n").unwrap();
        let r = t.report(Some("api"), &deps);
        assert_eq!(
            r.heartbeat.focus_edges.unwrap().right,
            1,
            "api -> db, not db -> api"
        );
        assert_eq!(r.agreement.same_workload, 1);
    }

    #[test]
    fn misattribution_unattributed_reasons_and_examples_are_counted() {
        let mut t = Tally::new("legacy");
        let right = Outcome::Attributed(w("api-1", "api"));
        let wrong = Outcome::Attributed(w("batch-7", "batch"));
        let skew = Outcome::Unattributed(UnattributedReason::ClockSkew);
        let gap = Outcome::Unattributed(UnattributedReason::Gap);
        for _ in 0..20 {
            t.add(
                &compared(Initiator::Local, skew.clone(), right.clone()),
                &Owner("api-1"),
            );
        }
        t.add(
            &compared(Initiator::Local, right.clone(), wrong.clone()),
            &Owner("api-1"),
        );
        let none = Dependencies::default();
        t.add(&compared(Initiator::Local, gap, wrong), &none);
        let r = t.report(None, &none);
        assert_eq!(r.flows, 22);
        assert_eq!(r.judged, 21);
        assert_eq!((r.heartbeat.misattributed, r.legacy.misattributed), (0, 1));
        assert_eq!(r.heartbeat.unattributed_by_reason["clock-skew"], 20);
        assert_eq!(
            r.heartbeat.unattributed_unambiguous, 1,
            "gap is not ambiguous"
        );
        assert_eq!(
            r.legacy.edges.wrong, 1,
            "db -> batch made only by a wrong flow"
        );
        assert_eq!(
            r.agreement.heartbeat_only + r.agreement.legacy_only + r.agreement.different_workloads,
            22
        );
        assert_eq!(r.disagreements.len(), EXAMPLES);
        assert_eq!(
            r.disagreements[0].legacy, "batch-7",
            "a wrong answer is shown first"
        );
    }
}
