//! A development PKI: one CA, and for each collector and agent a
//! certificate and key signed by it, written as PEM files into one
//! directory (`ca.pem`, `ca.key`, `NAME.pem`, `NAME.key`).
//!
//! Collectors get server and client authentication with DNS names `NAME`
//! and `localhost` and IP addresses `127.0.0.1` and `::1`; agents get
//! client authentication with Common Name `NAME` (their identity at the
//! collector). An existing CA is reused unless replacing it is asked for,
//! so agents can be added later without re-issuing every certificate.

use std::{
    io::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData as _, SanType,
};

/// What to do with a CA already in the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExistingCa {
    /// Sign the new certificates with it.
    #[default]
    Reuse,
    /// Generate a new CA in its place (certificates it signed stop working).
    Replace,
}

/// The files [`generate_dev_pki`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPki {
    /// Every file written, in order.
    pub written: Vec<PathBuf>,
    /// Whether an existing CA signed the certificates.
    pub reused_ca: bool,
}

/// A PKI that could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The existing CA's certificate or key is unusable, or they do not
    /// belong together.
    #[error("{path}: {detail}")]
    BadCa { path: PathBuf, detail: String },
    /// A collector or agent name that cannot be a file name.
    #[error("`{0}` cannot name a certificate file (letters, digits, `.`, `-`, `_`; not `ca`)")]
    BadName(String),
    /// Key or certificate generation failed.
    #[error("generating a certificate for {name}: {source}")]
    Generate {
        name: String,
        #[source]
        source: rcgen::Error,
    },
}

/// Writes a development PKI into `dir` (created if missing), reusing an
/// existing CA there.
pub fn generate_dev_pki(
    dir: &Path,
    collectors: &[&str],
    agents: &[&str],
) -> Result<DevPki, CertError> {
    generate_dev_pki_with(dir, collectors, agents, ExistingCa::Reuse)
}

/// [`generate_dev_pki`], saying what to do with an existing CA.
pub fn generate_dev_pki_with(
    dir: &Path,
    collectors: &[&str],
    agents: &[&str],
    existing: ExistingCa,
) -> Result<DevPki, CertError> {
    for name in collectors.iter().chain(agents) {
        check_name(name)?;
    }
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut written = Vec::new();
    let (ca_pem, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let reuse = existing == ExistingCa::Reuse && ca_pem.exists();
    let issuer = if reuse {
        load_ca(&ca_pem, &ca_key)?
    } else {
        let (cert, key) = new_ca()?;
        write(&ca_pem, &cert, false)?;
        write(&ca_key, &key.serialize_pem(), true)?;
        written.extend([ca_pem.clone(), ca_key.clone()]);
        Issuer::from_ca_cert_pem(&cert, key).map_err(|source| CertError::Generate {
            name: "ca".into(),
            source,
        })?
    };
    for (names, collector) in [(collectors, true), (agents, false)] {
        for name in names {
            let (cert, key) = leaf(name, collector, &issuer)?;
            let (cert_path, key_path) = (
                dir.join(format!("{name}.pem")),
                dir.join(format!("{name}.key")),
            );
            write(&cert_path, &cert, false)?;
            write(&key_path, &key, true)?;
            tracing::debug!(name, collector, "issued a development certificate");
            written.extend([cert_path, key_path]);
        }
    }
    Ok(DevPki {
        written,
        reused_ca: reuse,
    })
}

fn check_name(name: &str) -> Result<(), CertError> {
    let ok = !name.is_empty()
        && name != "ca"
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CertError::BadName(name.to_owned()))
    }
}

fn generate(name: &str) -> impl Fn(rcgen::Error) -> CertError + '_ {
    move |source| CertError::Generate {
        name: name.to_owned(),
        source,
    }
}

fn new_ca() -> Result<(String, KeyPair), CertError> {
    let key = KeyPair::generate().map_err(generate("ca"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "flowattr development CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).map_err(generate("ca"))?;
    Ok((cert.pem(), key))
}

/// The CA in `cert` and `key`, checked to belong together.
fn load_ca(cert: &Path, key: &Path) -> Result<Issuer<'static, KeyPair>, CertError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| CertError::Io {
            path: path.to_owned(),
            source,
        })
    };
    let bad = |path: &Path, detail: String| CertError::BadCa {
        path: path.to_owned(),
        detail,
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let key_pair =
        KeyPair::from_pem(&key_pem).map_err(|e| bad(key, format!("not a PEM private key: {e}")))?;
    let der = rustls::pki_types::CertificateDer::from(
        rcgen_pem_contents(&cert_pem).ok_or_else(|| bad(cert, "not a PEM certificate".into()))?,
    );
    let (_, parsed) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| bad(cert, format!("not a certificate: {e}")))?;
    if parsed.public_key().raw != key_pair.subject_public_key_info().as_slice() {
        return Err(bad(key, format!("is not the key of {}", cert.display())));
    }
    Issuer::from_ca_cert_der(&der, key_pair).map_err(|e| bad(cert, e.to_string()))
}

/// The DER contents of the first PEM certificate in `pem`.
fn rcgen_pem_contents(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|c| c.to_vec())
}

/// A certificate and key for `name`, signed by `issuer`, both PEM.
fn leaf(
    name: &str,
    collector: bool,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(String, String), CertError> {
    let key = KeyPair::generate().map_err(generate(name))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    if collector {
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let mut sans = Vec::new();
        for dns in [name, "localhost"] {
            let dns = dns.to_owned().try_into().map_err(generate(name))?;
            sans.push(SanType::DnsName(dns));
        }
        sans.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        sans.push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        params.subject_alt_names = sans;
    } else {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    let cert = params.signed_by(&key, issuer).map_err(generate(name))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Writes `text` to `path`; private keys are readable by the owner only.
fn write(path: &Path, text: &str, private: bool) -> Result<(), CertError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let io = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    // A key file is replaced, not rewritten, so its mode is always 0600.
    if private {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{self, PeerIdentity, TlsFiles};

    #[test]
    fn writes_every_file_and_names_load() {
        let dir = tempfile::tempdir().unwrap();
        let pki = generate_dev_pki(dir.path(), &["collector-1"], &["agent-a", "agent_b"]).unwrap();
        assert!(!pki.reused_ca);
        assert_eq!(pki.written.len(), 8);
        for name in ["collector-1", "agent-a", "agent_b"] {
            let files = TlsFiles::in_dir(dir.path(), name);
            let chain = tls::load_certificates(&files.cert).unwrap();
            tls::load_private_key(&files.key).unwrap();
            assert_eq!(
                PeerIdentity::from_certificate(&chain[0]),
                Some(PeerIdentity(name.into()))
            );
            tls::client_crypto(&files).unwrap();
        }
        tls::server_crypto(&TlsFiles::in_dir(dir.path(), "collector-1")).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("agent-a.key"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn an_existing_ca_is_reused_unless_replacing_is_asked() {
        let dir = tempfile::tempdir().unwrap();
        generate_dev_pki(dir.path(), &["c"], &[]).unwrap();
        let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let again = generate_dev_pki(dir.path(), &[], &["late-agent"]).unwrap();
        assert!(again.reused_ca);
        assert_eq!(again.written.len(), 2);
        assert_eq!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
        let replaced = generate_dev_pki_with(dir.path(), &[], &["x"], ExistingCa::Replace).unwrap();
        assert!(!replaced.reused_ca);
        assert_ne!(std::fs::read(dir.path().join("ca.pem")).unwrap(), ca);
    }

    #[test]
    fn a_ca_key_that_does_not_match_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        generate_dev_pki(dir.path(), &[], &[]).unwrap();
        generate_dev_pki(other.path(), &[], &[]).unwrap();
        std::fs::copy(other.path().join("ca.key"), dir.path().join("ca.key")).unwrap();
        let err = generate_dev_pki(dir.path(), &[], &["a"]).unwrap_err();
        assert!(matches!(err, CertError::BadCa { .. }), "{err}");
        assert!(err.to_string().contains("ca.key"), "{err}");
    }

    #[test]
    fn names_that_cannot_be_file_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "ca", "../x", "a/b", ".hidden", "sp ace"] {
            assert!(matches!(
                generate_dev_pki(dir.path(), &[bad], &[]),
                Err(CertError::BadName(_))
            ));
        }
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }
}
