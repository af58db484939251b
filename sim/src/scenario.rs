//! The scenario file (TOML): the fleet, its churn, its clocks, how its
//! agents and their identity sources misbehave, the network, the
//! collectors and the legacy event stream. Every section but `regions` and
//! `services` has defaults, and the defaults are the well-behaved fleet:
//! every host runs an agent that never crashes, falls silent or loses a
//! batch, identity sources are current, no collector restarts.
//! `scenarios/default.toml` documents every key.
//!
//! A scenario also serialises back to TOML (`flowattr sim --explore` writes
//! a failing draw out so, to be run again with `flowattr sim FILE`).

use std::{collections::HashSet, time::Duration};

use flowattr_collector::ownership::Prefix;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Durations as people write them (`"90s"`, `"1h 30m"`), both ways.
mod duration {
    use std::time::Duration;

    use serde::Serializer;

    pub use flowattr_daemon::config::duration::deserialize;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

/// A whole scenario.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The seed: the same scenario and seed give the same run.
    pub seed: u64,
    /// Simulated time.
    #[serde(with = "duration")]
    pub duration: Duration,
    /// The service whose dependency edges the report counts apart.
    #[serde(default)]
    pub focus: Option<String>,
    #[serde(default)]
    pub agents: AgentsSection,
    #[serde(default)]
    pub collector: CollectorSection,
    #[serde(default)]
    pub clocks: ClocksSection,
    #[serde(default)]
    pub network: NetworkSection,
    #[serde(default)]
    pub identity: IdentitySection,
    #[serde(default)]
    pub addresses: AddressesSection,
    #[serde(default)]
    pub legacy: LegacySection,
    pub regions: Vec<RegionSpec>,
    pub services: Vec<ServiceSpec>,
}

/// `[agents]`: the hosts, their agents, and how those ship and fail.
///
/// A host is one machine: one clock, one identity source, at most one
/// agent. Instances are spread over the hosts of their region.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsSection {
    /// How often each agent closes a batch (empty or not: its watermark
    /// moves on with it). Whole seconds.
    #[serde(with = "duration")]
    pub batch_interval: Duration,
    /// Hosts per region.
    pub per_region: usize,
    /// Share of hosts that run no agent: their flows are never captured
    /// locally, and their addresses never heartbeat.
    pub agentless: f64,
    /// Crashes per agent per hour (Poisson). A crash loses the open batch
    /// (flows captured since the last batch closed), captures nothing
    /// while down, and comes back as a new incarnation that has missed
    /// every flow which started before it. Closed batches survive (the
    /// spool is on disk).
    pub restarts_per_hour: f64,
    /// How long a crashed agent stays down.
    #[serde(with = "duration")]
    pub restart_downtime: Duration,
    /// Silences per agent per hour (Poisson): the agent keeps capturing and
    /// closing batches but sends nothing (a partition, a stuck connection);
    /// its spool goes out when the silence ends.
    pub silences_per_hour: f64,
    /// Each silence lasts up to this long (uniform).
    #[serde(with = "duration")]
    pub silence_max: Duration,
    /// Share of batches that never arrive (their flows are not expected).
    pub lost: f64,
    /// Share of batches sent twice (the second copy 1–30 s later, as after
    /// a lost acknowledgement).
    pub duplicated: f64,
}

impl Default for AgentsSection {
    fn default() -> Self {
        Self {
            batch_interval: Duration::from_secs(10),
            per_region: 16,
            agentless: 0.0,
            restarts_per_hour: 0.0,
            restart_downtime: Duration::from_secs(10),
            silences_per_hour: 0.0,
            silence_max: Duration::from_secs(120),
            lost: 0.0,
            duplicated: 0.0,
        }
    }
}

/// `[network]`: between agents and collectors.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSection {
    /// Each agent's connection has a round-trip time drawn between a
    /// quarter of this and this; a batch's one-way delay is uniform in
    /// `0..rtt`.
    #[serde(with = "duration")]
    pub rtt: Duration,
    /// Share of batches held up longer (a collector backlog): their delay
    /// is uniform between the RTT and `backlog_max`.
    pub backlog: f64,
    #[serde(with = "duration")]
    pub backlog_max: Duration,
}

impl Default for NetworkSection {
    fn default() -> Self {
        Self {
            rtt: Duration::from_millis(2),
            backlog: 0.0,
            backlog_max: Duration::from_secs(5),
        }
    }
}

/// `[identity]`: each host's identity source (IPMan's state, the instance
/// identity document) as its agent reads it.
///
/// A source records assignments with their real times. One that **lags**
/// by `L` shows, at time `p`, the assignments as they were at `p − L`, and
/// knows itself current only up to there; one that **leads** shows them as
/// they will be at `p + L` (hand-overs it has already decided). The agent
/// asks for a flow's start when it captures the flow's end, and takes the
/// answer with the plugins' rule: the assignment that contains the start,
/// valid until the source was last known current. With `protect` (the
/// default) a start at or past that instant is not answered: the local side
/// is `source-unavailable`. Without it the agent takes the source as
/// current when it read it, as a plugin that trusts a file's freshness
/// does, and a lagging source names an address's previous holder — the
/// negative control.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdentitySection {
    /// Each host's source lags by up to this (uniform; 0: never).
    #[serde(with = "duration")]
    pub lag_max: Duration,
    /// Each host's source leads by up to this (uniform; 0: never). With
    /// both, a host's shift is drawn uniformly from `−lead_max..=lag_max`.
    #[serde(with = "duration")]
    pub lead_max: Duration,
    /// Answer nothing past the instant the source is known current.
    pub protect: bool,
}

impl Default for IdentitySection {
    fn default() -> Self {
        Self {
            lag_max: Duration::ZERO,
            lead_max: Duration::ZERO,
            protect: true,
        }
    }
}

/// `[collector]`: the in-process collectors (one per region).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorSection {
    /// The longest a flow waits for its remote side to be complete.
    #[serde(with = "duration")]
    pub hold: Duration,
    /// How far an agent's clock may be from the collector's.
    #[serde(with = "duration")]
    pub max_skew: Duration,
    /// An agent heard nothing from for this long is not waited for.
    #[serde(with = "duration")]
    pub silent_after: Duration,
    /// The sink plugin the collectors format with.
    pub sink: String,
    /// `[[collector.restarts]]`: a region's collector stops and a new one
    /// starts from the same journal (and no shared history: there is no
    /// Kafka in process).
    pub restarts: Vec<CollectorRestart>,
}

impl Default for CollectorSection {
    fn default() -> Self {
        Self {
            hold: Duration::from_secs(60),
            max_skew: Duration::from_secs(2),
            silent_after: Duration::from_secs(300),
            sink: "arrow-sink".into(),
            restarts: Vec::new(),
        }
    }
}

/// One collector restart.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorRestart {
    pub region: String,
    /// Since the simulation's start.
    #[serde(with = "duration")]
    pub at: Duration,
    /// Down this long: batches sent meanwhile are read when it is back.
    #[serde(with = "duration", default = "default_down")]
    pub down: Duration,
}

fn default_down() -> Duration {
    Duration::from_secs(5)
}

/// `[clocks]`: how far hosts' clocks are off.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClocksSection {
    /// Each host's clock is off by a uniform amount within ± this.
    #[serde(with = "duration")]
    pub max_skew: Duration,
}

impl Default for ClocksSection {
    fn default() -> Self {
        Self {
            max_skew: Duration::from_millis(500),
        }
    }
}

/// `[addresses]`: the address pools.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AddressesSection {
    /// A released address can be handed to a new workload this soon.
    #[serde(with = "duration")]
    pub reuse_after: Duration,
}

impl Default for AddressesSection {
    fn default() -> Self {
        Self {
            reuse_after: Duration::from_secs(30),
        }
    }
}

/// `[legacy]`: the legacy IP-change event stream and attributor.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LegacySection {
    /// Median delay between an address change and its event's arrival.
    #[serde(with = "duration")]
    pub delay_median: Duration,
    /// Shape of the log-normal delay (larger: heavier tail).
    pub delay_sigma: f64,
    /// Longest delay (the tail is cut here).
    #[serde(with = "duration")]
    pub delay_max: Duration,
    /// Share of events that never arrive.
    pub loss: f64,
    /// The legacy attributor's optional hold.
    #[serde(with = "duration")]
    pub hold: Duration,
    /// The A/B asks the legacy method about a flow this long after its
    /// start at the earliest (or after `hold`, if longer): the legacy
    /// pipeline's own processing delay. The default, 60 s, is when the
    /// collector asked it before completeness let flows out early, so the
    /// legacy figures do not move with how fast the heartbeat method
    /// answers.
    #[serde(with = "duration")]
    pub asked_after: Duration,
}

impl Default for LegacySection {
    fn default() -> Self {
        Self {
            delay_median: Duration::from_secs(30),
            delay_sigma: 1.5,
            delay_max: Duration::from_secs(3600),
            loss: 0.01,
            hold: Duration::ZERO,
            asked_after: Duration::from_secs(60),
        }
    }
}

/// `[[regions]]`: a region and its address space.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSpec {
    pub name: String,
    /// Instances' and nodes' IPv4 addresses.
    #[serde(deserialize_with = "prefix", serialize_with = "display")]
    pub ipv4: Prefix,
    /// IPv6 addresses, at most a /64: IPv6-only containers' come from its
    /// first /96 ([`RegionSpec::ipv6_pool`]), load balancers' IPv6 sides
    /// from above it (`…:0:ffff:0:N`).
    #[serde(deserialize_with = "prefix", serialize_with = "display")]
    pub ipv6: Prefix,
    /// Load balancers' addresses (IPv4).
    #[serde(deserialize_with = "prefix", serialize_with = "display")]
    pub load_balancers: Prefix,
}

impl RegionSpec {
    /// Where containers' IPv6 addresses come from: the first /96 of `ipv6`.
    /// Agents may claim it (with `ipv4`); load balancers' IPv6 sides lie
    /// outside it, so no agent may claim them and the resolver answers.
    pub fn ipv6_pool(&self) -> Prefix {
        let network = self.ipv6.nth(0).expect("the network address");
        Prefix::new(network, 96).expect("checked: ipv6 is at most a /64")
    }
}

/// How a service's instances get addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A VM: its own IPv4 address and host.
    Vm,
    /// A container with its own IPv4 address.
    Container,
    /// An IPv6-only container: its own IPv6 address; IPv4 traffic leaves
    /// from its node's IPv4 address (shared with the node's other
    /// containers), told apart by port.
    Ipv6Container,
}

/// `[[services]]`: a service, its instances and its dependencies.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    pub region: String,
    pub kind: Kind,
    pub instances: u32,
    /// Mean instance lifetime (exponential); an instance that ends is
    /// replaced (a deploy or an autoscaling step).
    #[serde(with = "duration")]
    pub lifetime: Duration,
    /// Calls each instance starts per minute (Poisson).
    pub calls_per_minute: f64,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Callers reach it through load balancers (which run no agent).
    #[serde(default)]
    pub behind_lb: bool,
    #[serde(default = "default_lbs")]
    pub load_balancers: u32,
    #[serde(default = "default_port")]
    pub port: u16,
    /// IPv6 containers per node. Each has its own block of ports on the
    /// node's shared IPv4 address (256 ports; a region's IPv6-only
    /// services' `per_node` together may use at most 110 blocks).
    #[serde(default = "default_per_node")]
    pub per_node: u32,
}

fn default_lbs() -> u32 {
    2
}

fn default_port() -> u16 {
    8080
}

fn default_per_node() -> u32 {
    8
}

fn prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Prefix, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

fn display<S: Serializer>(p: &Prefix, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(p)
}

/// Port blocks on a node's shared IPv4 address.
pub const PORT_BLOCKS: u32 = 110;

/// A scenario that cannot run, and why.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{0}")]
    Toml(#[from] toml::de::Error),
    #[error("{0}")]
    Invalid(String),
}

impl Scenario {
    /// Parses and checks a scenario.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text)?;
        scenario.check().map_err(ScenarioError::Invalid)?;
        Ok(scenario)
    }

    /// The scenario as a TOML file that [`Scenario::parse`] reads back.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a scenario is plain data")
    }

    /// The index of service `name`.
    pub fn service(&self, name: &str) -> Option<usize> {
        self.services.iter().position(|s| s.name == name)
    }

    /// The index of region `name`.
    pub fn region(&self, name: &str) -> Option<usize> {
        self.regions.iter().position(|r| r.name == name)
    }

    fn check(&self) -> Result<(), String> {
        if self.regions.is_empty() || self.services.is_empty() {
            return Err("a scenario needs at least one region and one service".into());
        }
        if self.duration < Duration::from_secs(60) {
            return Err("duration: at least 1m".into());
        }
        if self.agents.per_region == 0 {
            return Err("agents.per_region: at least 1".into());
        }
        if self.agents.batch_interval < Duration::from_secs(1) {
            return Err("agents.batch_interval: at least 1s".into());
        }
        let shares = [
            ("legacy.loss", self.legacy.loss),
            ("agents.agentless", self.agents.agentless),
            ("agents.lost", self.agents.lost),
            ("agents.duplicated", self.agents.duplicated),
            ("network.backlog", self.network.backlog),
        ];
        for (key, share) in shares {
            if !(0.0..=1.0).contains(&share) {
                return Err(format!("{key}: {share} is not between 0 and 1"));
            }
        }
        let rates = [
            ("agents.restarts_per_hour", self.agents.restarts_per_hour),
            ("agents.silences_per_hour", self.agents.silences_per_hour),
        ];
        for (key, rate) in rates {
            if rate.is_nan() || rate < 0.0 {
                return Err(format!("{key}: must be 0 or more"));
            }
        }
        for r in &self.collector.restarts {
            if self.region(&r.region).is_none() {
                return Err(format!("collector.restarts: unknown region {:?}", r.region));
            }
            if r.at >= self.duration {
                return Err("collector.restarts: `at` must be within the duration".into());
            }
        }
        let shadow_waits = !self.legacy.hold.is_zero() || !self.legacy.asked_after.is_zero();
        if !self.collector.restarts.is_empty() && shadow_waits {
            // The A/B's shadow queue lives in memory: a restart would drop
            // the comparisons waiting in it (not the flows).
            return Err(
                "collector.restarts: needs legacy.hold and legacy.asked_after = \"0s\"".into(),
            );
        }
        if self.legacy.delay_sigma.is_nan() || self.legacy.delay_sigma < 0.0 {
            return Err("legacy.delay_sigma: must be 0 or more".into());
        }
        let mut names = HashSet::new();
        for r in &self.regions {
            if !names.insert(r.name.as_str()) {
                return Err(format!("regions: {:?} twice", r.name));
            }
            if r.ipv6.nth(0).is_some_and(|a| a.is_ipv4()) || r.ipv6.key_len() > 64 {
                return Err(format!(
                    "regions.{}.ipv6: an IPv6 prefix of at most /64",
                    r.name
                ));
            }
            let blocks: u32 = self
                .services
                .iter()
                .filter(|s| s.kind == Kind::Ipv6Container && s.region == r.name)
                .map(|s| s.per_node)
                .sum();
            if blocks > PORT_BLOCKS {
                return Err(format!(
                    "regions.{}: its IPv6-only services' per_node add up to {blocks}, above {PORT_BLOCKS}",
                    r.name
                ));
            }
        }
        let mut names = HashSet::new();
        for s in &self.services {
            let at = |m: String| format!("services.{}: {m}", s.name);
            if !names.insert(s.name.as_str()) {
                return Err(format!("services: {:?} twice", s.name));
            }
            if self.region(&s.region).is_none() {
                return Err(at(format!("unknown region {:?}", s.region)));
            }
            if s.instances == 0 {
                return Err(at("instances: at least 1".into()));
            }
            if s.lifetime < Duration::from_secs(30) {
                return Err(at("lifetime: at least 30s".into()));
            }
            if s.calls_per_minute.is_nan() || s.calls_per_minute < 0.0 {
                return Err(at("calls_per_minute: must be 0 or more".into()));
            }
            if s.behind_lb && s.load_balancers == 0 {
                return Err(at(
                    "load_balancers: at least 1 behind a load balancer".into()
                ));
            }
            if s.per_node == 0 {
                return Err(at("per_node: at least 1".into()));
            }
            for d in &s.depends_on {
                let Some(i) = self.service(d) else {
                    return Err(at(format!("depends on unknown service {d:?}")));
                };
                let dep = &self.services[i];
                if dep.kind == Kind::Ipv6Container
                    && !dep.behind_lb
                    && s.kind != Kind::Ipv6Container
                {
                    return Err(at(format!(
                        "calls the IPv6-only {d:?} directly over IPv4; put {d:?} behind_lb"
                    )));
                }
            }
        }
        if let Some(focus) = &self.focus
            && self.service(focus).is_none()
        {
            return Err(format!("focus: unknown service {focus:?}"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
seed = 1
duration = "10m"
[[regions]]
name = "r1"
ipv4 = "10.0.0.0/16"
ipv6 = "fd00:1::/64"
load_balancers = "10.255.0.0/24"
[[services]]
name = "a"
region = "r1"
kind = "vm"
instances = 2
lifetime = "1h"
calls_per_minute = 1
depends_on = ["b"]
[[services]]
name = "b"
region = "r1"
kind = "container"
instances = 2
lifetime = "1h"
calls_per_minute = 0
"#;

    #[test]
    fn a_minimal_scenario_parses_with_defaults() {
        let s = Scenario::parse(MINIMAL).unwrap();
        assert_eq!(s.collector.hold, Duration::from_secs(60));
        assert_eq!(s.services[1].port, 8080);
    }

    #[test]
    fn a_scenario_reads_back_what_it_writes() {
        let mut s = Scenario::parse(MINIMAL).unwrap();
        s.addresses.reuse_after = Duration::from_millis(1500);
        s.identity.protect = false;
        s.legacy.asked_after = Duration::ZERO;
        s.collector.restarts.push(CollectorRestart {
            region: "r1".into(),
            at: Duration::from_secs(90),
            down: Duration::from_secs(3),
        });
        let text = s.to_toml();
        assert_eq!(Scenario::parse(&text).unwrap(), s, "{text}");
    }

    #[test]
    fn the_container_pool_leaves_load_balancers_out() {
        let s = Scenario::parse(MINIMAL).unwrap();
        let pool = s.regions[0].ipv6_pool();
        assert_eq!(pool.to_string(), "fd00:1::/96");
        let lb_v6 = s.regions[0].ipv6.nth((0xffff_u128 << 32) + 1).unwrap();
        assert!(!pool.contains(lb_v6) && s.regions[0].ipv6.contains(lb_v6));
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                MINIMAL.replace("depends_on = [\"b\"]", "depends_on = [\"c\"]"),
                "unknown service \"c\"",
            ),
            (
                MINIMAL.replace(
                    "region = \"r1\"\nkind = \"vm\"",
                    "region = \"r9\"\nkind = \"vm\"",
                ),
                "unknown region",
            ),
            (
                MINIMAL.replace("kind = \"container\"", "kind = \"ipv6-container\""),
                "behind_lb",
            ),
            (
                MINIMAL.replace("seed = 1", "seed = 1\nfocus = \"zz\""),
                "focus",
            ),
            (format!("{MINIMAL}\n[legacy]\nloss = 2.0\n"), "legacy.loss"),
            (format!("{MINIMAL}\n[agents]\nlost = -1.0\n"), "agents.lost"),
            (
                MINIMAL.replace("fd00:1::/64", "fd00:1::/112"),
                "at most /64",
            ),
            (
                format!(
                    "{MINIMAL}\n[legacy]\nhold = \"1m\"\n[[collector.restarts]]\nregion = \"r1\"\nat = \"2m\"\n"
                ),
                "legacy.hold",
            ),
            (
                MINIMAL.replace("ipv4 = \"10.0.0.0/16\"", "ipv4 = \"10.0.0.1/16\""),
                "ipv4",
            ),
            (
                MINIMAL.replace(
                    "instances = 2\nlifetime = \"1h\"\ncalls_per_minute = 1",
                    "instances = 2\nlifetime = \"1h\"\ncalls_per_minute = 1\ncolour = 3",
                ),
                "colour",
            ),
        ];
        for (text, want) in cases {
            let err = Scenario::parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{want:?} not in {err:?}");
        }
    }
}
