//! What a reader does with one message from the topic before anything of
//! it is used (pure): the size limit, then the signature (when the reader
//! verifies), then the decode with its limits, then the origin and the
//! claimants it speaks for. Cheapest first: a message of random bytes costs
//! one signature check and is never parsed.

use super::{
    auth::{Envelope, Trust, Verdict},
    codec::{self, Content, DecodeError, Decoded, MalformedReason},
};

/// Why a message was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Auth(#[from] Verdict),
    #[error("the message is signed by {signed:?} but its payload names origin {payload:?}")]
    OriginMismatch { signed: String, payload: String },
    #[error("origin {origin:?} may not speak for claimant {claimant:?}")]
    NotAllowed { origin: String, claimant: String },
}

impl Refusal {
    pub fn reason(&self) -> MalformedReason {
        match self {
            Self::Decode(e) => e.reason(),
            Self::Auth(Verdict::Unsigned) => MalformedReason::Unsigned,
            Self::Auth(Verdict::UnknownOrigin) => MalformedReason::UnknownOrigin,
            Self::Auth(Verdict::UnknownKey) => MalformedReason::UnknownKey,
            Self::Auth(Verdict::BadSignature) => MalformedReason::BadSignature,
            Self::OriginMismatch { .. } => MalformedReason::OriginMismatch,
            Self::NotAllowed { .. } => MalformedReason::NotAllowed,
        }
    }
}

/// How a reader checks messages.
#[derive(Debug, Clone)]
pub struct Admission {
    pub topic: String,
    pub max_message_bytes: usize,
    /// `None`: signatures are not checked (unauthenticated sharing).
    pub trust: Option<Trust>,
}

impl Admission {
    /// Checks one message: its Kafka key, payload and authentication
    /// headers.
    pub fn admit(
        &self,
        key: Option<&[u8]>,
        payload: &[u8],
        envelope: &Envelope<'_>,
    ) -> Result<Decoded, Refusal> {
        if payload.len() > self.max_message_bytes {
            return Err(DecodeError::TooLarge {
                len: payload.len(),
                max: self.max_message_bytes,
            }
            .into());
        }
        let Some(trust) = &self.trust else {
            return Ok(codec::decode(key, payload)?);
        };
        let origin = trust.verify(&self.topic, key.unwrap_or_default(), payload, envelope)?;
        let decoded = codec::decode(key, payload)?;
        let signed = envelope.origin.unwrap_or_default();
        if decoded.origin.as_bytes() != signed {
            return Err(Refusal::OriginMismatch {
                signed: String::from_utf8_lossy(signed).into_owned(),
                payload: decoded.origin.to_string(),
            });
        }
        let refused = match &decoded.content {
            Content::Ranges(r) => r
                .iter()
                .map(|u| &u.claimant)
                .find(|c| !origin.may_speak_for(c)),
            Content::Marks(m) => m
                .iter()
                .map(|m| &m.claimant)
                .find(|c| !origin.may_speak_for(c)),
        };
        if let Some(claimant) = refused {
            return Err(Refusal::NotAllowed {
                origin: decoded.origin.to_string(),
                claimant: claimant.to_string(),
            });
        }
        Ok(decoded)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use flowattr_model::{TimeRange, Workload};

    use super::*;
    use crate::{
        completeness::{Mark, SharedMark},
        ownership::RangeUpdate,
        sharing::auth::{Claimants, Signature, Signer},
    };

    fn update(claimant: &str) -> RangeUpdate {
        RangeUpdate {
            ip: "10.0.0.7".parse().unwrap(),
            workload: Arc::new(Workload::with_id("w")),
            range: TimeRange::new(1, 2),
            claimant: claimant.into(),
        }
    }

    fn setup() -> (Signer, Admission) {
        let a = Signer::generate("collector-a").unwrap();
        let mut trust = Trust::default();
        trust.add(
            "collector-a",
            vec![a.public_key()],
            Claimants::only(["agent-1"]),
        );
        let admission = Admission {
            topic: "t".into(),
            max_message_bytes: 10_000,
            trust: Some(trust),
        };
        (a, admission)
    }

    fn signed(a: &Signer, origin_in_payload: &str, claimant: &str) -> (String, Vec<u8>, Signature) {
        let m = codec::encode(origin_in_payload, &[update(claimant)]).remove(0);
        let sig = a.sign("t", m.key.as_bytes(), &m.payload);
        (m.key, m.payload, sig)
    }

    #[test]
    fn a_signed_message_within_its_origins_claimants_is_admitted() {
        let (a, adm) = setup();
        let (key, payload, sig) = signed(&a, "collector-a", "agent-1");
        let d = adm
            .admit(Some(key.as_bytes()), &payload, &sig.envelope())
            .unwrap();
        assert_eq!(&*d.origin, "collector-a");
    }

    #[test]
    fn each_failure_has_its_reason() {
        let (a, adm) = setup();
        let reason = |key: &str, payload: &[u8], env: &Envelope<'_>| {
            adm.admit(Some(key.as_bytes()), payload, env)
                .unwrap_err()
                .reason()
        };
        let (key, payload, sig) = signed(&a, "collector-a", "agent-2");
        assert_eq!(
            reason(&key, &payload, &sig.envelope()),
            MalformedReason::NotAllowed
        );
        let (key, payload, sig) = signed(&a, "collector-b", "agent-1");
        assert_eq!(
            reason(&key, &payload, &sig.envelope()),
            MalformedReason::OriginMismatch
        );
        let (key, payload, _) = signed(&a, "collector-a", "agent-1");
        assert_eq!(
            reason(&key, &payload, &Envelope::default()),
            MalformedReason::Unsigned
        );
        let sig = a.sign("t", key.as_bytes(), b"garbage");
        assert_eq!(
            reason(&key, b"garbage", &sig.envelope()),
            MalformedReason::Syntax
        );
        assert_eq!(
            reason(&key, &vec![b' '; 10_001], &sig.envelope()),
            MalformedReason::Limit
        );
        let marks = codec::encode_marks(
            "collector-a",
            &[SharedMark {
                claimant: "agent-9".into(),
                mark: Mark::default(),
            }],
        )
        .remove(0);
        let sig = a.sign("t", marks.key.as_bytes(), &marks.payload);
        assert_eq!(
            reason(&marks.key, &marks.payload, &sig.envelope()),
            MalformedReason::NotAllowed
        );
    }

    #[test]
    fn without_trust_unsigned_messages_are_decoded() {
        let (_, mut adm) = setup();
        adm.trust = None;
        let m = codec::encode("anyone", &[update("agent-7")]).remove(0);
        assert!(
            adm.admit(Some(m.key.as_bytes()), &m.payload, &Envelope::default())
                .is_ok()
        );
    }
}
