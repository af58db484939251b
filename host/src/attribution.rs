//! Local attribution at capture time: each flow's local endpoint is asked of
//! the identity plugin chain at the flow's start time, and answers are cached
//! for the time range they are valid for.
//!
//! Chain semantics (shared with the collector): plugins run in order;
//! `not-found` passes the query to the next plugin; an attribution or any
//! other reason is final. A failed call passes its queries on (`on_failure =
//! "skip"`) or leaves them unattributed with `plugin-failed`
//! (`"fail-closed"`).
//!
//! An attribution for the whole address is recorded as
//! [`AttributionSource::Capture`] (the collector takes it as a heartbeat for
//! the address); one that holds for the endpoint's port only (an address
//! several workloads share) as [`AttributionSource::CaptureShared`], which
//! names the workload of the connection but never the address's owner. A
//! plugin's `not-found` may say the address is shared by port (a node's own
//! port on the address its containers share): whatever a later plugin
//! answers for that query then holds for the port only. The cache is keyed
//! by the whole endpoint and keeps the source, so a cached answer keeps its
//! scope and never serves another port.

use std::{net::SocketAddr, sync::Arc};

use flowattr_model::{
    AnswerScope, Attribution, AttributionSource, Flow, LocalQuery, Side, TimeRange, Unanswered,
    UnattributedReason, Workload,
};
use flowattr_plugin_runtime::Plugin;
use rustc_hash::FxHashMap;

/// Per query: the workload, the time range the answer holds for and whether
/// it holds for the whole address or the port only, or why there is none.
pub type Identified = Result<(Arc<Workload>, TimeRange, AnswerScope), Unanswered>;

/// One identity source in the chain. [`Plugin`] is the real one; unit tests
/// use plain functions.
pub trait IdentitySource {
    fn name(&self) -> &str;
    /// A failed call leaves its queries unattributed instead of passing them on.
    fn fail_closed(&self) -> bool;
    /// One result per query, in order, or why the whole call failed.
    fn identify(&self, queries: &[LocalQuery]) -> Result<Vec<Identified>, String>;
}

impl<T: IdentitySource + ?Sized> IdentitySource for &T {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn fail_closed(&self) -> bool {
        (**self).fail_closed()
    }
    fn identify(&self, queries: &[LocalQuery]) -> Result<Vec<Identified>, String> {
        (**self).identify(queries)
    }
}

impl IdentitySource for Arc<Plugin> {
    fn name(&self) -> &str {
        Plugin::name(self)
    }

    fn fail_closed(&self) -> bool {
        self.fails_closed()
    }

    fn identify(&self, queries: &[LocalQuery]) -> Result<Vec<Identified>, String> {
        let answers = Plugin::identify(self, queries).map_err(|e| e.to_string())?;
        Ok((0..queries.len())
            .map(|i| {
                if answers.shared_not_found(i) {
                    return Err(Unanswered::NotFoundShared);
                }
                let scope = answers.scope(i).unwrap_or_default();
                answers
                    .resolve(i)
                    .map(|(w, valid)| (Arc::clone(w), valid, scope))
                    .map_err(Unanswered::from)
            })
            .collect())
    }
}

/// What happened to one query at one plugin, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Attributed,
    NotFound,
    /// Another final reason (gap, source-unavailable, …).
    Unattributed,
    /// The call failed.
    Failed,
}

impl Outcome {
    /// Stable name for metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Attributed => "attributed",
            Outcome::NotFound => "not_found",
            Outcome::Unattributed => "unattributed",
            Outcome::Failed => "failed",
        }
    }
}

/// Receives counts as the attributor works.
pub trait AttributionObserver {
    fn cache_hits(&mut self, n: u64);
    fn outcome(&mut self, plugin: &str, outcome: Outcome, n: u64);
}

impl AttributionObserver for () {
    fn cache_hits(&mut self, _: u64) {}
    fn outcome(&mut self, _: &str, _: Outcome, _: u64) {}
}

struct Cached {
    valid: TimeRange,
    attribution: Attribution,
}

/// The local-side attributor with its answer cache.
pub struct LocalAttributor {
    cache: FxHashMap<SocketAddr, Vec<Cached>>,
    /// Cached answers at most (across all endpoints).
    capacity: usize,
    len: usize,
}

impl LocalAttributor {
    pub fn new(capacity: usize) -> Self {
        Self {
            cache: FxHashMap::default(),
            capacity,
            len: 0,
        }
    }

    /// The local side of each flow, in order.
    pub fn attribute<S: IdentitySource>(
        &mut self,
        flows: &[Flow],
        chain: &[S],
        observer: &mut impl AttributionObserver,
    ) -> Vec<Side> {
        let mut sides = vec![Side::Pending; flows.len()];
        // Queries a plugin found on an address shared by port.
        let mut shared = vec![false; flows.len()];
        let mut pending: Vec<usize> = Vec::new();
        for (i, flow) in flows.iter().enumerate() {
            match self.lookup(flow.local, flow.start_ns) {
                Some(a) => sides[i] = Side::Attributed(a),
                None => pending.push(i),
            }
        }
        observer.cache_hits((flows.len() - pending.len()) as u64);

        for source in chain {
            if pending.is_empty() {
                break;
            }
            let queries: Vec<LocalQuery> = pending.iter().map(|&i| query(&flows[i])).collect();
            let results = match source.identify(&queries) {
                Ok(r) if r.len() == queries.len() => Some(r),
                Ok(r) => {
                    let answers = r.len();
                    tracing::warn!(
                        plugin = source.name(),
                        answers,
                        queries = queries.len(),
                        "identity plugin answered the wrong number of queries"
                    );
                    None
                }
                Err(error) => {
                    tracing::warn!(plugin = source.name(), %error, "identity plugin call failed");
                    None
                }
            };
            let Some(results) = results else {
                observer.outcome(source.name(), Outcome::Failed, pending.len() as u64);
                if source.fail_closed() {
                    for &i in &pending {
                        sides[i] = Side::Unattributed(UnattributedReason::PluginFailed);
                    }
                    pending.clear();
                }
                continue;
            };
            let mut still = Vec::new();
            let mut counts = [0u64; 3];
            let plugin: Arc<str> = source.name().into();
            for (&i, result) in pending.iter().zip(results) {
                match result {
                    Ok((workload, valid, scope)) => {
                        counts[0] += 1;
                        let scope = if shared[i] { AnswerScope::Port } else { scope };
                        let attribution = Attribution {
                            workload,
                            source: AttributionSource::of_local(scope),
                            plugin: plugin.clone(),
                            valid,
                        };
                        self.insert(flows[i].local, valid, attribution.clone());
                        sides[i] = Side::Attributed(attribution);
                    }
                    Err(Unanswered::Reason(UnattributedReason::NotFound)) => {
                        counts[1] += 1;
                        still.push(i);
                    }
                    Err(Unanswered::NotFoundShared) => {
                        counts[1] += 1;
                        shared[i] = true;
                        still.push(i);
                    }
                    Err(Unanswered::Reason(reason)) => {
                        counts[2] += 1;
                        sides[i] = Side::Unattributed(reason);
                    }
                }
            }
            for (outcome, n) in [
                Outcome::Attributed,
                Outcome::NotFound,
                Outcome::Unattributed,
            ]
            .into_iter()
            .zip(counts)
            {
                if n > 0 {
                    observer.outcome(source.name(), outcome, n);
                }
            }
            pending = still;
        }
        for i in pending {
            sides[i] = Side::Unattributed(UnattributedReason::NotFound);
        }
        sides
    }

    fn lookup(&self, local: SocketAddr, t_ns: u64) -> Option<Attribution> {
        self.cache
            .get(&local)?
            .iter()
            .find(|c| c.valid.contains(t_ns))
            .map(|c| c.attribution.clone())
    }

    fn insert(&mut self, local: SocketAddr, valid: TimeRange, attribution: Attribution) {
        if self.len >= self.capacity {
            // Simple and bounded: start over. Answers are cheap to ask again
            // in batches; a full cache means many distinct endpoints.
            self.cache.clear();
            self.len = 0;
        }
        let entries = self.cache.entry(local).or_default();
        if entries.iter().any(|c| {
            c.valid == valid
                && c.attribution.source == attribution.source
                && c.attribution.workload.id == attribution.workload.id
        }) {
            return;
        }
        entries.push(Cached { valid, attribution });
        self.len += 1;
    }
}

fn query(flow: &Flow) -> LocalQuery {
    LocalQuery {
        local: flow.local,
        protocol: flow.protocol,
        time_ns: flow.start_ns,
        cgroup_id: flow.cgroup_id,
        netns_id: flow.netns_id,
        pid: flow.pid,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    type Answer = Identified;

    /// A source answering from a function, counting the queries it saw.
    struct Fake<F> {
        name: &'static str,
        fail_closed: bool,
        answer: F,
        asked: Cell<usize>,
    }

    impl<F: Fn(&LocalQuery) -> Option<Answer>> IdentitySource for Fake<F> {
        fn name(&self) -> &str {
            self.name
        }
        fn fail_closed(&self) -> bool {
            self.fail_closed
        }
        fn identify(&self, queries: &[LocalQuery]) -> Result<Vec<Answer>, String> {
            self.asked.set(self.asked.get() + queries.len());
            queries
                .iter()
                .map(|q| (self.answer)(q).ok_or_else(|| "boom".to_owned()))
                .collect()
        }
    }

    fn fake<F: Fn(&LocalQuery) -> Option<Answer>>(name: &'static str, answer: F) -> Fake<F> {
        Fake {
            name,
            fail_closed: false,
            answer,
            asked: Cell::new(0),
        }
    }

    fn workload(id: &str) -> Arc<Workload> {
        Arc::new(Workload {
            id: id.into(),
            ..Workload::default()
        })
    }

    fn flow(local: &str, start_ns: u64) -> Flow {
        Flow::tcp(
            local.parse().unwrap(),
            "192.0.2.1:80".parse().unwrap(),
            start_ns,
        )
    }

    fn id(side: &Side) -> String {
        match side {
            Side::Attributed(a) => format!("{}@{}", a.workload.id, a.plugin),
            Side::Unattributed(r) => r.as_str().to_owned(),
            Side::Pending => "pending".into(),
        }
    }

    #[test]
    fn first_confident_answer_wins_and_not_found_passes_on() {
        let ipman = fake("ipman", |q: &LocalQuery| {
            Some(match q.local.ip().to_string().as_str() {
                "10.0.0.5" => Ok((
                    workload("c-web"),
                    TimeRange::new(0, 100),
                    AnswerScope::Address,
                )),
                "10.0.0.6" => Err(UnattributedReason::Gap.into()),
                _ => Err(UnattributedReason::NotFound.into()),
            })
        });
        let ec2 = fake("ec2", |q: &LocalQuery| {
            Some(if q.local.ip().to_string() == "10.0.0.1" {
                Ok((
                    workload("i-host"),
                    TimeRange::since(0),
                    AnswerScope::Address,
                ))
            } else {
                Err(UnattributedReason::NotFound.into())
            })
        });
        let flows = [
            flow("10.0.0.5:1", 10),
            flow("10.0.0.6:1", 10),
            flow("10.0.0.1:1", 10),
            flow("10.0.0.9:1", 10),
        ];
        let sides = LocalAttributor::new(100).attribute(
            &flows,
            &[&ipman as &dyn IdentitySource, &ec2],
            &mut (),
        );
        let got: Vec<String> = sides.iter().map(id).collect();
        assert_eq!(got, ["c-web@ipman", "gap", "i-host@ec2", "not-found"]);
        // ec2 was only asked what ipman did not know.
        assert_eq!((ipman.asked.get(), ec2.asked.get()), (4, 2));
    }

    #[test]
    fn cached_answers_hold_only_inside_their_validity() {
        let ipman = fake("ipman", |q: &LocalQuery| {
            Some(if q.time_ns < 100 {
                Ok((
                    workload("old"),
                    TimeRange::new(0, 100),
                    AnswerScope::Address,
                ))
            } else {
                Ok((workload("new"), TimeRange::since(100), AnswerScope::Address))
            })
        });
        let mut attributor = LocalAttributor::new(100);
        let chain = [&ipman as &dyn IdentitySource];
        let first = attributor.attribute(&[flow("10.0.0.5:1", 10)], &chain, &mut ());
        let again = attributor.attribute(&[flow("10.0.0.5:1", 50)], &chain, &mut ());
        assert_eq!(ipman.asked.get(), 1, "second flow answered from the cache");
        let later = attributor.attribute(&[flow("10.0.0.5:1", 150)], &chain, &mut ());
        assert_eq!(
            ipman.asked.get(),
            2,
            "outside the cached range: asked again"
        );
        assert_eq!(
            [id(&first[0]), id(&again[0]), id(&later[0])],
            ["old@ipman", "old@ipman", "new@ipman"]
        );
    }

    fn source(side: &Side) -> Option<AttributionSource> {
        match side {
            Side::Attributed(a) => Some(a.source),
            _ => None,
        }
    }

    #[test]
    fn port_scoped_answers_are_capture_shared_and_keep_their_scope_in_the_cache() {
        // A node's shared IPv4 address: two containers by port, the node's
        // own ports answered by the next plugin for the whole address.
        let ipman = fake("ipman", |q: &LocalQuery| {
            Some(match (q.local.ip().to_string().as_str(), q.local.port()) {
                ("192.0.2.10", 40000..=40999) => {
                    Ok((workload("c-web"), TimeRange::new(0, 100), AnswerScope::Port))
                }
                ("192.0.2.10", 41000..=41999) => {
                    Ok((workload("c-db"), TimeRange::new(0, 100), AnswerScope::Port))
                }
                ("fd00::5", _) => Ok((
                    workload("c-web"),
                    TimeRange::new(0, 100),
                    AnswerScope::Address,
                )),
                _ => Err(UnattributedReason::NotFound.into()),
            })
        });
        let ec2 = fake("ec2", |_: &LocalQuery| {
            Some(Ok((
                workload("i-host"),
                TimeRange::since(0),
                AnswerScope::Address,
            )))
        });
        let chain = [&ipman as &dyn IdentitySource, &ec2];
        let mut attributor = LocalAttributor::new(100);
        let flows = [
            flow("192.0.2.10:40001", 10),
            flow("192.0.2.10:41001", 10),
            flow("[fd00::5]:443", 10),
            flow("192.0.2.10:22", 10),
        ];
        let sides = attributor.attribute(&flows, &chain, &mut ());
        let got: Vec<String> = sides.iter().map(id).collect();
        assert_eq!(
            got,
            ["c-web@ipman", "c-db@ipman", "c-web@ipman", "i-host@ec2"]
        );
        use AttributionSource::{Capture, CaptureShared};
        let sources: Vec<_> = sides.iter().map(source).collect();
        assert_eq!(
            sources,
            [
                Some(CaptureShared),
                Some(CaptureShared),
                Some(Capture),
                Some(Capture)
            ]
        );

        // From the cache: the same endpoints keep their scope, and another
        // port of the shared address is asked, never answered from a
        // neighbour's entry.
        let again = attributor.attribute(
            &[
                flow("192.0.2.10:40001", 50),
                flow("[fd00::5]:443", 50),
                flow("192.0.2.10:41002", 50),
            ],
            &chain,
            &mut (),
        );
        assert_eq!(ipman.asked.get(), 5, "only the new port was asked");
        let got: Vec<String> = again.iter().map(id).collect();
        assert_eq!(got, ["c-web@ipman", "c-web@ipman", "c-db@ipman"]);
        let sources: Vec<_> = again.iter().map(source).collect();
        assert_eq!(
            sources,
            [Some(CaptureShared), Some(Capture), Some(CaptureShared)]
        );
    }

    #[test]
    fn failed_call_skips_or_fails_closed() {
        let broken = fake("broken", |_: &LocalQuery| None);
        let ec2 = fake("ec2", |_: &LocalQuery| {
            Some(Ok((
                workload("i-host"),
                TimeRange::since(0),
                AnswerScope::Address,
            )))
        });
        let flows = [flow("10.0.0.1:1", 10)];
        let chain = [&broken as &dyn IdentitySource, &ec2];
        let sides = LocalAttributor::new(100).attribute(&flows, &chain, &mut ());
        assert_eq!(id(&sides[0]), "i-host@ec2");

        let closed = Fake {
            fail_closed: true,
            ..fake("broken", |_: &LocalQuery| None)
        };
        let chain = [&closed as &dyn IdentitySource, &ec2];
        let sides = LocalAttributor::new(100).attribute(&flows, &chain, &mut ());
        assert_eq!(id(&sides[0]), "plugin-failed");
    }

    #[test]
    fn after_a_not_found_on_a_shared_address_the_next_answer_holds_for_the_port_only() {
        // ipman: 192.0.2.10 is shared by port, and port 22 is nobody's.
        let ipman = fake("ipman", |q: &LocalQuery| {
            Some(if q.local.ip().to_string() == "192.0.2.10" {
                Err(Unanswered::NotFoundShared)
            } else {
                Err(UnattributedReason::NotFound.into())
            })
        });
        // ec2-disk: the node owns its addresses, for all it knows.
        let ec2 = fake("ec2", |_: &LocalQuery| {
            Some(Ok((
                workload("node-7"),
                TimeRange::new(0, 100),
                AnswerScope::Address,
            )))
        });
        let mut attributor = LocalAttributor::new(16);
        let flows = [flow("192.0.2.10:22", 10), flow("10.0.0.7:22", 10)];
        let sources = |sides: &[Side]| -> Vec<Option<AttributionSource>> {
            sides
                .iter()
                .map(|s| match s {
                    Side::Attributed(a) => Some(a.source),
                    _ => None,
                })
                .collect()
        };
        let chain: [&dyn IdentitySource; 2] = [&ipman, &ec2];
        let sides = attributor.attribute(&flows, &chain, &mut ());
        assert_eq!(id(&sides[0]), "node-7@ec2");
        assert_eq!(
            sources(&sides),
            [
                Some(AttributionSource::CaptureShared),
                Some(AttributionSource::Capture)
            ]
        );
        // From the cache, the same.
        let again = attributor.attribute(&flows, &chain, &mut ());
        assert_eq!(sources(&again), sources(&sides));
        assert_eq!(
            ec2.asked.get(),
            2,
            "answered from the cache the second time"
        );
    }
}
