//! The on-disk compile cache: compiled components under
//! `DIR/ENGINE/SHA256.cwasm`, where `ENGINE` names the engine's compatibility
//! hash (wasmtime version and settings) and `SHA256` the component's content.
//!
//! Without pruning it would only grow: every plugin version ever loaded, and
//! every wasmtime version's compilations of them, stay on disk. So an entry
//! a runtime loads or writes is marked used (its modification time is set to
//! now), and when a runtime opens the cache or writes a new entry, entries of
//! any engine unused for [`MAX_UNUSED`] are removed, with write leftovers of
//! a crashed process and engine directories left empty. Files the cache did
//! not write are never touched.
//!
//! Entries are native code run without further checks, so the cache is used
//! only when its directory and this engine's directory are owned by this
//! process's user and writable by no one else; each entry starts with the
//! SHA-256 of the bytes after it, checked before they are deserialized (an
//! entry that fails is removed and compiled afresh).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::trust::{Owners, check_path};

/// The start of every entry, followed by the payload's SHA-256.
const MAGIC: &[u8] = b"flowattr-cwasm1\n";

/// What [`CompileCache::load`] found.
pub(crate) enum Loaded {
    Hit(Component),
    Missing,
    /// An entry that failed its check or could not be deserialized (removed).
    Rejected,
}

/// An entry: magic, SHA-256 of the payload, the payload.
fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 32 + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&Sha256::digest(payload));
    out.extend_from_slice(payload);
    out
}

/// The payload of an entry whose hash matches.
fn unseal(entry: &[u8]) -> Option<&[u8]> {
    let rest = entry.strip_prefix(MAGIC)?;
    let (hash, payload) = rest.split_at_checked(32)?;
    (Sha256::digest(payload).as_slice() == hash).then_some(payload)
}

/// How long an entry may go unused before it is removed: long enough that a
/// plugin rolled back within a fortnight still loads without compiling.
pub const MAX_UNUSED: Duration = Duration::from_secs(14 * 24 * 3600);

/// How old an unfinished write must be before it counts as a crash's leftover.
const ABANDONED_WRITE: Duration = Duration::from_secs(3600);

/// One runtime's view of a cache directory.
pub(crate) struct CompileCache {
    root: PathBuf,
    /// `root/ENGINE` for this runtime's engine.
    dir: PathBuf,
}

/// What a file in an engine directory is, by its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    /// `SHA256.cwasm`: a compiled component.
    Compiled,
    /// `.SHA256.cwasm.tmp-PID`: a write in progress, or a crash's leftover.
    Unfinished,
    /// Anything else: not the cache's, left alone.
    Foreign,
}

fn kind_of(name: &str) -> EntryKind {
    if name.starts_with('.') && name.contains(".cwasm.tmp-") {
        EntryKind::Unfinished
    } else if !name.starts_with('.') && name.ends_with(".cwasm") {
        EntryKind::Compiled
    } else {
        EntryKind::Foreign
    }
}

/// Whether the file `name`, last modified at `modified`, goes at `now`. A
/// modification time in the future (a clock that stepped back) counts as
/// recent.
fn is_stale(name: &str, modified: SystemTime, now: SystemTime) -> bool {
    let age = now.duration_since(modified).unwrap_or_default();
    match kind_of(name) {
        EntryKind::Compiled => age > MAX_UNUSED,
        EntryKind::Unfinished => age > ABANDONED_WRITE,
        EntryKind::Foreign => false,
    }
}

impl CompileCache {
    /// Creates `root` and this engine's directory if needed and prunes them;
    /// `None` (with a warning) when either is owned by another user or
    /// writable by others: then every load compiles.
    pub fn open(root: &Path, engine: &Engine) -> anyhow::Result<Option<Self>> {
        let mut h = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let cache = Self {
            root: root.to_owned(),
            dir: root.join(format!("{:016x}", h.finish())),
        };
        std::fs::create_dir_all(&cache.dir)
            .with_context(|| format!("cannot create the compile cache {}", root.display()))?;
        for dir in [&cache.root, &cache.dir] {
            if let Err(why) = check_path(dir, Owners::Me) {
                tracing::warn!(
                    cache = %dir.display(),
                    "Not using the compile cache: it {why}. Plugins are compiled on every load."
                );
                return Ok(None);
            }
        }
        cache.prune(SystemTime::now());
        Ok(Some(cache))
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.cwasm"))
    }

    /// The compiled component with content hash `sha256`, if cached; marks
    /// the entry used. An entry that fails its hash or cannot be
    /// deserialized is logged and removed.
    pub fn load(&self, engine: &Engine, sha256: &str) -> Loaded {
        let path = self.path(sha256);
        let entry = match std::fs::read(&path) {
            Ok(entry) => entry,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "Cannot read a compile-cache entry; compiling instead.");
                return Loaded::Missing;
            }
        };
        let loaded = match unseal(&entry) {
            None => Err("its content does not match its hash".to_owned()),
            // SAFETY: the bytes are what `Component::serialize` of an engine
            // with the same compatibility hash (it is in the path) produced:
            // their hash matches the one written with them, in directories
            // only this user can write.
            Some(payload) => {
                unsafe { Component::deserialize(engine, payload) }.map_err(|e| e.to_string())
            }
        };
        match loaded {
            Ok(component) => {
                mark_used(&path);
                Loaded::Hit(component)
            }
            Err(problem) => {
                tracing::warn!(path = %path.display(), %problem, "Removed a bad compile-cache entry; compiling instead.");
                let _ = std::fs::remove_file(&path);
                Loaded::Rejected
            }
        }
    }

    /// Stores a newly compiled component, then prunes: the cache only grows
    /// here. A failure is logged; the caller carries on without the cache.
    pub fn store(&self, sha256: &str, component: &Component) {
        let path = self.path(sha256);
        let written = component
            .serialize()
            .map_err(anyhow::Error::from)
            .and_then(|bytes| write_atomically(&path, &seal(&bytes)).map_err(anyhow::Error::from));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "Could not write the compile cache; carrying on without it.");
        }
        self.prune(SystemTime::now());
    }

    /// Removes what [`is_stale`] says goes, in every engine's directory, and
    /// engine directories left empty. Errors are logged and skipped: another
    /// process may be pruning the same directory.
    fn prune(&self, now: SystemTime) {
        let Ok(engines) = std::fs::read_dir(&self.root) else {
            return;
        };
        let mut removed = 0;
        for engine_dir in engines.flatten() {
            if !engine_dir.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            removed += prune_engine_dir(&engine_dir.path(), now);
            if engine_dir.path() != self.dir {
                // Only succeeds when empty.
                let _ = std::fs::remove_dir(engine_dir.path());
            }
        }
        if removed > 0 {
            tracing::info!(
                cache = %self.root.display(),
                removed,
                "Pruned compile-cache entries unused for {} days.",
                MAX_UNUSED.as_secs() / 86_400
            );
        }
    }
}

/// Removes the stale files of one engine's directory; returns how many.
fn prune_engine_dir(dir: &Path, now: SystemTime) -> usize {
    let Ok(files) = std::fs::read_dir(dir) else {
        return 0;
    };
    files
        .flatten()
        .filter(|file| {
            file.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|modified| is_stale(&file.file_name().to_string_lossy(), modified, now))
        })
        .filter(|file| {
            std::fs::remove_file(file.path())
                .inspect_err(|e| tracing::debug!(path = %file.path().display(), error = %e, "Could not prune a compile-cache entry."))
                .is_ok()
        })
        .count()
}

/// Sets the entry's modification time to now, so pruning keeps it.
fn mark_used(path: &Path) {
    let touched = std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = touched {
        tracing::debug!(path = %path.display(), error = %e, "Could not mark a compile-cache entry used.");
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache paths have a parent");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn an_entry_opens_only_with_its_hash_intact() {
        let entry = seal(b"native code");
        assert_eq!(unseal(&entry), Some(&b"native code"[..]));
        let mut flipped = entry.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(unseal(&flipped), None);
        assert_eq!(unseal(&entry[..MAGIC.len() + 10]), None);
        assert_eq!(unseal(b"native code without a header"), None);
    }

    #[test]
    fn only_the_caches_own_files_are_judged_and_only_by_age() {
        let now = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let ago = |d: Duration| now - d;
        let entry = "0123abcd.cwasm";
        assert!(!is_stale(entry, ago(MAX_UNUSED), now));
        assert!(is_stale(entry, ago(MAX_UNUSED + DAY), now));
        // A clock that stepped back does not make an entry look old.
        assert!(!is_stale(entry, now + DAY, now));

        let unfinished = ".0123abcd.cwasm.tmp-4242";
        assert!(!is_stale(unfinished, ago(ABANDONED_WRITE / 2), now));
        assert!(is_stale(unfinished, ago(2 * ABANDONED_WRITE), now));

        for foreign in ["notes.txt", ".hidden.cwasm", "0123abcd.cwasm.bak", "README"] {
            assert_eq!(kind_of(foreign), EntryKind::Foreign, "{foreign}");
            assert!(!is_stale(foreign, ago(1000 * DAY), now), "{foreign}");
        }
    }
}
