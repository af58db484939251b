//! Every chunk goes to every output, in order. An output that fails keeps
//! its chunks queued (within one bound shared by all outputs) and is retried
//! on the next pump; a batch counts as written out only once every output
//! has taken all of it. Past the bound the collector stops releasing flows
//! from the hold queue, so the pressure travels back to the agents' spools
//! instead of into memory or onto the floor.

use std::{collections::VecDeque, sync::Arc};

use flowattr_model::BatchId;

use super::Output;

struct Slot {
    output: Box<dyn Output>,
    /// Shared by every output's queue: a chunk is megabytes, so it is
    /// never copied (`Arc<[u8]>` from a `Vec` would copy it).
    queue: VecDeque<(u64, Arc<Vec<u8>>)>,
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
    /// Writes or flushes that failed (each retried later).
    pub failures: u64,
    pub last_error: Option<String>,
}

/// How much memory the buffers of written chunks kept for the next chunks
/// may hold. The core hands each chunk over as soon as it is formatted, so
/// one or two buffers are in use at a time; an output that is down keeps its
/// chunks and they are not reused.
const SPARE_BYTES: usize = 16 << 20;

/// The outputs, with their queues.
pub struct Outputs {
    slots: Vec<Slot>,
    next_seq: u64,
    max_queued_bytes: usize,
    /// Chunks not yet taken by every output, with the batches they hold.
    open: VecDeque<(u64, Vec<BatchId>)>,
    /// Buffers of chunks every output has written, for the next chunks: a
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

    /// An empty buffer to format the next chunk into: a written chunk's, when
    /// one is free.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_default()
    }

    /// Queues `chunk`, which holds flows of `batches`, for every output.
    pub fn push(&mut self, chunk: Vec<u8>, batches: Vec<BatchId>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let chunk = Arc::new(chunk);
        for slot in &mut self.slots {
            slot.queued_bytes += chunk.len();
            slot.queue.push_back((seq, chunk.clone()));
        }
        self.open.push_back((seq, batches));
    }

    /// Records that `batches` had no flows left to write (all dropped by
    /// policy): they are done once the chunks before them are.
    pub fn push_empty(&mut self, batches: Vec<BatchId>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.open.push_back((seq, batches));
    }

    /// Writes what is queued, flushes, and returns the batches every output
    /// has now taken in full.
    pub fn pump(&mut self) -> Vec<BatchId> {
        for slot in &mut self.slots {
            let mut wrote = false;
            while let Some((_, chunk)) = slot.queue.front() {
                match slot.output.write(chunk) {
                    Ok(()) => {
                        slot.queued_bytes -= chunk.len();
                        let (_, chunk) = slot.queue.pop_front().expect("front exists");
                        // The last output to write a chunk frees its buffer.
                        if let Ok(mut buffer) = Arc::try_unwrap(chunk) {
                            let kept: usize = self.spare.iter().map(Vec::capacity).sum();
                            if kept + buffer.capacity() <= SPARE_BYTES {
                                buffer.clear();
                                self.spare.push(buffer);
                            }
                        }
                        wrote = true;
                    }
                    Err(e) => {
                        slot.fail(e);
                        break;
                    }
                }
            }
            if wrote && let Err(e) = slot.output.flush() {
                slot.fail(e);
            }
        }
        let mut done = Vec::new();
        while let Some(&(seq, _)) = self.open.front() {
            let taken = self
                .slots
                .iter()
                .all(|s| s.queue.front().is_none_or(|&(first, _)| first > seq));
            if !taken {
                break;
            }
            done.extend(self.open.pop_front().expect("front exists").1);
        }
        done
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
                up: s.queue.is_empty(),
                queued_chunks: s.queue.len(),
                queued_bytes: s.queued_bytes,
                failures: s.failures,
                last_error: s.last_error.clone(),
            })
            .collect()
    }
}

impl Slot {
    fn fail(&mut self, e: std::io::Error) {
        if self.failures == 0 || self.last_error.is_none() {
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
            atomic::{AtomicBool, Ordering},
        },
    };

    use super::*;

    /// An output that records what it took, and fails while `down`.
    struct Flaky {
        down: Arc<AtomicBool>,
        taken: Arc<Mutex<Vec<u8>>>,
    }

    impl Output for Flaky {
        fn name(&self) -> &str {
            "flaky"
        }
        fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
            if self.down.load(Ordering::Relaxed) {
                return Err(io::Error::other("down"));
            }
            self.taken.lock().unwrap().extend_from_slice(chunk);
            Ok(())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn id(seq: u64) -> BatchId {
        BatchId {
            agent: "a".into(),
            incarnation: 1,
            seq,
        }
    }

    #[test]
    fn a_written_chunks_buffer_is_handed_out_again_and_a_queued_one_is_not() {
        let down = Arc::new(AtomicBool::new(false));
        let output = Flaky {
            down: down.clone(),
            taken: Arc::default(),
        };
        let mut outs = Outputs::new(vec![Box::new(output)], 1 << 20);
        let mut chunk = outs.buffer();
        chunk.reserve(4096);
        chunk.extend_from_slice(b"abc");
        let capacity = chunk.capacity();
        outs.push(chunk, vec![id(0)]);
        outs.pump();
        let reused = outs.buffer();
        assert!(reused.is_empty());
        assert_eq!(reused.capacity(), capacity, "the written chunk's buffer");

        down.store(true, Ordering::Relaxed);
        outs.push(reused, vec![id(1)]);
        outs.pump();
        assert_eq!(outs.buffer().capacity(), 0, "still queued: a fresh buffer");
    }

    #[test]
    fn a_batch_is_done_only_when_every_output_took_it() {
        let (down, taken) = (Arc::new(AtomicBool::new(false)), Arc::default());
        let healthy_taken: Arc<Mutex<Vec<u8>>> = Arc::default();
        let healthy = Flaky {
            down: Arc::new(AtomicBool::new(false)),
            taken: healthy_taken.clone(),
        };
        let flaky = Flaky {
            down: down.clone(),
            taken: Arc::clone(&taken),
        };
        let mut outs = Outputs::new(vec![Box::new(healthy), Box::new(flaky)], 10);
        outs.push(b"abc".to_vec(), vec![id(0)]);
        assert_eq!(outs.pump(), vec![id(0)]);

        down.store(true, Ordering::Relaxed);
        outs.push(b"defg".to_vec(), vec![id(1)]);
        outs.push_empty(vec![id(2)]);
        outs.push(b"hijk".to_vec(), vec![id(3)]);
        assert!(
            outs.pump().is_empty(),
            "the flaky output has not taken them"
        );
        assert_eq!(outs.queued_bytes(), 8);
        assert!(!outs.is_full());
        outs.push(b"lm".to_vec(), vec![id(4)]);
        outs.pump();
        assert!(outs.is_full());
        let status = outs.status();
        assert!(status[0].up && !status[1].up);
        assert_eq!(status[1].queued_chunks, 3);
        assert!(status[1].failures >= 2);

        down.store(false, Ordering::Relaxed);
        assert_eq!(outs.pump(), vec![id(1), id(2), id(3), id(4)]);
        assert_eq!(*taken.lock().unwrap(), b"abcdefghijklm");
        assert_eq!(*healthy_taken.lock().unwrap(), b"abcdefghijklm");
        assert_eq!(outs.queued_bytes(), 0);
    }
}
