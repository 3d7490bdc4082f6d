//! Fuzz target `aws_credentials`: arbitrary bytes as an STS
//! AssumeRoleWithWebIdentity answer and as a container-credentials endpoint
//! answer (an even first byte means status 200, else the first two bytes are the
//! status; the rest is the body).
//! `parse_sts_response`, `parse_container_response` and `xml_tag` must never
//! panic.
#![no_main]

use std::time::SystemTime;

use k8s_job_worker::aws::credentials::{
    check_container_url, parse_container_response, parse_sts_response, xml_tag,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // An even first byte means 200 (the success paths); otherwise the first
    // two bytes are the status.
    let (status, body) = match data {
        [a, _, rest @ ..] if a % 2 == 0 => (200, rest),
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
        _ => (400, data),
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return;
    };
    let now = SystemTime::now();
    let _ = parse_sts_response(status, text).map_err(|e| e.to_string());
    let _ = parse_container_response(status, text, now).map_err(|e| e.to_string());
    let _ = xml_tag(text, "Code");
    let _ = xml_tag(text, "");
    // AWS_CONTAINER_CREDENTIALS_FULL_URI (operator input, cheap to cover).
    let _ = check_container_url(text);
});
