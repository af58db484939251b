//! Batches as columns: the shape the hot-path batches take across the Wasm
//! boundary (`local-queries`, `resolve-queries`, `answers` in the WIT).
//!
//! Columns of numbers are copied across the component boundary as arrays
//! instead of record by record, which is most of the cost of a call. These
//! types convert between rows (what plugin code and callers use) and columns;
//! the SDK and the runtime only move the lists in and out of generated types.

use std::net::{IpAddr, Ipv6Addr};

use crate::{
    Answer, Answers, LocalQuery, Protocol, ResolveQuery, TimeRange, UnattributedReason, Workload,
};

/// An address as the high and low 64 bits of its IPv6 form (IPv4 mapped).
#[inline]
pub fn split_address(address: IpAddr) -> (u64, u64) {
    let v6 = match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let n = u128::from(v6);
    ((n >> 64) as u64, n as u64)
}

/// The address whose halves are `hi` and `lo`; IPv4-mapped addresses come
/// back as IPv4.
#[inline]
pub fn join_address(hi: u64, lo: u64) -> IpAddr {
    Ipv6Addr::from(((hi as u128) << 64) | lo as u128).to_canonical()
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
    pub address_hi: Vec<u64>,
    pub address_lo: Vec<u64>,
    pub port: Vec<u16>,
    pub protocol: Vec<Protocol>,
    pub time_ns: Vec<u64>,
    pub cgroup_id: Vec<u64>,
    pub netns_id: Vec<u64>,
    pub pid: Vec<u32>,
}

impl LocalQueryColumns {
    /// Splits rows into columns.
    pub fn from_rows(rows: &[LocalQuery]) -> Self {
        let mut c = Self::default();
        for q in rows {
            let (hi, lo) = split_address(q.local.ip());
            c.address_hi.push(hi);
            c.address_lo.push(lo);
            c.port.push(q.local.port());
            c.protocol.push(q.protocol);
            c.time_ns.push(q.time_ns);
            c.cgroup_id.push(q.cgroup_id);
            c.netns_id.push(q.netns_id);
            c.pid.push(q.pid);
        }
        c
    }

    /// Joins columns into rows; columns of different lengths are an error.
    pub fn into_rows(self) -> Result<Vec<LocalQuery>, String> {
        let n = self.address_hi.len();
        let lens = [
            self.address_lo.len(),
            self.port.len(),
            self.protocol.len(),
            self.time_ns.len(),
            self.cgroup_id.len(),
            self.netns_id.len(),
            self.pid.len(),
        ];
        same_lengths(n, &lens, "local queries")?;
        Ok((0..n)
            .map(|i| LocalQuery {
                local: (
                    join_address(self.address_hi[i], self.address_lo[i]),
                    self.port[i],
                )
                    .into(),
                protocol: self.protocol[i],
                time_ns: self.time_ns[i],
                cgroup_id: self.cgroup_id[i],
                netns_id: self.netns_id[i],
                pid: self.pid[i],
            })
            .collect())
    }
}

/// [`ResolveQuery`] rows as columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolveQueryColumns {
    pub address_hi: Vec<u64>,
    pub address_lo: Vec<u64>,
    pub time_ns: Vec<u64>,
    pub asked_at_ns: Vec<u64>,
}

impl ResolveQueryColumns {
    /// Splits rows into columns.
    pub fn from_rows(rows: &[ResolveQuery]) -> Self {
        let mut c = Self::default();
        for q in rows {
            let (hi, lo) = split_address(q.address);
            c.address_hi.push(hi);
            c.address_lo.push(lo);
            c.time_ns.push(q.time_ns);
            c.asked_at_ns.push(q.asked_at_ns);
        }
        c
    }

    /// Joins columns into rows; columns of different lengths are an error.
    pub fn into_rows(self) -> Result<Vec<ResolveQuery>, String> {
        let n = self.address_hi.len();
        same_lengths(
            n,
            &[
                self.address_lo.len(),
                self.time_ns.len(),
                self.asked_at_ns.len(),
            ],
            "resolve queries",
        )?;
        Ok((0..n)
            .map(|i| ResolveQuery {
                address: join_address(self.address_hi[i], self.address_lo[i]),
                time_ns: self.time_ns[i],
                asked_at_ns: self.asked_at_ns[i],
            })
            .collect())
    }
}

/// [`Answers`] as columns. `status[i]` is `None` for an attributed answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerColumns {
    pub workloads: Vec<Workload>,
    pub status: Vec<Option<UnattributedReason>>,
    pub workload: Vec<u32>,
    pub valid_start_ns: Vec<u64>,
    pub valid_end_ns: Vec<u64>,
}

impl From<Answers> for AnswerColumns {
    fn from(answers: Answers) -> Self {
        let n = answers.answers.len();
        let mut c = Self {
            workloads: answers.workloads,
            status: Vec::with_capacity(n),
            workload: Vec::with_capacity(n),
            valid_start_ns: Vec::with_capacity(n),
            valid_end_ns: Vec::with_capacity(n),
        };
        for a in answers.answers {
            let (status, workload, valid) = match a {
                Answer::Attributed { workload, valid } => (None, workload, valid),
                Answer::Unattributed(r) => (Some(r), 0, TimeRange::new(0, 0)),
            };
            c.status.push(status);
            c.workload.push(workload);
            c.valid_start_ns.push(valid.start_ns);
            c.valid_end_ns.push(valid.end_ns);
        }
        c
    }
}

impl AnswerColumns {
    /// Joins columns into [`Answers`]; columns of different lengths are an
    /// error (workload indices are checked by [`Answers::check_shape`]).
    pub fn into_answers(self) -> Result<Answers, String> {
        let n = self.status.len();
        same_lengths(
            n,
            &[
                self.workload.len(),
                self.valid_start_ns.len(),
                self.valid_end_ns.len(),
            ],
            "answers",
        )?;
        let answers = (0..n)
            .map(|i| match self.status[i] {
                None => Answer::Attributed {
                    workload: self.workload[i],
                    valid: TimeRange::new(self.valid_start_ns[i], self.valid_end_ns[i]),
                },
                Some(r) => Answer::Unattributed(r),
            })
            .collect();
        Ok(Answers {
            workloads: self.workloads,
            answers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip_and_ipv4_stays_ipv4() {
        for a in ["10.0.0.1", "2001:db8::1", "::1", "0.0.0.0"] {
            let ip: IpAddr = a.parse().unwrap();
            let (hi, lo) = split_address(ip);
            assert_eq!(join_address(hi, lo), ip, "{a}");
        }
        assert_eq!(
            split_address("10.0.0.1".parse().unwrap()),
            (0, 0x0000_ffff_0a00_0001)
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
    fn answers_round_trip_and_ragged_columns_are_refused() {
        let answers = Answers {
            workloads: vec![Workload::with_id("w")],
            answers: vec![
                Answer::Attributed {
                    workload: 0,
                    valid: TimeRange::new(1, 9),
                },
                Answer::Unattributed(UnattributedReason::Gap),
            ],
        };
        let mut columns = AnswerColumns::from(answers.clone());
        assert_eq!(columns.clone().into_answers().unwrap(), answers);
        columns.valid_end_ns.pop();
        assert!(
            columns
                .into_answers()
                .unwrap_err()
                .contains("columns of 2 and 1")
        );
        let mut q = LocalQueryColumns::from_rows(&[]);
        q.pid.push(1);
        assert!(q.into_rows().is_err());
    }
}
