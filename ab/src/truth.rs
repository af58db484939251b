//! Ground truth: who really owned a flow's remote address, and which
//! services really depend on which.
//!
//! Three sources: the simulator knows both exactly; a run that recorded its
//! address assignments ([`OwnershipIntervals`], as `flowattr demo` does)
//! knows owners; a service's known dependencies ([`Dependencies`], like the
//! gateway routing config the reference validation used) know edges. A pair
//! `(a, b)` asks `a` first, then `b`.

use std::{collections::HashMap, io::BufRead, net::IpAddr, sync::Arc};

use flowattr_model::Workload;
use serde::{Deserialize, Serialize};

use crate::Compared;

/// What ground truth says about one method's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Judgement {
    Correct,
    Wrong,
    /// No truth for this flow (or the method left it unattributed).
    Unknown,
}

/// A source of ground truth.
pub trait Truth {
    /// The id of the workload that really owned `record`'s remote address at
    /// the flow's start, when known.
    fn owner(&self, record: &Compared) -> Option<&str>;
    /// Whether service `src` really depends on service `dst`, when known.
    fn depends(&self, src: &str, dst: &str) -> Option<bool>;
    /// Every real dependency `(src, dst)` this truth knows of, so that a
    /// report can list the ones a method never produced. None by default.
    fn known_dependencies(&self) -> Vec<(&str, &str)> {
        Vec::new()
    }
}

impl<A: Truth, B: Truth> Truth for (A, B) {
    fn owner(&self, record: &Compared) -> Option<&str> {
        self.0.owner(record).or_else(|| self.1.owner(record))
    }

    fn depends(&self, src: &str, dst: &str) -> Option<bool> {
        self.0
            .depends(src, dst)
            .or_else(|| self.1.depends(src, dst))
    }

    /// Both sides' dependencies, less those the first side overrules.
    fn known_dependencies(&self) -> Vec<(&str, &str)> {
        let mut all = self.0.known_dependencies();
        all.extend(self.1.known_dependencies());
        all.retain(|&(src, dst)| self.depends(src, dst) == Some(true));
        all
    }
}

/// A truth file that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TruthError {
    #[error("reading the truth file: {0}")]
    Io(#[from] std::io::Error),
    #[error("line {line}: {source}")]
    MalformedLine {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("line {line}: the interval ends ({to_ns}) before it starts ({from_ns})")]
    BackwardsInterval {
        line: usize,
        from_ns: u64,
        to_ns: u64,
    },
    #[error("dependencies file: {0}")]
    MalformedDependencies(#[from] toml::de::Error),
}

/// One recorded assignment: `workload` owned `address` over `[from_ns,
/// to_ns)`. A line of the ownership file [`OwnershipIntervals`] reads (the
/// simulator and the demo write them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ownership {
    pub address: IpAddr,
    pub from_ns: u64,
    pub to_ns: u64,
    pub workload: Arc<Workload>,
}

/// Recorded address assignments (JSON lines of `{address, from_ns, to_ns,
/// workload}`). A flow that starts within `tolerance_ns` of a change of
/// owner is not judged: which side of the change it fell on depends on
/// clocks the recording does not know.
#[derive(Debug, Clone, Default)]
pub struct OwnershipIntervals {
    by_address: HashMap<IpAddr, Vec<(u64, u64, Arc<Workload>)>>,
    tolerance_ns: u64,
}

impl OwnershipIntervals {
    /// Reads intervals; a malformed line fails the whole read.
    pub fn read(reader: impl BufRead, tolerance_ns: u64) -> Result<Self, TruthError> {
        let mut out = Self {
            tolerance_ns,
            ..Self::default()
        };
        for (i, line) in reader.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let iv: Ownership =
                serde_json::from_str(&line).map_err(|source| TruthError::MalformedLine {
                    line: i + 1,
                    source,
                })?;
            if iv.to_ns < iv.from_ns {
                return Err(TruthError::BackwardsInterval {
                    line: i + 1,
                    from_ns: iv.from_ns,
                    to_ns: iv.to_ns,
                });
            }
            out.by_address
                .entry(iv.address.to_canonical())
                .or_default()
                .push((iv.from_ns, iv.to_ns, iv.workload));
        }
        for list in out.by_address.values_mut() {
            list.sort_by_key(|&(from, _, _)| from);
        }
        Ok(out)
    }
}

impl OwnershipIntervals {
    /// Who owned `ip` at `t` (ns), unless that is too close to a change of
    /// owner to say.
    pub fn owner_at(&self, ip: IpAddr, t: u64) -> Option<&str> {
        let list = self.by_address.get(&ip.to_canonical())?;
        let tol = self.tolerance_ns;
        let (_, _, owner) = list.iter().find(|(from, to, _)| *from <= t && t < *to)?;
        // Too close to another owner's interval to say.
        let contested = list.iter().any(|(from, to, w)| {
            w.id != owner.id && from.saturating_sub(tol) <= t && t < to.saturating_add(tol)
        });
        (!contested).then_some(owner.id.as_str())
    }
}

impl Truth for OwnershipIntervals {
    fn owner(&self, record: &Compared) -> Option<&str> {
        self.owner_at(record.remote.ip(), record.start_ns)
    }

    fn depends(&self, _: &str, _: &str) -> Option<bool> {
        None
    }
}

/// Known dependencies of some services (TOML: `[services]` then
/// `gateway = ["api", "auth"]`). A listed service's edges to anything else
/// are wrong; services not listed are not judged.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dependencies {
    services: HashMap<String, Vec<String>>,
}

impl Dependencies {
    /// Each service with the services it depends on.
    pub fn new(services: impl IntoIterator<Item = (String, Vec<String>)>) -> Self {
        Self {
            services: services.into_iter().collect(),
        }
    }

    pub fn parse(text: &str) -> Result<Self, TruthError> {
        Ok(toml::from_str(text)?)
    }
}

impl Truth for Dependencies {
    fn owner(&self, _: &Compared) -> Option<&str> {
        None
    }

    fn depends(&self, src: &str, dst: &str) -> Option<bool> {
        self.services
            .get(src)
            .map(|deps| deps.iter().any(|d| d == dst))
    }

    fn known_dependencies(&self) -> Vec<(&str, &str)> {
        self.services
            .iter()
            .flat_map(|(src, deps)| deps.iter().map(move |d| (src.as_str(), d.as_str())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Outcome;
    use flowattr_model::UnattributedReason;

    const S: u64 = 1_000_000_000;

    fn at(ip: &str, t: u64) -> Compared {
        Compared {
            start_ns: t,
            local: None,
            local_endpoint: None,
            remote: format!("{ip}:80").parse().unwrap(),
            initiator: Default::default(),
            heartbeat: Outcome::Unattributed(UnattributedReason::NotFound),
            heartbeat_path: None,
            legacy: Outcome::Unattributed(UnattributedReason::NotFound),
        }
    }

    #[test]
    fn intervals_name_the_owner_away_from_a_change_of_hands() {
        let text = r#"{"address":"10.0.0.1","from_ns":0,"to_ns":100000000000,"workload":{"id":"a"}}
{"address":"10.0.0.1","from_ns":100000000000,"to_ns":200000000000,"workload":{"id":"b"}}
"#;
        let truth = OwnershipIntervals::read(text.as_bytes(), 2 * S).unwrap();
        assert_eq!(truth.owner(&at("10.0.0.1", 50 * S)), Some("a"));
        assert_eq!(truth.owner(&at("10.0.0.1", 150 * S)), Some("b"));
        assert_eq!(
            truth.owner(&at("10.0.0.1", 99 * S)),
            None,
            "within tolerance of the change"
        );
        assert_eq!(truth.owner(&at("10.0.0.1", 101 * S)), None);
        assert_eq!(truth.owner(&at("10.0.0.2", 50 * S)), None);
        assert_eq!(truth.owner(&at("10.0.0.1", 250 * S)), None);
    }

    #[test]
    fn bad_interval_files_are_refused_with_the_line() {
        let backwards = r#"{"address":"10.0.0.1","from_ns":5,"to_ns":1,"workload":{"id":"a"}}"#;
        assert!(matches!(
            OwnershipIntervals::read(backwards.as_bytes(), 0),
            Err(TruthError::BackwardsInterval { line: 1, .. })
        ));
        assert!(matches!(
            OwnershipIntervals::read("\nnot json\n".as_bytes(), 0),
            Err(TruthError::MalformedLine { line: 2, .. })
        ));
    }

    #[test]
    fn dependencies_judge_only_listed_services() {
        let deps = Dependencies::parse("[services]\ngateway = [\"api\"]\n").unwrap();
        assert_eq!(deps.depends("gateway", "api"), Some(true));
        assert_eq!(deps.depends("gateway", "db"), Some(false));
        assert_eq!(deps.depends("api", "db"), None);
        assert!(Dependencies::parse("[services]\ngateway = 3\n").is_err());
    }

    #[test]
    fn known_dependencies_are_listed_and_the_first_truth_overrules() {
        let a = Dependencies::parse("[services]\ngateway = [\"api\"]\n").unwrap();
        let b = Dependencies::parse("[services]\ngateway = [\"db\"]\napi = [\"db\"]\n").unwrap();
        assert_eq!(a.known_dependencies(), vec![("gateway", "api")]);
        let pair = (a, b);
        let mut both = pair.known_dependencies();
        both.sort();
        assert_eq!(
            both,
            vec![("api", "db"), ("gateway", "api")],
            "gateway -> db is overruled by the first truth"
        );
        assert!(
            OwnershipIntervals::default()
                .known_dependencies()
                .is_empty()
        );
    }
}
