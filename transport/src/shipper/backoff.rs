//! Exponential backoff between attempts (pure).

use std::time::Duration;

/// Delays that double from `min` to `max` with each failure and return to
/// `min` after a success.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        let max = max.max(min);
        Self {
            min,
            max,
            current: min,
        }
    }

    /// The delay before the next attempt; the one after will be twice as
    /// long (at most `max`).
    pub fn fail(&mut self) -> Duration {
        let delay = self.current;
        self.current = (self.current * 2).min(self.max);
        delay
    }

    /// The delay [`Backoff::fail`] would give, without counting a failure.
    pub fn current(&self) -> Duration {
        self.current
    }

    /// Back to `min`.
    pub fn succeed(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(500));
        let delays: Vec<_> = (0..5).map(|_| b.fail()).collect();
        assert_eq!(delays, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        b.succeed();
        assert_eq!(b.fail(), ms(100));
        assert_eq!(b.current(), ms(200));
    }
}
