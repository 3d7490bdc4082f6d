//! Wall-clock helpers: RFC 3339 timestamps as Kubernetes and AWS write them
//! (`2026-11-24T07:00:00Z`, optional fraction, `Z` or ±hh:mm), converted to and
//! from `SystemTime` with the civil-from-days algorithm. Pure; never panics.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days in month `m` (1-12) of year `y` (proleptic Gregorian).
fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Parses an RFC 3339 timestamp; `None` when malformed or before 1970.
///
/// Works on bytes only (the grammar is ASCII), so no input, whatever
/// characters it holds, can make it slice inside a character.
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    // A run of ASCII digits at b[r] as a number; None if any byte is not one.
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b.get(r)?.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let at = |i: usize, ok: &[u8]| b.get(i).is_some_and(|c| ok.contains(c));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo)
        || !(1..=days_in_month(y, mo)).contains(&d)
        || h > 23
        || mi > 59
        || sec > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: u64 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            let n = i - start;
            if n < 9 {
                nanos += u64::from(c - b'0') * 10u64.pow(8 - n as u32);
            }
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |t: u8, u: u8| -> Option<i64> {
                (t.is_ascii_digit() && u.is_ascii_digit())
                    .then(|| i64::from(t - b'0') * 10 + i64::from(u - b'0'))
            };
            let (oh, om) = (two(*h1, *h2)?, two(*m1, *m2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    if secs < 0 {
        return None;
    }
    Some(UNIX_EPOCH + Duration::from_secs(secs as u64) + Duration::from_nanos(nanos))
}

/// Formats as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (microseconds: Kubernetes MicroTime).
pub fn format_micros(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (y, m, day) = civil_from_days(secs.div_euclid(86_400));
    let r = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        r / 3600,
        r % 3600 / 60,
        r % 60,
        d.subsec_micros()
    )
}

/// Formats as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_secs(t: SystemTime) -> String {
    let s = format_micros(t);
    format!("{}Z", &s[..19])
}

/// Now, RFC 3339 with seconds.
pub fn now_rfc3339() -> String {
    format_secs(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_known_values() {
        let t = parse_rfc3339("2026-11-24T07:00:00Z").expect("valid");
        assert_eq!(
            t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).ok(),
            Some(1_795_503_600)
        );
        assert_eq!(format_secs(t), "2026-11-24T07:00:00Z");
        let t = parse_rfc3339("2024-02-29T23:59:59.123456Z").expect("leap day");
        assert_eq!(format_micros(t), "2024-02-29T23:59:59.123456Z");
        assert_eq!(
            parse_rfc3339("2026-11-24T09:00:00+02:00"),
            parse_rfc3339("2026-11-24T07:00:00Z")
        );
        assert_eq!(format_secs(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn garbage_is_none() {
        for s in [
            "",
            "2026-11-24",
            "2026-13-01T00:00:00Z",
            "2026-11-24T07:00:00",
            "2026-11-24T07:00:00.Z",
            "２０２６-11-24T07:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s}");
        }
    }

    /// Issue 12: `+0é00` made the offset check slice inside `é` and panic.
    /// Every malformed input is `None`, whatever characters it holds and
    /// wherever they sit.
    #[test]
    fn malformed_timestamps_are_none_and_never_panic() {
        for s in [
            "2026-11-24T07:00:00+0é00",
            "2026-11-24T07:00:00+é:00",
            "2026-11-24T07:00:00+00:é",
            "2026-11-24T07:00:00é000",
            "2026-11-24T07:00:00.é",
            "2026-11-24T07:00:00.1é",
            "2026-11-24T07:00:0é",
            "2026-11-24T07:00:00+02:0",
            "2026-11-24T07:00:00+02:000",
            "2026-11-24T07:00:00+2:00",
            "2026-11-24T07:00:00++2:00",
            "2026-11-24T07:00:00+-2:00",
            "2026-11-24T07:00:00+02:+0",
            "2026-11-24T07:00:00+24:00",
            "2026-11-24T07:00:00+02:60",
            "2026-11-24T07:00:00+02-00",
            "2026-11-24T07:00:00ZZ",
            "2026-11-24T07:00:00 Z",
            "2026-11-24T24:00:00Z",
            "2026-11-24T07:60:00Z",
            "2026-11-24T07:00:61Z",
            "2026-02-29T07:00:00Z",
            "2026-04-31T07:00:00Z",
            "2026-11-00T07:00:00Z",
            "2026-00-24T07:00:00Z",
            "+026-11-24T07:00:00Z",
            "2026-+1-24T07:00:00Z",
            "2026-11-24X07:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s:?}");
        }
        // A multi-byte character inserted at, or replacing the character at,
        // every position of valid timestamps (every offset form).
        for valid in [
            "2026-11-24T07:00:00Z",
            "2026-11-24T07:00:00.123456789+02:00",
            "2026-11-24T07:00:00-11:30",
        ] {
            assert!(parse_rfc3339(valid).is_some(), "{valid}");
            for wide in ['é', '２', '€', '😀', '\u{feff}'] {
                for i in 0..=valid.len() {
                    let inserted = format!("{}{wide}{}", &valid[..i], &valid[i..]);
                    assert_eq!(parse_rfc3339(&inserted), None, "{inserted:?}");
                    if i < valid.len() {
                        let replaced = format!("{}{wide}{}", &valid[..i], &valid[i + 1..]);
                        assert_eq!(parse_rfc3339(&replaced), None, "{replaced:?}");
                    }
                }
            }
            // Every proper prefix is incomplete.
            for i in 0..valid.len() {
                assert_eq!(parse_rfc3339(&valid[..i]), None, "{:?}", &valid[..i]);
            }
        }
    }

    #[test]
    fn offsets_leap_days_and_fractions() {
        let at = |s: &str| {
            parse_rfc3339(s)
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| (d.as_secs(), d.subsec_nanos()))
        };
        assert_eq!(at("2026-11-24t07:00:00z"), Some((1_795_503_600, 0)));
        assert_eq!(at("2026-11-24T01:30:00-05:30"), Some((1_795_503_600, 0)));
        assert_eq!(
            at("2026-11-24T07:00:00.1234567891234Z"),
            Some((1_795_503_600, 123_456_789))
        );
        assert!(at("2024-02-29T00:00:00Z").is_some());
        assert!(at("2000-02-29T00:00:00Z").is_some());
        assert_eq!(at("1900-02-29T00:00:00Z"), None);
        assert!(at("9999-12-31T23:59:60+00:00").is_some());
    }
}
