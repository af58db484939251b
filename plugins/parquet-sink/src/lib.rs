//! `parquet-sink`: a sink plugin that writes each chunk of attributed flows
//! as one complete Parquet file (`application/vnd.apache.parquet`): one row
//! group, `flow-arrow`'s typed columns (see `docs/output-schema.md`),
//! dictionary-encoded pages, Snappy by default, the footer written.
//!
//! A Parquet file is only readable once its footer is written, and chunks
//! are durable one at a time, so each chunk is a whole file: the collector's
//! file output writes each to a file of its own (`.parquet`), and a Kafka
//! message is one file. ARCHITECTURE.md says why this and not a native
//! output closing a file at rotation.
//!
//! ```
//! use flowattr_sdk::{AttributedFlow, Flow, testing::Harness};
//! use parquet_sink::ParquetSink;
//!
//! let mut sink = Harness::<ParquetSink>::new("{}").unwrap();
//! let flows = vec![AttributedFlow::new(Flow::tcp(
//!     "10.0.0.1:40000".parse().unwrap(),
//!     "10.0.0.2:443".parse().unwrap(),
//!     1_714_564_800_000_000_000,
//! ))];
//! let file = sink.format(&flows).unwrap();
//! assert_eq!((&file[..4], &file[file.len() - 4..]), (&b"PAR1"[..], &b"PAR1"[..]));
//! ```

pub mod config;

use flowattr_sdk::{AttributedFlow, Plugin, SinkPlugin};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression as Codec;
use parquet::file::properties::WriterProperties;

pub use crate::config::{Compression, Config};

/// The media type of the output.
pub const CONTENT_TYPE: &str = "application/vnd.apache.parquet";

/// The `parquet-sink` plugin.
pub struct ParquetSink {
    config: Config,
    properties: WriterProperties,
}

impl ParquetSink {
    /// The config it was built with.
    pub fn config(&self) -> Config {
        self.config
    }

    /// Appends one Parquet file holding `flows` to `out`; on failure `out`
    /// is left as it was.
    pub fn format_into(
        &mut self,
        flows: &[AttributedFlow],
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let batch = flow_arrow::record_batch(flows, self.config.include_process);
        let start = out.len();
        let written =
            ArrowWriter::try_new(&mut *out, batch.schema(), Some(self.properties.clone()))
                .and_then(|mut writer| {
                    writer.write(&batch)?;
                    writer.close()
                });
        written.map(drop).map_err(|e| {
            out.truncate(start);
            format!("writing the Parquet file: {e}")
        })
    }
}

impl Plugin for ParquetSink {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        let codec = match config.compression {
            Compression::Snappy => Codec::SNAPPY,
            Compression::Lz4 => Codec::LZ4_RAW,
            Compression::None => Codec::UNCOMPRESSED,
        };
        let properties = WriterProperties::builder()
            .set_compression(codec)
            .set_created_by(format!(
                "flowattr parquet-sink {}",
                env!("CARGO_PKG_VERSION")
            ))
            .build();
        Ok(Self { config, properties })
    }
}

impl SinkPlugin for ParquetSink {
    fn content_type(&self) -> String {
        CONTENT_TYPE.to_owned()
    }

    fn format(&mut self, flows: &[AttributedFlow]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        self.format_into(flows, &mut out)?;
        Ok(out)
    }
}

flowattr_sdk::export_plugin!(ParquetSink as sink);
