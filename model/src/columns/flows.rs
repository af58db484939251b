//! Attributed flows as columns: the WIT `flow-batch` that policy and sink
//! plugins take.
//!
//! A batch of ten thousand flows crosses the Wasm boundary as a few dozen
//! arrays instead of ten thousand nested records, each field of which the
//! runtime would otherwise store one at a time. Each distinct workload
//! ([`WorkloadDictionary`]) and plugin name is listed once and referred to
//! by index.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::{
    address_count, address_octets_of, ipv6, mapped_ipv4, reason_code, reason_of_code, same_lengths,
};
use crate::{
    AttributedFlow, Attribution, AttributionSource, Flow, FlowEnd, Initiator, Protocol, Side,
    TimeRange, Workload, WorkloadDictionary,
};

/// Bit of [`FlowBatchColumns::ipv4`] set when the local address is IPv4.
pub const LOCAL_IPV4: u8 = 1;
/// Bit of [`FlowBatchColumns::ipv4`] set when the remote address is IPv4.
pub const REMOTE_IPV4: u8 = 2;

/// The side status code of a side not looked at yet. Attributed is 0 and
/// unattributed is 1 + the reason's position, as in the answer columns.
pub const PENDING: u8 = 255;

/// One side (local or remote) of every flow in a batch. Where a side is not
/// attributed, its `workload`, `source`, `plugin` and validity are 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SideColumns {
    /// 0 attributed, 1 + [`crate::UnattributedReason`] position, or [`PENDING`].
    pub status: Vec<u8>,
    /// Index into [`FlowBatchColumns::workloads`].
    pub workload: Vec<u32>,
    /// [`AttributionSource`] position.
    pub source: Vec<u8>,
    /// Index into [`FlowBatchColumns::plugins`].
    pub plugin: Vec<u32>,
    pub valid_start_ns: Vec<u64>,
    pub valid_end_ns: Vec<u64>,
}

/// [`AttributedFlow`] rows as columns, with the workloads and plugin names
/// they name listed once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FlowBatchColumns {
    pub workloads: Vec<Arc<Workload>>,
    pub plugins: Vec<Arc<str>>,
    /// IANA numbers ([`Protocol::number`]).
    pub protocol: Vec<u8>,
    /// Which of each flow's addresses are IPv4: [`LOCAL_IPV4`] and
    /// [`REMOTE_IPV4`]. An address without its bit is the IPv6 address its
    /// octets spell, even an IPv4-mapped one, so flows cross unchanged.
    pub ipv4: Vec<u8>,
    /// 16 octets per flow, as [`address_octets_of`] gives them.
    pub local_address_octets: Vec<u8>,
    pub local_port: Vec<u16>,
    /// 16 octets per flow.
    pub remote_address_octets: Vec<u8>,
    pub remote_port: Vec<u16>,
    /// [`Initiator`] position.
    pub initiator: Vec<u8>,
    /// [`FlowEnd`] position.
    pub end_state: Vec<u8>,
    pub start_ns: Vec<u64>,
    pub end_ns: Vec<u64>,
    pub bytes_sent: Vec<u64>,
    pub bytes_received: Vec<u64>,
    pub packets_sent: Vec<u64>,
    pub packets_received: Vec<u64>,
    pub retransmits: Vec<u32>,
    pub srtt_us: Vec<u32>,
    pub cgroup_id: Vec<u64>,
    pub netns_id: Vec<u64>,
    pub pid: Vec<u32>,
    pub weight: Vec<u32>,
    /// Each record's stable id ([`AttributedFlow::record_id`]; 0 where
    /// none is assigned).
    pub record_id: Vec<u64>,
    pub local: SideColumns,
    pub remote: SideColumns,
}

/// Lists each distinct workload and plugin name once, for the rows being
/// converted.
#[derive(Default)]
struct Dictionary<'a> {
    workloads: WorkloadDictionary<'a>,
    plugins: Vec<Arc<str>>,
}

impl<'a> Dictionary<'a> {
    fn workload(&mut self, w: &'a Arc<Workload>) -> u32 {
        self.workloads.index(w)
    }

    /// A batch names a handful of plugins, so a scan beats hashing.
    fn plugin(&mut self, name: &Arc<str>) -> u32 {
        match self.plugins.iter().position(|p| p == name) {
            Some(i) => i as u32,
            None => {
                self.plugins.push(name.clone());
                self.plugins.len() as u32 - 1
            }
        }
    }
}

impl SideColumns {
    fn with_capacity(n: usize) -> Self {
        Self {
            status: Vec::with_capacity(n),
            workload: Vec::with_capacity(n),
            source: Vec::with_capacity(n),
            plugin: Vec::with_capacity(n),
            valid_start_ns: Vec::with_capacity(n),
            valid_end_ns: Vec::with_capacity(n),
        }
    }

    fn push<'a>(&mut self, side: &'a Side, dictionary: &mut Dictionary<'a>) {
        let (status, workload, source, plugin, valid) = match side {
            Side::Attributed(a) => (
                0,
                dictionary.workload(&a.workload),
                a.source as u8,
                dictionary.plugin(&a.plugin),
                a.valid,
            ),
            Side::Unattributed(r) => (reason_code(*r), 0, 0, 0, TimeRange::new(0, 0)),
            Side::Pending => (PENDING, 0, 0, 0, TimeRange::new(0, 0)),
        };
        self.status.push(status);
        self.workload.push(workload);
        self.source.push(source);
        self.plugin.push(plugin);
        self.valid_start_ns.push(valid.start_ns);
        self.valid_end_ns.push(valid.end_ns);
    }

    fn check_lengths(&self, n: usize, what: &str) -> Result<(), String> {
        same_lengths(
            n,
            &[
                self.status.len(),
                self.workload.len(),
                self.source.len(),
                self.plugin.len(),
                self.valid_start_ns.len(),
                self.valid_end_ns.len(),
            ],
            what,
        )
    }

    /// Side `i`, its indexes resolved against the batch's lists.
    fn side(
        &self,
        i: usize,
        workloads: &[Arc<Workload>],
        plugins: &[Arc<str>],
        what: &str,
    ) -> Result<Side, String> {
        let attribution = || -> Result<Attribution, String> {
            let workload = workloads.get(self.workload[i] as usize).ok_or_else(|| {
                format!(
                    "flow {i}: {what} workload {} is not listed",
                    self.workload[i]
                )
            })?;
            let plugin = plugins.get(self.plugin[i] as usize).ok_or_else(|| {
                format!("flow {i}: {what} plugin {} is not listed", self.plugin[i])
            })?;
            let source = *AttributionSource::ALL
                .get(usize::from(self.source[i]))
                .ok_or_else(|| format!("flow {i}: {what} source {}", self.source[i]))?;
            Ok(Attribution {
                workload: workload.clone(),
                source,
                plugin: plugin.clone(),
                valid: TimeRange::new(self.valid_start_ns[i], self.valid_end_ns[i]),
            })
        };
        match self.status[i] {
            0 => attribution().map(Side::Attributed),
            PENDING => Ok(Side::Pending),
            code => reason_of_code(code)
                .map(Side::Unattributed)
                .ok_or_else(|| format!("flow {i}: {what} status {code}")),
        }
    }
}

/// The address in `octets` (16), IPv4 when `ipv4` (the octets must then be
/// IPv4-mapped), otherwise IPv6 exactly as spelled.
fn address(octets: &[u8], ipv4: bool) -> Option<IpAddr> {
    if ipv4 {
        mapped_ipv4(octets).map(IpAddr::V4)
    } else {
        Some(IpAddr::V6(ipv6(octets)))
    }
}

/// Position `i` of a code table, or an error naming the column.
fn code<T: Copy>(table: &[T], code: u8, i: usize, what: &str) -> Result<T, String> {
    table
        .get(usize::from(code))
        .copied()
        .ok_or_else(|| format!("flow {i}: {what} {code}"))
}

impl FlowBatchColumns {
    /// Splits rows into columns.
    pub fn from_rows(rows: &[AttributedFlow]) -> Self {
        let n = rows.len();
        let flows = || rows.iter().map(|f| &f.flow);
        let mut dictionary = Dictionary::default();
        let mut local = SideColumns::with_capacity(n);
        let mut remote = SideColumns::with_capacity(n);
        for f in rows {
            local.push(&f.local, &mut dictionary);
            remote.push(&f.remote, &mut dictionary);
        }
        let octets = |end: fn(&Flow) -> SocketAddr| {
            let mut out = Vec::with_capacity(16 * n);
            for f in flows() {
                out.extend_from_slice(&address_octets_of(end(f).ip()));
            }
            out
        };
        Self {
            workloads: dictionary
                .workloads
                .workloads()
                .iter()
                .map(|w| Arc::clone(w))
                .collect(),
            plugins: dictionary.plugins,
            protocol: flows().map(|f| f.protocol.number()).collect(),
            ipv4: flows()
                .map(|f| {
                    let bit = |ipv4: bool, bit: u8| if ipv4 { bit } else { 0 };
                    bit(f.local.is_ipv4(), LOCAL_IPV4) | bit(f.remote.is_ipv4(), REMOTE_IPV4)
                })
                .collect(),
            local_address_octets: octets(|f| f.local),
            local_port: flows().map(|f| f.local.port()).collect(),
            remote_address_octets: octets(|f| f.remote),
            remote_port: flows().map(|f| f.remote.port()).collect(),
            initiator: flows().map(|f| f.initiator as u8).collect(),
            end_state: flows().map(|f| f.end_state as u8).collect(),
            start_ns: flows().map(|f| f.start_ns).collect(),
            end_ns: flows().map(|f| f.end_ns).collect(),
            bytes_sent: flows().map(|f| f.bytes_sent).collect(),
            bytes_received: flows().map(|f| f.bytes_received).collect(),
            packets_sent: flows().map(|f| f.packets_sent).collect(),
            packets_received: flows().map(|f| f.packets_received).collect(),
            retransmits: flows().map(|f| f.retransmits).collect(),
            srtt_us: flows().map(|f| f.srtt_us).collect(),
            cgroup_id: flows().map(|f| f.cgroup_id).collect(),
            netns_id: flows().map(|f| f.netns_id).collect(),
            pid: flows().map(|f| f.pid).collect(),
            weight: rows.iter().map(|f| f.weight).collect(),
            record_id: rows.iter().map(|f| f.record_id).collect(),
            local,
            remote,
        }
    }

    /// Joins columns into rows. Columns of different lengths, an unknown
    /// code or an index outside the batch's lists are an error.
    pub fn into_rows(self) -> Result<Vec<AttributedFlow>, String> {
        let n = self.protocol.len();
        same_lengths(
            n,
            &[
                self.ipv4.len(),
                self.local_port.len(),
                self.remote_port.len(),
                self.initiator.len(),
                self.end_state.len(),
                self.start_ns.len(),
                self.end_ns.len(),
                self.bytes_sent.len(),
                self.bytes_received.len(),
                self.packets_sent.len(),
                self.packets_received.len(),
                self.retransmits.len(),
                self.srtt_us.len(),
                self.cgroup_id.len(),
                self.netns_id.len(),
                self.pid.len(),
                self.weight.len(),
                self.record_id.len(),
            ],
            "flow batch",
        )?;
        self.local.check_lengths(n, "flow batch, local side")?;
        self.remote.check_lengths(n, "flow batch, remote side")?;
        address_count(&self.local_address_octets, n, "flow batch, local")?;
        address_count(&self.remote_address_octets, n, "flow batch, remote")?;
        let mut rows = Vec::with_capacity(n);
        let ends = self
            .local_address_octets
            .chunks_exact(16)
            .zip(self.remote_address_octets.chunks_exact(16));
        for (i, (local, remote)) in ends.enumerate() {
            let marked = |side| {
                format!("flow {i}: the {side} address is marked IPv4 but is not IPv4-mapped")
            };
            let local =
                address(local, self.ipv4[i] & LOCAL_IPV4 != 0).ok_or_else(|| marked("local"))?;
            let remote =
                address(remote, self.ipv4[i] & REMOTE_IPV4 != 0).ok_or_else(|| marked("remote"))?;
            let protocol = Protocol::from_number(self.protocol[i])
                .ok_or_else(|| format!("flow {i}: protocol {}", self.protocol[i]))?;
            rows.push(AttributedFlow {
                flow: Flow {
                    protocol,
                    local: SocketAddr::new(local, self.local_port[i]),
                    remote: SocketAddr::new(remote, self.remote_port[i]),
                    initiator: code(&Initiator::ALL, self.initiator[i], i, "initiator")?,
                    end_state: code(&FlowEnd::ALL, self.end_state[i], i, "end state")?,
                    start_ns: self.start_ns[i],
                    end_ns: self.end_ns[i],
                    bytes_sent: self.bytes_sent[i],
                    bytes_received: self.bytes_received[i],
                    packets_sent: self.packets_sent[i],
                    packets_received: self.packets_received[i],
                    retransmits: self.retransmits[i],
                    srtt_us: self.srtt_us[i],
                    cgroup_id: self.cgroup_id[i],
                    netns_id: self.netns_id[i],
                    pid: self.pid[i],
                },
                local: self
                    .local
                    .side(i, &self.workloads, &self.plugins, "local")?,
                remote: self
                    .remote
                    .side(i, &self.workloads, &self.plugins, "remote")?,
                weight: self.weight[i],
                record_id: self.record_id[i],
            });
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UnattributedReason;

    fn attributed(workload: &Arc<Workload>, source: AttributionSource, plugin: &str) -> Side {
        Side::Attributed(Attribution {
            workload: workload.clone(),
            source,
            plugin: plugin.into(),
            valid: TimeRange::new(10, 20),
        })
    }

    /// Flows covering every side kind, both address families, every code.
    fn flows() -> (Vec<AttributedFlow>, Arc<Workload>, Arc<Workload>) {
        let web = Arc::new(Workload::with_id("web"));
        let db = Arc::new(Workload::with_id("db"));
        let mut udp = Flow::tcp(
            "[fd00::1]:5353".parse().unwrap(),
            "10.0.0.9:53".parse().unwrap(),
            7,
        );
        udp.protocol = Protocol::Udp;
        udp.initiator = Initiator::Local;
        udp.end_state = FlowEnd::Failed;
        udp.bytes_sent = 1;
        udp.bytes_received = 2;
        udp.packets_sent = 3;
        udp.packets_received = 4;
        udp.retransmits = 5;
        udp.srtt_us = 6;
        udp.cgroup_id = 8;
        udp.netns_id = 9;
        udp.pid = 10;
        let tcp = Flow::tcp(
            "10.0.0.1:40000".parse().unwrap(),
            "[::ffff:10.0.0.2]:443".parse().unwrap(),
            3,
        );
        let rows = vec![
            AttributedFlow {
                flow: tcp.clone(),
                local: attributed(&web, AttributionSource::Capture, "ipman"),
                remote: attributed(&db, AttributionSource::Heartbeat, ""),
                weight: 1,
                record_id: 0x0123_4567_89ab_cdef,
            },
            AttributedFlow {
                flow: udp,
                local: attributed(&web, AttributionSource::CaptureShared, "ipman"),
                remote: Side::Unattributed(UnattributedReason::PluginFailed),
                weight: 4,
                record_id: u64::MAX,
            },
            AttributedFlow {
                flow: tcp,
                local: Side::Pending,
                remote: attributed(&db, AttributionSource::Resolver, "sonar-legacy"),
                weight: 1,
                record_id: 0,
            },
        ];
        (rows, web, db)
    }

    #[test]
    fn flows_round_trip_and_list_each_workload_and_plugin_once() {
        let (rows, web, db) = flows();
        let columns = FlowBatchColumns::from_rows(&rows);
        assert_eq!(columns.workloads, [web, db]);
        let plugins: Vec<&str> = columns.plugins.iter().map(|p| &**p).collect();
        assert_eq!(plugins, ["ipman", "", "sonar-legacy"]);
        assert_eq!(columns.local.status, [0, 0, PENDING]);
        assert_eq!(columns.remote.status, [0, 7, 0]);
        assert_eq!(columns.local.source, [0, 4, 0]);
        assert_eq!(columns.remote.source, [1, 0, 2]);
        assert_eq!(columns.protocol, [6, 17, 6]);
        assert_eq!(columns.ipv4, [LOCAL_IPV4, REMOTE_IPV4, LOCAL_IPV4]);
        assert_eq!(columns.initiator, [2, 0, 2]);
        assert_eq!(columns.end_state, [0, 4, 0]);
        assert_eq!(columns.record_id, [0x0123_4567_89ab_cdef, u64::MAX, 0]);
        assert_eq!(columns.into_rows().unwrap(), rows);
        assert!(
            FlowBatchColumns::from_rows(&[])
                .into_rows()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn attributed_sides_share_the_listed_workload() {
        let (rows, ..) = flows();
        let back = FlowBatchColumns::from_rows(&rows).into_rows().unwrap();
        let (Side::Attributed(a), Side::Attributed(b)) = (&back[0].local, &back[1].local) else {
            panic!("both attributed");
        };
        assert!(Arc::ptr_eq(&a.workload, &b.workload));
    }

    #[test]
    fn bad_columns_are_refused_with_what_is_wrong() {
        let (rows, ..) = flows();
        let good = FlowBatchColumns::from_rows(&rows);
        let refused = |change: fn(&mut FlowBatchColumns)| {
            let mut c = good.clone();
            change(&mut c);
            c.into_rows().unwrap_err()
        };
        assert_eq!(refused(|c| c.protocol[1] = 1), "flow 1: protocol 1");
        assert_eq!(
            refused(|c| c.ipv4[1] = LOCAL_IPV4 | REMOTE_IPV4),
            "flow 1: the local address is marked IPv4 but is not IPv4-mapped"
        );
        assert_eq!(refused(|c| c.initiator[0] = 3), "flow 0: initiator 3");
        assert_eq!(refused(|c| c.end_state[2] = 5), "flow 2: end state 5");
        assert_eq!(
            refused(|c| c.remote.status[1] = 9),
            "flow 1: remote status 9"
        );
        assert_eq!(refused(|c| c.local.source[0] = 5), "flow 0: local source 5");
        assert_eq!(
            refused(|c| c.local.workload[0] = 2),
            "flow 0: local workload 2 is not listed"
        );
        assert_eq!(
            refused(|c| c.remote.plugin[2] = 3),
            "flow 2: remote plugin 3 is not listed"
        );
        assert!(
            refused(|c| {
                c.weight.pop();
            })
            .contains("columns of 3 and 2")
        );
        assert!(
            refused(|c| {
                c.record_id.pop();
            })
            .contains("columns of 3 and 2")
        );
        assert!(
            refused(|c| {
                c.remote.valid_end_ns.pop();
            })
            .contains("remote side")
        );
        assert!(
            refused(|c| {
                c.local_address_octets.pop();
            })
            .contains("47 address octets")
        );
    }
}
