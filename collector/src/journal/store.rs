//! Where the journal's files live: a directory ([`DirStore`]), or memory
//! ([`MemoryStore`], for the simulator and for tests that cut the power).
//!
//! The journal needs few operations, and each says what is durable after
//! it: [`Store::sync`] is the only promise that bytes survive a power loss.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fs,
    io::{self, Read, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

/// Named append-only files.
pub trait Store: Send {
    /// The names of the files there, in no order.
    fn names(&self) -> io::Result<Vec<String>>;
    /// Reads a file from its start, streaming.
    fn open(&self, name: &str) -> io::Result<Box<dyn Read + Send>>;
    /// Appends to a file, creating it when missing. In the process's hands
    /// when it returns (it survives a kill), not yet durable.
    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Makes what was appended to `name`, and its existence, durable.
    fn sync(&mut self, name: &str) -> io::Result<()>;
    /// Replaces a file's content at once (write aside, sync, rename).
    fn replace(&mut self, name: &str, bytes: &[u8]) -> io::Result<()>;
    /// Removes a file (durably only once a later sync or replace happened;
    /// a removal lost to a power loss replays what was already written out,
    /// which at-least-once delivery allows).
    fn remove(&mut self, name: &str) -> io::Result<()>;
}

/// A directory on disk. Appends keep the file open; [`Store::sync`] is
/// `fdatasync` of the file, and `fsync` of the directory when the file was
/// created since the directory was last synced.
pub struct DirStore {
    dir: PathBuf,
    open: HashMap<String, fs::File>,
    /// Files created since the directory was last synced.
    unsynced_entries: HashSet<String>,
}

impl DirStore {
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            open: HashMap::new(),
            unsynced_entries: HashSet::new(),
        })
    }

    fn sync_dir(&mut self) -> io::Result<()> {
        fs::File::open(&self.dir)?.sync_all()?;
        self.unsynced_entries.clear();
        Ok(())
    }
}

impl Store for DirStore {
    fn names(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file()
                && let Some(name) = entry.file_name().to_str()
            {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn Read + Send>> {
        Ok(Box::new(io::BufReader::with_capacity(
            1 << 20,
            fs::File::open(self.dir.join(name))?,
        )))
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        if !self.open.contains_key(name) {
            let path = self.dir.join(name);
            let created = !path.exists();
            let file = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            if created {
                self.unsynced_entries.insert(name.to_owned());
            }
            self.open.insert(name.to_owned(), file);
        }
        self.open
            .get_mut(name)
            .expect("opened above")
            .write_all(bytes)
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        if let Some(file) = self.open.get(name) {
            file.sync_data()?;
        }
        if self.unsynced_entries.contains(name) {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn replace(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.open.remove(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(bytes)?;
            file.sync_data()?;
        }
        fs::rename(&tmp, self.dir.join(name))?;
        self.sync_dir()
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.open.remove(name);
        self.unsynced_entries.remove(name);
        match fs::remove_file(self.dir.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Files in memory, shared by clones (a restarted simulated collector finds
/// what the last one left). [`MemoryStore::power_loss`] keeps only what was
/// synced: what a machine that lost its power would find on its disk.
#[derive(Clone, Default)]
pub struct MemoryStore {
    files: Arc<Mutex<BTreeMap<String, MemoryFile>>>,
}

#[derive(Clone, Default)]
struct MemoryFile {
    bytes: Vec<u8>,
    /// How much of `bytes` is durable; `None`: the file itself is not.
    synced: Option<usize>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// What survives a power loss now: the synced bytes of synced files.
    /// Removals count as durable at once, the stricter choice for a test of
    /// acknowledgements: a removed file never comes back to hide a loss.
    pub fn power_loss(&self) -> MemoryStore {
        let files = self.lock();
        let kept = files
            .iter()
            .filter_map(|(name, f)| {
                let synced = f.synced?;
                Some((
                    name.clone(),
                    MemoryFile {
                        bytes: f.bytes[..synced].to_vec(),
                        synced: Some(synced),
                    },
                ))
            })
            .collect();
        MemoryStore {
            files: Arc::new(Mutex::new(kept)),
        }
    }

    /// Bytes held, synced or not.
    pub fn bytes(&self) -> usize {
        self.lock().values().map(|f| f.bytes.len()).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, MemoryFile>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemoryStore {
    fn names(&self) -> io::Result<Vec<String>> {
        Ok(self.lock().keys().cloned().collect())
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn Read + Send>> {
        let bytes = self
            .lock()
            .get(name)
            .map(|f| f.bytes.clone())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, name.to_owned()))?;
        Ok(Box::new(io::Cursor::new(bytes)))
    }

    fn append(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.lock()
            .entry(name.to_owned())
            .or_default()
            .bytes
            .extend_from_slice(bytes);
        Ok(())
    }

    fn sync(&mut self, name: &str) -> io::Result<()> {
        if let Some(f) = self.lock().get_mut(name) {
            f.synced = Some(f.bytes.len());
        }
        Ok(())
    }

    fn replace(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.lock().insert(
            name.to_owned(),
            MemoryFile {
                bytes: bytes.to_vec(),
                synced: Some(bytes.len()),
            },
        );
        Ok(())
    }

    fn remove(&mut self, name: &str) -> io::Result<()> {
        self.lock().remove(name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(store: &dyn Store, name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        store.open(name).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn a_power_loss_keeps_only_what_was_synced() {
        let mut s = MemoryStore::new();
        s.append("a", b"one").unwrap();
        s.sync("a").unwrap();
        s.append("a", b"two").unwrap();
        s.append("b", b"never synced").unwrap();
        s.replace("c", b"replaced").unwrap();
        let after = s.power_loss();
        let mut names = after.names().unwrap();
        names.sort();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(read(&after, "a"), b"one");
        assert_eq!(read(&s, "a"), b"onetwo", "the running process sees all");
    }

    #[test]
    fn a_directory_store_appends_syncs_replaces_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = DirStore::open(dir.path()).unwrap();
        s.append("seg", b"ab").unwrap();
        s.append("seg", b"cd").unwrap();
        s.sync("seg").unwrap();
        assert!(s.unsynced_entries.is_empty());
        s.replace("log", b"x").unwrap();
        let mut names = s.names().unwrap();
        names.sort();
        assert_eq!(names, ["log", "seg"]);
        assert_eq!(read(&s, "seg"), b"abcd");
        s.remove("seg").unwrap();
        s.remove("seg").unwrap();
        assert_eq!(s.names().unwrap(), ["log"]);
    }
}
