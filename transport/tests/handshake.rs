//! The receiver refuses agents it cannot authenticate: a certificate from
//! another CA, no certificate, another protocol version in the ALPN. Each
//! refusal is counted and nothing is delivered.

mod common;

use std::time::Duration;

use common::*;
use flowattr_transport::{codec, tls};

fn crypto_builder() -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier> {
    rustls::ClientConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
}

/// Tries to have a batch accepted over `conn`; the error if it fails.
async fn try_batch(conn: &quinn::Connection) -> Result<Vec<u8>, String> {
    let mut frame = Vec::new();
    codec::encode_batch(&batch(1, 0, 3), &mut frame).unwrap();
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    send.write_all(&frame).await.map_err(|e| e.to_string())?;
    send.finish().map_err(|e| e.to_string())?;
    recv.read_to_end(1 << 16).await.map_err(|e| e.to_string())
}

async fn assert_refused(
    receiver: &flowattr_transport::Receiver,
    rx: &mut tokio::sync::mpsc::Receiver<flowattr_transport::Delivery>,
    conn: Result<quinn::Connection, quinn::ConnectionError>,
) {
    // With TLS 1.3 the client may finish its side of the handshake before
    // the server has refused its certificate: then its first stream fails.
    if let Ok(conn) = conn {
        let result = tokio::time::timeout(Duration::from_secs(10), try_batch(&conn))
            .await
            .expect("the refused connection is closed, not left hanging");
        assert!(result.is_err(), "a refused agent got an answer: {result:?}");
    }
    let counters = receiver.counters();
    wait_until(Duration::from_secs(5), "the refusal is counted", || {
        counters.snapshot().handshake_refused == 1
    })
    .await;
    let stats = counters.snapshot();
    assert_eq!((stats.connections, stats.batches), (0, 0));
    assert!(rx.try_recv().is_err(), "nothing is delivered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_a_certificate_from_another_ca_is_refused() {
    init_logs();
    let pki = Pki::new();
    let other = Pki::new();
    let (receiver, mut rx) = receiver(&pki).await;
    let theirs = other.files(AGENT);
    let crypto = crypto_builder()
        // It trusts our collector, but its own certificate is not ours.
        .with_root_certificates(tls::load_ca(&pki.files(AGENT).ca).unwrap())
        .with_client_auth_cert(
            tls::load_certificates(&theirs.cert).unwrap(),
            tls::load_private_key(&theirs.key).unwrap(),
        )
        .unwrap();
    let mut crypto = crypto;
    crypto.alpn_protocols = vec![codec::ALPN.to_vec()];
    let (_endpoint, conn) = raw_client(crypto, receiver.local_addr()).await;
    assert_refused(&receiver, &mut rx, conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_a_certificate_is_refused() {
    init_logs();
    let pki = Pki::new();
    let (receiver, mut rx) = receiver(&pki).await;
    let mut crypto = crypto_builder()
        .with_root_certificates(tls::load_ca(&pki.files(AGENT).ca).unwrap())
        .with_no_client_auth();
    crypto.alpn_protocols = vec![codec::ALPN.to_vec()];
    let (_endpoint, conn) = raw_client(crypto, receiver.local_addr()).await;
    assert_refused(&receiver, &mut rx, conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_speaking_another_protocol_version_is_refused() {
    init_logs();
    let pki = Pki::new();
    let (receiver, mut rx) = receiver(&pki).await;
    let mut crypto = tls::client_crypto(&pki.files(AGENT)).unwrap();
    // Version 1's ALPN: its agents cannot read version 2's enum values.
    crypto.alpn_protocols = vec![b"flowattr/1".to_vec()];
    let (_endpoint, conn) = raw_client(crypto, receiver.local_addr()).await;
    let error = conn.as_ref().expect_err("the handshake fails").to_string();
    assert!(
        error.contains("no_application_protocol") || error.contains("120"),
        "{error}"
    );
    assert_refused(&receiver, &mut rx, conn).await;
    // The same agent with this version's ALPN is accepted.
    let (_endpoint, conn) = raw_client(
        tls::client_crypto(&pki.files(AGENT)).unwrap(),
        receiver.local_addr(),
    )
    .await;
    conn.unwrap();
    let counters = receiver.counters();
    wait_until(Duration::from_secs(5), "the connection is counted", || {
        counters.snapshot().connections == 1
    })
    .await;
}
