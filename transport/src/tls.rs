//! Mutual TLS for QUIC from PEM files: the collector requires a client
//! certificate signed by the CA, the agent verifies the collector against
//! the same CA and presents its own certificate. Crypto is `ring`'s; TLS 1.3
//! only (QUIC's); ALPN [`ALPN`].
//!
//! The name in the agent's certificate (Common Name, else first DNS name)
//! is its [`PeerIdentity`]: the collector's claimant name for the agent.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::{
    RootCertStore,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};

use crate::codec::ALPN;

/// A connection without traffic for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The agent pings an idle connection this often so it stays open between
/// batches.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// The PEM files of one end: the CA that signs both ends, this end's
/// certificate chain (its own certificate first) and its private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files `ca.pem`, `NAME.pem` and `NAME.key` in `dir`, as
    /// [`crate::certs::generate_dev_pki`] writes them.
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        }
    }
}

/// A TLS set-up that cannot be used; file errors name the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid PEM {what}: {detail}")]
    Pem {
        path: PathBuf,
        what: &'static str,
        detail: String,
    },
    #[error("{path}: no {what} in the file")]
    Empty { path: PathBuf, what: &'static str },
    #[error("{path}: CA certificate refused: {detail}")]
    Ca { path: PathBuf, detail: String },
    #[error("certificate {cert} with key {key}: {source}")]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
    /// The certificate names no one: no Common Name and no DNS name.
    #[error("{path}: the certificate names no one (no Common Name, no DNS name)")]
    NoName { path: PathBuf },
}

/// The authenticated name of the agent at the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerIdentity(pub String);

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PeerIdentity {
    /// The identity in the certificate `connection`'s peer presented: its
    /// Common Name, else its first DNS name. `None` without a certificate
    /// or without a name in it.
    pub fn of(connection: &quinn::Connection) -> Option<Self> {
        let chain = connection
            .peer_identity()?
            .downcast::<Vec<CertificateDer<'static>>>()
            .ok()?;
        Self::from_certificate(chain.first()?)
    }

    /// The identity in one DER certificate.
    pub fn from_certificate(der: &CertificateDer<'_>) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .find_map(|cn| cn.as_str().ok().map(str::to_owned));
        let dns_name = || {
            let san = cert.subject_alternative_name().ok()??;
            san.value.general_names.iter().find_map(|n| match n {
                x509_parser::extensions::GeneralName::DNSName(name) => Some((*name).to_owned()),
                _ => None,
            })
        };
        common_name
            .filter(|n| !n.is_empty())
            .or_else(dns_name)
            .map(Self)
    }
}

/// The identity collectors will know the holder of the certificate file
/// at `path` by (its first certificate's, as [`PeerIdentity::of`] reads
/// it): an agent reads its own name this way.
pub fn certificate_identity(path: &Path) -> Result<PeerIdentity, TlsError> {
    let chain = load_certificates(path)?;
    PeerIdentity::from_certificate(&chain[0]).ok_or_else(|| TlsError::NoName {
        path: path.to_owned(),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The certificates in the PEM file at `path` (at least one).
pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            what: "certificate",
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_owned(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The private key in the PEM file at `path` (PKCS#8, PKCS#1 or SEC1).
pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            path: path.to_owned(),
            what: "private key",
        },
        e => TlsError::Pem {
            path: path.to_owned(),
            what: "private key",
            detail: e.to_string(),
        },
    })
}

/// The CA certificates in the PEM file at `path` as trust roots.
pub fn load_ca(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certificates(path)? {
        roots.add(cert).map_err(|e| TlsError::Ca {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The crypto provider every configuration here uses (`ring`).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The collector's TLS: a client certificate signed by the CA is
/// required; ALPN [`ALPN`] only.
pub fn server_crypto(files: &TlsFiles) -> Result<rustls::ServerConfig, TlsError> {
    let roots = Arc::new(load_ca(&files.ca)?);
    let chain = load_certificates(&files.cert)?;
    let key = load_private_key(&files.key)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| TlsError::Ca {
            path: files.ca.clone(),
            detail: e.to_string(),
        })?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Identity {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// The agent's TLS: the collector is verified against the CA, the agent
/// presents its own certificate; ALPN [`ALPN`].
pub fn client_crypto(files: &TlsFiles) -> Result<rustls::ClientConfig, TlsError> {
    let roots = load_ca(&files.ca)?;
    let chain = load_certificates(&files.cert)?;
    let key = load_private_key(&files.key)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|source| TlsError::Identity {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

/// A quinn server configuration from [`server_crypto`], allowing
/// `max_concurrent_streams` bidirectional streams (in-flight batches) per
/// connection and no unidirectional ones.
pub fn server_config(
    files: &TlsFiles,
    max_concurrent_streams: u32,
) -> Result<quinn::ServerConfig, TlsError> {
    quic_server_config(server_crypto(files)?, max_concurrent_streams)
}

/// A quinn server configuration from a rustls one (whose ALPN and client
/// verification are the caller's). Datagrams are not accepted: batches
/// travel on streams only, and a peer's datagrams would be buffered
/// unread.
pub fn quic_server_config(
    crypto: rustls::ServerConfig,
    max_concurrent_streams: u32,
) -> Result<quinn::ServerConfig, TlsError> {
    let crypto = QuicServerConfig::try_from(crypto).map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(max_concurrent_streams.into())
        .max_concurrent_uni_streams(0u32.into())
        .datagram_receive_buffer_size(None)
        .max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("30s fits")));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// A quinn client configuration from [`client_crypto`].
pub fn client_config(files: &TlsFiles) -> Result<quinn::ClientConfig, TlsError> {
    quic_client_config(client_crypto(files)?)
}

/// A quinn client configuration from a rustls one; keeps idle connections
/// open with pings.
pub fn quic_client_config(crypto: rustls::ClientConfig) -> Result<quinn::ClientConfig, TlsError> {
    let crypto = QuicClientConfig::try_from(crypto).map_err(|e| TlsError::Config(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("30s fits")));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = load_certificates(&missing).unwrap_err();
        assert!(matches!(e, TlsError::Read { .. }), "{e}");
        assert!(e.to_string().contains("missing.pem"), "{e}");

        let garbled = dir.path().join("garbled.pem");
        std::fs::write(
            &garbled,
            "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = load_certificates(&garbled).unwrap_err();
        assert!(matches!(e, TlsError::Pem { .. }), "{e}");
        assert!(e.to_string().contains("garbled.pem"), "{e}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "nothing here\n").unwrap();
        let e = load_ca(&empty).unwrap_err();
        assert!(
            e.to_string().contains("empty.pem") && e.to_string().contains("no certificate"),
            "{e}"
        );

        // A certificate where the key belongs.
        crate::certs::generate_dev_pki(dir.path(), &[], &["a"]).unwrap();
        let e = load_private_key(&dir.path().join("a.pem")).unwrap_err();
        assert!(
            e.to_string().contains("a.pem") && e.to_string().contains("no private key"),
            "{e}"
        );
        // A key that is not the certificate's.
        crate::certs::generate_dev_pki(dir.path(), &[], &["b"]).unwrap();
        let files = TlsFiles {
            key: dir.path().join("b.key"),
            ..TlsFiles::in_dir(dir.path(), "a")
        };
        let e = client_crypto(&files).unwrap_err();
        assert!(matches!(e, TlsError::Identity { .. }), "{e}");
        assert!(e.to_string().contains("b.key"), "{e}");
    }

    #[test]
    fn a_certificate_file_names_its_holder_as_collectors_will() {
        let dir = tempfile::tempdir().unwrap();
        crate::certs::generate_dev_pki(dir.path(), &["collector"], &["agent-7"]).unwrap();
        let agent = certificate_identity(&dir.path().join("agent-7.pem")).unwrap();
        assert_eq!(agent.0, "agent-7");
        let collector = certificate_identity(&dir.path().join("collector.pem")).unwrap();
        assert_eq!(collector.0, "collector");
        let e = certificate_identity(&dir.path().join("missing.pem")).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
    }
}
