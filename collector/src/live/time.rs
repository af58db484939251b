//! Times as people type them into the owner lookup: RFC 3339 (any offset,
//! any fraction of a second) or Unix nanoseconds; and back, as RFC 3339 in
//! UTC. Pure, so the HTTP shell and the command line agree.

const NS: i128 = 1_000_000_000;

/// Unix-epoch nanoseconds from `text`: digits only are nanoseconds,
/// anything else must be RFC 3339 (`2026-12-05T14:02:00Z`,
/// `2026-12-05T15:02:00.5+01:00`). Times before 1970 are refused.
pub fn parse_time(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty time".into());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u64>()
            .map_err(|_| format!("{text:?}: Unix nanoseconds past 2^64"));
    }
    let ns = parse_rfc3339(text).map_err(|why| {
        format!(
            "{text:?} is neither RFC 3339 (like 2026-12-05T14:02:00Z) nor Unix nanoseconds: {why}"
        )
    })?;
    u64::try_from(ns).map_err(|_| format!("{text:?} is before 1970 or after 2554"))
}

fn parse_rfc3339(s: &str) -> Result<i128, String> {
    let b = s.as_bytes();
    let digits = |from: usize, n: usize| -> Result<i128, String> {
        let part = b
            .get(from..from + n)
            .filter(|p| p.iter().all(u8::is_ascii_digit))
            .ok_or_else(|| format!("expected {n} digits at position {}", from + 1))?;
        Ok(part.iter().fold(0, |v, d| v * 10 + i128::from(d - b'0')))
    };
    let expect = |at: usize, what: &[u8]| -> Result<(), String> {
        match b.get(at) {
            Some(c) if what.contains(c) => Ok(()),
            _ => Err(format!(
                "expected {:?} at position {}",
                what.iter().map(|&c| c as char).collect::<String>(),
                at + 1
            )),
        }
    };
    let year = digits(0, 4)?;
    expect(4, b"-")?;
    let month = digits(5, 2)?;
    expect(7, b"-")?;
    let day = digits(8, 2)?;
    expect(10, b"Tt ")?;
    let hour = digits(11, 2)?;
    expect(13, b":")?;
    let minute = digits(14, 2)?;
    expect(16, b":")?;
    let second = digits(17, 2)?;
    let mut at = 19;
    let mut fraction_ns = 0;
    if b.get(at) == Some(&b'.') {
        let start = at + 1;
        at = start;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        let n = at - start;
        if n == 0 {
            return Err("a '.' without fraction digits".into());
        }
        // Digits past nanoseconds are dropped (truncated, not rounded).
        let kept = n.min(9);
        fraction_ns = digits(start, kept)? * 10i128.pow((9 - kept) as u32);
    }
    let offset_s = match b.get(at) {
        Some(b'Z' | b'z') if at + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if at + 6 == b.len() => {
            expect(at + 3, b":")?;
            let (h, m) = (digits(at + 1, 2)?, digits(at + 4, 2)?);
            if h > 23 || m > 59 {
                return Err("offset out of range".into());
            }
            let v = h * 3600 + m * 60;
            if sign == b'+' { v } else { -v }
        }
        _ => return Err("expected 'Z' or an offset like +02:00 at the end".into()),
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&month) || day < 1 || day > month_days[month as usize - 1] {
        return Err("no such date".into());
    }
    // A leap second (:60) is read as the next second's start.
    if hour > 23 || minute > 59 || second > 60 {
        return Err("no such time of day".into());
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    Ok(seconds * NS + fraction_ns)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (eras of 400 years
/// of 146,097 days, the year counted from March so February is last).
fn days_from_civil(year: i128, month: i128, day: i128) -> i128 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day since 1970-01-01: the inverse of `days_from_civil`.
fn civil_from_days(days: i128) -> (i128, i128, i128) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i128::from(month <= 2);
    (year, month, day)
}

/// `ns` as RFC 3339 in UTC, with as many fraction digits as it needs (none,
/// 3, 6 or 9).
pub fn format_time(ns: u64) -> String {
    let ns = i128::from(ns);
    let (secs, frac) = (ns / NS, ns % NS);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let (h, m, s) = (rest / 3600, rest / 60 % 60, rest % 60);
    let fraction = match frac {
        0 => String::new(),
        f if f % 1_000_000 == 0 => format!(".{:03}", f / 1_000_000),
        f if f % 1_000 == 0 => format!(".{:06}", f / 1_000),
        f => format!(".{f:09}"),
    };
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}{fraction}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_with_offsets_and_fractions_and_nanoseconds() {
        let t = 1_796_479_320 * 1_000_000_000; // 2026-12-05T14:02:00Z
        assert_eq!(parse_time("2026-12-05T14:02:00Z"), Ok(t));
        assert_eq!(parse_time("2026-12-05t14:02:00z"), Ok(t));
        assert_eq!(parse_time("2026-12-05 15:32:00+01:30"), Ok(t));
        assert_eq!(parse_time("2026-12-05T09:02:00-05:00"), Ok(t));
        assert_eq!(parse_time("2026-12-05T14:02:00.25Z"), Ok(t + 250_000_000));
        assert_eq!(
            parse_time("2026-12-05T14:02:00.1234567891Z"),
            Ok(t + 123_456_789)
        );
        assert_eq!(parse_time(&t.to_string()), Ok(t));
        assert_eq!(parse_time("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_time("2024-02-29T00:00:00Z"),
            Ok(1_709_164_800 * 1_000_000_000)
        );
    }

    #[test]
    fn bad_times_say_what_is_wrong() {
        for (bad, why) in [
            ("", "empty"),
            ("yesterday", "expected 4 digits"),
            ("2026-12-05", "expected \"Tt \""),
            ("2026-12-05T14:02:00", "'Z' or an offset"),
            ("2026-13-05T14:02:00Z", "no such date"),
            ("2025-02-29T14:02:00Z", "no such date"),
            ("2026-12-05T24:02:00Z", "no such time"),
            ("2026-12-05T14:02:00.Z", "fraction"),
            ("2026-12-05T14:02:00+1:00", "'Z' or an offset"),
            ("1969-12-31T23:59:59Z", "before 1970"),
            ("99999999999999999999999", "past 2^64"),
        ] {
            let e = parse_time(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn formats_back_what_it_parses() {
        for text in [
            "1970-01-01T00:00:00Z",
            "2000-02-29T23:59:59.999Z",
            "2026-12-05T14:02:00.000001Z",
            "2100-03-01T00:00:00.123456789Z",
        ] {
            assert_eq!(format_time(parse_time(text).unwrap()), text);
        }
        for ns in [
            0,
            951_782_399_999_000_000,
            1_796_479_320_123_456_789,
            u64::MAX,
        ] {
            assert_eq!(parse_time(&format_time(ns)), Ok(ns), "{ns}");
        }
    }
}
