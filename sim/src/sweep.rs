//! Sweeps: the same scenario run across one parameter, to show how each
//! method's misattribution moves with the legacy event delay, the address
//! reuse time, and the legacy attributor's hold.

use std::{fmt::Write as _, time::Duration};

use serde::Serialize;

use crate::{RunOptions, Scenario, run};

/// Which parameter a sweep moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parameter {
    /// The legacy events' median delay, 1 s to 30 min.
    LegacyDelay,
    /// How soon a released address is handed out again, 30 min down to 5 s.
    ReuseTime,
    /// The legacy attributor without and with its hold.
    LegacyHold,
}

impl Parameter {
    pub fn name(self) -> &'static str {
        match self {
            Self::LegacyDelay => "legacy delay (median)",
            Self::ReuseTime => "address reuse after",
            Self::LegacyHold => "legacy hold",
        }
    }

    /// The values swept.
    pub fn values(self) -> Vec<Duration> {
        let s = Duration::from_secs;
        match self {
            Self::LegacyDelay => vec![s(1), s(10), s(30), s(120), s(600), s(1800)],
            Self::ReuseTime => vec![s(1800), s(600), s(120), s(30), s(5)],
            Self::LegacyHold => vec![s(0), s(60), s(300), s(900)],
        }
    }

    fn apply(self, scenario: &mut Scenario, value: Duration) {
        match self {
            Self::LegacyDelay => scenario.legacy.delay_median = value,
            Self::ReuseTime => scenario.addresses.reuse_after = value,
            Self::LegacyHold => scenario.legacy.hold = value,
        }
    }
}

/// One point of a sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub value_secs: u64,
    pub flows: u64,
    pub heartbeat_misattributed_pct: f64,
    pub legacy_misattributed_pct: f64,
    pub heartbeat_wrong_edges: u64,
    pub legacy_wrong_edges_pct: f64,
    /// The focus service's wrong edges, by the legacy method.
    pub legacy_focus_wrong_edges_pct: Option<f64>,
    pub heartbeat_unattributed_unambiguous_pct: f64,
    /// Flows the legacy method left unattributed, in percent.
    pub legacy_unattributed_pct: f64,
}

/// Runs `scenario` at every value of `parameter`.
pub fn sweep(
    scenario: &Scenario,
    parameter: Parameter,
    options: &RunOptions,
) -> anyhow::Result<Vec<Point>> {
    let mut points = Vec::new();
    for (i, value) in parameter.values().into_iter().enumerate() {
        let mut s = scenario.clone();
        parameter.apply(&mut s, value);
        let mut o = options.clone();
        o.work_dir = options.work_dir.join(format!("point-{i}"));
        let outcome = run(&s, &o)?;
        let r = &outcome.report;
        points.push(Point {
            value_secs: value.as_secs(),
            flows: r.flows,
            heartbeat_misattributed_pct: r.heartbeat.misattributed_pct,
            legacy_misattributed_pct: r.legacy.misattributed_pct,
            heartbeat_wrong_edges: r.heartbeat.edges.wrong,
            legacy_wrong_edges_pct: r.legacy.edges.wrong_pct(),
            legacy_focus_wrong_edges_pct: r.legacy.focus_edges.map(|e| e.wrong_pct()),
            heartbeat_unattributed_unambiguous_pct: r.heartbeat.unattributed_unambiguous_pct,
            legacy_unattributed_pct: if r.flows == 0 {
                0.0
            } else {
                100.0 * r.legacy.unattributed as f64 / r.flows as f64
            },
        });
        let _ = std::fs::remove_dir_all(&o.work_dir);
    }
    Ok(points)
}

/// A sweep as a terminal table.
pub fn table(parameter: Parameter, points: &[Point]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:>8} | {:>10} {:>11} {:>10} | {:>10} {:>12} {:>11} {:>11}",
        parameter.name(),
        "flows",
        "hb misattr",
        "wrong edges",
        "hb unattr*",
        "legacy mis",
        "legacy unattr",
        "wrong edges",
        "focus wrong",
    );
    for p in points {
        let _ = writeln!(
            out,
            "{:<22} {:>8} | {:>9.2}% {:>11} {:>9.2}% | {:>9.2}% {:>12.2}% {:>10.1}% {:>11}",
            humantime::format_duration(Duration::from_secs(p.value_secs)).to_string(),
            p.flows,
            p.heartbeat_misattributed_pct,
            p.heartbeat_wrong_edges,
            p.heartbeat_unattributed_unambiguous_pct,
            p.legacy_misattributed_pct,
            p.legacy_unattributed_pct,
            p.legacy_wrong_edges_pct,
            p.legacy_focus_wrong_edges_pct
                .map_or("-".into(), |v| format!("{v:.1}%")),
        );
    }
    let _ = writeln!(
        out,
        "hb: heartbeat (its wrong edges as a count); legacy: sonar-legacy in shadow (wrong edges as a share).\n\
         * unattributed outside genuine ambiguity (conflict, clock skew), % of flows. focus wrong: the focus service's edges, legacy."
    );
    out
}
