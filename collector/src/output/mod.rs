//! Where formatted flows go: rotating files, stdout, a Kafka topic. An
//! output that is down makes the collector buffer within a bound and report
//! it, never drop silently.

mod append;
mod fanout;
mod file;
pub mod kafka;

pub use fanout::{OutputStatus, Outputs};
pub use file::{FileOutput, FileOutputConfig, StdoutOutput, files_of};

use std::io;

/// One destination for formatted chunks (the bytes a sink plugin produced).
pub trait Output: Send {
    /// Short name for logs and metric labels.
    fn name(&self) -> &str;

    /// Takes one chunk. An `Err` means the output is down or full: nothing
    /// of the chunk was taken, and the caller keeps it to try again.
    fn write(&mut self, chunk: &[u8]) -> io::Result<()>;

    /// Pushes out anything taken but not yet written.
    fn flush(&mut self) -> io::Result<()>;
}
