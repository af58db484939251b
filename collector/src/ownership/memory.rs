//! Honest estimates of heap use: what the allocator hands out, not only what
//! was asked for.

/// The bytes the allocator really uses for a request of `n` bytes: glibc's
/// malloc adds an 8-byte header and rounds to 16 bytes, at least 32 (other
/// allocators differ by a few bytes per block).
pub(super) fn heap_block(n: usize) -> usize {
    match n {
        0 => 0,
        n => ((n + 8 + 15) & !15).max(32),
    }
}

/// Heap bytes of a `std` hash map (hashbrown) of `(K, V)` entries whose
/// `capacity()` is `capacity`: one control byte per bucket plus a group's
/// worth (16) of mirrored control bytes; buckets are a power of two, at most
/// 7/8 of them usable.
pub(super) fn hash_map<K, V>(capacity: usize) -> usize {
    let buckets = match capacity {
        0 => return 0,
        c if c < 8 => c + 1,
        c => c / 7 * 8,
    };
    let data = (buckets * size_of::<(K, V)>()).next_multiple_of(16);
    heap_block(data + buckets + 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_follow_the_allocators_rules() {
        assert_eq!(heap_block(0), 0);
        assert_eq!(heap_block(1), 32);
        assert_eq!(heap_block(24), 32);
        assert_eq!(heap_block(25), 48);
        assert_eq!(hash_map::<u64, u64>(0), 0);
        // 3 usable of 4 buckets.
        assert_eq!(hash_map::<u64, u64>(3), heap_block(64 + 4 + 16));
        // 14 usable of 16 buckets.
        assert_eq!(hash_map::<u64, u64>(14), heap_block(256 + 16 + 16));
    }
}
