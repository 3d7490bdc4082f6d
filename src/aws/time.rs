//! ISO-8601 / RFC 3339 timestamps as AWS returns them in credential
//! expirations (`2026-11-24T10:00:00Z`, optionally with fractional seconds or
//! a `±hh:mm` offset), converted to `SystemTime` with the civil-from-days
//! algorithm (no date crate).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        _ => 28,
    }
}

fn digits(s: &[u8], what: &str) -> Result<u32, String> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return Err(format!("bad {what}"));
    }
    Ok(s.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` into a `SystemTime`.
pub fn parse_iso8601(text: &str) -> Result<SystemTime, String> {
    let err = |m: &str| format!("timestamp {text:?}: {m}");
    let s = text.trim().as_bytes();
    if s.len() < 20 || s[4] != b'-' || s[7] != b'-' || s[13] != b':' || s[16] != b':' {
        return Err(err("expected YYYY-MM-DDTHH:MM:SSZ"));
    }
    if !matches!(s[10], b'T' | b't' | b' ') {
        return Err(err("expected 'T' between date and time"));
    }
    let year = i64::from(digits(&s[0..4], "year").map_err(|e| err(&e))?);
    let month = digits(&s[5..7], "month").map_err(|e| err(&e))?;
    let day = digits(&s[8..10], "day").map_err(|e| err(&e))?;
    let hour = digits(&s[11..13], "hour").map_err(|e| err(&e))?;
    let minute = digits(&s[14..16], "minute").map_err(|e| err(&e))?;
    let second = digits(&s[17..19], "second").map_err(|e| err(&e))?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(err("date out of range"));
    }
    // 60 allows a leap second (treated as :59 + 1s, as POSIX time does).
    if hour > 23 || minute > 59 || second > 60 {
        return Err(err("time out of range"));
    }
    let mut rest = &s[19..];
    let mut nanos: u32 = 0;
    if let Some(frac) = rest.strip_prefix(b".") {
        let n = frac.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return Err(err("empty fractional seconds"));
        }
        for (i, d) in frac[..n].iter().enumerate() {
            if i < 9 {
                nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
            }
        }
        rest = &frac[n..];
    }
    let offset_secs: i64 = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = digits(&[*h1, *h2], "offset hours").map_err(|e| err(&e))?;
            let m = digits(&[*m1, *m2], "offset minutes").map_err(|e| err(&e))?;
            if h > 23 || m > 59 {
                return Err(err("offset out of range"));
            }
            let v = i64::from(h * 3600 + m * 60);
            if *sign == b'-' { -v } else { v }
        }
        _ => return Err(err("expected 'Z' or a ±HH:MM offset")),
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)
        - offset_secs;
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::new(secs.unsigned_abs(), nanos))
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(secs.unsigned_abs()))
            .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
    };
    t.ok_or_else(|| err("out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (seconds, nanoseconds) since the epoch; seconds negative before it.
    fn split(t: SystemTime) -> (i64, u32) {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                assert_eq!(
                    d.subsec_nanos(),
                    0,
                    "test only uses whole seconds before 1970"
                );
                (-(d.as_secs() as i64), 0)
            }
        }
    }

    #[test]
    fn days_from_civil_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        // `date -u -d 2026-11-24 +%s` = 1795478400 = 20781 days
        assert_eq!(days_from_civil(2026, 11, 24), 20_781);
    }

    #[test]
    fn parses_aws_expirations() {
        // Expected values from `date -u -d '2026-11-24T10:00:00Z' +%s`.
        let cases: &[(&str, (i64, u32))] = &[
            ("2026-11-24T10:00:00Z", (1_795_514_400, 0)),
            ("2026-11-24T10:00:00.5Z", (1_795_514_400, 500_000_000)),
            (
                "2026-11-24T10:00:00.123456789Z",
                (1_795_514_400, 123_456_789),
            ),
            (
                "2026-11-24T10:00:00.1234567891Z",
                (1_795_514_400, 123_456_789),
            ),
            ("2026-11-24T12:00:00+02:00", (1_795_514_400, 0)),
            ("2026-11-24T09:30:00-00:30", (1_795_514_400, 0)),
            ("1970-01-01T00:00:00Z", (0, 0)),
            ("2024-02-29T23:59:59Z", (1_709_251_199, 0)),
            ("1969-12-31T23:59:59Z", (-1, 0)),
        ];
        for (text, want) in cases {
            let got = parse_iso8601(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(split(got), *want, "{text}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for text in [
            "",
            "2026-11-24",
            "2026-11-24T10:00:00",
            "2026-13-24T10:00:00Z",
            "2026-02-29T10:00:00Z",
            "2026-11-24T24:00:00Z",
            "2026-11-24T10:00:00.Z",
            "2026-11-24T10:00:00+0200",
            "2026-11-24X10:00:00Z",
            "20a6-11-24T10:00:00Z",
        ] {
            assert!(parse_iso8601(text).is_err(), "{text:?} should fail");
        }
    }
}
