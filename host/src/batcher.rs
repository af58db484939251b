//! Batching: flows collect into a batch that closes when it is full or old
//! enough, and every batch carries the agent's completeness watermark. Pure:
//! the caller passes the time and the watermark.
//!
//! **The watermark** (`FlowBatch::complete_until_ns`). With each push the
//! caller states how far the pushed flows are complete: every flow whose
//! kernel record was written before `complete_ns` is among them or was
//! pushed before (the agent measures it at the ring buffer; see
//! `agent::complete_until`). A batch closed after a push carries that push's
//! watermark; a batch that fills up *during* a push holds only part of it,
//! so it carries the watermark of the push before. The watermark never goes
//! back, even if the caller's does (a clock stepped back).
//!
//! **Keep-alive.** An agent with nothing to ship must still advance its
//! watermark, or collectors would wait for it: when `max_age` passes since
//! the last batch with no flow, an empty batch closes.

use std::time::Duration;

use flowattr_model::{AttributedFlow, FlowBatch};

/// Collects flows into [`FlowBatch`]es.
pub struct Batcher {
    agent: String,
    incarnation: u64,
    max_flows: usize,
    max_age_ns: u64,
    next_seq: u64,
    open: Vec<AttributedFlow>,
    /// When the open batch received its first flow.
    opened_ns: Option<u64>,
    /// When the last batch closed (or the batcher started).
    closed_ns: u64,
    /// The watermark of the flows pushed so far.
    complete_ns: u64,
    /// The watermark the last batch carried.
    shipped_complete_ns: u64,
}

impl Batcher {
    /// `incarnation` is when this run of the agent started (see
    /// [`FlowBatch::incarnation`]); `now_ns` starts the wait for the first
    /// (possibly empty) batch.
    pub fn new(
        agent: String,
        incarnation: u64,
        max_flows: usize,
        max_age: Duration,
        now_ns: u64,
    ) -> Self {
        Self {
            agent,
            incarnation,
            max_flows: max_flows.max(1),
            max_age_ns: max_age.as_nanos().min(u64::MAX as u128) as u64,
            next_seq: 0,
            open: Vec::new(),
            opened_ns: None,
            closed_ns: now_ns,
            complete_ns: 0,
            shipped_complete_ns: 0,
        }
    }

    /// Adds flows at `now_ns`, complete up to `complete_ns` (see the module
    /// documentation); returns every batch that filled up.
    pub fn push(
        &mut self,
        flows: Vec<AttributedFlow>,
        complete_ns: u64,
        now_ns: u64,
    ) -> Vec<FlowBatch> {
        let mut full = Vec::new();
        for flow in flows {
            self.opened_ns.get_or_insert(now_ns);
            self.open.push(flow);
            if self.open.len() >= self.max_flows {
                full.push(self.take(now_ns));
            }
        }
        self.complete_ns = self.complete_ns.max(complete_ns);
        full
    }

    /// When the open batch must be closed: `max_age` after its first flow,
    /// or after the last batch when it has none.
    pub fn deadline_ns(&self) -> u64 {
        self.opened_ns
            .unwrap_or(self.closed_ns)
            .saturating_add(self.max_age_ns)
    }

    /// The open batch, empty or not, if it is due at `now_ns`.
    pub fn due(&mut self, now_ns: u64) -> Option<FlowBatch> {
        (now_ns >= self.deadline_ns()).then(|| self.take(now_ns))
    }

    /// Closes the open batch now if it holds flows or would advance the
    /// watermark (shutdown).
    pub fn close(&mut self, now_ns: u64) -> Option<FlowBatch> {
        (!self.open.is_empty() || self.complete_ns > self.shipped_complete_ns)
            .then(|| self.take(now_ns))
    }

    fn take(&mut self, now_ns: u64) -> FlowBatch {
        let batch = FlowBatch {
            agent: self.agent.clone(),
            incarnation: self.incarnation,
            seq: self.next_seq,
            created_ns: now_ns,
            complete_until_ns: self.complete_ns,
            flows: std::mem::take(&mut self.open),
        };
        self.next_seq += 1;
        self.opened_ns = None;
        self.closed_ns = now_ns;
        self.shipped_complete_ns = self.complete_ns;
        batch
    }
}

#[cfg(test)]
mod tests {
    use flowattr_model::Flow;

    use super::*;

    fn flows(n: usize) -> Vec<AttributedFlow> {
        let flow = Flow::tcp(
            "10.0.0.1:1".parse().unwrap(),
            "10.0.0.2:80".parse().unwrap(),
            1,
        );
        vec![AttributedFlow::new(flow); n]
    }

    #[test]
    fn closes_on_size_with_increasing_sequence_numbers() {
        let mut b = Batcher::new("h".into(), 7, 3, Duration::from_secs(60), 0);
        let full = b.push(flows(7), 90, 100);
        assert_eq!(
            full.iter()
                .map(|b| (b.seq, b.flows.len()))
                .collect::<Vec<_>>(),
            [(0, 3), (1, 3)]
        );
        let last = b.close(200).unwrap();
        assert_eq!((last.seq, last.flows.len(), last.created_ns), (2, 1, 200));
        assert!(b.close(300).is_none(), "nothing left");
    }

    #[test]
    fn closes_on_age_counted_from_the_first_flow() {
        let mut b = Batcher::new("h".into(), 7, 100, Duration::from_nanos(50), 990);
        assert!(b.push(flows(1), 0, 1_000).is_empty());
        assert!(b.push(flows(1), 0, 1_040).is_empty());
        assert_eq!(b.deadline_ns(), 1_050);
        assert!(b.due(1_049).is_none());
        assert_eq!(b.due(1_050).unwrap().flows.len(), 2);
        assert_eq!(b.deadline_ns(), 1_100, "the next, empty, one");
    }

    #[test]
    fn with_no_flows_an_empty_batch_closes_every_max_age() {
        let mut b = Batcher::new("h".into(), 7, 100, Duration::from_nanos(50), 1_000);
        assert!(b.due(1_049).is_none());
        b.push(Vec::new(), 1_020, 1_030);
        let first = b.due(1_050).expect("max_age passed since the start");
        assert_eq!(
            (first.seq, first.flows.len(), first.created_ns),
            (0, 0, 1_050)
        );
        assert_eq!(first.complete_until_ns, 1_020);
        assert!(b.due(1_099).is_none());
        let second = b.due(1_100).expect("max_age passed since the last");
        assert_eq!((second.seq, second.flows.len()), (1, 0));
        assert_eq!(second.complete_until_ns, 1_020, "nothing newer was read");
    }

    #[test]
    fn a_batch_that_fills_up_during_a_push_carries_the_watermark_before_it() {
        let mut b = Batcher::new("h".into(), 7, 3, Duration::from_secs(60), 0);
        assert!(b.push(flows(2), 100, 150).is_empty());
        // Of the flows complete up to 200, one lands in the next batch.
        let full = b.push(flows(2), 200, 250);
        assert_eq!(full.len(), 1);
        assert_eq!(full[0].complete_until_ns, 100);
        let rest = b.close(300).unwrap();
        assert_eq!((rest.flows.len(), rest.complete_until_ns), (1, 200));
    }

    #[test]
    fn the_watermark_never_goes_back() {
        let mut b = Batcher::new("h".into(), 7, 2, Duration::from_nanos(10), 0);
        let mut last = 0;
        let mut batches = Vec::new();
        for (i, complete) in [5, 40, 30, 30, 90, 60, 120].into_iter().enumerate() {
            let now = 100 * (i as u64 + 1);
            batches.extend(b.push(flows(i % 3), complete, now));
            batches.extend(b.due(now));
        }
        batches.extend(b.close(10_000));
        assert!(batches.len() > 4);
        for batch in &batches {
            assert!(batch.complete_until_ns >= last, "{batches:#?}");
            assert!(batch.complete_until_ns <= batch.created_ns);
            last = batch.complete_until_ns;
        }
        assert_eq!(last, 120);
    }

    #[test]
    fn shutdown_closes_an_empty_batch_only_to_advance_the_watermark() {
        let mut b = Batcher::new("h".into(), 7, 10, Duration::from_secs(60), 0);
        assert!(b.close(10).is_none(), "nothing to say");
        b.push(Vec::new(), 20, 30);
        let last = b.close(40).unwrap();
        assert_eq!((last.flows.len(), last.complete_until_ns), (0, 20));
        assert!(b.close(50).is_none());
    }
}
