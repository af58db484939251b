//! Agents' clock offsets, measured from their batches rather than assumed.
//!
//! Every frame an agent sends carries its send time on the agent's clock;
//! the receiver notes when it read the frame on ours and the connection's
//! round-trip time. With `offset = agent clock − collector clock` and the
//! frame's one-way delay `d ≥ 0`:
//!
//! ```text
//! offset = sent − received + d,   so   sent − received ≤ offset ≤ sent − received + d
//! ```
//!
//! The lower bound always holds. Like NTP's minimum-delay filter, the
//! estimate trusts the *least delayed* frame of a window (the one with the
//! largest `sent − received`) and assumes that frame's delay was at most
//! one RTT: the offset lies in `[lo, lo + rtt]` of that frame. A sample
//! whose whole interval lies below that was delayed by more than an RTT (a
//! large batch, a busy reader) or its clock stepped back: the two cannot be
//! told apart, but in both cases the offset now lies in `[its lo, best hi]`
//! (a delay leaves the old interval true; a step back only lowers the
//! offset, never below the new lower bound). That batch is judged by the
//! widened interval while it stays inside the tolerance, and by the best
//! frame's interval when a long delay takes it outside (a backlog of
//! seconds is far more common than a clock stepping back); either leaves
//! the estimate for later frames alone. Three such samples in a row mean
//! the clock stepped, and the window starts over from them: **the limit**
//! is that a clock stepping back is recognised from its third frame, so
//! two batches after a step back are judged by the old estimate.
//!
//! An agent is trusted for remote attribution only while its whole interval
//! lies within `max_offset_ns` of our clock. Then any two trusted agents'
//! clocks differ by at most twice that, which is the tolerance the
//! ownership table and the counterpart match use. Pure: no clock of its
//! own; every call passes the times.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;

/// One frame's timing, as the receiver measured it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    /// When the sender sent the frame, on the sender's clock (Unix ns).
    pub sent_ns: u64,
    /// When this collector read it, on its clock (Unix ns).
    pub received_ns: u64,
    /// The connection's round-trip time then.
    pub rtt_ns: u64,
}

/// What a batch's clock says about its flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockVerdict {
    /// The sender's clock is within tolerance: its offset lies in
    /// `[lo_ns, hi_ns]` (sender minus collector).
    Trusted { lo_ns: i64, hi_ns: i64 },
    /// Off by more than the tolerance (or no measurement at all): its
    /// flows are not used to learn or to answer ownership.
    Skewed,
}

impl ClockVerdict {
    pub fn is_trusted(&self) -> bool {
        matches!(self, Self::Trusted { .. })
    }

    /// Our clock's time for the sender's instant `t_ns`, at the earliest it
    /// can be (for watermarks: never claims completeness too far).
    pub fn earliest_local(&self, t_ns: u64) -> Option<u64> {
        match *self {
            Self::Trusted { hi_ns, .. } => Some(t_ns.saturating_add_signed(-hi_ns)),
            _ => None,
        }
    }
}

/// Samples kept per sender.
const WINDOW: usize = 32;
/// Contradicting samples in a row that mean the clock stepped.
const STEP_AFTER: usize = 3;

/// One sender's recent samples as `(lo, rtt)`.
#[derive(Debug, Default, Clone)]
struct SenderClock {
    samples: VecDeque<(i64, u64)>,
    contradicting: VecDeque<(i64, u64)>,
    verdict: Option<ClockVerdict>,
}

/// Trusted when the offset interval `[lo, hi]` lies within `±max`.
fn judge(lo: i64, hi: i64, max: i64) -> ClockVerdict {
    if lo >= -max && hi <= max {
        ClockVerdict::Trusted {
            lo_ns: lo,
            hi_ns: hi,
        }
    } else {
        ClockVerdict::Skewed
    }
}

impl SenderClock {
    fn best(&self) -> Option<(i64, u64)> {
        self.samples.iter().copied().max_by_key(|&(lo, _)| lo)
    }

    fn add(&mut self, lo: i64, rtt: u64, max_offset_ns: u64) -> ClockVerdict {
        let max = i64::try_from(max_offset_ns).unwrap_or(i64::MAX);
        let hi = lo.saturating_add(rtt as i64);
        let best = self.best();
        if let Some((best_lo, best_rtt)) = best.filter(|&(best_lo, _)| hi < best_lo) {
            self.contradicting.push_back((lo, rtt));
            if self.contradicting.len() < STEP_AFTER {
                // Delayed or stepped back: the offset lies in [lo, best hi];
                // past the tolerance, most likely delayed: the best interval.
                let best_hi = best_lo.saturating_add(best_rtt as i64);
                let verdict = judge(if lo >= -max { lo } else { best_lo }, best_hi, max);
                self.verdict = Some(verdict);
                return verdict;
            }
            self.samples = std::mem::take(&mut self.contradicting);
        } else {
            self.contradicting.clear();
            self.samples.push_back((lo, rtt));
            if self.samples.len() > WINDOW {
                self.samples.pop_front();
            }
        }
        let (lo, rtt) = self.best().expect("a sample was just added");
        let verdict = judge(lo, lo.saturating_add(rtt as i64), max);
        self.verdict = Some(verdict);
        verdict
    }
}

/// Every sender's clock, as measured.
#[derive(Debug, Clone)]
pub struct ClockOffsets {
    max_offset_ns: u64,
    senders: FxHashMap<String, SenderClock>,
}

impl ClockOffsets {
    /// Senders whose clocks may be up to `max_offset_ns` from ours are
    /// trusted.
    pub fn new(max_offset_ns: u64) -> Self {
        Self {
            max_offset_ns,
            senders: FxHashMap::default(),
        }
    }

    /// Takes `sender`'s sample (if its frame had one) and returns the
    /// verdict for the batch it came with. A frame without a send time
    /// (an older sender) gets the sender's last verdict, or `Skewed` when
    /// it has none.
    pub fn observe(&mut self, sender: &str, sample: Option<ClockSample>) -> ClockVerdict {
        let Some(s) = sample else {
            return self
                .senders
                .get(sender)
                .and_then(|c| c.verdict)
                .unwrap_or(ClockVerdict::Skewed);
        };
        let lo = (s.sent_ns as i128 - s.received_ns as i128)
            .clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        let clock = match self.senders.get_mut(sender) {
            Some(c) => c,
            None => self.senders.entry(sender.to_owned()).or_default(),
        };
        clock.add(lo, s.rtt_ns, self.max_offset_ns)
    }

    /// Each sender's best estimate (the middle of its interval) and its
    /// last verdict, for metrics.
    pub fn estimates(&self) -> impl Iterator<Item = (&str, i64, ClockVerdict)> {
        self.senders.iter().filter_map(|(name, c)| {
            let (lo, rtt) = c.best()?;
            let verdict = c.verdict?;
            Some((name.as_str(), lo.saturating_add((rtt / 2) as i64), verdict))
        })
    }

    /// Senders measured.
    pub fn len(&self) -> usize {
        self.senders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000 * MS;
    const T0: u64 = 1_767_225_600 * S;

    /// A frame sent at our time `at` by a sender `offset` ahead, arriving
    /// `delay` later.
    fn sample(at: u64, offset: i64, delay: u64, rtt: u64) -> Option<ClockSample> {
        Some(ClockSample {
            sent_ns: at.saturating_add_signed(offset),
            received_ns: at + delay,
            rtt_ns: rtt,
        })
    }

    fn contains(v: ClockVerdict, offset: i64) -> bool {
        matches!(v, ClockVerdict::Trusted { lo_ns, hi_ns } if lo_ns <= offset && offset <= hi_ns)
    }

    #[test]
    fn a_close_clock_is_trusted_and_its_interval_holds_the_true_offset() {
        let mut c = ClockOffsets::new(2 * S);
        let offset = 300 * MS as i64;
        for i in 0..10 {
            let v = c.observe("a", sample(T0 + i * S, offset, (i % 3) * MS, 4 * MS));
            assert!(contains(v, offset), "{v:?}");
        }
        let (_, estimate, _) = c.estimates().next().unwrap();
        assert!(estimate.abs_diff(offset) <= 2 * MS, "{estimate}");
    }

    #[test]
    fn an_agent_minutes_off_is_skewed_either_way() {
        let mut c = ClockOffsets::new(2 * S);
        for (name, offset) in [("ahead", 180 * S as i64), ("behind", -(180 * S as i64))] {
            for i in 0..5 {
                let v = c.observe(name, sample(T0 + i * S, offset, MS, 2 * MS));
                assert_eq!(v, ClockVerdict::Skewed, "{name}");
            }
        }
        // Just past the tolerance, counting the interval's width.
        let v = c.observe("edge", sample(T0, 2 * S as i64 - MS as i64, 0, 2 * MS));
        assert_eq!(v, ClockVerdict::Skewed);
    }

    #[test]
    fn a_delayed_frame_widens_only_its_own_batch_s_interval() {
        let mut c = ClockOffsets::new(2 * S);
        let offset = -(500 * MS as i64);
        let first = c.observe("a", sample(T0, offset, MS, 2 * MS));
        // Held up for 1 s (a large batch, a busy reader): its batch is
        // judged by the widened interval, still inside the tolerance.
        let v = c.observe("a", sample(T0 + S, offset, S, 2 * MS));
        assert!(contains(v, offset), "{v:?}");
        assert!(
            matches!(v, ClockVerdict::Trusted { lo_ns, .. } if lo_ns <= offset - 900 * MS as i64)
        );
        // The next frame is judged by the best one again.
        let v = c.observe("a", sample(T0 + 2 * S, offset, MS, 2 * MS));
        assert_eq!(v, first);
        // Held up so long the widened interval leaves the tolerance: taken
        // as the delay it most likely is.
        let v = c.observe("a", sample(T0 + 3 * S, offset, 5 * S, 2 * MS));
        assert_eq!(v, first);
    }

    #[test]
    fn a_clock_that_steps_is_bounded_then_measured_again() {
        let mut c = ClockOffsets::new(10 * S);
        for i in 0..5 {
            c.observe("a", sample(T0 + i * S, 0, MS, 2 * MS));
        }
        // The agent's clock steps 4 s back.
        let stepped = -(4 * S as i64);
        let verdicts: Vec<_> = (5..10)
            .map(|i| c.observe("a", sample(T0 + i * S, stepped, MS, 2 * MS)))
            .collect();
        // Widened at first (it might have been a delay), always holding the
        // true offset; measured again from the third on.
        assert!(
            verdicts.iter().all(|v| contains(*v, stepped)),
            "{verdicts:?}"
        );
        assert!(matches!(verdicts[0], ClockVerdict::Trusted { hi_ns, .. } if hi_ns >= 0));
        assert!(matches!(verdicts[2], ClockVerdict::Trusted { hi_ns, .. } if hi_ns < 0));
        // A step back past the tolerance: the limit is two frames judged
        // by the old estimate, then it is skewed.
        let before = verdicts[4];
        let far = -(30 * S as i64);
        let verdicts: Vec<_> = (10..13)
            .map(|i| c.observe("a", sample(T0 + i * S, far, MS, 2 * MS)))
            .collect();
        assert_eq!(verdicts[..2], [before; 2]);
        assert_eq!(verdicts[2], ClockVerdict::Skewed);
        // Stepping forward needs no wait: the newest frame is the best.
        let v = c.observe("a", sample(T0 + 20 * S, 3 * S as i64, MS, 2 * MS));
        assert!(contains(v, 3 * S as i64), "{v:?}");
    }

    #[test]
    fn a_frame_without_a_send_time_keeps_the_last_verdict() {
        let mut c = ClockOffsets::new(2 * S);
        assert_eq!(c.observe("old", None), ClockVerdict::Skewed);
        let v = c.observe("a", sample(T0, 0, MS, 2 * MS));
        assert_eq!(c.observe("a", None), v);
    }

    #[test]
    fn earliest_local_time_is_conservative() {
        let v = ClockVerdict::Trusted {
            lo_ns: -(MS as i64),
            hi_ns: 3 * MS as i64,
        };
        assert_eq!(v.earliest_local(T0), Some(T0 - 3 * MS));
        assert_eq!(ClockVerdict::Skewed.earliest_local(T0), None);
    }
}
