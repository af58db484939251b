//! `ec2-disk`: an identity plugin that attributes the local side of flows on a
//! plain EC2 instance, from the instance identity document on local disk.
//!
//! A query is attributed to the instance when its local address is one of the
//! instance's addresses (`privateIp`, `publicIp`, `ipv6Addresses`) and its time
//! is at or after `pendingTime`. The answer is valid from `pendingTime` (or 0)
//! up to the last time the document was verified current, so the host never
//! caches it past what the plugin has checked. Other addresses are answered
//! `not-found`, so the next identity plugin is asked; times before launch are a
//! `gap`. A query newer than the host's clock is `clock-skew`. A missing or
//! malformed document makes every answer `source-unavailable`. See the crate's
//! README for the document format.

pub mod config;
mod document;
mod watch;

use flowattr_sdk::{
    Answers, AnswersBuilder, IdentityPlugin, LocalQuery, Plugin, TimeRange, UnattributedReason,
};

use crate::config::Config;
use crate::document::{Identity, Lookup};
use crate::watch::WatchedFile;

/// The `ec2-disk` identity plugin.
#[derive(Debug)]
pub struct Ec2Disk {
    document: WatchedFile<Identity>,
}

impl Plugin for Ec2Disk {
    type Config = Config;

    /// Reads the document once; succeeds even when it is missing or bad,
    /// because it may appear or be fixed later.
    fn init(config: Config) -> Result<Self, String> {
        if config.document.is_empty() {
            return Err("document: the path is empty".into());
        }
        let document = WatchedFile::open(config.document, flowattr_sdk::host::now_ns());
        Ok(Self { document })
    }
}

impl IdentityPlugin for Ec2Disk {
    fn identify(&mut self, queries: &[LocalQuery]) -> Answers {
        let mut out = AnswersBuilder::with_capacity(queries.len());
        if let Some(newest) = queries.iter().map(|q| q.time_ns).max() {
            self.document.refresh(newest, flowattr_sdk::host::now_ns);
        }
        let verified_until = self.document.verified_until_ns();
        let Ok(identity) = self.document.content() else {
            for _ in queries {
                out.unattributed(UnattributedReason::SourceUnavailable);
            }
            return out.finish();
        };
        for q in queries {
            // Newer than the host's clock even after a fresh check: the
            // document is not known to hold for that time.
            if q.time_ns >= verified_until {
                out.unattributed(UnattributedReason::ClockSkew);
                continue;
            }
            match identity.lookup(q.local.ip(), q.time_ns) {
                Lookup::NotMine => out.unattributed(UnattributedReason::NotFound),
                Lookup::BeforeLaunch => out.unattributed(UnattributedReason::Gap),
                Lookup::Mine { since_ns } => {
                    out.attributed(&identity.workload, TimeRange::new(since_ns, verified_until))
                }
            }
        }
        out.finish()
    }
}

flowattr_sdk::export_plugin!(Ec2Disk as identity);
