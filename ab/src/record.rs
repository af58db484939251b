//! One flow as both methods saw it, how the heartbeat method reached its
//! answer, and the JSON-lines file the collector writes them to.

use std::{io::BufRead, net::SocketAddr, sync::Arc};

use flowattr_model::{AttributionSource, Initiator, Side, UnattributedReason, Workload};
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

/// How a method reached an attributed answer: the kind of source and the
/// plugin that answered (empty for the heartbeat table).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributionPath {
    pub source: AttributionSource,
    #[serde(default, skip_serializing_if = "is_empty")]
    pub plugin: Arc<str>,
}

fn is_empty(s: &Arc<str>) -> bool {
    s.is_empty()
}

impl AttributionPath {
    /// A path through `plugin` (empty: none).
    pub fn new(source: AttributionSource, plugin: impl Into<Arc<str>>) -> Self {
        Self {
            source,
            plugin: plugin.into(),
        }
    }

    /// The path an attributed side took; `None` for any other side.
    pub fn of(side: &Side) -> Option<Self> {
        match side {
            Side::Attributed(a) => Some(Self::new(a.source, a.plugin.clone())),
            _ => None,
        }
    }

    /// The path as reports show it: the source's kebab-case name
    /// (`heartbeat`, `counterpart`, `resolver`, `capture`, `capture-shared`),
    /// then `:plugin` when a plugin answered (`resolver:sonar-legacy`).
    pub fn label(&self) -> String {
        let source = match self.source {
            AttributionSource::Capture => "capture",
            AttributionSource::Heartbeat => "heartbeat",
            AttributionSource::Resolver => "resolver",
            AttributionSource::Counterpart => "counterpart",
            AttributionSource::CaptureShared => "capture-shared",
        };
        if self.plugin.is_empty() {
            source.to_owned()
        } else {
            format!("{source}:{}", self.plugin)
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
    /// The flow's local endpoint, when recorded (older records files lack
    /// it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_endpoint: Option<SocketAddr>,
    /// The remote endpoint.
    pub remote: SocketAddr,
    /// Who opened the connection: the dependency edge runs from the
    /// initiator to the other side.
    #[serde(default)]
    pub initiator: Initiator,
    pub heartbeat: Outcome,
    /// How the heartbeat method reached an attributed answer (`None` when
    /// unattributed, or not recorded by an older collector). The legacy
    /// method's path is always its shadow resolver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_path: Option<AttributionPath>,
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
            local_endpoint: Some("[2001:db8::1]:5000".parse().unwrap()),
            remote: "[2001:db8::7]:443".parse().unwrap(),
            initiator: Initiator::Local,
            heartbeat: Outcome::Attributed(Arc::new(Workload::with_id("api-1"))),
            heartbeat_path: Some(AttributionPath::new(
                AttributionSource::Resolver,
                "sonar-legacy",
            )),
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
    fn records_without_endpoint_or_path_still_read() {
        let line = r#"{"start_ns":1,"local":null,"remote":"10.0.0.1:80","heartbeat":{"attributed":{"id":"a"}},"legacy":{"unattributed":"not-found"}}"#;
        let read = read_records(line.as_bytes()).unwrap();
        assert_eq!(
            (read[0].local_endpoint, &read[0].heartbeat_path),
            (None, &None)
        );
        let text = serde_json::to_string(&read[0]).unwrap();
        assert!(!text.contains("heartbeat_path"), "{text}");
    }

    #[test]
    fn a_path_is_labelled_by_source_then_plugin() {
        let hb = AttributionPath::new(AttributionSource::Heartbeat, "");
        assert_eq!(hb.label(), "heartbeat");
        assert_eq!(
            serde_json::to_string(&hb).unwrap(),
            r#"{"source":"heartbeat"}"#
        );
        let lb = AttributionPath::new(AttributionSource::Resolver, "sonar-legacy");
        assert_eq!(lb.label(), "resolver:sonar-legacy");
        assert_eq!(
            AttributionPath::new(AttributionSource::Counterpart, "").label(),
            "counterpart"
        );
        assert_eq!(AttributionPath::of(&Side::Pending), None);
    }

    #[test]
    fn a_malformed_line_is_named() {
        let err = read_records("{\"start_ns\": 1}\n".as_bytes()).unwrap_err();
        assert!(matches!(err, ReadError::Malformed { line: 1, .. }), "{err}");
    }
}
