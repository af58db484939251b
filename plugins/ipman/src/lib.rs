//! `ipman`: an identity plugin that attributes the local side of flows on a
//! container host, from the state file of IPMan (the container IP manager).
//!
//! IPMan records which workload holds each container address over time, and,
//! for IPv6-only containers that reach IPv4 through the host's shared IPv4
//! address, which workload holds each port range of that address. A query is
//! answered from the entry that contains its address (and port) and time; the
//! answer is valid for that entry's time range, cut at the last time the file
//! was verified current, so the host never caches past what IPMan said.
//! An answer from a shared address's port allocation holds for that port
//! only (port-scoped): the container made the connection, but several
//! containers use the address at once, so the answer must never be taken as
//! the address's owner. An answer from an address assignment holds for the
//! whole address.
//!
//! Addresses IPMan does not know are `not-found`, so the next identity
//! plugin is asked. Ports of a shared address outside its pool (the host's
//! own traffic) are `not-found` too, marked port-scoped: the next plugin is
//! asked, and the host takes its answer for that port only, since the
//! address has no single owner. An address or pool port IPMan knows but nobody held at that time
//! is a `gap`. A query newer than the host's clock is `clock-skew`; one at or
//! after the file's `current_until_ns` (IPMan vouches for its record only
//! before then: it may lag the real assignment) is `source-unavailable`, and
//! no answer holds past it. A missing,
//! malformed or inconsistent file makes every answer `source-unavailable`.
//! `STATE.md` specifies the file; the `admin` module (native only) writes it.

#[cfg(not(target_arch = "wasm32"))]
pub mod admin;
pub mod config;
mod format;
mod shared;
mod spans;
mod state;

use flowattr_sdk::source::WatchedFile;
use flowattr_sdk::{
    Answers, IdentityPlugin, LocalQuery, Plugin, TimeRange, Unanswered, UnattributedReason,
};

use crate::config::Config;
use crate::state::{Lookup, State};

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
        self.state.answer_scoped(queries, |state, q| {
            // IPMan may lag the real assignment: past where it vouches for
            // its record, a newer holder may not be in it yet.
            let current = state.current_until_ns();
            if q.time_ns >= current {
                return Err(UnattributedReason::SourceUnavailable.into());
            }
            match state.lookup(q.local.ip(), q.local.port(), q.time_ns) {
                Lookup::Found {
                    workload,
                    valid,
                    scope,
                } => Ok((
                    workload,
                    TimeRange::new(valid.start_ns, valid.end_ns.min(current)),
                    scope,
                )),
                Lookup::Gap => Err(UnattributedReason::Gap.into()),
                Lookup::NotFound => Err(UnattributedReason::NotFound.into()),
                Lookup::OwnTraffic => Err(Unanswered::NotFoundShared),
            }
        })
    }
}

flowattr_sdk::export_plugin!(Ipman as identity);
