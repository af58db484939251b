//! A/B comparison inside the collector: the first `shadow` resolver (the
//! legacy attributor) answers every flow this collector attributes, beside
//! the heartbeat method, and both answers go to a [`Comparison`]. Shadow
//! answers never change a flow. The shadow is asked once the legacy
//! method's own hold has passed since the flow's start (`[ab]
//! shadow_hold`), or at release if that is sooner.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::Path,
    sync::Arc,
};

use flowattr_ab::{AttributionPath, Compared, Outcome};
use flowattr_model::{AttributedFlow, ResolveQuery, UnattributedReason};

use crate::remote::{ResolverSource, call_resolver};

/// Where compared flows go: a records file, or the simulator's tally.
pub trait Comparison: Send {
    fn record(&mut self, compared: Vec<Compared>);
}

/// What `shadow` answers for each flow's remote address at the flow's start,
/// asked at `now_ns`. A failed call answers `plugin-failed` for all of them.
pub fn shadow_outcomes<R: ResolverSource>(
    flows: &[Compared],
    shadow: &R,
    now_ns: u64,
) -> Vec<Outcome> {
    let queries: Vec<ResolveQuery> = flows
        .iter()
        .map(|f| ResolveQuery {
            address: f.remote.ip(),
            time_ns: f.start_ns,
            asked_at_ns: now_ns,
        })
        .collect();
    let answers = match call_resolver(shadow, &queries) {
        Ok(answered) => answered,
        Err(error) => {
            tracing::warn!(plugin = shadow.name(), %error, "shadow resolver call failed");
            return vec![Outcome::Unattributed(UnattributedReason::PluginFailed); flows.len()];
        }
    };
    (0..flows.len())
        .map(|q| match answers.resolve(q) {
            Ok((workload, _)) => Outcome::Attributed(Arc::clone(workload)),
            Err(reason) => Outcome::Unattributed(reason),
        })
        .collect()
}

/// Each flow's remote side as the heartbeat method answered it, and by
/// which path, waiting for the shadow's answer (`legacy` is `not-found`
/// until [`with_shadow`] fills it).
pub fn compared(flows: &[AttributedFlow]) -> Vec<Compared> {
    flows
        .iter()
        .map(|f| Compared {
            start_ns: f.flow.start_ns,
            local: match &f.local {
                flowattr_model::Side::Attributed(a) => Some(a.workload.clone()),
                _ => None,
            },
            local_endpoint: Some(f.flow.local),
            remote: f.flow.remote,
            initiator: f.flow.initiator,
            heartbeat: Outcome::of(&f.remote),
            heartbeat_path: AttributionPath::of(&f.remote),
            legacy: Outcome::Unattributed(UnattributedReason::NotFound),
        })
        .collect()
}

/// Fills in the shadow's answers, in order.
pub fn with_shadow(mut compared: Vec<Compared>, shadow: Vec<Outcome>) -> Vec<Compared> {
    for (c, legacy) in compared.iter_mut().zip(shadow) {
        c.legacy = legacy;
    }
    compared
}

/// Compared flows as JSON lines in a file (`[ab] records`), for
/// `flowattr ab`.
pub struct RecordsFile {
    out: BufWriter<File>,
}

impl RecordsFile {
    /// Appends to `path`, creating it.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = File::options().create(true).append(true).open(path)?;
        Ok(Self {
            out: BufWriter::new(file),
        })
    }
}

impl Comparison for RecordsFile {
    fn record(&mut self, compared: Vec<Compared>) {
        let result = compared.iter().try_for_each(|c| {
            serde_json::to_writer(&mut self.out, c)?;
            self.out.write_all(b"\n").map_err(serde_json::Error::io)
        });
        if let Err(error) = result.and_then(|()| self.out.flush().map_err(serde_json::Error::io)) {
            tracing::error!(%error, "writing A/B records failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowattr_model::{Answers, AnswersBuilder, Flow, TimeRange, Workload};

    struct Fixed(Result<Answers, String>);

    impl ResolverSource for Fixed {
        fn name(&self) -> &str {
            "legacy"
        }
        fn fail_closed(&self) -> bool {
            false
        }
        fn resolve(&self, _: &[ResolveQuery]) -> Result<Answers, String> {
            self.0.clone()
        }
    }

    fn flows() -> Vec<AttributedFlow> {
        ["10.0.0.1:80", "10.0.0.2:80"]
            .iter()
            .map(|r| {
                AttributedFlow::new(Flow::tcp(
                    "10.1.0.1:5000".parse().unwrap(),
                    r.parse().unwrap(),
                    7,
                ))
            })
            .collect()
    }

    #[test]
    fn shadow_answers_are_paired_with_each_flow() {
        let old_owner = std::sync::Arc::new(Workload::with_id("old-owner"));
        let mut b = AnswersBuilder::with_capacity(2);
        b.attributed(&old_owner, TimeRange::new(0, 10));
        b.unattributed(UnattributedReason::NotFound);
        let pending = compared(&flows());
        let out = shadow_outcomes(&pending, &Fixed(Ok(b.finish())), 10);
        assert_eq!(out[0].workload().unwrap().id, "old-owner");
        assert_eq!(out[1], Outcome::Unattributed(UnattributedReason::NotFound));
        let compared = with_shadow(pending, out);
        assert_eq!(compared[0].legacy.workload().unwrap().id, "old-owner");
        assert_eq!(compared[1].remote, "10.0.0.2:80".parse().unwrap());
        assert_eq!(
            compared[0].heartbeat,
            Outcome::Unattributed(UnattributedReason::NotFound)
        );
        assert_eq!(compared[0].start_ns, 7);
        assert_eq!(compared[0].heartbeat_path, None, "unattributed: no path");
        assert_eq!(
            compared[0].local_endpoint,
            Some("10.1.0.1:5000".parse().unwrap())
        );
    }

    #[test]
    fn the_heartbeat_answer_keeps_its_path() {
        let mut flows = flows();
        flows[0].remote = flowattr_model::Side::Attributed(flowattr_model::Attribution {
            workload: Arc::new(Workload::with_id("lb-1")),
            source: flowattr_model::AttributionSource::Resolver,
            plugin: "sonar-legacy".into(),
            valid: TimeRange::new(0, 10),
        });
        let out = compared(&flows);
        let path = out[0].heartbeat_path.as_ref().expect("attributed");
        assert_eq!(path.label(), "resolver:sonar-legacy");
        assert_eq!(out[0].heartbeat.workload().unwrap().id, "lb-1");
    }

    #[test]
    fn a_failed_or_misshapen_shadow_call_answers_plugin_failed() {
        let failed = shadow_outcomes(&compared(&flows()), &Fixed(Err("trap".into())), 10);
        let short = shadow_outcomes(
            &compared(&flows()),
            &Fixed(Ok(AnswersBuilder::with_capacity(0).finish())),
            10,
        );
        for out in [failed, short] {
            assert_eq!(
                out,
                vec![Outcome::Unattributed(UnattributedReason::PluginFailed); 2]
            );
        }
    }
}
