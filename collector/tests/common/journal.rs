//! What a journal holds, read as the next start would.
#![allow(dead_code)] // Each test crate uses a different part.

use std::collections::HashSet;

use flowattr_collector::journal::{Journal, JournalEntry, MemoryStore};
use flowattr_model::BatchId;

/// The batch ids a journal in `store` would replay (accepted and not yet
/// written out).
pub fn replayable(store: &MemoryStore) -> HashSet<BatchId> {
    let (mut journal, mut recovery) = Journal::with_store(Box::new(store.clone()), 1000).unwrap();
    let mut ids = HashSet::new();
    while let Some(e) = journal.recover_next(&mut recovery) {
        ids.insert(JournalEntry::parse(&e.bytes).unwrap().id);
    }
    ids
}
