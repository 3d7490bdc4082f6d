//! Fuzz target `rfc3339`: arbitrary text as an RFC 3339 timestamp (Job and Pod
//! times from the API server, Lease times, AWS credential expiries).
//! `clock::parse_rfc3339` must never panic, and a time it accepts formats and
//! parses back to itself to the microsecond.
#![no_main]

use std::time::UNIX_EPOCH;

use k8s_job_worker::clock;
use libfuzzer_sys::fuzz_target;

/// 10000-01-01T00:00:00Z: later times need a five-digit year, outside RFC 3339.
const YEAR_10000: u64 = 253_402_300_800;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Some(t) = clock::parse_rfc3339(s) else {
        return;
    };
    let d = t.duration_since(UNIX_EPOCH).expect("never before 1970");
    let micros = clock::format_micros(t);
    let _ = clock::format_secs(t);
    if d.as_secs() < YEAR_10000 {
        let back = clock::parse_rfc3339(&micros)
            .unwrap_or_else(|| panic!("{s:?} formats as {micros:?}, which does not parse"));
        let b = back.duration_since(UNIX_EPOCH).expect("after 1970");
        assert_eq!(b.as_micros(), d.as_micros(), "{s:?} -> {micros:?}");
    }
});
