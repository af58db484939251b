//! The plugin through the SDK harness: the legacy method's answers, including
//! its classic mistake, the hold, pruning and batch rejection.

use std::path::Path;

use flowattr_sdk::host::Level;
use flowattr_sdk::testing::Harness;
use flowattr_sdk::{
    Answers, IpChange, IpEvent, ResolveQuery, TimeRange, UnattributedReason, Workload,
};
use sonar_legacy::{SonarLegacy, Stats};

const SEC: u64 = 1_000_000_000;
const MIN: u64 = 60 * SEC;
/// A base time far from zero, so "time minus something" stays meaningful.
const T: u64 = 1_000_000 * SEC;

fn harness(config: &str) -> Harness<SonarLegacy> {
    let h = Harness::<SonarLegacy>::new(config).unwrap();
    h.set_now_ns(T);
    h
}

fn assign(address: &str, id: &str, event: u64, arrival: u64) -> IpEvent {
    IpEvent {
        address: address.parse().unwrap(),
        change: IpChange::Assigned(Workload::with_id(id)),
        event_time_ns: event,
        arrival_time_ns: arrival,
    }
}

fn release(address: &str, event: u64, arrival: u64) -> IpEvent {
    IpEvent {
        address: address.parse().unwrap(),
        change: IpChange::Released,
        event_time_ns: event,
        arrival_time_ns: arrival,
    }
}

fn ask(address: &str, time_ns: u64, asked_at_ns: u64) -> ResolveQuery {
    ResolveQuery {
        address: address.parse().unwrap(),
        time_ns,
        asked_at_ns,
    }
}

fn id(answers: &Answers, i: usize) -> Result<(String, TimeRange), UnattributedReason> {
    answers.resolve(i).map(|(w, valid)| (w.id.clone(), valid))
}

/// An address that moves from "old" to "new" at T + 10 min, whose assign
/// event for "new" arrives 5 minutes late.
fn reassignment() -> Vec<IpEvent> {
    vec![
        assign("10.0.0.1", "old", T, T + SEC),
        assign("10.0.0.1", "new", T + 10 * MIN, T + 15 * MIN),
    ]
}

#[test]
fn a_late_event_keeps_the_old_owner() {
    let mut h = harness("{}");
    h.ingest(reassignment()).unwrap();
    // A flow of "new" starting at T + 11 min, asked about a second later.
    let start = T + 11 * MIN;
    let answers = h.resolve(&[ask("10.0.0.1", start, start + SEC)]);
    // The classic misattribution: "new"'s flow is blamed on "old".
    assert_eq!(
        id(&answers, 0),
        Ok(("old".into(), TimeRange::new(T, start + SEC + 1)))
    );
    // Once the event has arrived, the same flow is attributed to "new".
    let answers = h.resolve(&[ask("10.0.0.1", start, T + 15 * MIN)]);
    assert_eq!(
        id(&answers, 0),
        Ok(("new".into(), TimeRange::new(T + 10 * MIN, T + 15 * MIN + 1)))
    );
}

#[test]
fn a_hold_lets_a_late_event_win() {
    let start = T + 11 * MIN;
    for (hold_secs, want) in [(0, "old"), (60, "old"), (300, "new"), (900, "new")] {
        let mut h = harness(&format!(r#"{{"hold_secs": {hold_secs}}}"#));
        h.ingest(reassignment()).unwrap();
        let answers = h.resolve(&[ask("10.0.0.1", start, start + SEC)]);
        let cutoff = (start + SEC).max(start + hold_secs * SEC);
        let (who, valid) = id(&answers, 0).unwrap();
        assert_eq!(who, want, "hold {hold_secs}s");
        assert_eq!(valid.end_ns, cutoff + 1, "hold {hold_secs}s");
    }
}

#[test]
fn a_release_or_no_event_is_not_found() {
    let mut h = harness("{}");
    h.ingest(vec![
        assign("10.0.0.1", "a", T, T + SEC),
        release("10.0.0.1", T + MIN, T + MIN + SEC),
    ])
    .unwrap();
    let answers = h.resolve(&[
        ask("10.0.0.1", T + 30 * SEC, T + 30 * SEC),
        ask("10.0.0.1", T + 2 * MIN, T + 2 * MIN),
        ask("10.0.0.2", T + 2 * MIN, T + 2 * MIN),
        ask("10.0.0.1", T - MIN, T),
    ]);
    assert_eq!(id(&answers, 0).unwrap().0, "a");
    assert_eq!(id(&answers, 1), Err(UnattributedReason::NotFound));
    assert_eq!(id(&answers, 2), Err(UnattributedReason::NotFound));
    assert_eq!(
        id(&answers, 3),
        Err(UnattributedReason::NotFound),
        "nothing had arrived by T"
    );
}

#[test]
fn events_apply_in_arrival_order_whatever_the_ingest_order() {
    let mut h = harness("{}");
    // The release arrives before the assignment it follows: the legacy method
    // ends up believing the address is still assigned.
    h.ingest(vec![release("10.0.0.1", T + MIN, T + 2 * MIN)])
        .unwrap();
    h.ingest(vec![assign("10.0.0.1", "a", T, T + 3 * MIN)])
        .unwrap();
    // A late-ingested event that arrived earlier slots in by arrival time.
    h.ingest(vec![assign("10.0.0.1", "z", T, T + MIN)]).unwrap();
    let answers = h.resolve(&[
        ask("10.0.0.1", T, T + MIN),
        ask("10.0.0.1", T, T + 2 * MIN),
        ask("10.0.0.1", T, T + 3 * MIN),
    ]);
    assert_eq!(id(&answers, 0).unwrap().0, "z");
    assert_eq!(id(&answers, 1), Err(UnattributedReason::NotFound));
    assert_eq!(id(&answers, 2).unwrap().0, "a");
}

#[test]
fn events_arriving_together_apply_in_ingest_order() {
    let mut h = harness("{}");
    h.ingest(vec![
        assign("10.0.0.1", "first", T, T + SEC),
        assign("10.0.0.1", "second", T, T + SEC),
    ])
    .unwrap();
    assert_eq!(
        id(&h.resolve(&[ask("10.0.0.1", T, T + SEC)]), 0).unwrap().0,
        "second"
    );
}

#[test]
fn the_validity_contains_the_query_even_when_the_event_claims_a_later_start() {
    let mut h = harness("{}");
    h.ingest(vec![assign("10.0.0.1", "a", T + MIN, T + SEC)])
        .unwrap();
    let answers = h.resolve(&[ask("10.0.0.1", T + 2 * SEC, T + 3 * SEC)]);
    assert_eq!(
        id(&answers, 0),
        Ok(("a".into(), TimeRange::new(T + 2 * SEC, T + 3 * SEC + 1)))
    );
}

#[test]
fn mapped_ipv4_addresses_are_the_same_address() {
    let mut h = harness("{}");
    h.ingest(vec![assign("::ffff:10.0.0.1", "a", T, T + SEC)])
        .unwrap();
    let answers = h.resolve(&[
        ask("10.0.0.1", T, T + SEC),
        ask("::ffff:10.0.0.1", T, T + SEC),
    ]);
    assert_eq!(id(&answers, 0).unwrap().0, "a");
    assert_eq!(id(&answers, 1).unwrap().0, "a");
}

#[test]
fn pruning_by_age_keeps_each_addresses_newest_event() {
    let mut h = harness(r#"{"retention_secs": 600}"#);
    h.ingest(vec![
        assign("10.0.0.1", "a-old", T, T + SEC),
        assign("10.0.0.1", "a-new", T + MIN, T + MIN),
        assign("10.0.0.2", "b", T, T + SEC),
    ])
    .unwrap();
    // An hour later everything arrived more than 10 minutes ago.
    h.set_now_ns(T + 60 * MIN);
    // Expired history is ignored at once, before any sweep frees it.
    let answers = h.resolve(&[ask("10.0.0.1", T + 30 * SEC, T + 30 * SEC)]);
    assert_eq!(id(&answers, 0), Err(UnattributedReason::NotFound));
    h.ingest(vec![assign("10.0.0.3", "c", T + 60 * MIN, T + 60 * MIN)])
        .unwrap();
    let stats = h.plugin_mut().stats();
    assert_eq!(
        stats,
        Stats {
            events: 3,
            addresses: 3,
            workloads: 3,
            pruned_expired: 1,
            pruned_over_cap: 0
        }
    );
    let answers = h.resolve(&[
        ask("10.0.0.1", T + 30 * SEC, T + 30 * SEC),
        ask("10.0.0.1", T + 2 * MIN, T + 2 * MIN),
        ask("10.0.0.2", T + 2 * MIN, T + 2 * MIN),
    ]);
    assert_eq!(
        id(&answers, 0),
        Err(UnattributedReason::NotFound),
        "a-old was pruned"
    );
    assert_eq!(id(&answers, 1).unwrap().0, "a-new");
    assert_eq!(id(&answers, 2).unwrap().0, "b");
}

#[test]
fn beyond_max_events_the_oldest_are_pruned_counted_and_logged() {
    let mut h = harness(r#"{"max_events": 3}"#);
    h.take_logs();
    h.ingest(vec![
        assign("10.0.0.1", "a1", T, T + 1),
        assign("10.0.0.1", "a2", T, T + 2),
        assign("10.0.0.1", "a3", T, T + 3),
        assign("10.0.0.2", "b1", T, T + 4),
        assign("10.0.0.2", "b2", T, T + 5),
    ])
    .unwrap();
    let stats = h.plugin_mut().stats();
    assert_eq!((stats.events, stats.pruned_over_cap), (3, 2));
    let logs = h.take_logs();
    assert!(
        logs.iter()
            .any(|(l, m)| *l == Level::Warn && m.contains("pruned the 2 oldest")),
        "{logs:?}"
    );
    // The two oldest (a1, a2) went; b1 is older than a3 but newer than a2.
    let answers = h.resolve(&[
        ask("10.0.0.1", T, T + 2),
        ask("10.0.0.1", T, T + 3),
        ask("10.0.0.2", T, T + 4),
    ]);
    assert_eq!(
        id(&answers, 0),
        Err(UnattributedReason::NotFound),
        "a1 and a2 pruned"
    );
    assert_eq!(id(&answers, 1).unwrap().0, "a3");
    assert_eq!(id(&answers, 2).unwrap().0, "b1");
}

#[test]
fn a_bad_event_rejects_the_whole_batch_and_changes_nothing() {
    let mut h = harness("{}");
    h.ingest(vec![assign("10.0.0.1", "a", T, T + SEC)]).unwrap();
    let before = h.plugin_mut().stats();

    let err = h
        .ingest(vec![
            assign("10.0.0.1", "b", T, T + 2 * SEC),
            assign("10.0.0.9", " ", T, T + 2 * SEC),
        ])
        .unwrap_err();
    assert_eq!(err, "event 1: the assigned workload's id is empty");
    let err = h
        .ingest(vec![
            release("10.0.0.1", T, 0),
            assign("10.0.0.9", "c", T, T + 2 * SEC),
        ])
        .unwrap_err();
    assert_eq!(err, "event 0: arrival_time_ns is 0 (arrival time unknown)");

    assert_eq!(h.plugin_mut().stats(), before);
    let answers = h.resolve(&[
        ask("10.0.0.1", T, T + 3 * SEC),
        ask("10.0.0.9", T, T + 3 * SEC),
    ]);
    assert_eq!(id(&answers, 0).unwrap().0, "a", "b was not applied");
    assert_eq!(
        id(&answers, 1),
        Err(UnattributedReason::NotFound),
        "c was not applied"
    );
}

#[test]
fn bad_configs_are_refused() {
    for (config, want) in [
        (r#"{"hold_sec": 900}"#, "unknown field `hold_sec`"),
        (r#"{"max_events": 0}"#, "max_events: must be at least 1"),
        (r#"{"retention_secs": "1d"}"#, "invalid type"),
    ] {
        let err = Harness::<SonarLegacy>::new(config).err().expect(config);
        assert!(err.contains(want), "{config}: {err}");
    }
}

#[test]
fn the_cli_fixture_gives_the_expected_answers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(root.join(p)).unwrap()).unwrap()
    };
    let input = read("fixtures/input.json");
    let expected: Answers = serde_json::from_value(read("fixtures/expected.json")).unwrap();
    let events: Vec<IpEvent> = serde_json::from_value(input["events"].clone()).unwrap();
    let queries: Vec<ResolveQuery> = serde_json::from_value(input["queries"].clone()).unwrap();
    // The manifest template's [config] is the defaults.
    let mut h = Harness::<SonarLegacy>::new("{}").unwrap();
    h.set_now_ns(input["now_ns"].as_u64().unwrap());
    h.ingest(events).unwrap();
    assert_eq!(h.resolve(&queries), expected);
}
