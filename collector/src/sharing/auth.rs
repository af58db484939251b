//! Who may say what on the sharing topic (pure; no Kafka): every message is
//! signed by its origin collector with Ed25519, and a reader takes it only
//! if the signature verifies with a key it trusts for that origin and every
//! claimant it names is one that origin may speak for.
//!
//! The signature travels in the message's headers ([`SIGNATURE_HEADER`],
//! [`KEY_ID_HEADER`], [`ORIGIN_HEADER`]); the payload is the
//! [`codec`](super::codec)'s JSON as before. It covers the topic, the
//! origin, the Kafka key and the payload ([`signed_bytes`]), so a message
//! cannot be moved to another topic, key or origin. A key id is the first 8
//! bytes of the SHA-256 of the public key, in hex: readers may trust
//! several keys of an origin while it changes keys.
//!
//! Ed25519 rather than an HMAC: a reader holds only public keys, so a
//! collector that is broken into can forge its own messages but no other
//! collector's.
//!
//! ```
//! use flowattr_collector::sharing::auth::{Claimants, Signer, Trust, Verdict};
//!
//! let signer = Signer::generate("collector-a").unwrap();
//! let mut trust = Trust::default();
//! trust.add("collector-a", vec![signer.public_key()], Claimants::only(["agent-1"]));
//! let sig = signer.sign("ownership", b"10.0.0.7", b"{...}");
//! let envelope = sig.envelope();
//! let origin = trust.verify("ownership", b"10.0.0.7", b"{...}", &envelope).unwrap();
//! assert!(origin.may_speak_for("agent-1"));
//! assert!(!origin.may_speak_for("agent-2"));
//! assert_eq!(
//!     trust.verify("ownership", b"10.0.0.8", b"{...}", &envelope).unwrap_err(),
//!     Verdict::BadSignature
//! );
//! ```

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::Arc,
};

use ring::{
    digest,
    rand::SystemRandom,
    signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey},
};
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer, pem::PemObject};

/// The header holding the 64-byte signature.
pub const SIGNATURE_HEADER: &str = "flowattr-sig";
/// The header naming the signing key ([`PublicKey::id`]).
pub const KEY_ID_HEADER: &str = "flowattr-key";
/// The header naming the origin collector (also in the payload; both must
/// agree).
pub const ORIGIN_HEADER: &str = "flowattr-origin";

/// What is signed: a domain tag, then the topic, origin and Kafka key, each
/// with its length, then the payload.
pub fn signed_bytes(topic: &str, origin: &str, key: &[u8], payload: &[u8]) -> Vec<u8> {
    const TAG: &[u8] = b"flowattr-sharing-v1\0";
    let mut out =
        Vec::with_capacity(TAG.len() + 12 + topic.len() + origin.len() + key.len() + payload.len());
    out.extend_from_slice(TAG);
    for part in [topic.as_bytes(), origin.as_bytes(), key] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(payload);
    out
}

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("could not read the key file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("the key in {path} is not an Ed25519 key: {reason}")]
    NotEd25519 { path: String, reason: String },
}

/// An origin's public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    id: String,
    raw: [u8; 32],
}

/// The DER prefix of an Ed25519 `SubjectPublicKeyInfo` (RFC 8410), before
/// the 32 key bytes.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

impl PublicKey {
    /// From the 32 raw key bytes.
    pub fn from_raw(raw: [u8; 32]) -> Self {
        let hash = digest::digest(&digest::SHA256, &raw);
        Self {
            id: hex::encode(&hash.as_ref()[..8]),
            raw,
        }
    }

    /// From a PEM `PUBLIC KEY` file (`openssl pkey -pubout`).
    pub fn from_pem_file(path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let der = SubjectPublicKeyInfoDer::from_pem_file(path).map_err(|e| KeyError::File {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let raw = der
            .strip_prefix(&SPKI_PREFIX[..])
            .and_then(|k| <[u8; 32]>::try_from(k).ok())
            .ok_or_else(|| KeyError::NotEd25519 {
                path: shown,
                reason: "not an Ed25519 SubjectPublicKeyInfo".into(),
            })?;
        Ok(Self::from_raw(raw))
    }

    /// The key id messages name it by.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// This collector's signing key.
pub struct Signer {
    origin: Arc<str>,
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("origin", &self.origin)
            .field("key_id", &self.public.id)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// From PKCS#8 DER (v1, as `openssl genpkey -algorithm ed25519` writes,
    /// or v2).
    pub fn from_pkcs8(origin: &str, der: &[u8]) -> Result<Self, ring::error::KeyRejected> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)?;
        let raw: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .expect("an Ed25519 public key is 32 bytes");
        Ok(Self {
            origin: origin.into(),
            public: PublicKey::from_raw(raw),
            pair,
        })
    }

    /// From a PEM `PRIVATE KEY` file.
    pub fn from_pem_file(origin: &str, path: &Path) -> Result<Self, KeyError> {
        let shown = path.display().to_string();
        let der = PrivatePkcs8KeyDer::from_pem_file(path).map_err(|e| KeyError::File {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        Self::from_pkcs8(origin, der.secret_pkcs8_der()).map_err(|e| KeyError::NotEd25519 {
            path: shown,
            reason: e.to_string(),
        })
    }

    /// A new random key (tests, and key generation).
    pub fn generate(origin: &str) -> Result<Self, ring::error::Unspecified> {
        let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())?;
        Self::from_pkcs8(origin, der.as_ref()).map_err(|_| ring::error::Unspecified)
    }

    pub fn origin(&self) -> &Arc<str> {
        &self.origin
    }

    pub fn public_key(&self) -> PublicKey {
        self.public.clone()
    }

    /// Signs one message.
    pub fn sign(&self, topic: &str, key: &[u8], payload: &[u8]) -> Signature {
        let sig = self
            .pair
            .sign(&signed_bytes(topic, &self.origin, key, payload));
        Signature {
            origin: self.origin.clone(),
            key_id: self.public.id.clone(),
            bytes: sig.as_ref().to_vec(),
        }
    }
}

/// A message's signature, to put in its headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    pub origin: Arc<str>,
    pub key_id: String,
    pub bytes: Vec<u8>,
}

impl Signature {
    /// As the reader sees the headers.
    pub fn envelope(&self) -> Envelope<'_> {
        Envelope {
            origin: Some(self.origin.as_bytes()),
            key_id: Some(self.key_id.as_bytes()),
            signature: Some(&self.bytes),
        }
    }
}

/// The authentication headers of a message as read (each `None` if
/// absent).
#[derive(Debug, Clone, Copy, Default)]
pub struct Envelope<'a> {
    pub origin: Option<&'a [u8]>,
    pub key_id: Option<&'a [u8]>,
    pub signature: Option<&'a [u8]>,
}

/// Which claimants an origin may speak for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimants {
    Any,
    Only(HashSet<Arc<str>>),
}

impl Claimants {
    pub fn only<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        Self::Only(names.into_iter().map(Into::into).collect())
    }
}

/// A trusted origin: its keys and the claimants it may speak for.
#[derive(Debug, Clone)]
pub struct TrustedOrigin {
    keys: Vec<PublicKey>,
    claimants: Claimants,
}

impl TrustedOrigin {
    pub fn may_speak_for(&self, claimant: &str) -> bool {
        match &self.claimants {
            Claimants::Any => true,
            Claimants::Only(names) => names.contains(claimant),
        }
    }
}

/// Why a message's authentication failed. Nothing of such a message is
/// used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Verdict {
    #[error("the message is not signed")]
    Unsigned,
    #[error("the message's origin is not a trusted collector")]
    UnknownOrigin,
    #[error("the message names a key its origin is not trusted with")]
    UnknownKey,
    #[error("the message's signature does not verify")]
    BadSignature,
}

/// The origins a reader trusts, by name.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    origins: HashMap<Arc<str>, TrustedOrigin>,
}

impl Trust {
    /// Trusts `origin` with `keys` for `claimants` (replacing what it had).
    pub fn add(&mut self, origin: &str, keys: Vec<PublicKey>, claimants: Claimants) {
        self.origins
            .insert(origin.into(), TrustedOrigin { keys, claimants });
    }

    pub fn len(&self) -> usize {
        self.origins.len()
    }

    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    /// Checks a message's signature; the origin it came from if it
    /// verifies.
    pub fn verify(
        &self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        envelope: &Envelope<'_>,
    ) -> Result<&TrustedOrigin, Verdict> {
        let (Some(origin), Some(key_id), Some(signature)) =
            (envelope.origin, envelope.key_id, envelope.signature)
        else {
            return Err(Verdict::Unsigned);
        };
        let origin_name = std::str::from_utf8(origin).map_err(|_| Verdict::UnknownOrigin)?;
        let trusted = self
            .origins
            .get(origin_name)
            .ok_or(Verdict::UnknownOrigin)?;
        let public = trusted
            .keys
            .iter()
            .find(|k| k.id.as_bytes() == key_id)
            .ok_or(Verdict::UnknownKey)?;
        UnparsedPublicKey::new(&ED25519, &public.raw)
            .verify(&signed_bytes(topic, origin_name, key, payload), signature)
            .map_err(|_| Verdict::BadSignature)?;
        Ok(trusted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust_of(signer: &Signer, claimants: Claimants) -> Trust {
        let mut t = Trust::default();
        t.add(signer.origin(), vec![signer.public_key()], claimants);
        t
    }

    #[test]
    fn a_signed_message_verifies_and_any_change_does_not() {
        let a = Signer::generate("collector-a").unwrap();
        let t = trust_of(&a, Claimants::Any);
        let sig = a.sign("topic", b"key", b"payload");
        assert!(
            t.verify("topic", b"key", b"payload", &sig.envelope())
                .is_ok()
        );
        for (topic, key, payload) in [
            ("topic2", &b"key"[..], &b"payload"[..]),
            ("topic", b"key2", b"payload"),
            ("topic", b"key", b"payloae"),
            // Bytes moved between key and payload.
            ("topic", b"keyp", b"ayload"),
        ] {
            assert_eq!(
                t.verify(topic, key, payload, &sig.envelope()).unwrap_err(),
                Verdict::BadSignature,
                "{topic} {key:?} {payload:?}"
            );
        }
    }

    #[test]
    fn origin_key_and_presence_are_checked() {
        let a = Signer::generate("collector-a").unwrap();
        let b = Signer::generate("collector-b").unwrap();
        let t = trust_of(&a, Claimants::Any);
        let sig = b.sign("t", b"k", b"p");
        assert_eq!(
            t.verify("t", b"k", b"p", &sig.envelope()).unwrap_err(),
            Verdict::UnknownOrigin
        );
        // b's key, claiming to be a: a is not trusted with b's key.
        let mut claimed = sig.clone();
        claimed.origin = "collector-a".into();
        assert_eq!(
            t.verify("t", b"k", b"p", &claimed.envelope()).unwrap_err(),
            Verdict::UnknownKey
        );
        // b's signature under a's key id.
        claimed.key_id = a.public_key().id().to_owned();
        assert_eq!(
            t.verify("t", b"k", b"p", &claimed.envelope()).unwrap_err(),
            Verdict::BadSignature
        );
        let mut missing = sig.envelope();
        missing.signature = None;
        assert_eq!(
            t.verify("t", b"k", b"p", &missing).unwrap_err(),
            Verdict::Unsigned
        );
        let mut short = a.sign("t", b"k", b"p");
        short.bytes.truncate(10);
        assert_eq!(
            t.verify("t", b"k", b"p", &short.envelope()).unwrap_err(),
            Verdict::BadSignature
        );
    }

    #[test]
    fn keys_round_trip_through_pem_files_and_ids_are_stable() {
        let dir = tempfile::tempdir().unwrap();
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let (private, public) = (dir.path().join("a.key"), dir.path().join("a.pub"));
        std::fs::write(&private, pair.serialize_pem()).unwrap();
        std::fs::write(&public, pair.public_key_pem()).unwrap();
        let a = Signer::from_pem_file("collector-a", &private).unwrap();
        let read = PublicKey::from_pem_file(&public).unwrap();
        assert_eq!(read, a.public_key());
        assert_eq!(read.id().len(), 16);
        assert_eq!(read, PublicKey::from_pem_file(&public).unwrap());
        let err = Signer::from_pem_file("collector-a", &public).unwrap_err();
        assert!(err.to_string().contains("a.pub"), "{err}");
        let err = PublicKey::from_pem_file(&dir.path().join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn claimants_are_limited_per_origin() {
        let a = Signer::generate("collector-a").unwrap();
        let t = trust_of(&a, Claimants::only(["agent-1", "agent-2"]));
        let sig = a.sign("t", b"k", b"p");
        let origin = t.verify("t", b"k", b"p", &sig.envelope()).unwrap();
        assert!(origin.may_speak_for("agent-2"));
        assert!(!origin.may_speak_for("agent-3"));
    }
}
