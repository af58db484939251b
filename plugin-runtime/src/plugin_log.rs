//! A plugin's log: the `host.log` import and its stdout and stderr, tagged
//! with its name, one rate limit for all three, every line cut to
//! [`MAX_LINE`] bytes with control characters removed, every line counted.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::bindings::wit_host::Level;
use crate::counters::Counters;
use crate::ratelimit::{Admit, LOG_BURST, LOG_PER_SECOND, RateLimiter};

/// The longest line written to the host log, in bytes; the rest is cut.
pub const MAX_LINE: usize = 1024;

/// What a line may show: control characters (terminal escapes, carriage
/// returns) removed, tabs and newlines as spaces, cut to [`MAX_LINE`] bytes
/// at a character boundary with a note of how much was cut (`cut` bytes had
/// already been dropped before `line`).
pub fn sanitize(line: &str, cut: usize) -> String {
    let mut out = String::with_capacity(line.len().min(MAX_LINE));
    let mut cut = cut;
    for (i, c) in line.char_indices() {
        let c = match c {
            '\t' | '\n' => ' ',
            c if c.is_control() => continue,
            c => c,
        };
        if out.len() + c.len_utf8() > MAX_LINE {
            cut += line.len() - i;
            break;
        }
        out.push(c);
    }
    if cut > 0 {
        out.push_str(&format!(" …[{cut} more bytes cut]"));
    }
    out
}

/// Splits a byte stream into lines, keeping at most [`MAX_LINE`] bytes of
/// the current one and counting the rest.
#[derive(Debug, Default)]
pub struct LineBuffer {
    line: Vec<u8>,
    cut: usize,
}

impl LineBuffer {
    /// Appends `bytes`; calls `emit(line, cut)` for every line completed.
    pub fn push(&mut self, mut bytes: &[u8], mut emit: impl FnMut(&str, usize)) {
        while !bytes.is_empty() {
            let (part, rest, ended) = match bytes.iter().position(|b| *b == b'\n') {
                Some(n) => (&bytes[..n], &bytes[n + 1..], true),
                None => (bytes, &[][..], false),
            };
            // Four bytes of slack so a character cut at the limit is whole.
            let room = (MAX_LINE + 4)
                .saturating_sub(self.line.len())
                .min(part.len());
            self.line.extend_from_slice(&part[..room]);
            self.cut += part.len() - room;
            if ended {
                self.finish(&mut emit);
            }
            bytes = rest;
        }
    }

    /// Emits what is left of an unfinished line, if anything.
    pub fn finish(&mut self, emit: &mut impl FnMut(&str, usize)) {
        if self.line.is_empty() && self.cut == 0 {
            return;
        }
        emit(&String::from_utf8_lossy(&self.line), self.cut);
        self.line.clear();
        self.cut = 0;
    }
}

/// Writes a plugin's lines to `tracing` under its rate limit.
pub struct PluginLog {
    name: Arc<str>,
    limiter: RateLimiter,
    counters: Arc<Counters>,
}

/// One plugin instance's log, shared by its store and its stdio streams.
pub type SharedLog = Arc<Mutex<PluginLog>>;

impl PluginLog {
    pub fn shared(name: Arc<str>, counters: Arc<Counters>) -> SharedLog {
        Arc::new(Mutex::new(Self {
            name,
            limiter: RateLimiter::new(LOG_BURST, LOG_PER_SECOND),
            counters,
        }))
    }

    /// Writes one line from `source` (`log`, `stdout`, `stderr`), of which
    /// `cut` bytes were already dropped.
    pub fn write(&mut self, level: Level, source: &'static str, message: &str, cut: usize) {
        let suppressed = match self.limiter.admit(Instant::now()) {
            Admit::Write { suppressed } => suppressed,
            Admit::Suppress => {
                Counters::add(&self.counters.log_suppressed, 1);
                return;
            }
        };
        Counters::add(&self.counters.log_lines, 1);
        if suppressed > 0 {
            tracing::warn!(plugin = %self.name, suppressed, "Plugin log lines were dropped by the rate limit.");
        }
        let message = sanitize(message, cut);
        let plugin = &*self.name;
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, source, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, source, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, source, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, source, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, source, "{message}"),
        }
    }
}

/// A plugin's stdout or stderr: complete lines go to its log.
#[derive(Clone)]
pub struct LogOutput {
    log: SharedLog,
    level: Level,
    source: &'static str,
}

impl LogOutput {
    pub fn stdout(log: &SharedLog) -> Self {
        Self {
            log: log.clone(),
            level: Level::Info,
            source: "stdout",
        }
    }

    pub fn stderr(log: &SharedLog) -> Self {
        Self {
            log: log.clone(),
            level: Level::Warn,
            source: "stderr",
        }
    }
}

impl IsTerminal for LogOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LogStream {
            out: self.clone(),
            buffer: LineBuffer::default(),
        })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASI p3 asks for this, and the linker offers p2 alone.
        Box::new(tokio::io::sink())
    }
}

/// One open handle on a [`LogOutput`]: never blocks, never fails.
struct LogStream {
    out: LogOutput,
    buffer: LineBuffer,
}

impl LogStream {
    fn emit(out: &LogOutput) -> impl FnMut(&str, usize) + '_ {
        |line, cut| {
            out.log
                .lock()
                .unwrap()
                .write(out.level, out.source, line, cut)
        }
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LogStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.buffer.push(&bytes, Self::emit(&self.out));
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogStream {
    async fn ready(&mut self) {}
}

impl Drop for LogStream {
    fn drop(&mut self) {
        self.buffer.finish(&mut Self::emit(&self.out));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<(String, usize)> {
        let mut buffer = LineBuffer::default();
        let mut out = Vec::new();
        for chunk in chunks {
            buffer.push(chunk, |l, cut| out.push((l.to_owned(), cut)));
        }
        buffer.finish(&mut |l: &str, cut| out.push((l.to_owned(), cut)));
        out
    }

    #[test]
    fn lines_are_split_across_writes_and_long_ones_cut() {
        assert_eq!(
            lines(&[b"one\ntw", b"o\n", b"three"]),
            [("one".into(), 0), ("two".into(), 0), ("three".into(), 0)]
        );
        let long = vec![b'x'; 5000];
        let got = lines(&[&long, &long, b"\nnext\n"]);
        assert_eq!(got[0].0.len(), MAX_LINE + 4);
        assert_eq!(got[0].1, 10_000 - MAX_LINE - 4);
        assert_eq!(got[1], ("next".into(), 0));
    }

    #[test]
    fn control_characters_go_and_the_cut_is_noted() {
        assert_eq!(sanitize("a\x1b[2Jb\x07c\rd\te", 0), "a[2Jbcd e");
        let long = "é".repeat(MAX_LINE);
        let shown = sanitize(&long, 7);
        let (text, note) = shown.split_once(" …[").unwrap();
        assert_eq!(text.len(), MAX_LINE);
        assert_eq!(
            note,
            format!("{} more bytes cut]", 7 + long.len() - MAX_LINE)
        );
    }
}
