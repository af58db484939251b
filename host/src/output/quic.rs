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
