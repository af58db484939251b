//! A fast hasher for address-keyed maps.
//!
//! The std hasher (SipHash) resists collision attacks, which these maps do
//! not need: their keys come from IPMan's own state file, not from the
//! network. This multiply-rotate hasher (the scheme of rustc's `FxHasher`)
//! hashes an address in a few instructions, which matters when every query of
//! a 1,024-query batch does a lookup.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Multiply-rotate hashing of machine words.
#[derive(Debug, Default, Clone, Copy)]
pub struct FastHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(n.into());
    }

    fn write_u16(&mut self, n: u16) {
        self.add(n.into());
    }

    fn write_u32(&mut self, n: u32) {
        self.add(n.into());
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::hash::BuildHasher;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;

    #[test]
    fn neighbouring_addresses_hash_apart() {
        let build = BuildHasherDefault::<FastHasher>::default();
        let mut seen = HashSet::new();
        for i in 0..4096u32 {
            let v4 = IpAddr::from(Ipv4Addr::from(0x0a00_0000 + i));
            let v6 = IpAddr::from(Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i)));
            for a in [v4, v6] {
                assert!(seen.insert(build.hash_one(a)), "{a} collides");
            }
        }
    }
}
