//! `jsonl-sink`: a sink plugin that writes attributed flows as JSON lines
//! (`application/x-ndjson`), one flow per line, for a data team to load into
//! whatever queries JSON (jq, DuckDB, Athena, BigQuery, Spark).
//!
//! The shape of a line is a contract, documented key by key in the crate's
//! README: key order is fixed, a key never changes its type or meaning, and
//! new keys may only be added. Formatting is hand-written into one buffer
//! (no `core::fmt`, no intermediate values), because a sink runs on the
//! collector's hot path for every flow.
//!
//! ```
//! use flowattr_sdk::{AttributedFlow, Flow, testing::Harness};
//! use jsonl_sink::JsonlSink;
//!
//! let mut sink = Harness::<JsonlSink>::new(r#"{"include_process": false}"#).unwrap();
//! let flow = AttributedFlow::new(Flow::tcp(
//!     "10.0.0.1:40000".parse().unwrap(),
//!     "10.0.0.2:443".parse().unwrap(),
//!     1_000,
//! ));
//! let bytes = sink.format(&[flow]).unwrap();
//! assert!(bytes.starts_with(br#"{"start_ns":1000,"end_ns":1000,"protocol":"tcp""#));
//! // No record id outside a collector; the Community ID of 10.0.0.1:40000 ↔ 10.0.0.2:443.
//! assert!(bytes.ends_with(
//!     b"\"weight\":1,\"record_id\":null,\"community_id\":\"1:UWHKJ/x6OQ1YiVv4rIl0t3yhjg8=\"}\n"
//! ));
//! ```

pub mod config;
mod line;
mod text;

use flowattr_sdk::{AttributedFlow, Plugin, SinkPlugin};

pub use crate::config::{Config, TimeFormat};
use crate::line::{LineWriter, Workloads};

/// The media type of the output.
pub const CONTENT_TYPE: &str = "application/x-ndjson";

/// Bytes reserved per flow before formatting a batch: a line with both
/// sides attributed to workloads with every attribute is about 900 bytes.
const RESERVE_PER_FLOW: usize = 1024;

/// The `jsonl-sink` plugin.
pub struct JsonlSink {
    config: Config,
    writer: LineWriter,
}

impl JsonlSink {
    /// The config it was built with.
    pub fn config(&self) -> Config {
        self.config
    }

    /// Appends one line per flow to `out`.
    pub fn format_into(&self, flows: &[AttributedFlow], out: &mut Vec<u8>) {
        out.reserve(flows.len() * RESERVE_PER_FLOW);
        let mut seen = Workloads::default();
        for f in flows {
            self.writer.flow(out, f, &mut seen);
        }
    }
}

impl Plugin for JsonlSink {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        Ok(Self {
            config,
            writer: LineWriter::new(config),
        })
    }
}

impl SinkPlugin for JsonlSink {
    fn content_type(&self) -> String {
        CONTENT_TYPE.to_owned()
    }

    /// Never fails: every flow has a line.
    fn format(&mut self, flows: &[AttributedFlow]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        self.format_into(flows, &mut out);
        Ok(out)
    }
}

flowattr_sdk::export_plugin!(JsonlSink as sink);
