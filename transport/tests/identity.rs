//! A batch the collector refuses because it names another agent than the
//! certificate is not lost: it stays in the spool, is counted apart from
//! rejections, is offered again with backoff while batches of the right
//! name flow, and goes through once the agent runs with a certificate for
//! that name. The refusal says so in the reject frame.

mod common;

use std::time::Duration;

use common::*;
use flowattr_model::FlowBatch;
use flowattr_transport::{
    Delivery, Reply, Shipper, certs,
    codec::{self, Frame, RejectKind},
    tls,
};
use tokio::sync::mpsc;

const LONG: Duration = Duration::from_secs(20);

/// The name the agent was (wrongly) configured with.
const CONFIGURED: &str = "renamed-agent";

/// A collector that decides as the real one does: a batch that names
/// another agent than the certificate is refused, with the collector's
/// words; everything else is acked.
fn strict_collector(mut rx: mpsc::Receiver<Delivery>) -> (Seen, tokio::task::JoinHandle<()>) {
    let seen = Seen::default();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        while let Some(d) = rx.recv().await {
            let reply = if d.batch.agent == d.peer.0 {
                Reply::Ack
            } else {
                Reply::Reject(format!(
                    "batch names agent {:?} but the certificate is {:?}",
                    d.batch.agent, d.peer.0
                ))
            };
            record.delivered.lock().unwrap().push(Delivered {
                peer: d.peer.0.clone(),
                batch: d.batch,
                timing: d.timing,
                acked: reply == Reply::Ack,
            });
            let _ = d.reply.send(reply);
        }
    });
    (seen, task)
}

fn named(agent: &str, seq: u64) -> FlowBatch {
    FlowBatch {
        agent: agent.into(),
        ..batch(1, seq, 5)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_for_its_name_stays_spooled_is_retried_and_goes_through_under_the_right_certificate()
 {
    init_logs();
    let pki = Pki::new();
    certs::generate_dev_pki(pki.path(), &[], &[CONFIGURED]).unwrap();
    let (receiver, rx) = receiver(&pki).await;
    let (seen, _collector) = strict_collector(rx);
    let spool = tempfile::tempdir().unwrap();
    let mut config = shipper_config(&pki, &[receiver.local_addr()], spool.path().into());
    config.jitter_seed = Some(7);
    let shipper = Shipper::start(config.clone()).unwrap();
    // Two batches under the configured name, one under the certificate's.
    let refused = [named(CONFIGURED, 0), named(CONFIGURED, 1)];
    for b in &refused {
        shipper.send(b).await.unwrap();
    }
    shipper.send(&named(AGENT, 2)).await.unwrap();
    let counters = shipper.counters();
    wait_until(LONG, "the refused batches were offered again", || {
        let s = counters.snapshot();
        s.refused_identity >= 5 && s.acked == 1
    })
    .await;
    let s = counters.snapshot();
    assert_eq!(s.rejected, 0, "a refusal for identity is no rejection");
    assert_eq!((s.spooled_batches, s.held_identity), (2, 2));
    assert_eq!(spool_files(spool.path()).len(), 2, "both stay on disk");
    // Offered again with backoff, and not all at once: the probes are one
    // batch at a time, the oldest first.
    let offers: Vec<u64> = seen
        .delivered
        .lock()
        .unwrap()
        .iter()
        .filter(|d| d.batch.agent == CONFIGURED)
        .map(|d| d.batch.seq)
        .collect();
    assert!(offers.len() >= 5, "{offers:?}");
    assert!(offers[2..].iter().all(|&seq| seq == 0), "{offers:?}");
    assert_eq!(shipper.shutdown(Duration::from_millis(200)).await, 2);

    // The agent restarted with a certificate for the name it was given.
    let config = flowattr_transport::ShipperConfig {
        tls: pki.files(CONFIGURED),
        ..config
    };
    let shipper = Shipper::start(config).unwrap();
    let counters = shipper.counters();
    wait_until(LONG, "the held batches are accepted", || {
        counters.snapshot().acked == 2
    })
    .await;
    assert!(spool_files(spool.path()).is_empty());
    let mut accepted: Vec<_> = seen.acked_ids().into_iter().map(|id| id.seq).collect();
    accepted[1..].sort_unstable();
    assert_eq!(accepted, [2, 0, 1]);
    assert_eq!(shipper.shutdown(Duration::from_secs(1)).await, 0);
    receiver.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reject_frame_says_the_refusal_is_for_identity() {
    init_logs();
    let pki = Pki::new();
    let (receiver, rx) = receiver(&pki).await;
    let (_seen, _collector) = strict_collector(rx);
    let (_endpoint, conn) = raw_client(
        tls::client_crypto(&pki.files(AGENT)).unwrap(),
        receiver.local_addr(),
    )
    .await;
    let conn = conn.unwrap();
    let mut answers = Vec::new();
    for b in [named(CONFIGURED, 0), named(AGENT, 1)] {
        let mut frame = Vec::new();
        codec::encode_batch(&b, &mut frame).unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(&frame).await.unwrap();
        send.finish().unwrap();
        let answer = recv.read_to_end(1 << 16).await.unwrap();
        answers.push(codec::decode_frame(&answer, 1 << 16).unwrap());
    }
    match &answers[0] {
        Frame::Reject { id, kind, reason } => {
            assert_eq!(*kind, RejectKind::Identity);
            assert_eq!(id.as_ref().map(|i| i.seq), Some(0));
            assert!(reason.contains(CONFIGURED), "{reason}");
        }
        other => panic!("expected a reject, got {other:?}"),
    }
    assert!(matches!(&answers[1], Frame::Ack(id) if id.seq == 1));
}
