//! Writers for the pieces of a JSON line — integers, JSON strings, IP
//! addresses, RFC 3339 times — straight into a byte buffer.
//!
//! They exist because this is the collector's hot path: `write!` through
//! `core::fmt` costs tens of nanoseconds per value, and `std`'s text for IPv6
//! is not promised to stay the same across releases, while the output of a
//! sink is a contract. The text here is fixed: IPv6 in RFC 5952 canonical
//! form, times with exactly nine fractional digits.

use std::net::{Ipv4Addr, Ipv6Addr};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `n` in decimal.
#[inline]
pub fn u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// What each byte becomes inside a JSON string: 0 = itself, `u` = `\u00XX`,
/// anything else = a backslash and that byte.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Writes `s` as a quoted JSON string. Control characters, `"` and `\` are
/// escaped; everything else (including non-ASCII UTF-8) is copied as is.
pub fn string(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = ESCAPE[b as usize];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        if escape == b'u' {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[(b >> 4) as usize]);
            out.push(HEX[(b & 0xf) as usize]);
        } else {
            out.push(b'\\');
            out.push(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[inline]
fn u8_decimal(out: &mut Vec<u8>, n: u8) {
    if n >= 100 {
        out.push(b'0' + n / 100);
    }
    if n >= 10 {
        out.push(b'0' + (n / 10) % 10);
    }
    out.push(b'0' + n % 10);
}

/// Writes dotted-quad text: `10.0.0.1`.
pub fn ipv4(out: &mut Vec<u8>, a: Ipv4Addr) {
    let [a, b, c, d] = a.octets();
    u8_decimal(out, a);
    out.push(b'.');
    u8_decimal(out, b);
    out.push(b'.');
    u8_decimal(out, c);
    out.push(b'.');
    u8_decimal(out, d);
}

fn hex16(out: &mut Vec<u8>, g: u16) {
    let mut started = false;
    for shift in [12, 8, 4, 0] {
        let nibble = (g >> shift) & 0xf;
        if nibble != 0 || started || shift == 0 {
            out.push(HEX[nibble as usize]);
            started = true;
        }
    }
}

/// Writes RFC 5952 canonical text: lowercase hex without leading zeros, the
/// longest run of two or more zero groups (the first, on a tie) as `::`, and
/// IPv4-mapped addresses as `::ffff:a.b.c.d`.
pub fn ipv6(out: &mut Vec<u8>, a: Ipv6Addr) {
    if let Some(v4) = a.to_ipv4_mapped() {
        out.extend_from_slice(b"::ffff:");
        ipv4(out, v4);
        return;
    }
    let g = a.segments();
    let (mut best_start, mut best_len, mut run_start, mut run_len) = (0, 0, 0, 0);
    for (i, &group) in g.iter().enumerate() {
        if group == 0 {
            if run_len == 0 {
                run_start = i;
            }
            run_len += 1;
            if run_len > best_len {
                (best_start, best_len) = (run_start, run_len);
            }
        } else {
            run_len = 0;
        }
    }
    if best_len < 2 {
        best_len = 0;
    }
    let mut i = 0;
    while i < 8 {
        if best_len > 0 && i == best_start {
            out.extend_from_slice(b"::");
            i += best_len;
            continue;
        }
        if i > 0 && !(best_len > 0 && i == best_start + best_len) {
            out.push(b':');
        }
        hex16(out, g[i]);
        i += 1;
    }
}

/// Two decimal digits of `n` (< 100).
#[inline]
fn two(out: &mut Vec<u8>, n: u32) {
    out.push(b'0' + (n / 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for non-negative days).
fn civil_from_days(days: u64) -> (u64, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365], from March 1
    let mp = (5 * doy + 2) / 153; // [0, 11], March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Writes `ns` (nanoseconds since the Unix epoch) as a quoted RFC 3339 UTC
/// time with nine fractional digits: `"2024-05-01T12:00:00.000000000Z"`.
/// Every u64 is a year below 10000, so the year is always four digits.
pub fn rfc3339(out: &mut Vec<u8>, ns: u64) {
    let secs = ns / 1_000_000_000;
    let nanos = (ns % 1_000_000_000) as u32;
    let (year, month, day) = civil_from_days(secs / 86_400);
    let sod = (secs % 86_400) as u32;
    out.push(b'"');
    let year = year as u32;
    two(out, year / 100);
    two(out, year % 100);
    out.push(b'-');
    two(out, month);
    out.push(b'-');
    two(out, day);
    out.push(b'T');
    two(out, sod / 3600);
    out.push(b':');
    two(out, sod / 60 % 60);
    out.push(b':');
    two(out, sod % 60);
    out.push(b'.');
    let mut digits = [b'0'; 9];
    let mut n = nanos;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits);
    out.extend_from_slice(b"Z\"");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_escape_what_json_requires_and_nothing_else() {
        assert_eq!(text(|o| string(o, "web-1")), r#""web-1""#);
        assert_eq!(
            text(|o| string(o, "a\"b\\c\nd\te\u{1}f\u{1f}")),
            r#""a\"b\\c\nd\te\u0001f\u001f""#
        );
        assert_eq!(text(|o| string(o, "é/😀\u{7f}")), "\"é/😀\u{7f}\"");
        assert_eq!(text(|o| string(o, "")), r#""""#);
    }

    #[test]
    fn ipv4_text() {
        for a in ["0.0.0.0", "10.0.0.1", "255.255.255.255", "192.168.100.9"] {
            assert_eq!(text(|o| ipv4(o, a.parse().unwrap())), a);
        }
    }

    #[test]
    fn ipv6_text_is_rfc5952_canonical() {
        for (a, want) in [
            ("::", "::"),
            ("::1", "::1"),
            ("2001:db8::1", "2001:db8::1"),
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
            ("fd00:10::", "fd00:10::"),
            ("::ffff:10.0.0.1", "::ffff:10.0.0.1"),
            ("FE80::ABCD", "fe80::abcd"),
        ] {
            assert_eq!(text(|o| ipv6(o, a.parse().unwrap())), want, "{a}");
        }
    }

    /// xorshift64, for cross-checks over many values.
    fn numbers(mut x: u64) -> impl FnMut() -> u64 {
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn ipv6_text_matches_std_on_random_addresses_with_zero_runs() {
        let mut next = numbers(0x1234_5678_9abc_def1);
        for _ in 0..200_000 {
            let (bits, zeros) = (next(), next());
            let mut segs = [0u16; 8];
            for (i, s) in segs.iter_mut().enumerate() {
                // Half the groups zero, so runs of every length and position occur.
                if zeros >> i & 1 == 0 {
                    *s = (bits >> (i * 8)) as u16 | 1;
                }
            }
            let a = Ipv6Addr::from(segs);
            assert_eq!(text(|o| ipv6(o, a)), a.to_string(), "{segs:x?}");
        }
    }

    #[test]
    fn rfc3339_matches_humantime_on_random_times() {
        let mut next = numbers(0x0fed_cba9_8765_4321);
        for _ in 0..200_000 {
            let ns = next();
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
            let want = humantime::format_rfc3339_nanos(t).to_string();
            assert_eq!(text(|o| rfc3339(o, ns)), format!("\"{want}\""), "{ns}");
        }
    }

    #[test]
    fn rfc3339_known_times() {
        for (ns, want) in [
            (0, "1970-01-01T00:00:00.000000000Z"),
            (1_714_564_800_123_456_789, "2024-05-01T12:00:00.123456789Z"),
            (951_782_400_000_000_001, "2000-02-29T00:00:00.000000001Z"),
            (4_107_542_399_999_999_999, "2100-02-28T23:59:59.999999999Z"),
            (u64::MAX, "2554-07-21T23:34:33.709551615Z"),
        ] {
            assert_eq!(text(|o| rfc3339(o, ns)), format!("\"{want}\""), "{ns}");
        }
    }
}
