//! The `output` import of sink plugins: the chunk a `format` call writes.
//!
//! A sink hands its bytes over with `output.write` during `format` instead
//! of returning them. Returning a `list<u8>` made wasmtime lift megabytes a
//! batch into a freshly allocated `Vec`, and on this project's machines the
//! kernel zeroing those fresh pages was the largest single cost of the
//! collector's core thread. Written bytes are copied straight out of the
//! plugin's memory into a buffer the caller owns and reuses.

use wasmtime::component::{Linker, WasmList};

use crate::sandbox::PluginState;

/// The WIT instance and function the import is linked as.
const INTERFACE: &str = "flowattr:plugin/output@0.3.0";

/// Why a write was refused (the call traps).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OutputError {
    #[error("output.write called outside a format call")]
    OutsideFormat,
    #[error(
        "output.write would take the chunk to {bytes} bytes, past the plugin's limit of {limit}"
    )]
    TooLarge { bytes: usize, limit: usize },
}

/// The chunk being written by the current `format` call, if one runs.
#[derive(Debug, Default)]
pub struct SinkOutput {
    chunk: Option<Vec<u8>>,
    written: usize,
    /// The most one call may write: the plugin's memory limit, which is also
    /// the most a returned list could have held.
    limit: usize,
}

impl SinkOutput {
    /// No call running; one call may write at most `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            chunk: None,
            written: 0,
            limit,
        }
    }

    /// Starts a `format` call that appends to `buffer`.
    pub fn begin(&mut self, buffer: Vec<u8>) {
        self.chunk = Some(buffer);
        self.written = 0;
    }

    /// Appends what the plugin wrote.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), OutputError> {
        let chunk = self.chunk.as_mut().ok_or(OutputError::OutsideFormat)?;
        let total = self.written + bytes.len();
        if total > self.limit {
            return Err(OutputError::TooLarge {
                bytes: total,
                limit: self.limit,
            });
        }
        chunk.extend_from_slice(bytes);
        self.written = total;
        Ok(())
    }

    /// Ends the call: the buffer, with what was written appended.
    pub fn end(&mut self) -> Vec<u8> {
        self.chunk.take().unwrap_or_default()
    }
}

/// Links `output.write`: the bytes are read in place from the plugin's
/// memory (a `WasmList`, not a lifted `Vec`) and appended to the chunk.
pub fn add_to_linker(linker: &mut Linker<PluginState>) -> wasmtime::Result<()> {
    linker.instance(INTERFACE)?.func_wrap(
        "write",
        |mut store, (bytes,): (WasmList<u8>,)| -> wasmtime::Result<()> {
            // The chunk leaves the store while the plugin's memory is borrowed.
            let mut output = std::mem::take(store.data_mut().sink_output());
            let appended = output.append(bytes.as_le_slice(&store));
            *store.data_mut().sink_output() = output;
            appended.map_err(wasmtime::Error::from)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_append_to_the_callers_buffer_within_the_limit() {
        let mut out = SinkOutput::new(8);
        assert_eq!(out.append(b"x"), Err(OutputError::OutsideFormat));
        out.begin(b"kept".to_vec());
        out.append(b"abc").unwrap();
        out.append(b"defgh").unwrap();
        assert_eq!(
            out.append(b"i"),
            Err(OutputError::TooLarge { bytes: 9, limit: 8 })
        );
        assert_eq!(out.end(), b"keptabcdefgh");
        assert_eq!(out.append(b"x"), Err(OutputError::OutsideFormat));
        assert_eq!(out.end(), b"", "nothing is held between calls");
    }
}
