//! The sandbox, against a real hostile component: deadlines, memory caps,
//! traps with rebuild, filesystem grants, log rate limits.

mod common;

use common::*;
use flowattr_plugin_runtime::Failure;

#[test]
fn an_infinite_loop_is_stopped_by_its_deadline_and_the_instance_rebuilt() {
    let fx = Fixture::new();
    install(
        &fx.plugins(),
        "bad",
        &component("misbehave"),
        &misbehave_manifest(""),
    );
    let dir = fx.open();
    let plugin = dir.get("bad").expect("loaded");

    let err = plugin.identify(&[query(80, 1), query(1, 1)]).unwrap_err();
    assert_eq!(err.failure, Failure::Timeout(200));
    assert_eq!(&*err.plugin, "bad");

    let answers = plugin
        .identify(&[query(80, 2)])
        .expect("the next batch succeeds");
    assert_eq!(id_of(&answers, 0), "misbehave");
    let c = plugin.counters();
    assert_eq!((c.timeouts, c.rebuilds, c.calls, c.records), (1, 1, 1, 1));
}

#[test]
fn growing_memory_past_the_cap_is_stopped() {
    let fx = Fixture::new();
    install(
        &fx.plugins(),
        "hog",
        &component("misbehave"),
        &misbehave_manifest(""),
    );
    let plugin = fx.open().get("hog").unwrap();

    let err = plugin.identify(&[query(2, 1)]).unwrap_err();
    assert_eq!(err.failure, Failure::MemoryExceeded(16));
    assert_eq!(plugin.counters().memory_exceeded, 1);

    assert!(plugin.identify(&[query(80, 1)]).is_ok());
    let (current, peak) = plugin.memory_bytes().expect("live instance");
    assert!(peak <= 16 << 20, "peak {peak} within the cap");
    assert!(current > 0);
}

#[test]
fn a_trap_is_contained_and_the_next_batch_succeeds() {
    let fx = Fixture::new();
    install(
        &fx.plugins(),
        "trap",
        &component("misbehave"),
        &misbehave_manifest(""),
    );
    let plugin = fx.open().get("trap").unwrap();

    let err = plugin.identify(&[query(3, 1)]).unwrap_err();
    assert!(matches!(err.failure, Failure::Trap(_)), "{err}");
    assert!(err.failure.lost_instance());

    let answers = plugin.identify(&[query(80, 5), query(81, 6)]).unwrap();
    assert_eq!(answers.answers.len(), 2);
    let c = plugin.counters();
    assert_eq!((c.traps, c.rebuilds, c.calls, c.records), (1, 1, 1, 2));
}

#[test]
fn a_plugin_reads_its_grant_and_nothing_outside_it() {
    let fx = Fixture::new();
    let granted = fx.tmp.path().join("granted");
    std::fs::create_dir(&granted).unwrap();
    std::fs::write(granted.join("inside.txt"), "12345").unwrap();
    let secret = fx.tmp.path().join("secret.txt");
    std::fs::write(&secret, "top secret").unwrap();

    let probes = [
        "/data/inside.txt".to_owned(),
        "/data/../secret.txt".to_owned(),
        secret.display().to_string(),
        "/etc/hostname".to_owned(),
    ];
    let extra = format!(
        "[capabilities]\nread_dirs = [{{ host = \"{}\", guest = \"/data\" }}]\n[config]\nprobe_paths = {:?}\n",
        granted.display(),
        probes
    );
    install(
        &fx.plugins(),
        "probe",
        &component("misbehave"),
        &misbehave_manifest(&extra),
    );
    let plugin = fx.open().get("probe").unwrap();

    let answers = plugin
        .identify(&(0..4).map(|i| query(4000 + i, 1)).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(id_of(&answers, 0), "ok:5", "the grant is readable");
    for (i, probe) in probes.iter().enumerate().skip(1) {
        let id = id_of(&answers, i);
        assert!(
            id.starts_with("denied:"),
            "probe {probe} read something: {id}"
        );
    }
}

#[test]
fn plugin_log_lines_are_rate_limited_and_counted() {
    let fx = Fixture::new();
    install(
        &fx.plugins(),
        "chatty",
        &component("misbehave"),
        &misbehave_manifest(""),
    );
    let plugin = fx.open().get("chatty").unwrap();

    plugin.identify(&[query(7, 1)]).unwrap();
    let c = plugin.counters();
    assert_eq!(c.log_lines + c.log_suppressed, 1000);
    assert!(c.log_lines <= 110, "wrote {} lines", c.log_lines);
    assert!(
        c.log_lines >= 100,
        "the burst gets through: {}",
        c.log_lines
    );
}

#[test]
fn calling_the_wrong_kind_is_refused_without_touching_the_instance() {
    let fx = Fixture::new();
    install(
        &fx.plugins(),
        "id",
        &component("misbehave"),
        &misbehave_manifest(""),
    );
    let plugin = fx.open().get("id").unwrap();
    let err = plugin.resolve(&[]).unwrap_err();
    assert!(matches!(err.failure, Failure::WrongKind { .. }), "{err}");
    assert_eq!(plugin.counters().calls, 0);
    assert!(plugin.identify(&[query(80, 1)]).is_ok());
}

/// The flood-sink fixture's manifest in `mode`.
fn flood_manifest(mode: &str) -> String {
    format!(
        "kind = \"sink\"\nwit = \"0.3.0\"\n[limits]\nmemory_mib = 16\ncall_timeout_ms = 1000\n[config]\nmode = \"{mode}\"\n"
    )
}

fn flows(n: usize) -> Vec<flowattr_model::AttributedFlow> {
    (0..n)
        .map(|i| {
            flowattr_model::AttributedFlow::new(flowattr_model::Flow::tcp(
                "10.0.0.1:40000".parse().unwrap(),
                "10.0.0.2:443".parse().unwrap(),
                i as u64,
            ))
        })
        .collect()
}

#[test]
fn a_sink_writing_past_its_limit_is_stopped_and_its_output_discarded() {
    let fx = Fixture::new();
    install(
        &fx.plugins(),
        "flood",
        &component("flood-sink"),
        &flood_manifest("flood"),
    );
    let plugin = fx.open().get("flood").unwrap();
    let mut out = b"earlier chunk".to_vec();
    let err = plugin.format(&flows(3), &mut out).unwrap_err();
    let Failure::Trap(message) = &err.failure else {
        panic!("{err}");
    };
    assert!(
        message.contains("past the plugin's limit of 16777216"),
        "{message}"
    );
    assert_eq!(out, b"earlier chunk", "nothing of the failed call is kept");
    assert_eq!(plugin.counters().traps, 1);
}

#[test]
fn a_sink_that_fails_after_writing_leaves_the_buffer_as_it_was() {
    let fx = Fixture::new();
    install(
        &fx.plugins(),
        "fail",
        &component("flood-sink"),
        &flood_manifest("then-fail"),
    );
    let plugin = fx.open().get("fail").unwrap();
    let mut out = b"earlier chunk".to_vec();
    let err = plugin.format(&flows(2), &mut out).unwrap_err();
    assert_eq!(err.failure, Failure::Plugin("asked to fail".into()));
    assert_eq!(out, b"earlier chunk");
}

#[test]
fn a_sink_writing_outside_format_is_refused_at_load_and_a_sound_one_appends() {
    let fx = Fixture::new();
    install(
        &fx.plugins(),
        "early",
        &component("flood-sink"),
        &flood_manifest("in-init"),
    );
    install(
        &fx.plugins(),
        "count",
        &component("flood-sink"),
        &flood_manifest("count"),
    );
    let (dir, report) =
        flowattr_plugin_runtime::PluginDirectory::open(&fx.runtime, fx.plugins()).unwrap();
    let refused = report
        .refused
        .iter()
        .find(|r| r.to_string().contains("early"))
        .unwrap_or_else(|| panic!("{:?}", report.refused));
    assert!(
        refused
            .to_string()
            .contains("output.write called outside a format call"),
        "{refused}"
    );
    let count = dir.get("count").unwrap();
    let mut out = b"kept\n".to_vec();
    count.format(&flows(4), &mut out).unwrap();
    count.format(&flows(2), &mut out).unwrap();
    assert_eq!(out, b"kept\n4 flows\n2 flows\n");
}
