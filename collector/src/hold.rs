//! The hold queue (the method's point 3): flows wait here after they
//! arrive until the heartbeats that tell who owned their remote address at
//! their start can all have arrived too (from other agents, through other
//! collectors and Kafka): until they are complete (see
//! [`crate::completeness`]), and at most `hold`. Pure: the caller passes the
//! time and says what is complete.
//!
//! Every flow of a batch arrives at once, so the queue holds whole batches
//! in arrival order and releases them in that order: the oldest batch
//! leaves once complete or once its hold is over, and those behind it
//! follow as soon as they may too.

use std::collections::VecDeque;

use flowattr_model::{AttributedFlow, FlowBatch};

/// A batch waiting in the queue, with when it may leave.
#[derive(Debug)]
struct Held {
    release_ns: u64,
    /// The latest end of its flows: all complete once every agent reported
    /// past it.
    latest_end_ns: u64,
    /// Its first flows known complete: checked again from here.
    complete: usize,
    batch: FlowBatch,
    /// Forwarded by a collector of another region (no heartbeats, no
    /// forwarding again).
    forwarded: bool,
}

/// A batch that has waited long enough.
#[derive(Debug)]
pub struct Released {
    pub batch: FlowBatch,
    pub forwarded: bool,
}

/// Batches waiting for their remote side's heartbeats.
#[derive(Debug)]
pub struct HoldQueue {
    hold_ns: u64,
    max_flows: usize,
    queue: VecDeque<Held>,
    flows: usize,
}

impl HoldQueue {
    /// Holds each batch `hold_ns` after arrival; [`HoldQueue::is_full`]
    /// once `max_flows` flows wait.
    pub fn new(hold_ns: u64, max_flows: usize) -> Self {
        Self {
            hold_ns,
            max_flows,
            queue: VecDeque::new(),
            flows: 0,
        }
    }

    /// Takes a batch that arrived at `arrived_ns`.
    pub fn push(&mut self, batch: FlowBatch, forwarded: bool, arrived_ns: u64) {
        self.flows += batch.flows.len();
        let latest_end_ns = batch
            .flows
            .iter()
            .map(|f| crate::completeness::covered_until(&f.flow))
            .max()
            .unwrap_or(0);
        self.queue.push_back(Held {
            release_ns: arrived_ns.saturating_add(self.hold_ns),
            latest_end_ns,
            complete: 0,
            batch,
            forwarded,
        });
    }

    /// The batches that may leave at `now_ns`, oldest first: each whose
    /// hold is over or whose flows are all complete, stopping at the first
    /// that may not. `all_complete(t)`: every flow that ended by `t` is;
    /// else each flow is asked `complete(flow)`. Flows found complete are
    /// not asked again (what is complete stays so for release).
    pub fn release(
        &mut self,
        now_ns: u64,
        all_complete: impl Fn(u64) -> bool,
        complete: impl Fn(&AttributedFlow) -> bool,
    ) -> Vec<Released> {
        let mut out = Vec::new();
        while let Some(h) = self.queue.front_mut() {
            let leaves = h.release_ns <= now_ns || all_complete(h.latest_end_ns) || {
                let flows = &h.batch.flows;
                while h.complete < flows.len() && complete(&flows[h.complete]) {
                    h.complete += 1;
                }
                h.complete == flows.len()
            };
            if !leaves {
                break;
            }
            out.extend(self.pop());
        }
        out
    }

    fn pop(&mut self) -> Option<Released> {
        let held = self.queue.pop_front()?;
        self.flows -= held.batch.flows.len();
        Some(Released {
            batch: held.batch,
            forwarded: held.forwarded,
        })
    }

    /// Flows waiting.
    pub fn flows(&self) -> usize {
        self.flows
    }

    /// Batches waiting.
    pub fn batches(&self) -> usize {
        self.queue.len()
    }

    /// Whether the queue holds its bound of flows: the collector stops
    /// accepting batches (agents wait) until some leave.
    pub fn is_full(&self) -> bool {
        self.flows >= self.max_flows
    }
}

#[cfg(test)]
mod tests {
    use flowattr_model::Flow;

    use super::*;

    fn batch(seq: u64, n: usize) -> FlowBatch {
        let flow = Flow::tcp(
            "10.0.0.1:1".parse().unwrap(),
            "10.0.0.2:2".parse().unwrap(),
            1,
        );
        FlowBatch {
            agent: "a".into(),
            incarnation: 1,
            seq,
            created_ns: 0,
            complete_until_ns: 0,
            flows: vec![AttributedFlow::new(flow); n],
        }
    }

    #[test]
    fn batches_leave_after_the_hold_in_arrival_order() {
        let never = |_| false;
        let none = |_: &AttributedFlow| false;
        let mut q = HoldQueue::new(60, 1000);
        q.push(batch(0, 3), false, 100);
        q.push(batch(1, 2), true, 130);
        assert!(q.release(159, never, none).is_empty());
        assert_eq!((q.flows(), q.batches()), (5, 2));
        let out = q.release(160, never, none);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].batch.seq, out[0].forwarded), (0, false));
        assert!(
            q.release(189, never, none).is_empty(),
            "the second batch leaves at 190"
        );
        let out = q.release(1000, never, none);
        assert_eq!((out[0].batch.seq, out[0].forwarded), (1, true));
        assert_eq!((q.flows(), q.batches()), (0, 0));
    }

    #[test]
    fn full_at_the_flow_bound() {
        let mut q = HoldQueue::new(60, 5);
        q.push(batch(0, 4), false, 0);
        assert!(!q.is_full());
        q.push(batch(1, 1), false, 0);
        assert!(q.is_full());
        assert_eq!(q.release(60, |_| false, |_| false).len(), 2);
        assert!(!q.is_full());
    }

    #[test]
    fn complete_batches_leave_before_their_hold_but_never_overtake() {
        let mut q = HoldQueue::new(60, 1000);
        let ending = |seq, end_ns| {
            let mut b = batch(seq, 1);
            b.flows[0].flow.end_ns = end_ns;
            b
        };
        q.push(ending(0, 50), false, 100);
        q.push(ending(1, 20), false, 110);
        q.push(ending(2, 10), false, 120);
        // Complete up to 30: the first batch (ending at 50) is not, so
        // nothing behind it leaves either.
        let upto = |w: u64| move |end: u64| end <= w;
        let none = |_: &AttributedFlow| false;
        assert!(q.release(101, upto(30), none).is_empty());
        let out = q.release(102, upto(50), none);
        let seqs: Vec<u64> = out.iter().map(|r| r.batch.seq).collect();
        assert_eq!(seqs, [0, 1, 2]);
        // An incomplete batch still leaves when its hold is over.
        q.push(ending(3, 500), false, 200);
        assert!(q.release(259, upto(50), none).is_empty());
        assert_eq!(q.release(260, upto(50), none).len(), 1);
    }

    #[test]
    fn a_batch_leaves_once_each_of_its_flows_is_complete() {
        let mut q = HoldQueue::new(60, 1000);
        let mut b = batch(0, 3);
        for (i, f) in b.flows.iter_mut().enumerate() {
            f.flow.start_ns = i as u64;
        }
        q.push(b, false, 0);
        let never = |_| false;
        let asked = std::cell::Cell::new(0);
        let first_two = |f: &AttributedFlow| {
            asked.set(asked.get() + 1);
            f.flow.start_ns < 2
        };
        assert!(q.release(1, never, first_two).is_empty());
        assert_eq!(asked.get(), 3, "two complete, the third not");
        asked.set(0);
        let all = |f: &AttributedFlow| {
            asked.set(asked.get() + 1);
            f.flow.start_ns < 3
        };
        assert_eq!(q.release(2, never, all).len(), 1);
        assert_eq!(asked.get(), 1, "complete flows are not asked again");
    }
}
