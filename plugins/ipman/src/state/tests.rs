//! Lookup and validation of the state, without files.

use serde_json::{Value, json};

use super::*;

/// A state with a reused IPv6 address, a long-lived IPv4 address and a shared
/// IPv4 address with two port allocations.
fn example() -> Value {
    json!({
        "version": 1,
        "workloads": {
            "c-web-1": {"app": "web", "cluster": "web-prod", "stack": "prod",
                        "account": "123", "region": "us-east-1", "labels": {"pod": "web-1"}},
            "c-api-7": {"app": "api"},
            "c-db-2": {}
        },
        "assignments": [
            {"ip": "fd00::5", "workload": "c-web-1", "since_ns": 100, "until_ns": 200},
            {"ip": "fd00::5", "workload": "c-api-7", "since_ns": 300, "until_ns": null},
            {"ip": "10.1.0.9", "workload": "c-db-2", "since_ns": 50, "until_ns": null}
        ],
        "shared_ipv4": [
            {"address": "192.0.2.10", "pool": [40000, 59999], "allocations": [
                {"ports": [40000, 40999], "workload": "c-web-1", "since_ns": 100, "until_ns": 200},
                {"ports": [40000, 40999], "workload": "c-api-7", "since_ns": 300, "until_ns": null},
                {"ports": [41000, 41999], "workload": "c-db-2", "since_ns": 100, "until_ns": null}
            ]}
        ]
    })
}

fn load(v: &Value) -> Result<State, String> {
    State::parse(v.to_string().as_bytes())
}

/// The workload id and validity found, or "gap" / "not-found" / "own-traffic".
fn who(state: &State, ip: &str, port: u16, t: u64) -> Result<(String, TimeRange), &'static str> {
    match state.lookup(ip.parse().unwrap(), port, t) {
        Lookup::Found {
            workload, valid, ..
        } => Ok((workload.id.clone(), valid)),
        Lookup::Gap => Err("gap"),
        Lookup::NotFound => Err("not-found"),
        Lookup::OwnTraffic => Err("own-traffic"),
    }
}

/// The scope of what was found, or "gap" / "not-found" / "own-traffic".
fn scope(state: &State, ip: &str, port: u16, t: u64) -> Result<AnswerScope, &'static str> {
    match state.lookup(ip.parse().unwrap(), port, t) {
        Lookup::Found { scope, .. } => Ok(scope),
        Lookup::Gap => Err("gap"),
        Lookup::NotFound => Err("not-found"),
        Lookup::OwnTraffic => Err("own-traffic"),
    }
}

#[test]
fn a_shared_address_is_answered_for_the_port_and_an_assigned_one_for_the_address() {
    let state = load(&example()).unwrap();
    assert_eq!(scope(&state, "fd00::5", 443, 150), Ok(AnswerScope::Address));
    assert_eq!(
        scope(&state, "10.1.0.9", 5432, 60),
        Ok(AnswerScope::Address)
    );
    assert_eq!(
        scope(&state, "::ffff:10.1.0.9", 5432, 60),
        Ok(AnswerScope::Address)
    );
    assert_eq!(
        scope(&state, "192.0.2.10", 40123, 150),
        Ok(AnswerScope::Port)
    );
    assert_eq!(
        scope(&state, "192.0.2.10", 41999, 150),
        Ok(AnswerScope::Port)
    );
    assert_eq!(
        scope(&state, "::ffff:192.0.2.10", 40000, 300),
        Ok(AnswerScope::Port)
    );
    assert_eq!(scope(&state, "192.0.2.10", 40000, 250), Err("gap"));
    assert_eq!(scope(&state, "192.0.2.10", 22, 150), Err("own-traffic"));
}

#[test]
fn workloads_carry_their_attributes() {
    let state = load(&example()).unwrap();
    let Lookup::Found { workload, .. } = state.lookup("fd00::5".parse().unwrap(), 0, 150) else {
        panic!("fd00::5 at 150 should be found");
    };
    assert_eq!(workload.id, "c-web-1");
    assert_eq!(workload.app.as_deref(), Some("web"));
    assert_eq!(workload.region.as_deref(), Some("us-east-1"));
    assert_eq!(
        workload.labels.get("pod").map(String::as_str),
        Some("web-1")
    );
}

#[test]
fn a_reused_address_is_attributed_by_time_with_a_gap_between_owners() {
    let state = load(&example()).unwrap();
    assert_eq!(who(&state, "fd00::5", 1, 99), Err("gap"));
    assert_eq!(
        who(&state, "fd00::5", 1, 100),
        Ok(("c-web-1".into(), TimeRange::new(100, 200)))
    );
    assert_eq!(
        who(&state, "fd00::5", 1, 199),
        Ok(("c-web-1".into(), TimeRange::new(100, 200)))
    );
    assert_eq!(who(&state, "fd00::5", 1, 200), Err("gap"));
    assert_eq!(who(&state, "fd00::5", 1, 299), Err("gap"));
    assert_eq!(
        who(&state, "fd00::5", 1, 300),
        Ok(("c-api-7".into(), TimeRange::since(300)))
    );
    assert_eq!(
        who(&state, "fd00::5", 1, u64::MAX - 1),
        Ok(("c-api-7".into(), TimeRange::since(300)))
    );
}

#[test]
fn ipv4_and_mapped_ipv4_are_the_same_address() {
    let state = load(&example()).unwrap();
    let want = Ok(("c-db-2".into(), TimeRange::since(50)));
    assert_eq!(who(&state, "10.1.0.9", 8080, 60), want);
    assert_eq!(who(&state, "::ffff:10.1.0.9", 8080, 60), want);
}

#[test]
fn shared_ipv4_is_attributed_by_port_allocation() {
    let state = load(&example()).unwrap();
    let web = Ok(("c-web-1".into(), TimeRange::new(100, 200)));
    assert_eq!(who(&state, "192.0.2.10", 40000, 150), web);
    assert_eq!(who(&state, "192.0.2.10", 40999, 150), web);
    assert_eq!(who(&state, "::ffff:192.0.2.10", 40500, 150), web);
    assert_eq!(
        who(&state, "192.0.2.10", 40500, 300),
        Ok(("c-api-7".into(), TimeRange::since(300)))
    );
    assert_eq!(
        who(&state, "192.0.2.10", 41000, 150),
        Ok(("c-db-2".into(), TimeRange::since(100)))
    );
}

#[test]
fn shared_ipv4_pool_ports_nobody_holds_are_a_gap() {
    let state = load(&example()).unwrap();
    assert_eq!(
        who(&state, "192.0.2.10", 40000, 250),
        Err("gap"),
        "between allocations"
    );
    assert_eq!(
        who(&state, "192.0.2.10", 40000, 50),
        Err("gap"),
        "before the first"
    );
    assert_eq!(
        who(&state, "192.0.2.10", 45000, 150),
        Err("gap"),
        "never allocated"
    );
    assert_eq!(
        who(&state, "192.0.2.10", 59999, 150),
        Err("gap"),
        "last pool port"
    );
}

#[test]
fn shared_ipv4_ports_outside_the_pool_are_own_traffic_and_unknown_addresses_not_found() {
    let state = load(&example()).unwrap();
    assert_eq!(who(&state, "192.0.2.10", 22, 150), Err("own-traffic"));
    assert_eq!(who(&state, "192.0.2.10", 39999, 150), Err("own-traffic"));
    assert_eq!(who(&state, "192.0.2.10", 60000, 150), Err("own-traffic"));
    assert_eq!(who(&state, "192.0.2.11", 40000, 150), Err("not-found"));
    assert_eq!(who(&state, "fd00::6", 40000, 150), Err("not-found"));
}

#[test]
fn empty_sections_may_be_left_out() {
    let state = load(&json!({"version": 1})).unwrap();
    assert_eq!(who(&state, "10.0.0.1", 1, 1), Err("not-found"));
}

/// `example()` changed by `edit`, which must be refused with `want` in the message.
fn refused(edit: impl FnOnce(&mut Value), want: &str) {
    let mut v = example();
    edit(&mut v);
    let err = load(&v)
        .err()
        .unwrap_or_else(|| panic!("{v} should be refused"));
    assert!(err.contains(want), "{err:?} should mention {want:?}");
}

#[test]
fn unknown_or_missing_versions_are_refused() {
    refused(
        |v| v["version"] = json!(2),
        "unsupported version 2 (this plugin reads version 1)",
    );
    refused(|v| v["version"] = json!("1"), "invalid type");
    refused(
        |v| drop(v.as_object_mut().unwrap().remove("version")),
        "missing field `version`",
    );
}

#[test]
fn unknown_workload_ids_are_refused() {
    refused(
        |v| v["assignments"][2]["workload"] = json!("c-ghost"),
        "assignments[2]: workload \"c-ghost\" is not in workloads",
    );
    refused(
        |v| v["shared_ipv4"][0]["allocations"][1]["workload"] = json!("c-ghost"),
        "shared_ipv4[0] (192.0.2.10).allocations[1]: workload \"c-ghost\" is not in workloads",
    );
}

#[test]
fn empty_or_inverted_time_ranges_are_refused() {
    refused(
        |v| v["assignments"][0]["until_ns"] = json!(100),
        "assignments[0]: since_ns 100 is not before until_ns 100",
    );
    refused(
        |v| v["shared_ipv4"][0]["allocations"][0]["until_ns"] = json!(90),
        "shared_ipv4[0] (192.0.2.10).allocations[0]: since_ns 100 is not before until_ns 90",
    );
}

#[test]
fn overlapping_assignments_of_one_address_are_refused() {
    refused(
        |v| v["assignments"][0]["until_ns"] = json!(301),
        "assignments[0] and assignments[1] overlap in time for fd00::5",
    );
    // An open assignment followed by a later one.
    refused(
        |v| v["assignments"][0]["until_ns"] = Value::Null,
        "assignments[0] and assignments[1] overlap in time for fd00::5",
    );
    // The same address written two ways.
    refused(
        |v| {
            v["assignments"].as_array_mut().unwrap().push(
                json!({"ip": "::ffff:10.1.0.9", "workload": "c-web-1", "since_ns": 10, "until_ns": 60}),
            )
        },
        "assignments[2] and assignments[3] overlap in time for 10.1.0.9",
    );
}

#[test]
fn overlapping_port_allocations_are_refused() {
    refused(
        |v| v["shared_ipv4"][0]["allocations"][2]["ports"] = json!([40999, 41999]),
        "shared_ipv4[0] (192.0.2.10): allocations[0] and allocations[2] overlap in ports and time",
    );
}

#[test]
fn ports_outside_the_pool_are_refused() {
    refused(
        |v| v["shared_ipv4"][0]["allocations"][2]["ports"] = json!([59000, 60000]),
        "allocations[2]: ports 59000-60000 are not a range inside the pool 40000-59999",
    );
    refused(
        |v| v["shared_ipv4"][0]["allocations"][2]["ports"] = json!([41999, 41000]),
        "allocations[2]: ports 41999-41000 are not a range inside the pool",
    );
    refused(
        |v| v["shared_ipv4"][0]["pool"] = json!([50000, 40000]),
        "pool 50000-40000 is empty",
    );
}

#[test]
fn ambiguous_shared_addresses_are_refused() {
    refused(
        |v| {
            let again = v["shared_ipv4"][0].clone();
            v["shared_ipv4"].as_array_mut().unwrap().push(again);
        },
        "shared_ipv4[1] (192.0.2.10): the address is listed twice",
    );
    refused(
        |v| v["shared_ipv4"][0]["address"] = json!("10.1.0.9"),
        "shared_ipv4[0] (10.1.0.9): the address also has assignments",
    );
}

#[test]
fn malformed_entries_are_refused() {
    refused(
        |v| v["assignments"][0]["ip"] = json!("fd00::g"),
        "invalid IP address syntax",
    );
    refused(
        |v| v["shared_ipv4"][0]["address"] = json!("fd00::1"),
        "invalid IPv4 address syntax",
    );
    refused(
        |v| v["assignments"][0]["untill_ns"] = json!(5),
        "unknown field `untill_ns`",
    );
    refused(
        |v| v["workloads"]["c-db-2"]["ap"] = json!("db"),
        "unknown field `ap`",
    );
    refused(|v| v["workloads"][""] = json!({}), "a workload id is empty");
    refused(
        |v| v["shared_ipv4"][0]["pool"] = json!([40000, 70000]),
        "invalid value",
    );
}
