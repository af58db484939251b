//! `ipman`: an identity plugin that attributes the local side of flows on a
//! container host, from the state file of IPMan (the container IP manager).
//!
//! IPMan records which workload holds each container address over time, and,
//! for IPv6-only containers that reach IPv4 through the host's shared IPv4
//! address, which workload holds each port range of that address. A query is
//! answered from the entry that contains its address (and port) and time; the
//! answer is valid for that entry's time range, cut at the last time the file
//! was verified current, so the host never caches past what IPMan said.
//!
//! Addresses IPMan does not know, and ports of a shared address outside its
//! pool (the host's own traffic), are `not-found`, so the next identity plugin
//! is asked. An address or pool port IPMan knows but nobody held at that time
//! is a `gap`. A query newer than the host's clock is `clock-skew`. A missing,
//! malformed or inconsistent file makes every answer `source-unavailable`.
//! `STATE.md` specifies the file.

pub mod config;
mod format;
mod shared;
mod spans;
mod state;
mod watch;

use flowattr_sdk::{
    Answers, AnswersBuilder, IdentityPlugin, LocalQuery, Plugin, TimeRange, UnattributedReason,
};

use crate::config::Config;
use crate::state::{Lookup, State};
use crate::watch::WatchedFile;

/// The `ipman` identity plugin.
#[derive(Debug)]
pub struct Ipman {
    state: WatchedFile<State>,
}

impl Plugin for Ipman {
    type Config = Config;

    /// Reads the state once; succeeds even when it is missing or bad, because
    /// IPMan may write it later.
    fn init(config: Config) -> Result<Self, String> {
        if config.state.is_empty() {
            return Err("state: the path is empty".into());
        }
        let state = WatchedFile::open(config.state, flowattr_sdk::host::now_ns());
        Ok(Self { state })
    }
}

impl IdentityPlugin for Ipman {
    fn identify(&mut self, queries: &[LocalQuery]) -> Answers {
        let mut out = AnswersBuilder::with_capacity(queries.len());
        if let Some(newest) = queries.iter().map(|q| q.time_ns).max() {
            self.state.refresh(newest, flowattr_sdk::host::now_ns);
        }
        let verified_until = self.state.verified_until_ns();
        let Ok(state) = self.state.content() else {
            for _ in queries {
                out.unattributed(UnattributedReason::SourceUnavailable);
            }
            return out.finish();
        };
        for q in queries {
            // Newer than the host's clock even after a fresh check: the state
            // is not known to hold for that time.
            if q.time_ns >= verified_until {
                out.unattributed(UnattributedReason::ClockSkew);
                continue;
            }
            match state.lookup(q.local.ip(), q.local.port(), q.time_ns) {
                Lookup::Found { workload, valid } => {
                    let end = valid.end_ns.min(verified_until);
                    out.attributed(workload, TimeRange::new(valid.start_ns, end));
                }
                Lookup::Gap => out.unattributed(UnattributedReason::Gap),
                Lookup::NotFound => out.unattributed(UnattributedReason::NotFound),
            }
        }
        out.finish()
    }
}

flowattr_sdk::export_plugin!(Ipman as identity);
