//! Fuzz target `kube_status`: arbitrary bytes as an API server error answer
//! (the first two bytes pick the HTTP status, the rest is the body).
//! `kube::client::status_error` must never panic, and what it builds reads as
//! a sentence.
#![no_main]

use k8s_job_worker::kube::client::status_error;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (code, body) = match data {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
        _ => (500, data),
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let e = status_error("get job ns/name", code, text);
    assert_eq!(e.code(), Some(code));
    let _ = e.is_transient();
    let _ = e.api_message();
    assert!(!e.to_string().is_empty());
});
