//! An append-only file written around the page cache where the filesystem
//! allows it.
//!
//! A collector streams gigabytes of output an hour that nobody reads back
//! soon. Written the usual way, every byte is first copied into freshly
//! allocated page-cache pages, which was a third of the collector's core
//! thread in the JSON benchmark (on this VM, fresh pages cost a host fault
//! each). With `O_DIRECT` the device reads the bytes straight from a reused,
//! block-aligned staging buffer instead.
//!
//! Direct writes must cover whole blocks at block-aligned offsets, so each
//! append writes the whole blocks it completes directly, then writes the
//! unfinished last block through an ordinary descriptor of the same file:
//! when [`AppendFile::append`] returns, every byte is in the kernel, and a
//! collector killed just after loses nothing. The next append rewrites that
//! block directly, with the new bytes after it (the kernel writes back and
//! drops its cached copy first). Where `O_DIRECT` is refused (tmpfs, some
//! network filesystems), every write goes through the ordinary descriptor.

use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::{FileExt, OpenOptionsExt},
    path::Path,
};

/// Block size and alignment of direct writes: a multiple of every common
/// logical block size (512 and 4,096 bytes).
const BLOCK: usize = 4096;
/// Bytes staged before they are written directly: large writes, few calls.
const STAGING: usize = 4 << 20;

/// A file that bytes are appended to. See the module documentation.
pub struct AppendFile {
    /// The file opened with `O_DIRECT`; `None` where that is not allowed.
    direct: Option<File>,
    /// The same file, written through the page cache.
    buffered: File,
    /// Room for `STAGING` bytes at a block-aligned address, with slack to
    /// find one.
    staging: Vec<u8>,
    /// Where the aligned window starts in `staging`.
    window: usize,
    /// Bytes in the window not yet written directly (always less than a
    /// block between appends: the unfinished last block).
    len: usize,
    /// File offset of the window's first byte (block-aligned).
    base: u64,
}

impl AppendFile {
    /// Creates `path` (which must not exist) for appending.
    pub fn create(path: &Path) -> io::Result<Self> {
        let buffered = OpenOptions::new().write(true).create_new(true).open(path)?;
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok();
        let staging = vec![0u8; STAGING + BLOCK];
        let window = staging.as_ptr().align_offset(BLOCK);
        Ok(Self {
            direct,
            buffered,
            staging,
            window,
            len: 0,
            base: 0,
        })
    }

    /// Makes everything appended durable (`fdatasync`: the page-cache tail
    /// and the file's size; direct writes bypassed the cache already).
    pub fn sync(&self) -> io::Result<()> {
        self.buffered.sync_data()
    }

    /// Whether whole blocks are written around the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Appends `bytes`. On error nothing of them was appended: the file is
    /// cut back to where it ended, so the caller may try again.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        let (base, len) = (self.base, self.len);
        let mut tail = [0u8; BLOCK];
        tail[..len].copy_from_slice(&self.staged()[..len]);
        self.write_all(bytes).inspect_err(|_| {
            // Back to the state before: the unfinished block as it was, and
            // the file no longer than it was.
            self.base = base;
            self.len = len;
            let w = self.window;
            self.staging[w..w + len].copy_from_slice(&tail[..len]);
            let _ = self.buffered.set_len(base + len as u64);
        })
    }

    fn staged(&self) -> &[u8] {
        &self.staging[self.window..self.window + STAGING]
    }

    fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let n = bytes.len().min(STAGING - self.len);
            let at = self.window + self.len;
            self.staging[at..at + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
            if self.len == STAGING {
                self.write_blocks(STAGING)?;
            }
        }
        let whole = self.len / BLOCK * BLOCK;
        if whole > 0 {
            self.write_blocks(whole)?;
        }
        if self.len > 0 {
            let (w, len) = (self.window, self.len);
            self.buffered
                .write_all_at(&self.staging[w..w + len], self.base)?;
        }
        Ok(())
    }

    /// Writes the window's first `n` bytes (whole blocks) and moves what
    /// follows them to the window's start.
    fn write_blocks(&mut self, n: usize) -> io::Result<()> {
        let (w, base) = (self.window, self.base);
        let blocks = &self.staging[w..w + n];
        match &self.direct {
            Some(direct) => match direct.write_all_at(blocks, base) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // The device wants another alignment: stop trying.
                    tracing::warn!(error = %e, "Direct writes refused; writing through the page cache.");
                    self.direct = None;
                    self.buffered.write_all_at(blocks, base)?;
                }
                result => result?,
            },
            None => self.buffered.write_all_at(blocks, base)?,
        }
        self.base += n as u64;
        self.staging.copy_within(w + n..w + self.len, w);
        self.len -= n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    /// Appends of every awkward size: below a block, across blocks, exactly
    /// a block, across the staging window, empty. After each, the file holds
    /// exactly everything appended so far, written directly or not.
    #[test]
    fn the_file_always_holds_exactly_what_was_appended() {
        let dir = tempfile::tempdir().unwrap();
        for direct in [true, false] {
            let path = dir.path().join(format!("out-{direct}"));
            let mut file = AppendFile::create(&path).unwrap();
            assert!(
                file.is_direct(),
                "{} does not take O_DIRECT: run the tests on ext4 or xfs, not tmpfs",
                dir.path().display()
            );
            if !direct {
                file.direct = None;
            }
            let mut want = Vec::new();
            let sizes = [
                10,
                4086,
                1,
                BLOCK,
                0,
                3 * BLOCK + 7,
                STAGING + 5,
                2 * STAGING,
                100,
            ];
            for (i, n) in sizes.into_iter().enumerate() {
                let chunk = bytes(n, i as u8);
                file.append(&chunk).unwrap();
                want.extend_from_slice(&chunk);
                assert!(
                    std::fs::read(&path).unwrap() == want,
                    "append {i}, direct {direct}"
                );
            }
        }
    }

    #[test]
    fn a_failed_append_takes_nothing_and_the_next_one_follows_the_last_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        let mut file = AppendFile::create(&path).unwrap();
        let first = bytes(BLOCK + 904, 1);
        file.append(&first).unwrap();
        // Writes through a read-only descriptor fail (EBADF) after part of
        // the chunk has been staged.
        let working = file.direct.replace(File::open(&path).unwrap());
        assert!(file.append(&bytes(10_000, 2)).is_err());
        assert!(std::fs::read(&path).unwrap() == first);
        file.direct = working;
        let next = bytes(300, 3);
        file.append(&next).unwrap();
        assert!(std::fs::read(&path).unwrap() == [first, next].concat());
    }

    #[test]
    fn an_existing_file_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out");
        std::fs::write(&path, "kept").unwrap();
        assert!(AppendFile::create(&path).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "kept");
    }
}
