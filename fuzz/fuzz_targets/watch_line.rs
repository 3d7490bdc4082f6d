//! Fuzz target `watch_line`: arbitrary bytes as one line of a Kubernetes watch
//! stream. `kube::watch::decode_line` must never panic on UTF-8 input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(line) = std::str::from_utf8(data) {
        let _ = k8s_job_worker::kube::watch::decode_line(line);
    }
});
