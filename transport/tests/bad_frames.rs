//! Malformed, truncated, oversized and wrong-version frames from a raw
//! QUIC client are refused with a reject frame (naming the batch when its
//! id is readable) and counted; a frame that stops arriving is counted and
//! its stream reset. The connection stays up and a good batch on it is
//! still delivered and acknowledged.

mod common;

use std::time::Duration;

use common::*;
use flowattr_model::BatchId;
use flowattr_transport::{codec, codec::Frame, tls};

/// Sends `bytes` on a new stream (finishing it when `finish`) and decodes
/// the one frame that comes back.
async fn exchange(conn: &quinn::Connection, bytes: &[u8], finish: bool) -> Frame {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    match send.write_all(bytes).await {
        // Refused before it was all read.
        Ok(()) | Err(quinn::WriteError::Stopped(_)) => {}
        Err(e) => panic!("{e}"),
    }
    if finish {
        let _ = send.finish();
    }
    let answer = recv.read_to_end(1 << 16).await.unwrap();
    codec::decode_frame(&answer, 1 << 16).unwrap()
}

/// The id and reason of a reject, which must say the frame was malformed:
/// the agent drops such a batch.
fn reject_of(frame: Frame) -> (Option<BatchId>, String) {
    match frame {
        Frame::Reject { id, kind, reason } => {
            assert_eq!(kind, codec::RejectKind::Malformed, "{reason}");
            (id, reason)
        }
        other => panic!("expected a reject, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_are_rejected_and_counted_and_good_ones_still_acked() {
    init_logs();
    let pki = Pki::new();
    let (receiver, rx) = receiver_at(&pki, "127.0.0.1:0".parse().unwrap(), |c| {
        c.max_frame_bytes = 64 << 10;
        c.read_timeout = Duration::from_millis(500);
    })
    .await;
    let (seen, _collector) = acking_collector(rx);
    let (_endpoint, conn) = raw_client(
        tls::client_crypto(&pki.files(AGENT)).unwrap(),
        receiver.local_addr(),
    )
    .await;
    let conn = conn.unwrap();
    let counters = receiver.counters();

    // Not protobuf at all.
    let (id, reason) = reject_of(
        exchange(
            &conn,
            &[0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            true,
        )
        .await,
    );
    assert_eq!(id, None);
    assert!(reason.contains("malformed"), "{reason}");
    assert_eq!(counters.snapshot().malformed, 1);

    // A batch cut short: the stream ends early, the id is still readable.
    let cut = batch(1, 100, 20);
    let mut bytes = Vec::new();
    codec::encode_batch(&cut, &mut bytes).unwrap();
    let (id, reason) = reject_of(exchange(&conn, &bytes[..bytes.len() - 10], true).await);
    assert_eq!(id, Some(cut.id()));
    assert!(reason.contains("truncated"), "{reason}");
    assert_eq!(counters.snapshot().truncated, 1);

    // A batch bigger than the receiver takes: refused from its length.
    let big = batch(1, 101, 3000);
    let mut bytes = Vec::new();
    codec::encode_batch(&big, &mut bytes).unwrap();
    assert!(bytes.len() > 64 << 10);
    let (id, reason) = reject_of(exchange(&conn, &bytes, true).await);
    assert_eq!(id, Some(big.id()));
    assert!(reason.contains("exceeds the maximum"), "{reason}");
    assert_eq!(counters.snapshot().oversized, 1);

    // Another protocol version.
    let (id, reason) = reject_of(exchange(&conn, &[0, 0, 0, 2, 0x08, 0x03], true).await);
    assert_eq!(id, None);
    assert!(reason.contains("version 3"), "{reason}");
    assert_eq!(counters.snapshot().version, 1);

    // An ack where a batch belongs.
    let mut bytes = Vec::new();
    codec::encode_ack(&cut.id(), &mut bytes).unwrap();
    let (_, reason) = reject_of(exchange(&conn, &bytes, true).await);
    assert!(reason.contains("expected a batch"), "{reason}");
    assert_eq!(counters.snapshot().malformed, 2);

    // Half a frame and then silence: after the read timeout the stream is
    // reset, not refused (the batch may be fine and the link slow), so the
    // agent will send it again.
    let mut bytes = Vec::new();
    codec::encode_batch(&batch(1, 102, 5), &mut bytes).unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&bytes[..bytes.len() / 2]).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1 << 16))
        .await
        .expect("the receiver gives up on the stream");
    assert!(
        matches!(
            answer,
            Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(_)))
        ),
        "{answer:?}"
    );
    assert_eq!(counters.snapshot().truncated, 2);

    // The connection is still up, and a good batch on it is acknowledged.
    let good = batch(1, 103, 50);
    let mut bytes = Vec::new();
    codec::encode_batch(&good, &mut bytes).unwrap();
    assert_eq!(exchange(&conn, &bytes, true).await, Frame::Ack(good.id()));
    assert!(conn.close_reason().is_none());
    let delivered = seen.delivered.lock().unwrap().clone();
    assert_eq!(
        delivered.len(),
        1,
        "only the good batch reaches the collector"
    );
    assert_eq!(delivered[0].batch, good);
    let stats = counters.snapshot();
    assert_eq!((stats.connections, stats.batches, stats.acked), (1, 1, 1));
}
