//! Every chunk goes to every output, in order. An output that fails keeps
//! its chunks queued (within one bound shared by all outputs) and is retried
//! on the next pump; a chunk leaves an output's queue only once the output
//! says it is durable (synced, or delivered), and one it lost after taking
//! (a failed sync or delivery) is written to it again. A batch is retired
//! only once every output has all of it for good. Past the bound the
//! collector stops releasing flows from the hold queue, so the pressure
//! travels back to the agents' spools instead of into memory or onto the
//! floor.

use std::{collections::VecDeque, sync::Arc};

use flowattr_model::BatchId;

use super::{Dropped, Output};

struct Slot {
    output: Box<dyn Output>,
    /// Chunks not yet durable here, oldest first. Shared by every output's
    /// queue: a chunk is megabytes, so it is never copied (`Arc<[u8]>` from
    /// a `Vec` would copy it).
    queue: VecDeque<(u64, Arc<Vec<u8>>)>,
    /// How many of `queue` (from the front) the output has taken.
    written: usize,
    queued_bytes: usize,
    failures: u64,
    last_error: Option<String>,
}

/// How one output is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputStatus {
    pub name: String,
    pub up: bool,
    pub queued_chunks: usize,
    pub queued_bytes: usize,
    /// Writes, syncs or deliveries that failed (each retried later).
    pub failures: u64,
    pub last_error: Option<String>,
}

/// What every output now has for good.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Retired {
    pub batches: Vec<BatchId>,
    pub flows: u64,
    /// Flows an output refused for good, by reason (to count as dropped).
    pub dropped: Vec<(String, u64)>,
}

/// How much memory the buffers of written chunks kept for the next chunks
/// may hold. An output that is down keeps its chunks and they are not
/// reused.
const SPARE_BYTES: usize = 16 << 20;

/// A chunk not yet durable everywhere: its flows, and the batches that are
/// done with it.
struct Open {
    seq: u64,
    flows: u64,
    batches: Vec<BatchId>,
}

/// The outputs, with their queues.
pub struct Outputs {
    slots: Vec<Slot>,
    next_seq: u64,
    max_queued_bytes: usize,
    open: VecDeque<Open>,
    /// Buffers of chunks every output has for good, for the next chunks: a
    /// reused buffer's pages are already mapped, a fresh one's must be
    /// zeroed by the kernel page by page as the sink fills it.
    spare: Vec<Vec<u8>>,
}

impl Outputs {
    /// `max_queued_bytes` bounds what all outputs together hold queued.
    pub fn new(outputs: Vec<Box<dyn Output>>, max_queued_bytes: usize) -> Self {
        Self {
            slots: outputs
                .into_iter()
                .map(|output| Slot {
                    output,
                    queue: VecDeque::new(),
                    written: 0,
                    queued_bytes: 0,
                    failures: 0,
                    last_error: None,
                })
                .collect(),
            next_seq: 0,
            max_queued_bytes,
            open: VecDeque::new(),
            spare: Vec::new(),
        }
    }

    /// An empty buffer to format the next chunk into: a retired chunk's,
    /// when one is free.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// The largest chunk every output takes.
    pub fn max_chunk_bytes(&self) -> Option<usize> {
        self.slots
            .iter()
            .filter_map(|s| s.output.max_chunk_bytes())
            .min()
    }

    /// Queues `chunk`, which holds `flows` flows and completes `batches`,
    /// for every output, and hands it to those that are keeping up.
    pub fn push(&mut self, chunk: Vec<u8>, flows: u64, batches: Vec<BatchId>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let chunk = Arc::new(chunk);
        for slot in &mut self.slots {
            slot.queued_bytes += chunk.len();
            slot.queue.push_back((seq, chunk.clone()));
            slot.write_queued();
        }
        self.open.push_back(Open {
            seq,
            flows,
            batches,
        });
    }

    /// Records that `batches` had no flows left to write (all dropped by
    /// policy): they are done once the chunks before them are.
    pub fn push_empty(&mut self, batches: Vec<BatchId>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.open.push_back(Open {
            seq,
            flows: 0,
            batches,
        });
    }

    /// Writes what is queued, asks every output how far it is durable, and
    /// returns what every output now has for good.
    pub fn pump(&mut self) -> Retired {
        let mut freed = Vec::new();
        let mut retired = Retired::default();
        for slot in &mut self.slots {
            slot.write_queued();
            freed.extend(slot.commit());
            for Dropped {
                seq,
                reason,
                records,
            } in slot.output.take_dropped()
            {
                // The chunk is still open: this pump retires it at the earliest.
                let flows = records.unwrap_or_else(|| {
                    self.open
                        .iter()
                        .find(|o| o.seq == seq)
                        .map_or(0, |o| o.flows)
                });
                retired.dropped.push((reason, flows));
            }
        }
        for chunk in freed {
            // The last output to let go of a chunk frees its buffer.
            if let Ok(mut buffer) = Arc::try_unwrap(chunk) {
                let kept: usize = self.spare.iter().map(Vec::capacity).sum();
                if kept + buffer.capacity() <= SPARE_BYTES {
                    buffer.clear();
                    self.spare.push(buffer);
                }
            }
        }
        while let Some(open) = self.open.front() {
            let seq = open.seq;
            let everywhere = self
                .slots
                .iter()
                .all(|s| s.queue.front().is_none_or(|&(first, _)| first > seq));
            if !everywhere {
                break;
            }
            let open = self.open.pop_front().expect("front exists");
            retired.flows += open.flows;
            retired.batches.extend(open.batches);
        }
        retired
    }

    /// Bytes queued across all outputs.
    pub fn queued_bytes(&self) -> usize {
        self.slots.iter().map(|s| s.queued_bytes).sum()
    }

    /// Whether the queues hold their bound: stop releasing flows.
    pub fn is_full(&self) -> bool {
        self.queued_bytes() >= self.max_queued_bytes
    }

    pub fn status(&self) -> Vec<OutputStatus> {
        self.slots
            .iter()
            .map(|s| OutputStatus {
                name: s.output.name().to_owned(),
                up: s.written == s.queue.len() && s.last_error.is_none(),
                queued_chunks: s.queue.len(),
                queued_bytes: s.queued_bytes,
                failures: s.failures,
                last_error: s.last_error.clone(),
            })
            .collect()
    }
}

impl Slot {
    /// Hands the output the chunks it has not taken yet, until it refuses.
    fn write_queued(&mut self) {
        while let Some((seq, chunk)) = self.queue.get(self.written) {
            match self.output.write(*seq, chunk) {
                Ok(()) => self.written += 1,
                Err(e) => {
                    self.fail(e);
                    return;
                }
            }
        }
    }

    /// Drops the chunks the output has for good (returned, to free their
    /// buffers) and rewinds to the ones it lost.
    fn commit(&mut self) -> Vec<Arc<Vec<u8>>> {
        let progress = match self.output.commit() {
            Ok(p) => p,
            Err(e) => {
                self.fail(e);
                return Vec::new();
            }
        };
        let mut freed = Vec::new();
        while self.written > 0
            && let Some(&(seq, _)) = self.queue.front()
            && seq < progress.durable_below
        {
            let (_, chunk) = self.queue.pop_front().expect("front exists");
            self.queued_bytes -= chunk.len();
            self.written -= 1;
            freed.push(chunk);
        }
        if let Some(from) = progress.resend_from {
            let at = self.queue.iter().position(|&(seq, _)| seq >= from);
            self.written = self.written.min(at.unwrap_or(self.queue.len()));
            self.failures += 1;
        }
        if self.written == self.queue.len() {
            self.last_error = None;
        }
        freed
    }

    fn fail(&mut self, e: std::io::Error) {
        if self.last_error.is_none() {
            tracing::warn!(output = self.output.name(), error = %e, "output failed; queueing");
        }
        self.failures += 1;
        self.last_error = Some(e.to_string());
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{
            Mutex,
            atomic::{AtomicBool, AtomicU64, Ordering},
        },
    };

    use super::*;
    use crate::output::Progress;

    /// An output that records what it took, fails writes while `down`, and
    /// holds what it took as not yet durable until `durable_below` says so;
    /// `lose_from` makes it report chunks from there lost.
    #[derive(Default, Clone)]
    struct Flaky {
        down: Arc<AtomicBool>,
        taken: Arc<Mutex<Vec<(u64, Vec<u8>)>>>,
        /// u64::MAX: everything taken is durable.
        durable_below: Arc<AtomicU64>,
        lose_from: Arc<Mutex<Option<u64>>>,
    }

    impl Flaky {
        fn durable() -> Self {
            let f = Self::default();
            f.durable_below.store(u64::MAX, Ordering::Relaxed);
            f
        }
        fn bytes(&self) -> Vec<u8> {
            self.taken
                .lock()
                .unwrap()
                .iter()
                .flat_map(|(_, c)| c.clone())
                .collect()
        }
    }

    impl Output for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        fn write(&mut self, seq: u64, chunk: &[u8]) -> io::Result<()> {
            if self.down.load(Ordering::Relaxed) {
                return Err(io::Error::other("down"));
            }
            self.taken.lock().unwrap().push((seq, chunk.to_vec()));
            Ok(())
        }
        fn commit(&mut self) -> io::Result<Progress> {
            let taken = self.taken.lock().unwrap();
            let next = taken.last().map_or(0, |(s, _)| s + 1);
            Ok(Progress {
                durable_below: next.min(self.durable_below.load(Ordering::Relaxed)),
                resend_from: self.lose_from.lock().unwrap().take(),
            })
        }
    }

    fn id(seq: u64) -> BatchId {
        BatchId {
            agent: "a".into(),
            incarnation: 1,
            seq,
        }
    }

    fn ids(seqs: &[u64]) -> Vec<BatchId> {
        seqs.iter().map(|&s| id(s)).collect()
    }

    #[test]
    fn a_retired_chunks_buffer_is_handed_out_again_and_a_queued_one_is_not() {
        let output = Flaky::durable();
        let mut outs = Outputs::new(vec![Box::new(output.clone())], 1 << 20);
        let mut chunk = outs.buffer();
        chunk.reserve(4096);
        chunk.extend_from_slice(b"abc");
        let capacity = chunk.capacity();
        outs.push(chunk, 1, vec![id(0)]);
        assert_eq!(
            outs.pump(),
            Retired {
                batches: vec![id(0)],
                flows: 1,
                ..Retired::default()
            }
        );
        let reused = outs.buffer();
        assert!(reused.is_empty());
        assert_eq!(reused.capacity(), capacity, "the retired chunk's buffer");

        output.down.store(true, Ordering::Relaxed);
        outs.push(reused, 1, vec![id(1)]);
        outs.pump();
        assert_eq!(outs.buffer().capacity(), 0, "still queued: a fresh buffer");
    }

    #[test]
    fn a_batch_is_retired_only_when_every_output_has_it_for_good() {
        let healthy = Flaky::durable();
        let flaky = Flaky::durable();
        let mut outs = Outputs::new(vec![Box::new(healthy.clone()), Box::new(flaky.clone())], 10);
        outs.push(b"abc".to_vec(), 3, vec![id(0)]);
        assert_eq!(outs.pump().batches, vec![id(0)]);

        flaky.down.store(true, Ordering::Relaxed);
        outs.push(b"defg".to_vec(), 4, vec![id(1)]);
        outs.push_empty(vec![id(2)]);
        outs.push(b"hijk".to_vec(), 4, vec![id(3)]);
        assert_eq!(
            outs.pump(),
            Retired::default(),
            "the flaky output has not taken them"
        );
        assert_eq!(outs.queued_bytes(), 8);
        assert!(!outs.is_full());
        outs.push(b"lm".to_vec(), 2, vec![id(4)]);
        outs.pump();
        assert!(outs.is_full());
        let status = outs.status();
        assert!(status[0].up && !status[1].up);
        assert_eq!(status[1].queued_chunks, 3);
        assert!(status[1].failures >= 2);

        flaky.down.store(false, Ordering::Relaxed);
        assert_eq!(
            outs.pump(),
            Retired {
                batches: ids(&[1, 2, 3, 4]),
                flows: 10,
                ..Retired::default()
            }
        );
        assert_eq!(flaky.bytes(), b"abcdefghijklm");
        assert_eq!(healthy.bytes(), b"abcdefghijklm");
        assert_eq!(outs.queued_bytes(), 0);
    }

    #[test]
    fn a_chunk_taken_but_not_yet_durable_holds_its_batch() {
        let slow = Flaky::default();
        let mut outs = Outputs::new(vec![Box::new(slow.clone())], 1 << 20);
        outs.push(b"one".to_vec(), 1, vec![id(0)]);
        outs.push(b"two".to_vec(), 1, vec![id(1)]);
        assert_eq!(outs.pump(), Retired::default(), "taken, not durable");
        assert_eq!(slow.taken.lock().unwrap().len(), 2);
        slow.durable_below.store(1, Ordering::Relaxed);
        assert_eq!(
            outs.pump(),
            Retired {
                batches: vec![id(0)],
                flows: 1,
                ..Retired::default()
            }
        );
        assert_eq!(outs.queued_bytes(), 3);
    }

    #[test]
    fn chunks_lost_after_they_were_taken_are_written_again() {
        let lossy = Flaky::default();
        let mut outs = Outputs::new(vec![Box::new(lossy.clone())], 1 << 20);
        for (i, c) in [b"a", b"b", b"c"].into_iter().enumerate() {
            outs.push(c.to_vec(), 1, vec![id(i as u64)]);
        }
        lossy.durable_below.store(1, Ordering::Relaxed);
        *lossy.lose_from.lock().unwrap() = Some(1);
        assert_eq!(outs.pump().batches, vec![id(0)]);
        lossy.durable_below.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(outs.pump().batches, ids(&[1, 2]));
        let seqs: Vec<u64> = lossy
            .taken
            .lock()
            .unwrap()
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(seqs, [0, 1, 2, 1, 2], "b and c were written again");
        assert!(outs.status()[0].up);
    }

    /// An output that refuses chunk 1 for good and one record of chunk 2.
    struct Refusing {
        taken: u64,
        dropped: Vec<Dropped>,
    }

    impl Output for Refusing {
        fn name(&self) -> &str {
            "refusing"
        }
        fn write(&mut self, seq: u64, _: &[u8]) -> io::Result<()> {
            let drop = |records| Dropped {
                seq,
                reason: "refused".into(),
                records,
            };
            match seq {
                1 => self.dropped.push(drop(None)),
                2 => self.dropped.push(drop(Some(1))),
                _ => {}
            }
            self.taken = seq + 1;
            Ok(())
        }
        fn commit(&mut self) -> io::Result<Progress> {
            Ok(Progress {
                durable_below: self.taken,
                resend_from: None,
            })
        }
        fn take_dropped(&mut self) -> Vec<Dropped> {
            std::mem::take(&mut self.dropped)
        }
    }

    #[test]
    fn a_chunk_refused_for_good_is_retired_and_its_flows_counted_as_dropped() {
        let refusing = Refusing {
            taken: 0,
            dropped: Vec::new(),
        };
        let mut outs = Outputs::new(vec![Box::new(refusing)], 1 << 20);
        outs.push(b"a".to_vec(), 2, vec![id(0)]);
        outs.push(b"b".to_vec(), 5, vec![id(1)]);
        outs.push(b"c".to_vec(), 3, vec![id(2)]);
        assert_eq!(
            outs.pump(),
            Retired {
                batches: ids(&[0, 1, 2]),
                flows: 10,
                dropped: vec![("refused".into(), 5), ("refused".into(), 1)],
            }
        );
    }
}
