//! Conversions between the domain model and the generated WIT types.

use std::net::IpAddr;

use flowattr_model::columns::{
    AnswerColumns, FlowBatchColumns, LocalQueryColumns, ResolveQueryColumns, SideColumns,
    TableMismatch, WorkloadTable,
};
use flowattr_model::{
    Answers, AttributedFlow, IpChange, IpEvent, LocalQuery, Redactions, ResolveQuery, Verdict,
    Workload,
};

use crate::bindings::identity::exports::flowattr::plugin::identity as wit_identity;
use crate::bindings::policy::exports::flowattr::plugin::policy as wit_policy;
use crate::bindings::resolver::exports::flowattr::plugin::resolver as wit_resolver;
use crate::bindings::wit;

fn ip(a: IpAddr) -> wit::IpAddress {
    match a {
        IpAddr::V4(v4) => wit::IpAddress::V4(u32::from(v4)),
        IpAddr::V6(v6) => {
            let n = u128::from(v6);
            wit::IpAddress::V6(((n >> 64) as u64, n as u64))
        }
    }
}

pub fn local_queries(rows: &[LocalQuery]) -> wit_identity::LocalQueries {
    let c = LocalQueryColumns::from_rows(rows);
    wit_identity::LocalQueries {
        address_octets: c.address_octets,
        port: c.port,
        protocol: c.protocol,
        time_ns: c.time_ns,
        cgroup_id: c.cgroup_id,
        netns_id: c.netns_id,
        pid: c.pid,
    }
}

pub fn resolve_queries(rows: &[ResolveQuery]) -> wit_resolver::ResolveQueries {
    let c = ResolveQueryColumns::from_rows(rows);
    wit_resolver::ResolveQueries {
        address_octets: c.address_octets,
        time_ns: c.time_ns,
        asked_at_ns: c.asked_at_ns,
    }
}

fn workload_record(w: &Workload) -> wit::Workload {
    wit::Workload {
        id: w.id.clone(),
        app: w.app.clone(),
        cluster: w.cluster.clone(),
        stack: w.stack.clone(),
        account: w.account.clone(),
        region: w.region.clone(),
        labels: w
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

pub fn ip_event(e: &IpEvent) -> wit_resolver::IpEvent {
    wit_resolver::IpEvent {
        address: ip(e.address),
        change: match &e.change {
            IpChange::Assigned(w) => wit_resolver::IpChange::Assigned(workload_record(w)),
            IpChange::Released => wit_resolver::IpChange::Released,
        },
        event_time_ns: e.event_time_ns,
        arrival_time_ns: e.arrival_time_ns,
    }
}

fn from_workload(w: wit::Workload) -> Workload {
    Workload {
        id: w.id,
        app: w.app,
        cluster: w.cluster,
        stack: w.stack,
        account: w.account,
        region: w.region,
        labels: w.labels.into_iter().collect(),
    }
}

/// Applies the answers' update to the instance's workload `table` (a
/// mismatch means the instance must be rebuilt), then reads the answers
/// against it; answers that do not fit (a buggy plugin) are an error.
pub fn from_answers(
    a: wit::Answers,
    table: &mut WorkloadTable,
) -> Result<Result<Answers, String>, TableMismatch> {
    table.apply(a.table_keep, a.new_workloads.into_iter().map(from_workload))?;
    Ok(table.answers(AnswerColumns {
        workloads: Vec::new(),
        status: a.status,
        workload: a.workload,
        valid_start_ns: a.valid_start_ns,
        valid_end_ns: a.valid_end_ns,
        port_scoped: a.port_scoped,
    }))
}

fn side_columns(c: SideColumns) -> wit::SideColumns {
    wit::SideColumns {
        status: c.status,
        workload: c.workload,
        source: c.source,
        plugin: c.plugin,
        valid_start_ns: c.valid_start_ns,
        valid_end_ns: c.valid_end_ns,
    }
}

/// Attributed flows as one columnar `flow-batch`: workloads and plugin
/// names listed once, referred to by index.
pub fn flow_batch(flows: &[AttributedFlow]) -> wit::FlowBatch {
    let c = FlowBatchColumns::from_rows(flows);
    wit::FlowBatch {
        workloads: c.workloads.iter().map(|w| workload_record(w)).collect(),
        plugins: c.plugins.iter().map(|p| p.to_string()).collect(),
        protocol: c.protocol,
        ipv4: c.ipv4,
        local_address_octets: c.local_address_octets,
        local_port: c.local_port,
        remote_address_octets: c.remote_address_octets,
        remote_port: c.remote_port,
        initiator: c.initiator,
        end_state: c.end_state,
        start_ns: c.start_ns,
        end_ns: c.end_ns,
        bytes_sent: c.bytes_sent,
        bytes_received: c.bytes_received,
        packets_sent: c.packets_sent,
        packets_received: c.packets_received,
        retransmits: c.retransmits,
        srtt_us: c.srtt_us,
        cgroup_id: c.cgroup_id,
        netns_id: c.netns_id,
        pid: c.pid,
        weight: c.weight,
        record_ids: c.record_id,
        local: side_columns(c.local),
        remote: side_columns(c.remote),
    }
}

pub fn from_verdict(v: wit_policy::Verdict) -> Verdict {
    use wit_policy::Redactions as R;
    match v {
        wit_policy::Verdict::Keep => Verdict::Keep,
        wit_policy::Verdict::Drop => Verdict::Drop,
        wit_policy::Verdict::Sample(n) => Verdict::Sample(n),
        wit_policy::Verdict::Redact(r) => Verdict::Redact(Redactions {
            local_address: r.contains(R::LOCAL_ADDRESS),
            remote_address: r.contains(R::REMOTE_ADDRESS),
            ports: r.contains(R::PORTS),
            process: r.contains(R::PROCESS),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_use_network_order_integers() {
        assert!(matches!(
            ip("10.0.0.1".parse().unwrap()),
            wit::IpAddress::V4(0x0a00_0001)
        ));
        assert!(matches!(
            ip("2001:db8::1".parse().unwrap()),
            wit::IpAddress::V6((0x2001_0db8_0000_0000, 1))
        ));
    }

    /// The model puts each case's position in the columns; the WIT enums
    /// must list the same-named cases in the same order.
    #[test]
    fn column_codes_are_the_wit_enum_positions() {
        use flowattr_model::{AttributionSource, FlowEnd, Initiator, UnattributedReason};
        let initiator = [
            (Initiator::Local, wit::Initiator::Local),
            (Initiator::Remote, wit::Initiator::Remote),
            (Initiator::Unknown, wit::Initiator::Unknown),
        ];
        let end = [
            (FlowEnd::Closed, wit::FlowEnd::Closed),
            (FlowEnd::Ongoing, wit::FlowEnd::Ongoing),
            (FlowEnd::Refused, wit::FlowEnd::Refused),
            (FlowEnd::Reset, wit::FlowEnd::Reset),
            (FlowEnd::Failed, wit::FlowEnd::Failed),
        ];
        let source = [
            (AttributionSource::Capture, wit::AttributionSource::Capture),
            (
                AttributionSource::Heartbeat,
                wit::AttributionSource::Heartbeat,
            ),
            (
                AttributionSource::Resolver,
                wit::AttributionSource::Resolver,
            ),
            (
                AttributionSource::Counterpart,
                wit::AttributionSource::Counterpart,
            ),
            (
                AttributionSource::CaptureShared,
                wit::AttributionSource::CaptureShared,
            ),
        ];
        use wit::UnattributedReason as R;
        let reason = [
            (UnattributedReason::NotFound, R::NotFound),
            (UnattributedReason::SourceUnavailable, R::SourceUnavailable),
            (UnattributedReason::Conflict, R::Conflict),
            (UnattributedReason::Gap, R::Gap),
            (UnattributedReason::Expired, R::Expired),
            (UnattributedReason::ClockSkew, R::ClockSkew),
            (UnattributedReason::PluginFailed, R::PluginFailed),
            (UnattributedReason::Incomplete, R::Incomplete),
        ];
        assert_eq!(initiator.len(), Initiator::ALL.len());
        assert_eq!(end.len(), FlowEnd::ALL.len());
        assert_eq!(source.len(), AttributionSource::ALL.len());
        assert_eq!(reason.len(), UnattributedReason::ALL.len());
        for (m, w) in initiator {
            assert_eq!(m as u8, w as u8, "{m:?}");
        }
        for (m, w) in end {
            assert_eq!(m as u8, w as u8, "{m:?}");
        }
        for (m, w) in source {
            assert_eq!(m as u8, w as u8, "{m:?}");
        }
        for (m, w) in reason {
            assert_eq!(m as u8, w as u8, "{m:?}");
        }
    }

    #[test]
    fn each_flow_s_record_id_is_in_the_record_ids_column() {
        let flow = |record_id| AttributedFlow {
            record_id,
            ..AttributedFlow::new(flowattr_model::Flow::tcp(
                "10.0.0.1:1".parse().unwrap(),
                "10.0.0.2:2".parse().unwrap(),
                3,
            ))
        };
        let batch = flow_batch(&[flow(0x5d6c_620e_8e66_909b), flow(0), flow(u64::MAX)]);
        assert_eq!(batch.record_ids, [0x5d6c_620e_8e66_909b, 0, u64::MAX]);
        assert_eq!(batch.record_ids.len(), batch.weight.len());
    }

    #[test]
    fn the_port_scoped_column_becomes_the_answer_scope_and_other_values_are_refused() {
        use flowattr_model::AnswerScope;
        // The third answer is `not-found` (status 1) unless told otherwise.
        let answers = |port_scoped, third| wit::Answers {
            table_keep: 0,
            new_workloads: vec![workload_record(&Workload::with_id("c-web"))],
            status: vec![0, 0, third],
            workload: vec![0, 0, 0],
            valid_start_ns: vec![1, 1, 0],
            valid_end_ns: vec![2, 2, 0],
            port_scoped,
        };
        let got = from_answers(answers(vec![1, 0, 0], 1), &mut WorkloadTable::default())
            .unwrap()
            .unwrap();
        assert_eq!(got.scope(0), Some(AnswerScope::Port));
        assert_eq!(got.scope(1), Some(AnswerScope::Address));
        assert_eq!(got.scope(2), None);
        assert!(!got.shared_not_found(2));
        // Port-scoped `not-found`: the address is shared by port.
        let got = from_answers(answers(vec![0, 0, 1], 1), &mut WorkloadTable::default())
            .unwrap()
            .unwrap();
        assert!(got.shared_not_found(2));
        // Another reason (2, source-unavailable) cannot be port-scoped.
        for (bad, third) in [(vec![2, 0, 0], 1), (vec![0, 0, 1], 2), (vec![0, 0], 1)] {
            let err = from_answers(answers(bad.clone(), third), &mut WorkloadTable::default())
                .unwrap()
                .unwrap_err();
            assert!(err.starts_with("answer"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn ragged_answer_columns_are_a_plugin_error_and_a_table_mismatch_is_not_applied() {
        let answers = |table_keep| wit::Answers {
            table_keep,
            new_workloads: vec![],
            status: vec![1, 4],
            workload: vec![0],
            valid_start_ns: vec![0, 0],
            valid_end_ns: vec![0, 0],
            port_scoped: vec![0, 0],
        };
        let mut table = WorkloadTable::default();
        assert!(from_answers(answers(0), &mut table).unwrap().is_err());
        assert_eq!(
            from_answers(answers(3), &mut table).unwrap_err().0,
            "keeps 3 workload table entries, but the table has 0"
        );
    }
}
