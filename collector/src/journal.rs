//! What lets a collector acknowledge a batch before writing it out: every
//! accepted batch is journaled to disk first (one file, written by rename),
//! and its file is removed only once its flows were written to every output.
//! A collector that is killed replays the journal when it starts again, so
//! no acknowledged batch is lost.
//!
//! The journal also remembers the ids of batches it has written out (a
//! bounded log), so a batch an agent re-sends after the collector restarted
//! is still recognised as a duplicate. Delivery to outputs is at least once:
//! a kill between writing a batch out and recording it can write it twice,
//! whole and record for record the same. (Output records do not carry the
//! batch id; a consumer that must drop such copies needs a sink that
//! writes it.)
//!
//! Writes are not fsynced: the journal survives the process, not the machine.

use std::{
    fs,
    io::{self, BufRead, Write},
    path::{Path, PathBuf},
};

use flowattr_model::BatchId;

const BATCH_EXT: &str = "batch";
const EMITTED_LOG: &str = "emitted.log";

/// The on-disk journal of accepted batches.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    emitted: fs::File,
    emitted_lines: usize,
    remember: usize,
}

/// One journaled batch: `PEER\tCLOCK\nBODY`, where `PEER` is the sender's
/// certificate name, `CLOCK` whether its clock was trusted when the batch
/// arrived (`trusted` or `untrusted`), and `BODY` the batch's frame body as
/// it arrived. An entry without `CLOCK` (written before clocks were
/// measured) counts as untrusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalEntry<'a> {
    pub peer: &'a str,
    pub clock_trusted: bool,
    pub body: &'a [u8],
}

impl<'a> JournalEntry<'a> {
    /// The header line written before the body.
    pub fn header(peer: &str, clock_trusted: bool) -> String {
        let clock = if clock_trusted {
            "trusted"
        } else {
            "untrusted"
        };
        format!("{peer}\t{clock}\n")
    }

    /// Splits an entry's bytes; `Err` when it has no header line.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        let newline = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("no sender line")?;
        let line = std::str::from_utf8(&bytes[..newline]).map_err(|e| e.to_string())?;
        let (peer, clock_trusted) = match line.split_once('\t') {
            Some((peer, "trusted")) => (peer, true),
            Some((peer, _)) => (peer, false),
            None => (line, false),
        };
        Ok(Self {
            peer,
            clock_trusted,
            body: &bytes[newline + 1..],
        })
    }
}

/// What a starting collector finds in its journal.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Batches accepted but not written out, oldest first: (id, bytes).
    pub pending: Vec<(BatchId, Vec<u8>)>,
    /// Ids of batches already written out, oldest first.
    pub emitted: Vec<BatchId>,
    /// Files that could not be read or named (left in place, logged).
    pub unreadable: Vec<PathBuf>,
}

impl Journal {
    /// Opens (creating) the journal in `dir`, remembering up to `remember`
    /// written-out ids, and returns what an earlier run left.
    pub fn open(dir: &Path, remember: usize) -> io::Result<(Self, Recovered)> {
        fs::create_dir_all(dir)?;
        let mut recovered = Recovered::default();
        let mut pending = Vec::new();
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some(BATCH_EXT) {
                continue;
            }
            let id = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(parse_name);
            match (id, fs::read(&path)) {
                (Some(id), Ok(bytes)) => {
                    let mtime = fs::metadata(&path).and_then(|m| m.modified()).ok();
                    pending.push((mtime, id, bytes));
                }
                _ => recovered.unreadable.push(path),
            }
        }
        pending.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        recovered.pending = pending.into_iter().map(|(_, id, b)| (id, b)).collect();

        let log = dir.join(EMITTED_LOG);
        if let Ok(file) = fs::File::open(&log) {
            for line in io::BufReader::new(file).lines() {
                if let Some(id) = parse_name(line?.trim()) {
                    recovered.emitted.push(id);
                }
            }
        }
        let keep = recovered.emitted.len().saturating_sub(remember);
        recovered.emitted.drain(..keep);
        // Rewrite the log with what is kept, so it stays bounded.
        let tmp = dir.join(format!("{EMITTED_LOG}.tmp"));
        {
            let mut out = io::BufWriter::new(fs::File::create(&tmp)?);
            for id in &recovered.emitted {
                writeln!(out, "{}", file_name(id))?;
            }
            out.flush()?;
        }
        fs::rename(&tmp, &log)?;
        let emitted = fs::OpenOptions::new().append(true).open(&log)?;
        let journal = Self {
            dir: dir.to_owned(),
            emitted,
            emitted_lines: recovered.emitted.len(),
            remember: remember.max(1),
        };
        Ok((journal, recovered))
    }

    /// Journals an accepted batch as `parts` written one after another.
    /// Only after this returns may it be acknowledged.
    pub fn append(&self, id: &BatchId, parts: &[&[u8]]) -> io::Result<()> {
        let path = self.path(id);
        let tmp = path.with_extension("tmp");
        let mut file = fs::File::create(&tmp)?;
        for part in parts {
            file.write_all(part)?;
        }
        drop(file);
        fs::rename(&tmp, &path)
    }

    /// Records that these batches were written to every output, and forgets
    /// their bytes.
    pub fn written_out<'a>(
        &mut self,
        ids: impl IntoIterator<Item = &'a BatchId>,
    ) -> io::Result<()> {
        let ids: Vec<&BatchId> = ids.into_iter().collect();
        let mut lines = String::new();
        for id in &ids {
            lines.push_str(&file_name(id));
            lines.push('\n');
        }
        self.emitted.write_all(lines.as_bytes())?;
        self.emitted_lines += ids.len();
        for id in ids {
            match fs::remove_file(self.path(id)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        if self.emitted_lines > 2 * self.remember {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the written-out log down to the ids it must remember.
    fn compact(&mut self) -> io::Result<()> {
        let (reopened, _) = Self::open_log_only(&self.dir, self.remember)?;
        self.emitted = reopened;
        self.emitted_lines = self.remember;
        Ok(())
    }

    fn open_log_only(dir: &Path, remember: usize) -> io::Result<(fs::File, usize)> {
        let log = dir.join(EMITTED_LOG);
        let lines: Vec<String> = io::BufReader::new(fs::File::open(&log)?)
            .lines()
            .collect::<io::Result<_>>()?;
        let keep = &lines[lines.len().saturating_sub(remember)..];
        let tmp = dir.join(format!("{EMITTED_LOG}.tmp"));
        fs::write(
            &tmp,
            keep.iter().map(|l| format!("{l}\n")).collect::<String>(),
        )?;
        fs::rename(&tmp, &log)?;
        Ok((fs::OpenOptions::new().append(true).open(&log)?, keep.len()))
    }

    fn path(&self, id: &BatchId) -> PathBuf {
        self.dir.join(format!("{}.{BATCH_EXT}", file_name(id)))
    }
}

/// `AGENT-HEX.INCARNATION.SEQ`: the agent's name in hex, so any name is a
/// safe file name.
fn file_name(id: &BatchId) -> String {
    format!("{}.{}.{}", hex::encode(&id.agent), id.incarnation, id.seq)
}

fn parse_name(name: &str) -> Option<BatchId> {
    let mut parts = name.split('.');
    let agent = String::from_utf8(hex::decode(parts.next()?).ok()?).ok()?;
    let incarnation = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some(BatchId {
        agent,
        incarnation,
        seq,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(agent: &str, seq: u64) -> BatchId {
        BatchId {
            agent: agent.into(),
            incarnation: 9,
            seq,
        }
    }

    #[test]
    fn entries_keep_the_sender_and_whether_its_clock_was_trusted() {
        for trusted in [true, false] {
            let mut bytes = JournalEntry::header("agent a", trusted).into_bytes();
            bytes.extend_from_slice(b"body\nwith newline");
            let e = JournalEntry::parse(&bytes).unwrap();
            assert_eq!((e.peer, e.clock_trusted), ("agent a", trusted));
            assert_eq!(e.body, b"body\nwith newline");
        }
        let old = JournalEntry::parse(b"agent-b\nbody").unwrap();
        assert_eq!(
            (old.peer, old.clock_trusted, old.body),
            ("agent-b", false, &b"body"[..])
        );
        assert!(JournalEntry::parse(b"no header").is_err());
    }

    #[test]
    fn pending_batches_and_written_out_ids_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, rec) = Journal::open(dir.path(), 3).unwrap();
        assert!(rec.pending.is_empty() && rec.emitted.is_empty());
        j.append(&id("agent a/ü", 0), &[b"ze", b"ro"]).unwrap();
        j.append(&id("agent a/ü", 1), &[b"one"]).unwrap();
        j.written_out([&id("agent a/ü", 0)]).unwrap();
        let batch_files = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == BATCH_EXT)
            })
            .count();
        assert_eq!(batch_files, 1);
        drop(j);

        let (_j, rec) = Journal::open(dir.path(), 3).unwrap();
        assert_eq!(rec.pending, vec![(id("agent a/ü", 1), b"one".to_vec())]);
        assert_eq!(rec.emitted, vec![id("agent a/ü", 0)]);
    }

    #[test]
    fn the_written_out_log_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), 2).unwrap();
        for seq in 0..10 {
            j.written_out([&id("a", seq)]).unwrap();
        }
        drop(j);
        let (_j, rec) = Journal::open(dir.path(), 2).unwrap();
        assert_eq!(rec.emitted, vec![id("a", 8), id("a", 9)]);
    }

    #[test]
    fn stray_files_are_reported_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("nonsense.batch"), b"x").unwrap();
        fs::write(dir.path().join("other.txt"), b"x").unwrap();
        let (_j, rec) = Journal::open(dir.path(), 2).unwrap();
        assert!(rec.pending.is_empty());
        assert_eq!(rec.unreadable.len(), 1);
    }
}
