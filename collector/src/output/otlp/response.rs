//! What an OTLP/HTTP receiver's answer means for the chunk it was sent
//! (pure, no I/O). Following the OTLP specification's "Failures" rules:
//! 2xx is delivered (a `partial_success` may still reject some records),
//! 429, 502, 503 and 504 (and 408) mean "try again later", honouring
//! `Retry-After`; any other status is a refusal of this request that
//! sending it again would not change.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message;

/// The longest `Retry-After` honoured; a longer one waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// How an answer ends an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver has the chunk; it says it rejected `rejected` of its
    /// records (`partial_success`), with its message.
    Delivered { rejected: u64, message: String },
    /// Send the same chunk again, after `after` if the receiver said.
    Retry {
        after: Option<Duration>,
        why: String,
    },
    /// Refused for good (`status`); the chunk is dropped and counted.
    Refused { status: u16, why: String },
}

/// The outcome of an answer with `status`, its `Retry-After` header and
/// (the start of) its body.
pub fn classify(status: u16, retry_after: Option<&str>, body: &[u8]) -> Outcome {
    match status {
        200..=299 => {
            let partial = ExportLogsServiceResponse::decode(body)
                .ok()
                .and_then(|r| r.partial_success);
            match partial {
                Some(p) if p.rejected_log_records > 0 => Outcome::Delivered {
                    rejected: p.rejected_log_records as u64,
                    message: p.error_message,
                },
                _ => Outcome::Delivered {
                    rejected: 0,
                    message: String::new(),
                },
            }
        }
        408 | 429 | 502 | 503 | 504 => Outcome::Retry {
            after: retry_after.and_then(parse_retry_after),
            why: format!("the OTLP receiver answered {status}{}", detail(body)),
        },
        _ => Outcome::Refused {
            status,
            why: format!(
                "the OTLP receiver refused the request: {status}{}",
                detail(body)
            ),
        },
    }
}

/// `Retry-After` in seconds, at most [`MAX_RETRY_AFTER`]. The HTTP-date
/// form is not read: the backoff's own delay applies then.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let seconds: u64 = value.trim().parse().ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

/// The receiver's explanation: the `google.rpc.Status` message OTLP puts
/// in an error body is protobuf, so only its printable text is kept, cut
/// to 200 characters.
fn detail(body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_control() && *c != '\u{fffd}')
        .take(200)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(" ({text})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess;

    #[test]
    fn success_with_and_without_a_partial_rejection() {
        assert_eq!(
            classify(200, None, b""),
            Outcome::Delivered {
                rejected: 0,
                message: String::new()
            }
        );
        let body = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 3,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(
            classify(200, None, &body),
            Outcome::Delivered {
                rejected: 3,
                message: "too old".into()
            }
        );
        // A body that is not a response (some proxies answer text) is a success.
        assert!(matches!(
            classify(202, None, b"\xff\xff not protobuf"),
            Outcome::Delivered { rejected: 0, .. }
        ));
    }

    #[test]
    fn the_retryable_statuses_retry_and_honour_retry_after() {
        for status in [408, 429, 502, 503, 504] {
            assert!(matches!(
                classify(status, None, b""),
                Outcome::Retry { after: None, .. }
            ));
        }
        assert_eq!(
            classify(503, Some(" 7 "), b"busy"),
            Outcome::Retry {
                after: Some(Duration::from_secs(7)),
                why: "the OTLP receiver answered 503 (busy)".into()
            }
        );
        assert_eq!(parse_retry_after("86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2026 07:28:00 GMT"), None);
    }

    #[test]
    fn every_other_status_is_a_refusal() {
        for status in [400, 401, 403, 404, 413, 500, 501] {
            assert!(matches!(
                classify(status, Some("1"), b""),
                Outcome::Refused { status: s, .. } if s == status
            ));
        }
        let Outcome::Refused { why, .. } = classify(400, None, b"\x08\x03\x12\x0bbad request")
        else {
            panic!()
        };
        assert_eq!(
            why,
            "the OTLP receiver refused the request: 400 (bad request)"
        );
    }
}
