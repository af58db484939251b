//! The collector's core on a fake clock: completeness (late, silent and
//! restarted agents) and measured clock offsets (an agent slightly off, an
//! agent minutes off), with the real sink component writing JSON lines.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use common::{
    fleet::{Fleet, S, agent_prefix, flow, local_of, remote_of, workload},
    settings::core_settings,
};
use flowattr_collector::{
    clocks::ClockSample,
    core::{Arrival, Core, CoreParts, CoreSettings, Decision, Input},
    journal::Journal,
    metrics::CollectorMetrics,
    output::{FileOutput, FileOutputConfig, Outputs},
    ownership::{OwnershipConfig, OwnershipTable},
    remote::Regions,
};
use flowattr_model::{AttributedFlow, FlowBatch};
use flowattr_plugin_runtime::{PluginDirectory, Runtime, RuntimeConfig, clock::ManualClock};

const T0: u64 = 1_767_225_600 * S;
const HOLD: Duration = Duration::from_secs(60);
const SILENT: Duration = Duration::from_secs(300);

/// A core on a clock the test moves, writing to `fleet.out_dir("core")`.
struct Harness {
    fleet: Fleet,
    core: Core,
    clock: Arc<AtomicU64>,
    plugin_clock: Arc<ManualClock>,
    metrics: Arc<CollectorMetrics>,
    seqs: std::collections::HashMap<String, u64>,
}

impl Harness {
    fn new() -> Harness {
        let fleet = Fleet::new();
        let plugin_clock = Arc::new(ManualClock::new(T0));
        let runtime = Runtime::new(RuntimeConfig {
            cache_dir: None,
            clock: plugin_clock.clone(),
            ..RuntimeConfig::default()
        })
        .unwrap();
        let (directory, _) = PluginDirectory::open(&runtime, fleet.plugins()).unwrap();
        let mut table = OwnershipTable::new(OwnershipConfig::default());
        for agent in ["agent-a", "agent-b"] {
            table.allow(agent, [agent_prefix(agent).parse().unwrap()]);
        }
        let (journal, _) = Journal::open(&fleet.dir.path().join("journal"), 1000).unwrap();
        let output = FileOutput::new(FileOutputConfig {
            dir: fleet.out_dir("core"),
            prefix: "flows".into(),
            extension: "jsonl".into(),
            rotate_bytes: 1 << 30,
            rotate_after: Duration::from_secs(86_400),
            keep_files: 0,
            file_per_chunk: false,
        })
        .unwrap();
        let clock = Arc::new(AtomicU64::new(T0));
        let now = clock.clone();
        let metrics = Arc::new(CollectorMetrics::new());
        let core = Core::new(
            CoreSettings {
                incarnation: T0,
                hold: HOLD,
                silent_after: SILENT,
                ..core_settings(2)
            },
            CoreParts {
                table,
                journal,
                outputs: Outputs::new(vec![Box::new(output)], 64 << 20),
                regions: Regions::default(),
                forwarders: Vec::new(),
                sharing: None,
                plugins: Arc::new(directory),
                metrics: metrics.clone(),
                clock: Box::new(move || now.load(Ordering::Relaxed)),
                comparison: None,
            },
        );
        Harness {
            fleet,
            core,
            clock,
            plugin_clock,
            metrics,
            seqs: Default::default(),
        }
    }

    fn now(&self) -> u64 {
        self.clock.load(Ordering::Relaxed)
    }

    /// Moves the clock to `t` a tick at a time.
    fn run_to(&mut self, t: u64) {
        while self.now() < t {
            let next = (self.now() + S / 10).min(t);
            self.clock.store(next, Ordering::Relaxed);
            self.plugin_clock.set(next);
            self.core.tick();
            self.core.finish_formatting();
        }
    }

    /// `agent`, whose clock is `offset` ahead of ours, ships `flows`
    /// (times already on its clock) with its watermark at its now; the
    /// frame takes 2 ms, the RTT is 4 ms.
    fn ship(&mut self, agent: &str, offset: i64, flows: Vec<AttributedFlow>) {
        let now = self.now();
        let on_agent = |t: u64| t.saturating_add_signed(offset);
        let seq = self.seqs.entry(agent.to_owned()).or_default();
        let batch = FlowBatch {
            agent: agent.into(),
            incarnation: 1,
            seq: *seq,
            created_ns: on_agent(now),
            complete_until_ns: on_agent(now),
            flows,
        };
        *seq += 1;
        self.deliver(agent, batch, on_agent(now - 2_000_000));
    }

    fn deliver(&mut self, agent: &str, batch: FlowBatch, sent_ns: u64) {
        let mut frame = Vec::new();
        flowattr_transport::codec::encode_batch(&batch, &mut frame).unwrap();
        let decision = Arc::new(std::sync::Mutex::new(None));
        let d = decision.clone();
        self.core.handle(Input::Arrival(Arrival {
            peer: agent.into(),
            batch,
            body: frame.split_off(4),
            clock: Some(ClockSample {
                sent_ns,
                received_ns: self.now(),
                rtt_ns: 4_000_000,
            }),
            reply: Box::new(move |x| *d.lock().unwrap() = Some(x)),
        }));
        assert_eq!(*decision.lock().unwrap(), Some(Decision::Accepted));
    }

    /// Written flows as (local port, local side, remote side).
    fn written(&self) -> Vec<(u64, String, String)> {
        self.fleet
            .written("core")
            .iter()
            .map(|l| {
                let port = l["local"]["port"].as_u64().unwrap();
                (port, local_of(l), remote_of(l))
            })
            .collect()
    }

    fn remote_by_port(&self, port: u64) -> Option<String> {
        self.written()
            .into_iter()
            .find(|(p, _, _)| *p == port)
            .map(|(_, _, r)| r)
    }
}

/// api-1 (agent-a, 10.1.0.5) called db-1 (agent-b, 10.2.0.7) at `t`: both
/// ends' records, each on its own host's clock.
fn call(port: u16, t_a: u64, t_b: u64) -> (AttributedFlow, AttributedFlow) {
    let (api, db) = (workload("api-1"), workload("db-1"));
    let a = flow(&format!("10.1.0.5:{port}"), &api, "10.2.0.7:5432", t_a);
    let b = flow("10.2.0.7:5432", &db, &format!("10.1.0.5:{port}"), t_b);
    (a, b)
}

#[test]
fn a_late_agent_holds_flows_back_until_it_reports_then_they_are_attributed() {
    let mut h = Harness::new();
    // db-1's longer-lived range, from flows with a third party.
    let db = workload("db-1");
    let old: Vec<_> = (0..10)
        .map(|i| {
            flow(
                "10.2.0.7:5432",
                &db,
                &format!("10.3.0.1:{}", 100 + i),
                T0 + i * 3 * S,
            )
        })
        .collect();
    h.run_to(T0 + 30 * S);
    h.ship("agent-b", 0, old);
    h.run_to(T0 + 40 * S);
    // agent-b has reported up to 40 s when agent-a's call to db-1 at 20 s
    // arrives: it leaves at once.
    h.ship("agent-b", 0, Vec::new());
    let (a, _) = call(1001, T0 + 20 * S, T0 + 20 * S);
    h.ship("agent-a", 0, vec![a]);
    h.run_to(T0 + 45 * S);
    assert_eq!(
        h.remote_by_port(1001),
        Some("db-1".into()),
        "b reported past it"
    );

    // Then agent-b falls behind: it ships its record of a call at 50 s only
    // at 80 s.
    let (a, b) = call(1002, T0 + 50 * S, T0 + 50 * S);
    h.run_to(T0 + 52 * S);
    h.ship("agent-a", 0, vec![a]);
    h.run_to(T0 + 80 * S);
    assert_eq!(h.remote_by_port(1002), None, "waits for agent-b");
    h.ship("agent-b", 0, vec![b]);
    h.run_to(T0 + 81 * S);
    assert_eq!(
        h.remote_by_port(1002),
        Some("db-1".into()),
        "released as soon as agent-b reported, long before the hold"
    );
}

#[test]
fn a_silent_agent_makes_flows_incomplete_at_the_hold_then_is_no_longer_waited_for() {
    let mut h = Harness::new();
    h.ship("agent-b", 0, Vec::new());
    h.run_to(T0 + 10 * S);
    let (a, _) = call(2001, T0 + 5 * S, T0 + 5 * S);
    h.ship("agent-a", 0, vec![a]);
    h.run_to(T0 + 10 * S + HOLD.as_nanos() as u64 - S);
    assert_eq!(h.remote_by_port(2001), None);
    h.run_to(T0 + 11 * S + HOLD.as_nanos() as u64);
    assert_eq!(
        h.remote_by_port(2001),
        Some("unattributed:incomplete".into())
    );

    // After silent_after agent-b is not waited for: a flow to its address
    // leaves at once, unattributed with the table's reason, never guessed.
    let later = T0 + SILENT.as_nanos() as u64 + 20 * S;
    h.run_to(later);
    let (a, _) = call(2002, later - 3 * S, later - 3 * S);
    h.ship("agent-a", 0, vec![a]);
    h.run_to(later + S);
    assert_eq!(
        h.remote_by_port(2002),
        Some("unattributed:not-found".into())
    );
}

#[test]
fn a_restarted_agent_is_waited_for_by_its_new_run() {
    let mut h = Harness::new();
    h.ship("agent-b", 0, Vec::new());
    h.run_to(T0 + 10 * S);
    let (a, b) = call(3001, T0 + 8 * S, T0 + 8 * S);
    h.ship("agent-a", 0, vec![a]);
    h.run_to(T0 + 20 * S);
    assert_eq!(h.remote_by_port(3001), None);
    // agent-b restarts: a new incarnation, seq from 0, its watermark on.
    let batch = FlowBatch {
        agent: "agent-b".into(),
        incarnation: 2,
        seq: 0,
        created_ns: h.now(),
        complete_until_ns: h.now(),
        flows: vec![b],
    };
    let sent = h.now() - 1_000_000;
    h.deliver("agent-b", batch, sent);
    h.run_to(T0 + 21 * S);
    assert_eq!(h.remote_by_port(3001), Some("db-1".into()));
}

#[test]
fn clock_offsets_are_measured_and_a_slightly_off_agent_still_attributes() {
    let mut h = Harness::new();
    let offset = 700_000_000i64; // agent-b 0.7 s ahead
    let (a, b) = call(4001, T0 + 3 * S, T0 + 3 * S + offset as u64);
    for i in 0..15 {
        if i == 5 {
            h.ship("agent-a", 0, vec![a.clone()]);
            h.ship("agent-b", offset, vec![b.clone()]);
        } else {
            h.ship("agent-a", 0, Vec::new());
            h.ship("agent-b", offset, Vec::new());
        }
        h.run_to(T0 + (i + 1) * S);
    }
    assert_eq!(h.remote_by_port(4001), Some("db-1".into()));
    assert_eq!(h.remote_by_port(5432), Some("api-1".into()));
    let measured = h.metrics.value(
        "flowattr_collector_agent_clock_offset_seconds",
        &[("agent", "agent-b")],
    );
    assert!((measured - 0.7).abs() < 0.005, "measured {measured} s");
    let trusted = h.metrics.value(
        "flowattr_collector_agent_clock_trusted",
        &[("agent", "agent-b")],
    );
    assert_eq!(trusted, 1.0);
}

#[test]
fn an_agent_minutes_off_is_never_trusted_and_never_causes_a_wrong_answer() {
    let mut h = Harness::new();
    let ahead = 180 * S as i64; // agent-b three minutes ahead
    // On its clock, db-2 "owned" 10.2.0.7 at what is really T0 + 10 s
    // (it really owned it three minutes later). Nothing of it may count.
    let db2 = workload("db-2");
    let skewed: Vec<_> = (0..5)
        .map(|i| {
            flow(
                "10.2.0.7:5432",
                &db2,
                &format!("10.3.0.1:{}", 200 + i),
                T0 + (5 + 3 * i) * S,
            )
        })
        .collect();
    h.run_to(T0 + 30 * S);
    h.ship("agent-b", ahead, skewed);
    let api = workload("api-1");
    let a = flow("10.1.0.5:5001", &api, "10.2.0.7:5432", T0 + 10 * S);
    h.ship("agent-a", 0, vec![a]);
    h.run_to(T0 + 30 * S + HOLD.as_nanos() as u64 + S);
    let written = h.written();
    // agent-b, who may claim the address, reports nothing trusted: its
    // address stays incomplete rather than answered from a table without it.
    assert_eq!(
        h.remote_by_port(5001),
        Some("unattributed:incomplete".into())
    );
    // Its own flows keep their local side; their remote side is clock-skew.
    let skewed_out: Vec<_> = written.iter().filter(|(p, _, _)| *p == 5432).collect();
    assert_eq!(skewed_out.len(), 5);
    for (_, local, remote) in skewed_out {
        assert_eq!(local, "db-2");
        assert_eq!(remote, "unattributed:clock-skew");
    }
    assert_eq!(
        h.metrics.value(
            "flowattr_collector_agent_clock_trusted",
            &[("agent", "agent-b")]
        ),
        0.0
    );
}
