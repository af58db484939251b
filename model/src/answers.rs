//! Batch answers: one per query, with workloads listed once per batch.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{FastMap, TimeRange, UnattributedReason, Workload};

/// What an attributed identity answer holds for: the queried local
/// endpoint's whole address, or its port only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AnswerScope {
    /// The workload held the whole address for the answer's validity: the
    /// agent records the side as [`AttributionSource::Capture`], which the
    /// collector takes as a heartbeat for the address.
    ///
    /// [`AttributionSource::Capture`]: crate::AttributionSource::Capture
    #[default]
    Address,
    /// The address is one several workloads use at once, told apart by
    /// port (a node's IPv4 address shared by its IPv6-only containers): the
    /// workload made this connection but does not own the address. The
    /// agent records the side as [`AttributionSource::CaptureShared`],
    /// never a claim on the address.
    ///
    /// [`AttributionSource::CaptureShared`]: crate::AttributionSource::CaptureShared
    Port,
}

/// Why an identity lookup has no workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// Unattributed for this reason (`not-found` passes the query on).
    Reason(UnattributedReason),
    /// Not found, on an address several workloads share by port (a port
    /// nobody holds: the host's own traffic). The query passes on, and a
    /// later plugin's answer holds for the port only.
    NotFoundShared,
}

impl From<UnattributedReason> for Unanswered {
    fn from(reason: UnattributedReason) -> Self {
        Self::Reason(reason)
    }
}

/// The answer to one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Answer {
    /// The workload at this index of [`Answers::workloads`], valid for
    /// `valid`, for the whole address or (`scope` [`AnswerScope::Port`])
    /// the queried endpoint's port only. Resolver answers are always
    /// address-scoped.
    Attributed {
        workload: u32,
        valid: TimeRange,
        #[serde(default)]
        scope: AnswerScope,
    },
    Unattributed(UnattributedReason),
    /// `not-found` on an address several workloads share by port, at a
    /// port nobody holds (a node's own traffic on the address it shares
    /// with its containers): the next plugins are asked, and whatever they
    /// answer holds for the port only, never for the address.
    NotFoundShared,
}

/// Answers to a batch, one per query and in query order. Workloads are listed
/// once and referred to by index, so the answer to a large batch from a few
/// workloads stays small; they are shared, so callers keep them without
/// copying.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Answers {
    pub workloads: Vec<Arc<Workload>>,
    pub answers: Vec<Answer>,
}

impl Answers {
    /// The workload and validity of answer `i`, or the reason there is none.
    ///
    /// An index outside the workload table (a buggy plugin) reads as
    /// [`UnattributedReason::PluginFailed`], never as some other workload.
    pub fn resolve(&self, i: usize) -> Result<(&Arc<Workload>, TimeRange), UnattributedReason> {
        match self.answers.get(i) {
            Some(Answer::Attributed {
                workload, valid, ..
            }) => self
                .workloads
                .get(*workload as usize)
                .map(|w| (w, *valid))
                .ok_or(UnattributedReason::PluginFailed),
            Some(Answer::Unattributed(reason)) => Err(*reason),
            Some(Answer::NotFoundShared) => Err(UnattributedReason::NotFound),
            None => Err(UnattributedReason::PluginFailed),
        }
    }

    /// The scope of answer `i` if it is attributed.
    pub fn scope(&self, i: usize) -> Option<AnswerScope> {
        match self.answers.get(i)? {
            Answer::Attributed { scope, .. } => Some(*scope),
            Answer::Unattributed(_) | Answer::NotFoundShared => None,
        }
    }

    /// Whether answer `i` is [`Answer::NotFoundShared`]: not found, on an
    /// address shared by port.
    pub fn shared_not_found(&self, i: usize) -> bool {
        matches!(self.answers.get(i), Some(Answer::NotFoundShared))
    }

    /// Checks the answers fit a batch of `queries` queries: one answer per
    /// query and every workload index inside the table.
    pub fn check_shape(&self, queries: usize) -> Result<(), String> {
        if self.answers.len() != queries {
            return Err(format!(
                "returned {} answers for {} queries",
                self.answers.len(),
                queries
            ));
        }
        for (i, a) in self.answers.iter().enumerate() {
            if let Answer::Attributed { workload, .. } = a
                && *workload as usize >= self.workloads.len()
            {
                return Err(format!(
                    "answer {i} refers to workload {workload} of {}",
                    self.workloads.len()
                ));
            }
        }
        Ok(())
    }
}

/// How many distinct workloads [`AnswersBuilder::with_capacity`] makes room
/// for before its indexes grow.
const PRESIZED_WORKLOADS: usize = 64;

/// Builds [`Answers`], listing each distinct workload id once.
///
/// Plugins answer from workloads they keep (as `Arc`s), so the same workload
/// comes back many times in a batch. The builder borrows each one for its own
/// lifetime, so no two live workloads share an address: a workload seen
/// before is found by its address alone (an integer hash, no string compare),
/// and only a workload not seen yet is looked up by id. The answers share the
/// plugin's workloads: nothing is copied.
#[derive(Debug, Default)]
pub struct AnswersBuilder<'a> {
    answers: Vec<Answer>,
    workloads: Vec<&'a Arc<Workload>>,
    by_id: FastMap<&'a str, u32>,
    by_address: FastMap<usize, u32>,
}

impl<'a> AnswersBuilder<'a> {
    /// A builder with room for `n` answers and for up to 64 of their
    /// workloads, so a batch naming a few dozen never grows its indexes.
    pub fn with_capacity(n: usize) -> Self {
        let workloads = n.min(PRESIZED_WORKLOADS);
        Self {
            answers: Vec::with_capacity(n),
            workloads: Vec::with_capacity(workloads),
            by_id: FastMap::with_capacity_and_hasher(workloads, Default::default()),
            by_address: FastMap::with_capacity_and_hasher(workloads, Default::default()),
        }
    }

    /// Appends an attributed answer for the queried endpoint's whole
    /// address ([`AnswerScope::Address`]): `workload` held the address for
    /// `valid`. Workloads are told apart by id: answers naming the same id
    /// share the first one's attributes.
    #[inline]
    pub fn attributed(&mut self, workload: &'a Arc<Workload>, valid: TimeRange) {
        self.attributed_scoped(workload, valid, AnswerScope::Address);
    }

    /// Appends an attributed answer that holds for the queried endpoint's
    /// port only ([`AnswerScope::Port`]): the address is shared by several
    /// workloads at once, and `workload` is the one holding this port for
    /// `valid`.
    #[inline]
    pub fn attributed_shared(&mut self, workload: &'a Arc<Workload>, valid: TimeRange) {
        self.attributed_scoped(workload, valid, AnswerScope::Port);
    }

    /// Appends an attributed answer of the given scope.
    #[inline]
    pub fn attributed_scoped(
        &mut self,
        workload: &'a Arc<Workload>,
        valid: TimeRange,
        scope: AnswerScope,
    ) {
        let address = Arc::as_ptr(workload) as usize;
        let idx = match self.by_address.get(&address) {
            Some(&i) => i,
            None => {
                let i = *self.by_id.entry(workload.id.as_str()).or_insert_with(|| {
                    self.workloads.push(workload);
                    self.workloads.len() as u32 - 1
                });
                self.by_address.insert(address, i);
                i
            }
        };
        self.answers.push(Answer::Attributed {
            workload: idx,
            valid,
            scope,
        });
    }

    /// Appends an unattributed answer.
    #[inline]
    pub fn unattributed(&mut self, reason: UnattributedReason) {
        self.answers.push(Answer::Unattributed(reason));
    }

    /// Appends [`Answer::NotFoundShared`]: not found, on an address shared
    /// by port, so a later plugin's answer holds for the port only.
    #[inline]
    pub fn not_found_shared(&mut self) {
        self.answers.push(Answer::NotFoundShared);
    }

    /// The finished answers.
    pub fn finish(self) -> Answers {
        Answers {
            workloads: self.workloads.into_iter().cloned().collect(),
            answers: self.answers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_lists_each_workload_once() {
        let a = Arc::new(Workload::with_id("a"));
        let b = Arc::new(Workload::with_id("b"));
        let mut builder = AnswersBuilder::default();
        builder.attributed(&a, TimeRange::since(1));
        builder.unattributed(UnattributedReason::NotFound);
        builder.attributed(&b, TimeRange::since(2));
        builder.attributed_shared(&a, TimeRange::since(3));
        let answers = builder.finish();
        assert_eq!(answers.workloads, [a.clone(), b]);
        assert_eq!(answers.resolve(3).unwrap(), (&a, TimeRange::since(3)));
        assert_eq!(answers.resolve(1), Err(UnattributedReason::NotFound));
        assert!(answers.check_shape(4).is_ok());
        assert!(answers.check_shape(3).is_err());
        let scopes: Vec<_> = (0..5).map(|i| answers.scope(i)).collect();
        assert_eq!(
            scopes,
            [
                Some(AnswerScope::Address),
                None,
                Some(AnswerScope::Address),
                Some(AnswerScope::Port),
                None
            ]
        );
    }

    #[test]
    fn distinct_workloads_with_one_id_share_the_first() {
        let first = Arc::new(Workload {
            app: Some("api".into()),
            ..Workload::with_id("a")
        });
        let again = Arc::new(Workload::with_id("a"));
        let mut builder = AnswersBuilder::default();
        builder.attributed(&first, TimeRange::since(0));
        builder.attributed(&again, TimeRange::since(1));
        let answers = builder.finish();
        assert_eq!(answers.workloads, std::slice::from_ref(&first));
        assert_eq!(answers.resolve(1).unwrap().0, &first);
    }

    #[test]
    fn out_of_table_index_is_a_plugin_failure_not_a_workload() {
        let answers = Answers {
            workloads: vec![Arc::new(Workload::with_id("a"))],
            answers: vec![Answer::Attributed {
                workload: 7,
                valid: TimeRange::since(0),
                scope: AnswerScope::Address,
            }],
        };
        assert_eq!(answers.resolve(0), Err(UnattributedReason::PluginFailed));
        assert!(answers.check_shape(1).unwrap_err().contains("workload 7"));
    }
}
