//! Reading one frame off a stream (the I/O shell around [`crate::codec`]).

use flowattr_model::BatchId;
use tokio::io::{AsyncRead, AsyncReadExt as _};

use crate::{
    clock::unix_now_ns,
    codec::{self, DecodeError, Frame, LENGTH_PREFIX},
};

/// Bytes read from an oversized frame's body to find its batch id.
const PEEK_BYTES: usize = 4096;

/// Bytes read from the stream at a time.
const CHUNK_BYTES: usize = 64 << 10;

/// A frame read off a stream, with its timing.
#[derive(Debug)]
pub(crate) struct Received {
    pub frame: Frame,
    /// The sender's send time ([`codec::stamp_sent`]), when it stamped one.
    pub sent_ns: Option<u64>,
    /// When the frame's length prefix had been read: Unix nanoseconds on
    /// this host's clock.
    pub received_ns: u64,
}

/// A frame that could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The bytes are not a valid frame; `id` is the batch's when readable.
    #[error("{error}")]
    Decode {
        error: DecodeError,
        id: Option<BatchId>,
    },
    /// The stream failed (reset, connection lost).
    #[error("reading the stream: {0}")]
    Io(#[from] std::io::Error),
}

fn decode_error(error: DecodeError, body: &[u8]) -> ReadError {
    ReadError::Decode {
        id: codec::peek_batch_id(body),
        error,
    }
}

/// Reads bytes into `buf` until it is full or the stream ends; how many.
async fn fill<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]).await? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Reads and decodes one frame of at most `max_frame_bytes` from `r`
/// ([`read_prefix`], [`read_body`], then decoding within the default
/// limits). The receive time is taken as soon as the length prefix is in,
/// so the frame's own transfer time does not count as delay.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max_frame_bytes: usize,
    body: &mut Vec<u8>,
) -> Result<Received, ReadError> {
    let (len, received_ns) = read_prefix(r, max_frame_bytes).await?;
    read_body(r, len, body).await?;
    decode(body, &codec::DecodeLimits::default(), received_ns)
}

/// Reads a frame's length prefix: the body's length (at most
/// `max_frame_bytes`) and when the prefix was in. An oversized frame's body
/// is not read beyond its first bytes (for the batch id).
pub(crate) async fn read_prefix<R: AsyncRead + Unpin>(
    r: &mut R,
    max_frame_bytes: usize,
) -> Result<(usize, u64), ReadError> {
    let mut prefix = [0u8; LENGTH_PREFIX];
    let got = fill(r, &mut prefix).await?;
    let received_ns = unix_now_ns();
    if got < LENGTH_PREFIX {
        let error = DecodeError::Truncated {
            expected: LENGTH_PREFIX,
            got,
        };
        return Err(decode_error(error, &[]));
    }
    match codec::body_length(prefix, max_frame_bytes) {
        Ok(len) => Ok((len, received_ns)),
        Err(error) => {
            let announced = u32::from_be_bytes(prefix) as usize;
            let mut head = vec![0u8; announced.min(PEEK_BYTES)];
            let n = fill(r, &mut head).await.unwrap_or(0);
            Err(decode_error(error, &head[..n]))
        }
    }
}

/// Reads a body of `len` bytes into `body` as they arrive, so a length
/// prefix alone reserves no memory and, if the future is dropped (a
/// timeout), `body` holds what came.
pub(crate) async fn read_body<R: AsyncRead + Unpin>(
    r: &mut R,
    len: usize,
    body: &mut Vec<u8>,
) -> Result<(), ReadError> {
    body.clear();
    let mut chunk = vec![0u8; len.min(CHUNK_BYTES)];
    while body.len() < len {
        let want = (len - body.len()).min(chunk.len());
        match r.read(&mut chunk[..want]).await? {
            0 => break,
            n => body.extend_from_slice(&chunk[..n]),
        }
    }
    if body.len() < len {
        let error = DecodeError::Truncated {
            expected: LENGTH_PREFIX + len,
            got: LENGTH_PREFIX + body.len(),
        };
        return Err(decode_error(error, body));
    }
    Ok(())
}

/// Decodes a whole body read at `received_ns` within `limits` (pure CPU
/// work: the receiver runs it off the async workers).
pub(crate) fn decode(
    body: &[u8],
    limits: &codec::DecodeLimits,
    received_ns: u64,
) -> Result<Received, ReadError> {
    match codec::decode_body_limited(body, limits) {
        Ok((frame, sent_ns)) => Ok(Received {
            frame,
            sent_ns,
            received_ns,
        }),
        Err(error) => Err(decode_error(error, body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame() -> (Vec<u8>, BatchId) {
        let batch = flowattr_model::FlowBatch {
            agent: "a".into(),
            incarnation: 3,
            seq: 9,
            created_ns: 1,
            complete_until_ns: 0,
            flows: vec![],
        };
        let mut bytes = Vec::new();
        codec::encode_batch(&batch, &mut bytes).unwrap();
        (bytes, batch.id())
    }

    #[tokio::test]
    async fn reads_a_frame_and_leaves_what_follows() {
        let (mut bytes, id) = frame();
        bytes.extend([1, 2, 3]);
        let mut r = bytes.as_slice();
        let before = unix_now_ns();
        let got = read_frame(&mut r, 1024, &mut Vec::new()).await.unwrap();
        let Frame::Batch(b) = got.frame else { panic!() };
        assert_eq!(b.id(), id);
        assert_eq!(got.sent_ns, None, "not stamped");
        assert!(got.received_ns >= before);
        assert_eq!(r, [1, 2, 3]);
    }

    #[tokio::test]
    async fn a_stamped_frame_gives_its_send_time_and_the_same_body() {
        let (mut bytes, id) = frame();
        codec::stamp_sent(&mut bytes, 42).unwrap();
        let mut body = Vec::new();
        let got = read_frame(&mut bytes.as_slice(), 1024, &mut body)
            .await
            .unwrap();
        assert_eq!(got.sent_ns, Some(42));
        assert!(matches!(got.frame, Frame::Batch(b) if b.id() == id));
        assert_eq!(body, bytes[LENGTH_PREFIX..], "the body includes the stamp");
    }

    #[tokio::test]
    async fn a_short_stream_is_truncated_with_the_id_when_readable() {
        let (bytes, id) = frame();
        let mut r = &bytes[..bytes.len() - 1];
        match read_frame(&mut r, 1024, &mut Vec::new()).await {
            Err(ReadError::Decode {
                error: DecodeError::Truncated { .. },
                id: got,
            }) => assert_eq!(got, Some(id)),
            other => panic!("{other:?}"),
        }
        let mut r = &bytes[..2];
        assert!(matches!(
            read_frame(&mut r, 1024, &mut Vec::new()).await,
            Err(ReadError::Decode {
                error: DecodeError::Truncated {
                    expected: 4,
                    got: 2
                },
                id: None
            })
        ));
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_with_its_id() {
        let (bytes, id) = frame();
        let mut r = bytes.as_slice();
        match read_frame(&mut r, 4, &mut Vec::new()).await {
            Err(ReadError::Decode {
                error: DecodeError::Oversized { max: 4, .. },
                id: got,
            }) => assert_eq!(got, Some(id)),
            other => panic!("{other:?}"),
        }
    }
}
