//! Remote attribution (the method's point 4): after the hold, each flow's
//! remote address is attributed by the ownership range that holds the
//! flow's **start**. Pure: the table, the region map, the resolver chain and
//! what is complete come in, the flows' remote sides and what to forward
//! come out.
//!
//! Where the table cannot answer but the other end of the same connection
//! reported it ([`crate::counterpart`]), that report answers (source
//! `counterpart`); where the table names one workload and the other end
//! another, the flow is a conflict. A range answers only once the flow is
//! **complete** ([`crate::completeness`]): every agent that may claim the
//! address has reported past it; otherwise the flow is `incomplete` (the
//! other end's report of this very connection still answers, and a
//! conflict stays a conflict). Otherwise, in order, for an address the
//! table cannot attribute:
//!
//! 1. An address in another region's prefixes goes to that region's
//!    collectors (which hold that region's heartbeats) — unless the flow was
//!    itself forwarded here, so nothing travels in circles.
//! 2. Resolver plugins (such as sonar-legacy for load balancers) are asked
//!    only for addresses **no agent may claim** (by the claim policy) and
//!    the table knows nothing of. An address an agent may claim is a
//!    workload's: its owner may simply not have reported yet, or run no
//!    agent, and a resolver answer would be exactly the event-driven guess
//!    the method replaces, so the table's reason stands. Chain semantics
//!    match the agent's identity chain: `not-found` passes to the next
//!    plugin; an attribution or any other reason is final; a failed call
//!    passes its queries on (`skip`) or leaves them `plugin-failed`
//!    (`fail-closed`).
//! 3. Otherwise the flow leaves unattributed, with the reason.

use std::{net::IpAddr, sync::Arc};

use flowattr_model::{
    AnswerScope, Answers, AttributedFlow, Attribution, AttributionSource, Flow, ResolveQuery, Side,
    TimeRange, UnattributedReason, Workload,
};
use flowattr_plugin_runtime::Plugin;

use crate::{
    counterpart::Counterpart,
    ownership::{OwnershipTable, Prefix},
};

/// Which prefixes belong to other regions.
#[derive(Debug, Clone, Default)]
pub struct Regions {
    /// (prefix, region index), most specific first.
    prefixes: Vec<(Prefix, usize)>,
    names: Vec<String>,
}

impl Regions {
    /// The other regions and their prefixes.
    pub fn new(regions: impl IntoIterator<Item = (String, Vec<Prefix>)>) -> Self {
        let mut out = Self::default();
        for (name, prefixes) in regions {
            let i = out.names.len();
            out.names.push(name);
            out.prefixes.extend(prefixes.into_iter().map(|p| (p, i)));
        }
        out.prefixes
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.key_len()));
        out
    }

    /// The index of the other region `ip` belongs to, if any.
    pub fn region_of(&self, ip: IpAddr) -> Option<usize> {
        self.prefixes
            .iter()
            .find(|(p, _)| p.contains(ip))
            .map(|&(_, i)| i)
    }

    /// The name of region `i`.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// One resolver in the fallback chain. [`Plugin`] is the real one; unit
/// tests use plain functions.
pub trait ResolverSource {
    fn name(&self) -> &str;
    /// A failed call leaves its queries `plugin-failed` instead of passing
    /// them on.
    fn fail_closed(&self) -> bool;
    /// One answer per query, in order, or why the whole call failed.
    fn resolve(&self, queries: &[ResolveQuery]) -> Result<Answers, String>;
}

impl ResolverSource for Arc<Plugin> {
    fn name(&self) -> &str {
        Plugin::name(self)
    }

    fn fail_closed(&self) -> bool {
        self.fails_closed()
    }

    fn resolve(&self, queries: &[ResolveQuery]) -> Result<Answers, String> {
        Plugin::resolve(self, queries).map_err(|e| e.to_string())
    }
}

/// How the remote sides of a pass came out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemoteCounts {
    /// Attributed by an ownership range.
    pub heartbeat: u64,
    /// Attributed by the other end's report of the same connection, where
    /// no range could (or the flow was not complete).
    pub counterpart: u64,
    /// Attributed by a resolver plugin: (plugin, flows).
    pub resolver: Vec<(String, u64)>,
    /// Left unattributed, by reason.
    pub unattributed: Vec<(UnattributedReason, u64)>,
    /// Sent to another region: (region index, flows).
    pub forwarded: Vec<(usize, u64)>,
    /// Resolver calls that failed: (plugin, calls).
    pub resolver_failures: Vec<(String, u64)>,
}

fn bump<K: PartialEq>(list: &mut Vec<(K, u64)>, key: K, n: u64) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some((_, c)) => *c += n,
        None => list.push((key, n)),
    }
}

impl RemoteCounts {
    fn unattributed(&mut self, reason: UnattributedReason) {
        bump(&mut self.unattributed, reason, 1);
    }
}

/// The outcome of a pass: which flows go to other regions.
#[derive(Debug, Default)]
pub struct RemotePass {
    /// (flow index, region index) of every flow to forward; their remote
    /// side is left as it came.
    pub forward: Vec<(usize, usize)>,
    pub counts: RemoteCounts,
}

/// Where a pass looks things up.
pub struct Sources<'a, R> {
    pub table: &'a OwnershipTable,
    pub regions: &'a Regions,
    pub resolvers: &'a [R],
    /// Whether a flow is complete for its remote address.
    pub complete: &'a dyn Fn(&Flow) -> bool,
}

/// Attributes the remote side of every flow still `pending`, at `now_ns`.
/// `counterparts[i]` is what the other end of flow `i` reported (see
/// [`crate::counterpart`]). `forwardable` is false for flows another region
/// forwarded here.
pub fn attribute_remote<R: ResolverSource>(
    flows: &mut [AttributedFlow],
    counterparts: &[Counterpart],
    forwardable: bool,
    sources: &Sources<'_, R>,
    now_ns: u64,
) -> RemotePass {
    let Sources {
        table,
        regions,
        resolvers,
        complete,
    } = *sources;
    let mut pass = RemotePass::default();
    let pending: Vec<usize> = (0..flows.len())
        .filter(|&i| matches!(flows[i].remote, Side::Pending))
        .collect();
    let queries: Vec<(IpAddr, u64)> = pending
        .iter()
        .map(|&i| (flows[i].flow.remote.ip(), flows[i].flow.start_ns))
        .collect();
    let mut answers = Vec::with_capacity(queries.len());
    table.lookup_many(&queries, now_ns, &mut answers);

    // Flows the table knows nothing of, for the resolver chain.
    let mut unknown = Vec::new();
    for (&i, answer) in pending.iter().zip(answers) {
        let other = counterparts.get(i).unwrap_or(&Counterpart::None);
        let flow = &flows[i].flow;
        let ip = flow.remote.ip();
        let is_complete = complete(flow);
        // The table's reason, once every claimant reported; more heartbeats
        // never undo a conflict.
        let unless_incomplete = |reason| {
            if is_complete || reason == UnattributedReason::Conflict {
                reason
            } else {
                UnattributedReason::Incomplete
            }
        };
        let side = match (answer, other) {
            // The range and the other end disagree: neither is taken.
            (Ok((workload, _)), Counterpart::Found(w, _)) if w.id != workload.id => {
                Err(UnattributedReason::Conflict)
            }
            (_, Counterpart::Conflict) => Err(UnattributedReason::Conflict),
            // The other end of this very connection answers where no range
            // does, or before every agent has reported.
            (Err(_), Counterpart::Found(w, valid)) => {
                pass.counts.counterpart += 1;
                Ok(by_counterpart(w, *valid))
            }
            (Ok(_), Counterpart::Found(w, valid)) if !is_complete => {
                pass.counts.counterpart += 1;
                Ok(by_counterpart(w, *valid))
            }
            (Ok(_), _) if !is_complete => Err(UnattributedReason::Incomplete),
            (Ok((workload, valid)), _) => {
                pass.counts.heartbeat += 1;
                Ok(Attribution {
                    workload: workload.clone(),
                    source: AttributionSource::Heartbeat,
                    plugin: Arc::default(),
                    valid,
                })
            }
            (Err(UnattributedReason::NotFound), Counterpart::None) => {
                match regions.region_of(ip).filter(|_| forwardable) {
                    Some(region) => {
                        bump(&mut pass.counts.forwarded, region, 1);
                        pass.forward.push((i, region));
                        continue;
                    }
                    None if table.knows(ip) || table.claims().may_be_claimed(ip) => {
                        Err(unless_incomplete(UnattributedReason::NotFound))
                    }
                    None => {
                        unknown.push(i);
                        continue;
                    }
                }
            }
            (Err(reason), Counterpart::None) => Err(unless_incomplete(reason)),
        };
        flows[i].remote = match side {
            Ok(attribution) => Side::Attributed(attribution),
            Err(reason) => {
                pass.counts.unattributed(reason);
                Side::Unattributed(reason)
            }
        };
    }
    resolve_unknown(flows, unknown, resolvers, now_ns, &mut pass.counts);
    pass
}

fn by_counterpart(workload: &Arc<Workload>, valid: TimeRange) -> Attribution {
    Attribution {
        workload: workload.clone(),
        source: AttributionSource::Counterpart,
        plugin: Arc::default(),
        valid,
    }
}

/// Calls `resolver` and checks the answers fit `queries`. A port-scoped
/// answer fails the call: a resolver is asked about an address, and an
/// answer for one port of it would be taken as the address's owner.
pub(crate) fn call_resolver<R: ResolverSource>(
    resolver: &R,
    queries: &[ResolveQuery],
) -> Result<Answers, String> {
    let answers = resolver.resolve(queries)?;
    answers.check_shape(queries.len())?;
    if let Some(i) = (0..queries.len())
        .find(|&i| answers.scope(i) == Some(AnswerScope::Port) || answers.shared_not_found(i))
    {
        return Err(format!(
            "answer {i} is port-scoped, but a resolver answers for whole addresses"
        ));
    }
    Ok(answers)
}

/// Runs the resolver chain over the flows at `indexes`.
fn resolve_unknown<R: ResolverSource>(
    flows: &mut [AttributedFlow],
    mut indexes: Vec<usize>,
    resolvers: &[R],
    now_ns: u64,
    counts: &mut RemoteCounts,
) {
    for resolver in resolvers {
        if indexes.is_empty() {
            break;
        }
        let queries: Vec<ResolveQuery> = indexes
            .iter()
            .map(|&i| ResolveQuery {
                address: flows[i].flow.remote.ip(),
                time_ns: flows[i].flow.start_ns,
                asked_at_ns: now_ns,
            })
            .collect();
        let answers = match call_resolver(resolver, &queries) {
            Ok(answered) => answered,
            Err(error) => {
                tracing::warn!(plugin = resolver.name(), %error, "resolver plugin call failed");
                bump(&mut counts.resolver_failures, resolver.name().to_owned(), 1);
                if resolver.fail_closed() {
                    for &i in &indexes {
                        counts.unattributed(UnattributedReason::PluginFailed);
                        flows[i].remote = Side::Unattributed(UnattributedReason::PluginFailed);
                    }
                    return;
                }
                continue;
            }
        };
        let mut still_unknown = Vec::new();
        let plugin: Arc<str> = resolver.name().into();
        let mut resolved = 0;
        for (q, &i) in indexes.iter().enumerate() {
            match answers.resolve(q) {
                Ok((workload, valid)) => {
                    resolved += 1;
                    flows[i].remote = Side::Attributed(Attribution {
                        workload: Arc::clone(workload),
                        source: AttributionSource::Resolver,
                        plugin: plugin.clone(),
                        valid,
                    });
                }
                Err(UnattributedReason::NotFound) => still_unknown.push(i),
                Err(reason) => {
                    counts.unattributed(reason);
                    flows[i].remote = Side::Unattributed(reason);
                }
            }
        }
        if resolved > 0 {
            bump(&mut counts.resolver, resolver.name().to_owned(), resolved);
        }
        indexes = still_unknown;
    }
    for i in indexes {
        counts.unattributed(UnattributedReason::NotFound);
        flows[i].remote = Side::Unattributed(UnattributedReason::NotFound);
    }
}

#[cfg(test)]
mod tests {
    use flowattr_model::{Answer, Flow, TimeRange, Workload};

    use super::*;
    use crate::ownership::OwnershipConfig;

    const S: u64 = 1_000_000_000;

    struct Fixed {
        name: &'static str,
        fail_closed: bool,
        answer: fn(&ResolveQuery) -> Option<Result<&'static str, UnattributedReason>>,
    }

    impl ResolverSource for Fixed {
        fn name(&self) -> &str {
            self.name
        }
        fn fail_closed(&self) -> bool {
            self.fail_closed
        }
        fn resolve(&self, queries: &[ResolveQuery]) -> Result<Answers, String> {
            let mut out = Answers::default();
            for q in queries {
                match (self.answer)(q) {
                    None => return Err("boom".into()),
                    Some(Ok(id)) => {
                        out.workloads.push(Arc::new(Workload::with_id(id)));
                        out.answers.push(Answer::Attributed {
                            workload: out.workloads.len() as u32 - 1,
                            valid: TimeRange::new(0, 1),
                            scope: Default::default(),
                        });
                    }
                    Some(Err(r)) => out.answers.push(Answer::Unattributed(r)),
                }
            }
            Ok(out)
        }
    }

    fn flow(remote: &str, start_s: u64) -> AttributedFlow {
        AttributedFlow::new(Flow::tcp(
            "10.0.0.1:5000".parse().unwrap(),
            format!("{remote}:443").parse().unwrap(),
            start_s * S,
        ))
    }

    fn table() -> OwnershipTable {
        let mut t = OwnershipTable::new(OwnershipConfig::default());
        t.allow("agent", ["10.0.1.0/24".parse().unwrap()]);
        let w = Arc::new(Workload::with_id("db-1"));
        t.heartbeat(
            "10.0.1.5".parse().unwrap(),
            &w,
            TimeRange::new(100 * S, 200 * S),
            "agent",
            300 * S,
        );
        let other = Arc::new(Workload::with_id("db-2"));
        t.heartbeat(
            "10.0.1.5".parse().unwrap(),
            &other,
            TimeRange::new(150 * S, 250 * S),
            "agent",
            300 * S,
        );
        t
    }

    fn remote(f: &AttributedFlow) -> Result<(&str, AttributionSource), UnattributedReason> {
        match &f.remote {
            Side::Attributed(a) => Ok((a.workload.id.as_str(), a.source)),
            Side::Unattributed(r) => Err(*r),
            Side::Pending => panic!("left pending"),
        }
    }

    fn always(_: &Flow) -> bool {
        true
    }

    /// A pass with every flow complete.
    fn run_pass<R: ResolverSource>(
        flows: &mut [AttributedFlow],
        others: &[Counterpart],
        forwardable: bool,
        table: &OwnershipTable,
        regions: &Regions,
        resolvers: &[R],
    ) -> RemotePass {
        let sources = Sources {
            table,
            regions,
            resolvers,
            complete: &always,
        };
        attribute_remote(flows, others, forwardable, &sources, 300 * S)
    }

    fn eu() -> Regions {
        Regions::new([("eu".to_string(), vec!["10.9.0.0/16".parse().unwrap()])])
    }

    #[test]
    fn table_first_then_region_then_resolvers_then_reason() {
        let table = table();
        let lb = Fixed {
            name: "sonar-legacy",
            fail_closed: false,
            answer: |q| {
                Some(match q.address.to_string().as_str() {
                    "10.0.9.9" => Ok("lb-1"),
                    _ => Err(UnattributedReason::NotFound),
                })
            },
        };
        let mut flows = vec![
            flow("10.0.1.5", 120), // db-1's own range
            flow("10.0.1.5", 170), // both claim it
            flow("10.9.0.3", 120), // another region's
            flow("10.0.9.9", 120), // only the legacy stream knows it
            flow("10.0.7.7", 120), // nobody knows it
        ];
        let pass = run_pass(&mut flows, &[], true, &table, &eu(), &[lb]);
        assert_eq!(
            remote(&flows[0]),
            Ok(("db-1", AttributionSource::Heartbeat))
        );
        assert_eq!(remote(&flows[1]), Err(UnattributedReason::Conflict));
        assert!(matches!(flows[2].remote, Side::Pending));
        assert_eq!(pass.forward, vec![(2, 0)]);
        assert_eq!(remote(&flows[3]), Ok(("lb-1", AttributionSource::Resolver)));
        assert_eq!(remote(&flows[4]), Err(UnattributedReason::NotFound));
        assert_eq!(pass.counts.heartbeat, 1);
        assert_eq!(pass.counts.resolver, vec![("sonar-legacy".to_string(), 1)]);
    }

    #[test]
    fn the_other_end_answers_only_where_no_range_does_and_never_against_one() {
        let table = table();
        let found =
            |id: &str| Counterpart::Found(Arc::new(Workload::with_id(id)), TimeRange::new(0, 1));
        let mut flows = vec![
            flow("10.0.1.5", 99),  // just before db-1's first range
            flow("10.0.1.5", 120), // inside db-1's range, the other end agrees
            flow("10.0.1.5", 121), // inside db-1's range, the other end says otherwise
            flow("10.9.0.3", 120), // another region's, but its other end reported here
            flow("10.0.1.5", 170), // contested range, one answer from the other end
            flow("10.0.7.7", 120), // the other end's reports disagree
        ];
        let others = vec![
            found("db-1"),
            found("db-1"),
            found("db-9"),
            found("eu-api"),
            found("db-2"),
            Counterpart::Conflict,
        ];
        let pass = run_pass::<Fixed>(&mut flows, &others, true, &table, &eu(), &[]);
        assert_eq!(
            remote(&flows[0]),
            Ok(("db-1", AttributionSource::Counterpart))
        );
        assert_eq!(
            remote(&flows[1]),
            Ok(("db-1", AttributionSource::Heartbeat))
        );
        assert_eq!(
            remote(&flows[2]),
            Err(UnattributedReason::Conflict),
            "never against a range"
        );
        assert_eq!(
            remote(&flows[3]),
            Ok(("eu-api", AttributionSource::Counterpart))
        );
        assert!(pass.forward.is_empty(), "answered here: nothing to forward");
        assert_eq!(
            remote(&flows[4]),
            Ok(("db-2", AttributionSource::Counterpart))
        );
        assert_eq!(remote(&flows[5]), Err(UnattributedReason::Conflict));
        assert_eq!((pass.counts.heartbeat, pass.counts.counterpart), (1, 3));
    }

    #[test]
    fn a_resolver_is_not_asked_where_the_table_knows_the_address() {
        let table = table();
        // A resolver that would name a wrong workload for every address.
        let wrong = Fixed {
            name: "legacy",
            fail_closed: false,
            answer: |_| Some(Ok("wrong")),
        };
        // 170 s is contested; 300 s is after the address's last range.
        let mut flows = vec![flow("10.0.1.5", 170), flow("10.0.1.5", 300)];
        let pass = run_pass(&mut flows, &[], true, &table, &Regions::default(), &[wrong]);
        assert_eq!(remote(&flows[0]), Err(UnattributedReason::Conflict));
        assert_eq!(remote(&flows[1]), Err(UnattributedReason::NotFound));
        assert!(pass.counts.resolver.is_empty());
    }

    #[test]
    fn a_resolver_is_not_asked_for_an_address_an_agent_may_claim() {
        let table = table();
        let wrong = Fixed {
            name: "legacy",
            fail_closed: false,
            answer: |_| Some(Ok("wrong")),
        };
        // Inside agent's prefix but never heard of (its owner has not
        // reported yet, or runs no agent); and one nobody may claim.
        let mut flows = vec![flow("10.0.1.77", 120), flow("10.0.9.9", 120)];
        run_pass(&mut flows, &[], true, &table, &Regions::default(), &[wrong]);
        assert_eq!(remote(&flows[0]), Err(UnattributedReason::NotFound));
        assert_eq!(
            remote(&flows[1]),
            Ok(("wrong", AttributionSource::Resolver))
        );
    }

    #[test]
    fn incomplete_flows_take_no_range_but_their_other_end_still_answers() {
        let table = table();
        let found =
            |id: &str| Counterpart::Found(Arc::new(Workload::with_id(id)), TimeRange::new(0, 1));
        let never = |_: &Flow| false;
        let none: [Fixed; 0] = [];
        let sources = Sources {
            table: &table,
            regions: &eu(),
            resolvers: &none,
            complete: &never,
        };
        let mut flows = vec![
            flow("10.0.1.5", 120),  // db-1's range, but not every agent reported
            flow("10.0.1.5", 121),  // the same, and the other end reported it
            flow("10.0.1.5", 170),  // contested whatever comes later
            flow("10.0.1.77", 120), // nobody's yet
            flow("10.9.0.3", 120),  // another region decides for itself
        ];
        let others = vec![
            Counterpart::None,
            found("db-1"),
            Counterpart::None,
            Counterpart::None,
            Counterpart::None,
        ];
        let pass = attribute_remote(&mut flows, &others, true, &sources, 300 * S);
        assert_eq!(remote(&flows[0]), Err(UnattributedReason::Incomplete));
        assert_eq!(
            remote(&flows[1]),
            Ok(("db-1", AttributionSource::Counterpart))
        );
        assert_eq!(remote(&flows[2]), Err(UnattributedReason::Conflict));
        assert_eq!(remote(&flows[3]), Err(UnattributedReason::Incomplete));
        assert_eq!(pass.forward, vec![(4, 0)]);
        assert_eq!((pass.counts.heartbeat, pass.counts.counterpart), (0, 1));
    }

    #[test]
    fn forwarded_flows_are_not_forwarded_again() {
        let table = table();
        let mut flows = vec![flow("10.9.0.3", 120)];
        let pass = run_pass::<Fixed>(&mut flows, &[], false, &table, &eu(), &[]);
        assert!(pass.forward.is_empty());
        assert_eq!(remote(&flows[0]), Err(UnattributedReason::NotFound));
    }

    #[test]
    fn resolver_failures_skip_or_fail_closed() {
        let table = table();
        let broken = |fail_closed| Fixed {
            name: "broken",
            fail_closed,
            answer: |_| None,
        };
        let backup = Fixed {
            name: "backup",
            fail_closed: false,
            answer: |_| Some(Ok("lb-2")),
        };
        let mut flows = vec![flow("10.0.9.9", 120)];
        let pass = run_pass(
            &mut flows,
            &[],
            true,
            &table,
            &Regions::default(),
            &[broken(false), backup],
        );
        assert_eq!(remote(&flows[0]), Ok(("lb-2", AttributionSource::Resolver)));
        assert_eq!(
            pass.counts.resolver_failures,
            vec![("broken".to_string(), 1)]
        );

        let backup = Fixed {
            name: "backup",
            fail_closed: false,
            answer: |_| Some(Ok("lb-2")),
        };
        let mut flows = vec![flow("10.0.9.9", 120)];
        run_pass(
            &mut flows,
            &[],
            true,
            &table,
            &Regions::default(),
            &[broken(true), backup],
        );
        assert_eq!(remote(&flows[0]), Err(UnattributedReason::PluginFailed));
    }

    #[test]
    fn attributed_remote_sides_are_kept_as_they_came() {
        let table = table();
        let mut flows = vec![flow("10.0.1.5", 120)];
        flows[0].remote = Side::Unattributed(UnattributedReason::SourceUnavailable);
        let pass = run_pass::<Fixed>(&mut flows, &[], true, &table, &Regions::default(), &[]);
        assert_eq!(
            remote(&flows[0]),
            Err(UnattributedReason::SourceUnavailable)
        );
        assert_eq!(pass.counts, RemoteCounts::default());
    }

    #[test]
    fn a_port_scoped_resolver_answer_fails_the_call() {
        struct PortScoped;
        impl ResolverSource for PortScoped {
            fn name(&self) -> &str {
                "port-scoped"
            }
            fn fail_closed(&self) -> bool {
                false
            }
            fn resolve(&self, _: &[ResolveQuery]) -> Result<Answers, String> {
                let web = Arc::new(Workload::with_id("c-web"));
                let mut out = flowattr_model::AnswersBuilder::with_capacity(1);
                out.attributed_shared(&web, TimeRange::new(0, 1));
                Ok(out.finish())
            }
        }
        let q = ResolveQuery {
            address: "10.0.0.1".parse().unwrap(),
            time_ns: 0,
            asked_at_ns: 0,
        };
        let err = call_resolver(&PortScoped, &[q]).unwrap_err();
        assert!(err.contains("port-scoped"), "{err}");
    }
}
