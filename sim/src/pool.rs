//! Address pools: released addresses go back, and are handed to the next
//! workload once `reuse_after` has passed — the churn that makes "who owns
//! this address" a question of time.

use std::{collections::VecDeque, net::IpAddr};

use flowattr_collector::ownership::Prefix;

/// One prefix's addresses.
#[derive(Debug)]
pub struct Pool {
    prefix: Prefix,
    /// The next never-used address (0, the network, is skipped).
    next_fresh: u128,
    /// Released addresses, oldest first: (released at, address).
    free: VecDeque<(u64, IpAddr)>,
    /// Addresses handed out again after a release.
    pub reused: u64,
}

impl Pool {
    pub fn new(prefix: Prefix) -> Self {
        Self {
            prefix,
            next_fresh: 1,
            free: VecDeque::new(),
            reused: 0,
        }
    }

    /// An address for a workload starting at `now_ns`: one of those released
    /// at least `reuse_after_ns` ago, picked by `pick(n)` (an index below
    /// `n`; the simulator picks at random, as cloud address managers do),
    /// else a fresh one. `None` when the prefix is used up.
    pub fn take(
        &mut self,
        now_ns: u64,
        reuse_after_ns: u64,
        pick: impl FnOnce(usize) -> usize,
    ) -> Option<IpAddr> {
        let eligible = self
            .free
            .partition_point(|&(released, _)| released.saturating_add(reuse_after_ns) <= now_ns);
        if eligible > 0 {
            let (_, ip) = self.free.remove(pick(eligible).min(eligible - 1))?;
            self.reused += 1;
            return Some(ip);
        }
        let ip = self.prefix.nth(self.next_fresh)?;
        self.next_fresh += 1;
        Some(ip)
    }

    /// Gives an address back at `now_ns`.
    pub fn release(&mut self, ip: IpAddr, now_ns: u64) {
        self.free.push_back((now_ns, ip));
    }

    pub fn prefix(&self) -> Prefix {
        self.prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_released_address_is_reused_only_after_the_wait() {
        let first = |_| 0;
        let mut pool = Pool::new("10.0.0.0/29".parse().unwrap());
        let a = pool.take(0, 30 * S, first).unwrap();
        assert_eq!(a, "10.0.0.1".parse::<IpAddr>().unwrap());
        pool.release(a, 10 * S);
        let b = pool.take(20 * S, 30 * S, first).unwrap();
        assert_ne!(a, b, "too soon: a fresh address");
        assert_eq!(pool.take(40 * S, 30 * S, first), Some(a));
        assert_eq!(pool.reused, 1);
        // Several eligible: the picker chooses among them only.
        let (c, d) = (
            pool.take(40 * S, 30 * S, first).unwrap(),
            pool.take(40 * S, 30 * S, first).unwrap(),
        );
        pool.release(c, 50 * S);
        pool.release(d, 51 * S);
        pool.release(b, 70 * S);
        assert_eq!(
            pool.take(90 * S, 30 * S, |n| {
                assert_eq!(n, 2);
                1
            }),
            Some(d)
        );
        assert_eq!(
            pool.take(90 * S, 30 * S, |n| {
                assert_eq!(n, 1);
                0
            }),
            Some(c)
        );
        assert_eq!(pool.take(100 * S, 30 * S, first), Some(b));
        for _ in 0..3 {
            pool.take(100 * S, 30 * S, first).unwrap();
        }
        assert_eq!(pool.take(100 * S, 30 * S, first), None, "used up");
    }
}
