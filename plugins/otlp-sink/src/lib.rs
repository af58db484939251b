//! `otlp-sink`: a sink plugin that writes attributed flows as OpenTelemetry
//! logs. Each chunk is one OTLP `ExportLogsServiceRequest` in protobuf
//! (`application/x-protobuf`), the body an OTLP/HTTP receiver takes at
//! `/v1/logs` (the collector's `type = "otlp"` output sends it there): one
//! resource (the config's `resource` attributes), one scope
//! (`flowattr.otlp-sink`), one `LogRecord` per flow.
//!
//! The flow's fields carry the attribute names the OpenTelemetry
//! Collector's NetFlow receiver uses (`source.address`, `network.io.bytes`,
//! `network.flow.start`, …); both ends' attribution is under
//! `flowattr.local.*` and `flowattr.remote.*`, the rest under `flowattr.*`.
//! Every attribute is listed in `docs/output-schema.md`.
//!
//! **Source and destination.** A flow here has a local end (the capturing
//! host's socket) and a remote end, and it is bidirectional. `source.*` is
//! the end that connected: the remote end when `flowattr.initiator` is
//! `remote`, else the local end (also when the capture did not see who
//! connected, `unknown`: then it is the capturing host's point of view, as
//! an exporter's). `network.io.bytes` and `network.io.packets` count both
//! directions, so sums over records are totals as with NetFlow's
//! one-way records; the directions are in `flowattr.bytes_sent` and
//! `flowattr.bytes_received`, from the local end's point of view like every
//! other sink's.
//!
//! The messages are the official ones (`opentelemetry-proto`'s generated
//! prost types); only the nesting around the records (request → resource
//! logs → scope logs) is framed here, so records are encoded one at a time
//! into the chunk instead of as a tree of a whole chunk's strings.
//!
//! ```
//! use flowattr_sdk::{AttributedFlow, Flow, testing::Harness};
//! use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
//! use otlp_sink::OtlpSink;
//! use prost::Message;
//!
//! let mut sink = Harness::<OtlpSink>::new("{}").unwrap();
//! let flow = AttributedFlow::new(Flow::tcp(
//!     "10.0.0.1:40000".parse().unwrap(),
//!     "10.0.0.2:443".parse().unwrap(),
//!     1_000,
//! ));
//! let chunk = sink.format(&[flow]).unwrap();
//! let request = ExportLogsServiceRequest::decode(chunk.as_slice()).unwrap();
//! let record = &request.resource_logs[0].scope_logs[0].log_records[0];
//! assert_eq!(record.time_unix_nano, 1_000);
//! assert_eq!(record.attributes[0].key, "source.address");
//! ```

pub mod config;
pub mod keys;
pub mod read;
mod record;

use flowattr_sdk::{AttributedFlow, Plugin, SinkPlugin};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::encoding::{WireType, encode_key, encode_varint, message};

pub use crate::config::Config;
use crate::record::{RecordWriter, Workloads};

/// The media type of the output.
pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// Bytes reserved per flow before formatting a chunk: a record with both
/// sides attributed to workloads with six attributes and a label is about
/// 1,700.
const RESERVE_PER_FLOW: usize = 1800;

/// Field numbers of the nesting, from the OTLP `.proto` files.
mod field {
    /// `ExportLogsServiceRequest.resource_logs`.
    pub const RESOURCE_LOGS: u32 = 1;
    /// `ResourceLogs.resource`.
    pub const RESOURCE: u32 = 1;
    /// `ResourceLogs.scope_logs`.
    pub const SCOPE_LOGS: u32 = 2;
    /// `ScopeLogs.scope`.
    pub const SCOPE: u32 = 1;
    /// `ScopeLogs.log_records`.
    pub const LOG_RECORDS: u32 = 2;
}

/// The `otlp-sink` plugin.
pub struct OtlpSink {
    config: Config,
    /// `ResourceLogs.resource` and `ScopeLogs.scope`, encoded once.
    resource: Vec<u8>,
    scope: Vec<u8>,
    records: RecordWriter,
}

impl OtlpSink {
    /// The config it was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Appends one `ExportLogsServiceRequest` holding a record per flow to
    /// `out`; nothing for no flows (which is also the encoding of an empty
    /// request).
    pub fn format_into(&mut self, flows: &[AttributedFlow], out: &mut Vec<u8>) {
        if flows.is_empty() {
            return;
        }
        // The records go straight into `out`, after room for the nesting's
        // header at its longest (two 5-byte lengths: a chunk is under
        // 4 GiB); the header is written once their length is known, and
        // the records moved up to meet it if it came out shorter.
        let most = self.header_len(u64::from(u32::MAX));
        let start = out.len();
        out.reserve(most + flows.len() * RESERVE_PER_FLOW);
        out.resize(start + most, 0);
        let mut workloads = Workloads::default();
        for f in flows {
            self.records
                .write(out, field::LOG_RECORDS, f, &mut workloads);
        }
        let records = out.len() - start - most;
        let mut header = Vec::with_capacity(most);
        let scope_logs = self.scope.len() + records;
        let resource_logs = self.resource.len() + delimited_len(field::SCOPE_LOGS, scope_logs);
        encode_key(field::RESOURCE_LOGS, WireType::LengthDelimited, &mut header);
        encode_varint(resource_logs as u64, &mut header);
        header.extend_from_slice(&self.resource);
        encode_key(field::SCOPE_LOGS, WireType::LengthDelimited, &mut header);
        encode_varint(scope_logs as u64, &mut header);
        header.extend_from_slice(&self.scope);
        let gap = most - header.len();
        out[start + gap..start + most].copy_from_slice(&header);
        if gap > 0 {
            out.copy_within(start + gap.., start);
            out.truncate(out.len() - gap);
        }
    }

    /// The header's length for `records` bytes of records (in `u64`: on
    /// wasm32 a `usize` cannot hold the longest case).
    fn header_len(&self, records: u64) -> usize {
        let scope_logs = self.scope.len() as u64 + records;
        let resource_logs = self.resource.len() as u64
            + (prost::encoding::key_len(field::SCOPE_LOGS)
                + prost::encoding::encoded_len_varint(scope_logs)) as u64
            + scope_logs;
        prost::encoding::key_len(field::RESOURCE_LOGS)
            + prost::encoding::encoded_len_varint(resource_logs)
            + (resource_logs - records) as usize
    }
}

/// The encoded length of a length-delimited field of `len` bytes.
fn delimited_len(tag: u32, len: usize) -> usize {
    prost::encoding::key_len(tag) + prost::encoding::encoded_len_varint(len as u64) + len
}

impl Plugin for OtlpSink {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        let resource = Resource {
            attributes: config
                .resource
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(v.clone())),
                    }),
                    key_strindex: 0,
                })
                .collect(),
            ..Resource::default()
        };
        let scope = InstrumentationScope {
            name: keys::SCOPE_NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..InstrumentationScope::default()
        };
        let mut resource_bytes = Vec::new();
        message::encode(field::RESOURCE, &resource, &mut resource_bytes);
        let mut scope_bytes = Vec::new();
        message::encode(field::SCOPE, &scope, &mut scope_bytes);
        Ok(Self {
            records: RecordWriter::new(config.include_process),
            config,
            resource: resource_bytes,
            scope: scope_bytes,
        })
    }
}

impl SinkPlugin for OtlpSink {
    fn content_type(&self) -> String {
        CONTENT_TYPE.to_owned()
    }

    /// Never fails: every flow has a record.
    fn format(&mut self, flows: &[AttributedFlow]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        self.format_into(flows, &mut out);
        Ok(out)
    }
}

flowattr_sdk::export_plugin!(OtlpSink as sink);
