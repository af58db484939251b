//! Warnings about one agent's misbehaviour, logged at most once a minute per
//! agent (on the core's clock); what happens in between is still counted
//! in the metrics.

use rustc_hash::FxHashMap;

/// An agent's warnings are logged at most this often.
const EVERY_NS: u64 = 60_000_000_000;

/// When each agent was last warned about.
#[derive(Default)]
pub(super) struct Warnings {
    last: FxHashMap<String, u64>,
}

impl Warnings {
    /// Whether a warning about `agent` may be logged at `now`.
    pub fn allow(&mut self, agent: &str, now: u64) -> bool {
        match self.last.get_mut(agent) {
            Some(at) if now.saturating_sub(*at) < EVERY_NS => false,
            Some(at) => {
                *at = now;
                true
            }
            None => {
                self.last.insert(agent.to_owned(), now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_a_minute_per_agent() {
        let mut w = Warnings::default();
        assert!(w.allow("a", 0));
        assert!(!w.allow("a", EVERY_NS - 1));
        assert!(w.allow("b", 1));
        assert!(w.allow("a", EVERY_NS));
    }
}
