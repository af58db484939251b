//! A source-of-truth file in a granted directory (an identity document, a
//! state file), kept loaded and known to be current up to an instant, and
//! identity answers drawn from it.
//!
//! [`WatchedFile::answer`] does what every file-backed identity plugin needs:
//! check the file once per batch, answer `source-unavailable` while it is
//! missing or malformed (never from an older version), `clock-skew` for a
//! query newer than the last check, and never let an answer's validity reach
//! past the instant the file was last verified.
//!
//! Underneath, a batch touches the file only when its newest query time is
//! past what was last verified: it stats the file and compares its modification time and
//! length with those of the content it holds, re-reads and re-parses it when
//! they differ, and then counts the file as verified up to the host's `now`.
//!
//! A file that cannot be read or parsed replaces what was held: the plugin
//! answers `source-unavailable` rather than from an identity that may be stale.
//! Each distinct failure is logged once, not once per batch.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::{
    AnswerScope, Answers, AnswersBuilder, LocalQuery, TimeRange, Unanswered, UnattributedReason,
    Workload,
};

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
    fn refresh(&mut self, newest_query_ns: u64, now_ns: impl FnOnce() -> u64) {
        if newest_query_ns >= self.verified_until_ns {
            self.check(now_ns());
        }
    }

    /// Answers a batch from the file: refreshes it if a query is newer than
    /// the last check, then asks `lookup` for each query. `lookup` returns the
    /// workload and the range its claim holds for (the answer's validity is
    /// cut at the last check), or why there is none. Every answer holds for
    /// the whole address ([`AnswerScope::Address`]); see
    /// [`answer_scoped`](Self::answer_scoped) for answers that hold for a
    /// port only.
    pub fn answer<F>(&mut self, queries: &[LocalQuery], mut lookup: F) -> Answers
    where
        F: for<'a> FnMut(
            &'a T,
            &LocalQuery,
        ) -> Result<(&'a Arc<Workload>, TimeRange), UnattributedReason>,
    {
        self.answer_scoped(queries, |content, q| {
            lookup(content, q)
                .map(|(w, valid)| (w, valid, AnswerScope::Address))
                .map_err(Unanswered::from)
        })
    }

    /// [`answer`](Self::answer), with `lookup` also saying what each answer
    /// holds for: the queried endpoint's whole address, or only its port on
    /// an address several workloads share ([`AnswerScope::Port`], answered
    /// with [`AnswersBuilder::attributed_shared`]), and, for a port nobody
    /// holds on such an address, [`Unanswered::NotFoundShared`].
    pub fn answer_scoped<F>(&mut self, queries: &[LocalQuery], mut lookup: F) -> Answers
    where
        F: for<'a> FnMut(
            &'a T,
            &LocalQuery,
        )
            -> Result<(&'a Arc<Workload>, TimeRange, AnswerScope), Unanswered>,
    {
        let mut out = AnswersBuilder::with_capacity(queries.len());
        if let Some(newest) = queries.iter().map(|q| q.time_ns).max() {
            self.refresh(newest, crate::host::now_ns);
        }
        let verified_until = self.verified_until_ns;
        let Ok(content) = &self.content else {
            for _ in queries {
                out.unattributed(UnattributedReason::SourceUnavailable);
            }
            return out.finish();
        };
        for q in queries {
            // Newer than the host's clock even after a fresh check: the file
            // is not known to hold for that time.
            if q.time_ns >= verified_until {
                out.unattributed(UnattributedReason::ClockSkew);
                continue;
            }
            match lookup(content, q) {
                Ok((workload, valid, scope)) => out.attributed_scoped(
                    workload,
                    TimeRange::new(valid.start_ns, valid.end_ns.min(verified_until)),
                    scope,
                ),
                Err(Unanswered::Reason(reason)) => out.unattributed(reason),
                Err(Unanswered::NotFoundShared) => out.not_found_shared(),
            }
        }
        out.finish()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A file whose whole content is a workload id.
    struct Id(Arc<Workload>);

    impl Source for Id {
        const WHAT: &'static str = "test file";

        fn parse(bytes: &[u8]) -> Result<Self, String> {
            let id = std::str::from_utf8(bytes)
                .map_err(|e| e.to_string())?
                .trim();
            if id.is_empty() {
                Err("empty".into())
            } else {
                Ok(Id(Arc::new(Workload::with_id(id))))
            }
        }

        fn summary(&self) -> String {
            self.0.id.clone()
        }
    }

    fn query(time_ns: u64) -> LocalQuery {
        LocalQuery {
            local: "10.0.0.1:1".parse().unwrap(),
            protocol: Default::default(),
            time_ns,
            cgroup_id: 0,
            netns_id: 0,
            pid: 0,
        }
    }

    fn lookup<'a>(
        content: &'a Id,
        _: &LocalQuery,
    ) -> Result<(&'a Arc<Workload>, TimeRange), UnattributedReason> {
        Ok((&content.0, TimeRange::since(0)))
    }

    #[test]
    fn answers_are_cut_at_the_last_check_and_stale_content_is_never_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        std::fs::write(&path, "web").unwrap();
        crate::testing::set_fake_now_ns(100);
        let mut file = WatchedFile::<Id>::open(&path, 100);

        let a = file.answer(&[query(50), query(100), query(500)], lookup);
        assert_eq!(
            a.resolve(0).unwrap(),
            (&Arc::new(Workload::with_id("web")), TimeRange::new(0, 101))
        );
        assert_eq!(a.resolve(1).unwrap().0.id, "web");
        // Newer than the host clock even after a fresh check.
        assert_eq!(a.resolve(2), Err(UnattributedReason::ClockSkew));

        assert_eq!(a.scope(0), Some(AnswerScope::Address));

        // A lookup that says its answer holds for the port only.
        let a = file.answer_scoped(&[query(60)], |content, q| {
            lookup(content, q)
                .map(|(w, valid)| (w, valid, AnswerScope::Port))
                .map_err(Unanswered::from)
        });
        assert_eq!(a.resolve(0).unwrap().1, TimeRange::new(0, 101));
        assert_eq!(a.scope(0), Some(AnswerScope::Port));
        // And one that says the address is shared but nobody holds the port.
        let a = file.answer_scoped(&[query(60)], |_, _| Err(Unanswered::NotFoundShared));
        assert!(a.shared_not_found(0));
        assert_eq!(a.resolve(0), Err(UnattributedReason::NotFound));

        // The file goes bad: no answer from the old content.
        std::fs::write(&path, "").unwrap();
        crate::testing::set_fake_now_ns(600);
        let a = file.answer(&[query(550)], lookup);
        assert_eq!(a.resolve(0), Err(UnattributedReason::SourceUnavailable));
    }
}
