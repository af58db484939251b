//! The on-disk spool: one file per batch (its encoded frame), named by its
//! id, written to a temporary name, synced and renamed, so a crash leaves
//! either the whole batch or nothing. Files are deleted when the batch is
//! acknowledged or rejected, or dropped (oldest first) to stay under the
//! size bound. Opening the spool finds the batches a previous run left.
//!
//! File name: `INCARNATION_SEQ_FLOWS_AGENT.batch` (numbers in decimal, the
//! first two zero-padded so names sort oldest first; the agent name with
//! bytes other than `A-Za-z0-9.-` as `%XX`).

use std::{
    fs::{self, File},
    io::{self, Read as _, Write as _},
    path::{Path, PathBuf},
};

use super::index::{Entry, Evicted, SpoolIndex, SpoolKey};
use crate::codec::SENT_STAMP_BYTES;

const SUFFIX: &str = ".batch";
const TMP_SUFFIX: &str = ".tmp";

/// A spool file operation that failed.
#[derive(Debug, thiserror::Error)]
#[error("spool {path}: {source}")]
pub struct SpoolError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError {
        path: path.to_owned(),
        source,
    }
}

/// The spool directory and its index.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    pub index: SpoolIndex,
    /// The highest watermark spooled by this run.
    pub last_watermark_ns: u64,
}

impl Spool {
    /// Opens (creating) `dir`, removes half-written files and indexes the
    /// batches there. Files it cannot parse are left alone and logged.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        fs::create_dir_all(dir).map_err(at(dir))?;
        let mut index = SpoolIndex::new(max_bytes);
        for item in fs::read_dir(dir).map_err(at(dir))? {
            let item = item.map_err(at(dir))?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = item.path();
            if name.ends_with(TMP_SUFFIX) {
                tracing::debug!(path = %path.display(), "removing a half-written spool file");
                fs::remove_file(&path).map_err(at(&path))?;
                continue;
            }
            match parse_name(name) {
                Some((key, flows)) => {
                    let bytes = item.metadata().map_err(at(&path))?.len();
                    let entry = Entry {
                        bytes,
                        flows,
                        in_flight: false,
                        not_before: None,
                        after_ns: 0,
                        watermark_ns: u64::MAX,
                    };
                    index.insert(key, entry);
                }
                None => {
                    tracing::warn!(path = %path.display(), "ignoring a file in the spool directory that is not a spooled batch")
                }
            }
        }
        if index.len() > 0 {
            tracing::info!(batches = index.len(), bytes = index.bytes(), dir = %dir.display(), "found spooled batches; sending them again");
        }
        Ok(Spool {
            dir: dir.to_owned(),
            index,
            last_watermark_ns: 0,
        })
    }

    /// The file of `key`.
    pub fn path(&self, key: &SpoolKey, flows: u64) -> PathBuf {
        self.dir.join(file_name(key, flows))
    }

    /// Removes `key`'s file and entry; whether it was spooled.
    pub fn remove(&mut self, key: &SpoolKey) -> Result<bool, SpoolError> {
        let Some(entry) = self.index.get(key) else {
            return Ok(false);
        };
        self.index.remove(key);
        delete(&self.path(key, entry.flows))?;
        Ok(true)
    }

    /// Deletes the files of evicted batches.
    pub fn delete_evicted(&self, evicted: &[Evicted]) -> Result<(), SpoolError> {
        for e in evicted {
            delete(&self.path(&e.key, e.flows))?;
        }
        Ok(())
    }
}

fn delete(path: &Path) -> Result<(), SpoolError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(at(path)(e)),
        _ => Ok(()),
    }
}

/// Writes `frame` durably as `key`'s file in `dir` (temporary name, sync,
/// rename, directory sync). Runs outside the spool's lock.
pub(crate) fn write_file(
    dir: &Path,
    key: &SpoolKey,
    flows: u64,
    frame: &[u8],
) -> Result<u64, SpoolError> {
    let name = file_name(key, flows);
    let path = dir.join(&name);
    let tmp = dir.join(format!(".{name}{TMP_SUFFIX}"));
    let mut file = File::create(&tmp).map_err(at(&tmp))?;
    file.write_all(frame).map_err(at(&tmp))?;
    file.sync_data().map_err(at(&tmp))?;
    drop(file);
    fs::rename(&tmp, &path).map_err(at(&path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(at(dir))?;
    Ok(frame.len() as u64)
}

/// Reads a spooled batch's frame, into a buffer with room for its send-time
/// stamp.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, SpoolError> {
    let mut file = File::open(path).map_err(at(path))?;
    let len = file.metadata().map_err(at(path))?.len();
    let mut frame = Vec::with_capacity(usize::try_from(len).unwrap_or(0) + SENT_STAMP_BYTES);
    file.read_to_end(&mut frame).map_err(at(path))?;
    Ok(frame)
}

fn file_name(key: &SpoolKey, flows: u64) -> String {
    format!(
        "{:020}_{:020}_{flows}_{}{SUFFIX}",
        key.incarnation,
        key.seq,
        escape(&key.agent)
    )
}

fn parse_name(name: &str) -> Option<(SpoolKey, u64)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let mut parts = stem.splitn(4, '_');
    let incarnation = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    let flows = parts.next()?.parse().ok()?;
    let agent = unescape(parts.next()?)?;
    Some((
        SpoolKey {
            incarnation,
            seq,
            agent,
        },
        flows,
    ))
}

fn escape(agent: &str) -> String {
    let mut out = String::with_capacity(agent.len());
    for b in agent.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_any_agent_name() {
        for agent in ["ip-10-0-0-12", "a_b%c", "ünï code/x", ""] {
            let key = SpoolKey {
                incarnation: u64::MAX,
                seq: 7,
                agent: agent.into(),
            };
            let name = file_name(&key, 12);
            assert!(!name.contains('/'), "{name}");
            assert_eq!(parse_name(&name), Some((key, 12)), "{name}");
        }
        assert_eq!(parse_name("notes.txt"), None);
        assert_eq!(parse_name("1_2_x_a.batch"), None);
    }

    #[test]
    fn reopening_finds_written_batches_and_removes_half_written_ones() {
        let dir = tempfile::tempdir().unwrap();
        let key = SpoolKey {
            incarnation: 1,
            seq: 2,
            agent: "a".into(),
        };
        write_file(dir.path(), &key, 3, b"frame").unwrap();
        fs::write(dir.path().join(".x.batch.tmp"), b"half").unwrap();
        fs::write(dir.path().join("README"), b"not a batch").unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!((spool.index.len(), spool.index.bytes()), (1, 5));
        assert_eq!(spool.index.get(&key).map(|e| e.flows), Some(3));
        assert!(!dir.path().join(".x.batch.tmp").exists());
        assert!(dir.path().join("README").exists());
        assert_eq!(read_file(&spool.path(&key, 3)).unwrap(), b"frame");
        assert!(spool.remove(&key).unwrap());
        assert!(!spool.remove(&key).unwrap());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
