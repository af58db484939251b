//! Where formatted flows go: rotating files, stdout, a Kafka topic, an
//! OpenTelemetry receiver (OTLP/HTTP). An output that is down makes the
//! collector buffer within a bound and report it, never drop silently; a
//! batch is retired only once every output has its flows for good (or has
//! refused them for good, counted as dropped with the reason).

mod append;
mod fanout;
mod file;
pub mod kafka;
pub mod otlp;

pub use fanout::{OutputStatus, Outputs, Retired};
pub use file::{FileOutput, FileOutputConfig, StdoutOutput, files_of};

use std::io;

/// One destination for formatted chunks (the bytes a sink plugin produced),
/// numbered in the order they are written.
pub trait Output: Send {
    /// Short name for logs and metric labels.
    fn name(&self) -> &str;

    /// Takes chunk `seq`. An `Err` means the output is down or full:
    /// nothing of the chunk was taken, and the caller keeps it to try again.
    fn write(&mut self, seq: u64, chunk: &[u8]) -> io::Result<()>;

    /// Makes what was taken durable as far as it can now (syncs a file;
    /// collects Kafka's delivery reports) and says how far that is.
    fn commit(&mut self) -> io::Result<Progress>;

    /// The largest chunk it can take, if it has a limit (Kafka's message
    /// size); larger chunks are formatted again in smaller pieces.
    fn max_chunk_bytes(&self) -> Option<usize> {
        None
    }

    /// What it gave up on for good since the last call: chunks (or records
    /// of them) a receiver refused in a way no retry changes. Such a chunk
    /// is done (its `durable_below` passes it no earlier than this reports
    /// it), and the collector counts its flows as dropped with the reason.
    fn take_dropped(&mut self) -> Vec<Dropped> {
        Vec::new()
    }
}

/// Flows an output refused for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// The chunk.
    pub seq: u64,
    /// The `dropped_total` label: short, low-cardinality.
    pub reason: String,
    /// Records of it refused; `None`: all of the chunk's flows.
    pub records: Option<u64>,
}

/// How far an output's chunks are safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Every chunk before this one is durable or delivered.
    pub durable_below: u64,
    /// Chunks from this one on were lost after they were taken (a failed
    /// sync or delivery): write them again.
    pub resend_from: Option<u64>,
}
