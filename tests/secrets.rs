//! The secret-grep test: full flows with every secret the worker holds (the
//! API server token, static AWS credentials, a Standard Webhooks signing
//! secret, a message payload carrying a canary) and RUST_LOG at trace; nothing
//! secret may appear in the worker's output, /metrics or /jobs/{id}, and the
//! payload canary not in callbacks or the Job (annotations included) either. Also checks the callbacks' Standard Webhooks
//! headers and verifies their signatures independently (ring + base64).

#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use ring::rand::SecureRandom as _;
use ring::{digest, hmac};
use serde_json::json;
use support::worker::{
    Launcher, Q, Worker, calls_for, complete_fail_invalid, make_pvc, message, statuses,
    wait_terminal,
};
use support::{Call, WebhookReceiver, bed, unique};

/// The worker of a test: namespace `sec-*`, stdout and stderr to separate
/// files, the default environment plus `extra` (see tests/support/worker.rs).
fn start(q: Q, extra: &[(&str, &str)]) -> Worker {
    Launcher::new(q)
        .ns_tag("sec")
        .split_output()
        .envs(extra)
        .start()
}

// ------------------------------------------------------------ the test

/// A fresh `whsec_<base64 of 32 random bytes>` secret and its key bytes.
fn new_signing_secret() -> (String, Vec<u8>) {
    let mut key = vec![0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .expect("random bytes");
    (format!("whsec_{}", STANDARD.encode(&key)), key)
}

/// Every printable form a secret could take in a log line.
fn forms_of_key(key: &[u8]) -> Vec<String> {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    vec![
        STANDARD.encode(key),
        STANDARD_NO_PAD.encode(key),
        URL_SAFE.encode(key),
        URL_SAFE_NO_PAD.encode(key),
        hex.clone(),
        hex.to_ascii_uppercase(),
        format!("{key:?}"),                            // [12, 200, ...]
        format!("{:?}", String::from_utf8_lossy(key)), // "\u{..}..."
        String::from_utf8_lossy(key).into_owned(),
    ]
}

/// `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, computed here
/// without the worker's code.
fn expected_signature(key: &[u8], id: &str, ts: &str, body: &[u8]) -> String {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut signed = Vec::new();
    signed.extend_from_slice(id.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(ts.as_bytes());
    signed.push(b'.');
    signed.extend_from_slice(body);
    format!("v1,{}", STANDARD.encode(hmac::sign(&k, &signed).as_ref()))
}

/// Checks the Standard Webhooks headers of one delivered callback; returns the
/// signature value (to be looked for in the logs).
fn check_signed(call: &Call, key: &[u8]) -> Vec<String> {
    let id = call
        .header("webhook-id")
        .unwrap_or_else(|| panic!("no webhook-id: {call:?}"));
    let ts = call
        .header("webhook-timestamp")
        .unwrap_or_else(|| panic!("no webhook-timestamp: {call:?}"));
    let sig = call
        .header("webhook-signature")
        .unwrap_or_else(|| panic!("no webhook-signature: {call:?}"));
    // webhook-id: msg_ + first 32 hex digits of sha256("<message id>\n<status>").
    let mid = call.body["id"]
        .as_str()
        .expect("callback body has the message id");
    let status = call.body["status"]
        .as_u64()
        .expect("callback body has a status");
    let d = digest::digest(&digest::SHA256, format!("{mid}\n{status}").as_bytes());
    let want_id: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        id,
        format!("msg_{want_id}"),
        "webhook-id of {mid} status {status}"
    );
    // webhook-timestamp: Unix seconds, close to now.
    let t: u64 = ts
        .parse()
        .unwrap_or_else(|_| panic!("webhook-timestamp {ts:?}"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        t <= now + 5 && t + 600 >= now,
        "webhook-timestamp {t} vs now {now}"
    );
    // webhook-signature: space-separated `v1,<b64>`; one of them must verify.
    let want = expected_signature(key, id, ts, &call.raw_body);
    let sigs: Vec<String> = sig.split(' ').map(str::to_string).collect();
    assert!(
        sigs.contains(&want),
        "signature of {mid} status {status} does not verify: got {sig}, want {want}"
    );
    // A wrong key must not verify (the check above is not vacuous).
    let mut other = key.to_vec();
    other[0] ^= 1;
    assert!(!sigs.contains(&expected_signature(&other, id, ts, &call.raw_body)));
    sigs.iter()
        .map(|s| s.trim_start_matches("v1,").to_string())
        .collect()
}

struct Flow {
    w: Worker,
    hook: WebhookReceiver,
    ids: Vec<String>,
    /// The payload text of the canary messages (`{"canary": "<canary>"}`).
    payload: String,
    canary: String,
}

/// Starts a worker and runs one completing, one failing and one invalid message
/// through it, then one completing and one invalid message carrying a payload
/// canary, to their terminal callbacks.
fn run_flow(q: Q, rust_log: &str, secret: &str) -> Flow {
    let hook = WebhookReceiver::start();
    let w = start(
        q,
        &[("RUST_LOG", rust_log), ("WEBHOOK_SIGNING_SECRET", secret)],
    );
    make_pvc(&w.ns);
    let mut ids = complete_fail_invalid(&w, &hook).to_vec();
    let canary = unique("payload-canary-7c1e");
    let payload = json!({ "canary": canary });
    let (ok_id, ok) = message(&w, &hook, |m| m["payload"] = payload.clone());
    let (bad_id, bad) = message(&w, &hook, |m| {
        m["payload"] = payload.clone();
        m["job"]["image"] = json!("");
    });
    assert!(
        ok.contains(&payload.to_string()),
        "the payload text as sent"
    );
    w.send(&ok);
    w.send(&bad);
    assert_eq!(
        statuses(&wait_terminal(
            &w,
            &hook,
            &ok_id,
            std::time::Duration::from_secs(90)
        )),
        vec![0, 1, 2]
    );
    assert_eq!(
        statuses(&wait_terminal(
            &w,
            &hook,
            &bad_id,
            std::time::Duration::from_secs(60)
        )),
        vec![99]
    );
    // The payload did reach its Secret (the canary is not just unused).
    let b = bed();
    let name = k8s_job_worker::contract::job_name("bb", &ok_id);
    let (code, secret) = b.kube_get(&format!("/api/v1/namespaces/{}/secrets/{name}", w.ns));
    assert_eq!(code, 200, "{secret}");
    assert_eq!(
        secret["data"]["payload.json"],
        json!(STANDARD.encode(payload.to_string()))
    );
    // ... and nowhere in its Job.
    let (code, job) = b.kube_get(&format!("/apis/batch/v1/namespaces/{}/jobs/{name}", w.ns));
    assert_eq!(code, 200, "{job}");
    assert!(
        !job.to_string().contains(&canary),
        "payload in the Job: {job}"
    );
    for id in [&ok_id, &bad_id] {
        for c in calls_for(&hook, id) {
            let raw = String::from_utf8_lossy(&c.raw_body);
            assert!(!raw.contains(&canary), "payload in a callback: {raw}");
        }
    }
    ids.push(ok_id);
    ids.push(bad_id);
    Flow {
        w,
        hook,
        ids,
        payload: payload.to_string(),
        canary,
    }
}

#[test]
fn no_secret_reaches_logs_metrics_or_jobs() {
    let b = bed();
    let (secret, key) = new_signing_secret();
    // Two workers in parallel: SQS with static credentials and plain
    // RUST_LOG=trace; Redis with the most specific directives RUST_LOG can give
    // the HTTP and TLS stacks (these outrank a `ureq=info` cap in env_logger).
    let sqs = {
        let secret = secret.clone();
        std::thread::spawn(move || run_flow(Q::Sqs, "trace", &secret))
    };
    let redis = run_flow(
        Q::Redis,
        "trace,ureq=trace,ureq::unit=trace,ureq::pool=trace,ureq_proto=trace,ureq_proto::client=trace,rustls=trace,rustls::conn=trace",
        &secret,
    );
    let sqs = sqs.join().unwrap_or_else(|e| std::panic::resume_unwind(e));

    let mut needles: BTreeMap<String, String> = BTreeMap::new();
    needles.insert("the API server token".into(), b.admin_token.clone());
    needles.insert("the AWS secret key".into(), b.aws_secret_access_key.clone());
    needles.insert("the webhook signing secret".into(), secret.clone());
    for (i, f) in forms_of_key(&key).into_iter().enumerate() {
        needles.insert(format!("the signing key (form {i})"), f);
    }
    for flow in [&sqs, &redis] {
        needles.insert(
            format!("the payload canary ({})", flow.w.instance),
            flow.canary.clone(),
        );
        for (i, f) in forms_of_key(flow.payload.as_bytes())
            .into_iter()
            .enumerate()
        {
            needles.insert(format!("the payload ({}, form {i})", flow.w.instance), f);
        }
        let delivered = flow.hook.delivered();
        assert!(
            delivered.len() >= 11,
            "0,1,2 + 0,1,3 + 99 + 0,1,2 + 99: {}",
            delivered.len()
        );
        for call in &delivered {
            for (i, s) in check_signed(call, &key).into_iter().enumerate() {
                needles.insert(
                    format!(
                        "a callback signature ({} {} #{i})",
                        call.body["id"], call.body["status"]
                    ),
                    s,
                );
            }
        }
    }
    // Words that only appear in credentials-bearing headers.
    let words = [
        "authorization:",
        "authorization=",
        "\"authorization\"",
        "authorization\":",
        "bearer ",
        "x-amz-security-token",
        "aws4-hmac-sha256 credential",
        "signature=",
        "webhook-signature",
        "whsec_",
    ];

    for (what, flow) in [("sqs", &sqs), ("redis", &redis)] {
        let w = &flow.w;
        let mut outputs = vec![
            ("logs".to_string(), w.logs()),
            ("/metrics".to_string(), w.get("/metrics").1),
        ];
        for id in &flow.ids {
            outputs.push((format!("/jobs/{id}"), w.get(&format!("/jobs/{id}")).1));
        }
        let logs = &outputs[0].1;
        // Trace really was on: debug lines are there (tiny_http's, and the
        // worker's own where it has some on this path).
        assert!(
            logs.contains(" DEBUG "),
            "{what}: RUST_LOG=trace printed no debug line\n{logs}"
        );
        // ...and the HTTP/TLS stacks stayed at info.
        for l in logs.lines() {
            let mut it = l.split_whitespace();
            let (_, level, target) = (it.next(), it.next().unwrap_or(""), it.next().unwrap_or(""));
            if level == "DEBUG" || level == "TRACE" {
                assert!(
                    !["ureq", "rustls"].iter().any(|c| target.starts_with(c)),
                    "{what}: HTTP/TLS stack logged at {level}: {l}"
                );
            }
        }
        for (name, text) in &outputs {
            for (secret_name, needle) in &needles {
                if needle.len() < 8 {
                    continue;
                }
                assert!(
                    !text.contains(needle.as_str()),
                    "{what}: {secret_name} appears in {name}"
                );
            }
            let lower = text.to_ascii_lowercase();
            for word in words {
                assert!(
                    !lower.contains(word),
                    "{what}: {word:?} appears in {name}:\n{}",
                    text.lines()
                        .filter(|l| l.to_ascii_lowercase().contains(word))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        }
        eprintln!(
            "[secrets] {what}: {} log lines, {} bytes of /metrics checked against {} secrets",
            outputs[0].1.lines().count(),
            outputs[1].1.len(),
            needles.len()
        );
    }
}
