//! Keeps one source file loaded and knows until when it was verified current.
//!
//! The plugin calls [`WatchedFile::refresh`] once per batch with the batch's
//! newest query time. Only when that time is past what was last verified does
//! it touch the file: it opens it and compares its modification time and
//! length with those of the content it holds, re-reads and re-parses it when
//! they differ, and then counts the file as verified up to the host's `now`.
//!
//! A file that cannot be read or parsed replaces what was held: the plugin
//! answers `source-unavailable` rather than from an identity that may be stale.
//! Each distinct failure is logged once, not once per batch.

use std::path::PathBuf;
use std::time::SystemTime;

/// Content a [`WatchedFile`] can hold.
pub trait Source: Sized {
    /// What the file is, for log lines ("IPMan state file").
    const WHAT: &'static str;

    /// Parses and validates the file's bytes; the error says what is wrong.
    fn parse(bytes: &[u8]) -> Result<Self, String>;

    /// A short description of loaded content, for the log.
    fn summary(&self) -> String;
}

/// What identifies one version of the file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
}

/// A source file, its parsed content (or why there is none) and the instant up
/// to which that was checked.
#[derive(Debug)]
pub struct WatchedFile<T> {
    path: PathBuf,
    /// Fingerprint of the version `content` was parsed from; `None` when the
    /// file could not be opened.
    fingerprint: Option<Fingerprint>,
    content: Result<T, String>,
    /// Exclusive end of the verified period: the file was current at every
    /// instant before this (the last check's `now`, plus one).
    verified_until_ns: u64,
    /// The failure last logged, so each distinct failure is logged once.
    logged_failure: Option<String>,
}

impl<T: Source> WatchedFile<T> {
    /// Loads `path` now. A missing or bad file is not an error here: the file
    /// may appear or be fixed later, and is checked again when a query needs it.
    pub fn open(path: impl Into<PathBuf>, now_ns: u64) -> Self {
        let mut file = Self {
            path: path.into(),
            fingerprint: None,
            content: Err("not read yet".into()),
            verified_until_ns: 0,
            logged_failure: None,
        };
        file.check(now_ns);
        file
    }

    /// Checks the file again if `newest_query_ns` is past the verified period;
    /// `now_ns` is only called then.
    pub fn refresh(&mut self, newest_query_ns: u64, now_ns: impl FnOnce() -> u64) {
        if newest_query_ns >= self.verified_until_ns {
            self.check(now_ns());
        }
    }

    /// The parsed content, or why there is none.
    pub fn content(&self) -> Result<&T, &str> {
        self.content.as_ref().map_err(String::as_str)
    }

    /// Exclusive end of the period the content is known to be current for.
    pub fn verified_until_ns(&self) -> u64 {
        self.verified_until_ns
    }

    fn check(&mut self, now_ns: u64) {
        match self.read_if_changed() {
            Ok(None) => {}
            Ok(Some((fingerprint, bytes))) => {
                self.fingerprint = Some(fingerprint);
                self.content = T::parse(&bytes)
                    .map_err(|e| format!("{} {} is refused: {e}", T::WHAT, self.path.display()));
                self.report();
            }
            Err(e) => {
                self.fingerprint = None;
                self.content = Err(e);
                self.report();
            }
        }
        self.verified_until_ns = now_ns.saturating_add(1);
    }

    /// The file's fingerprint and bytes if it differs from the held version;
    /// `None` if unchanged.
    fn read_if_changed(&self) -> Result<Option<(Fingerprint, Vec<u8>)>, String> {
        let cannot =
            |e: std::io::Error| format!("cannot read {} {}: {e}", T::WHAT, self.path.display());
        // One stat by path (a single host call) in the common, unchanged case.
        // If a writer renames a new version in between the stat and the read,
        // the bytes are newer than the fingerprint, so the next check sees a
        // different fingerprint and reads again: it converges, never sticks.
        let meta = std::fs::metadata(&self.path).map_err(cannot)?;
        let fingerprint = Fingerprint {
            modified: meta.modified().ok(),
            len: meta.len(),
        };
        if self.fingerprint == Some(fingerprint) {
            return Ok(None);
        }
        let bytes = std::fs::read(&self.path).map_err(cannot)?;
        Ok(Some((fingerprint, bytes)))
    }

    fn report(&mut self) {
        match &self.content {
            Ok(content) => {
                self.logged_failure = None;
                log::info!(
                    "Loaded {} {}: {}.",
                    T::WHAT,
                    self.path.display(),
                    content.summary()
                );
            }
            Err(e) if self.logged_failure.as_deref() != Some(e.as_str()) => {
                log::error!("{e}. Every answer is source-unavailable until it is fixed.");
                self.logged_failure = Some(e.clone());
            }
            Err(_) => {}
        }
    }
}
