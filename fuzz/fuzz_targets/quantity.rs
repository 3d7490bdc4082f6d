//! Fuzz target `quantity`: arbitrary text as a Kubernetes quantity (a message's
//! job.resources). `quantity::parse_milli` must never panic (however long the
//! digits or large the exponent), an explicit `+` changes nothing, and
//! `MaxQuantity::parse` agrees with it.
#![no_main]

use k8s_job_worker::policy::MaxQuantity;
use k8s_job_worker::quantity;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = quantity::parse_milli(s);
    if !s.starts_with(['+', '-']) {
        assert_eq!(
            quantity::parse_milli(&format!("+{s}")).ok(),
            parsed.as_ref().ok().copied(),
            "{s:?} and +{s:?} differ"
        );
    }
    let max = MaxQuantity::parse(s);
    if max.is_ok() {
        assert!(parsed.as_ref().is_ok_and(|m| *m > 0), "{s:?}");
    }
});
