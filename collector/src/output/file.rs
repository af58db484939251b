//! Rotating files: chunks are appended to `DIR/PREFIX-<start>.<ext>`, and a
//! new file is started when the current one reaches its size or age bound,
//! or for every chunk where each chunk is a whole file (Parquet: a file
//! needs its footer, so chunks cannot be appended).
//! Only the newest `keep_files` are kept. Each chunk is in the kernel when
//! its write returns, mostly written around the page cache ([`AppendFile`]);
//! [`Output::commit`] syncs the file (and the directory, for a new file),
//! and only then are its chunks durable. A failed sync may have lost any
//! page since the last good one, so the file is closed and its unsynced
//! chunks are written again to a new file.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::append::AppendFile;
use super::{Output, Progress};

/// Where and how files rotate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOutputConfig {
    pub dir: PathBuf,
    pub prefix: String,
    /// File extension, such as `jsonl`.
    pub extension: String,
    pub rotate_bytes: u64,
    pub rotate_after: Duration,
    /// Files kept, the newest; older ones are deleted. 0 keeps all.
    pub keep_files: usize,
    /// Every chunk to a file of its own (a sink writing whole files).
    pub file_per_chunk: bool,
}

/// An [`Output`] to rotating files.
pub struct FileOutput {
    config: FileOutputConfig,
    name: String,
    current: Option<Current>,
    serial: u64,
    /// One past the last chunk taken, and one past the last synced.
    taken_below: u64,
    synced_below: u64,
    /// A file was created since the directory was last synced.
    dir_unsynced: bool,
}

struct Current {
    file: AppendFile,
    bytes: u64,
    opened: Instant,
}

impl FileOutput {
    pub fn new(config: FileOutputConfig) -> io::Result<Self> {
        fs::create_dir_all(&config.dir)?;
        Ok(Self {
            name: format!("file:{}", config.dir.display()),
            config,
            current: None,
            serial: 0,
            taken_below: 0,
            synced_below: 0,
            dir_unsynced: false,
        })
    }

    /// Syncs the current file and, after a new file, the directory.
    fn sync(&mut self) -> io::Result<()> {
        if self.synced_below == self.taken_below && !self.dir_unsynced {
            return Ok(());
        }
        if let Some(current) = &self.current {
            current.file.sync()?;
        }
        if self.dir_unsynced {
            fs::File::open(&self.config.dir)?.sync_all()?;
            self.dir_unsynced = false;
        }
        self.synced_below = self.taken_below;
        Ok(())
    }

    fn rotate_if_due(&mut self) -> io::Result<()> {
        let due = self.current.as_ref().is_some_and(|c| {
            c.bytes >= self.config.rotate_bytes
                || c.opened.elapsed() >= self.config.rotate_after
                || (self.config.file_per_chunk && c.bytes > 0)
        });
        if due {
            // The old file's chunks are durable before it is left.
            self.sync()?;
            self.current = None;
        }
        if self.current.is_none() {
            let path = self.next_path();
            let file = AppendFile::create(&path)?;
            if !file.is_direct() {
                tracing::info!(path = %path.display(), "The filesystem refuses direct writes; writing through the page cache.");
            }
            self.current = Some(Current {
                file,
                bytes: 0,
                opened: Instant::now(),
            });
            self.dir_unsynced = true;
            self.prune()?;
        }
        Ok(())
    }

    fn next_path(&mut self) -> PathBuf {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        self.serial += 1;
        self.config.dir.join(format!(
            "{}-{}-{:04}.{}",
            self.config.prefix,
            now.as_millis(),
            self.serial,
            self.config.extension
        ))
    }

    /// Deletes the oldest files beyond `keep_files`.
    fn prune(&self) -> io::Result<()> {
        if self.config.keep_files == 0 {
            return Ok(());
        }
        let mut files = files_of(
            &self.config.dir,
            &self.config.prefix,
            &self.config.extension,
        )?;
        files.sort();
        let excess = files.len().saturating_sub(self.config.keep_files);
        for old in &files[..excess] {
            fs::remove_file(old)?;
        }
        Ok(())
    }
}

/// The output files in `dir`, by name (which sorts by creation).
pub fn files_of(dir: &Path, prefix: &str, extension: &str) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(&format!("{prefix}-")) && name.ends_with(&format!(".{extension}")) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

impl Output for FileOutput {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, seq: u64, chunk: &[u8]) -> io::Result<()> {
        self.rotate_if_due()?;
        let current = self.current.as_mut().expect("opened above");
        current.file.append(chunk)?;
        current.bytes += chunk.len() as u64;
        self.taken_below = seq + 1;
        Ok(())
    }

    fn commit(&mut self) -> io::Result<Progress> {
        let resend_from = match self.sync() {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(output = self.name, error = %e, "sync failed; the file is closed and its unsynced chunks are written again to a new one");
                self.current = None;
                Some(self.synced_below)
            }
        };
        Ok(Progress {
            durable_below: self.synced_below,
            resend_from,
        })
    }
}

/// An [`Output`] to standard output.
#[derive(Default)]
pub struct StdoutOutput {
    taken_below: u64,
}

impl Output for StdoutOutput {
    fn name(&self) -> &str {
        "stdout"
    }

    fn write(&mut self, seq: u64, chunk: &[u8]) -> io::Result<()> {
        io::stdout().lock().write_all(chunk)?;
        self.taken_below = seq + 1;
        Ok(())
    }

    /// Flushed is as far as standard output goes.
    fn commit(&mut self) -> io::Result<Progress> {
        io::stdout().lock().flush()?;
        Ok(Progress {
            durable_below: self.taken_below,
            resend_from: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = FileOutput::new(FileOutputConfig {
            dir: dir.path().to_owned(),
            prefix: "flows".into(),
            extension: "jsonl".into(),
            rotate_bytes: 10,
            rotate_after: Duration::from_secs(3600),
            keep_files: 2,
            file_per_chunk: false,
        })
        .unwrap();
        for i in 0..5 {
            out.write(i, format!("line-{i:04}\n").as_bytes()).unwrap();
        }
        assert_eq!(
            out.commit().unwrap(),
            Progress {
                durable_below: 5,
                resend_from: None
            }
        );
        let files = files_of(dir.path(), "flows", "jsonl").unwrap();
        assert_eq!(files.len(), 2);
        let text: Vec<String> = files
            .iter()
            .map(|f| fs::read_to_string(f).unwrap())
            .collect();
        assert_eq!(text, vec!["line-0003\n", "line-0004\n"]);
    }

    #[test]
    fn a_file_per_chunk_holds_each_chunk_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = FileOutput::new(FileOutputConfig {
            dir: dir.path().to_owned(),
            prefix: "flows".into(),
            extension: "parquet".into(),
            rotate_bytes: 1 << 30,
            rotate_after: Duration::from_secs(3600),
            keep_files: 0,
            file_per_chunk: true,
        })
        .unwrap();
        for i in 0..3 {
            out.write(i, format!("PAR1 chunk {i} PAR1").as_bytes())
                .unwrap();
        }
        assert_eq!(out.commit().unwrap().durable_below, 3);
        let text: Vec<String> = files_of(dir.path(), "flows", "parquet")
            .unwrap()
            .iter()
            .map(|f| fs::read_to_string(f).unwrap())
            .collect();
        assert_eq!(
            text,
            [
                "PAR1 chunk 0 PAR1",
                "PAR1 chunk 1 PAR1",
                "PAR1 chunk 2 PAR1"
            ]
        );
    }
}
