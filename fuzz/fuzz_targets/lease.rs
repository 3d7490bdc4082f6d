//! Fuzz target `lease`: arbitrary bytes as the Lease JSON the API server
//! returns. Reading it (`kube::lease::read_of`) and deciding on it
//! (`decide`, `released`) must never panic, and a decision to write always
//! names us as holder with a positive duration.
#![no_main]

use std::time::{Duration, Instant, SystemTime};

use k8s_job_worker::kube::lease::{Decision, decide, read_of, released};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let read = read_of(&v);
    let rec = &read.record;
    let now = Instant::now();
    let wall = SystemTime::now();
    let lease = Duration::from_secs(15);
    let holder = rec.holder.clone();
    for me in ["worker-a", holder.as_str()] {
        if me.is_empty() {
            continue;
        }
        for observed in [now, now.checked_sub(lease).unwrap_or(now)] {
            if let Decision::Write(w) = decide(rec, observed, now, wall, me, lease) {
                assert_eq!(w.holder, me);
                assert!(w.lease_duration_seconds >= 1);
                assert!(w.renew_time.is_some() && w.acquire_time.is_some());
            }
        }
    }
    let r = released(rec, wall);
    assert!(r.holder.is_empty());
    assert_eq!(r.lease_transitions, rec.lease_transitions);
});
