//! One bidirectional stream: read a batch frame, hand the batch to the
//! collector, write its ack or reject.

use std::{net::SocketAddr, sync::Arc, sync::atomic::Ordering::Relaxed, time::Duration};

use flowattr_model::BatchId;
use tokio::sync::{mpsc, oneshot};

use super::{Delivery, FrameTiming, ReceiverCounters, Reply};
use crate::{
    codec::{self, DecodeError, ErrorClass, Frame, RejectKind},
    frame_io::{ReadError, Received, read_frame},
    tls::PeerIdentity,
};

/// Stream reset code: no answer (the agent sends the batch again).
const NO_ANSWER: u32 = 1;

/// What every stream of one connection shares.
pub(super) struct StreamContext {
    /// The connection, for its round-trip time.
    pub conn: quinn::Connection,
    pub peer: PeerIdentity,
    pub remote_addr: SocketAddr,
    pub deliveries: mpsc::Sender<Delivery>,
    pub counters: Arc<ReceiverCounters>,
    pub max_frame_bytes: usize,
    pub read_timeout: Duration,
}

/// Serves one stream to its end.
pub(super) async fn serve(
    ctx: &StreamContext,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let mut body = Vec::new();
    let read = tokio::time::timeout(
        ctx.read_timeout,
        read_frame(&mut recv, ctx.max_frame_bytes, &mut body),
    )
    .await;
    let answer = match read {
        Ok(Ok(Received {
            frame: Frame::Batch(batch),
            sent_ns,
            received_ns,
        })) => {
            ctx.counters.batches.fetch_add(1, Relaxed);
            let id = batch.id();
            // The receiver knows both names: a batch that names another
            // agent than its certificate is refused for identity, whatever
            // words the collector chose, and the agent keeps it.
            let refusal = if batch.agent == ctx.peer.0 {
                RejectKind::Unspecified
            } else {
                RejectKind::Identity
            };
            let (reply, answer) = oneshot::channel();
            let rtt = ctx.conn.rtt();
            let delivery = Delivery {
                peer: ctx.peer.clone(),
                remote_addr: ctx.remote_addr,
                batch,
                body: std::mem::take(&mut body),
                timing: FrameTiming {
                    sent_ns,
                    received_ns,
                    rtt_ns: u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX),
                },
                reply,
            };
            // Waits while the collector is behind: this stream stays open,
            // and with the stream limit reached the agent cannot open more.
            if ctx.deliveries.send(delivery).await.is_err() {
                tracing::debug!(batch = %id, "collector gone; batch not answered");
                let _ = send.reset(NO_ANSWER.into());
                return;
            }
            // An agent that gives up on the answer stops the stream: the
            // answer is then dropped, so the collector sees the arrival as
            // abandoned and does not take it.
            let answer = tokio::select! {
                answer = answer => answer,
                _ = send.stopped() => {
                    tracing::debug!(peer = %ctx.peer, batch = %id, "the agent stopped waiting for the answer");
                    return;
                }
            };
            match answer {
                Ok(Reply::Ack) => {
                    ctx.counters.acked.fetch_add(1, Relaxed);
                    Answer::Ack(id)
                }
                Ok(Reply::Reject(reason)) => {
                    ctx.counters.rejected.fetch_add(1, Relaxed);
                    tracing::warn!(peer = %ctx.peer, batch = %id, kind = %refusal, %reason, "the collector rejected a batch");
                    Answer::Reject(Some(id), refusal, reason)
                }
                Err(_) => {
                    tracing::debug!(peer = %ctx.peer, batch = %id, "the collector dropped a batch unanswered; the agent will send it again");
                    let _ = send.reset(NO_ANSWER.into());
                    return;
                }
            }
        }
        Ok(Ok(Received { frame: other, .. })) => {
            ctx.counters.malformed.fetch_add(1, Relaxed);
            let kind = match other {
                Frame::Ack(_) => "ack",
                Frame::Reject { .. } => "reject",
                Frame::Batch(_) => "batch",
            };
            tracing::warn!(peer = %ctx.peer, kind, "an agent sent a frame that is not a batch");
            Answer::Reject(
                None,
                RejectKind::Malformed,
                format!("expected a batch frame, got {kind}"),
            )
        }
        Ok(Err(ReadError::Decode { error, id })) => refuse(ctx, error, id),
        Ok(Err(ReadError::Io(error))) => {
            tracing::debug!(peer = %ctx.peer, %error, "a stream failed before its frame was read");
            return;
        }
        Err(_) => {
            // Not refused: the batch may be fine and the link slow. The
            // stream is reset, and the agent sends the batch again.
            let timeout = ctx.read_timeout;
            let batch = codec::peek_batch_id(&body).map(|id| id.to_string());
            tracing::warn!(peer = %ctx.peer, batch, ?timeout, "a batch frame did not arrive in time");
            ctx.counters.bad_frame(ErrorClass::Truncated);
            let _ = recv.stop(NO_ANSWER.into());
            let _ = send.reset(NO_ANSWER.into());
            return;
        }
    };
    let mut bytes = Vec::new();
    let encoded = match &answer {
        Answer::Ack(id) => codec::encode_ack(id, &mut bytes),
        Answer::Reject(id, kind, reason) => {
            codec::encode_reject(id.as_ref(), *kind, reason, &mut bytes)
        }
    };
    if encoded.is_err() {
        return;
    }
    // Unread bytes of a refused frame are not wanted.
    let _ = recv.stop(0u32.into());
    if let Err(error) = send.write_all(&bytes).await {
        tracing::debug!(peer = %ctx.peer, %error, "the answer could not be written");
        return;
    }
    let _ = send.finish();
    // Wait until the agent has the answer (or gives up on the stream).
    let _ = send.stopped().await;
}

enum Answer {
    Ack(BatchId),
    Reject(Option<BatchId>, RejectKind, String),
}

fn refuse(ctx: &StreamContext, error: DecodeError, id: Option<BatchId>) -> Answer {
    ctx.counters.bad_frame(error.class());
    let batch = id.as_ref().map(ToString::to_string);
    tracing::warn!(peer = %ctx.peer, batch, %error, "refused a bad frame");
    Answer::Reject(id, RejectKind::Malformed, error.to_string())
}
