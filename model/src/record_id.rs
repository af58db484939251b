//! Record ids: a stable 64-bit id for every output record, so consumers of
//! an at-least-once output can drop the records written twice.
//!
//! A collector that crashes between writing a batch out and recording that
//! it did replays the journaled batch, with its flows in the same order, and
//! writes every record again. Each record's id is a function of what does
//! not change between the two writes: the agent batch the flow arrived in
//! ([`BatchId`]) and the flow's position in it. A consumer keeps the first
//! record of each id.
//!
//! The id is the `position`-th output of SplitMix64 seeded with the first
//! 8 bytes (big-endian) of the SHA-256 of the batch id:
//!
//! ```text
//! key = u64_be(SHA-256("flowattr record id v1" . 0x00
//!                      . u64_be(len(agent)) . agent (UTF-8)
//!                      . u64_be(incarnation) . u64_be(seq))[0..8])
//! z   = key + (position + 1) * 0x9e3779b97f4a7c15          (mod 2^64)
//! z   = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
//! z   = (z ^ (z >> 27)) * 0x94d049bb133111eb
//! id  = z ^ (z >> 31), or 1 where that is 0
//! ```
//!
//! SHA-256 is computed once per batch; the per-flow step is a bijection of
//! the position, so the flows of one batch never share an id (but for the
//! one position in 2^64 whose id would be 0, the "not assigned" value, and
//! becomes 1). Ids of different batches collide with the probability of a
//! 64-bit hash.
//!
//! ```
//! use flowattr_model::{BatchId, RecordIds, record_id_hex};
//!
//! let batch = BatchId { agent: "node-1".into(), incarnation: 7, seq: 42 };
//! let ids = RecordIds::of(&batch);
//! assert_ne!(ids.at(0), ids.at(1));
//! assert_eq!(ids.at(3), RecordIds::of(&batch.clone()).at(3));
//! assert_eq!(record_id_hex(0xab).as_slice(), b"00000000000000ab");
//! ```

use sha2::{Digest, Sha256};

use crate::BatchId;

/// What the SHA-256 input starts with, so no other use of SHA-256 over
/// similar bytes gives the same key.
const DOMAIN: &[u8] = b"flowattr record id v1\0";

/// SplitMix64's increment (the golden ratio as a 64-bit fraction).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// The record ids of one batch's flows: the batch id is hashed once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordIds {
    key: u64,
}

impl RecordIds {
    /// The ids of the flows of batch `id`.
    pub fn of(id: &BatchId) -> Self {
        let mut h = Sha256::new();
        h.update(DOMAIN);
        h.update((id.agent.len() as u64).to_be_bytes());
        h.update(id.agent.as_bytes());
        h.update(id.incarnation.to_be_bytes());
        h.update(id.seq.to_be_bytes());
        let digest = h.finalize();
        let mut key = [0u8; 8];
        key.copy_from_slice(&digest[..8]);
        Self {
            key: u64::from_be_bytes(key),
        }
    }

    /// The id of the flow at `position` (from 0) in the batch: never 0.
    #[inline]
    pub fn at(&self, position: u64) -> u64 {
        let mut z = self
            .key
            .wrapping_add(position.wrapping_add(1).wrapping_mul(GAMMA));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        match z ^ (z >> 31) {
            0 => 1,
            id => id,
        }
    }
}

/// The record id of the flow at `position` in batch `id` (for one flow;
/// [`RecordIds`] hashes the batch id once for all of its flows).
pub fn record_id(id: &BatchId, position: u64) -> u64 {
    RecordIds::of(id).at(position)
}

/// `id` as text outputs write it: 16 lower-case hexadecimal digits.
#[inline]
pub fn record_id_hex(id: u64) -> [u8; 16] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 16];
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = HEX[((id >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn batch(agent: &str, incarnation: u64, seq: u64) -> BatchId {
        BatchId {
            agent: agent.into(),
            incarnation,
            seq,
        }
    }

    /// Pinned values: the definition in the module documentation is a
    /// contract with consumers, so no refactoring may change an id.
    #[test]
    fn ids_are_stable_across_builds() {
        let b = batch("node-1", 1_700_000_000_000_000_000, 42);
        let ids = RecordIds::of(&b);
        // The key is the first 8 bytes of SHA-256 over the documented input
        // (checked independently with Python's hashlib).
        assert_eq!(ids.key, 0x478a_03b5_6526_781d, "{:#018x}", ids.key);
        assert_eq!(ids.at(0), 0xf5db_47e8_e5cf_1777, "{:#018x}", ids.at(0));
        assert_eq!(ids.at(1), 0xd48b_5150_5c18_2319, "{:#018x}", ids.at(1));
        assert_eq!(record_id(&b, 1), ids.at(1));
        assert_eq!(&record_id_hex(ids.at(0)), b"f5db47e8e5cf1777");
    }

    #[test]
    fn positions_of_one_batch_never_share_an_id() {
        let ids = RecordIds::of(&batch("a", 1, 0));
        let all: HashSet<u64> = (0..100_000).map(|p| ids.at(p)).collect();
        assert_eq!(all.len(), 100_000);
        assert!(!all.contains(&0), "0 means not assigned");
    }

    #[test]
    fn every_part_of_the_batch_id_changes_the_ids() {
        let base = batch("agent-a", 5, 9);
        let others = [
            batch("agent-b", 5, 9),
            batch("agent-a", 6, 9),
            batch("agent-a", 5, 10),
            // The agent's length is hashed: no shifting of bytes between
            // the name and the numbers gives the same input.
            batch("agent-a\0", 5, 9),
            batch("", 5, 9),
        ];
        let mut seen: HashSet<u64> = (0..1_000).map(|p| record_id(&base, p)).collect();
        for other in &others {
            let ids = RecordIds::of(other);
            for p in 0..1_000 {
                assert!(seen.insert(ids.at(p)), "{other} position {p}");
            }
        }
    }

    #[test]
    fn hex_is_sixteen_lower_case_digits() {
        assert_eq!(&record_id_hex(0), b"0000000000000000");
        assert_eq!(&record_id_hex(u64::MAX), b"ffffffffffffffff");
        assert_eq!(&record_id_hex(0x0123_4567_89ab_cdef), b"0123456789abcdef");
        for id in [1u64, 0xdead_beef, 1 << 63, 0xd48b_5150_5c18_2319] {
            assert_eq!(
                std::str::from_utf8(&record_id_hex(id)).unwrap(),
                format!("{id:016x}")
            );
        }
    }
}
