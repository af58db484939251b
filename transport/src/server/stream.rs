//! One bidirectional stream: read a batch frame within the sender's share
//! of the budget, decode it on the blocking pool, hand the batch to the
//! collector, write its ack or reject.

use std::{net::SocketAddr, sync::Arc, sync::atomic::Ordering::Relaxed, time::Duration};

use flowattr_model::BatchId;
use tokio::sync::{mpsc, oneshot};

use super::{
    Delivery, FrameTiming, ReceiverCounters,
    admission::{Admission, Admitted, PeerShare},
};
use crate::{
    codec::{self, DecodeError, ErrorClass, Frame, RejectKind},
    frame_io::{self, ReadError, Received},
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
    pub admission: Arc<Admission>,
    /// The sender's share of the budget, and its warnings.
    pub share: Arc<PeerShare>,
}

/// A stream whose frame did not arrive whole in time.
struct TimedOut;

/// Reads one frame: its prefix, then (once the bytes are admitted) its
/// body, each within the read timeout; then decodes it on the blocking
/// pool. The admission is held until the stream is answered.
async fn receive(
    ctx: &StreamContext,
    recv: &mut quinn::RecvStream,
    body: &mut Vec<u8>,
) -> Result<(Result<Received, ReadError>, Option<Admitted>), TimedOut> {
    let prefix = tokio::time::timeout(
        ctx.read_timeout,
        frame_io::read_prefix(recv, ctx.max_frame_bytes),
    )
    .await
    .map_err(|_| TimedOut)?;
    let (len, received_ns) = match prefix {
        Ok(prefix) => prefix,
        Err(error) => return Ok((Err(error), None)),
    };
    let admitted = ctx.admission.admit(&ctx.share, len).await;
    let read = tokio::time::timeout(ctx.read_timeout, frame_io::read_body(recv, len, body))
        .await
        .map_err(|_| TimedOut)?;
    if let Err(error) = read {
        return Ok((Err(error), Some(admitted)));
    }
    let limits = *ctx.admission.decode_limits();
    let bytes = std::mem::take(body);
    let (bytes, decoded) = ctx
        .admission
        .decode(move || {
            let decoded = frame_io::decode(&bytes, &limits, received_ns);
            (bytes, decoded)
        })
        .await;
    *body = bytes;
    Ok((decoded, Some(admitted)))
}

/// Serves one stream to its end.
pub(super) async fn serve(
    ctx: &StreamContext,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let mut body = Vec::new();
    let (read, _admitted) = match receive(ctx, &mut recv, &mut body).await {
        Ok((read, admitted)) => (Ok(read), admitted),
        Err(TimedOut) => (Err(TimedOut), None),
    };
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
            let names_sender = batch.agent == ctx.peer.0;
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
            match answer.as_ref().map(|a| a.refusal(names_sender)) {
                Ok(None) => {
                    ctx.counters.acked.fetch_add(1, Relaxed);
                    Answer::Ack(id)
                }
                Ok(Some((kind, reason))) => {
                    ctx.counters.rejected.fetch_add(1, Relaxed);
                    tracing::warn!(peer = %ctx.peer, batch = %id, %kind, %reason, "the collector rejected a batch");
                    Answer::Reject(Some(id), kind, reason.to_owned())
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
            if let Some(held_back) = ctx.share.may_warn() {
                tracing::warn!(peer = %ctx.peer, kind, held_back, "an agent sent a frame that is not a batch");
            }
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
        Err(TimedOut) => {
            // Not refused: the batch may be fine and the link slow. The
            // stream is reset, and the agent sends the batch again.
            let timeout = ctx.read_timeout;
            let batch = codec::peek_batch_id(&body).map(|id| id.to_string());
            if let Some(held_back) = ctx.share.may_warn() {
                tracing::warn!(peer = %ctx.peer, batch, ?timeout, held_back, "a batch frame did not arrive in time");
            }
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
    let class = error.class();
    ctx.counters.bad_frame(class);
    if let Some(held_back) = ctx.share.may_warn() {
        let batch = id.as_ref().map(ToString::to_string);
        tracing::warn!(peer = %ctx.peer, batch, %error, reason = class.as_str(), held_back, "refused a bad frame (later ones within 10 s are counted, not logged)");
    }
    Answer::Reject(id, RejectKind::Malformed, error.to_string())
}
