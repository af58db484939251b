//! "Who owned this address at that time?" answered from the ownership table
//! the way a flow starting then would be answered: the same
//! [`attribute_remote`] pass the release runs (table by the start, the
//! completeness watermark, other regions, resolvers), for a flow from
//! nowhere to the address that starts and ends at the asked time, with no
//! other end's report. Pure: the core lends its parts and the time.

use std::{net::IpAddr, sync::Arc};

use flowattr_model::{AttributedFlow, Flow, Side, TimeRange, Workload};
use serde::Serialize;

use crate::{
    completeness::Completeness,
    live::time::format_time,
    ownership::OwnershipTable,
    remote::{Regions, ResolverSource, Sources, attribute_remote},
};

/// At most this many ranges are listed on each side of the asked time.
pub const AROUND: usize = 3;

/// The whole answer, as `GET /v1/owner` returns it.
#[derive(Debug, Clone, Serialize)]
pub struct OwnerReport {
    pub address: IpAddr,
    pub at_ns: u64,
    pub at: String,
    /// The collector's clock when it answered.
    pub now_ns: u64,
    pub answer: Answer,
    /// The ranges holding `at`, and up to [`AROUND`] before and after it,
    /// by start.
    pub ranges: Vec<RangeRow>,
    /// Ranges the table holds for the address in all.
    pub ranges_total: usize,
    /// Ranges of the address that ended before this were forgotten
    /// (expired or evicted): earlier times answer `expired`.
    pub forgotten_until_ns: Option<u64>,
    pub completeness: CompletenessRow,
}

/// What a flow to the address starting at `at` would be given now.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum Answer {
    Attributed {
        workload: Arc<Workload>,
        source: flowattr_model::AttributionSource,
        /// The resolver plugin that answered (empty for the table).
        #[serde(skip_serializing_if = "str::is_empty")]
        plugin: Arc<str>,
        /// The times around `at` with the same answer.
        valid: TimeRange,
    },
    Unattributed {
        reason: flowattr_model::UnattributedReason,
    },
    /// The address is another region's: its collectors hold its table.
    Forwarded { region: String },
}

/// One ownership range of the address.
#[derive(Debug, Clone, Serialize)]
pub struct RangeRow {
    pub start_ns: u64,
    pub end_ns: u64,
    pub start: String,
    pub end: String,
    pub workload: Arc<Workload>,
    /// The agent whose heartbeats made it (its certificate name).
    pub claimant: Arc<str>,
    /// Where the claim reached this table: `heartbeat` from an agent
    /// connected here, `shared` from another collector through Kafka (as
    /// far as this collector can tell: a claimant it has not measured the
    /// clock of has never sent it a batch).
    pub source: &'static str,
    pub holds_at: bool,
    /// Ended before the expiry horizon: dropped at the next expiry pass,
    /// and no longer answering.
    pub expired: bool,
}

/// How complete the table is for the address at `at`.
#[derive(Debug, Clone, Serialize)]
pub struct CompletenessRow {
    /// Every agent that may claim the address has reported past `at` plus
    /// the clock tolerance (nobody may claim it: complete).
    pub complete: bool,
    /// The watermark the claimants waited for have all reached (the
    /// lowest), if any is waited for.
    pub watermark_ns: Option<u64>,
    pub watermark: Option<String>,
    /// What the watermark must reach: `at` plus the tolerance.
    pub needed_ns: u64,
    pub claimants: Vec<ClaimantRow>,
}

/// One agent that may claim the address.
#[derive(Debug, Clone, Serialize)]
pub struct ClaimantRow {
    pub name: Arc<str>,
    /// Its watermark and when it was last heard from (`None`: never since
    /// this collector started).
    pub watermark_ns: Option<u64>,
    pub heard_ns: Option<u64>,
    /// Whether completeness waits for it (it was heard from within
    /// `silent_after`, or has not been silent that long since start).
    pub waited: bool,
}

/// What the report reads.
pub struct OwnerSources<'a, R> {
    pub table: &'a OwnershipTable,
    pub completeness: &'a Completeness,
    pub regions: &'a Regions,
    pub resolvers: &'a [R],
    /// Whether a claimant has sent batches to this collector.
    pub heard_here: &'a dyn Fn(&str) -> bool,
}

/// The report on `ip` at `at_ns`, as of `now_ns`.
pub fn owner_report<R: ResolverSource>(
    sources: &OwnerSources<'_, R>,
    ip: IpAddr,
    at_ns: u64,
    now_ns: u64,
) -> OwnerReport {
    let completeness = sources.completeness;
    let complete = |flow: &Flow| completeness.flow_complete(flow);
    let nowhere: std::net::SocketAddr = match ip {
        IpAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let mut flow = [AttributedFlow::new(Flow::tcp(
        nowhere,
        (ip, 0).into(),
        at_ns,
    ))];
    let pass = attribute_remote(
        &mut flow,
        &[],
        true,
        &Sources {
            table: sources.table,
            regions: sources.regions,
            resolvers: sources.resolvers,
            complete: &complete,
        },
        now_ns,
    );
    let answer = match (&pass.forward[..], &flow[0].remote) {
        ([(_, region), ..], _) => Answer::Forwarded {
            region: sources.regions.name(*region).to_owned(),
        },
        (_, Side::Attributed(a)) => Answer::Attributed {
            workload: a.workload.clone(),
            source: a.source,
            plugin: a.plugin.clone(),
            valid: a.valid,
        },
        (_, Side::Unattributed(reason)) => Answer::Unattributed { reason: *reason },
        (_, Side::Pending) => unreachable!("a remote pass decides every pending side"),
    };

    let (all, forgotten) = sources.table.claimed_ranges(ip);
    let horizon = now_ns.saturating_sub(sources.table.config().expire_after_ns);
    // Ranges are sorted by start: those ending by `at` are before it, those
    // starting after it are after, the rest hold it.
    let before: Vec<usize> = (0..all.len())
        .filter(|&i| all[i].0.end_ns <= at_ns)
        .collect();
    let after: Vec<usize> = (0..all.len())
        .filter(|&i| all[i].0.start_ns > at_ns)
        .collect();
    let mut shown: Vec<usize> = (0..all.len())
        .filter(|&i| all[i].0.start_ns <= at_ns && at_ns < all[i].0.end_ns)
        .collect();
    let mut latest_before = before;
    latest_before.sort_by_key(|&i| std::cmp::Reverse(all[i].0.end_ns));
    shown.extend(latest_before.into_iter().take(AROUND));
    shown.extend(after.into_iter().take(AROUND));
    shown.sort_unstable();
    let ranges = shown
        .into_iter()
        .map(|i| {
            let (range, workload, claimant) = all[i];
            RangeRow {
                start_ns: range.start_ns,
                end_ns: range.end_ns,
                start: format_time(range.start_ns),
                end: format_time(range.end_ns),
                workload: workload.clone(),
                claimant: claimant.clone(),
                source: if (sources.heard_here)(claimant) {
                    "heartbeat"
                } else {
                    "shared"
                },
                holds_at: range.start_ns <= at_ns && at_ns < range.end_ns,
                expired: range.end_ns < horizon,
            }
        })
        .collect();

    let marks = completeness.claimants_of(ip, now_ns);
    let watermark_ns = marks.iter().filter_map(|&(_, _, waited)| waited).min();
    let claimants: Vec<ClaimantRow> = marks
        .into_iter()
        .map(|(name, mark, waited)| ClaimantRow {
            name: name.clone(),
            watermark_ns: mark.map(|m| m.watermark_ns),
            heard_ns: mark.map(|m| m.heard_ns),
            waited: waited.is_some(),
        })
        .collect();
    OwnerReport {
        address: ip,
        at_ns,
        at: format_time(at_ns),
        now_ns,
        answer,
        ranges,
        ranges_total: all.len(),
        forgotten_until_ns: (forgotten > 0).then_some(forgotten),
        completeness: CompletenessRow {
            complete: completeness.is_complete(ip, at_ns),
            watermark_ns,
            watermark: watermark_ns.map(format_time),
            needed_ns: at_ns.saturating_add(completeness.tolerance_ns()),
            claimants,
        },
    }
}

#[cfg(test)]
mod tests {
    use flowattr_plugin_runtime::Plugin;

    use super::*;
    use crate::ownership::OwnershipConfig;

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_796_479_320 * S;

    fn status(r: &OwnerReport) -> String {
        match &r.answer {
            Answer::Attributed { workload, .. } => workload.id.clone(),
            Answer::Unattributed { reason } => format!("unattributed:{}", reason.as_str()),
            Answer::Forwarded { region } => format!("forwarded:{region}"),
        }
    }

    #[test]
    fn answers_as_a_flow_starting_then_would_be_answered() {
        let mut table = OwnershipTable::new(OwnershipConfig::default());
        table.allow("agent-a", ["10.0.3.0/24".parse().unwrap()]);
        table.allow("agent-b", ["10.0.3.0/24".parse().unwrap()]);
        let ip: IpAddr = "10.0.3.7".parse().unwrap();
        let (a, b) = (
            Arc::new(Workload::with_id("api-a")),
            Arc::new(Workload::with_id("api-b")),
        );
        let now = T0 + 400 * S;
        table.heartbeat(ip, &a, TimeRange::new(T0, T0 + 100 * S), "agent-a", now);
        table.heartbeat(
            ip,
            &b,
            TimeRange::new(T0 + 150 * S, T0 + 250 * S),
            "agent-b",
            now,
        );
        let contested: IpAddr = "10.0.3.8".parse().unwrap();
        table.heartbeat(
            contested,
            &a,
            TimeRange::new(T0, T0 + 100 * S),
            "agent-a",
            now,
        );
        table.heartbeat(
            contested,
            &b,
            TimeRange::new(T0 + 50 * S, T0 + 150 * S),
            "agent-b",
            now,
        );
        let mut completeness = Completeness::new(table.claims(), 4 * S, 300 * S, T0);
        completeness.report("agent-a", now, now);
        completeness.report("agent-b", T0 + 200 * S, now);
        completeness.refresh(now);
        let regions = Regions::new([("eu".to_string(), vec!["10.9.0.0/16".parse().unwrap()])]);
        let sources = OwnerSources {
            table: &table,
            completeness: &completeness,
            regions: &regions,
            resolvers: &[] as &[Arc<Plugin>],
            heard_here: &|c: &str| c == "agent-a",
        };
        let ask = |ip: &str, at| owner_report(&sources, ip.parse().unwrap(), at, now);

        let before = ask("10.0.3.7", T0 + 50 * S);
        assert_eq!(status(&before), "api-a");
        assert!(before.completeness.complete);
        assert_eq!(before.completeness.watermark_ns, Some(T0 + 200 * S));
        assert_eq!(before.ranges.len(), 2);
        assert!(before.ranges[0].holds_at && !before.ranges[1].holds_at);
        assert_eq!(
            (before.ranges[0].source, before.ranges[1].source),
            ("heartbeat", "shared")
        );
        assert_eq!(&*before.ranges[1].claimant, "agent-b");
        assert_eq!(status(&ask("10.0.3.7", T0 + 125 * S)), "unattributed:gap");
        // agent-b has reported up to T0 + 200 s: past that, not yet complete.
        let after = ask("10.0.3.7", T0 + 190 * S);
        assert_eq!(status(&after), "api-b");
        let late = ask("10.0.3.7", T0 + 240 * S);
        assert_eq!(status(&late), "unattributed:incomplete");
        assert!(!late.completeness.complete);
        assert_eq!(late.completeness.needed_ns, T0 + 244 * S);
        assert_eq!(
            status(&ask("10.0.3.8", T0 + 75 * S)),
            "unattributed:conflict"
        );
        let never = ask("10.0.3.99", T0 + 75 * S);
        assert_eq!(status(&never), "unattributed:not-found");
        assert!(never.ranges.is_empty() && never.ranges_total == 0);
        assert_eq!(status(&ask("10.9.1.1", T0)), "forwarded:eu");
        // Nobody may claim it, and no resolver is configured.
        let nobody = ask("192.0.2.1", T0);
        assert_eq!(status(&nobody), "unattributed:not-found");
        assert!(nobody.completeness.claimants.is_empty() && nobody.completeness.complete);
    }
}
