//! Answers across batches, against a real component: each plugin instance
//! sends a workload once and its answers refer to the host's copy of its
//! table, so every answer must still name the right workload when batches
//! list workloads in a different order, mix old and new ones, and after the
//! instance is rebuilt with an empty table.

mod common;

use common::*;

#[test]
fn answers_name_the_right_workloads_across_batches_and_rebuilds() {
    let fx = Fixture::new();
    let granted = fx.tmp.path().join("granted");
    std::fs::create_dir(&granted).unwrap();
    std::fs::write(granted.join("five.txt"), "12345").unwrap();
    std::fs::write(granted.join("three.txt"), "123").unwrap();
    // Port 4000 answers workload `ok:5`, port 4001 `ok:3`, others `misbehave`.
    let extra = format!(
        "[capabilities]\nread_dirs = [{{ host = \"{}\", guest = \"/data\" }}]\n[config]\nprobe_paths = [\"/data/five.txt\", \"/data/three.txt\"]\n",
        granted.display(),
    );
    install(
        &fx.plugins(),
        "table",
        &component("misbehave"),
        &misbehave_manifest(&extra),
    );
    let plugin = fx.open().get("table").unwrap();
    let ids = |ports: &[u16]| -> Vec<String> {
        let batch: Vec<_> = ports.iter().map(|&p| query(p, 1)).collect();
        let answers = plugin.identify(&batch).unwrap();
        (0..ports.len()).map(|i| id_of(&answers, i)).collect()
    };

    assert_eq!(ids(&[80]), ["misbehave"]);
    // One workload sent before and two new ones, listed in another order
    // than the table holds them.
    assert_eq!(
        ids(&[4001, 80, 4000, 4001]),
        ["ok:3", "misbehave", "ok:5", "ok:3"]
    );
    assert_eq!(ids(&[4000, 80, 4001]), ["ok:5", "misbehave", "ok:3"]);

    // A trap loses the instance; the rebuilt one starts a new table.
    assert!(plugin.identify(&[query(3, 1)]).is_err());
    assert_eq!(ids(&[4000, 4001, 80]), ["ok:5", "ok:3", "misbehave"]);
    assert_eq!(ids(&[80, 4001]), ["misbehave", "ok:3"]);
    let c = plugin.counters();
    assert_eq!((c.traps, c.rebuilds, c.errors), (1, 1, 0));
}

/// The same workload id with new attributes after the plugin re-reads its
/// source: the instance sends it again, and the host never answers with the
/// copy it received first.
#[test]
fn a_workload_whose_attributes_change_is_answered_with_the_new_ones() {
    let fx = Fixture::new();
    let state_dir = fx.tmp.path().join("ipman");
    std::fs::create_dir(&state_dir).unwrap();
    let state = state_dir.join("state.json");
    let write_state = |app: &str, mtime_secs: u64| {
        let text = serde_json::json!({
            "version": 1,
            "workloads": {"c-1": {"app": app}, "c-2": {"app": "db"}},
            "assignments": [
                {"ip": "fd00::1", "workload": "c-1", "since_ns": 0, "until_ns": null},
                {"ip": "fd00::2", "workload": "c-2", "since_ns": 0, "until_ns": null}
            ],
            "shared_ipv4": []
        });
        let aside = state.with_extension("tmp");
        std::fs::write(&aside, text.to_string()).unwrap();
        let file = std::fs::File::options().write(true).open(&aside).unwrap();
        file.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime_secs))
            .unwrap();
        drop(file);
        std::fs::rename(&aside, &state).unwrap();
    };
    write_state("web", 1_000);
    let manifest = format!(
        "kind = \"identity\"\nwit = \"0.3.0\"\n[limits]\nmemory_mib = 64\ncall_timeout_ms = 1000\n\
         [capabilities]\nread_dirs = [{{ host = \"{}\", guest = \"/ipman\" }}]\n[config]\nstate = \"/ipman/state.json\"\n",
        state_dir.display()
    );
    install(&fx.plugins(), "ipman", &component("ipman"), &manifest);
    let plugin = fx.open().get("ipman").unwrap();
    // Queries at the host's current time, so the plugin checks its file.
    let apps = || -> Vec<Option<String>> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        let batch: Vec<_> = ["[fd00::2]:5432", "[fd00::1]:443"]
            .iter()
            .map(|a| flowattr_model::LocalQuery {
                local: a.parse().unwrap(),
                protocol: Default::default(),
                time_ns: now,
                cgroup_id: 0,
                netns_id: 0,
                pid: 0,
            })
            .collect();
        let answers = plugin.identify(&batch).unwrap();
        (0..2)
            .map(|i| answers.resolve(i).unwrap().0.app.clone())
            .collect()
    };

    assert_eq!(apps(), [Some("db".into()), Some("web".into())]);
    write_state("api", 2_000);
    assert_eq!(apps(), [Some("db".into()), Some("api".into())]);
    // Back to the first attributes: sent as a new entry again, never
    // confused with the one it replaced.
    write_state("web", 3_000);
    assert_eq!(apps(), [Some("db".into()), Some("web".into())]);
}

/// Through the real component: an answer from a shared IPv4 address's port
/// allocation holds for the port only, one from an address assignment for
/// the whole address.
#[test]
fn ipman_answers_for_a_shared_address_are_port_scoped() {
    use flowattr_model::{AnswerScope, LocalQuery};
    let fx = Fixture::new();
    let state_dir = fx.tmp.path().join("ipman");
    std::fs::create_dir(&state_dir).unwrap();
    let text = serde_json::json!({
        "version": 1,
        "workloads": {"c-1": {"app": "web"}, "c-2": {"app": "db"}},
        "assignments": [
            {"ip": "fd00::1", "workload": "c-1", "since_ns": 0, "until_ns": null}
        ],
        "shared_ipv4": [
            {"address": "192.0.2.10", "pool": [40000, 59999], "allocations": [
                {"ports": [40000, 40999], "workload": "c-1", "since_ns": 0, "until_ns": null},
                {"ports": [41000, 41999], "workload": "c-2", "since_ns": 0, "until_ns": null}
            ]}
        ]
    });
    std::fs::write(state_dir.join("state.json"), text.to_string()).unwrap();
    let manifest = format!(
        "kind = \"identity\"\nwit = \"0.3.0\"\n[limits]\nmemory_mib = 64\ncall_timeout_ms = 1000\n\
         [capabilities]\nread_dirs = [{{ host = \"{}\", guest = \"/ipman\" }}]\n[config]\nstate = \"/ipman/state.json\"\n",
        state_dir.display()
    );
    install(&fx.plugins(), "ipman", &component("ipman"), &manifest);
    let plugin = fx.open().get("ipman").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let endpoints = [
        "192.0.2.10:40001",
        "[fd00::1]:443",
        "192.0.2.10:41001",
        "192.0.2.10:22",
    ];
    let batch: Vec<_> = endpoints
        .iter()
        .map(|a| LocalQuery {
            local: a.parse().unwrap(),
            protocol: Default::default(),
            time_ns: now,
            cgroup_id: 0,
            netns_id: 0,
            pid: 0,
        })
        .collect();
    let answers = plugin.identify(&batch).unwrap();
    assert_eq!(
        [id_of(&answers, 0), id_of(&answers, 1), id_of(&answers, 2)],
        ["c-1", "c-1", "c-2"]
    );
    let scopes: Vec<_> = (0..endpoints.len()).map(|i| answers.scope(i)).collect();
    assert_eq!(
        scopes,
        [
            Some(AnswerScope::Port),
            Some(AnswerScope::Address),
            Some(AnswerScope::Port),
            None
        ]
    );
}
