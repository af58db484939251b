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

    /// An address for a workload starting at `now_ns`: the longest-released
    /// one if it was released at least `reuse_after_ns` ago, else a fresh
    /// one. `None` when the prefix is used up.
    pub fn take(&mut self, now_ns: u64, reuse_after_ns: u64) -> Option<IpAddr> {
        if let Some(&(released, ip)) = self.free.front()
            && released.saturating_add(reuse_after_ns) <= now_ns
        {
            self.free.pop_front();
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
        let mut pool = Pool::new("10.0.0.0/30".parse().unwrap());
        let a = pool.take(0, 30 * S).unwrap();
        assert_eq!(a, "10.0.0.1".parse::<IpAddr>().unwrap());
        pool.release(a, 10 * S);
        let b = pool.take(20 * S, 30 * S).unwrap();
        assert_ne!(a, b, "too soon: a fresh address");
        assert_eq!(pool.take(40 * S, 30 * S), Some(a));
        assert_eq!(pool.reused, 1);
        assert_eq!(pool.take(40 * S, 30 * S), Some("10.0.0.3".parse().unwrap()));
        assert_eq!(pool.take(40 * S, 30 * S), None, "used up");
    }
}
