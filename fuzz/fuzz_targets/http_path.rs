//! Fuzz target `http_path`: arbitrary text as the id segment of a
//! `GET /jobs/{id}` request path (anyone who reaches the port sends it).
//! `http::decode` must never panic, and text without `%` comes back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let out = k8s_job_worker::http::decode(s);
    if !s.contains('%') {
        assert_eq!(out, s);
    }
});
