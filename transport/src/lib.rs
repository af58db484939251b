//! QUIC transport between agents and collectors.
//!
//! - [`codec`]: the versioned, length-delimited protobuf frames (pure).
//! - [`tls`]: mutual TLS from PEM files; the client certificate's name is the
//!   agent's [`tls::PeerIdentity`].
//! - [`certs`]: a development PKI (CA, collector and agent certificates).
//! - [`server`]: the collector's [`Receiver`], handing batches over a bounded
//!   channel and acknowledging them when the collector says so.
//! - [`shipper`]: the agent's [`Shipper`], spooling each batch to disk
//!   until a collector acknowledges it.
//!
//! One bidirectional QUIC stream carries one batch: the agent writes a batch
//! frame, stamped with its send time, and finishes the stream; the collector
//! notes when it read the frame and the connection's round-trip time
//! ([`FrameTiming`], for measuring the agent's clock) and answers with one
//! ack or reject frame. The protocol's major version is in the ALPN
//! ([`codec::ALPN`]) and in every frame.

pub mod certs;
mod clock;
pub mod codec;
mod frame_io;
pub mod server;
pub mod shipper;
pub mod tls;

pub use server::{Delivery, FrameTiming, Receiver, ReceiverConfig, Reply};
pub use shipper::{CollectorAddr, Shipper, ShipperConfig};

/// Reads and decodes one frame off `r` exactly as the collector's receiver
/// does (its frame reader, within the default decode limits); for the
/// reader's fuzz target.
pub async fn read_one_frame<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    max_frame_bytes: usize,
) -> Result<codec::Frame, String> {
    let mut body = Vec::new();
    frame_io::read_frame(r, max_frame_bytes, &mut body)
        .await
        .map(|received| received.frame)
        .map_err(|e| e.to_string())
}
