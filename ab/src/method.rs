//! One method's running counts: answers, unattributed reasons, the paths
//! that attributed flows, dependency edges and the first misattributed
//! flows; and the [`MethodReport`] they become.

use std::collections::{BTreeMap, HashMap};

use flowattr_model::{UnattributedReason, Workload};

use crate::{
    AttributionPath, Compared, Judgement, Outcome, Truth, is_ambiguous,
    report::{EdgeCounts, EdgeExample, MethodReport, Misattribution, MissedEdge, PathCount},
};

/// Misattributed flows kept as examples per method: the first seen.
pub(crate) const MISATTRIBUTED_LISTED: usize = 20;
/// Wrong edges listed per method.
const WRONG_EDGES_LISTED: usize = 10;
/// Missed edges listed per method.
const MISSED_EDGES_LISTED: usize = 20;
/// Distinct attribution paths counted apart (besides unrecorded ones);
/// flows of any further path are counted as [`OTHER_PATHS`].
const PATHS_COUNTED: usize = 32;
/// The label of flows whose path was not recorded (older records files).
pub(crate) const UNRECORDED_PATH: &str = "unrecorded";
/// The label of flows of paths beyond the first [`PATHS_COUNTED`].
pub(crate) const OTHER_PATHS: &str = "other";
const REASONS: usize = UnattributedReason::ALL.len();

/// Flows behind one dependency edge, by judgement.
#[derive(Debug, Clone, Copy, Default)]
struct EdgeStat {
    flows: u64,
    correct: u64,
    wrong: u64,
}

/// Flows one attribution path answered.
#[derive(Debug, Clone, Copy, Default)]
struct PathStat {
    attributed: u64,
    judged: u64,
    wrong: u64,
}

/// One method's counts.
#[derive(Debug, Default)]
pub(crate) struct MethodTally {
    attributed: u64,
    /// By position in [`UnattributedReason::ALL`].
    unattributed: [u64; REASONS],
    unattributed_unambiguous: u64,
    judged: u64,
    misattributed: u64,
    /// Attributed flows by path (`None`: not recorded), in order first seen.
    paths: Vec<(Option<AttributionPath>, PathStat)>,
    /// Flows of paths beyond the first `PATHS_COUNTED`.
    other_paths: PathStat,
    /// The first misattributed flows.
    examples: Vec<Misattribution>,
    /// source service → destination service → flows.
    edges: HashMap<String, HashMap<String, EdgeStat>>,
}

/// A service's name for edges: its `app`, else its id.
fn service(w: &Workload) -> &str {
    w.app.as_deref().unwrap_or(&w.id)
}

fn label(path: Option<&AttributionPath>) -> String {
    path.map_or_else(|| UNRECORDED_PATH.to_owned(), AttributionPath::label)
}

impl MethodTally {
    fn path_stat(&mut self, path: Option<&AttributionPath>) -> &mut PathStat {
        if let Some(i) = self.paths.iter().position(|(p, _)| p.as_ref() == path) {
            return &mut self.paths[i].1;
        }
        if self.paths.len() >= PATHS_COUNTED && path.is_some() {
            return &mut self.other_paths;
        }
        self.paths.push((path.cloned(), PathStat::default()));
        &mut self.paths.last_mut().expect("just pushed").1
    }

    /// Counts `outcome`, this method's answer for `record`, reached by
    /// `path`, against the real `owner`.
    pub(crate) fn add(
        &mut self,
        record: &Compared,
        outcome: &Outcome,
        path: Option<&AttributionPath>,
        owner: Option<&str>,
    ) -> Judgement {
        let workload = match outcome {
            Outcome::Unattributed(reason) => {
                if let Some(i) = UnattributedReason::ALL.iter().position(|r| r == reason) {
                    self.unattributed[i] += 1;
                }
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
        let stat = self.path_stat(path);
        stat.attributed += 1;
        stat.judged += u64::from(judgement != Judgement::Unknown);
        stat.wrong += u64::from(judgement == Judgement::Wrong);
        if judgement != Judgement::Unknown {
            self.judged += 1;
        }
        if judgement == Judgement::Wrong {
            self.misattributed += 1;
            if self.examples.len() < MISATTRIBUTED_LISTED {
                self.examples.push(Misattribution {
                    path: label(path),
                    start_ns: record.start_ns,
                    local: record
                        .local
                        .as_ref()
                        .map_or_else(|| "-".to_owned(), |w| w.id.clone()),
                    local_endpoint: record.local_endpoint.map(|e| e.to_string()),
                    remote: record.remote.to_string(),
                    answer: workload.id.clone(),
                    truth: owner.unwrap_or_default().to_owned(),
                });
            }
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

    /// The real dependencies `truth` knows that no flow of this method made,
    /// the focus service's first, then by name.
    fn missed<'t>(&self, focus: Option<&str>, truth: &'t dyn Truth) -> Vec<(&'t str, &'t str)> {
        let mut missed = truth.known_dependencies();
        missed.retain(|&(src, dst)| !self.edges.get(src).is_some_and(|m| m.contains_key(dst)));
        missed.sort_unstable_by_key(|&(src, dst)| (Some(src) != focus, src, dst));
        missed.dedup();
        missed
    }

    fn paths(&self) -> Vec<PathCount> {
        let count = |path: String, s: &PathStat| PathCount {
            path,
            attributed: s.attributed,
            judged: s.judged,
            misattributed: s.wrong,
        };
        let mut out: Vec<PathCount> = self
            .paths
            .iter()
            .map(|(p, s)| count(label(p.as_ref()), s))
            .collect();
        if self.other_paths.attributed > 0 {
            out.push(count(OTHER_PATHS.to_owned(), &self.other_paths));
        }
        out.sort_by(|a, b| {
            b.attributed
                .cmp(&a.attributed)
                .then_with(|| a.path.cmp(&b.path))
        });
        out
    }

    pub(crate) fn report(
        &self,
        flows: u64,
        focus: Option<&str>,
        truth: &dyn Truth,
    ) -> MethodReport {
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
        let missed = self.missed(focus, truth);
        edges.missed = missed.len() as u64;
        if let Some(f) = &mut focus_edges {
            f.missed = missed.iter().filter(|(src, _)| Some(*src) == focus).count() as u64;
        }
        MethodReport {
            attributed: self.attributed,
            unattributed: self.unattributed.iter().sum(),
            unattributed_by_reason: UnattributedReason::ALL
                .iter()
                .zip(self.unattributed)
                .map(|(r, n)| (r.as_str().to_owned(), n))
                .collect::<BTreeMap<_, _>>(),
            unattributed_unambiguous: self.unattributed_unambiguous,
            unattributed_unambiguous_pct: pct(self.unattributed_unambiguous, flows),
            judged: self.judged,
            misattributed: self.misattributed,
            misattributed_pct: pct(self.misattributed, self.judged),
            by_path: self.paths(),
            misattributed_examples: self.examples.clone(),
            edges,
            focus_edges,
            wrong_edges: wrong,
            missed_edges: missed
                .into_iter()
                .take(MISSED_EDGES_LISTED)
                .map(|(src, dst)| MissedEdge {
                    source: src.to_owned(),
                    destination: dst.to_owned(),
                })
                .collect(),
        }
    }
}

pub(crate) fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}
