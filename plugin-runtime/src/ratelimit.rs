//! A token bucket for plugin log lines: a burst, then a steady rate, and a
//! count of what was suppressed so the next line that gets through can say so.

use std::time::Instant;

/// What to do with one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Write it; `suppressed` lines were dropped since the last one written.
    Write { suppressed: u64 },
    /// Drop it (counted).
    Suppress,
}

/// Token bucket refilled at `per_second`, holding at most `burst` tokens.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    per_second: f64,
    tokens: f64,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimiter {
    /// A full bucket of `burst` tokens refilled at `per_second`.
    pub fn new(burst: u32, per_second: u32) -> Self {
        Self {
            burst: f64::from(burst),
            per_second: f64::from(per_second),
            tokens: f64::from(burst),
            last: None,
            suppressed: 0,
        }
    }

    /// Decides for one line at `now`.
    pub fn admit(&mut self, now: Instant) -> Admit {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last);
            self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Admit::Write {
                suppressed: std::mem::take(&mut self.suppressed),
            }
        } else {
            self.suppressed += 1;
            Admit::Suppress
        }
    }
}

/// Log lines each plugin may write at once, and per second after that.
pub const LOG_BURST: u32 = 100;
/// See [`LOG_BURST`].
pub const LOG_PER_SECOND: u32 = 20;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_rate_then_reports_suppressed() {
        let t0 = Instant::now();
        let mut rl = RateLimiter::new(3, 2);
        for _ in 0..3 {
            assert_eq!(rl.admit(t0), Admit::Write { suppressed: 0 });
        }
        assert_eq!(rl.admit(t0), Admit::Suppress);
        assert_eq!(rl.admit(t0), Admit::Suppress);
        // Half a second at 2/s refills one token.
        assert_eq!(
            rl.admit(t0 + Duration::from_millis(500)),
            Admit::Write { suppressed: 2 }
        );
        assert_eq!(rl.admit(t0 + Duration::from_millis(500)), Admit::Suppress);
        // The bucket never holds more than the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert!(matches!(rl.admit(later), Admit::Write { .. }));
        }
        assert_eq!(rl.admit(later), Admit::Suppress);
    }
}
