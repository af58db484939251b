//! Exponential backoff with full jitter: the one delay rule of every retry
//! loop in flowattr (the shipper's reconnects, its batch retries and its
//! probes of a collector that refuses the agent's name, and the plugin
//! runtime's instance rebuilds). Pure: no clock, no sleeping; the caller
//! adds the delay to its own `now`.
//!
//! **Full jitter.** The `n`-th failure in a row waits a delay drawn
//! uniformly from `[0, min(cap, base × 2ⁿ⁻¹)]` ([`Policy::delay`]). Without
//! jitter every agent that lost the same collector retries at the same
//! instants, and after a collector restart they all arrive together, again
//! and again. Of the usual remedies (AWS's "Exponential Backoff and Jitter"
//! compares them), full and decorrelated jitter spread competing clients
//! about equally well and much better than "equal" jitter; full jitter was
//! chosen because its delay depends only on the failure count and one
//! draw. So its bounds are exact (`[0, ceiling]`, never above `cap`), its
//! mean is half the ceiling and doubles with each failure until the cap, a
//! caller that counts failures itself needs no other state, and all of it
//! can be stated and tested. Decorrelated jitter
//! (`min(cap, uniform(base, 3 × previous))`) feeds each delay into the
//! next, so its distribution at the `n`-th failure has no simple form.
//! The price is that a delay may be close to zero; each attempt costs its
//! own work (a handshake, a rebuild), and the expected delay still doubles.
//!
//! **Seeded.** The randomness is a seeded PCG generator ([`Jitter`]): a
//! test passes a seed and gets the same delays on every run; a process
//! seeds from [`entropy_seed`], so two agents restarted together do not
//! share a sequence.
//!
//! ```
//! use std::time::Duration;
//! use flowattr_backoff::{Backoff, Policy};
//!
//! let policy = Policy::new(Duration::from_millis(100), Duration::from_secs(30));
//! let mut backoff = Backoff::new(policy, 7);
//! assert!(backoff.fail() <= Duration::from_millis(100));
//! assert!(backoff.fail() <= Duration::from_millis(200));
//! backoff.succeed();
//! assert_eq!(backoff.failures(), 0);
//! assert!(backoff.fail() <= Duration::from_millis(100));
//! ```

use std::time::Duration;

use rand::{RngExt as _, SeedableRng as _};

/// The shape of a backoff: the ceiling of the first delay and the most any
/// delay may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    base: Duration,
    cap: Duration,
}

impl Policy {
    /// Ceilings that start at `base` and double up to `cap` (raised to
    /// `base` when below it).
    pub const fn new(base: Duration, cap: Duration) -> Self {
        let cap = if cap.as_nanos() < base.as_nanos() {
            base
        } else {
            cap
        };
        Self { base, cap }
    }

    /// The ceiling of the first delay.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The most any delay may be.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The largest delay after `failures` failures in a row:
    /// `min(cap, base × 2^(failures − 1))`, and 0 with no failure.
    pub fn ceiling(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        1u32.checked_shl(failures - 1)
            .and_then(|factor| self.base.checked_mul(factor))
            .map_or(self.cap, |c| c.min(self.cap))
    }

    /// The delay after `failures` failures in a row: uniform in
    /// `[0, ceiling(failures)]` (full jitter).
    pub fn delay(&self, failures: u32, jitter: &mut Jitter) -> Duration {
        let ceiling = u64::try_from(self.ceiling(failures).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(jitter.0.random_range(0..=ceiling))
    }
}

/// The random source of the jitter: a seeded PCG generator.
#[derive(Debug, Clone)]
pub struct Jitter(rand_pcg::Pcg32);

impl Jitter {
    /// The same draws for the same seed.
    pub fn seeded(seed: u64) -> Self {
        Self(rand_pcg::Pcg32::seed_from_u64(seed))
    }

    /// Seeded from [`entropy_seed`]: for a process, not a test.
    pub fn from_entropy() -> Self {
        Self::seeded(entropy_seed())
    }
}

/// A seed no other process (and no other call) is likely to share: std's
/// randomly keyed hasher (its keys come from the operating system), over
/// the time and the process id.
pub fn entropy_seed() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A [`Policy`] with its failure count and jitter: for a loop that retries
/// one thing until it succeeds.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: Policy,
    failures: u32,
    jitter: Jitter,
}

impl Backoff {
    /// No failures yet; draws from `seed`.
    pub fn new(policy: Policy, seed: u64) -> Self {
        Self {
            policy,
            failures: 0,
            jitter: Jitter::seeded(seed),
        }
    }

    /// [`Backoff::new`] seeded from [`entropy_seed`].
    pub fn from_entropy(policy: Policy) -> Self {
        Self::new(policy, entropy_seed())
    }

    /// Counts a failure; the delay before the next attempt.
    pub fn fail(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.policy.delay(self.failures, &mut self.jitter)
    }

    /// A delay as [`Backoff::fail`] would draw it now, without counting a
    /// failure: for retrying one of several things that fail together.
    pub fn draw(&mut self) -> Duration {
        self.policy
            .delay(self.failures.saturating_add(1), &mut self.jitter)
    }

    /// Back to no failures: the next delay is at most `base` again.
    pub fn succeed(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }
}

#[cfg(test)]
mod tests;
