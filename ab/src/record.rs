//! One flow as both methods saw it, and the JSON-lines file the collector
//! writes them to.

use std::{io::BufRead, net::SocketAddr, sync::Arc};

use flowattr_model::{Initiator, Side, UnattributedReason, Workload};
use serde::{Deserialize, Serialize};

/// What one method answered for a flow's remote side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Attributed(Arc<Workload>),
    Unattributed(UnattributedReason),
}

impl Outcome {
    /// The outcome a flow's side stands for (`pending` counts as not found:
    /// nothing answered).
    pub fn of(side: &Side) -> Self {
        match side {
            Side::Attributed(a) => Self::Attributed(a.workload.clone()),
            Side::Unattributed(reason) => Self::Unattributed(*reason),
            Side::Pending => Self::Unattributed(UnattributedReason::NotFound),
        }
    }

    /// The workload, when attributed.
    pub fn workload(&self) -> Option<&Workload> {
        match self {
            Self::Attributed(w) => Some(w),
            Self::Unattributed(_) => None,
        }
    }
}

/// A flow's remote side as the heartbeat method and the legacy method
/// (a shadow resolver) answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compared {
    /// The flow's start (the capturing host's clock), Unix-epoch ns.
    pub start_ns: u64,
    /// The flow's local workload (attributed at capture), if any.
    pub local: Option<Arc<Workload>>,
    /// The remote endpoint.
    pub remote: SocketAddr,
    /// Who opened the connection: the dependency edge runs from the
    /// initiator to the other side.
    #[serde(default)]
    pub initiator: Initiator,
    pub heartbeat: Outcome,
    pub legacy: Outcome,
}

/// A line of a records file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("reading records: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {source}")]
    Malformed {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
}

/// Reads a JSON-lines records file; a malformed line fails the whole read
/// with its line number (a report from a partly read file would mislead).
pub fn read_records(reader: impl BufRead) -> Result<Vec<Compared>, ReadError> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|source| ReadError::Malformed {
            line: i + 1,
            source,
        })?;
        out.push(record);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_json_lines() {
        let record = Compared {
            start_ns: 5,
            local: Some(Arc::new(Workload::with_id("gw-1"))),
            remote: "[2001:db8::7]:443".parse().unwrap(),
            initiator: Initiator::Local,
            heartbeat: Outcome::Attributed(Arc::new(Workload::with_id("api-1"))),
            legacy: Outcome::Unattributed(UnattributedReason::NotFound),
        };
        let text = format!(
            "{}\n\n{}\n",
            serde_json::to_string(&record).unwrap(),
            serde_json::to_string(&record).unwrap()
        );
        let read = read_records(text.as_bytes()).unwrap();
        assert_eq!(read, vec![record.clone(), record]);
    }

    #[test]
    fn a_malformed_line_is_named() {
        let err = read_records("{\"start_ns\": 1}\n".as_bytes()).unwrap_err();
        assert!(matches!(err, ReadError::Malformed { line: 1, .. }), "{err}");
    }
}
