//! Shared IPv4 addresses: which workload holds a port at a time.
//!
//! IPv6-only containers reach IPv4 through their host's shared IPv4 address;
//! IPMan gives each a port range from the address's pool. The allocations are
//! indexed by *segments*: the pool is cut at every allocation's first port and
//! one past its last, so each segment is covered by the same allocations at
//! every port, and each segment keeps those allocations as time spans sorted
//! for binary search. A lookup is two binary searches. (Allocations that
//! partly overlap in ports at different times put one span into several
//! segments; IPMan's fixed-size blocks never do.)

use crate::spans::{self, Span};

/// Ports `[first, last]` with the same allocations at every port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Segment {
    first: u16,
    last: u16,
    spans: Vec<Span>,
}

/// One allocation before indexing: inclusive ports and its span.
#[derive(Debug, Clone, Copy)]
pub struct Allocation {
    pub first: u16,
    pub last: u16,
    pub span: Span,
}

/// What a shared address says about one port at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortLookup<'a> {
    /// The allocation holding the port at that time.
    Held(&'a Span),
    /// Inside the pool, but nobody held the port at that time.
    Gap,
    /// Outside the pool: the host's own traffic, not a container's.
    OutsidePool,
}

/// A shared address's pool and its indexed allocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedAddress {
    pool: (u16, u16),
    segments: Vec<Segment>,
}

impl SharedAddress {
    /// Indexes `allocations`, which must lie inside `pool` (inclusive). Fails
    /// with the entries of two allocations that hold a port at the same time.
    pub fn new(pool: (u16, u16), allocations: &[Allocation]) -> Result<Self, (u32, u32)> {
        let mut bounds: Vec<u32> = allocations
            .iter()
            .flat_map(|a| [u32::from(a.first), u32::from(a.last) + 1])
            .collect();
        bounds.sort_unstable();
        bounds.dedup();
        let mut segments: Vec<Segment> = bounds
            .windows(2)
            .map(|w| Segment {
                // Bounds come from u16 ports (and port + 1), so these fit.
                first: w[0] as u16,
                last: (w[1] - 1) as u16,
                spans: Vec::new(),
            })
            .collect();
        for a in allocations {
            // `a.first` is a bound, so a segment starts exactly there, and the
            // segments up to `a.last` are exactly the allocation's ports.
            let start = segments.partition_point(|s| s.first < a.first);
            for segment in segments[start..]
                .iter_mut()
                .take_while(|s| s.last <= a.last)
            {
                segment.spans.push(a.span);
            }
        }
        segments.retain(|s| !s.spans.is_empty());
        for segment in &mut segments {
            spans::sort_and_check(&mut segment.spans)?;
        }
        Ok(Self { pool, segments })
    }

    /// Who held `port` at `time_ns`.
    pub fn lookup(&self, port: u16, time_ns: u64) -> PortLookup<'_> {
        if port < self.pool.0 || port > self.pool.1 {
            return PortLookup::OutsidePool;
        }
        let i = self.segments.partition_point(|s| s.first <= port);
        match self.segments[..i].last() {
            Some(segment) if port <= segment.last => {
                spans::find(&segment.spans, time_ns).map_or(PortLookup::Gap, PortLookup::Held)
            }
            _ => PortLookup::Gap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(first: u16, last: u16, since_ns: u64, until_ns: u64, entry: u32) -> Allocation {
        Allocation {
            first,
            last,
            span: Span {
                since_ns,
                until_ns,
                workload: entry,
                entry,
            },
        }
    }

    fn held(shared: &SharedAddress, port: u16, t: u64) -> Option<u32> {
        match shared.lookup(port, t) {
            PortLookup::Held(span) => Some(span.entry),
            _ => None,
        }
    }

    #[test]
    fn ports_and_times_select_the_allocation() {
        let shared = SharedAddress::new(
            (40000, 59999),
            &[
                alloc(40000, 40999, 100, 200, 0),
                alloc(40000, 40999, 300, u64::MAX, 1),
                alloc(41000, 41999, 100, 200, 2),
                // Differently cut ranges at other times.
                alloc(40500, 41499, 200, 300, 3),
                alloc(41500, 41999, 200, u64::MAX, 4),
            ],
        )
        .unwrap();
        assert_eq!(held(&shared, 40000, 100), Some(0));
        assert_eq!(held(&shared, 40999, 199), Some(0));
        assert_eq!(held(&shared, 40000, 250), None);
        assert_eq!(held(&shared, 40700, 250), Some(3));
        assert_eq!(held(&shared, 40700, 300), Some(1));
        assert_eq!(held(&shared, 41000, 150), Some(2));
        assert_eq!(held(&shared, 41499, 250), Some(3));
        assert_eq!(held(&shared, 41999, 1_000), Some(4));
        assert_eq!(held(&shared, 41200, 1_000), None);
        assert_eq!(shared.lookup(40000, 250), PortLookup::Gap);
        assert_eq!(shared.lookup(42000, 150), PortLookup::Gap);
        assert_eq!(shared.lookup(59999, 150), PortLookup::Gap);
        assert_eq!(shared.lookup(39999, 150), PortLookup::OutsidePool);
        assert_eq!(shared.lookup(60000, 150), PortLookup::OutsidePool);
    }

    #[test]
    fn the_last_port_of_the_port_space_works() {
        let shared = SharedAddress::new((65000, 65535), &[alloc(65500, 65535, 0, 10, 0)]).unwrap();
        assert_eq!(held(&shared, 65535, 5), Some(0));
        assert_eq!(held(&shared, 65499, 5), None);
    }

    #[test]
    fn overlapping_ports_at_overlapping_times_are_refused() {
        let err = SharedAddress::new(
            (40000, 59999),
            &[
                alloc(40000, 40999, 100, 200, 0),
                alloc(40990, 41999, 150, 400, 1),
            ],
        );
        assert_eq!(err, Err((0, 1)));
        // The same ports at disjoint times, or disjoint ports at the same time, are fine.
        assert!(
            SharedAddress::new(
                (40000, 59999),
                &[
                    alloc(40000, 40999, 100, 200, 0),
                    alloc(40990, 41999, 200, 400, 1)
                ],
            )
            .is_ok()
        );
        assert!(
            SharedAddress::new(
                (40000, 59999),
                &[
                    alloc(40000, 40999, 100, 200, 0),
                    alloc(41000, 41999, 100, 200, 1)
                ],
            )
            .is_ok()
        );
    }
}
