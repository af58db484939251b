//! The batch ids a collector remembers, so a batch an agent sends again
//! (its acknowledgement was lost, or it failed over) is taken once. Bounded:
//! the oldest ids are forgotten first.

use std::collections::{HashSet, VecDeque};

use flowattr_model::BatchId;

/// The most recent `capacity` batch ids.
#[derive(Debug)]
pub struct RecentBatches {
    capacity: usize,
    order: VecDeque<BatchId>,
    set: HashSet<BatchId>,
}

impl RecentBatches {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    /// Remembers `id`; `false` when it was already remembered (a duplicate).
    pub fn insert(&mut self, id: BatchId) -> bool {
        if self.set.contains(&id) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        self.order.push_back(id.clone());
        self.set.insert(id);
        true
    }

    /// Forgets `id` (a batch that was not taken after all), so a copy of
    /// it is taken.
    pub fn remove(&mut self, id: &BatchId) {
        self.set.remove(id);
    }

    pub fn contains(&self, id: &BatchId) -> bool {
        self.set.contains(id)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64) -> BatchId {
        BatchId {
            agent: "a".into(),
            incarnation: 7,
            seq,
        }
    }

    #[test]
    fn a_remembered_id_is_a_duplicate_until_forgotten() {
        let mut r = RecentBatches::new(2);
        assert!(r.insert(id(1)));
        assert!(!r.insert(id(1)));
        assert!(r.insert(id(2)));
        // A third id forgets the oldest.
        assert!(r.insert(id(3)));
        assert!(!r.contains(&id(1)));
        assert!(r.insert(id(1)));
        assert_eq!(r.len(), 2);
        // Another incarnation of the agent is another batch.
        assert!(r.insert(BatchId {
            incarnation: 8,
            ..id(3)
        }));
    }
}
