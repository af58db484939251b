//! `flowattr sim --explore N`: an adversarial search. Draws `N` scenarios at
//! random over wide ranges ([`draw`], pure and seeded), runs each briefly
//! (a few simulated minutes, a small fleet) through the real collector core
//! ([`crate::run`]), and checks every draw: no heartbeat answer names the
//! wrong workload, no local side either, no wrong dependency edge, no flow
//! lost — and a draw inside the tolerances ([`inside_tolerances`]) leaves
//! at most 1% of its flows unattributed outside genuine ambiguity.
//!
//! The ranges: address reuse 0.5 s to 10 min, host clock skew 0 to 10 s
//! (against a collector tolerance of 0.5 to 5 s), batch interval 1 s to
//! 2 min, hold 1 s to 5 min, an agent counted silent after 10 s to 10 min,
//! lifetimes 30 s to a day, shares of IPv6-only
//! containers, load balancers and cross-region calls, network RTT 0.1 to
//! 50 ms with backlogs up to 10 s, and — outside the tolerances — agents
//! that crash or fall silent, hosts without one, lost batches, identity
//! sources lagging or leading by up to 30 s, a collector restart; batches
//! sent twice anywhere; the legacy stream 1 s to 30 min late, losing up to
//! a fifth of its events. The legacy method is expected to be wrong, so
//! its answers are counted, not checked.
//!
//! A failing draw is written out as a scenario file that `flowattr sim
//! FILE` runs again, failure and all.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use rand::{RngExt, SeedableRng};
use rand_pcg::Pcg64Mcg;
use serde::Serialize;

use crate::{
    RunOptions,
    run::run,
    scenario::{
        AddressesSection, AgentsSection, ClocksSection, CollectorRestart, CollectorSection,
        IdentitySection, Kind, LegacySection, NetworkSection, RegionSpec, Scenario, ServiceSpec,
    },
};

/// Share of draws made inside the tolerances on purpose (others may land
/// there too).
const INSIDE_SHARE: f64 = 0.4;
/// The budget for unattributed flows outside genuine ambiguity, inside the
/// tolerances, in percent of a draw's flows.
pub const UNAMBIGUOUS_BUDGET_PCT: f64 = 1.0;

/// How long after a flow's end every agent's report of it can take to be
/// in: a batch interval, twice the tolerance between two agents' clocks,
/// and twice the worst network delay.
pub fn cadence(s: &Scenario) -> Duration {
    let n = &s.network;
    let worst_delay = if n.backlog > 0.0 {
        n.backlog_max.max(n.rtt)
    } else {
        n.rtt
    };
    s.agents.batch_interval + 2 * s.collector.max_skew + 2 * worst_delay
}

/// Whether a scenario stays inside what the collector is promised: every
/// host's clock (with its connection's RTT) within the collector's
/// `max_skew`; every batch inside the hold, and no agent counted silent
/// between two of its batches (both at least the [`cadence`]); and nothing
/// that takes data away — every host runs an agent that never crashes,
/// falls silent or loses a batch, identity sources never lag, no collector
/// restarts. Duplicates, leading identity sources, reuse, lifetimes,
/// IPv6-only containers, load balancers, cross-region calls and the legacy
/// stream may be anything.
pub fn inside_tolerances(s: &Scenario) -> bool {
    let (a, n, c) = (&s.agents, &s.network, &s.collector);
    s.clocks.max_skew + n.rtt <= c.max_skew
        && cadence(s) <= c.hold
        && cadence(s) <= c.silent_after
        && a.agentless == 0.0
        && a.restarts_per_hour == 0.0
        && a.silences_per_hour == 0.0
        && a.lost == 0.0
        && s.identity.lag_max.is_zero()
        && c.restarts.is_empty()
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A log-uniform draw between `lo` and `hi`.
fn log_uniform_f(rng: &mut Pcg64Mcg, lo: f64, hi: f64) -> f64 {
    (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp()
}

/// A log-uniform draw between `lo` and `hi` seconds.
fn log_uniform(rng: &mut Pcg64Mcg, lo: f64, hi: f64) -> Duration {
    secs(log_uniform_f(rng, lo, hi))
}

/// `Some` share between 0 and `max` with probability `p`, else 0.
fn sometimes(rng: &mut Pcg64Mcg, p: f64, max: f64) -> f64 {
    if rng.random_bool(p) {
        rng.random::<f64>() * max
    } else {
        0.0
    }
}

/// Rounded to the millisecond, so a scenario file shows it plainly.
fn ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Draw `index` of the exploration seeded `seed`: the same pair gives the
/// same scenario.
pub fn draw(seed: u64, index: u32) -> Scenario {
    let mut rng =
        Pcg64Mcg::seed_from_u64(seed ^ u64::from(index).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let inside = rng.random_bool(INSIDE_SHARE);
    let duration = Duration::from_secs(rng.random_range(3..=6) * 60);

    let max_skew = [500, 1000, 2000, 5000][rng.random_range(0..4)];
    let max_skew = Duration::from_millis(max_skew);
    let rtt = ms(log_uniform(&mut rng, 0.001, 0.05)).max(Duration::from_millis(1));
    let mut batch_interval = Duration::from_secs(log_uniform(&mut rng, 1.0, 120.0).as_secs());
    let mut hold = ms(log_uniform(&mut rng, 1.0, 300.0));
    let backlog = sometimes(&mut rng, 0.4, 0.05);
    let backlog_max = ms(secs(rng.random_range(1.0..10.0)));
    let mut host_skew = ms(secs(rng.random::<f64>() * 10.0));
    let regions = if rng.random_bool(0.6) { 2 } else { 1 };
    let mut silent_after = Duration::from_secs(log_uniform(&mut rng, 10.0, 600.0).as_secs());

    let mut agents = AgentsSection {
        batch_interval,
        per_region: rng.random_range(3..=10),
        duplicated: sometimes(&mut rng, 0.25, 0.1),
        ..AgentsSection::default()
    };
    let mut identity = IdentitySection {
        lead_max: ms(secs(sometimes(&mut rng, 0.3, 30.0))),
        ..IdentitySection::default()
    };
    let mut restarts = Vec::new();
    if inside {
        // Every clock trusted, every batch inside the hold.
        host_skew = ms(secs(rng.random::<f64>() * (max_skew - rtt).as_secs_f64()));
        let worst = if backlog > 0.0 { backlog_max } else { rtt };
        let need = 2 * max_skew + 2 * worst;
        let most = Duration::from_secs(300);
        batch_interval = batch_interval.min(Duration::from_secs((most - need).as_secs()));
        agents.batch_interval = batch_interval;
        hold = hold.max(batch_interval + need).min(most);
        silent_after = silent_after.max(batch_interval + need);
    } else {
        agents.agentless = sometimes(&mut rng, 0.3, 0.3);
        agents.restarts_per_hour = sometimes(&mut rng, 0.3, 20.0);
        agents.restart_downtime = ms(secs(rng.random_range(1.0..30.0)));
        agents.silences_per_hour = sometimes(&mut rng, 0.3, 20.0);
        agents.silence_max = ms(secs(rng.random_range(5.0..300.0)));
        agents.lost = sometimes(&mut rng, 0.25, 0.05);
        identity.lag_max = ms(secs(sometimes(&mut rng, 0.3, 30.0)));
        if rng.random_bool(0.25) {
            restarts.push(CollectorRestart {
                region: "r1".into(),
                at: Duration::from_secs(rng.random_range(30..duration.as_secs() - 30)),
                down: Duration::from_secs(rng.random_range(0..=30)),
            });
        }
    }
    let legacy_hold = if restarts.is_empty() && rng.random_bool(0.3) {
        Duration::from_secs(rng.random_range(60..=900))
    } else {
        Duration::ZERO
    };
    let legacy = LegacySection {
        delay_median: ms(log_uniform(&mut rng, 1.0, 1800.0)),
        delay_sigma: (rng.random::<f64>() * 2.0 * 100.0).round() / 100.0,
        delay_max: Duration::from_secs(3600),
        loss: (sometimes(&mut rng, 0.7, 0.2) * 1000.0).round() / 1000.0,
        hold: legacy_hold,
        asked_after: if restarts.is_empty() {
            Duration::from_secs(rng.random_range(0..=120))
        } else {
            Duration::ZERO
        },
    };
    let region_specs: Vec<RegionSpec> = (0..regions)
        .map(|i| RegionSpec {
            name: format!("r{}", i + 1),
            ipv4: format!("10.{}.0.0/16", 128 * i).parse().expect("a prefix"),
            ipv6: format!("fd00:0:0:{}::/64", i + 1)
                .parse()
                .expect("a prefix"),
            load_balancers: format!("10.{}.0.0/24", 99 + 100 * i)
                .parse()
                .expect("a prefix"),
        })
        .collect();
    let services = services(&mut rng, regions);
    Scenario {
        name: format!("explore-{seed}-{index}"),
        description: format!(
            "Draw {index} of `flowattr sim --explore` with seed {seed}{}.",
            if inside {
                ", inside the tolerances"
            } else {
                ""
            }
        ),
        // TOML integers are signed 64-bit.
        seed: u64::from(rng.random::<u32>()),
        duration,
        focus: Some(services[0].name.clone()),
        agents,
        collector: CollectorSection {
            hold,
            max_skew,
            silent_after,
            restarts,
            ..CollectorSection::default()
        },
        clocks: ClocksSection {
            max_skew: host_skew,
        },
        network: NetworkSection {
            rtt,
            backlog: (backlog * 1000.0).round() / 1000.0,
            backlog_max,
        },
        identity,
        addresses: AddressesSection {
            reuse_after: ms(log_uniform(&mut rng, 0.5, 600.0)),
        },
        legacy,
        regions: region_specs,
        services,
    }
}

/// 3 to 8 services over `regions` regions: kinds by a drawn share of
/// IPv6-only containers, some behind load balancers, each depending on
/// later ones (some in the other region), so calls form no cycle.
fn services(rng: &mut Pcg64Mcg, regions: usize) -> Vec<ServiceSpec> {
    let n = rng.random_range(3..=8);
    let v6_share = sometimes(rng, 0.6, 0.7);
    let lb_share = sometimes(rng, 0.6, 0.5);
    let cross = if regions > 1 {
        sometimes(rng, 0.7, 0.5)
    } else {
        0.0
    };
    let mut out: Vec<ServiceSpec> = (0..n)
        .map(|i| {
            let kind = if rng.random_bool(v6_share) {
                Kind::Ipv6Container
            } else if rng.random_bool(0.5) {
                Kind::Vm
            } else {
                Kind::Container
            };
            ServiceSpec {
                name: format!("s{i}"),
                region: format!("r{}", rng.random_range(1..=regions)),
                kind,
                instances: rng.random_range(2..=20),
                lifetime: ms(log_uniform(rng, 30.0, 86_400.0)),
                calls_per_minute: (log_uniform_f(rng, 1.0, 30.0) * 10.0).round() / 10.0,
                depends_on: Vec::new(),
                behind_lb: rng.random_bool(lb_share),
                load_balancers: rng.random_range(1..=3),
                port: 8000 + i as u16,
                per_node: rng.random_range(2..=8),
            }
        })
        .collect();
    for i in 0..n - 1 {
        let wanted = rng.random_range(1..=3.min(n - 1 - i));
        for _ in 0..wanted {
            let same: Vec<usize> = (i + 1..n)
                .filter(|&j| out[j].region == out[i].region)
                .collect();
            let other: Vec<usize> = (i + 1..n)
                .filter(|&j| out[j].region != out[i].region)
                .collect();
            let pool = if other.is_empty() || (!same.is_empty() && !rng.random_bool(cross)) {
                same
            } else {
                other
            };
            let Some(&j) = pool.get(rng.random_range(0..pool.len().max(1))) else {
                continue;
            };
            let name = out[j].name.clone();
            if !out[i].depends_on.contains(&name) {
                out[i].depends_on.push(name);
            }
            // IPv4 callers reach IPv6-only services through load balancers.
            if out[j].kind == Kind::Ipv6Container && out[i].kind != Kind::Ipv6Container {
                out[j].behind_lb = true;
            }
        }
    }
    out
}

/// What one draw found.
#[derive(Debug, Clone, Serialize)]
pub struct DrawOutcome {
    pub index: u32,
    pub name: String,
    pub inside: bool,
    /// The drawn knobs, in short.
    pub summary: String,
    pub flows: u64,
    /// Remote sides the heartbeat method got wrong.
    pub misattributed: u64,
    /// Local sides the agents got wrong.
    pub local_misattributed: u64,
    pub wrong_edges: u64,
    pub lost: usize,
    pub unknown: u64,
    /// The heartbeat method's unattributed flows by reason (non-zero ones).
    pub unattributed: BTreeMap<String, u64>,
    pub unattributed_unambiguous: u64,
    pub legacy_misattributed: u64,
    /// Why the draw failed (empty: it passed).
    pub failures: Vec<String>,
    /// The first wrong answers, heartbeat then local.
    pub examples: Vec<String>,
    /// Where the failing scenario was written.
    pub written: Option<PathBuf>,
    pub wall_secs: f64,
}

impl DrawOutcome {
    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
    }

    fn unambiguous_pct(&self) -> f64 {
        if self.flows == 0 {
            0.0
        } else {
            100.0 * self.unattributed_unambiguous as f64 / self.flows as f64
        }
    }

    /// One line for the terminal.
    pub fn line(&self) -> String {
        let reasons = if self.unattributed.is_empty() {
            "none".to_owned()
        } else {
            self.unattributed
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let verdict = if self.failed() {
            format!("FAILED: {}", self.failures.join("; "))
        } else {
            "ok".into()
        };
        format!(
            "#{:<4} {:<7} {:>6} flows  mis {} local-mis {} wrong-edges {} lost {}  unattributed: {} ({:.2}% unambiguous)  legacy mis {}  {:.1}s  [{}]  {}",
            self.index,
            if self.inside { "inside" } else { "outside" },
            self.flows,
            self.misattributed,
            self.local_misattributed,
            self.wrong_edges,
            self.lost,
            reasons,
            self.unambiguous_pct(),
            self.legacy_misattributed,
            self.wall_secs,
            self.summary,
            verdict
        )
    }
}

/// The knobs that matter, in short.
fn summary(s: &Scenario) -> String {
    let d = |d: Duration| humantime::format_duration(ms(d)).to_string();
    let (a, c) = (&s.agents, &s.collector);
    let mut out = format!(
        "{} region(s), {} hosts/region, batch {}, hold {}, host skew ≤{} (tolerance {}), reuse {}",
        s.regions.len(),
        a.per_region,
        d(a.batch_interval),
        d(c.hold),
        d(s.clocks.max_skew),
        d(c.max_skew),
        d(s.addresses.reuse_after)
    );
    let mut add = |on: bool, what: String| {
        if on {
            let _ = write!(out, ", {what}");
        }
    };
    add(
        a.agentless > 0.0,
        format!("agentless {:.0}%", 100.0 * a.agentless),
    );
    add(
        a.restarts_per_hour > 0.0,
        format!("{:.1} restarts/h", a.restarts_per_hour),
    );
    add(
        a.silences_per_hour > 0.0,
        format!("{:.1} silences/h", a.silences_per_hour),
    );
    add(a.lost > 0.0, format!("lost {:.1}%", 100.0 * a.lost));
    add(
        a.duplicated > 0.0,
        format!("dup {:.1}%", 100.0 * a.duplicated),
    );
    add(
        s.network.backlog > 0.0,
        format!("backlog {:.1}%", 100.0 * s.network.backlog),
    );
    add(
        !s.identity.lag_max.is_zero(),
        format!("identity lag ≤{}", d(s.identity.lag_max)),
    );
    add(
        !s.identity.lead_max.is_zero(),
        format!("identity lead ≤{}", d(s.identity.lead_max)),
    );
    add(!s.identity.protect, "identity UNPROTECTED".into());
    add(!c.restarts.is_empty(), "collector restart".into());
    out
}

/// How to explore.
#[derive(Clone)]
pub struct ExploreOptions {
    pub draws: u32,
    pub seed: u64,
    /// Plugins, cache, and the scratch directory (one subdirectory a draw).
    pub run: RunOptions,
    /// Where failing draws are written.
    pub failures: PathBuf,
    /// Changes every draw before it runs (a negative control breaks a
    /// protection here).
    pub adjust: Option<fn(&mut Scenario)>,
}

/// Everything an exploration found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub seed: u64,
    pub draws: u32,
    pub inside: u32,
    pub failed: u32,
    pub flows: u64,
    pub inside_flows: u64,
    pub misattributed: u64,
    pub local_misattributed: u64,
    pub wrong_edges: u64,
    pub lost: u64,
    pub unattributed: BTreeMap<String, u64>,
    pub unattributed_unambiguous: u64,
    pub inside_unattributed_unambiguous: u64,
    /// The worst inside draw's unambiguous share, in percent.
    pub inside_worst_unambiguous_pct: f64,
    pub legacy_misattributed: u64,
    pub wall_secs: f64,
}

impl Totals {
    fn add(&mut self, d: &DrawOutcome) {
        self.draws += 1;
        self.failed += u32::from(d.failed());
        self.flows += d.flows;
        self.misattributed += d.misattributed;
        self.local_misattributed += d.local_misattributed;
        self.wrong_edges += d.wrong_edges;
        self.lost += d.lost as u64 + d.unknown;
        for (r, n) in &d.unattributed {
            *self.unattributed.entry(r.clone()).or_default() += n;
        }
        self.unattributed_unambiguous += d.unattributed_unambiguous;
        self.legacy_misattributed += d.legacy_misattributed;
        if d.inside {
            self.inside += 1;
            self.inside_flows += d.flows;
            self.inside_unattributed_unambiguous += d.unattributed_unambiguous;
            self.inside_worst_unambiguous_pct =
                self.inside_worst_unambiguous_pct.max(d.unambiguous_pct());
        }
    }

    /// The totals for the terminal.
    pub fn table(&self) -> String {
        let pct = |n: u64, of: u64| {
            if of == 0 {
                0.0
            } else {
                100.0 * n as f64 / of as f64
            }
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "explored {} draws (seed {}) in {:.0} s: {} inside the tolerances, {} outside; {} failed",
            self.draws,
            self.seed,
            self.wall_secs,
            self.inside,
            self.draws - self.inside,
            self.failed
        );
        let _ = writeln!(out, "flows judged          {:>10}", self.flows);
        let _ = writeln!(
            out,
            "misattributed         {:>10}  (heartbeat remote sides; must be 0)",
            self.misattributed
        );
        let _ = writeln!(
            out,
            "local misattributed   {:>10}  (agents' local sides; must be 0)",
            self.local_misattributed
        );
        let _ = writeln!(
            out,
            "wrong edges           {:>10}  (must be 0)",
            self.wrong_edges
        );
        let _ = writeln!(out, "lost flows            {:>10}  (must be 0)", self.lost);
        let _ = writeln!(
            out,
            "unattributed          {:>10}  ({:.2}% of flows; outside genuine ambiguity {:.2}%)",
            self.unattributed.values().sum::<u64>(),
            pct(self.unattributed.values().sum(), self.flows),
            pct(self.unattributed_unambiguous, self.flows)
        );
        for (r, n) in &self.unattributed {
            let _ = writeln!(out, "  {r:<20}{n:>10}  ({:.2}%)", pct(*n, self.flows));
        }
        let _ = writeln!(
            out,
            "inside the tolerances: {} flows, {:.2}% unattributed outside genuine ambiguity (worst draw {:.2}%, budget {UNAMBIGUOUS_BUDGET_PCT}%)",
            self.inside_flows,
            pct(self.inside_unattributed_unambiguous, self.inside_flows),
            self.inside_worst_unambiguous_pct
        );
        let _ = writeln!(
            out,
            "legacy misattributed  {:>10}  (expected: the legacy method is the B side)",
            self.legacy_misattributed
        );
        out
    }
}

/// Runs one scenario and judges it.
pub fn judge_draw(index: u32, scenario: &Scenario, options: &RunOptions) -> DrawOutcome {
    let started = Instant::now();
    let inside = inside_tolerances(scenario);
    let mut d = DrawOutcome {
        index,
        name: scenario.name.clone(),
        inside,
        summary: summary(scenario),
        flows: 0,
        misattributed: 0,
        local_misattributed: 0,
        wrong_edges: 0,
        lost: 0,
        unknown: 0,
        unattributed: BTreeMap::new(),
        unattributed_unambiguous: 0,
        legacy_misattributed: 0,
        failures: Vec::new(),
        examples: Vec::new(),
        written: None,
        wall_secs: 0.0,
    };
    match run(scenario, options) {
        Err(e) => d.failures.push(format!("the run failed: {e:#}")),
        Ok(o) => {
            let hb = &o.report.heartbeat;
            d.flows = o.report.flows;
            d.misattributed = hb.misattributed;
            d.local_misattributed = o.local.misattributed;
            d.wrong_edges = hb.edges.wrong;
            d.lost = o.lost;
            d.unknown = o.unknown;
            d.unattributed = hb
                .unattributed_by_reason
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(r, n)| (r.clone(), *n))
                .collect();
            d.unattributed_unambiguous = hb.unattributed_unambiguous;
            d.legacy_misattributed = o.report.legacy.misattributed;
            d.examples = hb
                .misattributed_examples
                .iter()
                .take(5)
                .map(|m| {
                    format!(
                        "{} {} -> {} at {}: {} but it was {} (via {})",
                        m.local,
                        m.local_endpoint.as_deref().unwrap_or("?"),
                        m.remote,
                        m.start_ns,
                        m.answer,
                        m.truth,
                        m.path
                    )
                })
                .chain(o.local.examples.iter().take(5).cloned())
                .collect();
            let checks = [
                (d.misattributed, "misattributed remote sides"),
                (d.local_misattributed, "misattributed local sides"),
                (d.wrong_edges, "wrong edges"),
                (d.lost as u64, "lost flows"),
                (d.unknown, "flows never sent"),
            ];
            for (n, what) in checks {
                if n > 0 {
                    d.failures.push(format!("{n} {what}"));
                }
            }
            if inside && d.unambiguous_pct() > UNAMBIGUOUS_BUDGET_PCT {
                d.failures.push(format!(
                    "{:.2}% unattributed outside genuine ambiguity inside the tolerances",
                    d.unambiguous_pct()
                ));
            }
        }
    }
    d.wall_secs = started.elapsed().as_secs_f64();
    d
}

/// Writes a failing draw where `flowattr sim FILE` runs it again.
fn write_failure(dir: &Path, scenario: &Scenario, d: &DrawOutcome) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.toml", scenario.name));
    let mut text = String::new();
    let _ = writeln!(text, "# A failing draw of `flowattr sim --explore`:");
    for f in &d.failures {
        let _ = writeln!(text, "#   {f}");
    }
    for e in &d.examples {
        let _ = writeln!(text, "#   e.g. {e}");
    }
    let _ = writeln!(text, "# Run it again: flowattr sim {}\n", path.display());
    text.push_str(&scenario.to_toml());
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Explores: draws, runs and judges `options.draws` scenarios, telling
/// `each` about every draw as it finishes.
pub fn explore(
    options: &ExploreOptions,
    mut each: impl FnMut(&DrawOutcome, u32),
) -> anyhow::Result<(Totals, Vec<DrawOutcome>)> {
    let started = Instant::now();
    let mut totals = Totals {
        seed: options.seed,
        ..Totals::default()
    };
    let mut draws = Vec::new();
    for index in 0..options.draws {
        let mut scenario = draw(options.seed, index);
        if let Some(adjust) = options.adjust {
            adjust(&mut scenario);
        }
        let mut run = options.run.clone();
        run.work_dir = options.run.work_dir.join(format!("draw-{index}"));
        let mut d = judge_draw(index, &scenario, &run);
        let _ = std::fs::remove_dir_all(&run.work_dir);
        if d.failed() {
            d.written = Some(write_failure(&options.failures, &scenario, &d)?);
        }
        totals.add(&d);
        each(&d, options.draws);
        draws.push(d);
    }
    totals.wall_secs = started.elapsed().as_secs_f64();
    Ok((totals, draws))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_valid_deterministic_and_read_back_from_their_files() {
        let mut inside = 0;
        for i in 0..300 {
            let s = draw(7, i);
            let text = s.to_toml();
            let back = Scenario::parse(&text).unwrap_or_else(|e| panic!("draw {i}: {e}\n{text}"));
            assert_eq!(back, s, "draw {i}");
            assert_eq!(draw(7, i), s, "the same draw again");
            inside += u32::from(inside_tolerances(&s));
        }
        assert!((90..=150).contains(&inside), "{inside} of 300 inside");
        assert_ne!(draw(7, 1), draw(8, 1));
    }

    #[test]
    fn the_ranges_are_covered() {
        let draws: Vec<Scenario> = (0..400).map(|i| draw(1, i)).collect();
        let any = |f: &dyn Fn(&Scenario) -> bool| draws.iter().any(f);
        let s = Duration::from_secs;
        assert!(any(&|d| d.addresses.reuse_after < s(1)));
        assert!(any(&|d| d.addresses.reuse_after > s(300)));
        assert!(any(&|d| d.clocks.max_skew > s(8)));
        assert!(any(&|d| d.clocks.max_skew > d.collector.max_skew));
        assert!(any(&|d| d.agents.batch_interval > d.collector.hold));
        assert!(any(&|d| d.agents.batch_interval < s(2)));
        assert!(any(&|d| d.agents.batch_interval > s(90)));
        assert!(any(&|d| d.collector.hold < s(2)));
        assert!(any(&|d| d.services.iter().any(|x| x.lifetime < s(60))));
        assert!(any(&|d| d.services.iter().any(|x| x.lifetime > s(40_000))));
        assert!(any(&|d| d
            .services
            .iter()
            .any(|x| x.kind == Kind::Ipv6Container)));
        assert!(any(&|d| d.services.iter().any(|x| x.behind_lb)));
        assert!(any(&|d| {
            d.services.iter().any(|x| {
                x.depends_on
                    .iter()
                    .any(|y| d.services[d.service(y).unwrap()].region != x.region)
            })
        }));
        assert!(any(&|d| d.agents.agentless > 0.0));
        assert!(any(&|d| d.agents.restarts_per_hour > 0.0));
        assert!(any(&|d| d.agents.silences_per_hour > 0.0));
        assert!(any(&|d| d.agents.lost > 0.0));
        assert!(any(&|d| d.agents.duplicated > 0.0));
        assert!(any(&|d| !d.identity.lag_max.is_zero()));
        assert!(any(&|d| !d.identity.lead_max.is_zero()));
        assert!(any(&|d| !d.collector.restarts.is_empty()));
        assert!(any(&|d| d.legacy.delay_median > s(600)));
        assert!(any(&|d| d.network.backlog > 0.0));
    }
}
