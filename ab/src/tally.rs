//! Counting compared flows against ground truth: both methods' counts
//! (see [`crate::method`]), how their answers relate, examples of
//! disagreement and misattribution over time.

use std::collections::BTreeMap;

use flowattr_model::AttributionSource;

use crate::{
    AttributionPath, Compared, Judgement, Outcome, Truth,
    method::MethodTally,
    report::{Agreement, Disagreement, Report, TimeBucket},
};

/// The timeline's finest bucket: a second, so a 40-second demo has a line.
const SECOND_NS: u64 = 1_000_000_000;
/// Timeline buckets kept at most: past it the buckets double in width, so
/// a day ends with buckets of a minute or so.
const MAX_BUCKETS: usize = 2048;
/// Disagreements kept as examples.
const EXAMPLES: usize = 12;

/// Running counts of compared flows. Its memory is bounded by the number of
/// services and edges seen: examples and timeline buckets are capped.
#[derive(Debug)]
pub struct Tally {
    legacy_plugin: String,
    /// The legacy method's one path: its shadow resolver.
    legacy_path: AttributionPath,
    flows: u64,
    judged: u64,
    heartbeat: MethodTally,
    legacy: MethodTally,
    agreement: Agreement,
    /// Disagreements where truth shows the heartbeat method wrong, then
    /// the legacy one, then the others.
    examples_heartbeat_wrong: Vec<Disagreement>,
    examples_legacy_wrong: Vec<Disagreement>,
    examples_other: Vec<Disagreement>,
    /// start / `bucket_ns` → (judged flows, heartbeat wrong, legacy wrong).
    buckets: BTreeMap<u64, (u64, u64, u64)>,
    bucket_ns: u64,
}

impl Tally {
    /// An empty tally; `legacy_plugin` names the shadow resolver compared.
    pub fn new(legacy_plugin: impl Into<String>) -> Self {
        let legacy_plugin = legacy_plugin.into();
        Self {
            legacy_path: AttributionPath::new(AttributionSource::Resolver, legacy_plugin.as_str()),
            legacy_plugin,
            flows: 0,
            judged: 0,
            heartbeat: MethodTally::default(),
            legacy: MethodTally::default(),
            agreement: Agreement::default(),
            examples_heartbeat_wrong: Vec::new(),
            examples_legacy_wrong: Vec::new(),
            examples_other: Vec::new(),
            buckets: BTreeMap::new(),
            bucket_ns: SECOND_NS,
        }
    }

    /// Counts one compared flow.
    pub fn add(&mut self, record: &Compared, truth: &dyn Truth) {
        self.flows += 1;
        let owner = truth.owner(record);
        let hb = self.heartbeat.add(
            record,
            &record.heartbeat,
            record.heartbeat_path.as_ref(),
            owner,
        );
        let legacy = self
            .legacy
            .add(record, &record.legacy, Some(&self.legacy_path), owner);
        if owner.is_some() {
            self.judged += 1;
            let bucket = self
                .buckets
                .entry(record.start_ns / self.bucket_ns)
                .or_default();
            bucket.0 += 1;
            bucket.1 += u64::from(hb == Judgement::Wrong);
            bucket.2 += u64::from(legacy == Judgement::Wrong);
            if self.buckets.len() > MAX_BUCKETS {
                self.widen_buckets();
            }
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
            let list = if hb == Judgement::Wrong {
                &mut self.examples_heartbeat_wrong
            } else if legacy == Judgement::Wrong {
                &mut self.examples_legacy_wrong
            } else {
                &mut self.examples_other
            };
            if list.len() < EXAMPLES {
                list.push(Disagreement::of(record, owner));
            }
        }
    }

    /// Doubles the timeline buckets' width, merging neighbours.
    fn widen_buckets(&mut self) {
        let mut wider = BTreeMap::new();
        for (k, (judged, hb, legacy)) in std::mem::take(&mut self.buckets) {
            let w: &mut (u64, u64, u64) = wider.entry(k / 2).or_default();
            w.0 += judged;
            w.1 += hb;
            w.2 += legacy;
        }
        self.buckets = wider;
        self.bucket_ns *= 2;
    }

    /// The report; `focus` names the service whose edges are counted apart
    /// (the gateway); edges are judged with `truth`'s dependencies where it
    /// has them, else by the flows that made them.
    pub fn report(&self, focus: Option<&str>, truth: &dyn Truth) -> Report {
        let timeline = self
            .buckets
            .iter()
            .map(|(&k, &(judged, hb, legacy))| TimeBucket {
                start_ns: k * self.bucket_ns,
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
                .examples_heartbeat_wrong
                .iter()
                .chain(&self.examples_legacy_wrong)
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
        let path = matches!(hb, Outcome::Attributed(_))
            .then(|| AttributionPath::new(AttributionSource::Heartbeat, ""));
        Compared {
            start_ns: 61_000_000_000,
            local: Some(w("db-1", "db")),
            local_endpoint: Some("10.1.0.3:5432".parse().unwrap()),
            remote: "10.0.0.9:40000".parse().unwrap(),
            initiator,
            heartbeat: hb,
            heartbeat_path: path,
            legacy,
        }
    }

    /// `flows` flows a second apart over `secs` seconds, the legacy method
    /// wrong on every third; the report's timeline.
    fn timeline_of(secs: u64) -> (Tally, Vec<crate::TimeBucket>) {
        let mut t = Tally::new("legacy");
        let right = Outcome::Attributed(w("api-1", "api"));
        let wrong = Outcome::Attributed(w("batch-7", "batch"));
        for s in 0..secs {
            let mut c = compared(
                Initiator::Local,
                right.clone(),
                if s % 3 == 0 {
                    wrong.clone()
                } else {
                    right.clone()
                },
            );
            c.start_ns = 1_000_000_000_000 + s * SECOND_NS;
            t.add(&c, &Owner("api-1"));
        }
        let timeline = t.report(None, &Owner("api-1")).timeline;
        (t, timeline)
    }

    #[test]
    fn a_forty_second_run_has_a_timeline_and_a_day_stays_bounded() {
        let (_, demo) = timeline_of(40);
        assert!(demo.len() >= 30, "{} buckets", demo.len());
        assert_eq!(demo.iter().map(|b| b.legacy_wrong).sum::<u64>(), 14);

        let (day, timeline) = timeline_of(86_400);
        assert!(day.buckets.len() <= MAX_BUCKETS, "{}", day.buckets.len());
        assert!((30..=60).contains(&timeline.len()), "{}", timeline.len());
        assert_eq!(timeline.iter().map(|b| b.judged).sum::<u64>(), 86_400);
        assert_eq!(timeline.iter().map(|b| b.legacy_wrong).sum::<u64>(), 28_800);
        let span = timeline.last().unwrap().start_ns - timeline[0].start_ns;
        assert!(span > 80_000 * SECOND_NS, "the whole day: {span}");
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

    #[test]
    fn a_wrong_heartbeat_flow_is_its_first_example_with_its_path() {
        let r = crate::sample::report();
        let hb = &r.heartbeat.misattributed_examples;
        assert_eq!(hb.len(), 1, "{hb:?}");
        assert_eq!(
            (
                hb[0].path.as_str(),
                hb[0].answer.as_str(),
                hb[0].truth.as_str()
            ),
            ("heartbeat", "batch-7", "api-1")
        );
        assert_eq!(hb[0].start_ns, 110_000_000_000);
        assert_eq!(hb[0].remote, "10.0.0.7:443");
        assert_eq!(hb[0].local_endpoint.as_deref(), Some("10.1.0.1:5000"));
        assert_eq!(hb[0].local, "gw-1");
        let legacy: Vec<_> = r
            .legacy
            .misattributed_examples
            .iter()
            .map(|e| (e.path.as_str(), e.answer.as_str(), e.truth.as_str()))
            .collect();
        assert_eq!(
            legacy,
            [
                ("resolver:sonar-legacy", "db-3", "api-2"),
                ("resolver:sonar-legacy", "batch-7", "api-1")
            ],
            "first seen first"
        );
    }

    #[test]
    fn flows_are_counted_by_path_with_their_wrong_ones() {
        let r = crate::sample::report();
        let paths: Vec<_> = r
            .heartbeat
            .by_path
            .iter()
            .map(|p| (p.path.as_str(), p.attributed, p.judged, p.misattributed))
            .collect();
        assert_eq!(
            paths,
            [("heartbeat", 1, 1, 1), ("resolver:sonar-legacy", 1, 1, 0)]
        );
        assert_eq!(r.legacy.by_path.len(), 1);
        assert_eq!(
            (
                r.legacy.by_path[0].attributed,
                r.legacy.by_path[0].misattributed
            ),
            (2, 2)
        );
    }

    #[test]
    fn missed_edges_are_counted_and_listed_focus_first() {
        let r = crate::sample::report();
        let missed = |m: &crate::MethodReport| -> Vec<String> {
            m.missed_edges
                .iter()
                .map(|e| format!("{} -> {}", e.source, e.destination))
                .collect()
        };
        assert_eq!(missed(&r.heartbeat), ["gateway -> auth", "api -> db"]);
        assert_eq!(
            missed(&r.legacy),
            ["gateway -> api", "gateway -> auth", "api -> db"]
        );
        assert_eq!((r.heartbeat.edges.missed, r.legacy.edges.missed), (2, 3));
        let focus = |m: &crate::MethodReport| m.focus_edges.unwrap().missed;
        assert_eq!((focus(&r.heartbeat), focus(&r.legacy)), (1, 2));
        assert_eq!(r.heartbeat.edges.wrong, 1, "gateway -> batch");
    }

    #[test]
    fn every_reason_is_counted_zeros_included() {
        let r = crate::sample::report();
        for m in [&r.heartbeat, &r.legacy] {
            assert_eq!(
                m.unattributed_by_reason.len(),
                UnattributedReason::ALL.len()
            );
            assert_eq!(
                m.unattributed_by_reason.values().sum::<u64>(),
                m.unattributed
            );
        }
        assert_eq!(r.heartbeat.unattributed_by_reason["incomplete"], 1);
        assert_eq!(r.heartbeat.unattributed_by_reason["not-found"], 0);
        assert_eq!(r.legacy.unattributed_by_reason["not-found"], 1);
        assert_eq!(
            r.heartbeat.unattributed_unambiguous, 1,
            "incomplete is not ambiguous"
        );
    }

    #[test]
    fn a_disagreement_where_the_heartbeat_method_is_wrong_comes_first() {
        let mut t = Tally::new("legacy");
        let right = Outcome::Attributed(w("api-1", "api"));
        let wrong = Outcome::Attributed(w("batch-7", "batch"));
        for _ in 0..EXAMPLES {
            t.add(
                &compared(Initiator::Local, right.clone(), wrong.clone()),
                &Owner("api-1"),
            );
        }
        t.add(&compared(Initiator::Local, wrong, right), &Owner("api-1"));
        let r = t.report(None, &Dependencies::default());
        assert_eq!(r.disagreements[0].heartbeat, "batch-7");
        assert_eq!(r.disagreements.len(), EXAMPLES);
    }

    #[test]
    fn examples_and_paths_stay_bounded() {
        let mut t = Tally::new("legacy");
        let right = Outcome::Attributed(w("api-1", "api"));
        for i in 0..100u64 {
            let mut c = compared(
                Initiator::Local,
                Outcome::Attributed(w("batch-7", "batch")),
                right.clone(),
            );
            c.start_ns = i;
            c.heartbeat_path = Some(AttributionPath::new(
                AttributionSource::Resolver,
                format!("p{i}"),
            ));
            t.add(&c, &Owner("api-1"));
        }
        let mut c = compared(Initiator::Local, right.clone(), right);
        c.heartbeat_path = None;
        t.add(&c, &Owner("api-1"));
        let r = t.report(None, &Dependencies::default());
        let hb = &r.heartbeat;
        assert_eq!(hb.misattributed, 100);
        assert_eq!(
            hb.misattributed_examples.len(),
            crate::method::MISATTRIBUTED_LISTED
        );
        assert_eq!(hb.misattributed_examples[0].start_ns, 0, "the first seen");
        assert_eq!(hb.misattributed_examples[0].path, "resolver:p0");
        assert_eq!(hb.by_path.len(), 34, "32 paths, unrecorded, other");
        assert_eq!(hb.by_path.iter().map(|p| p.attributed).sum::<u64>(), 101);
        assert_eq!(
            (hb.by_path[0].path.as_str(), hb.by_path[0].attributed),
            (crate::method::OTHER_PATHS, 68)
        );
        let unrecorded = hb
            .by_path
            .iter()
            .find(|p| p.path == crate::method::UNRECORDED_PATH);
        assert_eq!(
            unrecorded.map(|p| (p.attributed, p.misattributed)),
            Some((1, 0))
        );
    }
}
