//! Follows the legacy address-event stream: a JSON-lines file of
//! [`IpEvent`]s (`[legacy] events`) that grows as the legacy system reports
//! assignments. What was appended since the last poll goes to the resolver
//! plugins; a malformed line is skipped and counted, never applied.

use std::{
    fs::File,
    io::{Read, Seek, SeekFrom},
    path::PathBuf,
};

use flowattr_model::IpEvent;

/// What one poll read.
#[derive(Debug, Default)]
pub struct Polled {
    pub events: Vec<IpEvent>,
    /// (line excerpt, error) of each malformed line.
    pub malformed: Vec<(String, String)>,
}

/// Reads a growing events file from where it left off.
#[derive(Debug)]
pub struct EventFollower {
    path: PathBuf,
    offset: u64,
    /// The start of a line not yet complete.
    partial: Vec<u8>,
}

impl EventFollower {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// Reads what was appended since the last poll. A file not there yet
    /// reads as empty; a file that shrank (replaced) is read from its start.
    pub fn poll(&mut self) -> std::io::Result<Polled> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Polled::default()),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len < self.offset {
            self.offset = 0;
            self.partial.clear();
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let read = file.read_to_end(&mut self.partial)?;
        self.offset += read as u64;
        Ok(take_lines(&mut self.partial))
    }
}

/// Parses and removes every complete line of `buf`, leaving a trailing
/// partial line in place.
pub fn take_lines(buf: &mut Vec<u8>) -> Polled {
    let mut out = Polled::default();
    let Some(end) = buf.iter().rposition(|&b| b == b'\n') else {
        return out;
    };
    for line in buf[..end].split(|&b| b == b'\n') {
        let text = String::from_utf8_lossy(line);
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_str::<IpEvent>(text) {
            Ok(event) => out.events.push(event),
            Err(e) => out
                .malformed
                .push((text.chars().take(80).collect(), e.to_string())),
        }
    }
    buf.drain(..=end);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVENT: &str = r#"{"address":"10.0.0.1","change":{"assigned":{"id":"lb-1"}},"event_time_ns":1,"arrival_time_ns":2}"#;

    #[test]
    fn complete_lines_are_taken_and_a_partial_one_waits() {
        let mut buf = format!("{EVENT}\nnot json\n{}", &EVENT[..20]).into_bytes();
        let polled = take_lines(&mut buf);
        assert_eq!(polled.events.len(), 1);
        assert_eq!(polled.malformed.len(), 1);
        assert_eq!(polled.malformed[0].0, "not json");
        assert_eq!(buf, &EVENT.as_bytes()[..20]);
        buf.extend_from_slice(format!("{}\n", &EVENT[20..]).as_bytes());
        assert_eq!(take_lines(&mut buf).events.len(), 1);
        assert!(buf.is_empty());
    }

    #[test]
    fn the_follower_reads_appends_and_waits_for_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut follower = EventFollower::new(path.clone());
        assert!(follower.poll().unwrap().events.is_empty());
        std::fs::write(&path, format!("{EVENT}\n")).unwrap();
        assert_eq!(follower.poll().unwrap().events.len(), 1);
        assert!(follower.poll().unwrap().events.is_empty(), "nothing new");
        let mut f = File::options().append(true).open(&path).unwrap();
        std::io::Write::write_all(&mut f, format!("{EVENT}\n{EVENT}\n").as_bytes()).unwrap();
        assert_eq!(follower.poll().unwrap().events.len(), 2);
        std::fs::write(&path, format!("{EVENT}\n")).unwrap();
        assert_eq!(
            follower.poll().unwrap().events.len(),
            1,
            "a replaced file is read from its start"
        );
    }
}
