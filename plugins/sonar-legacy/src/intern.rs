//! One shared copy of each distinct workload.
//!
//! A busy address stream repeats the same few workloads millions of times;
//! events hold an [`Arc`] to one shared copy instead of their own. Copies no
//! event refers to any more are dropped by [`Interner::purge`].

use std::collections::HashSet;
use std::sync::Arc;

use flowattr_sdk::Workload;

/// The set of shared workload copies.
#[derive(Debug, Default)]
pub struct Interner {
    set: HashSet<Arc<Workload>>,
}

impl Interner {
    /// The shared copy of `workload` (equal in every field), made if new.
    pub fn intern(&mut self, workload: Workload) -> Arc<Workload> {
        if let Some(shared) = self.set.get(&workload) {
            return Arc::clone(shared);
        }
        let shared = Arc::new(workload);
        self.set.insert(Arc::clone(&shared));
        shared
    }

    /// Drops copies nothing else refers to.
    pub fn purge(&mut self) {
        self.set.retain(|w| Arc::strong_count(w) > 1);
    }

    /// How many distinct workloads are held.
    pub fn len(&self) -> usize {
        self.set.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_workloads_share_one_copy_until_unused() {
        let mut interner = Interner::default();
        let a = interner.intern(Workload::with_id("a"));
        let a2 = interner.intern(Workload::with_id("a"));
        let mut relabelled = Workload::with_id("a");
        relabelled.labels.insert("k".into(), "v".into());
        let a3 = interner.intern(relabelled);
        assert!(Arc::ptr_eq(&a, &a2));
        assert!(
            !Arc::ptr_eq(&a, &a3),
            "a workload whose attributes changed is a new copy"
        );
        assert_eq!(interner.len(), 2);
        drop(a3);
        interner.purge();
        assert_eq!(interner.len(), 1);
        drop((a, a2));
        interner.purge();
        assert_eq!(interner.len(), 0);
    }
}
