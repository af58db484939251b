use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn policy(base_ms: u64, cap_ms: u64) -> Policy {
    Policy::new(
        Duration::from_millis(base_ms),
        Duration::from_millis(cap_ms),
    )
}

/// The mean of `n` delays after `failures` failures.
fn mean(policy: &Policy, failures: u32, seed: u64, n: u32) -> f64 {
    let mut jitter = Jitter::seeded(seed);
    let total: f64 = (0..n)
        .map(|_| policy.delay(failures, &mut jitter).as_secs_f64())
        .sum();
    total / f64::from(n)
}

#[test]
fn ceilings_double_from_base_to_cap() {
    let p = policy(100, 500);
    let ceilings: Vec<_> = (0..6).map(|n| p.ceiling(n).as_millis()).collect();
    assert_eq!(ceilings, [0, 100, 200, 400, 500, 500]);
    assert_eq!(p.ceiling(u32::MAX), Duration::from_millis(500));
    // A cap below the base is raised to it.
    assert_eq!(policy(100, 10).cap(), Duration::from_millis(100));
}

#[test]
fn the_same_seed_draws_the_same_delays_and_another_seed_others() {
    let draws = |seed| {
        let mut b = Backoff::new(policy(100, 30_000), seed);
        (0..10).map(|_| b.fail()).collect::<Vec<_>>()
    };
    assert_eq!(draws(1), draws(1));
    assert_ne!(draws(1), draws(2));
}

#[test]
fn agents_that_fail_together_retry_apart() {
    // The lockstep this replaces: 100 agents whose collector restarted,
    // each on its own seed, all at their fifth failure (ceiling 1.6 s).
    let delays: Vec<Duration> = (0..100)
        .map(|agent| {
            let mut b = Backoff::new(policy(100, 30_000), agent);
            (0..4).for_each(|_| {
                b.fail();
            });
            b.fail()
        })
        .collect();
    let mut buckets = [0u32; 8];
    for d in &delays {
        buckets[(d.as_millis() * 8 / 1601) as usize] += 1;
    }
    // Uniform over 8 buckets: 12.5 each; none empty, none with half.
    assert!(buckets.iter().all(|&n| (1..50).contains(&n)), "{buckets:?}");
}

#[test]
fn draw_does_not_count_a_failure() {
    let mut b = Backoff::new(policy(100, 30_000), 3);
    b.fail();
    for _ in 0..100 {
        assert!(b.draw() <= Duration::from_millis(200));
    }
    assert_eq!(b.failures(), 1);
}

proptest! {
    #[test]
    fn every_delay_is_within_zero_and_its_ceiling(
        base_ms in 0u64..10_000,
        cap_ms in 0u64..600_000,
        failures in 0u32..100,
        seed: u64,
    ) {
        let p = policy(base_ms, cap_ms);
        let mut jitter = Jitter::seeded(seed);
        for _ in 0..20 {
            let d = p.delay(failures, &mut jitter);
            prop_assert!(d <= p.ceiling(failures));
            prop_assert!(d <= p.cap());
        }
    }

    #[test]
    fn ceilings_never_shrink_as_failures_grow(
        base_ms in 0u64..10_000,
        cap_ms in 0u64..600_000,
        failures in 0u32..100,
    ) {
        let p = policy(base_ms, cap_ms);
        prop_assert!(p.ceiling(failures) <= p.ceiling(failures + 1));
    }

    #[test]
    fn the_mean_delay_grows_with_failures_until_the_cap(
        base_ms in 1u64..1_000,
        doublings in 1u32..8,
        failures in 1u32..8,
        seed: u64,
    ) {
        let p = policy(base_ms, base_ms << doublings);
        let (now, next) = (mean(&p, failures, seed, 2_000), mean(&p, failures + 1, seed, 2_000));
        // Full jitter: the mean is half the ceiling (within 10% over 2,000
        // draws, whose standard error is about 1.3%).
        let half = p.ceiling(failures + 1).as_secs_f64() / 2.0;
        prop_assert!((next - half).abs() <= half * 0.1, "mean {next} against {half}");
        if p.ceiling(failures + 1) > p.ceiling(failures) {
            prop_assert!(next > now, "{now} then {next}");
        }
    }

    #[test]
    fn a_success_starts_over(
        base_ms in 1u64..1_000,
        cap_ms in 1u64..600_000,
        failures in 1u32..50,
        seed: u64,
    ) {
        let p = policy(base_ms, cap_ms);
        let mut b = Backoff::new(p, seed);
        for _ in 0..failures {
            b.fail();
        }
        prop_assert_eq!(b.failures(), failures);
        b.succeed();
        prop_assert_eq!(b.failures(), 0);
        prop_assert!(b.fail() <= p.base());
        prop_assert_eq!(b.failures(), 1);
    }
}
