//! No batch is lost when collectors misbehave or restart, or the agent
//! restarts: unanswered batches are sent again, failed collectors are
//! failed over, the spool carries batches across a shipper restart, a full
//! spool drops its oldest batches (counted), `send` waits while
//! `max_in_flight` batches are unanswered, and a batch that overtakes an
//! unanswered older one states no watermark past it.

mod common;

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::*;
use flowattr_model::{BatchId, FlowBatch};
use flowattr_transport::{Delivery, Reply, Shipper, codec};
use tokio::sync::mpsc;

const LONG: Duration = Duration::from_secs(20);

/// A collector that keeps every delivery unanswered.
fn silent_collector(
    mut rx: mpsc::Receiver<Delivery>,
) -> (Arc<Mutex<Vec<Delivery>>>, tokio::task::JoinHandle<()>) {
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    let task = tokio::spawn(async move {
        while let Some(d) = rx.recv().await {
            keep.lock().unwrap().push(d);
        }
    });
    (held, task)
}

fn ids(batches: &[FlowBatch]) -> BTreeSet<BatchId> {
    batches.iter().map(FlowBatch::id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_the_collector_drops_makes_the_agent_send_the_batch_again() {
    init_logs();
    let pki = Pki::new();
    let (receiver, rx) = receiver(&pki).await;
    let answered = AtomicUsize::new(0);
    let (seen, _c) = collector(rx, move |_| {
        (answered.fetch_add(1, Ordering::Relaxed) > 0).then_some(Reply::Ack)
    });
    let spool = tempfile::tempdir().unwrap();
    let shipper = Shipper::start(shipper_config(
        &pki,
        &[receiver.local_addr()],
        spool.path().into(),
    ))
    .unwrap();
    let b = batch(1, 0, 10);
    shipper.send(&b).await.unwrap();
    let counters = shipper.counters();
    wait_until(LONG, "the batch is acked", || {
        counters.snapshot().acked == 1
    })
    .await;
    assert_eq!(
        seen.ids(),
        [b.id(), b.id()],
        "the same batch id is delivered twice"
    );
    // Each send (the second from the spool) carries its own send time.
    let sent: Vec<u64> = seen
        .delivered
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.timing.sent_ns.unwrap())
        .collect();
    assert!(sent[0] < sent[1], "{sent:?}");
    assert!(counters.snapshot().retries >= 1);
    assert!(spool_files(spool.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_restarting_before_its_ack_gets_the_batch_again() {
    init_logs();
    let pki = Pki::new();
    let (first, rx) = receiver(&pki).await;
    let addr = first.local_addr();
    let (held, silent) = silent_collector(rx);
    let spool = tempfile::tempdir().unwrap();
    let shipper = Shipper::start(shipper_config(&pki, &[addr], spool.path().into())).unwrap();
    let b = batch(1, 7, 10);
    shipper.send(&b).await.unwrap();
    wait_until(LONG, "the first collector has the batch", || {
        held.lock().unwrap().len() == 1
    })
    .await;
    // The collector stops without acking.
    silent.abort();
    drop(first);
    held.lock().unwrap().clear();
    let (second, rx) = receiver_at(&pki, addr, |_| {}).await;
    let (seen, _c) = acking_collector(rx);
    let counters = shipper.counters();
    wait_until(LONG, "the batch is acked", || {
        counters.snapshot().acked == 1
    })
    .await;
    assert_eq!(
        seen.ids(),
        [b.id()],
        "the restarted collector gets the same batch id"
    );
    assert!(spool_files(spool.path()).is_empty());
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_receiver_mid_stream_loses_no_batch() {
    init_logs();
    let pki = Pki::new();
    let (first, rx) = receiver(&pki).await;
    let addr = first.local_addr();
    // Acks the first 30 batches, then holds the rest unanswered.
    let answered = AtomicUsize::new(0);
    let (seen_first, first_collector) = collector(rx, move |_| {
        (answered.fetch_add(1, Ordering::Relaxed) < 30).then_some(Reply::Ack)
    });
    let spool = tempfile::tempdir().unwrap();
    let shipper =
        Arc::new(Shipper::start(shipper_config(&pki, &[addr], spool.path().into())).unwrap());
    let batches: Vec<_> = (0..100).map(|seq| batch(5, seq, 20)).collect();
    let sender = {
        let (shipper, batches) = (shipper.clone(), batches.clone());
        tokio::spawn(async move {
            for b in &batches {
                shipper.send(b).await.unwrap();
            }
        })
    };
    // Distinct batches: a batch left unanswered may be delivered again.
    let unanswered = || -> BTreeSet<_> {
        let all = seen_first.delivered.lock().unwrap();
        all.iter()
            .filter(|d| !d.acked)
            .map(|d| d.batch.id())
            .collect()
    };
    wait_until(LONG, "batches are in flight, unanswered", || {
        unanswered().len() >= 3
    })
    .await;
    first_collector.abort();
    drop(first);
    let unanswered = unanswered();
    assert!(unanswered.len() >= 3);
    let (second, rx) = receiver_at(&pki, addr, |_| {}).await;
    let (seen_second, _c) = acking_collector(rx);
    let counters = shipper.counters();
    wait_until(LONG, "every batch is acked", || {
        counters.snapshot().acked == 100
    })
    .await;
    sender.await.unwrap();
    let acked: BTreeSet<_> = seen_first
        .acked_ids()
        .into_iter()
        .chain(seen_second.acked_ids())
        .collect();
    assert_eq!(
        acked,
        ids(&batches),
        "every batch sent arrived and was acked"
    );
    let second_ids: BTreeSet<_> = seen_second.ids().into_iter().collect();
    assert!(
        unanswered.is_subset(&second_ids),
        "batches the dead receiver held arrive at the new one"
    );
    assert!(spool_files(spool.path()).is_empty());
    assert_eq!(counters.snapshot().spooled_batches, 0);
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_fail_over_to_the_second_collector_when_the_first_is_down() {
    init_logs();
    let pki = Pki::new();
    let (live, rx) = receiver(&pki).await;
    let (seen, _c) = acking_collector(rx);
    let spool = tempfile::tempdir().unwrap();
    let config = shipper_config(&pki, &[dead_addr(), live.local_addr()], spool.path().into());
    let shipper = Shipper::start(config).unwrap();
    let batches: Vec<_> = (0..5).map(|seq| batch(1, seq, 10)).collect();
    for b in &batches {
        shipper.send(b).await.unwrap();
    }
    let counters = shipper.counters();
    wait_until(LONG, "all are acked", || counters.snapshot().acked == 5).await;
    assert!(counters.snapshot().failovers >= 1);
    assert_eq!(shipper.connected_to(), Some(live.local_addr()));
    assert_eq!(
        seen.ids().into_iter().collect::<BTreeSet<_>>(),
        ids(&batches)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_batches_survive_a_shipper_restart() {
    init_logs();
    let pki = Pki::new();
    let spool = tempfile::tempdir().unwrap();
    let mut config = shipper_config(&pki, &[dead_addr()], spool.path().into());
    // With no collector connected, `send` does not wait for in-flight room.
    config.max_in_flight = 2;
    let shipper = Shipper::start(config).unwrap();
    let batches: Vec<_> = (0..5).map(|seq| batch(1, seq, 10)).collect();
    for b in &batches {
        tokio::time::timeout(Duration::from_secs(5), shipper.send(b))
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(shipper.counters().snapshot().spooled_batches, 5);
    assert_eq!(
        shipper.shutdown(Duration::from_millis(200)).await,
        5,
        "shutdown leaves them spooled"
    );
    assert_eq!(spool_files(spool.path()).len(), 5);

    let (receiver, rx) = receiver(&pki).await;
    let (seen, _c) = acking_collector(rx);
    let shipper = Shipper::start(shipper_config(
        &pki,
        &[receiver.local_addr()],
        spool.path().into(),
    ))
    .unwrap();
    assert_eq!(
        shipper.counters().snapshot().spooled_batches,
        5,
        "found at start"
    );
    let counters = shipper.counters();
    wait_until(LONG, "the spooled batches are acked", || {
        counters.snapshot().acked == 5
    })
    .await;
    let mut got: Vec<_> = seen
        .delivered
        .lock()
        .unwrap()
        .iter()
        .map(|d| d.batch.clone())
        .collect();
    got.sort_by_key(|b| b.seq);
    // Found in the spool, their predecessors unknown: a batch sent while an
    // older one was unanswered states a watermark no later than 0, never
    // its own. Everything else arrives as spooled.
    for (got, sent) in got.iter_mut().zip(&batches) {
        assert!(
            got.complete_until_ns == sent.complete_until_ns || got.complete_until_ns == 0,
            "seq {}: watermark {} for {}",
            sent.seq,
            got.complete_until_ns,
            sent.complete_until_ns
        );
        got.complete_until_ns = sent.complete_until_ns;
    }
    assert_eq!(got, batches, "delivered intact from the spool");
    assert!(spool_files(spool.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_drops_its_oldest_batches_and_counts_them() {
    init_logs();
    let pki = Pki::new();
    let spool = tempfile::tempdir().unwrap();
    // Sequence numbers of one varint size: frames of one size.
    let template = batch(1, 10, 20);
    let mut frame = Vec::new();
    codec::encode_batch(&template, &mut frame).unwrap();
    let size = frame.len() as u64;
    let mut config = shipper_config(&pki, &[dead_addr()], spool.path().into());
    config.spool_max_bytes = 3 * size + size / 2;
    let shipper = Shipper::start(config).unwrap();
    let batches: Vec<_> = (10..16)
        .map(|seq| FlowBatch {
            seq,
            ..template.clone()
        })
        .collect();
    for b in &batches {
        shipper.send(b).await.unwrap();
    }
    let stats = shipper.counters().snapshot();
    assert_eq!(
        (stats.dropped_spool_full, stats.dropped_spool_full_flows),
        (3, 60)
    );
    assert_eq!((stats.spooled_batches, stats.spool_bytes), (3, 3 * size));
    drop(shipper);

    let (receiver, rx) = receiver(&pki).await;
    let (seen, _c) = acking_collector(rx);
    let shipper = Shipper::start(shipper_config(
        &pki,
        &[receiver.local_addr()],
        spool.path().into(),
    ))
    .unwrap();
    let counters = shipper.counters();
    wait_until(LONG, "the kept batches are acked", || {
        counters.snapshot().acked == 3
    })
    .await;
    let seqs: BTreeSet<u64> = seen.ids().into_iter().map(|id| id.seq).collect();
    assert_eq!(
        seqs,
        BTreeSet::from([13, 14, 15]),
        "the newest three were kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_waits_while_max_in_flight_batches_are_unanswered() {
    init_logs();
    let pki = Pki::new();
    let (receiver, rx) = receiver(&pki).await;
    let (held, _c) = silent_collector(rx);
    let spool = tempfile::tempdir().unwrap();
    let mut config = shipper_config(&pki, &[receiver.local_addr()], spool.path().into());
    config.max_in_flight = 3;
    config.ack_timeout = Duration::from_secs(60);
    let shipper = Shipper::start(config).unwrap();
    wait_until(LONG, "connected", || shipper.connected_to().is_some()).await;
    for seq in 0..3 {
        tokio::time::timeout(Duration::from_secs(5), shipper.send(&batch(1, seq, 5)))
            .await
            .expect("room in flight")
            .unwrap();
    }
    wait_until(LONG, "the collector holds three", || {
        held.lock().unwrap().len() == 3
    })
    .await;
    let fourth = batch(1, 3, 5);
    let send = shipper.send(&fourth);
    tokio::pin!(send);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut send)
            .await
            .is_err(),
        "send is still waiting while three batches are unanswered"
    );
    assert_eq!(held.lock().unwrap().len(), 3, "the fourth is not sent");
    let first = held.lock().unwrap().remove(0);
    first.reply.send(Reply::Ack).unwrap();
    tokio::time::timeout(Duration::from_secs(5), &mut send)
        .await
        .expect("an ack makes room")
        .unwrap();
    wait_until(LONG, "the fourth arrives", || {
        held.lock()
            .unwrap()
            .iter()
            .any(|d| d.batch.id() == fourth.id())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_overtaking_an_unanswered_one_states_no_watermark_past_it() {
    init_logs();
    let pki = Pki::new();
    let (receiver, rx) = receiver(&pki).await;
    // Batch 1 goes unanswered (its ack lost) until batches 2 and 3 have
    // overtaken it, however soon the shipper sends it again.
    let overtaken = AtomicUsize::new(0);
    let (seen, _c) = collector(rx, move |b| {
        if b.seq >= 2 {
            overtaken.fetch_add(1, Ordering::Relaxed);
        }
        if b.seq == 1 && overtaken.load(Ordering::Relaxed) < 2 {
            None
        } else {
            Some(Reply::Ack)
        }
    });
    let spool = tempfile::tempdir().unwrap();
    let shipper = Shipper::start(shipper_config(
        &pki,
        &[receiver.local_addr()],
        spool.path().into(),
    ))
    .unwrap();
    let with_watermark = |seq: u64| {
        let mut b = batch(1, seq, 3);
        b.complete_until_ns = 100 * (seq + 1);
        b
    };
    shipper.send(&with_watermark(0)).await.unwrap();
    let counters = shipper.counters();
    wait_until(LONG, "batch 0 is acked", || counters.snapshot().acked == 1).await;
    for seq in 1..4 {
        shipper.send(&with_watermark(seq)).await.unwrap();
    }
    wait_until(LONG, "every batch is acked", || {
        counters.snapshot().acked == 4
    })
    .await;
    let delivered = seen.delivered.lock().unwrap().clone();
    let watermarks = |seq: u64| -> Vec<u64> {
        delivered
            .iter()
            .filter(|d| d.batch.seq == seq)
            .map(|d| d.batch.complete_until_ns)
            .collect()
    };
    assert_eq!(watermarks(0), [100]);
    // Batch 1 states its own each time: nothing older is unanswered.
    let ones = watermarks(1);
    assert!(
        ones.len() >= 2 && ones.iter().all(|&w| w == 200),
        "{ones:?}"
    );
    // While batch 1 was unanswered, later ones said no more than batch 0.
    assert_eq!(watermarks(2)[0], 100);
    assert_eq!(watermarks(3)[0], 100);
}
