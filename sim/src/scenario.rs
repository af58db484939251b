//! The scenario file (TOML): the fleet, its churn, its clocks and the
//! legacy event stream. Every section but `regions` and `services` has
//! defaults; `scenarios/default.toml` documents every key.

use std::{collections::HashSet, time::Duration};

use flowattr_collector::ownership::Prefix;
use flowattr_daemon::config::duration;
use serde::{Deserialize, Deserializer};

/// A whole scenario.
#[derive(Debug, Clone, Deserialize)]
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
    pub addresses: AddressesSection,
    #[serde(default)]
    pub legacy: LegacySection,
    pub regions: Vec<RegionSpec>,
    pub services: Vec<ServiceSpec>,
}

/// `[agents]`: how agents ship.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsSection {
    /// How often each agent ships a batch of finished flows.
    #[serde(with = "duration")]
    pub batch_interval: Duration,
    /// Agents per region (hosts are spread over them).
    pub per_region: usize,
}

impl Default for AgentsSection {
    fn default() -> Self {
        Self {
            batch_interval: Duration::from_secs(10),
            per_region: 16,
        }
    }
}

/// `[collector]`: the in-process collectors (one per region).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorSection {
    #[serde(with = "duration")]
    pub hold: Duration,
    /// The ownership table's clock-skew tolerance.
    #[serde(with = "duration")]
    pub max_skew: Duration,
    /// The sink plugin the collectors format with.
    pub sink: String,
}

impl Default for CollectorSection {
    fn default() -> Self {
        Self {
            hold: Duration::from_secs(60),
            max_skew: Duration::from_secs(2),
            sink: "columnar-sink".into(),
        }
    }
}

/// `[clocks]`: how far hosts' clocks are off.
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
}

impl Default for LegacySection {
    fn default() -> Self {
        Self {
            delay_median: Duration::from_secs(30),
            delay_sigma: 1.5,
            delay_max: Duration::from_secs(3600),
            loss: 0.01,
            hold: Duration::ZERO,
        }
    }
}

/// `[[regions]]`: a region and its address space.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionSpec {
    pub name: String,
    /// Instances' and nodes' IPv4 addresses.
    #[serde(deserialize_with = "prefix")]
    pub ipv4: Prefix,
    /// IPv6-only containers' addresses.
    #[serde(deserialize_with = "prefix")]
    pub ipv6: Prefix,
    /// Load balancers' addresses (IPv4; their IPv6 side is in `ipv6`'s top).
    #[serde(deserialize_with = "prefix")]
    pub load_balancers: Prefix,
}

/// How a service's instances get addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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
#[derive(Debug, Clone, Deserialize)]
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
    /// IPv6 containers per node.
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
        if self.agents.batch_interval.is_zero() {
            return Err("agents.batch_interval: must be above zero".into());
        }
        if !(0.0..=1.0).contains(&self.legacy.loss) {
            return Err(format!(
                "legacy.loss: {} is not between 0 and 1",
                self.legacy.loss
            ));
        }
        if self.legacy.delay_sigma.is_nan() || self.legacy.delay_sigma < 0.0 {
            return Err("legacy.delay_sigma: must be 0 or more".into());
        }
        let mut names = HashSet::new();
        for r in &self.regions {
            if !names.insert(r.name.as_str()) {
                return Err(format!("regions: {:?} twice", r.name));
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
            if s.lifetime < Duration::from_secs(60) {
                return Err(at("lifetime: at least 1m".into()));
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
