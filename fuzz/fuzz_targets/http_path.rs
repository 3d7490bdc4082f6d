//! Fuzz target `http_path`: arbitrary text as the id segment of a
//! `GET /jobs/{id}` request path (anyone who reaches the port sends it).
//! `http::decode` must never panic, and text without a `%` followed by a hex digit comes back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let out = k8s_job_worker::http::decode(s);
    // Only `%` and two hex digits are an escape: text where no `%` is
    // followed by a hex digit comes back unchanged ("%+1" is not an escape).
    let b = s.as_bytes();
    let escapes =
        (0..b.len()).any(|i| b[i] == b'%' && b.get(i + 1).is_some_and(u8::is_ascii_hexdigit));
    if !escapes {
        assert_eq!(out, s);
    }
});
