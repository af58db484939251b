//! Batches travel from a shipper to a receiver over QUIC with mutual TLS
//! and are acknowledged; the spool empties as acks arrive.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use flowattr_transport::{Reply, Shipper};

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_arrive_intact_and_are_acknowledged() {
    init_logs();
    let pki = Pki::new();
    let (receiver, rx) = receiver(&pki).await;
    let (seen, _collector) = acking_collector(rx);
    let spool = tempfile::tempdir().unwrap();
    let shipper = Shipper::start(shipper_config(
        &pki,
        &[receiver.local_addr()],
        spool.path().into(),
    ))
    .unwrap();
    let mut sent: Vec<_> = (0..20)
        .map(|seq| batch(1, seq, 1 + seq as usize * 50))
        .collect();
    // A batch without flows (an agent's watermark keep-alive) goes the same way.
    sent[0].flows.clear();
    let before = unix_now_ns();
    for b in &sent {
        shipper.send(b).await.unwrap();
    }
    let counters = shipper.counters();
    wait_until(Duration::from_secs(10), "all are acked", || {
        counters.snapshot().acked == 20
    })
    .await;
    let delivered = seen.delivered.lock().unwrap().clone();
    assert_eq!(delivered.len(), 20);
    for d in &delivered {
        assert_eq!(d.peer, AGENT, "the peer is named by its certificate");
        // One host, one clock: sent, then read.
        let sent_ns = d.timing.sent_ns.expect("the shipper stamps every send");
        assert!(
            before <= sent_ns && sent_ns <= d.timing.received_ns,
            "{:?}",
            d.timing
        );
        assert!(d.timing.rtt_ns > 0, "{:?}", d.timing);
    }
    let mut got: Vec<_> = delivered.into_iter().map(|d| d.batch).collect();
    got.sort_by_key(|b| b.seq);
    // A batch sent while an older one is unanswered states no watermark
    // past it (the shipper caps it, depending on timing): at most its own.
    for (g, s) in got.iter_mut().zip(&sent) {
        assert!(
            g.complete_until_ns <= s.complete_until_ns,
            "batch {}",
            g.seq
        );
        g.complete_until_ns = s.complete_until_ns;
    }
    assert_eq!(got, sent, "every other field of every flow arrives");
    let stats = counters.snapshot();
    assert_eq!(
        (
            stats.spooled_batches,
            stats.spool_bytes,
            stats.sent,
            stats.retries
        ),
        (0, 0, 20, 0)
    );
    assert!(spool_files(spool.path()).is_empty());
    assert_eq!(shipper.connected_to(), Some(receiver.local_addr()));
    let r = receiver.counters().snapshot();
    assert_eq!((r.connections, r.batches, r.acked), (1, 20, 20));
    assert_eq!(shipper.shutdown(Duration::from_secs(1)).await, 0);
    receiver.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_batch_is_dropped_from_the_spool_and_counted() {
    init_logs();
    let pki = Pki::new();
    let (receiver, rx) = receiver(&pki).await;
    let (seen, _collector) = collector(rx, |b| {
        Some(if b.seq == 1 {
            Reply::Reject("claims addresses it does not own".into())
        } else {
            Reply::Ack
        })
    });
    let spool = tempfile::tempdir().unwrap();
    let shipper = Shipper::start(shipper_config(
        &pki,
        &[receiver.local_addr()],
        spool.path().into(),
    ))
    .unwrap();
    for seq in 0..3 {
        shipper.send(&batch(1, seq, 5)).await.unwrap();
    }
    let counters = shipper.counters();
    wait_until(Duration::from_secs(10), "all are answered", || {
        let s = counters.snapshot();
        s.acked == 2 && s.rejected == 1
    })
    .await;
    assert_eq!(counters.snapshot().spooled_batches, 0);
    assert!(
        spool_files(spool.path()).is_empty(),
        "the rejected batch is not kept"
    );
    assert_eq!(seen.len(), 3, "the rejected batch is not sent again");
    assert_eq!(receiver.counters().snapshot().rejected, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiver_shutdown_lets_an_answer_in_progress_finish_then_refuses() {
    init_logs();
    let pki = Pki::new();
    let (receiver, mut rx) = receiver(&pki).await;
    let addr = receiver.local_addr();
    let spool = tempfile::tempdir().unwrap();
    let shipper = Shipper::start(shipper_config(&pki, &[addr], spool.path().into())).unwrap();
    shipper.send(&batch(1, 0, 5)).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let shutdown = tokio::spawn(receiver.shutdown(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !shutdown.is_finished(),
        "shutdown waits for the answer in progress"
    );
    delivery.reply.send(Reply::Ack).unwrap();
    tokio::time::timeout(Duration::from_secs(10), shutdown)
        .await
        .expect("shutdown completes once answered")
        .unwrap();
    let counters = shipper.counters();
    wait_until(Duration::from_secs(5), "the agent has the ack", || {
        counters.snapshot().acked == 1
    })
    .await;
    // Nothing listens any more: a new batch stays spooled.
    shipper.send(&batch(1, 1, 5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = counters.snapshot();
    assert_eq!((stats.acked, stats.spooled_batches), (1, 1));
}
