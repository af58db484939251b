//! The per-instance workload table behind `answers` (see the WIT): a plugin
//! instance sends each workload once, and its answers refer to the table by
//! index, so a batch from workloads seen before carries none.
//!
//! [`SentWorkloads`] is the plugin's side (which workloads went out, at which
//! index); [`WorkloadTable`] is the host's copy. Both start empty with a new
//! instance. The plugin says how many entries to keep before its new ones,
//! so a host that missed an update sees the mismatch instead of reading a
//! wrong workload at some index.

use std::sync::Arc;

use super::{AnswerColumns, reason_code, reason_of_code, same_lengths, scope_of_code};
use crate::{Answer, AnswerScope, Answers, FastMap, TimeRange, UnattributedReason, Workload};

/// The most workloads one instance's table holds.
pub const WORKLOAD_TABLE_CAPACITY: usize = 65_536;

/// Marks a table entry no answer of the current batch has named yet.
const UNLISTED: u32 = u32::MAX;

/// What one batch's answers change in the table: keep the first `keep`
/// entries, then append `new`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableUpdate {
    pub keep: u32,
    pub new: Vec<Arc<Workload>>,
}

/// The plugin's side: the workloads this instance has sent.
///
/// A workload is found by its `Arc`'s address, which is safe across batches
/// because the table holds that `Arc`: the allocation cannot be freed and
/// reused for another workload while its address is a key. A different
/// `Arc` with the same id is compared by content, and takes the old one's
/// place when equal.
#[derive(Debug, Default)]
pub struct SentWorkloads {
    sent: Vec<Arc<Workload>>,
    by_address: FastMap<usize, u32>,
    by_id: FastMap<String, u32>,
}

impl SentWorkloads {
    /// Rewrites `columns` (workload indices into `columns.workloads`) to
    /// index the table, and returns the update the host must apply first.
    /// `columns.workloads` is left empty: the new ones move into the update.
    ///
    /// A workload is sent again when its attributes changed since it was
    /// last sent (same id, new entry). When the table would outgrow
    /// [`WORKLOAD_TABLE_CAPACITY`] it starts over (`keep` 0).
    pub fn send(&mut self, columns: &mut AnswerColumns) -> TableUpdate {
        let batch = std::mem::take(&mut columns.workloads);
        let known: Vec<Option<u32>> = batch.iter().map(|w| self.index_of(w)).collect();
        let unsent = known.iter().filter(|k| k.is_none()).count();
        let starts_over = self.sent.len() + unsent > WORKLOAD_TABLE_CAPACITY;
        if starts_over {
            self.sent.clear();
            self.by_address.clear();
            self.by_id.clear();
        }
        let keep = self.sent.len() as u32;
        let mut new = Vec::new();
        let table_index: Vec<u32> = batch
            .into_iter()
            .zip(known)
            .map(|(w, known)| match known.filter(|_| !starts_over) {
                Some(i) => i,
                None => {
                    let i = self.sent.len() as u32;
                    self.by_address.insert(address(&w), i);
                    self.by_id.insert(w.id.clone(), i);
                    self.sent.push(w.clone());
                    new.push(w);
                    i
                }
            })
            .collect();
        for (w, &status) in columns.workload.iter_mut().zip(&columns.status) {
            if status == 0 {
                // An index outside the batch's list (answers built by hand)
                // stays outside the table, for the host to refuse.
                *w = table_index.get(*w as usize).copied().unwrap_or(u32::MAX);
            }
        }
        TableUpdate { keep, new }
    }

    /// The table index of `w` if it was sent with these exact attributes.
    fn index_of(&mut self, w: &Arc<Workload>) -> Option<u32> {
        if let Some(&i) = self.by_address.get(&address(w)) {
            return Some(i);
        }
        let &i = self.by_id.get(&w.id)?;
        let sent = &mut self.sent[i as usize];
        if **sent != **w {
            return None;
        }
        // The same workload in another allocation: hold this one instead.
        self.by_address.remove(&address(sent));
        self.by_address.insert(address(w), i);
        *sent = w.clone();
        Some(i)
    }
}

fn address(w: &Arc<Workload>) -> usize {
    Arc::as_ptr(w) as usize
}

/// A table update the host cannot apply: the plugin and the host no longer
/// agree on the table, so no answer of this instance can be trusted until it
/// is rebuilt.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TableMismatch(pub String);

/// The host's copy of one instance's table.
#[derive(Debug, Default)]
pub struct WorkloadTable {
    entries: Vec<Arc<Workload>>,
    /// Scratch for [`answers`](Self::answers): entry → its index in the
    /// batch's workload list, [`UNLISTED`] between batches.
    listed_as: Vec<u32>,
}

impl WorkloadTable {
    /// Applies a batch's update; on a mismatch the table is left as it was.
    pub fn apply(
        &mut self,
        keep: u32,
        new: impl ExactSizeIterator<Item = Workload>,
    ) -> Result<(), TableMismatch> {
        let keep = keep as usize;
        if keep > self.entries.len() {
            return Err(TableMismatch(format!(
                "keeps {keep} workload table entries, but the table has {}",
                self.entries.len()
            )));
        }
        if keep + new.len() > WORKLOAD_TABLE_CAPACITY {
            return Err(TableMismatch(format!(
                "would grow the workload table to {} entries, past its {WORKLOAD_TABLE_CAPACITY}",
                keep + new.len()
            )));
        }
        self.entries.truncate(keep);
        self.entries.extend(new.map(Arc::new));
        self.listed_as.resize(self.entries.len(), UNLISTED);
        Ok(())
    }

    /// Turns columns whose workload indices point into the table into
    /// [`Answers`] listing the entries they name (`columns.workloads` is
    /// ignored). Ragged columns, an unknown status, a `port_scoped` other
    /// than 0 or 1 (or 1 on an unattributed answer other than `not-found`),
    /// or an index outside the table are an error.
    pub fn answers(&mut self, columns: AnswerColumns) -> Result<Answers, String> {
        let n = columns.status.len();
        let lens = [
            columns.workload.len(),
            columns.valid_start_ns.len(),
            columns.valid_end_ns.len(),
            columns.port_scoped.len(),
        ];
        same_lengths(n, &lens, "answers")?;
        let mut listed = Vec::new();
        let answers = self.read(&columns, &mut listed);
        // The entries named so far, and the scratch clean for the next batch
        // whether or not every answer was good.
        let workloads = listed
            .into_iter()
            .map(|entry| {
                self.listed_as[entry as usize] = UNLISTED;
                self.entries[entry as usize].clone()
            })
            .collect();
        Ok(Answers {
            workloads,
            answers: answers?,
        })
    }

    /// The answers of `columns` (of one length), each attributed one
    /// pointing into `listed`, the table entries in the order first named.
    fn read(
        &mut self,
        columns: &AnswerColumns,
        listed: &mut Vec<u32>,
    ) -> Result<Vec<Answer>, String> {
        let rows = columns
            .status
            .iter()
            .zip(&columns.workload)
            .zip(columns.valid_start_ns.iter().zip(&columns.valid_end_ns))
            .zip(&columns.port_scoped);
        let mut answers = Vec::with_capacity(columns.status.len());
        for (i, (((&status, &entry), (&start_ns, &end_ns)), &port_scoped)) in rows.enumerate() {
            let scope = scope_of_code(port_scoped).ok_or_else(|| {
                format!("answer {i} has port-scoped {port_scoped}, which is neither 0 nor 1")
            })?;
            let not_found = reason_code(UnattributedReason::NotFound);
            if status != 0 && status != not_found && scope != AnswerScope::Address {
                return Err(format!(
                    "answer {i} is port-scoped but neither attributed nor not-found (status {status})"
                ));
            }
            answers.push(if status == 0 {
                let slot = self.listed_as.get_mut(entry as usize).ok_or_else(|| {
                    format!(
                        "answer {i} refers to workload {entry} of a table of {}",
                        self.entries.len()
                    )
                })?;
                if *slot == UNLISTED {
                    *slot = listed.len() as u32;
                    listed.push(entry);
                }
                Answer::Attributed {
                    workload: *slot,
                    valid: TimeRange::new(start_ns, end_ns),
                    scope,
                }
            } else if scope == AnswerScope::Port {
                Answer::NotFoundShared
            } else {
                Answer::Unattributed(
                    reason_of_code(status).ok_or_else(|| {
                        format!("answer {i} has status {status}, which is no status")
                    })?,
                )
            });
        }
        Ok(answers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AnswersBuilder, UnattributedReason};

    fn workload(id: &str, app: &str) -> Arc<Workload> {
        Arc::new(Workload {
            app: Some(app.into()),
            ..Workload::with_id(id)
        })
    }

    /// What crosses the boundary for `answers`, and what the host makes of it.
    fn cross(
        plugin: &mut SentWorkloads,
        host: &mut WorkloadTable,
        answers: Answers,
    ) -> (TableUpdate, Answers) {
        let mut columns = AnswerColumns::from(answers);
        let update = plugin.send(&mut columns);
        host.apply(update.keep, update.new.iter().map(|w| (**w).clone()))
            .unwrap();
        (update, host.answers(columns).unwrap())
    }

    /// A not-found answer, then one for each workload: every third one
    /// port-scoped.
    fn batch(workloads: &[&Arc<Workload>]) -> Answers {
        let mut b = AnswersBuilder::with_capacity(workloads.len() + 1);
        b.unattributed(UnattributedReason::NotFound);
        for (i, w) in workloads.iter().enumerate() {
            if i % 3 == 2 {
                b.attributed_shared(w, TimeRange::since(i as u64));
            } else {
                b.attributed(w, TimeRange::since(i as u64));
            }
        }
        b.finish()
    }

    #[test]
    fn workloads_cross_once_and_answers_resolve_to_them() {
        let (a, b) = (workload("a", "web"), workload("b", "db"));
        let (mut plugin, mut host) = (SentWorkloads::default(), WorkloadTable::default());

        let first = batch(&[&a, &b, &a]);
        let (update, got) = cross(&mut plugin, &mut host, first.clone());
        assert_eq!((update.keep, update.new.len()), (0, 2));
        assert_eq!(got, first);
        // The scope crosses with each answer.
        assert_eq!(got.scope(1), Some(AnswerScope::Address));
        assert_eq!(got.scope(3), Some(AnswerScope::Port));

        // The same workloads again: nothing new crosses, answers still match.
        let second = batch(&[&b, &b]);
        let (update, got) = cross(&mut plugin, &mut host, second.clone());
        assert_eq!((update.keep, update.new.len()), (2, 0));
        assert_eq!(got, second);
        assert_eq!(got.workloads, std::slice::from_ref(&b));
    }

    #[test]
    fn changed_attributes_are_sent_again_and_never_read_stale() {
        let (mut plugin, mut host) = (SentWorkloads::default(), WorkloadTable::default());
        cross(&mut plugin, &mut host, batch(&[&workload("a", "web")]));
        let moved = workload("a", "api");
        let (update, got) = cross(&mut plugin, &mut host, batch(&[&moved]));
        assert_eq!((update.keep, update.new.len()), (1, 1));
        assert_eq!(got.resolve(1).unwrap().0, &moved);

        // An equal copy in a new allocation (a reloaded file) is not sent
        // again, and the table holds the new allocation from then on.
        let reloaded = workload("a", "api");
        let (update, got) = cross(&mut plugin, &mut host, batch(&[&reloaded]));
        assert_eq!((update.keep, update.new.len()), (2, 0));
        assert_eq!(got.resolve(1).unwrap().0, &moved);
        drop(moved);
        let (update, _) = cross(&mut plugin, &mut host, batch(&[&reloaded]));
        assert_eq!((update.keep, update.new.len()), (2, 0));
    }

    #[test]
    fn a_full_table_starts_over() {
        let (mut plugin, mut host) = (SentWorkloads::default(), WorkloadTable::default());
        let many: Vec<Arc<Workload>> = (0..WORKLOAD_TABLE_CAPACITY)
            .map(|i| Arc::new(Workload::with_id(format!("w{i}"))))
            .collect();
        cross(
            &mut plugin,
            &mut host,
            batch(&many.iter().collect::<Vec<_>>()),
        );
        let (one, known) = (Arc::new(Workload::with_id("one more")), &many[7]);
        let (update, got) = cross(&mut plugin, &mut host, batch(&[known, &one]));
        assert_eq!((update.keep, update.new.len()), (0, 2));
        assert_eq!(got.resolve(1).unwrap().0, known);
        assert_eq!(got.resolve(2).unwrap().0, &one);
    }

    #[test]
    fn a_host_that_missed_an_update_refuses_the_next() {
        let (mut plugin, mut host) = (SentWorkloads::default(), WorkloadTable::default());
        let mut lost = AnswerColumns::from(batch(&[&workload("a", "web")]));
        plugin.send(&mut lost);
        let mut next = AnswerColumns::from(batch(&[&workload("b", "db")]));
        let update = plugin.send(&mut next);
        let err = host
            .apply(update.keep, update.new.iter().map(|w| (**w).clone()))
            .unwrap_err();
        assert_eq!(err.0, "keeps 1 workload table entries, but the table has 0");
        let too_many = (0..WORKLOAD_TABLE_CAPACITY + 1).map(|i| Workload::with_id(format!("{i}")));
        assert!(host.apply(0, too_many).unwrap_err().0.contains("past its"));
    }

    #[test]
    fn an_index_outside_the_batch_list_reaches_the_host_as_outside_the_table() {
        let (mut plugin, mut host) = (SentWorkloads::default(), WorkloadTable::default());
        let mut bad = batch(&[&workload("a", "web")]);
        bad.answers[1] = Answer::Attributed {
            workload: 7,
            valid: TimeRange::since(0),
            scope: AnswerScope::Address,
        };
        let mut columns = AnswerColumns::from(bad);
        let update = plugin.send(&mut columns);
        host.apply(update.keep, update.new.iter().map(|w| (**w).clone()))
            .unwrap();
        assert!(
            host.answers(columns)
                .unwrap_err()
                .starts_with("answer 1 refers to workload 4294967295")
        );
    }

    #[test]
    fn bad_answers_are_errors_and_leave_the_table_usable() {
        let mut host = WorkloadTable::default();
        host.apply(0, [(*workload("a", "web")).clone()].into_iter())
            .unwrap();
        let answer = |workload| AnswerColumns {
            workloads: Vec::new(),
            status: vec![0],
            workload: vec![workload],
            valid_start_ns: vec![1],
            valid_end_ns: vec![2],
            port_scoped: vec![0],
        };
        assert_eq!(
            host.answers(answer(1)).unwrap_err(),
            "answer 0 refers to workload 1 of a table of 1"
        );
        let mut unknown = answer(0);
        unknown.status[0] = 9;
        assert_eq!(
            host.answers(unknown).unwrap_err(),
            "answer 0 has status 9, which is no status"
        );
        for status in [0, 1] {
            let mut scope = answer(0);
            scope.status[0] = status;
            scope.port_scoped[0] = 2;
            assert_eq!(
                host.answers(scope).unwrap_err(),
                "answer 0 has port-scoped 2, which is neither 0 nor 1"
            );
        }
        let mut unattributed = answer(0);
        unattributed.status[0] = 2;
        unattributed.port_scoped[0] = 1;
        assert_eq!(
            host.answers(unattributed).unwrap_err(),
            "answer 0 is port-scoped but neither attributed nor not-found (status 2)"
        );
        // Not found on an address shared by port: passed on, port-scoped.
        let mut shared_not_found = answer(0);
        shared_not_found.status[0] = 1;
        shared_not_found.port_scoped[0] = 1;
        let got = host.answers(shared_not_found).unwrap();
        assert_eq!(got.answers, [Answer::NotFoundShared]);
        assert!(got.shared_not_found(0));
        assert_eq!(got.resolve(0), Err(UnattributedReason::NotFound));
        assert_eq!(AnswerColumns::from(got).port_scoped, [1]);
        let mut no_scopes = answer(0);
        no_scopes.port_scoped.clear();
        assert!(
            host.answers(no_scopes)
                .unwrap_err()
                .contains("columns of 1 and 0")
        );
        let mut shared = answer(0);
        shared.port_scoped[0] = 1;
        assert_eq!(
            host.answers(shared).unwrap().answers,
            [Answer::Attributed {
                workload: 0,
                valid: TimeRange::new(1, 2),
                scope: AnswerScope::Port,
            }]
        );
        let mut ragged = answer(0);
        ragged.valid_end_ns.push(3);
        assert!(
            host.answers(ragged)
                .unwrap_err()
                .contains("columns of 1 and 2")
        );
        let ok = host.answers(answer(0)).unwrap();
        assert_eq!(
            ok.answers,
            [Answer::Attributed {
                workload: 0,
                valid: TimeRange::new(1, 2),
                scope: AnswerScope::Address,
            }]
        );
    }
}
