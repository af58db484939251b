//! The bodies of flowattr's fuzz targets: every parser that takes bytes from
//! outside the process, each with the properties its output must have.
//! A target returns normally for every input; a panic (or a hang, which
//! libFuzzer reports as a timeout) is a finding.
//!
//! The cargo-fuzz harness (`fuzz/harness`, nightly) calls these; the replay
//! test (`tests/replay.rs`, stable) runs each one over its seeds, its
//! checked-in corpus and every crash kept in `artifacts/`, so the README's
//! test command replays them all.

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

pub mod seeds;

/// A fuzz target: its name (the corpus directory) and its body.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "frame_decoder",
        run: frame_decoder,
    },
    Target {
        name: "frame_reader",
        run: frame_reader,
    },
    Target {
        name: "sharing_message",
        run: sharing_message,
    },
    Target {
        name: "manifest",
        run: manifest,
    },
    Target {
        name: "plugin_answers",
        run: plugin_answers,
    },
    Target {
        name: "legacy_events",
        run: legacy_events,
    },
    Target {
        name: "btf",
        run: btf,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Frames as a collector decodes them. A batch that decodes encodes again
/// to a frame that decodes to the same batch; the batch-id peek used for
/// refusals never panics on any prefix.
pub fn frame_decoder(data: &[u8]) {
    use flowattr_transport::codec::{self, Frame};
    let _ = codec::peek_batch_id(data.get(codec::LENGTH_PREFIX..).unwrap_or_default());
    let Ok(frame) = codec::decode_frame(data, 1 << 20) else {
        return;
    };
    if let Frame::Batch(batch) = frame {
        let mut again = Vec::new();
        codec::encode_batch(&batch, &mut again).expect("a decoded batch fits a frame again");
        let back = codec::decode_frame(&again, usize::MAX).expect("an encoded batch decodes");
        assert_eq!(
            back,
            Frame::Batch(batch),
            "decode(encode(batch)) is the batch"
        );
    }
}

/// Frames as the collector's stream reader takes them off a QUIC stream:
/// the same bytes, arriving in chunks whose sizes the input chooses, must
/// give the same result as decoding them whole.
pub fn frame_reader(data: &[u8]) {
    use flowattr_transport::codec;
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(split).max(1);
    let mut reader = Chunked { bytes, chunk };
    let read = runtime().block_on(flowattr_transport::read_one_frame(&mut reader, 1 << 20));
    // The reader takes one frame and leaves what follows it.
    let announced = bytes
        .first_chunk::<{ codec::LENGTH_PREFIX }>()
        .map_or(0, |p| u32::from_be_bytes(*p) as usize);
    let frame = &bytes[..bytes
        .len()
        .min(codec::LENGTH_PREFIX.saturating_add(announced))];
    let whole = codec::decode_frame(frame, 1 << 20);
    match (read, whole) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("reader and decoder disagree: {a:?} vs {b:?}"),
    }
}

/// One runtime for every input (building one per input would dominate).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
    })
}

/// A stream that hands out at most `chunk` bytes a read.
struct Chunked<'a> {
    bytes: &'a [u8],
    chunk: usize,
}

impl tokio::io::AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = self.chunk.min(buf.remaining()).min(self.bytes.len());
        let (now, later) = self.bytes.split_at(n);
        buf.put_slice(now);
        self.bytes = later;
        Poll::Ready(Ok(()))
    }
}

/// Ownership-sharing messages read off the shared Kafka topic: the first
/// byte splits the input into the message's key and value.
pub fn sharing_message(data: &[u8]) {
    use flowattr_collector::sharing::codec;
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let k = usize::from(k).min(rest.len());
    let (key, payload) = rest.split_at(k);
    let key = (!key.is_empty()).then_some(key);
    let _ = codec::decode(key, payload);
}

/// Plugin manifests from the drop-in directory. One that parses writes
/// itself out as TOML that parses to the same manifest.
pub fn manifest(data: &[u8]) {
    use flowattr_plugin_runtime::manifest::Manifest;
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(m) = Manifest::parse(text) else {
        return;
    };
    let again = Manifest::parse(&m.to_toml()).expect("a written manifest parses");
    assert_eq!(again, m, "parse(to_toml(manifest)) is the manifest");
}

/// Answers coming back from an identity plugin through the runtime: the
/// workload-table update and the answer columns, as the runtime hands them
/// to [`flowattr_model::columns::WorkloadTable`]. Several batches in a row,
/// so a table built by one is read by the next. Every answer taken names a
/// workload the answers list.
pub fn plugin_answers(data: &[u8]) {
    use flowattr_model::columns::{AnswerColumns, WorkloadTable};
    use flowattr_model::{Answer, Workload};
    let mut input = Bytes(data);
    let mut table = WorkloadTable::default();
    while !input.0.is_empty() {
        let keep = u32::from(input.byte());
        let new = usize::from(input.byte() % 8);
        let workloads: Vec<Workload> = (0..new)
            .map(|_| Workload {
                id: format!("w{}", input.byte()),
                ..Workload::default()
            })
            .collect();
        let rows = usize::from(input.byte() % 16);
        // Ragged on purpose when the input says so.
        let ragged = input.byte() % 8 == 0;
        let mut columns = AnswerColumns::default();
        for i in 0..rows {
            columns.status.push(input.byte() % 8);
            columns.workload.push(u32::from(input.byte()));
            columns.valid_start_ns.push(input.u64());
            columns.valid_end_ns.push(input.u64());
            if !(ragged && i == 0) {
                columns.port_scoped.push(input.byte() % 3);
            }
        }
        if table.apply(keep, workloads.into_iter()).is_err() {
            continue;
        }
        if let Ok(answers) = table.answers(columns) {
            assert_eq!(answers.answers.len(), rows);
            for a in &answers.answers {
                if let Answer::Attributed { workload, .. } = a {
                    assert!((*workload as usize) < answers.workloads.len());
                }
            }
        }
    }
}

/// Lines of the legacy IP-event feed the collector follows. Every complete
/// line is taken, as an event or as a malformed line; a partial last line
/// stays.
pub fn legacy_events(data: &[u8]) {
    let mut buf = data.to_vec();
    let polled = flowattr_collector::legacy::take_lines(&mut buf);
    let lines = data
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |end| data[..end].split(|&b| b == b'\n').count());
    assert!(polled.events.len() + polled.malformed.len() <= lines);
    assert!(!buf.contains(&b'\n'), "complete lines are all taken");
    assert!(data.ends_with(&buf));
}

/// BTF blobs, and the member lookups the agent makes in them.
pub fn btf(data: &[u8]) {
    use flowattr_host::capture::btf::Btf;
    let Ok(btf) = Btf::parse(data) else {
        return;
    };
    for path in [
        "sock.__sk_common.skc_net",
        "tcp_sock.bytes_acked",
        "a.b",
        "a.b.c.d",
    ] {
        let _ = btf.field(path);
    }
}

/// Reads fuzz input as numbers, zeros once it runs out.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn u64(&mut self) -> u64 {
        // Edge values more often than uniform bytes would give them.
        match self.byte() % 4 {
            0 => 0,
            1 => u64::MAX,
            _ => u64::from_le_bytes(std::array::from_fn(|_| self.byte())),
        }
    }
}
