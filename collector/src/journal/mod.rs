//! What lets a collector acknowledge a batch before writing it out: every
//! accepted batch is journaled first, and an acknowledgement waits until its
//! journal entry is durable ([`Journal::sync`], one `fdatasync` for all the
//! batches of a tick). A collector that is killed, or whose machine loses
//! its power, replays the journal when it starts again, so no acknowledged
//! batch is lost.
//!
//! Entries are appended to segment files (`seg-N.journal`, a new one every
//! [`SEGMENT_BYTES`]); a segment is removed once every batch in it was
//! written to every output. Each entry is framed with its length and a
//! CRC-32, so a start after a power loss finds where the last synced entry
//! ends: a torn entry at a segment's end was never acknowledged and is
//! dropped; a bad entry with more after it is damage, and its segment is
//! left in place and reported.
//!
//! The journal also remembers the ids of batches it has written out (a
//! bounded log, not synced: a power loss forgets the latest, and their
//! segments come back too, so they are written again), so a batch an agent
//! re-sends after the collector restarted is still recognised as a
//! duplicate. Delivery to outputs is at least once: a written-out batch may
//! be written again after a crash, record for record the same, with the same
//! record ids.
//!
//! Recovery streams: [`Journal::recover_next`] reads one entry at a time, so
//! the core takes them only as fast as its hold has room.

pub mod store;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io::{self, BufRead, Read},
    path::Path,
};

use flowattr_model::BatchId;

pub use store::{DirStore, MemoryStore, Store};

/// A segment is sealed, and the next one started, past this many bytes.
pub const SEGMENT_BYTES: u64 = 64 << 20;
const SEGMENT_PREFIX: &str = "seg-";
const SEGMENT_EXT: &str = ".journal";
const EMITTED_LOG: &str = "emitted.log";
/// Length and CRC-32 before every entry.
const FRAME_HEADER: usize = 8;
/// An entry longer than this is damage (a batch frame is at most 64 MiB).
const MAX_ENTRY: usize = 1 << 27;

/// One journaled batch: `ID\tPEER\tCLOCK\n` then `BODY`, where `ID` is the
/// batch id (as [`file_name`] writes it), `PEER` the sender's certificate
/// name, `CLOCK` whether its clock was trusted when the batch arrived
/// (`trusted` or `untrusted`), and `BODY` the batch's frame body as it
/// arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry<'a> {
    pub id: BatchId,
    pub peer: &'a str,
    pub clock_trusted: bool,
    pub body: &'a [u8],
}

impl<'a> JournalEntry<'a> {
    /// Appends the entry's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let clock = if self.clock_trusted {
            "trusted"
        } else {
            "untrusted"
        };
        out.extend_from_slice(
            format!("{}\t{}\t{clock}\n", file_name(&self.id), self.peer).as_bytes(),
        );
        out.extend_from_slice(self.body);
    }

    /// Splits an entry's bytes; `Err` when its header line is not one.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        let newline = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("no header line")?;
        let line = std::str::from_utf8(&bytes[..newline]).map_err(|e| e.to_string())?;
        let mut fields = line.split('\t');
        let (Some(id), Some(peer), Some(clock), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(format!("header line {line:?} is not ID, PEER, CLOCK"));
        };
        let id = parse_name(id).ok_or_else(|| format!("{id:?} is not a batch id"))?;
        Ok(Self {
            id,
            peer,
            clock_trusted: clock == "trusted",
            body: &bytes[newline + 1..],
        })
    }
}

/// One entry read back at start, with the segment it is in.
#[derive(Debug)]
pub struct RecoveredEntry {
    pub segment: u64,
    /// The entry's bytes (parse with [`JournalEntry::parse`]).
    pub bytes: Vec<u8>,
}

/// What a starting collector finds in its journal, read as it is taken.
pub struct Recovery {
    /// Ids of batches already written out, oldest first.
    pub emitted: Vec<BatchId>,
    /// Files that are not the journal's (left in place, reported).
    pub unreadable: Vec<String>,
    /// Segments still to read, oldest first.
    segments: VecDeque<u64>,
    reading: Option<(u64, Box<dyn Read + Send>)>,
    /// Torn entries dropped at segments' ends (never acknowledged).
    pub torn: u64,
    /// Segments with a bad entry before their end: left in place.
    pub damaged: Vec<String>,
}

impl Recovery {
    /// Whether every segment has been read.
    pub fn is_done(&self) -> bool {
        self.segments.is_empty() && self.reading.is_none()
    }
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recovery")
            .field("emitted", &self.emitted.len())
            .field("segments_left", &self.segments.len())
            .finish()
    }
}

#[derive(Debug, Default)]
struct Segment {
    /// Batches in it not yet written out.
    pending: usize,
    /// No more entries will be added (or read back): removable once
    /// nothing is pending.
    sealed: bool,
    /// A bad entry was found in it: never removed.
    damaged: bool,
}

/// The journal of accepted batches.
pub struct Journal {
    store: Box<dyn Store>,
    /// The segment entries are appended to: (number, bytes, unsynced).
    current: Option<(u64, u64, bool)>,
    next_segment: u64,
    segments: BTreeMap<u64, Segment>,
    /// Which segment each pending batch is in.
    location: HashMap<BatchId, u64>,
    emitted_lines: usize,
    remember: usize,
    /// Reused for each entry's frame.
    buffer: Vec<u8>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("segments", &self.segments.len())
            .field("pending", &self.location.len())
            .finish()
    }
}

impl Journal {
    /// Opens (creating) the journal in directory `dir`; see
    /// [`Journal::with_store`].
    pub fn open(dir: &Path, remember: usize) -> io::Result<(Self, Recovery)> {
        Self::with_store(Box::new(DirStore::open(dir)?), remember)
    }

    /// Opens the journal in `store`, remembering up to `remember`
    /// written-out ids, and returns what an earlier run left (its segments
    /// are read with [`Journal::recover_next`]).
    pub fn with_store(mut store: Box<dyn Store>, remember: usize) -> io::Result<(Self, Recovery)> {
        let mut segments = Vec::new();
        let mut unreadable = Vec::new();
        for name in store.names()? {
            if name == EMITTED_LOG || name.ends_with(".tmp") {
                continue;
            }
            match segment_number(&name) {
                Some(n) => segments.push(n),
                None => unreadable.push(name),
            }
        }
        segments.sort_unstable();
        let emitted = read_emitted(store.as_ref(), remember)?;
        store.replace(EMITTED_LOG, &emitted_text(&emitted))?;
        let journal = Self {
            store,
            current: None,
            next_segment: segments.last().map_or(0, |n| n + 1),
            segments: segments.iter().map(|&n| (n, Segment::default())).collect(),
            location: HashMap::new(),
            emitted_lines: emitted.len(),
            remember: remember.max(1),
            buffer: Vec::new(),
        };
        let recovery = Recovery {
            emitted,
            unreadable,
            segments: segments.into(),
            reading: None,
            torn: 0,
            damaged: Vec::new(),
        };
        Ok((journal, recovery))
    }

    /// The next entry an earlier run left, oldest first; `None` when all
    /// were read. The entry's batch counts as pending in its segment until
    /// written out or [`Journal::drop_recovered`]: call one of them for each.
    pub fn recover_next(&mut self, recovery: &mut Recovery) -> Option<RecoveredEntry> {
        loop {
            if recovery.reading.is_none() {
                let n = recovery.segments.pop_front()?;
                match self.store.open(&segment_name(n)) {
                    Ok(reader) => recovery.reading = Some((n, reader)),
                    Err(e) => {
                        tracing::error!(segment = segment_name(n), error = %e, "journal segment unreadable; left in place");
                        self.segment(n).damaged = true;
                        recovery.damaged.push(segment_name(n));
                        self.seal(n);
                        continue;
                    }
                }
            }
            let (n, reader) = recovery.reading.as_mut().expect("set above");
            let n = *n;
            match read_entry(reader.as_mut()) {
                Ok(Some(bytes)) => {
                    // A batch journaled twice (sent again while its first
                    // copy's sync was failing) is replayed once.
                    if let Ok(entry) = JournalEntry::parse(&bytes) {
                        if self.location.contains_key(&entry.id) {
                            continue;
                        }
                        self.location.insert(entry.id, n);
                    }
                    self.segment(n).pending += 1;
                    return Some(RecoveredEntry { segment: n, bytes });
                }
                Ok(None) => {}
                Err(EntryError::Torn) => recovery.torn += 1,
                Err(EntryError::Damaged(why)) => {
                    tracing::error!(
                        segment = segment_name(n),
                        why,
                        "journal segment damaged; what follows the damage is not replayed, and the segment is left in place"
                    );
                    self.segment(n).damaged = true;
                    recovery.damaged.push(segment_name(n));
                }
            }
            recovery.reading = None;
            self.seal(n);
        }
    }

    /// Appends an accepted batch's entry. It is durable, and the batch may
    /// be acknowledged, only once [`Journal::sync`] has returned.
    pub fn append(&mut self, entry: &JournalEntry<'_>) -> io::Result<()> {
        if self
            .current
            .is_some_and(|(_, bytes, _)| bytes >= SEGMENT_BYTES)
        {
            let (n, _, _) = self.current.take().expect("checked");
            self.seal(n);
        }
        let n = match self.current {
            Some((n, _, _)) => n,
            None => {
                let n = self.next_segment;
                self.next_segment += 1;
                self.segments.insert(n, Segment::default());
                self.current = Some((n, 0, false));
                n
            }
        };
        self.buffer.clear();
        self.buffer.extend_from_slice(&[0; FRAME_HEADER]);
        entry.encode(&mut self.buffer);
        let len = (self.buffer.len() - FRAME_HEADER) as u32;
        let crc = crc32fast::hash(&self.buffer[FRAME_HEADER..]);
        self.buffer[..4].copy_from_slice(&len.to_le_bytes());
        self.buffer[4..8].copy_from_slice(&crc.to_le_bytes());
        self.store.append(&segment_name(n), &self.buffer)?;
        let written = self.buffer.len() as u64;
        if let Some((_, bytes, unsynced)) = &mut self.current {
            *bytes += written;
            *unsynced = true;
        }
        self.segment(n).pending += 1;
        self.location.insert(entry.id.clone(), n);
        Ok(())
    }

    /// Makes every entry appended so far durable.
    pub fn sync(&mut self) -> io::Result<()> {
        if let Some((n, _, unsynced @ true)) = &mut self.current {
            self.store.sync(&segment_name(*n))?;
            *unsynced = false;
        }
        Ok(())
    }

    /// Forgets entries whose sync failed (never acknowledged: their senders
    /// send them again) and seals their segment, so later entries go to a
    /// new one.
    pub fn abandon<'a>(&mut self, ids: impl IntoIterator<Item = &'a BatchId>) {
        for id in ids {
            self.release(id);
        }
        if let Some((n, _, true)) = self.current {
            self.current = None;
            self.seal(n);
        }
    }

    /// Drops a recovered entry that will not be replayed: one already
    /// written out (`damaged` false), or one that does not decode
    /// (`damaged`: its segment is then left in place for good).
    pub fn drop_recovered(&mut self, entry: &RecoveredEntry, damaged: bool) {
        if let Ok(parsed) = JournalEntry::parse(&entry.bytes)
            && self.location.get(&parsed.id) == Some(&entry.segment)
        {
            self.location.remove(&parsed.id);
        }
        let s = self.segment(entry.segment);
        s.damaged |= damaged;
        s.pending = s.pending.saturating_sub(1);
    }

    /// Records that these batches were written to every output: their
    /// segments are removed once nothing in them is pending.
    pub fn written_out<'a>(
        &mut self,
        ids: impl IntoIterator<Item = &'a BatchId>,
    ) -> io::Result<()> {
        let mut lines = String::new();
        let mut count = 0;
        for id in ids {
            lines.push_str(&file_name(id));
            lines.push('\n');
            count += 1;
            self.release(id);
        }
        self.store.append(EMITTED_LOG, lines.as_bytes())?;
        self.emitted_lines += count;
        let removable: Vec<u64> = self
            .segments
            .iter()
            .filter(|(n, s)| {
                s.pending == 0 && !s.damaged && (s.sealed || self.is_current_idle(**n))
            })
            .map(|(n, _)| *n)
            .collect();
        for n in removable {
            if self.current.is_some_and(|(c, _, _)| c == n) {
                self.current = None;
            }
            self.segments.remove(&n);
            self.store.remove(&segment_name(n))?;
        }
        if self.emitted_lines > 2 * self.remember {
            let kept = read_emitted(self.store.as_ref(), self.remember)?;
            self.store.replace(EMITTED_LOG, &emitted_text(&kept))?;
            self.emitted_lines = kept.len();
        }
        Ok(())
    }

    /// Batches journaled and not yet written out.
    pub fn pending(&self) -> usize {
        self.segments.values().map(|s| s.pending).sum()
    }

    /// Segment files in use.
    pub fn segments(&self) -> usize {
        self.segments.len()
    }

    /// Whether `n` is the current segment with nothing unsynced: all its
    /// entries are durable and, once none is pending, it may go.
    fn is_current_idle(&self, n: u64) -> bool {
        self.current
            .is_some_and(|(c, _, unsynced)| c == n && !unsynced)
    }

    fn release(&mut self, id: &BatchId) {
        if let Some(n) = self.location.remove(id) {
            let s = self.segment(n);
            s.pending = s.pending.saturating_sub(1);
        }
    }

    fn segment(&mut self, n: u64) -> &mut Segment {
        self.segments.entry(n).or_default()
    }

    fn seal(&mut self, n: u64) {
        let s = self.segment(n);
        s.sealed = true;
        if s.pending == 0 && !s.damaged {
            self.segments.remove(&n);
            if let Err(e) = self.store.remove(&segment_name(n)) {
                tracing::warn!(segment = segment_name(n), error = %e, "could not remove a written-out journal segment");
            }
        }
    }
}

enum EntryError {
    /// Cut short at the segment's end: an append the power loss cut.
    Torn,
    /// Bad, with more after it.
    Damaged(&'static str),
}

/// Reads one framed entry; `Ok(None)` at a clean end.
fn read_entry(reader: &mut dyn Read) -> Result<Option<Vec<u8>>, EntryError> {
    let mut header = [0u8; FRAME_HEADER];
    match read_full(reader, &mut header) {
        0 => return Ok(None),
        FRAME_HEADER => {}
        _ => return Err(EntryError::Torn),
    }
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len > MAX_ENTRY {
        return Err(more_after(reader, "entry length out of bounds"));
    }
    let mut bytes = vec![0; len];
    if read_full(reader, &mut bytes) < len {
        return Err(EntryError::Torn);
    }
    if crc32fast::hash(&bytes) != crc {
        return Err(more_after(reader, "entry checksum mismatch"));
    }
    Ok(Some(bytes))
}

/// A bad entry at the very end is torn; with bytes after it, damage.
fn more_after(reader: &mut dyn Read, why: &'static str) -> EntryError {
    let mut probe = [0u8; 1];
    if read_full(reader, &mut probe) == 0 {
        EntryError::Torn
    } else {
        EntryError::Damaged(why)
    }
}

/// Reads until `buf` is full or the stream ends; how many bytes were read.
fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    got
}

fn read_emitted(store: &dyn Store, remember: usize) -> io::Result<Vec<BatchId>> {
    let reader = match store.open(EMITTED_LOG) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut kept = VecDeque::new();
    for line in io::BufReader::new(reader).lines() {
        if let Some(id) = parse_name(line?.trim()) {
            if kept.len() == remember.max(1) {
                kept.pop_front();
            }
            kept.push_back(id);
        }
    }
    Ok(kept.into())
}

fn emitted_text(ids: &[BatchId]) -> Vec<u8> {
    ids.iter()
        .map(|id| format!("{}\n", file_name(id)))
        .collect::<String>()
        .into_bytes()
}

fn segment_name(n: u64) -> String {
    format!("{SEGMENT_PREFIX}{n:020}{SEGMENT_EXT}")
}

fn segment_number(name: &str) -> Option<u64> {
    name.strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_EXT)?
        .parse()
        .ok()
}

/// `AGENT-HEX.INCARNATION.SEQ`: the agent's name in hex, so any name is
/// safe in a file name or a tab-separated line.
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
mod tests;
