//! The adversarial search, measured through the real collector core: a fixed
//! budget of random harsh scenarios leaves no wrong answer, no wrong edge,
//! no lost flow, and inside the tolerances at most 1% unattributed outside
//! genuine ambiguity; the same search with the identity sources'
//! protection switched off does report misattributions (it can see an
//! error when there is one); and every fault the scenarios can draw
//! happens without losing a flow the collector accepted.
//!
//! Needs the bundled plugins installed in `plugins/` (`scripts/build`).

use std::{path::PathBuf, time::Duration};

use flowattr_sim::{
    RunOptions, Scenario,
    explore::{self, ExploreOptions, UNAMBIGUOUS_BUDGET_PCT},
    run,
};

/// Draws in the CI budget (a few minutes on a 2-core machine).
const CI_DRAWS: u32 = 300;
const CI_SEED: u64 = 16;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn options(
    dir: &tempfile::TempDir,
    draws: u32,
    adjust: Option<fn(&mut Scenario)>,
) -> ExploreOptions {
    ExploreOptions {
        draws,
        seed: CI_SEED,
        run: RunOptions {
            plugins: workspace().join("plugins"),
            work_dir: dir.path().join("work"),
            cache_dir: Some(workspace().join("target/flowattr-test-cache")),
            progress: None,
            workers: 2,
        },
        failures: dir.path().join("failures"),
        adjust,
    }
}

#[test]
fn random_harsh_fleets_never_get_an_answer_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let (totals, draws) = explore::explore(&options(&dir, CI_DRAWS, None), |d, _| {
        println!("{}", d.line());
        for e in &d.examples {
            println!("      e.g. {e}");
        }
    })
    .unwrap();
    println!("{}", totals.table());
    for d in &draws {
        assert_eq!(
            (d.misattributed, d.local_misattributed, d.wrong_edges),
            (0, 0, 0),
            "draw {}: {}\n{}",
            d.index,
            d.line(),
            d.examples.join("\n")
        );
        assert_eq!(
            (d.lost, d.unknown),
            (0, 0),
            "draw {}: {}",
            d.index,
            d.line()
        );
        assert!(d.failures.is_empty(), "draw {}: {}", d.index, d.line());
        assert!(d.flows > 0, "draw {}: no flows", d.index);
    }
    assert!(
        totals.inside >= CI_DRAWS / 5,
        "{} draws inside",
        totals.inside
    );
    assert!(
        totals.inside_worst_unambiguous_pct <= UNAMBIGUOUS_BUDGET_PCT,
        "{}",
        totals.table()
    );
    assert!(totals.legacy_misattributed > 0, "the legacy method errs");
}

/// Sources up to 30 s behind, read without their protection, on a churning
/// fleet of few hosts (so an address goes to the next workload on the same
/// host while the source still names the last).
fn lagging_unprotected(s: &mut Scenario) {
    lagging(s);
    s.identity.protect = false;
}

fn lagging(s: &mut Scenario) {
    s.identity.lag_max = Duration::from_secs(30);
    s.identity.lead_max = Duration::ZERO;
    s.addresses.reuse_after = Duration::from_secs(1);
    s.agents.per_region = 3;
    for service in &mut s.services {
        service.lifetime = service.lifetime.min(Duration::from_secs(90));
    }
}

#[test]
fn without_the_identity_protection_the_search_reports_misattributions() {
    let dir = tempfile::tempdir().unwrap();
    let draws = 6;
    let (broken, outcomes) =
        explore::explore(&options(&dir, draws, Some(lagging_unprotected)), |d, _| {
            println!("{}", d.line())
        })
        .unwrap();
    println!("{}", broken.table());
    assert!(
        broken.local_misattributed > 0,
        "the judge sees wrong local sides\n{}",
        broken.table()
    );
    assert!(
        broken.misattributed > 0,
        "and the remote sides they lead to\n{}",
        broken.table()
    );
    assert!(broken.failed > 0);
    let written = outcomes.iter().find_map(|d| d.written.clone()).unwrap();
    let again = Scenario::parse(&std::fs::read_to_string(&written).unwrap()).unwrap();
    assert!(
        !again.identity.protect,
        "the written draw reproduces the break"
    );

    // The same fleets with the protection on: nothing wrong.
    let dir = tempfile::tempdir().unwrap();
    let (kept, _) = explore::explore(&options(&dir, draws, Some(lagging)), |d, _| {
        println!("{}", d.line())
    })
    .unwrap();
    println!("{}", kept.table());
    assert_eq!(
        (
            kept.misattributed,
            kept.local_misattributed,
            kept.wrong_edges
        ),
        (0, 0, 0),
        "{}",
        kept.table()
    );
}

#[test]
fn every_fault_happens_and_no_accepted_flow_is_lost() {
    let text = std::fs::read_to_string(workspace().join("scenarios/default.toml")).unwrap();
    let mut s = Scenario::parse(&text).unwrap();
    s.duration = Duration::from_secs(8 * 60);
    s.agents.agentless = 0.1;
    s.agents.restarts_per_hour = 6.0;
    s.agents.silences_per_hour = 6.0;
    s.agents.silence_max = Duration::from_secs(90);
    s.agents.lost = 0.02;
    s.agents.duplicated = 0.05;
    s.network.backlog = 0.02;
    s.identity.lag_max = Duration::from_secs(5);
    s.identity.lead_max = Duration::from_secs(5);
    // The A/B's waiting comparisons would not survive the restart.
    s.legacy.asked_after = Duration::ZERO;
    s.collector
        .restarts
        .push(flowattr_sim::scenario::CollectorRestart {
            region: "us-east-1".into(),
            at: Duration::from_secs(4 * 60),
            down: Duration::from_secs(10),
        });
    let dir = tempfile::tempdir().unwrap();
    let o = run(
        &s,
        &RunOptions {
            plugins: workspace().join("plugins"),
            work_dir: dir.path().to_owned(),
            cache_dir: Some(workspace().join("target/flowattr-test-cache")),
            progress: None,
            workers: 2,
        },
    )
    .unwrap();
    println!("{:?}\n{:?}\n{}", o.agents, o.local, o.report.table());
    let a = &o.agents;
    assert!(a.not_captured > 0 && a.restarts > 0 && a.silences > 0);
    assert!(a.lost_in_crashes + a.missed_while_down > 0);
    assert!(a.batches_lost > 0 && a.batches_duplicated > 0);
    assert!(
        a.local_unattributed
            .get("source-unavailable")
            .copied()
            .unwrap_or(0)
            > 0
    );
    assert_eq!(
        (o.lost, o.unknown),
        (0, 0),
        "accepted flows all come out, once"
    );
    let hb = &o.report.heartbeat;
    assert_eq!(
        (hb.misattributed, o.local.misattributed, hb.edges.wrong),
        (0, 0, 0),
        "{}",
        o.report.table()
    );
}
