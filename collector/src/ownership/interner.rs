//! Workloads by number, so a stored range carries 4 bytes instead of a
//! workload.
//!
//! Interning is by value: the same id with different attributes is a
//! different workload. An agent therefore cannot rewrite the attributes
//! another agent reported for the same id; if both versions claim one
//! address at one time, that is a conflict like any other. Each workload is
//! counted by the ranges that refer to it and dropped with its last range,
//! so a fleet's churn of short-lived containers does not accumulate.
//!
//! Lookups hash the id only and compare the `Arc` pointer before the
//! attributes, so a caller that passes the same `Arc` again (one agent's
//! batch, the same container's flows) never reads the attributes.

use std::{borrow::Borrow, hash::Hash, sync::Arc};

use flowattr_model::Workload;
use rustc_hash::FxHashMap;

use super::memory;

/// "No slot" in a same-id chain.
const NONE: u32 = u32::MAX;

#[derive(Debug, Default)]
pub(super) struct Interner {
    /// Id → the first slot with that id; further versions of the id are
    /// chained through `next`.
    by_id: FxHashMap<ById, u32>,
    workloads: Vec<Option<Arc<Workload>>>,
    /// Ranges referring to each slot.
    refs: Vec<u32>,
    /// The next slot with the same id, or [`NONE`].
    next: Vec<u32>,
    /// Empty slots, reused first.
    free: Vec<u32>,
}

/// A workload keyed by its id alone.
#[derive(Debug, Clone)]
struct ById(Arc<Workload>);

impl Hash for ById {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes, so lookups by `&str` find it.
        self.0.id.as_str().hash(state);
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for ById {}

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        &self.0.id
    }
}

impl Interner {
    /// The number of `workload` if a range refers to it.
    pub fn find(&self, workload: &Arc<Workload>) -> Option<u32> {
        let mut i = *self.by_id.get(workload.id.as_str())?;
        while i != NONE {
            let held = self.get(i);
            if Arc::ptr_eq(held, workload) || **held == **workload {
                return Some(i);
            }
            i = self.next[i as usize];
        }
        None
    }

    /// The number of `workload`, one more range referring to it.
    pub fn acquire(&mut self, workload: &Arc<Workload>) -> u32 {
        if let Some(i) = self.find(workload) {
            self.refs[i as usize] += 1;
            return i;
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.workloads.push(None);
                self.refs.push(0);
                self.next.push(NONE);
                u32::try_from(self.workloads.len() - 1).expect("fewer than 2^32 workloads")
            }
        };
        self.workloads[i as usize] = Some(workload.clone());
        self.refs[i as usize] = 1;
        // Link in after the id's first version, or as the first.
        match self.by_id.get(workload.id.as_str()) {
            Some(&head) => {
                self.next[i as usize] = self.next[head as usize];
                self.next[head as usize] = i;
            }
            None => {
                self.next[i as usize] = NONE;
                self.by_id.insert(ById(workload.clone()), i);
            }
        }
        i
    }

    /// One more range refers to workload `i`.
    pub fn retain(&mut self, i: u32) {
        self.refs[i as usize] += 1;
    }

    /// One range fewer refers to workload `i`; the last one frees it.
    pub fn release(&mut self, i: u32) {
        let refs = &mut self.refs[i as usize];
        *refs -= 1;
        if *refs > 0 {
            return;
        }
        let workload = self.workloads[i as usize]
            .take()
            .expect("a referenced slot is filled");
        let head = self.by_id[workload.id.as_str()];
        let next = self.next[i as usize];
        if head == i {
            if next == NONE {
                self.by_id.remove(workload.id.as_str());
            } else {
                // Re-key the id on the next version (the key holds an `Arc`).
                self.by_id.remove(workload.id.as_str());
                self.by_id.insert(ById(self.get(next).clone()), next);
            }
        } else {
            let mut at = head;
            while self.next[at as usize] != i {
                at = self.next[at as usize];
            }
            self.next[at as usize] = next;
        }
        self.next[i as usize] = NONE;
        self.free.push(i);
    }

    /// Workload `i`, which a range refers to.
    pub fn get(&self, i: u32) -> &Arc<Workload> {
        self.workloads[i as usize]
            .as_ref()
            .expect("a referenced slot is filled")
    }

    /// Workloads held.
    pub fn len(&self) -> usize {
        self.workloads.len() - self.free.len()
    }

    /// Heap bytes held (estimate, with allocator overhead).
    pub fn memory_bytes(&self) -> usize {
        let vec = |cap: usize, size: usize| memory::heap_block(cap * size);
        memory::hash_map::<ById, u32>(self.by_id.capacity())
            + vec(
                self.workloads.capacity(),
                size_of::<Option<Arc<Workload>>>(),
            )
            + vec(self.refs.capacity(), size_of::<u32>())
            + vec(self.next.capacity(), size_of::<u32>())
            + vec(self.free.capacity(), size_of::<u32>())
            + self
                .workloads
                .iter()
                .flatten()
                .map(|w| workload_bytes(w))
                .sum::<usize>()
    }
}

/// Heap bytes of one shared workload: the `Arc` block and its strings.
fn workload_bytes(w: &Workload) -> usize {
    let string = |s: &String| memory::heap_block(s.capacity());
    let optional = |s: &Option<String>| s.as_ref().map_or(0, string);
    memory::heap_block(2 * size_of::<usize>() + size_of::<Workload>())
        + string(&w.id)
        + optional(&w.app)
        + optional(&w.cluster)
        + optional(&w.stack)
        + optional(&w.account)
        + optional(&w.region)
        + labels_bytes(&w.labels)
}

/// A B-tree map's nodes (each room for 11 pairs, a leaf allocated whole
/// even for one pair, nodes between about half and fully used) and strings.
fn labels_bytes(labels: &std::collections::BTreeMap<String, String>) -> usize {
    if labels.is_empty() {
        return 0;
    }
    let string = |s: &String| memory::heap_block(s.capacity());
    let node = memory::heap_block(11 * 2 * size_of::<String>() + 16);
    labels.len().div_ceil(8) * node
        + labels
            .iter()
            .map(|(k, v)| string(k) + string(v))
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_one_id_are_distinct_and_freed_with_their_last_range() {
        let mut interner = Interner::default();
        let plain = Arc::new(Workload::with_id("a"));
        let labelled = Arc::new(Workload {
            app: Some("x".into()),
            ..Workload::with_id("a")
        });
        let other = Arc::new(Workload::with_id("b"));
        let p = interner.acquire(&plain);
        let l = interner.acquire(&labelled);
        let o = interner.acquire(&other);
        assert_ne!(p, l);
        // An equal workload in another `Arc` is the same workload.
        assert_eq!(interner.acquire(&Arc::new(Workload::with_id("a"))), p);
        assert_eq!(interner.len(), 3);

        interner.release(p);
        assert_eq!(interner.find(&plain), Some(p), "one reference left");
        interner.release(p);
        assert_eq!(interner.find(&plain), None);
        assert_eq!(interner.find(&labelled), Some(l), "the other version stays");
        assert_eq!(interner.acquire(&plain), p, "the freed slot is reused");
        interner.release(l);
        assert_eq!(interner.find(&labelled), None);
        assert_eq!(interner.find(&plain), Some(p));
        assert_eq!(interner.find(&other), Some(o));
        assert_eq!(interner.len(), 2);
    }
}
