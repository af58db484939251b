//! The Community ID flow hash, version 1
//! (<https://github.com/corelight/community-id-spec>): one string for a
//! connection, the same from both of its ends, which Zeek, Suricata,
//! Elastic and others write too. In flowattr's output it joins the two
//! records of a connection between two hosts that both run agents (each
//! end's collector writes one), and joins flowattr's records with other
//! tools' records of the same connection.
//!
//! `"1:" + base64(SHA-1(seed . addr_a . addr_b . protocol . 0 . port_a .
//! port_b))`, everything in network byte order, the seed 2 bytes, each
//! address 4 (IPv4) or 16 (IPv6) bytes, the ports 2 bytes each, and the
//! endpoints ordered so that the smaller address (then the smaller port)
//! comes first, which is what makes both directions the same.
//!
//! An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, a dual-stack socket's view
//! of an IPv4 peer) is hashed as the IPv4 address it maps: that is what its
//! packets carry, and what the other end (and any monitor on the wire)
//! sees.
//!
//! ```
//! use flowattr_model::{Flow, community_id_v1};
//!
//! let out = Flow::tcp("1.2.3.4:1122".parse().unwrap(), "5.6.7.8:3344".parse().unwrap(), 0);
//! let back = Flow::tcp("5.6.7.8:3344".parse().unwrap(), "1.2.3.4:1122".parse().unwrap(), 0);
//! assert_eq!(community_id_v1(&out, 0).as_str(), "1:wCb3OG7yAFWelaUydu0D+125CLM=");
//! assert_eq!(community_id_v1(&out, 0), community_id_v1(&back, 0));
//! ```

use std::net::{IpAddr, SocketAddr};

use sha1::{Digest, Sha1};

use crate::Flow;

/// Bytes of a version 1 Community ID: `"1:"` and 28 characters of base64.
const LEN: usize = 30;

/// A Community ID string, kept inline (no allocation per flow).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommunityId([u8; LEN]);

impl CommunityId {
    /// The string, such as `1:wCb3OG7yAFWelaUydu0D+125CLM=`.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever written into it.
        std::str::from_utf8(&self.0).expect("a community id is ASCII")
    }

    /// The string's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Display for CommunityId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for CommunityId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CommunityId({})", self.as_str())
    }
}

/// The version 1 Community ID of `flow`'s connection with `seed` (0 unless
/// every tool that is to agree uses another).
pub fn community_id_v1(flow: &Flow, seed: u16) -> CommunityId {
    let (a, b) = ordered(flow.local, flow.remote);
    let mut h = Sha1::new();
    h.update(seed.to_be_bytes());
    put_address(&mut h, a.ip());
    put_address(&mut h, b.ip());
    h.update([flow.protocol.number(), 0]);
    h.update(a.port().to_be_bytes());
    h.update(b.port().to_be_bytes());
    let digest: [u8; 20] = h.finalize().into();
    let mut out = [0u8; LEN];
    out[..2].copy_from_slice(b"1:");
    base64(&digest, &mut out[2..]);
    CommunityId(out)
}

/// The Community ID (seed 0) that output records carry, or `None` where a
/// policy blanked the endpoints (an unspecified address or a port 0, which
/// no real TCP or UDP connection has): such an id would join unrelated
/// connections.
pub fn community_id(flow: &Flow) -> Option<CommunityId> {
    let blank = |e: SocketAddr| e.ip().is_unspecified() || e.port() == 0;
    if blank(flow.local) || blank(flow.remote) {
        return None;
    }
    Some(community_id_v1(flow, 0))
}

/// The address as the spec hashes it: IPv4-mapped IPv6 as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The two endpoints, the smaller (address, then port) first. Addresses of
/// one family compare as their network-order bytes; of different families
/// (which no packet has) IPv4 first.
fn ordered(x: SocketAddr, y: SocketAddr) -> (SocketAddr, SocketAddr) {
    let x = SocketAddr::new(canonical(x.ip()), x.port());
    let y = SocketAddr::new(canonical(y.ip()), y.port());
    if (x.ip(), x.port()) <= (y.ip(), y.port()) {
        (x, y)
    } else {
        (y, x)
    }
}

fn put_address(h: &mut Sha1, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => h.update(a.octets()),
        IpAddr::V6(a) => h.update(a.octets()),
    }
}

/// Standard base64 (RFC 4648, with padding) of 20 bytes: 28 characters.
fn base64(bytes: &[u8; 20], out: &mut [u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = 0;
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (k, slot) in out[o..o + 4].iter_mut().enumerate() {
            *slot = if k <= chunk.len() {
                ALPHABET[((n >> (18 - 6 * k)) & 0x3f) as usize]
            } else {
                b'='
            };
        }
        o += 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Protocol;

    fn flow(protocol: Protocol, local: &str, remote: &str) -> Flow {
        let mut f = Flow::tcp(local.parse().unwrap(), remote.parse().unwrap(), 0);
        f.protocol = protocol;
        f
    }

    /// The spec's published vectors (its `baseline/` directory: the table
    /// of default and seed 1 settings, and `baseline_deflt.json` from its
    /// capture files), both directions of each.
    #[test]
    fn the_spec_s_test_vectors() {
        use Protocol::{Tcp, Udp};
        let vectors = [
            (
                Tcp,
                "1.2.3.4:1122",
                "5.6.7.8:3344",
                0,
                "1:wCb3OG7yAFWelaUydu0D+125CLM=",
            ),
            (
                Udp,
                "1.2.3.4:1122",
                "5.6.7.8:3344",
                0,
                "1:0Mu9InQx6z4ZiCZM/7HXi2WMhOg=",
            ),
            (
                Tcp,
                "1.2.3.4:1122",
                "5.6.7.8:3344",
                1,
                "1:HhA1B+6CoLbiKPEs5nhNYN4XWfk=",
            ),
            (
                Udp,
                "1.2.3.4:1122",
                "5.6.7.8:3344",
                1,
                "1:OShq+iKDAMVouh/4bMxB9Sz4amw=",
            ),
            (
                Tcp,
                "128.232.110.120:34855",
                "66.35.250.204:80",
                0,
                "1:LQU9qZlK+B5F3KDmev6m5PMibrg=",
            ),
            (
                Tcp,
                "[2001:470:e5bf:dead:4957:2174:e82c:4887]:63943",
                "[2607:f8b0:400c:c03::1a]:25",
                0,
                "1:/qFaeAR+gFe1KYjMzVDsMv+wgU4=",
            ),
            (
                Udp,
                "192.168.1.52:54585",
                "8.8.8.8:53",
                0,
                "1:d/FP5EW3wiY1vCndhwleRRKHowQ=",
            ),
        ];
        for (protocol, a, b, seed, want) in vectors {
            let out = flow(protocol, a, b);
            let back = flow(protocol, b, a);
            assert_eq!(community_id_v1(&out, seed).as_str(), want, "{a} → {b}");
            assert_eq!(community_id_v1(&back, seed).as_str(), want, "{b} → {a}");
        }
    }

    #[test]
    fn equal_addresses_are_ordered_by_port() {
        let a = flow(Protocol::Tcp, "10.0.0.1:80", "10.0.0.1:1234");
        let b = flow(Protocol::Tcp, "10.0.0.1:1234", "10.0.0.1:80");
        assert_eq!(community_id_v1(&a, 0), community_id_v1(&b, 0));
        let other = flow(Protocol::Tcp, "10.0.0.1:81", "10.0.0.1:1234");
        assert_ne!(community_id_v1(&a, 0), community_id_v1(&other, 0));
    }

    #[test]
    fn an_ipv4_mapped_address_is_its_ipv4_address() {
        let mapped = flow(
            Protocol::Tcp,
            "[::ffff:1.2.3.4]:1122",
            "[::ffff:5.6.7.8]:3344",
        );
        assert_eq!(
            community_id_v1(&mapped, 0).as_str(),
            "1:wCb3OG7yAFWelaUydu0D+125CLM="
        );
        // One end dual-stack, the other plain IPv4: still one id.
        let plain = flow(Protocol::Tcp, "5.6.7.8:3344", "[::ffff:1.2.3.4]:1122");
        assert_eq!(community_id_v1(&plain, 0), community_id_v1(&mapped, 0));
    }

    #[test]
    fn blanked_endpoints_have_no_id() {
        let f = flow(Protocol::Tcp, "1.2.3.4:1122", "5.6.7.8:3344");
        assert_eq!(community_id(&f), Some(community_id_v1(&f, 0)));
        for (local, remote) in [
            ("0.0.0.0:1122", "5.6.7.8:3344"),
            ("1.2.3.4:1122", "[::]:3344"),
            ("1.2.3.4:0", "5.6.7.8:0"),
        ] {
            assert_eq!(community_id(&flow(Protocol::Tcp, local, remote)), None);
        }
    }

    #[test]
    fn base64_pads_like_the_standard() {
        let mut out = [0u8; 28];
        base64(&[0xff; 20], &mut out);
        assert_eq!(&out, b"//////////////////////////8=");
        base64(&[0; 20], &mut out);
        assert_eq!(&out, b"AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    }
}
