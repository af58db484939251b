//! One attempt to deliver one batch: open a stream, stamp the frame with
//! the send time (and, while an older batch is unanswered, a lower
//! watermark), write it, finish, wait for the ack or reject (and its kind).

use std::{path::PathBuf, sync::Arc, time::Duration};

use flowattr_model::BatchId;

use super::counters::ShipperCounters;
use crate::{
    clock::unix_now_ns,
    codec::{self, Frame, RejectKind},
    frame_io::{ReadError, read_frame},
};

/// The largest answer frame read.
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// Where the batch's frame is.
pub(super) enum Payload {
    /// Just encoded by `send`.
    Memory(Vec<u8>),
    /// In the spool file.
    Disk(PathBuf),
}

/// How an attempt ended.
#[derive(Debug)]
pub(super) enum Outcome {
    Acked,
    Rejected {
        kind: RejectKind,
        reason: String,
    },
    /// The spool file is gone.
    Gone,
    /// To be retried; `abandon` when the connection is lost or unhealthy.
    Failed {
        error: String,
        abandon: bool,
    },
}

/// Delivers `payload` (the frame of batch `id`) over `conn`, its
/// watermark lowered to `watermark_cap` when given (see
/// [`super::index::SpoolIndex::watermark_cap`]).
pub(super) async fn deliver(
    conn: &quinn::Connection,
    id: &BatchId,
    payload: Payload,
    watermark_cap: Option<u64>,
    ack_timeout: Duration,
    counters: &Arc<ShipperCounters>,
) -> Outcome {
    let mut frame = match payload {
        Payload::Memory(frame) => frame,
        Payload::Disk(path) => {
            match tokio::task::spawn_blocking(move || super::spool::read_file(&path)).await {
                Ok(Ok(frame)) => frame,
                Ok(Err(e)) if e.source.kind() == std::io::ErrorKind::NotFound => {
                    return Outcome::Gone;
                }
                Ok(Err(e)) => {
                    return Outcome::Failed {
                        error: e.to_string(),
                        abandon: false,
                    };
                }
                Err(e) => {
                    return Outcome::Failed {
                        error: e.to_string(),
                        abandon: false,
                    };
                }
            }
        }
    };
    // Waits while the collector's stream limit is reached: its backpressure.
    let (mut send, mut recv) = match conn.open_bi().await {
        Ok(streams) => streams,
        Err(e) => {
            return Outcome::Failed {
                error: format!("opening a stream: {e}"),
                abandon: true,
            };
        }
    };
    ShipperCounters::inc(&counters.sent);
    // Stamped now, when the stream is open and the collector's stream limit
    // no longer holds the frame back: the collector measures our clock by it.
    if let Err(error) = codec::stamp_sent(&mut frame, unix_now_ns()) {
        tracing::warn!(batch = %id, %error, "sending a batch without its send time");
    }
    if let Some(cap) = watermark_cap
        && let Err(error) = codec::cap_watermark(&mut frame, cap)
    {
        // Its own watermark would claim flows the collector lacks: better
        // not to send it now (retried like any failure).
        return Outcome::Failed {
            error: format!("lowering the watermark: {error}"),
            abandon: false,
        };
    }
    let exchange = async {
        match send.write_all(&frame).await {
            Ok(()) => {
                let _ = send.finish();
            }
            // The collector refused the frame before reading it all; its
            // answer says why.
            Err(quinn::WriteError::Stopped(_)) => {}
            Err(e) => return Err(format!("writing the batch: {e}")),
        }
        read_frame(&mut recv, MAX_ANSWER_BYTES, &mut Vec::new())
            .await
            .map(|received| received.frame)
            .map_err(|e| match e {
                ReadError::Io(e) => format!("reading the answer: {e}"),
                ReadError::Decode { error, .. } => format!("bad answer: {error}"),
            })
    };
    let answer = match tokio::time::timeout(ack_timeout, exchange).await {
        Ok(answer) => answer,
        Err(_) => {
            return Outcome::Failed {
                error: format!("no answer within {ack_timeout:?}"),
                abandon: true,
            };
        }
    };
    match answer {
        Ok(Frame::Ack(acked)) if acked == *id => Outcome::Acked,
        Ok(Frame::Reject {
            id: rejected,
            kind,
            reason,
        }) if rejected.as_ref().is_none_or(|r| r == id) => Outcome::Rejected { kind, reason },
        Ok(other) => Outcome::Failed {
            error: format!("unexpected answer: {}", kind(&other)),
            abandon: false,
        },
        Err(error) => Outcome::Failed {
            error,
            abandon: conn.close_reason().is_some(),
        },
    }
}

/// A frame's kind and batch id, for logs.
fn kind(frame: &Frame) -> String {
    match frame {
        Frame::Batch(b) => format!("batch {}", b.id()),
        Frame::Ack(id) => format!("ack of {id}"),
        Frame::Reject { id: Some(id), .. } => format!("reject of {id}"),
        Frame::Reject { id: None, .. } => "reject".into(),
    }
}
