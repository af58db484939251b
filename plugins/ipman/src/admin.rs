//! The writer's side of the state file: assign and release container
//! addresses and shared-IPv4 port ranges, and write the file the way
//! `STATE.md` says IPMan must. Native only; `flowattr ipman` is its command
//! line, for tests and demos that play IPMan's part.
//!
//! A [`StateFile`] is the file read into memory. Every change is checked with
//! the plugin's own validation before it is kept, so a refused change leaves
//! the state as it was, and [`StateFile::save`] validates the exact bytes it
//! is about to write with the plugin's parser: the writer never produces a
//! file the plugin would refuse.
//!
//! ```
//! use ipman::admin::{RawWorkload, StateFile};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut state = StateFile::open(dir.path().join("ipman/state.json")).unwrap();
//! let web = RawWorkload { app: Some("web".into()), ..RawWorkload::default() };
//! state.define_workload("c-web-1", web).unwrap();
//! state.assign("fd00::5".parse().unwrap(), "c-web-1", 1_000).unwrap();
//! state.save().unwrap();
//! state.release("fd00::5".parse().unwrap(), 2_000).unwrap();
//! state.save().unwrap();
//! ```
//!
//! One writer at a time: a `StateFile` is read, changed and written back, so
//! two processes changing the same file concurrently lose one's changes (the
//! file itself stays whole and valid).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::format::{self, RawAllocation, RawAssignment, RawShared, RawState};
use crate::state::State;
use flowattr_sdk::source::Source as _;

pub use crate::format::RawWorkload;

/// Why a change or a read or write of the state file failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The file exists but could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file on disk is one the plugin refuses.
    #[error("IPMan state file {} is refused: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    /// The new version could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The change (or the state to save) is one the plugin would refuse.
    #[error("the plugin would refuse the result: {0}")]
    Invalid(String),
    /// The operation names a workload `define_workload` has not defined.
    #[error("workload {0:?} is not defined")]
    UnknownWorkload(String),
    /// The address is assigned and not yet released.
    #[error("{ip} is already assigned to {workload} (since {since_ns})")]
    AlreadyAssigned {
        ip: IpAddr,
        workload: String,
        since_ns: u64,
    },
    /// The address is not assigned to anybody now.
    #[error("{0} is not assigned")]
    NotAssigned(IpAddr),
    /// A shared IPv4 address is handed out by port range, never whole.
    #[error("{0} is a shared IPv4 address: allocate ports on it instead")]
    Shared(Ipv4Addr),
    /// Ports were asked for on an address not declared shared.
    #[error("{0} is not a shared IPv4 address")]
    NotShared(Ipv4Addr),
    /// Some of the ports are held by an allocation not yet freed.
    #[error(
        "ports {first}-{last} of {address} overlap {held_first}-{held_last}, allocated to {workload}"
    )]
    PortsTaken {
        address: Ipv4Addr,
        first: u16,
        last: u16,
        held_first: u16,
        held_last: u16,
        workload: String,
    },
    /// No allocation of exactly these ports is held now.
    #[error("ports {first}-{last} of {address} are not allocated")]
    NotAllocated {
        address: Ipv4Addr,
        first: u16,
        last: u16,
    },
}

/// IPMan's state as read from one path, changed in memory and written back
/// with [`StateFile::save`].
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
    raw: RawState,
}

impl StateFile {
    /// Reads the state at `path`. A missing file is an empty version-1 state
    /// (IPMan has not written one yet); a file the plugin would refuse is an
    /// error naming the problem.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, AdminError> {
        let path = path.into();
        let raw = match std::fs::read(&path) {
            Ok(bytes) => {
                let malformed = |reason| AdminError::Malformed {
                    path: path.clone(),
                    reason,
                };
                let raw = format::parse(&bytes).map_err(malformed)?;
                validate(&raw).map_err(malformed)?;
                raw
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RawState {
                version: format::VERSION,
                workloads: Default::default(),
                assignments: Vec::new(),
                shared_ipv4: Vec::new(),
                current_until_ns: None,
            },
            Err(source) => return Err(AdminError::Read { path, source }),
        };
        Ok(Self { path, raw })
    }

    /// Where the state is read from and saved to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The attributes of workload `id`, if defined.
    pub fn workload(&self, id: &str) -> Option<&RawWorkload> {
        self.raw.workloads.get(id)
    }

    /// Defines workload `id`, or replaces its attributes (for every entry that
    /// names it, past ones included).
    pub fn define_workload(&mut self, id: &str, attrs: RawWorkload) -> Result<(), AdminError> {
        self.change(|raw| {
            raw.workloads.insert(id.to_owned(), attrs);
            Ok(())
        })
    }

    /// Assigns `ip` to `workload` from `at_ns` on. Refused while the address
    /// is assigned, if it is a shared IPv4 address, if the workload is not
    /// defined, or if the assignment would overlap an earlier one in time.
    /// An IPv4-mapped IPv6 address is stored as the IPv4 address.
    pub fn assign(&mut self, ip: IpAddr, workload: &str, at_ns: u64) -> Result<(), AdminError> {
        let ip = ip.to_canonical();
        self.change(|raw| {
            defined(raw, workload)?;
            if let IpAddr::V4(v4) = ip
                && raw.shared_ipv4.iter().any(|s| s.address == v4)
            {
                return Err(AdminError::Shared(v4));
            }
            if let Some(held) = raw.assignments.iter().find(|a| open_for(a, ip)) {
                return Err(AdminError::AlreadyAssigned {
                    ip,
                    workload: held.workload.clone(),
                    since_ns: held.since_ns,
                });
            }
            raw.assignments.push(RawAssignment {
                ip,
                workload: workload.to_owned(),
                since_ns: at_ns,
                until_ns: None,
            });
            Ok(())
        })
    }

    /// Releases `ip` at `at_ns`: its open assignment ends there (exclusive).
    /// Refused if it has none, or if `at_ns` is not after the assignment began.
    pub fn release(&mut self, ip: IpAddr, at_ns: u64) -> Result<(), AdminError> {
        let ip = ip.to_canonical();
        self.change(|raw| {
            let held = raw
                .assignments
                .iter_mut()
                .find(|a| open_for(a, ip))
                .ok_or(AdminError::NotAssigned(ip))?;
            held.until_ns = Some(at_ns);
            Ok(())
        })
    }

    /// Declares `address` a shared host IPv4 address whose ports `pool`
    /// (first, last, inclusive) are handed out to containers; for an address
    /// already shared, changes its pool. Refused if the address is assigned,
    /// the pool is inverted, or an allocation would fall outside it.
    pub fn share_ipv4(&mut self, address: Ipv4Addr, pool: (u16, u16)) -> Result<(), AdminError> {
        self.change(|raw| {
            let pool = [pool.0, pool.1];
            match raw.shared_ipv4.iter_mut().find(|s| s.address == address) {
                Some(shared) => shared.pool = pool,
                None => raw.shared_ipv4.push(RawShared {
                    address,
                    pool,
                    allocations: Vec::new(),
                }),
            }
            Ok(())
        })
    }

    /// Allocates `ports` (first, last, inclusive) of shared `address` to
    /// `workload` from `at_ns` on. Refused if the address is not shared, the
    /// workload not defined, an unfreed allocation holds any of the ports, or
    /// the ports are not a range inside the pool.
    pub fn allocate_ports(
        &mut self,
        address: Ipv4Addr,
        ports: (u16, u16),
        workload: &str,
        at_ns: u64,
    ) -> Result<(), AdminError> {
        let (first, last) = ports;
        self.change(|raw| {
            defined(raw, workload)?;
            let shared = shared_mut(raw, address)?;
            let taken = |a: &&RawAllocation| {
                a.until_ns.is_none() && a.ports[0] <= last && first <= a.ports[1]
            };
            if let Some(held) = shared.allocations.iter().find(taken) {
                return Err(AdminError::PortsTaken {
                    address,
                    first,
                    last,
                    held_first: held.ports[0],
                    held_last: held.ports[1],
                    workload: held.workload.clone(),
                });
            }
            shared.allocations.push(RawAllocation {
                ports: [first, last],
                workload: workload.to_owned(),
                since_ns: at_ns,
                until_ns: None,
            });
            Ok(())
        })
    }

    /// Frees the allocation of exactly `ports` of shared `address` at `at_ns`
    /// (exclusive). Refused if no such allocation is held, or if `at_ns` is
    /// not after it began.
    pub fn free_ports(
        &mut self,
        address: Ipv4Addr,
        ports: (u16, u16),
        at_ns: u64,
    ) -> Result<(), AdminError> {
        let (first, last) = ports;
        self.change(|raw| {
            let held = shared_mut(raw, address)?
                .allocations
                .iter_mut()
                .find(|a| a.until_ns.is_none() && a.ports == [first, last])
                .ok_or(AdminError::NotAllocated {
                    address,
                    first,
                    last,
                })?;
            held.until_ns = Some(at_ns);
            Ok(())
        })
    }

    /// Drops assignments and allocations released before `released_before_ns`,
    /// and the workloads only they named. Returns how many entries it dropped.
    /// Keep released entries for minutes: a flow is attributed by its start
    /// time, possibly seconds after it started.
    pub fn prune(&mut self, released_before_ns: u64) -> usize {
        let raw = &mut self.raw;
        let gone = |until_ns: Option<u64>| until_ns.is_some_and(|t| t < released_before_ns);
        let named_before: BTreeSet<String> = named(raw).map(str::to_owned).collect();
        let entries = count(raw);
        raw.assignments.retain(|a| !gone(a.until_ns));
        for shared in &mut raw.shared_ipv4 {
            shared.allocations.retain(|a| !gone(a.until_ns));
        }
        let named_after: BTreeSet<String> = named(raw).map(str::to_owned).collect();
        for id in named_before.difference(&named_after) {
            raw.workloads.remove(id);
        }
        entries - count(raw)
    }

    /// The file as [`StateFile::save`] writes it: pretty-printed JSON.
    pub fn to_json(&self) -> String {
        let mut json = serde_json::to_string_pretty(&self.raw)
            .expect("the state serializes: string keys, no maps with other keys");
        json.push('\n');
        json
    }

    /// Writes the state as `STATE.md` requires: validated with the plugin's
    /// own parser first (an invalid state is never written), then to a
    /// temporary file in the same directory (created if missing), flushed to
    /// disk, given a modification time after the previous version's, and
    /// renamed over the file.
    pub fn save(&self) -> Result<(), AdminError> {
        let json = self.to_json();
        State::parse(json.as_bytes()).map_err(AdminError::Invalid)?;
        write_by_rename(&self.path, json.as_bytes()).map_err(|source| AdminError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// Applies `edit` to a copy of the state and keeps the copy only if the
    /// plugin would accept it.
    fn change(
        &mut self,
        edit: impl FnOnce(&mut RawState) -> Result<(), AdminError>,
    ) -> Result<(), AdminError> {
        let mut next = self.raw.clone();
        edit(&mut next)?;
        validate(&next).map_err(AdminError::Invalid)?;
        self.raw = next;
        Ok(())
    }
}

/// The plugin's validation of a whole state.
fn validate(raw: &RawState) -> Result<(), String> {
    State::from_raw(raw.clone()).map(drop)
}

/// The workload ids entries name (with repeats).
fn named(raw: &RawState) -> impl Iterator<Item = &str> {
    let assigned = raw.assignments.iter().map(|a| a.workload.as_str());
    let allocated = raw
        .shared_ipv4
        .iter()
        .flat_map(|s| s.allocations.iter().map(|a| a.workload.as_str()));
    assigned.chain(allocated)
}

/// How many assignments and allocations there are.
fn count(raw: &RawState) -> usize {
    let allocations: usize = raw.shared_ipv4.iter().map(|s| s.allocations.len()).sum();
    raw.assignments.len() + allocations
}

fn defined(raw: &RawState, workload: &str) -> Result<(), AdminError> {
    if raw.workloads.contains_key(workload) {
        Ok(())
    } else {
        Err(AdminError::UnknownWorkload(workload.to_owned()))
    }
}

fn shared_mut(raw: &mut RawState, address: Ipv4Addr) -> Result<&mut RawShared, AdminError> {
    raw.shared_ipv4
        .iter_mut()
        .find(|s| s.address == address)
        .ok_or(AdminError::NotShared(address))
}

/// Whether `a` is an assignment of (canonical) `ip` not yet released.
fn open_for(a: &RawAssignment, ip: IpAddr) -> bool {
    a.until_ns.is_none() && a.ip.to_canonical() == ip
}

/// Replaces `path` with `bytes`: temporary file beside it, fsync, a
/// modification time after the old file's, rename, fsync of the directory.
fn write_by_rename(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "the path names no file")
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    // Per process, so concurrent writers never write into each other's file.
    let mut tmp_name = name.to_owned();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        if let Ok(previous) = std::fs::metadata(path).and_then(|m| m.modified()) {
            after(&file, previous)?;
        }
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::File::open(dir)?.sync_all()
}

/// Makes `file`'s modification time later than `previous`, so the plugin,
/// which notices a new version by modification time and length, sees it even
/// when the clock has not moved past the old version's time (timestamps are
/// coarse, a few milliseconds on Linux). Steps past 1 ns are for filesystems
/// that store coarser times.
fn after(file: &std::fs::File, previous: SystemTime) -> std::io::Result<()> {
    for step in [1, 1_000, 1_000_000, 1_000_000_000] {
        if file.metadata()?.modified()? > previous {
            return Ok(());
        }
        let times = std::fs::FileTimes::new().set_modified(previous + Duration::from_nanos(step));
        file.set_times(times)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
