//! `columnar-sink`: a sink plugin that writes each batch of attributed flows
//! as one compact, columnar binary chunk (`application/x-flowattr-columnar`),
//! and the native reader for it ([`decode`]).
//!
//! A chunk is a 14-byte header (magic `FACL`, format version, flags, row
//! count, body length), then dictionaries — plugin names, workloads, and
//! attributions (workload, source, plugin, validity), each distinct value
//! once — then one length-prefixed column per field: varint and
//! delta-encoded times, IPv4 and IPv6 addresses in separate columns, ports,
//! enums as bytes, and each side as one varint (pending, a reason, or an
//! attribution index). A realistic batch is about a tenth of its JSON-lines
//! size. The README specifies the layout byte by byte, for readers in other
//! languages.
//!
//! ```
//! use flowattr_sdk::{AttributedFlow, Flow, testing::Harness};
//! use columnar_sink::{ColumnarSink, decode};
//!
//! let mut sink = Harness::<ColumnarSink>::new("{}").unwrap();
//! let flows = vec![AttributedFlow::new(Flow::tcp(
//!     "10.0.0.1:40000".parse().unwrap(),
//!     "[2001:db8::2]:443".parse().unwrap(),
//!     1_714_564_800_000_000_000,
//! ))];
//! let chunk = sink.format(&flows).unwrap();
//! assert_eq!(&chunk[..4], b"FACL");
//! assert_eq!(decode(&chunk).unwrap(), flows);
//! ```

pub mod config;
mod decode;
mod encode;
pub mod layout;
mod varint;

use flowattr_sdk::{AttributedFlow, Plugin, SinkPlugin};

pub use crate::config::Config;
pub use crate::decode::{DecodeError, decode, decode_chunk};
use crate::encode::Encoder;

/// A decoded flow's Community ID, computed from the columns it hashes
/// (addresses, ports, protocol), as the jsonl sink writes it; `None` where a
/// policy blanked the endpoints. The record id is each flow's `record_id`.
pub use flowattr_sdk::community_id;

/// The media type of the output.
pub const CONTENT_TYPE: &str = "application/x-flowattr-columnar";

/// The `columnar-sink` plugin.
pub struct ColumnarSink {
    config: Config,
    encoder: Encoder,
}

impl ColumnarSink {
    /// The config it was built with.
    pub fn config(&self) -> Config {
        self.config
    }

    /// Appends one chunk holding `flows` to `out`. Fails only for a batch
    /// beyond the format's limits (2^32 rows, a 4 GiB body).
    pub fn format_into(
        &mut self,
        flows: &[AttributedFlow],
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        self.encoder.encode(flows, out)
    }
}

impl Plugin for ColumnarSink {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        Ok(Self {
            config,
            encoder: Encoder::new(config.include_process),
        })
    }
}

impl SinkPlugin for ColumnarSink {
    fn content_type(&self) -> String {
        CONTENT_TYPE.to_owned()
    }

    fn format(&mut self, flows: &[AttributedFlow]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        self.format_into(flows, &mut out)?;
        Ok(out)
    }
}

flowattr_sdk::export_plugin!(ColumnarSink as sink);
