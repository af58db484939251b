//! The simulator's ground truth at the A/B point: every record shipped
//! leaves its real owners here (remote and local), keyed by what the
//! collector will report of it (remote endpoint, start); each compared flow
//! takes them back out. The remote side is counted by the A/B tally; the
//! local side, which the agents attributed through their identity sources,
//! is judged here.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use flowattr_ab::{Compared, Dependencies, Tally, Truth};
use flowattr_collector::shadow::Comparison;
use flowattr_model::Workload;
use rustc_hash::FxHashMap;

use crate::scenario::Scenario;

/// One flow's owner, for [`Tally::add`].
struct Owner<'a>(Option<&'a str>);

impl Truth for Owner<'_> {
    fn owner(&self, _: &Compared) -> Option<&str> {
        self.0
    }

    fn depends(&self, _: &str, _: &str) -> Option<bool> {
        None
    }
}

/// How the agents' local sides compare with the truth.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalJudged {
    /// Attributed local sides judged, and of them naming another workload.
    pub attributed: u64,
    pub misattributed: u64,
    pub unattributed: u64,
    /// The first misattributed ones: (flow, said, truth).
    pub examples: Vec<String>,
}

const LOCAL_EXAMPLES: usize = 8;

/// Both ends' real owners.
type Owners = (Arc<Workload>, Arc<Workload>);

/// Ground truth waiting for its flows, and the tally.
pub struct Judge {
    /// `None`: two records shared a key, so neither is judged.
    waiting: FxHashMap<(SocketAddr, u64), Option<Owners>>,
    pub tally: Tally,
    pub local: LocalJudged,
    /// Compared flows the simulator never sent (must stay 0).
    pub unknown: u64,
    /// Records whose key another record also had (not judged).
    pub collisions: u64,
}

impl Judge {
    pub fn new(legacy_plugin: &str) -> Self {
        Self {
            waiting: FxHashMap::default(),
            tally: Tally::new(legacy_plugin),
            local: LocalJudged::default(),
            unknown: 0,
            collisions: 0,
        }
    }

    /// Remembers who really owns `remote` (and the local end) for the flow
    /// starting at `start_ns`.
    pub fn expect(
        &mut self,
        remote: SocketAddr,
        start_ns: u64,
        owner: Arc<Workload>,
        local: Arc<Workload>,
    ) {
        if let Some(previous) = self
            .waiting
            .insert((remote, start_ns), Some((owner, local)))
        {
            self.collisions += 1 + u64::from(previous.is_some());
            self.waiting.insert((remote, start_ns), None);
        }
    }

    /// Records never compared (lost on the way, must stay 0 after a run).
    pub fn outstanding(&self) -> usize {
        self.waiting.len()
    }

    fn judge(&mut self, compared: Vec<Compared>) {
        for c in compared {
            match self.waiting.remove(&(c.remote, c.start_ns)) {
                Some(owners) => {
                    let id = owners.as_ref().map(|(w, _)| w.id.as_str());
                    self.tally.add(&c, &Owner(id));
                    if let Some((_, local)) = &owners {
                        self.judge_local(&c, local);
                    }
                }
                None => self.unknown += 1,
            }
        }
    }
}

impl Judge {
    fn judge_local(&mut self, c: &Compared, truth: &Workload) {
        let l = &mut self.local;
        match &c.local {
            None => l.unattributed += 1,
            Some(said) => {
                l.attributed += 1;
                if said.id != truth.id {
                    l.misattributed += 1;
                    if l.examples.len() < LOCAL_EXAMPLES {
                        l.examples.push(format!(
                            "{} -> {} at {}: local side {} but it was {}",
                            c.local_endpoint.map_or("?".into(), |e| e.to_string()),
                            c.remote,
                            c.start_ns,
                            said.id,
                            truth.id
                        ));
                    }
                }
            }
        }
    }
}

/// The true dependencies: each service's `depends_on`, where a dependency
/// behind load balancers is reached through them (`NAME-lb`), which in turn
/// depend on the service.
pub fn dependencies(scenario: &Scenario) -> Dependencies {
    let mut services = Vec::new();
    for s in &scenario.services {
        let deps = s
            .depends_on
            .iter()
            .map(|d| match scenario.service(d) {
                Some(i) if scenario.services[i].behind_lb => format!("{d}-lb"),
                _ => d.clone(),
            })
            .collect();
        services.push((s.name.clone(), deps));
        if s.behind_lb {
            services.push((format!("{}-lb", s.name), vec![s.name.clone()]));
        }
    }
    Dependencies::new(services)
}

/// The [`Comparison`] each in-process collector reports to.
pub struct SharedJudge(pub Arc<Mutex<Judge>>);

impl Comparison for SharedJudge {
    fn record(&mut self, compared: Vec<Compared>) {
        self.0.lock().expect("judge poisoned").judge(compared);
    }
}
