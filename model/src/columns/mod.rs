//! Batches as columns: the shape the hot-path batches take across the Wasm
//! boundary (`local-queries`, `resolve-queries`, `answers` and `flow-batch`
//! in the WIT).
//!
//! Columns of numbers are copied across the component boundary as arrays
//! instead of record by record, which is most of the cost of a call. These
//! types convert between rows (what plugin code and callers use) and columns;
//! the SDK and the runtime only move the lists in and out of generated types.

mod flows;
mod table;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::{
    Answer, AnswerScope, Answers, LocalQuery, Protocol, ResolveQuery, TimeRange,
    UnattributedReason, Workload,
};

pub use flows::{FlowBatchColumns, LOCAL_IPV4, PENDING, REMOTE_IPV4, SideColumns};
pub use table::{
    SentWorkloads, TableMismatch, TableUpdate, WORKLOAD_TABLE_CAPACITY, WorkloadTable,
};

/// An address's 16 octets in network order: its IPv6 form, IPv4 mapped.
#[inline]
pub fn address_octets_of(address: IpAddr) -> [u8; 16] {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The IPv4 address whose IPv4-mapped form is `octets` (16), if it is one.
///
/// What `Ipv6Addr::to_ipv4_mapped` does, as two word compares: in Wasm that
/// compiles to two loads instead of a call to a byte-by-byte `memcmp`.
#[inline]
fn mapped_ipv4(octets: &[u8]) -> Option<Ipv4Addr> {
    const MAPPED_HIGH: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
    let word = |at: usize| <[u8; 4]>::try_from(&octets[at..at + 4]).expect("4 octets");
    let zero = u64::from_ne_bytes(octets[..8].try_into().expect("8 octets")) == 0;
    (zero && u32::from_ne_bytes(word(8)) == MAPPED_HIGH).then(|| Ipv4Addr::from(word(12)))
}

/// The IPv6 address spelled by `octets` (16).
#[inline]
fn ipv6(octets: &[u8]) -> Ipv6Addr {
    Ipv6Addr::from(<[u8; 16]>::try_from(octets).expect("16 octets"))
}

/// The addresses in a column of octets, 16 each; IPv4-mapped addresses come
/// back as IPv4.
#[inline]
fn addresses(octets: &[u8]) -> impl Iterator<Item = IpAddr> + '_ {
    octets
        .chunks_exact(16)
        .map(|o| mapped_ipv4(o).map_or_else(|| IpAddr::V6(ipv6(o)), IpAddr::V4))
}

/// Checks a column of 16-octet addresses holds `n` of them.
fn address_count(octets: &[u8], n: usize, what: &str) -> Result<(), String> {
    if octets.len() == 16 * n {
        Ok(())
    } else {
        Err(format!(
            "{what}: {} address octets for {n} entries",
            octets.len()
        ))
    }
}

fn same_lengths(n: usize, lens: &[usize], what: &str) -> Result<(), String> {
    match lens.iter().find(|&&l| l != n) {
        Some(l) => Err(format!("{what}: columns of {n} and {l} entries")),
        None => Ok(()),
    }
}

/// [`LocalQuery`] rows as columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalQueryColumns {
    /// 16 octets per query, as [`address_octets_of`] gives them.
    pub address_octets: Vec<u8>,
    pub port: Vec<u16>,
    /// IANA numbers ([`Protocol::number`]).
    pub protocol: Vec<u8>,
    pub time_ns: Vec<u64>,
    pub cgroup_id: Vec<u64>,
    pub netns_id: Vec<u64>,
    pub pid: Vec<u32>,
}

impl LocalQueryColumns {
    /// Splits rows into columns.
    pub fn from_rows(rows: &[LocalQuery]) -> Self {
        let mut address_octets = Vec::with_capacity(16 * rows.len());
        for q in rows {
            address_octets.extend_from_slice(&address_octets_of(q.local.ip()));
        }
        Self {
            address_octets,
            port: rows.iter().map(|q| q.local.port()).collect(),
            protocol: rows.iter().map(|q| q.protocol.number()).collect(),
            time_ns: rows.iter().map(|q| q.time_ns).collect(),
            cgroup_id: rows.iter().map(|q| q.cgroup_id).collect(),
            netns_id: rows.iter().map(|q| q.netns_id).collect(),
            pid: rows.iter().map(|q| q.pid).collect(),
        }
    }

    /// Joins columns into rows; columns of different lengths or an unknown
    /// protocol number are an error.
    pub fn into_rows(self) -> Result<Vec<LocalQuery>, String> {
        let n = self.port.len();
        let lens = [
            self.protocol.len(),
            self.time_ns.len(),
            self.cgroup_id.len(),
            self.netns_id.len(),
            self.pid.len(),
        ];
        same_lengths(n, &lens, "local queries")?;
        address_count(&self.address_octets, n, "local queries")?;
        if let Some(i) = self
            .protocol
            .iter()
            .position(|&p| Protocol::from_number(p).is_none())
        {
            return Err(format!("local query {i}: protocol {}", self.protocol[i]));
        }
        // One collect over zipped columns writes rows straight into their
        // vector; pushing row by row with an error check in the loop cost
        // about 4 ns more a query in Wasm.
        Ok(addresses(&self.address_octets)
            .zip(&self.port)
            .zip(&self.protocol)
            .zip(&self.time_ns)
            .zip(&self.cgroup_id)
            .zip(&self.netns_id)
            .zip(&self.pid)
            .map(
                |((((((address, &port), &protocol), &time_ns), &cgroup_id), &netns_id), &pid)| {
                    LocalQuery {
                        local: SocketAddr::new(address, port),
                        // Every number was checked above.
                        protocol: Protocol::from_number(protocol).unwrap_or_default(),
                        time_ns,
                        cgroup_id,
                        netns_id,
                        pid,
                    }
                },
            )
            .collect())
    }
}

/// [`ResolveQuery`] rows as columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolveQueryColumns {
    /// 16 octets per query, as [`address_octets_of`] gives them.
    pub address_octets: Vec<u8>,
    pub time_ns: Vec<u64>,
    pub asked_at_ns: Vec<u64>,
}

impl ResolveQueryColumns {
    /// Splits rows into columns.
    pub fn from_rows(rows: &[ResolveQuery]) -> Self {
        let n = rows.len();
        let mut c = Self {
            address_octets: Vec::with_capacity(16 * n),
            time_ns: Vec::with_capacity(n),
            asked_at_ns: Vec::with_capacity(n),
        };
        for q in rows {
            c.address_octets
                .extend_from_slice(&address_octets_of(q.address));
            c.time_ns.push(q.time_ns);
            c.asked_at_ns.push(q.asked_at_ns);
        }
        c
    }

    /// Joins columns into rows; columns of different lengths are an error.
    pub fn into_rows(self) -> Result<Vec<ResolveQuery>, String> {
        let n = self.time_ns.len();
        same_lengths(n, &[self.asked_at_ns.len()], "resolve queries")?;
        address_count(&self.address_octets, n, "resolve queries")?;
        Ok(addresses(&self.address_octets)
            .zip(self.time_ns.iter().zip(&self.asked_at_ns))
            .map(|(address, (&time_ns, &asked_at_ns))| ResolveQuery {
                address,
                time_ns,
                asked_at_ns,
            })
            .collect())
    }
}

/// The status code of an unattributed answer or side: 1 + the reason's
/// position in [`UnattributedReason::ALL`] (0 is attributed).
#[inline]
fn reason_code(reason: UnattributedReason) -> u8 {
    reason as u8 + 1
}

/// The reason a nonzero status code stands for, if any.
#[inline]
fn reason_of_code(code: u8) -> Option<UnattributedReason> {
    UnattributedReason::ALL
        .get(usize::from(code).checked_sub(1)?)
        .copied()
}

/// The status code of an answer: 0 when attributed, else 1 + the reason's
/// position in [`UnattributedReason::ALL`].
#[inline]
pub fn status_code(answer: &Answer) -> u8 {
    match answer {
        Answer::Attributed { .. } => 0,
        Answer::Unattributed(r) => reason_code(*r),
        Answer::NotFoundShared => reason_code(crate::UnattributedReason::NotFound),
    }
}

/// `port_scoped[i]` of an answer of [`AnswerScope::Port`].
pub const PORT_SCOPED: u8 = 1;

/// The `port_scoped` code of an answer: [`PORT_SCOPED`] when attributed for
/// the endpoint's port only or not found on an address shared by port,
/// else 0.
#[inline]
pub fn port_scoped_code(answer: &Answer) -> u8 {
    match answer {
        Answer::Attributed {
            scope: AnswerScope::Port,
            ..
        }
        | Answer::NotFoundShared => PORT_SCOPED,
        _ => 0,
    }
}

/// The scope a `port_scoped` code stands for, if any.
#[inline]
fn scope_of_code(code: u8) -> Option<AnswerScope> {
    match code {
        0 => Some(AnswerScope::Address),
        PORT_SCOPED => Some(AnswerScope::Port),
        _ => None,
    }
}

/// [`Answers`] as columns. `status[i]` is a [`status_code`], `port_scoped[i]`
/// a [`port_scoped_code`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerColumns {
    pub workloads: Vec<Arc<Workload>>,
    pub status: Vec<u8>,
    pub workload: Vec<u32>,
    pub valid_start_ns: Vec<u64>,
    pub valid_end_ns: Vec<u64>,
    pub port_scoped: Vec<u8>,
}

/// The workload index and validity of an answer (0 and an empty range when
/// unattributed), as the answer columns carry them.
#[inline]
fn attribution_parts(answer: &Answer) -> (u32, TimeRange) {
    match *answer {
        Answer::Attributed {
            workload, valid, ..
        } => (workload, valid),
        Answer::Unattributed(_) | Answer::NotFoundShared => (0, TimeRange::new(0, 0)),
    }
}

impl From<Answers> for AnswerColumns {
    /// One pass per column: each is collected at its exact length, which in
    /// Wasm is measurably cheaper than pushing to four vectors in one loop.
    fn from(answers: Answers) -> Self {
        let rows = &answers.answers;
        let parts = || rows.iter().map(attribution_parts);
        Self {
            status: rows.iter().map(status_code).collect(),
            workload: parts().map(|(w, _)| w).collect(),
            valid_start_ns: parts().map(|(_, v)| v.start_ns).collect(),
            valid_end_ns: parts().map(|(_, v)| v.end_ns).collect(),
            port_scoped: rows.iter().map(port_scoped_code).collect(),
            workloads: answers.workloads,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_follow_the_wit_reason_order() {
        for (i, r) in UnattributedReason::ALL.into_iter().enumerate() {
            assert_eq!(status_code(&Answer::Unattributed(r)), i as u8 + 1, "{r:?}");
        }
    }

    #[test]
    fn port_scoped_codes_are_one_for_port_scoped_attributions_only() {
        let attributed = |scope| Answer::Attributed {
            workload: 0,
            valid: TimeRange::since(0),
            scope,
        };
        assert_eq!(port_scoped_code(&attributed(AnswerScope::Address)), 0);
        assert_eq!(port_scoped_code(&attributed(AnswerScope::Port)), 1);
        let unattributed = Answer::Unattributed(UnattributedReason::Gap);
        assert_eq!(port_scoped_code(&unattributed), 0);
        assert_eq!(scope_of_code(0), Some(AnswerScope::Address));
        assert_eq!(scope_of_code(1), Some(AnswerScope::Port));
        assert_eq!(scope_of_code(2), None);
    }

    #[test]
    fn addresses_round_trip_and_ipv4_stays_ipv4() {
        let ips: Vec<IpAddr> = ["10.0.0.1", "2001:db8::1", "::1", "0.0.0.0"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let octets: Vec<u8> = ips.iter().flat_map(|&ip| address_octets_of(ip)).collect();
        assert_eq!(addresses(&octets).collect::<Vec<_>>(), ips);
        assert_eq!(
            address_octets_of("10.0.0.1".parse().unwrap()),
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1]
        );
    }

    #[test]
    fn queries_round_trip_through_columns() {
        let rows = vec![
            LocalQuery {
                local: "10.0.0.1:80".parse().unwrap(),
                protocol: Protocol::Udp,
                time_ns: 5,
                cgroup_id: 1,
                netns_id: 2,
                pid: 3,
            },
            LocalQuery {
                local: "[fd00::7]:443".parse().unwrap(),
                protocol: Protocol::Tcp,
                time_ns: 6,
                cgroup_id: 0,
                netns_id: 0,
                pid: 0,
            },
        ];
        assert_eq!(
            LocalQueryColumns::from_rows(&rows).into_rows().unwrap(),
            rows
        );
        let r = vec![ResolveQuery {
            address: "192.0.2.1".parse().unwrap(),
            time_ns: 1,
            asked_at_ns: 2,
        }];
        assert_eq!(ResolveQueryColumns::from_rows(&r).into_rows().unwrap(), r);
    }

    #[test]
    fn ragged_columns_and_unknown_protocols_are_refused() {
        let mut q = LocalQueryColumns::from_rows(&[]);
        q.pid.push(1);
        assert!(q.into_rows().is_err());
        let mut q = LocalQueryColumns::from_rows(&[LocalQuery {
            local: "10.0.0.1:80".parse().unwrap(),
            protocol: Protocol::Tcp,
            time_ns: 0,
            cgroup_id: 0,
            netns_id: 0,
            pid: 0,
        }]);
        assert_eq!(q.protocol, [6]);
        q.protocol[0] = 1;
        assert_eq!(q.into_rows().unwrap_err(), "local query 0: protocol 1");
        let mut r = ResolveQueryColumns::from_rows(&[ResolveQuery {
            address: "192.0.2.1".parse().unwrap(),
            time_ns: 1,
            asked_at_ns: 2,
        }]);
        r.address_octets.pop();
        assert!(
            r.into_rows()
                .unwrap_err()
                .contains("15 address octets for 1 entries")
        );
    }
}
