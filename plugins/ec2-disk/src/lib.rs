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

use flowattr_sdk::source::WatchedFile;
use flowattr_sdk::{Answers, IdentityPlugin, LocalQuery, Plugin, TimeRange, UnattributedReason};

use crate::config::Config;
use crate::document::{Identity, Lookup};

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
        self.document.answer(queries, |identity, q| {
            match identity.lookup(q.local.ip(), q.time_ns) {
                Lookup::NotMine => Err(UnattributedReason::NotFound),
                Lookup::BeforeLaunch => Err(UnattributedReason::Gap),
                Lookup::Mine { since_ns } => Ok((&identity.workload, TimeRange::since(since_ns))),
            }
        })
    }
}

flowattr_sdk::export_plugin!(Ec2Disk as identity);
