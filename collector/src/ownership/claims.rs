//! Who may claim which addresses.
//!
//! A heartbeat is a claim by an agent ("claimant", the identity in its
//! certificate) that a workload owned an address. An agent only ever knows
//! its own host's addresses, so the collector holds, per claimant, the
//! prefixes its host may use, and refuses claims outside them: a broken or
//! compromised agent cannot poison the table for anyone else's addresses.
//!
//! **Unknown claimants are refused.** A claimant must be listed, either with
//! its prefixes ([`ClaimPolicy::allow`]) or explicitly trusted for every
//! address ([`ClaimPolicy::allow_any`], for tests, a single-host setup, or an
//! agent fleet whose addresses are not known in advance — a deliberate
//! choice an operator writes down, never a default).

use std::{net::IpAddr, sync::Arc};

use rustc_hash::FxHashMap;

use super::{Prefix, Refusal, memory, prefix};

/// The claimants the table accepts and the addresses each may claim.
#[derive(Debug, Clone, Default)]
pub struct ClaimPolicy {
    by_name: FxHashMap<Arc<str>, u32>,
    /// Indexed by claimant number; never shrinks, so the numbers stored in
    /// ranges stay valid after [`ClaimPolicy::revoke`].
    claimants: Vec<Claimant>,
}

#[derive(Debug, Clone)]
struct Claimant {
    name: Arc<str>,
    allowed: Allowed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    Any,
    Prefixes(Vec<Prefix>),
}

impl ClaimPolicy {
    /// A policy that refuses everyone.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lets `claimant` claim addresses inside `prefixes` (added to what it
    /// may already claim; a claimant trusted for any address stays so).
    pub fn allow(&mut self, claimant: &str, prefixes: impl IntoIterator<Item = Prefix>) {
        let i = self.entry(claimant);
        let entry = &mut self.claimants[i as usize].allowed;
        if let Allowed::Prefixes(list) = entry {
            for p in prefixes {
                if !list.contains(&p) {
                    list.push(p);
                }
            }
        }
    }

    /// Lets `claimant` claim any address.
    pub fn allow_any(&mut self, claimant: &str) {
        let i = self.entry(claimant);
        self.claimants[i as usize].allowed = Allowed::Any;
    }

    /// Refuses `claimant` from now on. Ranges it claimed before stay: they
    /// were allowed when they were made.
    pub fn revoke(&mut self, claimant: &str) {
        if let Some(&i) = self.by_name.get(claimant) {
            self.claimants[i as usize].allowed = Allowed::Prefixes(Vec::new());
        }
    }

    /// Whether `claimant` may claim each address it is asked about. The
    /// claimant is looked up once, so a batch's flows pay only the prefix
    /// check.
    pub fn permits<'a>(&'a self, claimant: &str) -> impl Fn(IpAddr) -> bool + use<'a> {
        let number = self.resolve(claimant).ok();
        move |ip| number.is_some_and(|i| self.check_number(i, prefix::key(ip)).is_ok())
    }

    /// Whether any claimant may claim `ip`. Such an address is a workload's:
    /// only heartbeats and counterparts may answer for it, never a resolver
    /// (an event-driven guess is what the method replaces).
    pub fn may_be_claimed(&self, ip: IpAddr) -> bool {
        let key = prefix::key(ip);
        self.claimants.iter().any(|c| match &c.allowed {
            Allowed::Any => true,
            Allowed::Prefixes(list) => list.iter().any(|p| p.contains_key(key)),
        })
    }

    /// Claimants by number, each with what it may claim (`None`: any
    /// address). A revoked claimant may claim nothing.
    pub fn each(&self) -> impl Iterator<Item = (u32, &Arc<str>, Option<&[Prefix]>)> {
        self.claimants.iter().enumerate().map(|(i, c)| {
            let allowed = match &c.allowed {
                Allowed::Any => None,
                Allowed::Prefixes(list) => Some(list.as_slice()),
            };
            (i as u32, &c.name, allowed)
        })
    }

    /// The claimant's number, if it is listed.
    pub fn number(&self, claimant: &str) -> Option<u32> {
        self.by_name.get(claimant).copied()
    }

    /// The claimant's number, if it is known.
    pub(super) fn resolve(&self, claimant: &str) -> Result<u32, Refusal> {
        self.by_name
            .get(claimant)
            .copied()
            .ok_or(Refusal::UnknownClaimant)
    }

    /// Whether claimant number `i` may claim the address `key`.
    pub(super) fn check_number(&self, i: u32, key: u128) -> Result<(), Refusal> {
        match &self.claimants[i as usize].allowed {
            Allowed::Any => Ok(()),
            Allowed::Prefixes(list) if list.iter().any(|p| p.contains_key(key)) => Ok(()),
            Allowed::Prefixes(_) => Err(Refusal::OutsideAllowed),
        }
    }

    /// The name of claimant number `i`.
    pub(super) fn name(&self, i: u32) -> &Arc<str> {
        &self.claimants[i as usize].name
    }

    /// Heap bytes held (estimate, with allocator overhead).
    pub(super) fn memory_bytes(&self) -> usize {
        memory::hash_map::<Arc<str>, u32>(self.by_name.capacity())
            + memory::heap_block(self.claimants.capacity() * size_of::<Claimant>())
            + self
                .claimants
                .iter()
                .map(|c| {
                    memory::heap_block(2 * size_of::<usize>() + c.name.len())
                        + match &c.allowed {
                            Allowed::Any => 0,
                            Allowed::Prefixes(list) => {
                                memory::heap_block(list.capacity() * size_of::<Prefix>())
                            }
                        }
                })
                .sum::<usize>()
    }

    fn entry(&mut self, claimant: &str) -> u32 {
        if let Some(&i) = self.by_name.get(claimant) {
            return i;
        }
        let i = u32::try_from(self.claimants.len()).expect("fewer than 2^32 claimants");
        let name: Arc<str> = claimant.into();
        self.claimants.push(Claimant {
            name: name.clone(),
            allowed: Allowed::Prefixes(Vec::new()),
        });
        self.by_name.insert(name, i);
        i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The claimant's number if it may claim the address `key`.
    fn check(policy: &ClaimPolicy, claimant: &str, key: u128) -> Result<u32, Refusal> {
        let i = policy.resolve(claimant)?;
        policy.check_number(i, key)?;
        Ok(i)
    }

    fn key(s: &str) -> u128 {
        prefix::key(s.parse().unwrap())
    }

    #[test]
    fn unknown_claimants_are_refused_and_listed_ones_limited() {
        let mut policy = ClaimPolicy::new();
        assert_eq!(
            check(&policy, "agent-a", key("10.0.0.1")),
            Err(Refusal::UnknownClaimant)
        );
        policy.allow("agent-a", ["10.0.0.0/24".parse().unwrap()]);
        assert_eq!(check(&policy, "agent-a", key("10.0.0.1")), Ok(0));
        assert_eq!(
            check(&policy, "agent-a", key("10.0.1.1")),
            Err(Refusal::OutsideAllowed)
        );
        policy.allow("agent-a", ["fd00::/64".parse().unwrap()]);
        {
            let permits = policy.permits("agent-a");
            assert!(permits("fd00::9".parse().unwrap()));
            assert!(!permits("fd00:1::9".parse().unwrap()));
            assert!(!policy.permits("agent-b")("fd00::9".parse().unwrap()));
        }

        policy.allow_any("trusted");
        assert_eq!(check(&policy, "trusted", key("203.0.113.9")), Ok(1));

        policy.revoke("agent-a");
        assert_eq!(
            check(&policy, "agent-a", key("10.0.0.1")),
            Err(Refusal::OutsideAllowed)
        );
        assert_eq!(&**policy.name(0), "agent-a");
    }
}
