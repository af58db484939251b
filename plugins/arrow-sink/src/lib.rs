//! `arrow-sink`: a sink plugin that writes each chunk of attributed flows as
//! one complete Arrow IPC stream (`application/vnd.apache.arrow.stream`):
//! the schema, the batch's dictionaries, one record batch, end of stream.
//! Buffers are LZ4-frame compressed; the columns are `flow-arrow`'s (see
//! `docs/output-schema.md`).
//!
//! Every chunk stands alone, so a Kafka message is one stream (ClickHouse's
//! `ArrowStream`, pyarrow's `ipc.open_stream`), and a file of the file
//! output is streams one after another: read streams until the file ends
//! (the crate's README shows how with pyarrow and DuckDB).
//!
//! ```
//! use flowattr_sdk::{AttributedFlow, Flow, testing::Harness};
//! use arrow_sink::{ArrowSink, read_streams};
//!
//! let mut sink = Harness::<ArrowSink>::new("{}").unwrap();
//! let flows = vec![AttributedFlow::new(Flow::tcp(
//!     "10.0.0.1:40000".parse().unwrap(),
//!     "[2001:db8::2]:443".parse().unwrap(),
//!     1_714_564_800_000_000_000,
//! ))];
//! let mut file = sink.format(&flows).unwrap();
//! file.extend(sink.format(&flows).unwrap());
//! let batches = read_streams(&file).unwrap();
//! assert_eq!(batches.len(), 2);
//! assert_eq!(batches[1].column_by_name("dstaddr").unwrap().len(), 1);
//! ```

pub mod config;

use arrow_ipc::CompressionType;
use arrow_ipc::writer::{IpcWriteOptions, StreamWriter};
use flow_arrow::arrow_array::RecordBatch;
use flowattr_sdk::{AttributedFlow, Plugin, SinkPlugin};

pub use crate::config::{Compression, Config};

/// The media type of the output.
pub const CONTENT_TYPE: &str = "application/vnd.apache.arrow.stream";

/// The `arrow-sink` plugin.
pub struct ArrowSink {
    config: Config,
    options: IpcWriteOptions,
}

impl ArrowSink {
    /// The config it was built with.
    pub fn config(&self) -> Config {
        self.config
    }

    /// Appends one stream holding `flows` to `out`; on failure `out` is
    /// left as it was.
    pub fn format_into(
        &mut self,
        flows: &[AttributedFlow],
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let batch = flow_arrow::record_batch(flows, self.config.include_process);
        let start = out.len();
        write_stream(&batch, &self.options, out).map_err(|e| {
            out.truncate(start);
            format!("writing the Arrow stream: {e}")
        })
    }
}

fn write_stream(
    batch: &RecordBatch,
    options: &IpcWriteOptions,
    out: &mut Vec<u8>,
) -> Result<(), flow_arrow::arrow_schema::ArrowError> {
    let mut writer = StreamWriter::try_new_with_options(out, &batch.schema(), options.clone())?;
    writer.write(batch)?;
    writer.finish()
}

impl Plugin for ArrowSink {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        let compression = match config.compression {
            Compression::Lz4 => Some(CompressionType::LZ4_FRAME),
            Compression::None => None,
        };
        let options = IpcWriteOptions::default()
            .try_with_compression(compression)
            .map_err(|e| e.to_string())?;
        Ok(Self { config, options })
    }
}

impl SinkPlugin for ArrowSink {
    fn content_type(&self) -> String {
        CONTENT_TYPE.to_owned()
    }

    fn format(&mut self, flows: &[AttributedFlow]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        self.format_into(flows, &mut out)?;
        Ok(out)
    }
}

/// Reads `bytes` as Arrow IPC streams one after another (a file of the
/// file output, or one chunk): every stream's batches, in order.
#[cfg(not(target_family = "wasm"))]
pub fn read_streams(bytes: &[u8]) -> Result<Vec<RecordBatch>, String> {
    let mut cursor = std::io::Cursor::new(bytes);
    let mut batches = Vec::new();
    while (cursor.position() as usize) < bytes.len() {
        let at = cursor.position();
        let reader = arrow_ipc::reader::StreamReader::try_new(&mut cursor, None)
            .map_err(|e| format!("stream at byte {at}: {e}"))?;
        for batch in reader {
            batches.push(batch.map_err(|e| e.to_string())?);
        }
    }
    Ok(batches)
}

flowattr_sdk::export_plugin!(ArrowSink as sink);
