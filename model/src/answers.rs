//! Batch answers: one per query, with workloads listed once per batch.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::{TimeRange, UnattributedReason, Workload};

/// The answer to one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Answer {
    /// The workload at this index of [`Answers::workloads`], valid for `valid`.
    Attributed {
        workload: u32,
        valid: TimeRange,
    },
    Unattributed(UnattributedReason),
}

/// Answers to a batch, one per query and in query order. Workloads are listed
/// once and referred to by index, so the answer to a large batch from a few
/// workloads stays small.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Answers {
    pub workloads: Vec<Workload>,
    pub answers: Vec<Answer>,
}

impl Answers {
    /// The workload and validity of answer `i`, or the reason there is none.
    ///
    /// An index outside the workload table (a buggy plugin) reads as
    /// [`UnattributedReason::PluginFailed`], never as some other workload.
    pub fn resolve(&self, i: usize) -> Result<(&Workload, TimeRange), UnattributedReason> {
        match self.answers.get(i) {
            Some(Answer::Attributed { workload, valid }) => self
                .workloads
                .get(*workload as usize)
                .map(|w| (w, *valid))
                .ok_or(UnattributedReason::PluginFailed),
            Some(Answer::Unattributed(reason)) => Err(*reason),
            None => Err(UnattributedReason::PluginFailed),
        }
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

type FastMap<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;

/// Builds [`Answers`], listing each distinct workload id once.
///
/// Plugins usually answer from workloads they keep, so the same `&Workload`
/// comes back many times in a batch: the builder first looks the reference's
/// address up (an integer hash), then confirms by comparing ids, and only
/// hashes the id string for a workload it has not seen at that address. The
/// id comparison keeps this correct when an address is reused for another
/// workload.
#[derive(Debug, Default)]
pub struct AnswersBuilder {
    answers: Answers,
    by_id: FastMap<String, u32>,
    by_address: FastMap<usize, u32>,
}

impl AnswersBuilder {
    /// A builder with room for `n` answers.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            answers: Answers {
                workloads: Vec::new(),
                answers: Vec::with_capacity(n),
            },
            by_id: FastMap::default(),
            by_address: FastMap::default(),
        }
    }

    /// Appends an attributed answer. Workloads are told apart by id: answers
    /// naming the same id share the first one's attributes.
    #[inline]
    pub fn attributed(&mut self, workload: &Workload, valid: TimeRange) {
        let address = workload as *const Workload as usize;
        let hinted = self
            .by_address
            .get(&address)
            .copied()
            .filter(|&i| self.answers.workloads[i as usize].id == workload.id);
        let idx = match hinted {
            Some(i) => i,
            None => {
                let i = match self.by_id.get(workload.id.as_str()) {
                    Some(&i) => i,
                    None => {
                        let i = self.answers.workloads.len() as u32;
                        self.answers.workloads.push(workload.clone());
                        self.by_id.insert(workload.id.clone(), i);
                        i
                    }
                };
                self.by_address.insert(address, i);
                i
            }
        };
        self.answers.answers.push(Answer::Attributed {
            workload: idx,
            valid,
        });
    }

    /// Appends an unattributed answer.
    #[inline]
    pub fn unattributed(&mut self, reason: UnattributedReason) {
        self.answers.answers.push(Answer::Unattributed(reason));
    }

    /// The finished answers.
    pub fn finish(self) -> Answers {
        self.answers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_lists_each_workload_once() {
        let a = Workload::with_id("a");
        let b = Workload::with_id("b");
        let mut builder = AnswersBuilder::default();
        builder.attributed(&a, TimeRange::since(1));
        builder.unattributed(UnattributedReason::NotFound);
        builder.attributed(&b, TimeRange::since(2));
        builder.attributed(&a, TimeRange::since(3));
        let answers = builder.finish();
        assert_eq!(answers.workloads, vec![a.clone(), b]);
        assert_eq!(answers.resolve(3).unwrap(), (&a, TimeRange::since(3)));
        assert_eq!(answers.resolve(1), Err(UnattributedReason::NotFound));
        assert!(answers.check_shape(4).is_ok());
        assert!(answers.check_shape(3).is_err());
    }

    #[test]
    fn a_reused_address_never_returns_the_previous_workload() {
        let mut builder = AnswersBuilder::default();
        for id in ["a", "b", "c"] {
            // Each temporary may live at the same address as the last one.
            let w = Workload::with_id(id);
            builder.attributed(&w, TimeRange::since(0));
        }
        let answers = builder.finish();
        let ids: Vec<_> = (0..3)
            .map(|i| answers.resolve(i).unwrap().0.id.clone())
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[test]
    fn out_of_table_index_is_a_plugin_failure_not_a_workload() {
        let answers = Answers {
            workloads: vec![Workload::with_id("a")],
            answers: vec![Answer::Attributed {
                workload: 7,
                valid: TimeRange::since(0),
            }],
        };
        assert_eq!(answers.resolve(0), Err(UnattributedReason::PluginFailed));
        assert!(answers.check_shape(1).unwrap_err().contains("workload 7"));
    }
}
