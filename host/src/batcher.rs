//! Batching: flows collect into a batch that closes when it is full or old
//! enough. Pure: the caller passes the time.

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
}

impl Batcher {
    /// `incarnation` is when this run of the agent started (see
    /// [`FlowBatch::incarnation`]).
    pub fn new(agent: String, incarnation: u64, max_flows: usize, max_age: Duration) -> Self {
        Self {
            agent,
            incarnation,
            max_flows: max_flows.max(1),
            max_age_ns: max_age.as_nanos().min(u64::MAX as u128) as u64,
            next_seq: 0,
            open: Vec::new(),
            opened_ns: None,
        }
    }

    /// Adds flows at `now_ns`; returns every batch that filled up.
    pub fn push(&mut self, flows: Vec<AttributedFlow>, now_ns: u64) -> Vec<FlowBatch> {
        let mut full = Vec::new();
        for flow in flows {
            self.opened_ns.get_or_insert(now_ns);
            self.open.push(flow);
            if self.open.len() >= self.max_flows {
                full.extend(self.close(now_ns));
            }
        }
        full
    }

    /// When the open batch must be closed, if there is one.
    pub fn deadline_ns(&self) -> Option<u64> {
        self.opened_ns.map(|t| t.saturating_add(self.max_age_ns))
    }

    /// The open batch if it is due at `now_ns`.
    pub fn due(&mut self, now_ns: u64) -> Option<FlowBatch> {
        match self.deadline_ns() {
            Some(deadline) if now_ns >= deadline => self.close(now_ns),
            _ => None,
        }
    }

    /// Closes the open batch now, if it holds anything (shutdown).
    pub fn close(&mut self, now_ns: u64) -> Option<FlowBatch> {
        self.opened_ns = None;
        if self.open.is_empty() {
            return None;
        }
        let batch = FlowBatch {
            agent: self.agent.clone(),
            incarnation: self.incarnation,
            seq: self.next_seq,
            created_ns: now_ns,
            flows: std::mem::take(&mut self.open),
        };
        self.next_seq += 1;
        Some(batch)
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
        let mut b = Batcher::new("h".into(), 7, 3, Duration::from_secs(60));
        let full = b.push(flows(7), 100);
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
        let mut b = Batcher::new("h".into(), 7, 100, Duration::from_nanos(50));
        assert_eq!(b.deadline_ns(), None);
        assert!(b.push(flows(1), 1_000).is_empty());
        assert!(b.push(flows(1), 1_040).is_empty());
        assert_eq!(b.deadline_ns(), Some(1_050));
        assert!(b.due(1_049).is_none());
        assert_eq!(b.due(1_050).unwrap().flows.len(), 2);
        assert_eq!(b.deadline_ns(), None);
    }
}
