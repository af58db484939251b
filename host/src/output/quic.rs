//! Closed batches to collectors through the transport's [`Shipper`]: the
//! pipeline thread blocks on `send`, so the shipper's backpressure (batches
//! in flight unacknowledged) holds the pipeline, and behind it the ring
//! buffer.

use std::sync::Arc;

use flowattr_model::FlowBatch;
use flowattr_transport::{Shipper, shipper::ShipperError};

/// Hands batches to a [`Shipper`] from a thread outside the runtime.
pub struct QuicOutput {
    shipper: Arc<Shipper>,
    runtime: tokio::runtime::Handle,
}

impl QuicOutput {
    /// Sends through `shipper`, whose tasks run on `runtime`.
    pub fn new(shipper: Arc<Shipper>, runtime: tokio::runtime::Handle) -> Self {
        Self { shipper, runtime }
    }

    /// Spools `batch` and hands it to the shipper, waiting while the
    /// shipper has no room in flight. Must not be called on a runtime
    /// thread.
    pub fn write(&mut self, batch: &FlowBatch) -> Result<(), ShipperError> {
        self.runtime.block_on(self.shipper.send(batch))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use flowattr_transport::{
        CollectorAddr, Receiver, ReceiverConfig, Reply, ShipperConfig, certs, tls::TlsFiles,
    };

    use super::*;

    #[test]
    fn the_pipeline_thread_hands_batches_to_a_collector() {
        let pki = tempfile::tempdir().unwrap();
        certs::generate_dev_pki(pki.path(), &["collector"], &["agent"]).unwrap();
        let spool = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (receiver, mut deliveries, shipper) = runtime.block_on(async {
            let config = ReceiverConfig::new(
                "127.0.0.1:0".parse().unwrap(),
                TlsFiles::in_dir(pki.path(), "collector"),
            );
            let (receiver, deliveries) = Receiver::bind(config).unwrap();
            let collectors = vec![CollectorAddr::new(receiver.local_addr(), "localhost")];
            let tls = TlsFiles::in_dir(pki.path(), "agent");
            let config = ShipperConfig::new(collectors, tls, spool.path().into());
            (receiver, deliveries, Shipper::start(config).unwrap())
        });
        // The agent keeps the shipper until the pipeline has stopped.
        let shipper = Arc::new(shipper);
        let mut output = QuicOutput::new(shipper.clone(), runtime.handle().clone());
        let batch = FlowBatch {
            agent: "agent".into(),
            incarnation: 1,
            seq: 0,
            created_ns: 1,
            complete_until_ns: 1,
            flows: vec![],
        };
        // Like the pipeline: a plain thread outside the runtime.
        let sent = batch.clone();
        std::thread::spawn(move || output.write(&sent).unwrap())
            .join()
            .unwrap();
        let delivery = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), deliveries.recv())
                .await
                .unwrap()
                .unwrap()
        });
        assert_eq!(delivery.batch, batch);
        assert_eq!(delivery.peer.0, "agent");
        delivery.reply.send(Reply::Ack).unwrap();
        let shipper = Arc::try_unwrap(shipper).ok().unwrap();
        let left = runtime.block_on(shipper.shutdown(Duration::from_secs(10)));
        assert_eq!(left, 0, "the acked batch leaves the spool");
        drop(receiver);
    }
}
