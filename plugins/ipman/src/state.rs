//! IPMan's state, validated as a whole and indexed for lookup.
//!
//! [`State::from_raw`] refuses the whole file on any inconsistency (an unknown
//! workload, an empty or inverted time range, overlapping claims on one
//! address or one port, ports outside the pool, an address both assigned and
//! shared), because a state that contradicts itself cannot be trusted for any
//! answer. A valid state is indexed by address (and, for shared IPv4
//! addresses, by port segment) with time spans sorted for binary search.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::Arc;

use flowattr_sdk::{AnswerScope, TimeRange, Workload};

use crate::format::{self, RawState};
use crate::shared::{Allocation, PortLookup, SharedAddress};
use crate::spans::{self, Span};
use flowattr_sdk::source::Source;

/// Address-keyed maps: FxHash is several times faster than SipHash on
/// addresses (and, in Wasm, than foldhash, whose 128-bit multiply Wasm lacks),
/// and the keys come from IPMan's own file, not from the network.
type FastMap<K, V> = HashMap<K, V, rustc_hash::FxBuildHasher>;

/// The validated, indexed state.
#[derive(Debug)]
pub struct State {
    workloads: Vec<Arc<Workload>>,
    /// Address (as [`key`]) → spans sorted by start, never overlapping.
    by_ip: FastMap<u128, Vec<Span>>,
    /// Shared IPv4 address (as a `u32`) → its port allocations.
    shared: FastMap<u32, SharedAddress>,
    /// What the writer vouches for: every change before it is recorded.
    current_until_ns: u64,
}

/// What the state says about one local endpoint at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// Held by `workload` for `valid` (the whole assignment or allocation):
    /// the whole address for an assignment ([`AnswerScope::Address`]), the
    /// port only for a shared address's allocation ([`AnswerScope::Port`]:
    /// other workloads use the address at the same time).
    Found {
        workload: &'a Arc<Workload>,
        valid: TimeRange,
        scope: AnswerScope,
    },
    /// IPMan knows the address (or the pool port) but nobody held it then.
    Gap,
    /// Not IPMan's: an unknown address.
    NotFound,
    /// A shared address's port outside its pool: the host's own traffic,
    /// which another source names, for that port only.
    OwnTraffic,
}

impl State {
    /// Who held `ip` (and `port`, for a shared IPv4 address) at `time_ns`.
    pub fn lookup(&self, ip: IpAddr, port: u16, time_ns: u64) -> Lookup<'_> {
        if let Some(spans) = self.by_ip.get(&key(ip)) {
            return spans::find(spans, time_ns)
                .map_or(Lookup::Gap, |s| self.found(s, AnswerScope::Address));
        }
        if let IpAddr::V4(v4) = ip.to_canonical()
            && let Some(shared) = self.shared.get(&u32::from(v4))
        {
            return match shared.lookup(port, time_ns) {
                PortLookup::Held(s) => self.found(s, AnswerScope::Port),
                PortLookup::Gap => Lookup::Gap,
                PortLookup::OutsidePool => Lookup::OwnTraffic,
            };
        }
        Lookup::NotFound
    }

    fn found(&self, span: &Span, scope: AnswerScope) -> Lookup<'_> {
        Lookup::Found {
            workload: &self.workloads[span.workload as usize],
            valid: span.range(),
            scope,
        }
    }

    /// Validates and indexes a parsed file.
    pub fn from_raw(raw: RawState) -> Result<Self, String> {
        let mut workloads = Vec::with_capacity(raw.workloads.len());
        let mut ids: HashMap<String, u32> = HashMap::with_capacity(raw.workloads.len());
        for (id, w) in raw.workloads {
            if id.trim().is_empty() {
                return Err("workloads: a workload id is empty".into());
            }
            ids.insert(id.clone(), workloads.len() as u32);
            workloads.push(Arc::new(Workload {
                id,
                app: w.app,
                cluster: w.cluster,
                stack: w.stack,
                account: w.account,
                region: w.region,
                labels: w.labels,
            }));
        }
        let span = |what: &dyn Fn() -> String, workload: &str, since, until: Option<u64>, entry| {
            let &workload = ids
                .get(workload)
                .ok_or_else(|| format!("{}: workload {workload:?} is not in workloads", what()))?;
            let until_ns = until.unwrap_or(TimeRange::OPEN_END);
            if since >= until_ns {
                return Err(format!(
                    "{}: since_ns {since} is not before until_ns {until_ns}",
                    what()
                ));
            }
            Ok(Span {
                since_ns: since,
                until_ns,
                workload,
                entry,
            })
        };

        let mut by_ip: FastMap<u128, Vec<Span>> = FastMap::default();
        for (i, a) in raw.assignments.iter().enumerate() {
            let s = span(
                &|| format!("assignments[{i}]"),
                &a.workload,
                a.since_ns,
                a.until_ns,
                i as u32,
            )?;
            by_ip.entry(key(a.ip)).or_default().push(s);
        }
        for list in by_ip.values_mut() {
            spans::sort_and_check(list).map_err(|(a, b)| {
                let ip = raw.assignments[a as usize].ip;
                format!("assignments[{a}] and assignments[{b}] overlap in time for {ip}")
            })?;
        }

        let mut shared = FastMap::default();
        for (i, s) in raw.shared_ipv4.iter().enumerate() {
            let at = format!("shared_ipv4[{i}] ({})", s.address);
            if by_ip.contains_key(&key(IpAddr::V4(s.address))) {
                return Err(format!("{at}: the address also has assignments"));
            }
            let [low, high] = s.pool;
            if low > high {
                return Err(format!("{at}: pool {low}-{high} is empty"));
            }
            let mut allocations = Vec::with_capacity(s.allocations.len());
            for (j, a) in s.allocations.iter().enumerate() {
                let what = || format!("{at}.allocations[{j}]");
                let [first, last] = a.ports;
                if first > last || first < low || last > high {
                    return Err(format!(
                        "{}: ports {first}-{last} are not a range inside the pool {low}-{high}",
                        what()
                    ));
                }
                let span = span(&what, &a.workload, a.since_ns, a.until_ns, j as u32)?;
                allocations.push(Allocation { first, last, span });
            }
            let index = SharedAddress::new((low, high), &allocations).map_err(|(a, b)| {
                format!("{at}: allocations[{a}] and allocations[{b}] overlap in ports and time")
            })?;
            match shared.entry(u32::from(s.address)) {
                Entry::Occupied(_) => return Err(format!("{at}: the address is listed twice")),
                Entry::Vacant(v) => {
                    v.insert(index);
                }
            }
        }
        Ok(Self {
            workloads,
            by_ip,
            shared,
            current_until_ns: raw.current_until_ns.unwrap_or(u64::MAX),
        })
    }

    /// Before when the file is complete (`u64::MAX` when the writer does
    /// not say): a later query is not answered, and no answer holds past it.
    pub fn current_until_ns(&self) -> u64 {
        self.current_until_ns
    }
}

/// The map key of an address: its IPv6 form as a number, IPv4 as
/// IPv4-mapped, so `10.0.0.1` and `::ffff:10.0.0.1` are one address.
fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl Source for State {
    const WHAT: &'static str = "IPMan state file";

    fn parse(bytes: &[u8]) -> Result<Self, String> {
        State::from_raw(format::parse(bytes)?)
    }

    fn summary(&self) -> String {
        format!(
            "{} workloads, {} assigned addresses, {} shared IPv4 addresses",
            self.workloads.len(),
            self.by_ip.len(),
            self.shared.len()
        )
    }
}

#[cfg(test)]
mod tests;
