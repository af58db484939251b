//! The event log without the plugin around it.

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn assigned(id: &str) -> IpChange {
    IpChange::Assigned(Workload::with_id(id))
}

/// The deciding workload id, if any, with no retention horizon.
fn owner(log: &EventLog, address: &str, cutoff: u64) -> Option<String> {
    log.decide(ip(address), cutoff, 0)
        .map(|(w, _)| w.id.clone())
}

#[test]
fn the_last_event_arrived_by_the_cutoff_decides() {
    let mut log = EventLog::default();
    log.insert(ip("10.0.0.1"), assigned("a"), 100, 110);
    log.insert(ip("10.0.0.1"), IpChange::Released, 200, 210);
    log.insert(ip("10.0.0.1"), assigned("b"), 300, 310);
    assert_eq!(owner(&log, "10.0.0.1", 109), None);
    assert_eq!(owner(&log, "10.0.0.1", 110), Some("a".into()));
    assert_eq!(owner(&log, "10.0.0.1", 209), Some("a".into()));
    assert_eq!(owner(&log, "10.0.0.1", 210), None);
    assert_eq!(owner(&log, "10.0.0.1", 310), Some("b".into()));
    assert_eq!(
        log.decide(ip("10.0.0.1"), 400, 0).map(|(_, t)| t),
        Some(300)
    );
    assert_eq!(owner(&log, "10.0.0.2", 400), None);
    assert_eq!((log.len(), log.addresses(), log.workloads()), (3, 1, 2));
}

#[test]
fn arrival_order_not_ingest_order_and_ties_in_ingest_order() {
    let mut log = EventLog::default();
    log.insert(ip("10.0.0.1"), assigned("late"), 100, 500);
    log.insert(ip("10.0.0.1"), assigned("early"), 900, 300);
    log.insert(ip("10.0.0.1"), assigned("tie-1"), 100, 700);
    log.insert(ip("10.0.0.1"), assigned("tie-2"), 100, 700);
    assert_eq!(owner(&log, "10.0.0.1", 299), None);
    assert_eq!(owner(&log, "10.0.0.1", 400), Some("early".into()));
    assert_eq!(owner(&log, "10.0.0.1", 600), Some("late".into()));
    assert_eq!(owner(&log, "10.0.0.1", 700), Some("tie-2".into()));
}

#[test]
fn history_older_than_the_horizon_counts_as_pruned_but_the_newest_never() {
    let mut log = EventLog::default();
    log.insert(ip("10.0.0.1"), assigned("a"), 10, 10);
    log.insert(ip("10.0.0.1"), assigned("b"), 20, 20);
    log.insert(ip("10.0.0.2"), assigned("c"), 10, 10);
    // Horizon 15: "a" is expired history, "b" and "c" are newest.
    assert_eq!(log.decide(ip("10.0.0.1"), 12, 15), None);
    assert_eq!(
        log.decide(ip("10.0.0.1"), 25, 15)
            .map(|(w, _)| w.id.as_str()),
        Some("b")
    );
    assert_eq!(
        log.decide(ip("10.0.0.2"), 25, 15)
            .map(|(w, _)| w.id.as_str()),
        Some("c")
    );
    // Pruning gives the same answers and frees "a".
    assert_eq!(log.prune_expired(15), 1);
    assert_eq!(log.decide(ip("10.0.0.1"), 12, 15), None);
    assert_eq!((log.len(), log.workloads()), (2, 2));
    // Even far past retention, each address keeps its newest event.
    assert_eq!(log.prune_expired(u64::MAX), 0);
    assert_eq!(owner(&log, "10.0.0.1", 25), Some("b".into()));
}

#[test]
fn the_cap_prunes_the_oldest_history_first() {
    let mut log = EventLog::default();
    log.insert(ip("10.0.0.1"), assigned("a1"), 0, 10);
    log.insert(ip("10.0.0.1"), assigned("a2"), 0, 40);
    log.insert(ip("10.0.0.1"), assigned("a3"), 0, 50);
    log.insert(ip("10.0.0.2"), assigned("b1"), 0, 20);
    log.insert(ip("10.0.0.2"), assigned("b2"), 0, 60);
    assert_eq!(log.prune_to(5), 0);
    assert_eq!(log.prune_to(3), 2);
    assert_eq!(log.len(), 3);
    // a1 (10) and b1 (20) went; a2 (40) is older history but stayed.
    assert_eq!(owner(&log, "10.0.0.1", 45), Some("a2".into()));
    assert_eq!(owner(&log, "10.0.0.2", 30), None);
    assert_eq!(owner(&log, "10.0.0.2", 60), Some("b2".into()));
    assert_eq!(log.workloads(), 3);
}

#[test]
fn the_cap_breaks_arrival_ties_by_address() {
    let mut log = EventLog::default();
    for a in ["10.0.0.3", "10.0.0.1", "10.0.0.2"] {
        log.insert(ip(a), assigned("old"), 0, 10);
        log.insert(ip(a), assigned("new"), 0, 20);
    }
    assert_eq!(log.prune_to(4), 2);
    assert_eq!(owner(&log, "10.0.0.1", 15), None);
    assert_eq!(owner(&log, "10.0.0.2", 15), None);
    assert_eq!(owner(&log, "10.0.0.3", 15), Some("old".into()));
}

#[test]
fn the_cap_drops_whole_addresses_only_when_there_are_more_addresses_than_room() {
    let mut log = EventLog::default();
    log.insert(ip("10.0.0.1"), assigned("a"), 0, 30);
    log.insert(ip("10.0.0.2"), assigned("b1"), 0, 5);
    log.insert(ip("10.0.0.2"), assigned("b2"), 0, 10);
    log.insert(ip("10.0.0.3"), assigned("c"), 0, 20);
    assert_eq!(log.prune_to(2), 2);
    assert_eq!(log.addresses(), 2);
    assert_eq!(
        owner(&log, "10.0.0.2", 100),
        None,
        "b2 was the oldest newest event"
    );
    assert_eq!(owner(&log, "10.0.0.1", 100), Some("a".into()));
    assert_eq!(owner(&log, "10.0.0.3", 100), Some("c".into()));
    assert_eq!(log.workloads(), 2);
}
