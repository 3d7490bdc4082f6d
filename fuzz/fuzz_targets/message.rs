//! Fuzz target `message`: arbitrary bytes as a queue message body. Parsing must
//! never panic; a message that parses must render and pass through the default
//! and a restrictive policy without panicking, and rendering must be
//! deterministic (the same message always gives the same Job).
#![no_main]

use k8s_job_worker::message::{self, Limits};
use k8s_job_worker::policy::{MaxQuantity, Policy};
use k8s_job_worker::config::default_render;
use k8s_job_worker::render;
use libfuzzer_sys::fuzz_target;

fn strict() -> Policy {
    Policy {
        allowed_namespaces: vec!["default".into(), "jobs".into()],
        allowed_images: vec![
            "registry.local/team/".into(),
            "ghcr.io/org/tool:*".into(),
            "busybox".into(),
        ],
        require_image_digest: true,
        allowed_service_accounts: vec!["default".into(), "*".into()],
        allowed_env_refs: vec!["configmap/*".into(), "secret/db".into()],
        allowed_pvcs: vec!["data".into()],
        max_job_cpu: MaxQuantity::parse("8").ok(),
        max_job_memory: MaxQuantity::parse("16Gi").ok(),
        max_job_gpus: 2,
        max_env_entries: 10,
        min_ttl_seconds_after_finished: 60,
        max_ttl_seconds_after_finished: 3600,
        allowed_queues: vec!["team-a".into()],
        allowed_priority_classes: vec!["low".into()],
        allowed_image_pull_secrets: vec!["regcred".into()],
        max_job_parallelism: 4,
    }
}

fuzz_target!(|data: &[u8]| {
    // Job request or control message: never a panic, and a cancel is only
    // ever read from a body `parse` refuses naming `action`.
    if let Ok(message::Request::Cancel { id }) = message::parse_request(data, &Limits::default()) {
        assert!(!id.is_empty());
        assert!(message::parse(data, &Limits::default()).is_err());
    }
    let Ok(msg) = message::parse(data, &Limits::default()) else {
        return;
    };
    let cfg = default_render();
    let job = render::render(&msg, &cfg);
    assert_eq!(
        job,
        render::render(&msg, &cfg),
        "render is not deterministic"
    );
    // The Job serializes (the client sends it as JSON).
    let _ = serde_json::to_vec(&job);
    // A Secret exactly when there is a payload, within a Secret's limit.
    match (&msg.payload, render::render_secret(&msg, &cfg, "uid")) {
        (None, None) => {}
        (Some(p), Some(secret)) => {
            assert!(p.len() <= k8s_job_worker::contract::MAX_PAYLOAD_BYTES);
            assert!(secret["data"]["payload.json"].is_string());
        }
        _ => panic!("a payload Secret without a payload, or the reverse"),
    }
    let _ = Policy::default().check(&msg);
    if let Err(e) = strict().check(&msg) {
        // Every denial names its rule.
        assert!(
            !e.rule.is_empty()
                && e.rule.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
            "denial without a rule name: {e}"
        );
    }
});
