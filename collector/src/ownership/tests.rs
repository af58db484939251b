//! The ownership table's rules, each with an explicit clock: IP reuse, late
//! and out-of-order heartbeats, gaps, clock skew, conflicts, expiry, refused
//! claimants, the memory bound, sharing, and random schedules checked
//! against ground truth.

use std::{net::IpAddr, sync::Arc};

use flowattr_model::{TimeRange, UnattributedReason, Workload};

use super::*;
use UnattributedReason::{ClockSkew, Conflict, Expired, Gap, NotFound};

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
/// "Now" for tests that do not care: well after every range, well before
/// any expires.
const NOW: u64 = 1_700 * S;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn w(id: &str) -> Arc<Workload> {
    Arc::new(Workload::with_id(id))
}

/// `[a, b)` in seconds.
fn r(a: u64, b: u64) -> TimeRange {
    TimeRange::new(a * S, b * S)
}

/// A table that trusts the claimant "agent" for every address, with
/// agents' clocks within 1 s of the collector's: a tolerance of 2 s
/// between two hosts.
fn table() -> OwnershipTable {
    table_with(config())
}

fn config() -> OwnershipConfig {
    OwnershipConfig {
        max_skew_ns: S,
        ..OwnershipConfig::default()
    }
}

fn table_with(config: OwnershipConfig) -> OwnershipTable {
    let mut t = OwnershipTable::new(config);
    t.allow_any("agent");
    t
}

/// The owner's id at `t_ns`, as of [`NOW`].
fn owner(t: &OwnershipTable, addr: &str, t_ns: u64) -> Result<String, UnattributedReason> {
    owner_at(t, addr, t_ns, NOW)
}

fn owner_at(
    t: &OwnershipTable,
    addr: &str,
    t_ns: u64,
    now_ns: u64,
) -> Result<String, UnattributedReason> {
    t.lookup(ip(addr), t_ns, now_ns).map(|(w, _)| w.id.clone())
}

fn beat(
    t: &mut OwnershipTable,
    addr: &str,
    who: &Arc<Workload>,
    seen: TimeRange,
) -> HeartbeatOutcome {
    t.heartbeat(ip(addr), who, seen, "agent", NOW)
}

#[test]
fn ip_reuse_a_few_seconds_later_gives_each_period_its_own_workload() {
    let mut t = table();
    let (old, new) = (w("old"), w("new"));
    // The old workload's flows up to 1100 s, then it stops; the address is
    // reused by the new workload from 1105 s.
    assert_eq!(
        beat(&mut t, "10.0.0.1", &old, r(1000, 1010)),
        HeartbeatOutcome::Inserted
    );
    assert_eq!(
        beat(&mut t, "10.0.0.1", &old, r(1020, 1100)),
        HeartbeatOutcome::Merged
    );
    assert_eq!(
        beat(&mut t, "10.0.0.1", &new, r(1105, 1200)),
        HeartbeatOutcome::Inserted
    );
    assert_eq!(t.len_ranges(), 2);

    assert_eq!(owner(&t, "10.0.0.1", 1050 * S), Ok("old".into()));
    assert_eq!(
        owner(&t, "10.0.0.1", 1015 * S),
        Ok("old".into()),
        "merged gap"
    );
    assert_eq!(owner(&t, "10.0.0.1", 1097 * S), Ok("old".into()));
    assert_eq!(
        owner(&t, "10.0.0.1", 1099 * S),
        Err(ClockSkew),
        "within the tolerance of the range's end: its next owner may have had it"
    );
    assert_eq!(owner(&t, "10.0.0.1", 1150 * S), Ok("new".into()));
    // The gap: never either workload.
    assert_eq!(owner(&t, "10.0.0.1", 1102 * S + 500 * MS), Err(Gap));
    assert_eq!(owner(&t, "10.0.0.1", 1101 * S), Err(ClockSkew));
    assert_eq!(owner(&t, "10.0.0.1", 1104 * S), Err(ClockSkew));

    // Validity: the times that get the same answer, a tolerance inside.
    let (_, valid) = t.lookup(ip("10.0.0.1"), 1050 * S, NOW).unwrap();
    assert_eq!(valid, r(1002, 1098));
    let (_, valid) = t.lookup(ip("10.0.0.1"), 1150 * S, NOW).unwrap();
    assert_eq!(valid, r(1107, 1198));
}

#[test]
fn reuse_within_the_clock_tolerance_is_clock_skew_near_the_handover() {
    let mut t = table();
    beat(&mut t, "10.0.0.1", &w("old"), r(1000, 1100));
    beat(&mut t, "10.0.0.1", &w("new"), r(1101, 1200));
    assert_eq!(owner(&t, "10.0.0.1", 1099 * S + 500 * MS), Err(ClockSkew));
    assert_eq!(owner(&t, "10.0.0.1", 1100 * S + 500 * MS), Err(ClockSkew));
    assert_eq!(owner(&t, "10.0.0.1", 1101 * S + 500 * MS), Err(ClockSkew));
    assert_eq!(owner(&t, "10.0.0.1", 1097 * S), Ok("old".into()));
    assert_eq!(owner(&t, "10.0.0.1", 1104 * S), Ok("new".into()));
    // Each answer holds a tolerance (2 s) inside its range and away from
    // the other's.
    let (_, valid) = t.lookup(ip("10.0.0.1"), 1050 * S, NOW).unwrap();
    assert_eq!(valid, r(1002, 1098));
    let (_, valid) = t.lookup(ip("10.0.0.1"), 1150 * S, NOW).unwrap();
    assert_eq!(valid, r(1103, 1198));
}

/// Heartbeats of a small fleet, including a late claim that bridges a gap
/// across another workload's claim.
fn schedule() -> Vec<(&'static str, &'static str, TimeRange)> {
    vec![
        ("10.0.0.1", "a", r(1000, 1010)),
        ("10.0.0.1", "a", r(1005, 1030)),
        ("10.0.0.1", "a", r(1050, 1060)),
        ("10.0.0.1", "b", r(1200, 1300)),
        ("10.0.0.1", "b", r(1250, 1320)),
        ("10.0.0.1", "c", r(1400, 1410)),
        ("10.0.0.2", "x", r(1000, 1010)),
        ("10.0.0.2", "y", r(1012, 1020)),
        ("10.0.0.2", "x", r(1025, 1030)),
        ("fd00::5", "a", r(1000, 1001)),
        ("fd00::5", "a", r(1100, 1101)),
        ("fd00::5", "b", r(1100, 1102)),
    ]
}

fn table_from(beats: &[(&str, &str, TimeRange)]) -> OwnershipTable {
    let mut t = table();
    for (addr, id, seen) in beats {
        beat(&mut t, addr, &w(id), *seen);
    }
    t
}

#[test]
fn late_and_out_of_order_heartbeats_give_the_in_order_table() {
    let in_order = table_from(&schedule());
    let mut reversed = schedule();
    reversed.reverse();
    let mut interleaved = schedule();
    interleaved.sort_by_key(|(addr, id, seen)| (seen.end_ns % 7, *id, *addr));
    let late_bridge = {
        // 10.0.0.2's "x" arrives in one piece only after "y".
        let mut s = schedule();
        s.swap(7, 8);
        s
    };
    for other in [reversed, interleaved, late_bridge] {
        assert_eq!(table_from(&other).dump(), in_order.dump());
    }

    let t = in_order;
    // x's two claims 15 s apart join across y's claim: y's period is
    // contested, and x keeps the rest.
    assert_eq!(owner(&t, "10.0.0.2", 1015 * S), Err(Conflict));
    assert_eq!(owner(&t, "10.0.0.2", 1005 * S), Ok("x".into()));
    assert_eq!(owner(&t, "10.0.0.2", 1027 * S), Ok("x".into()));
    assert_eq!(owner(&t, "10.0.0.1", 1040 * S), Ok("a".into()));
    assert_eq!(owner(&t, "10.0.0.1", 1280 * S), Ok("b".into()));
    assert_eq!(owner(&t, "10.0.0.1", 1405 * S), Ok("c".into()));
}

#[test]
fn lookup_many_answers_as_lookup_does() {
    let t = table_from(&schedule());
    let queries: Vec<(IpAddr, u64)> = ["10.0.0.1", "10.0.0.2", "fd00::5", "10.9.9.9"]
        .iter()
        .flat_map(|a| {
            (990..1420)
                .step_by(3)
                .map(move |s| (ip(a), s * S + 300 * MS))
        })
        .collect();
    let mut answers = Vec::new();
    t.lookup_many(&queries, NOW, &mut answers);
    assert_eq!(answers.len(), queries.len());
    for (&(addr, at), answer) in queries.iter().zip(&answers) {
        assert_eq!(*answer, t.lookup(addr, at, NOW), "{addr} at {at}");
    }
    let reasons: std::collections::HashSet<_> = answers.iter().filter_map(|a| a.err()).collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
}

#[test]
fn a_flow_starting_in_a_gap_is_gap_and_outside_all_ranges_not_found() {
    let mut t = table();
    let a = w("a");
    beat(&mut t, "10.0.0.1", &a, r(1000, 1010));
    // 90 s later: more than the 30 s merge gap, so a separate range.
    assert_eq!(
        beat(&mut t, "10.0.0.1", &a, r(1100, 1110)),
        HeartbeatOutcome::Inserted
    );
    assert_eq!(owner(&t, "10.0.0.1", 1050 * S), Err(Gap));
    assert_eq!(owner(&t, "10.0.0.1", 1005 * S), Ok("a".into()));
    assert_eq!(owner(&t, "10.0.0.1", 900 * S), Err(NotFound));
    assert_eq!(owner(&t, "10.0.0.1", 1200 * S), Err(NotFound));
    assert_eq!(owner(&t, "10.9.9.9", 1005 * S), Err(NotFound));
    // A heartbeat in between closes the gap: one range again.
    assert_eq!(
        beat(&mut t, "10.0.0.1", &a, r(1040, 1080)),
        HeartbeatOutcome::Merged
    );
    assert_eq!(t.len_ranges(), 1);
    assert_eq!(owner(&t, "10.0.0.1", 1050 * S), Ok("a".into()));
    assert_eq!(t.ranges(ip("10.0.0.1"))[0].0, r(1000, 1110));
}

#[test]
fn clock_skew_at_a_range_edge_is_not_attributed() {
    let mut t = table();
    beat(&mut t, "10.0.0.1", &w("a"), r(1000, 1100));
    // A flow starting 1 s before the first heartbeat may be skew: do not
    // stretch the range to it.
    assert_eq!(owner(&t, "10.0.0.1", 999 * S), Err(ClockSkew));
    assert_eq!(owner(&t, "10.0.0.1", 1100 * S + 500 * MS), Err(ClockSkew));
    assert_eq!(owner(&t, "10.0.0.1", 995 * S), Err(NotFound));
    assert_eq!(owner(&t, "10.0.0.1", 1103 * S), Err(NotFound));
    // Inside the range but within the tolerance of its edges: the owner
    // before or after (known or not) may have held it then.
    assert_eq!(owner(&t, "10.0.0.1", 1000 * S), Err(ClockSkew));
    assert_eq!(owner(&t, "10.0.0.1", 1098 * S), Err(ClockSkew));
    assert_eq!(owner(&t, "10.0.0.1", 1002 * S), Ok("a".into()));

    // A claimant whose clock is ahead beyond tolerance is refused.
    let now = 1200 * S;
    let ahead = t.heartbeat(ip("10.0.0.2"), &w("b"), r(1150, 1203), "agent", now);
    assert_eq!(ahead, HeartbeatOutcome::Refused(Refusal::Future));
    let within = t.heartbeat(ip("10.0.0.2"), &w("b"), r(1150, 1201), "agent", now);
    assert_eq!(within, HeartbeatOutcome::Inserted);
}

#[test]
fn skewed_hosts_at_a_handover_give_conflict_or_clock_skew_never_the_wrong_owner() {
    let mut t = table();
    // "old" really held the address until 1100 s, its host's clock 1.5 s
    // fast; "new" took it at 1101 s on an accurate host.
    let fast = TimeRange::new(1001 * S + 500 * MS, 1101 * S + 500 * MS);
    assert_eq!(
        beat(&mut t, "10.0.0.1", &w("old"), fast),
        HeartbeatOutcome::Inserted
    );
    assert_eq!(
        beat(&mut t, "10.0.0.1", &w("new"), r(1101, 1200)),
        HeartbeatOutcome::Conflict
    );
    assert_eq!(owner(&t, "10.0.0.1", 1101 * S + 200 * MS), Err(Conflict));
    assert_eq!(owner(&t, "10.0.0.1", 1100 * S), Err(ClockSkew));
    assert_eq!(owner(&t, "10.0.0.1", 1102 * S), Err(ClockSkew));
    assert_eq!(owner(&t, "10.0.0.1", 1050 * S), Ok("old".into()));
    assert_eq!(owner(&t, "10.0.0.1", 1150 * S), Ok("new".into()));
}

#[test]
fn conflicting_claims_contest_only_the_overlap() {
    let mut t = OwnershipTable::new(OwnershipConfig::default());
    t.allow("host-a", ["10.0.0.0/24".parse().unwrap()]);
    t.allow("host-b", ["10.0.0.0/24".parse().unwrap()]);
    let (a, b) = (w("a"), w("b"));
    let addr = ip("10.0.0.1");
    assert_eq!(
        t.heartbeat(addr, &a, r(1000, 1100), "host-a", NOW),
        HeartbeatOutcome::Inserted
    );
    assert_eq!(
        t.heartbeat(addr, &b, r(1050, 1150), "host-b", NOW),
        HeartbeatOutcome::Conflict
    );
    assert_eq!(t.counters().conflicts, 1);

    assert_eq!(owner(&t, "10.0.0.1", 1020 * S), Ok("a".into()));
    assert_eq!(owner(&t, "10.0.0.1", 1070 * S), Err(Conflict));
    assert_eq!(owner(&t, "10.0.0.1", 1120 * S), Ok("b".into()));
    // At the contested period's edges, within the clock tolerance.
    assert_eq!(owner(&t, "10.0.0.1", 1049 * S), Err(ClockSkew));
    assert_eq!(owner(&t, "10.0.0.1", 1101 * S), Err(ClockSkew));

    // More of the same contest is not a new conflict; a claim that makes it
    // longer is.
    assert_eq!(
        t.heartbeat(addr, &a, r(1060, 1070), "host-a", NOW),
        HeartbeatOutcome::Covered
    );
    assert_eq!(
        t.heartbeat(addr, &b, r(1040, 1060), "host-b", NOW),
        HeartbeatOutcome::Conflict
    );
    assert_eq!(owner(&t, "10.0.0.1", 1045 * S), Err(Conflict));
    assert_eq!(owner(&t, "10.0.0.1", 1020 * S), Ok("a".into()));
    assert_eq!(t.counters().conflicts, 2);

    // Neither claim overwrote the other.
    let held: Vec<_> = t
        .ranges(addr)
        .into_iter()
        .map(|(r, w)| (r, w.id.clone()))
        .collect();
    assert_eq!(
        held,
        vec![(r(1000, 1100), "a".into()), (r(1040, 1150), "b".into())]
    );
}

#[test]
fn expired_ranges_are_dropped_and_answer_expired() {
    let config = OwnershipConfig::default();
    let expiry = config.expire_after_ns;
    let mut t = table_with(config);
    beat(&mut t, "10.0.0.1", &w("a"), r(1000, 1100));
    // "b" and "c" contest 1150–1200; "c" goes on until 1500.
    beat(&mut t, "10.0.0.2", &w("b"), r(1100, 1200));
    beat(&mut t, "10.0.0.2", &w("c"), r(1150, 1500));
    assert_eq!(t.len_workloads(), 3);

    // Just before 10.0.0.1's range expires, and just after.
    assert_eq!(
        owner_at(&t, "10.0.0.1", 1050 * S, 1100 * S + expiry),
        Ok("a".into())
    );
    let now = 1201 * S + expiry;
    // Lookups treat an expired range as dropped even before expire() runs.
    assert_eq!(owner_at(&t, "10.0.0.1", 1050 * S, now), Err(Expired));
    assert_eq!(t.expire(now), 2);
    assert_eq!(t.counters().expired, 2);
    assert_eq!(t.len_ranges(), 1);
    assert_eq!(t.len_workloads(), 1, "workloads go with their last range");
    assert_eq!(owner_at(&t, "10.0.0.1", 1050 * S, now), Err(Expired));
    assert_eq!(owner_at(&t, "10.0.0.1", 1300 * S, now), Err(NotFound));
    // One side of the conflict expired: the contested period must not
    // become the other side's.
    assert_eq!(owner_at(&t, "10.0.0.2", 1170 * S, now), Err(Expired));
    assert_eq!(owner_at(&t, "10.0.0.2", 1300 * S, now), Ok("c".into()));

    // A heartbeat that would expire at once is refused as stale.
    let stale = t.heartbeat(ip("10.0.0.3"), &w("d"), r(1000, 1100), "agent", now);
    assert_eq!(stale, HeartbeatOutcome::Refused(Refusal::Stale));
    assert_eq!(t.counters().stale, 1);

    // The emptied address is kept for one more expiry period, then removed.
    assert_eq!(t.len_ips(), 2);
    t.expire(1101 * S + 2 * expiry);
    assert_eq!(t.len_ips(), 1);
    assert_eq!(
        owner_at(&t, "10.0.0.1", 1050 * S, 1101 * S + 2 * expiry),
        Err(NotFound)
    );
}

#[test]
fn a_refused_claim_changes_nothing() {
    let mut t = OwnershipTable::new(OwnershipConfig::default());
    t.allow("host-a", ["10.0.0.0/24".parse().unwrap()]);
    t.allow("host-b", ["10.0.1.0/24".parse().unwrap()]);
    let a = w("a");
    t.heartbeat(ip("10.0.0.1"), &a, r(1000, 1100), "host-a", NOW);
    t.heartbeat(ip("10.0.1.1"), &w("b"), r(1000, 1100), "host-b", NOW);
    let before = format!("{:?}", t.state());
    let counters = *t.counters();

    let mallory = w("mallory");
    let refused = [
        // host-b poisoning host-a's address, over and beside a's range.
        t.heartbeat(ip("10.0.0.1"), &mallory, r(1050, 1200), "host-b", NOW),
        t.heartbeat(ip("10.0.0.9"), &mallory, r(1050, 1200), "host-b", NOW),
        // Its own workload on someone else's address, too.
        t.heartbeat(ip("10.0.0.1"), &a, r(1050, 1200), "host-b", NOW),
        t.heartbeat(ip("10.0.0.1"), &mallory, r(1050, 1200), "nobody", NOW),
        t.heartbeat(ip("10.0.0.1"), &a, r(1100, 1050), "host-a", NOW),
        t.heartbeat(
            ip("10.0.0.1"),
            &a,
            TimeRange::since(1000 * S),
            "host-a",
            NOW,
        ),
    ];
    use Refusal::*;
    let expected = [
        OutsideAllowed,
        OutsideAllowed,
        OutsideAllowed,
        UnknownClaimant,
        InvalidRange,
        InvalidRange,
    ];
    assert_eq!(refused, expected.map(HeartbeatOutcome::Refused));
    assert_eq!(format!("{:?}", t.state()), before);
    assert_eq!(
        t.drain_changes().len(),
        2,
        "only the accepted claims are published"
    );
    assert_eq!(t.counters().refused, counters.refused + 4);
    assert_eq!(t.counters().invalid, counters.invalid + 2);
    assert_eq!(owner(&t, "10.0.0.1", 1101 * S), Err(ClockSkew));
    assert_eq!(owner(&t, "10.0.0.1", 1150 * S), Err(NotFound));
    // Updates from other collectors are held to the same policy.
    let forged = RangeUpdate {
        ip: ip("10.0.0.1"),
        workload: mallory,
        range: r(1050, 1200),
        claimant: "host-b".into(),
    };
    assert_eq!(
        t.apply(&forged, NOW),
        HeartbeatOutcome::Refused(OutsideAllowed)
    );
}

#[test]
fn the_memory_bound_evicts_the_oldest_ranges_and_counts_them() {
    let config = OwnershipConfig {
        max_ranges: 32,
        ..config()
    };
    let mut t = table_with(config);
    // 10.0.0.0 holds an early range and a late one.
    beat(&mut t, "10.0.0.0", &w("early"), r(1000, 1001));
    beat(&mut t, "10.0.0.0", &w("late"), r(1500, 1600));
    for i in 1..100u64 {
        let addr = format!("10.0.1.{i}");
        beat(&mut t, &addr, &w(&format!("w{i}")), r(1000 + i, 1010 + i));
        assert!(t.len_ranges() <= 32);
    }
    let c = t.counters();
    assert_eq!(c.inserted, 101);
    assert_eq!(c.evicted as usize, 101 - t.len_ranges());
    assert!(c.evicted >= 69);
    // The ranges that ended last are the ones kept.
    assert_eq!(owner(&t, "10.0.1.99", 1104 * S), Ok("w99".into()));
    assert_eq!(owner(&t, "10.0.1.1", 1006 * S), Err(NotFound));
    assert_eq!(owner(&t, "10.0.0.0", 1550 * S), Ok("late".into()));
    assert_eq!(owner(&t, "10.0.0.0", 1000 * S + 500 * MS), Err(Expired));
    assert_eq!(t.len_workloads(), t.len_ranges());
}

#[test]
fn changes_drain_once_per_range_and_rebuild_the_table_elsewhere() {
    let mut here = table();
    for (addr, id, seen) in schedule() {
        beat(&mut here, addr, &w(id), seen);
    }
    let updates = here.drain_changes();
    assert_eq!(updates.len(), here.len_ranges(), "one update per range");
    assert!(here.drain_changes().is_empty());
    assert!(updates.windows(2).all(|p| p[0].ip <= p[1].ip));

    let mut there = table();
    for u in &updates {
        assert_ne!(there.apply(u, NOW), HeartbeatOutcome::Covered);
    }
    assert_eq!(there.dump(), here.dump());
    assert!(
        there.drain_changes().is_empty(),
        "peer updates are not published again"
    );
    assert_eq!(there.counters().updates, updates.len() as u64);
    // Applying them again, or the heartbeats they came from, changes nothing.
    for u in &updates {
        assert_eq!(there.apply(u, NOW), HeartbeatOutcome::Covered);
    }
    assert_eq!(there.dump(), here.dump());

    // A range that grows many times between drains is sent once.
    let a = w("a");
    for i in 0..10 {
        beat(&mut here, "10.0.0.9", &a, r(1400 + i, 1410 + i));
    }
    let grown = here.drain_changes();
    assert_eq!(grown.len(), 1);
    assert_eq!(grown[0].range, r(1400, 1419));
    assert_eq!(&*grown[0].claimant, "agent");
}

#[test]
fn an_agents_batch_is_checked_per_address_and_counted() {
    let mut t = OwnershipTable::new(OwnershipConfig::default());
    t.allow("host-a", ["10.0.0.0/30".parse().unwrap()]);
    let (a, b) = (w("a"), w("b"));
    let batch = [
        (ip("10.0.0.1"), &a, r(1000, 1010)),
        (ip("10.0.0.1"), &a, r(1005, 1020)),
        (ip("10.0.0.1"), &a, r(1006, 1007)),
        (ip("10.0.0.2"), &b, r(1000, 1010)),
        (ip("10.0.0.9"), &b, r(1000, 1010)),
    ];
    let counts = t.heartbeats("host-a", batch, NOW);
    let expected = OwnershipCounters {
        heartbeats: 5,
        inserted: 2,
        merged: 1,
        covered: 1,
        refused: 1,
        ..OwnershipCounters::default()
    };
    assert_eq!(counts, expected);
    assert_eq!(*t.counters(), expected);
    assert_eq!(owner(&t, "10.0.0.1", 1015 * S), Ok("a".into()));

    let unknown = t.heartbeats("host-z", [(ip("10.0.0.1"), &b, r(1000, 1010))], NOW);
    assert_eq!(unknown.refused, 1);

    // The table's own `Arc` for an equal workload, for the ingest to reuse.
    let equal = w("a");
    let canonical = t.canonical(&equal).unwrap();
    assert!(Arc::ptr_eq(&canonical, &a));
    assert!(t.canonical(&w("nobody")).is_none());
}

#[test]
fn zero_length_flows_and_ipv4_mapped_addresses() {
    let mut t = table();
    let a = w("a");
    assert_eq!(
        t.heartbeat(
            ip("::ffff:10.0.0.1"),
            &a,
            TimeRange::new(1000 * S, 1000 * S),
            "agent",
            NOW
        ),
        HeartbeatOutcome::Inserted
    );
    // It claims its one nanosecond, too short to answer for.
    assert_eq!(
        t.ranges(ip("10.0.0.1"))[0].0,
        TimeRange::new(1000 * S, 1000 * S + 1)
    );
    assert_eq!(owner(&t, "10.0.0.1", 1000 * S), Err(ClockSkew));
    assert_eq!(t.dump()[0].0, ip("10.0.0.1"));
    // Same id, different attributes: a different workload.
    let relabelled = Arc::new(Workload {
        app: Some("other".into()),
        ..Workload::with_id("a")
    });
    assert_eq!(
        beat(
            &mut t,
            "10.0.0.1",
            &relabelled,
            TimeRange::new(1000 * S, 1000 * S + 1)
        ),
        HeartbeatOutcome::Conflict
    );
}

#[test]
fn memory_estimate_counts_ranges_addresses_and_workloads() {
    let mut t = table();
    let empty = t.memory();
    let a = w("a");
    for i in 0..1000u32 {
        let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        for k in 0..4 {
            t.heartbeat(addr, &a, r(1000 + 100 * k, 1010 + 100 * k), "agent", NOW);
        }
    }
    assert_eq!(t.len_ranges(), 4000);
    assert_eq!(t.len_workloads(), 1);
    let m = t.memory();
    assert!(m.ranges_bytes > empty.ranges_bytes);
    // 24-byte ranges, each address's block plus its share of the map.
    let per_range = m.ranges_bytes / t.len_ranges();
    assert!((30..64).contains(&per_range), "{per_range} bytes per range");
    assert!(m.workloads_bytes < 1024);
    assert_eq!(t.memory_bytes(), m.total());
}

/// A tiny xorshift generator: deterministic, no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.range(0, i as u64 + 1) as usize);
        }
    }
}

/// Who really owned one address when.
struct Period {
    owner: Arc<Workload>,
    start_ns: u64,
    end_ns: u64,
}

/// One address's true owners over time.
struct Timeline {
    ip: IpAddr,
    periods: Vec<Period>,
}

impl Timeline {
    fn owner_at(&self, t: u64) -> Option<&Arc<Workload>> {
        self.periods
            .iter()
            .find(|p| p.start_ns <= t && t < p.end_ns)
            .map(|p| &p.owner)
    }

    /// Whether `owner` held the address at some time in `[lo, hi]`.
    fn held_between(&self, owner: &Workload, lo: u64, hi: u64) -> bool {
        self.periods
            .iter()
            .any(|p| *p.owner == *owner && p.start_ns <= hi && lo < p.end_ns)
    }
}

/// A heartbeat: address, workload, when seen.
type Beat = (IpAddr, Arc<Workload>, TimeRange);

/// A ground-truth schedule for `ips` addresses, owners changing after
/// 20–300 s with handovers 0–60 s apart (a third within 3 s), and the
/// heartbeats their flows give: flows at most 20 s apart from a period's
/// first moment to its last, each reported on its agent's clock, which is
/// off by up to `max_offset_ns`; plus false claims on some addresses. When
/// `lossy`, a quarter of the owners run no agent (report nothing) and a
/// quarter of the other heartbeats are lost.
fn ground_truth(
    rng: &mut Rng,
    ips: u64,
    max_offset_ns: u64,
    lossy: bool,
) -> (Vec<Timeline>, Vec<Beat>) {
    let mut timelines = Vec::new();
    let mut beats = Vec::new();
    for a in 0..ips {
        let ip = if a % 2 == 0 {
            IpAddr::from([10, 1, (a >> 8) as u8, a as u8])
        } else {
            IpAddr::from([0xfd00, 0, 0, 0, 0, 0, (a >> 16) as u16, a as u16])
        };
        let mut periods = Vec::new();
        let mut t = 1000 * S + rng.range(0, 60 * S);
        for k in 0..rng.range(1, 6) {
            let end = t + rng.range(20 * S, 300 * S);
            // A workload may hold several addresses, never one address twice.
            let owner = w(&format!("w{k}-{}", a % 5));
            let offset = rng.range(0, 2 * max_offset_ns + 1);
            let on_agent_clock = |t: u64| t + offset - max_offset_ns;
            let agentless = lossy && rng.range(0, 4) == 0;
            let mut flow_start = t;
            loop {
                let flow_end = (flow_start + rng.range(0, 15 * S)).min(end);
                let seen = TimeRange::new(on_agent_clock(flow_start), on_agent_clock(flow_end));
                let lost = lossy && rng.range(0, 4) == 0;
                if !agentless && !lost {
                    beats.push((ip, owner.clone(), seen));
                }
                if flow_end == end {
                    break;
                }
                flow_start = (flow_start + rng.range(0, 20 * S)).min(end - 1);
            }
            // Half the addresses also get one false claim from a misbehaving
            // (but allowed) agent, inside a real owner's period. (Only the
            // owner's own heartbeats can contradict such a claim, so not
            // where they may be missing.)
            if k == 0 && a % 2 == 0 && !lossy {
                let from = rng.range(t + 3 * S, end - 4 * S);
                let to = (from + rng.range(1, 20 * S)).min(end - 3 * S);
                let offset = rng.range(0, 2 * max_offset_ns + 1);
                let on_rogue_clock = |t: u64| t + offset - max_offset_ns;
                let seen = TimeRange::new(on_rogue_clock(from), on_rogue_clock(to));
                beats.push((ip, w(&format!("rogue-{a}")), seen));
            }
            periods.push(Period {
                owner,
                start_ns: t,
                end_ns: end,
            });
            t = end
                + if rng.range(0, 3) == 0 {
                    rng.range(0, 3 * S)
                } else {
                    rng.range(0, 60 * S)
                };
        }
        timelines.push(Timeline { ip, periods });
    }
    (timelines, beats)
}

#[test]
fn random_heartbeat_orders_never_yield_a_wrong_workload() {
    let config = OwnershipConfig {
        // Nothing expires here; expiry has its own test.
        expire_after_ns: 86_400 * S,
        ..OwnershipConfig::default()
    };
    // Every host's clock (the claimants' and the looking one's) within
    // max_skew_ns of the collector's; owners' heartbeats complete, or lost,
    // or never sent (owners without an agent).
    let skew = config.max_skew_ns;
    for (seed, max_offset, lossy) in [
        (1, 0, false),
        (2, 0, false),
        (3, 0, true),
        (4, skew, false),
        (5, skew, false),
        (6, skew, true),
        (7, skew, true),
        (8, skew / 3, true),
    ] {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ seed);
        let (timelines, mut beats) = ground_truth(&mut rng, 40, max_offset, lossy);
        let last_end = timelines
            .iter()
            .flat_map(|tl| tl.periods.iter().map(|p| p.end_ns))
            .max()
            .unwrap();
        let now = last_end + 10 * S;
        let build = |beats: &[Beat]| {
            let mut t = table_with(config);
            for (ip, owner, seen) in beats {
                let outcome = t.heartbeat(*ip, owner, *seen, "agent", now);
                assert!(
                    !matches!(outcome, HeartbeatOutcome::Refused(_)),
                    "{outcome:?}"
                );
            }
            t
        };
        let table = build(&beats);
        for _ in 0..3 {
            rng.shuffle(&mut beats);
            assert_eq!(
                build(&beats).dump(),
                table.dump(),
                "seed {seed}: order changed the table"
            );
        }

        let (mut attributed, mut owned) = (0, 0);
        for _ in 0..5_000 {
            let tl = &timelines[rng.range(0, timelines.len() as u64) as usize];
            let first = tl.periods[0].start_ns;
            let last = tl.periods.last().unwrap().end_ns;
            let t = rng.range(first - 30 * S, last + 30 * S);
            // The flow's start on the clock of the host that reported it.
            let measured = t + rng.range(0, 2 * max_offset + 1) - max_offset;
            let truth = tl.owner_at(t);
            owned += usize::from(truth.is_some());
            let Ok((got, _)) = table.lookup(tl.ip, measured, now) else {
                continue;
            };
            attributed += 1;
            assert!(
                !got.id.starts_with("rogue"),
                "seed {seed}: a false claim won at {t}"
            );
            match truth {
                Some(truth) => assert_eq!(got, truth, "seed {seed}: {} at {t}", tl.ip),
                // Between owners nobody holds the address; the clocks' tolerance
                // allows an owner from just before or after.
                None => assert!(
                    max_offset > 0 && tl.held_between(got, t - 2 * max_offset, t + 2 * max_offset),
                    "seed {seed}: {} at {t} is in no period, got {}",
                    tl.ip,
                    got.id
                ),
            }
        }
        // Not vacuous: most owned moments are attributed.
        let share = if lossy { 50 } else { 85 };
        assert!(
            attributed * 100 >= owned * share,
            "seed {seed}: {attributed} of {owned} attributed"
        );
    }
}

/// A time near one of the edges the table's arithmetic must survive: 0,
/// `u64::MAX`, the tolerance and merge gap around them, or anywhere.
fn edge_time() -> impl proptest::strategy::Strategy<Value = u64> {
    use proptest::prelude::*;
    prop_oneof![
        Just(0),
        Just(1),
        Just(u64::MAX),
        Just(u64::MAX - 1),
        (0..=60 * S),
        (u64::MAX - 60 * S..=u64::MAX),
        any::<u64>(),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    /// Heartbeats and lookups at edge times (0, `u64::MAX`, ranges open to
    /// the end of time, empty and inverted ranges, "now" at either end):
    /// nothing panics or overflows, the heartbeats' order does not change
    /// the table, an address only one workload ever claimed is never
    /// attributed to another, and every range the table holds lies inside
    /// what was seen (merged with its neighbours) after expiry.
    #[test]
    fn edge_times_keep_the_tables_invariants(
        beats in proptest::collection::vec(
            (0u8..3, 0u8..3, edge_time(), edge_time()),
            1..24,
        ),
        lookups in proptest::collection::vec((0u8..3, edge_time()), 1..16),
        now in edge_time(),
        seed in proptest::prelude::any::<u64>(),
    ) {
        let addr = |a: u8| IpAddr::from([10, 9, 0, a]);
        // Address 0 is claimed by workload 0 only; the others by anyone.
        let workloads = [w("w0"), w("w1"), w("w2")];
        let beats: Vec<_> = beats
            .into_iter()
            .map(|(a, who, start, end)| {
                let who = if a == 0 { 0 } else { who };
                (addr(a), who as usize, TimeRange::new(start, end))
            })
            .collect();
        let build = |beats: &[(IpAddr, usize, TimeRange)]| {
            let mut t = table();
            for (ip, who, seen) in beats {
                t.heartbeat(*ip, &workloads[*who], *seen, "agent", now);
            }
            t
        };
        let table = build(&beats);
        let mut shuffled = beats.clone();
        Rng(seed | 1).shuffle(&mut shuffled);
        proptest::prop_assert_eq!(build(&shuffled).dump(), table.dump());

        for (a, t_ns) in lookups {
            if let Ok((got, valid)) = table.lookup(addr(a), t_ns, now) {
                if a == 0 {
                    proptest::prop_assert_eq!(&got.id, "w0");
                }
                proptest::prop_assert!(valid.start_ns <= valid.end_ns);
            }
        }
        let mut expired = table;
        expired.expire(now);
        for (ip, range, _) in expired.dump() {
            proptest::prop_assert!(range.start_ns <= range.end_ns, "{ip} {range:?}");
            let seen_min = beats.iter().filter(|b| b.0 == ip).map(|b| b.2.start_ns.min(b.2.end_ns)).min();
            proptest::prop_assert!(seen_min.is_some_and(|m| m <= range.start_ns), "{ip} {range:?}");
        }
    }
}
