//! Attributed flows as Arrow record batches: the typed columns that the
//! `arrow-sink` (Arrow IPC streams) and `parquet-sink` (Parquet files)
//! write, built in one pass over a batch.
//!
//! Column names extend the AWS VPC Flow Logs fields where one exists
//! (`srcaddr`, `dstaddr`, `srcport`, `dstport`, `protocol`, `packets`,
//! `bytes`, `start`, `end`, `flow_direction`, `account_id`, `region`).
//! **`src` is always the capturing host's end** (the flow's local side,
//! attributed at capture) and `dst` the other end; `flow_direction` says
//! who opened the connection (`egress`: the src end, `ingress`: the dst
//! end). Each side's attribution is a set of `src_*` / `dst_*` columns;
//! its workload columns are dictionary-encoded over the batch's
//! [`WorkloadDictionary`], so each distinct workload's strings are stored
//! once per batch. `docs/output-schema.md` documents every column.
//!
//! ```
//! use flowattr_sdk::{AttributedFlow, Flow};
//!
//! let flows = vec![AttributedFlow::new(Flow::tcp(
//!     "10.0.0.1:40000".parse().unwrap(),
//!     "10.0.0.2:443".parse().unwrap(),
//!     1_714_564_800_000_000_000,
//! ))];
//! let batch = flow_arrow::record_batch(&flows, true);
//! assert_eq!(batch.num_rows(), 1);
//! assert_eq!(batch.schema(), flow_arrow::schema());
//! ```

mod columns;
mod schema;

pub use columns::record_batch;
pub use schema::{STATUS_VALUES, schema};

/// Re-exported so the sinks and their tests name one Arrow version.
pub use arrow_array;
pub use arrow_schema;
pub use flowattr_sdk::WorkloadDictionary;
