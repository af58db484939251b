//! Policy plugins on attributed flows: keep, drop, sample or redact, in
//! chain order. A failed call lets the batch through unchanged (`on_failure
//! = "skip"`) or drops it (`"fail-closed"`); both are counted.

use std::sync::Arc;

use crate::Plugin;
use flowattr_model::{AttributedFlow, Verdict};

/// One policy in the chain. [`Plugin`] is the real one.
pub trait PolicySource {
    fn name(&self) -> &str;
    /// A failed call drops the batch instead of letting it through.
    fn fail_closed(&self) -> bool;
    /// One verdict per flow, in order.
    fn decide(&self, flows: &[AttributedFlow]) -> Result<Vec<Verdict>, String>;
}

impl PolicySource for Arc<Plugin> {
    fn name(&self) -> &str {
        Plugin::name(self)
    }

    fn fail_closed(&self) -> bool {
        self.fails_closed()
    }

    fn decide(&self, flows: &[AttributedFlow]) -> Result<Vec<Verdict>, String> {
        Plugin::decide(self, flows).map_err(|e| e.to_string())
    }
}

impl<T: PolicySource + ?Sized> PolicySource for &T {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn fail_closed(&self) -> bool {
        (**self).fail_closed()
    }
    fn decide(&self, flows: &[AttributedFlow]) -> Result<Vec<Verdict>, String> {
        (**self).decide(flows)
    }
}

/// Why flows left the pipeline at the policy stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDrop {
    /// A policy said drop.
    Dropped,
    /// A fail-closed policy's call failed.
    Failed,
}

/// Runs `flows` through `chain`; `dropped(plugin, reason, n)` hears of every
/// flow removed, `failed(plugin)` of every failed call.
pub fn apply<S: PolicySource>(
    mut flows: Vec<AttributedFlow>,
    chain: &[S],
    mut dropped: impl FnMut(&str, PolicyDrop, u64),
) -> Vec<AttributedFlow> {
    for policy in chain {
        if flows.is_empty() {
            break;
        }
        let verdicts = match policy.decide(&flows) {
            Ok(v) if v.len() == flows.len() => v,
            outcome => {
                let why = match outcome {
                    Ok(v) => format!("{} verdicts for {} flows", v.len(), flows.len()),
                    Err(e) => e,
                };
                tracing::warn!(plugin = policy.name(), error = %why, "policy plugin call failed");
                if policy.fail_closed() {
                    dropped(policy.name(), PolicyDrop::Failed, flows.len() as u64);
                    flows.clear();
                }
                continue;
            }
        };
        let before = flows.len();
        let mut verdicts = verdicts.into_iter();
        flows.retain_mut(|f| f.apply(verdicts.next().unwrap_or(Verdict::Keep)));
        if flows.len() < before {
            dropped(
                policy.name(),
                PolicyDrop::Dropped,
                (before - flows.len()) as u64,
            );
        }
    }
    flows
}

#[cfg(test)]
mod tests {
    use flowattr_model::{Flow, Redactions};

    use super::*;

    struct Fake<F>(&'static str, bool, F);

    impl<F: Fn(&AttributedFlow) -> Option<Verdict>> PolicySource for Fake<F> {
        fn name(&self) -> &str {
            self.0
        }
        fn fail_closed(&self) -> bool {
            self.1
        }
        fn decide(&self, flows: &[AttributedFlow]) -> Result<Vec<Verdict>, String> {
            flows
                .iter()
                .map(|f| (self.2)(f).ok_or_else(|| "boom".to_owned()))
                .collect()
        }
    }

    fn flows(ports: &[u16]) -> Vec<AttributedFlow> {
        ports
            .iter()
            .map(|&p| {
                let local = format!("10.0.0.1:{p}").parse().unwrap();
                let mut flow = Flow::tcp(local, "10.0.0.2:80".parse().unwrap(), 1);
                flow.pid = 7;
                AttributedFlow::new(flow)
            })
            .collect()
    }

    #[test]
    fn verdicts_apply_in_chain_order_and_drops_are_counted() {
        let drop_22 = Fake("no-ssh", false, |f: &AttributedFlow| {
            Some(if f.flow.local.port() == 22 {
                Verdict::Drop
            } else {
                Verdict::Keep
            })
        });
        let redact = Fake("redact", false, |_: &AttributedFlow| {
            Some(Verdict::Redact(Redactions {
                process: true,
                ..Redactions::default()
            }))
        });
        let mut drops = Vec::new();
        let out = apply(
            flows(&[22, 443, 22]),
            &[&drop_22 as &dyn PolicySource, &redact],
            |p, r, n| drops.push((p.to_owned(), r, n)),
        );
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].flow.local.port(), out[0].flow.pid), (443, 0));
        assert_eq!(drops, [("no-ssh".to_owned(), PolicyDrop::Dropped, 2)]);
    }

    #[test]
    fn failed_policy_skips_or_drops_everything() {
        let broken = Fake("broken", false, |_: &AttributedFlow| None);
        let out = apply(
            flows(&[1, 2]),
            &[&broken as &dyn PolicySource],
            |_, _, _| panic!("nothing dropped"),
        );
        assert_eq!(out.len(), 2);

        let closed = Fake("closed", true, |_: &AttributedFlow| None);
        let mut drops = Vec::new();
        let out = apply(
            flows(&[1, 2]),
            &[&closed as &dyn PolicySource],
            |p, r, n| drops.push((p.to_owned(), r, n)),
        );
        assert!(out.is_empty());
        assert_eq!(drops, [("closed".to_owned(), PolicyDrop::Failed, 2)]);
    }
}
