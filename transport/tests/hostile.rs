//! One agent floods, the others must not notice. A hostile client with a
//! CA-signed certificate (the PKI's `collector-2`) opens more connections
//! than its identity may hold, stalls frames that fill its share of the
//! in-flight budget, sends batches over the decoding limits and garbage,
//! and a crowd of clients handshakes at once. Each is contained and
//! counted, while a real `Shipper` of another identity keeps getting its
//! batches acknowledged with little delay.

mod common;

use std::time::{Duration, Instant};

use common::*;
use flowattr_transport::{Shipper, codec, codec::Frame, tls};

const HOSTILE: &str = "collector-2";

/// A batch frame body of `flows` empty flows (two bytes each), naming
/// `agent`: small on the wire, large once decoded.
fn empty_flows_frame(agent: &str, flows: usize) -> Vec<u8> {
    let mut batch = vec![0x0a, agent.len() as u8 + 2, 0x0a, agent.len() as u8];
    batch.extend(agent.as_bytes());
    for _ in 0..flows {
        batch.extend([0x2a, 0x00]);
    }
    let mut body = vec![0x08, codec::PROTOCOL_VERSION as u8, 0x12];
    let mut len = batch.len();
    while len >= 0x80 {
        body.push((len as u8) | 0x80);
        len >>= 7;
    }
    body.push(len as u8);
    body.extend(batch);
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

/// Sends `bytes` on a new stream and reads the one answer frame.
async fn exchange(conn: &quinn::Connection, bytes: &[u8]) -> Frame {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    let answer = within(
        Duration::from_secs(30),
        "the answer",
        recv.read_to_end(1 << 16),
    )
    .await
    .unwrap();
    codec::decode_frame(&answer, 1 << 16).unwrap()
}

fn malformed(frame: Frame) -> String {
    match frame {
        Frame::Reject { kind, reason, .. } => {
            assert_eq!(kind, codec::RejectKind::Malformed, "{reason}");
            reason
        }
        other => panic!("expected a reject, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_identity_is_contained_and_counted_while_another_goes_on() {
    init_logs();
    let pki = Pki::new();
    let (receiver, rx) = receiver_at(&pki, "127.0.0.1:0".parse().unwrap(), |c| {
        c.max_frame_bytes = 1 << 20;
        c.max_in_flight_bytes_per_identity = 2 << 20;
        c.max_in_flight_bytes = 4 << 20;
        c.max_connections_per_identity = 2;
        c.max_pending_handshakes = 1;
        c.limits.max_flows = 1000;
        c.read_timeout = Duration::from_secs(2);
    })
    .await;
    let (seen, _collector) = acking_collector(rx);
    let addr = receiver.local_addr();
    let counters = receiver.counters();
    let hostile = || tls::client_crypto(&pki.files(HOSTILE)).unwrap();

    // Two connections are the identity's; a third is closed at once.
    let (_e1, c1) = raw_client(hostile(), addr).await;
    let (_e2, c2) = raw_client(hostile(), addr).await;
    let (c1, c2) = (c1.unwrap(), c2.unwrap());
    assert_eq!(c1.max_datagram_size(), None, "datagrams are not accepted");
    // A client's handshake ends before the server's: wait until the server
    // holds both, or the third client may be counted before the second.
    wait_until(Duration::from_secs(5), "the server holds two", || {
        counters.snapshot().connections == 2
    })
    .await;
    let (_e3, c3) = raw_client(hostile(), addr).await;
    let closed = within(
        Duration::from_secs(10),
        "the third to be closed",
        c3.unwrap().closed(),
    )
    .await;
    assert!(
        matches!(&closed, quinn::ConnectionError::ApplicationClosed(c) if c.error_code == 3u32.into()),
        "{closed:?}"
    );
    assert_eq!(counters.snapshot().connections_refused, 1);

    // Frames announced at 1 MiB and stalled: two fill the identity's share.
    let mut stalled = Vec::new();
    for conn in [&c1, &c2, &c1] {
        let (mut send, recv) = conn.open_bi().await.unwrap();
        send.write_all(&(1u32 << 20).to_be_bytes()).await.unwrap();
        send.write_all(&[0; 100]).await.unwrap();
        stalled.push((send, recv));
    }
    wait_until(Duration::from_secs(5), "the share is taken", || {
        counters.snapshot().in_flight_bytes == 2 << 20
    })
    .await;

    // The good agent ships meanwhile, one batch at a time.
    let spool = tempfile::tempdir().unwrap();
    let shipper = Shipper::start(shipper_config(&pki, &[addr], spool.path().into())).unwrap();
    let good_counters = shipper.counters();
    let mut delays = Vec::new();
    let mut flood = Vec::new();
    for seq in 0..10u64 {
        if seq == 2 {
            // A crowd of handshakes at once, while the good agent ships.
            for _ in 0..20 {
                let crypto = hostile();
                flood.push(tokio::spawn(async move { raw_client(crypto, addr).await }));
            }
        }
        let started = Instant::now();
        shipper.send(&batch(1, seq, 200)).await.unwrap();
        wait_until(Duration::from_secs(10), "the good batch is acked", || {
            good_counters.snapshot().acked == seq + 1
        })
        .await;
        delays.push(started.elapsed());
    }

    // Over the flow limit (20 KB on the wire, 1.5 MB and more decoded) and
    // garbage: refused, counted, the connection stays up. The share is
    // still full, so these wait for the stalled frames' timeout.
    let reason = malformed(exchange(&c2, &empty_flows_frame(HOSTILE, 10_000)).await);
    assert!(reason.contains("flows in a batch"), "{reason}");
    let reason = malformed(exchange(&c2, &[0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]).await);
    assert!(reason.contains("malformed"), "{reason}");
    for task in flood {
        let _ = task.await;
    }
    // The third stalled frame was admitted once the first two timed out,
    // and times out in turn; then nothing is in flight.
    wait_until(
        Duration::from_secs(5),
        "every stalled frame timed out",
        || counters.snapshot().truncated == 3,
    )
    .await;
    wait_until(Duration::from_secs(1), "nothing is in flight", || {
        counters.snapshot().in_flight_bytes == 0
    })
    .await;

    let stats = counters.snapshot();
    assert_eq!(stats.over_limit, 1);
    assert_eq!(stats.malformed, 1);
    assert!(stats.retries >= 1, "handshakes piled up: {stats:?}");
    // Every client of the crowd was refused: shed during its handshake, or
    // closed after it for the identity's connection cap.
    assert_eq!(
        stats.handshakes_shed + stats.connections_refused,
        1 + 20,
        "{stats:?}"
    );
    let max = delays.iter().max().unwrap();
    eprintln!("good agent's ack delays under the flood: max {max:?}, all {delays:?}; {stats:?}");
    assert!(*max < Duration::from_secs(1), "{delays:?}");
    let delivered = seen.delivered.lock().unwrap();
    assert_eq!(
        delivered.len(),
        10,
        "only the good agent's batches were delivered"
    );
    assert!(delivered.iter().all(|d| d.peer == AGENT));
    drop(stalled);
}
