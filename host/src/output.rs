//! Where closed batches go: to collectors over QUIC when `[transport]` is
//! configured ([`QuicOutput`]), otherwise JSON lines, one batch per line,
//! appended to a file or written to stdout ([`JsonLinesOutput`]).

use std::{
    fs::OpenOptions,
    io::{self, BufWriter, Write},
    path::Path,
};

use flowattr_model::FlowBatch;

mod quic;

pub use quic::QuicOutput;

/// The agent's output, one of the two.
pub enum Output {
    JsonLines(JsonLinesOutput),
    Quic(QuicOutput),
}

impl Output {
    /// Writes (or spools and ships) one batch.
    pub fn write(&mut self, batch: &FlowBatch) -> anyhow::Result<()> {
        match self {
            Self::JsonLines(out) => Ok(out.write(batch)?),
            Self::Quic(out) => Ok(out.write(batch)?),
        }
    }
}

/// Writes batches as JSON lines.
pub struct JsonLinesOutput {
    writer: Box<dyn Write + Send>,
}

impl JsonLinesOutput {
    /// Appends to `path` (created if missing), or writes to stdout.
    pub fn open(path: Option<&Path>) -> io::Result<Self> {
        let writer: Box<dyn Write + Send> = match path {
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                Box::new(OpenOptions::new().create(true).append(true).open(path)?)
            }
            None => Box::new(io::stdout()),
        };
        Ok(Self { writer })
    }

    /// Writes one batch as one line and flushes it.
    pub fn write(&mut self, batch: &FlowBatch) -> io::Result<()> {
        let mut line = BufWriter::new(&mut self.writer);
        serde_json::to_writer(&mut line, batch)?;
        line.write_all(b"\n")?;
        line.flush()
    }
}
