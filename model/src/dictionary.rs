//! The workload dictionary every output format builds: each distinct
//! workload of a batch once, in order of first use, referred to by index.
//!
//! Flows of one batch share their workloads' `Arc`s, so a lookup by `Arc`
//! address (a pointer hash) answers almost every flow; flows built apart
//! (parsed one by one, or arrived inside Wasm) carry equal workloads in
//! separate `Arc`s, so a miss falls back to comparing by value, and the
//! output is the same whichever way the flows were built.
//!
//! ```
//! use std::sync::Arc;
//! use flowattr_model::{Workload, WorkloadDictionary};
//!
//! let a = Arc::new(Workload::with_id("a"));
//! let a_again = Arc::new(Workload::with_id("a"));
//! let b = Arc::new(Workload::with_id("b"));
//! let mut dictionary = WorkloadDictionary::new();
//! assert_eq!(dictionary.insert(&a), (0, true));
//! assert_eq!(dictionary.insert(&b), (1, true));
//! assert_eq!(dictionary.insert(&a_again), (0, false));
//! assert_eq!(dictionary.len(), 2);
//! assert_eq!(dictionary.workloads()[1].id, "b");
//! ```

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::{FastMap, Workload};

/// Each distinct workload once, by index in order of first use. It borrows
/// the `Arc`s it is given, which keeps every address it knows pointing at
/// the same workload for as long as it lives.
#[derive(Default)]
pub struct WorkloadDictionary<'a> {
    by_address: FastMap<*const Workload, u32>,
    by_value: FastMap<ById<'a>, u32>,
    entries: Vec<&'a Arc<Workload>>,
}

/// A workload compared by value but hashed by its id alone: ids are all but
/// unique, so hashing every attribute would only cost time, while equality
/// still compares every attribute (two workloads sharing an id stay apart).
#[derive(Clone, Copy)]
struct ById<'a>(&'a Workload);

impl Hash for ById<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.hash(state);
    }
}

impl PartialEq for ById<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for ById<'_> {}

impl<'a> WorkloadDictionary<'a> {
    /// An empty dictionary.
    pub fn new() -> Self {
        Self::default()
    }

    /// The index of `workload`, and whether it was new (listed by this
    /// call, so a format writes its entry now).
    ///
    /// # Panics
    /// Past 2^32 distinct workloads (a batch has fewer flows than that).
    #[inline]
    pub fn insert(&mut self, workload: &'a Arc<Workload>) -> (u32, bool) {
        let address = Arc::as_ptr(workload);
        if let Some(&index) = self.by_address.get(&address) {
            return (index, false);
        }
        let next = u32::try_from(self.entries.len()).expect("fewer than 2^32 workloads");
        let index = *self.by_value.entry(ById(workload)).or_insert(next);
        if index == next {
            self.entries.push(workload);
        }
        self.by_address.insert(address, index);
        (index, index == next)
    }

    /// The index of `workload`, listing it if it is new.
    #[inline]
    pub fn index(&mut self, workload: &'a Arc<Workload>) -> u32 {
        self.insert(workload).0
    }

    /// The distinct workloads, by index.
    pub fn workloads(&self) -> &[&'a Arc<Workload>] {
        &self.entries
    }

    /// How many distinct workloads are listed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is listed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(id: &str, app: Option<&str>) -> Arc<Workload> {
        Arc::new(Workload {
            app: app.map(Into::into),
            ..Workload::with_id(id)
        })
    }

    #[test]
    fn equal_workloads_in_separate_arcs_share_an_index() {
        let (a1, a2) = (workload("a", Some("x")), workload("a", Some("x")));
        let mut d = WorkloadDictionary::new();
        assert_eq!(d.insert(&a1), (0, true));
        assert_eq!(d.insert(&a2), (0, false));
        assert_eq!(d.insert(&a1), (0, false));
        assert_eq!(d.len(), 1);
        assert!(Arc::ptr_eq(d.workloads()[0], &a1));
    }

    #[test]
    fn a_shared_id_with_other_attributes_is_another_workload() {
        let (a, a_other) = (workload("a", Some("x")), workload("a", Some("y")));
        let mut d = WorkloadDictionary::new();
        assert_eq!(d.index(&a), 0);
        assert_eq!(d.index(&a_other), 1);
        assert_eq!(d.index(&a_other), 1);
        assert_eq!(d.workloads()[1].app.as_deref(), Some("y"));
    }

    #[test]
    fn indices_follow_first_use() {
        let ws: Vec<_> = (0..5).map(|i| workload(&format!("w{i}"), None)).collect();
        let mut d = WorkloadDictionary::new();
        for w in ws.iter().rev().chain(ws.iter()) {
            d.index(w);
        }
        let ids: Vec<_> = d.workloads().iter().map(|w| w.id.as_str()).collect();
        assert_eq!(ids, ["w4", "w3", "w2", "w1", "w0"]);
        assert!(!d.is_empty());
    }
}
