//! A host's identity source (IPMan's state, the instance identity
//! document) as its agent reads it, and the identity plugins' rule for
//! answering from it.
//!
//! The source records each assignment with its real times: an address, or
//! a block of ports on a node's shared IPv4 address, held by a workload
//! over `[since, until)`. It may **lag** the real assignment (at time `p`
//! it shows what held at `p − lag`, and knows itself current only up to
//! there) or **lead** it (it shows what will hold at `p + lead`: hand-overs
//! already decided). An assignment's end is known when it starts (the
//! simulator schedules every instance's stop up front), so a view of any
//! instant is exact: an assignment is in it once it has started by then,
//! and ended in it once it has ended by then.
//!
//! The rule ([`Source::identify`]): the assignment of the query's key that
//! contains the query time in the current view, valid until the instant
//! the source is known current; a query at or past that instant is not
//! answered (`source-unavailable`). That last clause is the protection:
//! with `protect` off, the source counts as current when it was read, and a
//! lagging view names an address's previous holder for a flow of its next.
//!
//! Pure: all times are passed in (true, simulated time).

use std::{net::IpAddr, sync::Arc};

use flowattr_model::{TimeRange, UnattributedReason, Workload};
use rustc_hash::FxHashMap;

/// What an assignment is for: a whole address, or one block of ports on a
/// shared IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub ip: IpAddr,
    /// [`WHOLE`] for a whole address.
    pub block: u16,
}

/// The block of a whole-address [`Key`].
pub const WHOLE: u16 = u16::MAX;

impl Key {
    pub fn whole(ip: IpAddr) -> Self {
        Self { ip, block: WHOLE }
    }
}

#[derive(Debug)]
struct Span {
    since_ns: u64,
    until_ns: u64,
    workload: Arc<Workload>,
}

/// One host's source: every assignment it has recorded, and how far behind
/// (positive) or ahead (negative) of the real assignment it runs.
#[derive(Debug, Default)]
pub struct Source {
    lag_ns: i64,
    spans: FxHashMap<Key, Vec<Span>>,
}

/// An answer: the workload and the range it holds for, or why there is none.
pub type Answer = Result<(Arc<Workload>, TimeRange), UnattributedReason>;

impl Source {
    /// A source `lag_ns` behind the real assignment (negative: ahead).
    pub fn new(lag_ns: i64) -> Self {
        Self {
            lag_ns,
            spans: FxHashMap::default(),
        }
    }

    pub fn lag_ns(&self) -> i64 {
        self.lag_ns
    }

    /// `workload` holds `key` over `[since_ns, until_ns)`. Assignments of
    /// one key are recorded in time order and never overlap.
    pub fn assign(&mut self, key: Key, since_ns: u64, until_ns: u64, workload: Arc<Workload>) {
        self.spans.entry(key).or_default().push(Span {
            since_ns,
            until_ns,
            workload,
        });
    }

    /// Who held `key` at `query_ns`, asked at `now_ns`.
    pub fn identify(&self, key: Key, query_ns: u64, now_ns: u64, protect: bool) -> Answer {
        let view = now_ns.saturating_add_signed(-self.lag_ns);
        // Known current up to the view; unprotected, up to the read.
        let current = if protect { view } else { view.max(now_ns) };
        if query_ns >= current {
            return Err(UnattributedReason::SourceUnavailable);
        }
        let Some(spans) = self.spans.get(&key) else {
            return Err(UnattributedReason::NotFound);
        };
        for span in spans.iter().rev() {
            if span.since_ns > view {
                continue; // not in the view yet
            }
            // An end still ahead of the view is not known: held, for all it says.
            let until = if span.until_ns <= view {
                span.until_ns
            } else {
                u64::MAX
            };
            if span.since_ns <= query_ns && query_ns < until {
                let valid = TimeRange::new(span.since_ns, until.min(current));
                return Ok((span.workload.clone(), valid));
            }
            if span.since_ns <= query_ns {
                break; // older spans ended before this one began
            }
        }
        Err(UnattributedReason::Gap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn w(id: &str) -> Arc<Workload> {
        Arc::new(Workload::with_id(id))
    }

    /// `a` holds the address for [0, 100 s), `b` from 105 s.
    fn handed_over(lag_ns: i64) -> (Source, Key) {
        let key = Key::whole("10.0.0.1".parse().unwrap());
        let mut s = Source::new(lag_ns);
        s.assign(key, 0, 100 * S, w("a"));
        s.assign(key, 105 * S, 500 * S, w("b"));
        (s, key)
    }

    fn id(a: &Answer) -> Result<&str, UnattributedReason> {
        a.as_ref().map(|(w, _)| w.id.as_str()).map_err(|r| *r)
    }

    #[test]
    fn a_current_source_answers_with_the_holder_and_its_range() {
        let (s, key) = handed_over(0);
        let a = s.identify(key, 50 * S, 60 * S, true);
        assert_eq!(id(&a), Ok("a"));
        assert_eq!(a.unwrap().1, TimeRange::new(0, 60 * S), "cut at the read");
        assert_eq!(
            id(&s.identify(key, 102 * S, 110 * S, true)),
            Err(UnattributedReason::Gap)
        );
        assert_eq!(id(&s.identify(key, 106 * S, 110 * S, true)), Ok("b"));
        let other = Key::whole("10.0.0.2".parse().unwrap());
        assert_eq!(
            id(&s.identify(other, 106 * S, 110 * S, true)),
            Err(UnattributedReason::NotFound)
        );
    }

    #[test]
    fn a_lagging_source_does_not_answer_past_where_it_is_current() {
        let (s, key) = handed_over(10 * S as i64);
        // At 112 s it shows 102 s: `a` released, `b` not yet there.
        assert_eq!(
            id(&s.identify(key, 106 * S, 112 * S, true)),
            Err(UnattributedReason::SourceUnavailable)
        );
        assert_eq!(id(&s.identify(key, 106 * S, 120 * S, true)), Ok("b"));
        // Without the protection it answers from the stale view.
        let (s, key) = handed_over(10 * S as i64);
        assert_eq!(
            id(&s.identify(key, 106 * S, 108 * S, false)),
            Ok("a"),
            "wrong"
        );
    }

    #[test]
    fn a_leading_source_answers_with_the_real_holder() {
        let (s, key) = handed_over(-(20 * S as i64));
        let a = s.identify(key, 99 * S, 99 * S + 1, true);
        assert_eq!(id(&a), Ok("a"));
        assert_eq!(a.unwrap().1.end_ns, 100 * S, "its end already known");
        assert_eq!(
            id(&s.identify(key, 104 * S, 104 * S + 1, true)),
            Err(UnattributedReason::Gap)
        );
    }
}
