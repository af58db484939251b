//! Address keys and prefixes.
//!
//! The table keys every address as 128 bits: IPv6 as is, IPv4 as its
//! IPv4-mapped IPv6 form (`::ffff:a.b.c.d`). So `10.0.0.1` and
//! `::ffff:10.0.0.1` (how a dual-stack socket reports an IPv4 peer) are one
//! address, and one prefix type covers both families.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
};

/// The 128-bit key of an address (IPv4 mapped into IPv6).
pub(crate) fn key(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of a key, IPv4 again where it is IPv4-mapped.
pub(super) fn address(key: u128) -> IpAddr {
    Ipv6Addr::from(key).to_canonical()
}

/// Where IPv4 lives inside the 128-bit key space.
const V4_MAPPED_BITS: u8 = 96;

/// An address prefix such as `10.1.0.0/16` or `fd00:1::/64`.
///
/// Host bits must be zero (`10.1.0.1/16` is refused): a prefix written with
/// host bits is usually a typo for a narrower or wider one, and guessing
/// which would widen or narrow what a claimant may claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// The network, as a key.
    network: u128,
    /// Prefix length in the 128-bit key space (IPv4 `/n` is `96 + n`).
    len: u8,
}

impl Prefix {
    /// The prefix of `network` with `len` leading bits (`len` counts in the
    /// address's own family: at most 32 for IPv4, 128 for IPv6).
    pub fn new(network: IpAddr, len: u8) -> Result<Self, PrefixError> {
        let (max, offset) = match network {
            IpAddr::V4(_) => (32, V4_MAPPED_BITS),
            IpAddr::V6(_) => (128, 0),
        };
        if len > max {
            return Err(PrefixError::Length { len, max });
        }
        let len = len + offset;
        let network_key = key(network);
        if network_key & !mask(len) != 0 {
            return Err(PrefixError::HostBits {
                network,
                len: len - offset,
            });
        }
        Ok(Self {
            network: network_key,
            len,
        })
    }

    /// The prefix holding exactly one address.
    pub fn host(ip: IpAddr) -> Self {
        Self {
            network: key(ip),
            len: 128,
        }
    }

    /// Whether `ip` lies inside the prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.contains_key(key(ip))
    }

    /// Length in the 128-bit key space (IPv4 `/n` is `96 + n`): the larger,
    /// the more specific, across both families.
    pub fn key_len(&self) -> u8 {
        self.len
    }

    /// The `i`-th address of the prefix (0 is the network itself), or
    /// `None` past its end.
    pub fn nth(&self, i: u128) -> Option<IpAddr> {
        let size_bits = 128 - u32::from(self.len);
        if size_bits < 128 && i >> size_bits != 0 {
            return None;
        }
        Some(address(self.network | i))
    }

    /// The network, as a key (see [`key`]).
    pub(crate) fn network_key(&self) -> u128 {
        self.network
    }

    pub(super) fn contains_key(&self, key: u128) -> bool {
        (key ^ self.network) & mask(self.len) == 0
    }
}

/// The mask of the `len` leading bits.
pub(crate) fn mask(len: u8) -> u128 {
    match len {
        0 => 0,
        len => u128::MAX << (128 - u32::from(len)),
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match address(self.network) {
            IpAddr::V4(v4) if self.len >= V4_MAPPED_BITS => {
                write!(f, "{v4}/{}", self.len - V4_MAPPED_BITS)
            }
            _ => write!(f, "{}/{}", Ipv6Addr::from(self.network), self.len),
        }
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    /// `ADDRESS/LEN`, or a bare address for a single host.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PrefixError::Syntax(s.to_owned());
        match s.split_once('/') {
            Some((ip, len)) => {
                let ip: IpAddr = ip.parse().map_err(|_| bad())?;
                let len: u8 = len.parse().map_err(|_| bad())?;
                Self::new(ip, len)
            }
            None => Ok(Self::host(s.parse().map_err(|_| bad())?)),
        }
    }
}

/// Why a prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// Not `ADDRESS/LEN` or a bare address.
    #[error("`{0}` is not an address prefix (expected ADDRESS/LEN, e.g. 10.1.0.0/16)")]
    Syntax(String),
    /// The length is longer than the address.
    #[error("prefix length /{len} is longer than the address (at most /{max})")]
    Length { len: u8, max: u8 },
    /// Bits after the prefix length are set.
    #[error("{network}/{len} has host bits set; write the network address")]
    HostBits { network: IpAddr, len: u8 },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn nth_counts_addresses_inside_the_prefix_only() {
        let v4: Prefix = "10.1.0.0/30".parse().unwrap();
        assert_eq!(v4.nth(3), Some(ip("10.1.0.3")));
        assert_eq!(v4.nth(4), None);
        let v6: Prefix = "fd00:1::/64".parse().unwrap();
        assert_eq!(v6.nth(0x1_0001), Some(ip("fd00:1::1:1")));
        assert_eq!(v6.nth(1 << 64), None);
        assert_eq!(Prefix::host(ip("10.0.0.1")).nth(0), Some(ip("10.0.0.1")));
    }

    #[test]
    fn ipv4_and_mapped_ipv6_are_one_key() {
        assert_eq!(key(ip("10.0.0.1")), key(ip("::ffff:10.0.0.1")));
        assert_eq!(address(key(ip("::ffff:10.0.0.1"))), ip("10.0.0.1"));
        assert_eq!(address(key(ip("fd00::1"))), ip("fd00::1"));
    }

    #[test]
    fn prefixes_parse_contain_and_print() {
        let v4: Prefix = "10.1.0.0/16".parse().unwrap();
        assert!(v4.contains(ip("10.1.255.3")));
        assert!(v4.contains(ip("::ffff:10.1.0.9")));
        assert!(!v4.contains(ip("10.2.0.1")));
        assert!(!v4.contains(ip("fd00::1")));
        assert_eq!(v4.to_string(), "10.1.0.0/16");

        let v6: Prefix = "fd00:1::/64".parse().unwrap();
        assert!(v6.contains(ip("fd00:1::7")));
        assert!(!v6.contains(ip("fd00:2::7")));
        assert_eq!(v6.to_string(), "fd00:1::/64");

        let host: Prefix = "192.0.2.7".parse().unwrap();
        assert!(host.contains(ip("192.0.2.7")));
        assert!(!host.contains(ip("192.0.2.8")));
        assert_eq!(host.to_string(), "192.0.2.7/32");

        let all_v4: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(all_v4.contains(ip("203.0.113.1")));
        assert!(!all_v4.contains(ip("fd00::1")));
        let all: Prefix = "::/0".parse().unwrap();
        assert!(all.contains(ip("fd00::1")) && all.contains(ip("10.0.0.1")));
    }

    #[test]
    fn bad_prefixes_are_refused() {
        assert!(matches!(
            "10.1.0.1/16".parse::<Prefix>(),
            Err(PrefixError::HostBits { len: 16, .. })
        ));
        assert_eq!(
            "10.0.0.0/33".parse::<Prefix>(),
            Err(PrefixError::Length { len: 33, max: 32 })
        );
        assert!(matches!(
            "10.0.0.0/x".parse::<Prefix>(),
            Err(PrefixError::Syntax(_))
        ));
        assert!(matches!(
            "nonsense".parse::<Prefix>(),
            Err(PrefixError::Syntax(_))
        ));
    }
}
