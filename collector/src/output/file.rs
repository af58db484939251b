//! Rotating files: chunks are appended to `DIR/PREFIX-<start>.<ext>`, and a
//! new file is started when the current one reaches its size or age bound.
//! Only the newest `keep_files` are kept. Each chunk is in the kernel when
//! its write returns, mostly written around the page cache ([`AppendFile`]).

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use super::Output;
use super::append::AppendFile;

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
}

/// An [`Output`] to rotating files.
pub struct FileOutput {
    config: FileOutputConfig,
    name: String,
    current: Option<Current>,
    serial: u64,
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
        })
    }

    fn rotate_if_due(&mut self) -> io::Result<()> {
        let due = self.current.as_ref().is_some_and(|c| {
            c.bytes >= self.config.rotate_bytes || c.opened.elapsed() >= self.config.rotate_after
        });
        if due {
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

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.rotate_if_due()?;
        let current = self.current.as_mut().expect("opened above");
        current.file.append(chunk)?;
        current.bytes += chunk.len() as u64;
        Ok(())
    }

    /// Nothing to do: every chunk is in the kernel once `write` returns.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An [`Output`] to standard output.
pub struct StdoutOutput;

impl Output for StdoutOutput {
    fn name(&self) -> &str {
        "stdout"
    }

    fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        io::stdout().lock().write_all(chunk)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().lock().flush()
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
        })
        .unwrap();
        for i in 0..5 {
            out.write(format!("line-{i:04}\n").as_bytes()).unwrap();
        }
        out.flush().unwrap();
        let files = files_of(dir.path(), "flows", "jsonl").unwrap();
        assert_eq!(files.len(), 2);
        let text: Vec<String> = files
            .iter()
            .map(|f| fs::read_to_string(f).unwrap())
            .collect();
        assert_eq!(text, vec!["line-0003\n", "line-0004\n"]);
    }
}
