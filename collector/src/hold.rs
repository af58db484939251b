//! The hold queue (the method's point 3): flows wait here for a while after
//! they arrive, so the heartbeats that tell who owned their remote address
//! at their start have time to arrive too (from other agents, through other
//! collectors and Kafka). Pure: the caller passes the time.
//!
//! Every flow of a batch arrives at once, so the queue holds whole batches
//! in arrival order; with one hold time for all, arrival order is release
//! order.

use std::collections::VecDeque;

use flowattr_model::FlowBatch;

/// A batch waiting in the queue, with when it may leave.
#[derive(Debug)]
struct Held {
    release_ns: u64,
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
        self.queue.push_back(Held {
            release_ns: arrived_ns.saturating_add(self.hold_ns),
            batch,
            forwarded,
        });
    }

    /// The batches whose hold ended by `now_ns`, oldest first.
    pub fn release(&mut self, now_ns: u64) -> Vec<Released> {
        let mut out = Vec::new();
        while self.queue.front().is_some_and(|h| h.release_ns <= now_ns) {
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
    use flowattr_model::{AttributedFlow, Flow};

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
            flows: vec![AttributedFlow::new(flow); n],
        }
    }

    #[test]
    fn batches_leave_after_the_hold_in_arrival_order() {
        let mut q = HoldQueue::new(60, 1000);
        q.push(batch(0, 3), false, 100);
        q.push(batch(1, 2), true, 130);
        assert!(q.release(159).is_empty());
        assert_eq!((q.flows(), q.batches()), (5, 2));
        let out = q.release(160);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].batch.seq, out[0].forwarded), (0, false));
        assert!(q.release(189).is_empty(), "the second batch leaves at 190");
        let out = q.release(1000);
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
        assert_eq!(q.release(60).len(), 2);
        assert!(!q.is_full());
    }
}
