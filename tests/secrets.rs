//! The secret-grep test: full flows with every secret the worker holds (the
//! API server token, static AWS credentials, a Standard Webhooks signing
//! secret) and RUST_LOG at trace; nothing secret may appear in the worker's
//! output, /metrics or /jobs/{id}. Also checks the callbacks' Standard Webhooks
//! headers and verifies their signatures independently (ring + base64).

mod support;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use ring::rand::SecureRandom as _;
use ring::{digest, hmac};
use serde_json::{Value, json};
use support::{Bed, Call, WebhookReceiver, bed, unique, wait_for};

const SEED_002: &str = include_str!("../example/seed-002.json");

// ------------------------------------------------------------ worker launcher
// (as in tests/worker_e2e.rs; each test binary is compiled on its own)

#[derive(Clone, Copy, Debug, PartialEq)]
enum Q {
    Redis,
    Sqs,
}

/// A worker process; killed on drop. stdout and stderr go to separate files in
/// the bed's dir, so that each can be checked line by line.
struct Worker {
    child: Child,
    out: PathBuf,
    err: PathBuf,
    http_port: u16,
    ns: String,
    instance: String,
    q: Q,
    redis_prefix: String,
    sqs_url: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Worker {
    fn start(q: Q, extra: &[(&str, &str)]) -> Worker {
        let b = bed();
        let ns = b.new_namespace("sec");
        let instance = unique("w");
        let redis_prefix = format!("{instance}-");
        let sqs_url = if q == Q::Sqs {
            b.sqs_create_queue(&instance, false)
        } else {
            String::new()
        };
        Self::spawn(b, q, ns, instance, redis_prefix, sqs_url, extra)
    }

    fn spawn(
        b: &Bed,
        q: Q,
        ns: String,
        instance: String,
        redis_prefix: String,
        sqs_url: String,
        extra: &[(&str, &str)],
    ) -> Worker {
        let run = unique("run");
        let out = b.dir.join(format!("worker-{instance}-{run}.out.log"));
        let err = b.dir.join(format!("worker-{instance}-{run}.err.log"));
        let http_port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_k8s-job-worker"));
        cmd.env_clear()
            .env("RUST_LOG", "info,k8s_job_worker=debug")
            .env("KUBE_API_URL", &b.api_url)
            .env("KUBE_TOKEN_FILE", &b.admin_token_file)
            .env("KUBE_CA_FILE", &b.ca_file)
            .env("POD_NAME", format!("{instance}-pod"))
            .env("POD_NAMESPACE", &ns)
            .env("LEADER_ELECTION_LOCK_NAME", format!("{instance}-lock"))
            .env("WORKER_INSTANCE", &instance)
            .env("ALLOWED_NAMESPACES", &ns)
            .env("ALLOWED_ENV_REFS", "configmap/busybox-default")
            .env("ALLOWED_PVCS", "ps-pvc")
            .env("HTTP_SERVER_PORT", http_port.to_string())
            .env("POLLING_INTERVAL", "1")
            .env("CALLBACK_BACKOFF_MAX", "3");
        match q {
            Q::Redis => {
                cmd.env("QUEUE_TYPE", "redis")
                    .env("REDIS_ENDPOINT", format!("127.0.0.1:{}", b.redis_port))
                    .env("REDIS_DB", "0")
                    .env("REDIS_JOB_KEY_PREFIX", &redis_prefix);
            }
            Q::Sqs => {
                cmd.env("QUEUE_TYPE", "sqs")
                    .env("AWS_SQS_URL", &sqs_url)
                    .env("AWS_SQS_REGION", &b.aws_region)
                    .env("AWS_ACCESS_KEY_ID", &b.aws_access_key_id)
                    .env("AWS_SECRET_ACCESS_KEY", &b.aws_secret_access_key);
            }
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::from(
                std::fs::File::create(&out).expect("stdout log"),
            ))
            .stderr(Stdio::from(
                std::fs::File::create(&err).expect("stderr log"),
            ))
            .spawn()
            .expect("spawn worker");
        Worker {
            child,
            out,
            err,
            http_port,
            ns,
            instance,
            q,
            redis_prefix,
            sqs_url,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn logs(&self) -> String {
        format!(
            "-- stdout --\n{}-- stderr --\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    /// GET on the worker's HTTP port: (status, body); status 0 when unreachable.
    fn get(&self, path: &str) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(10)))
            .build()
            .into();
        match agent
            .get(&format!("http://127.0.0.1:{}{path}", self.http_port))
            .call()
        {
            Ok(mut r) => (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        }
    }

    fn send(&self, body: &str) {
        let b = bed();
        match self.q {
            Q::Redis => {
                b.redis_cmd(&["LPUSH", &format!("{}queue", self.redis_prefix), body]);
            }
            Q::Sqs => {
                b.aws_call(
                    "sqs",
                    "send_message",
                    &json!({"QueueUrl": self.sqs_url, "MessageBody": body}),
                )
                .unwrap_or_else(|e| panic!("send_message: {e}"));
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- worker {} ----\n{}", self.instance, self.logs());
        }
    }
}

/// A message with a test-specific id, namespace and webhook.
fn message(w: &Worker, hook: &WebhookReceiver, tweak: impl FnOnce(&mut Value)) -> (String, String) {
    let mut m: Value = serde_json::from_str(SEED_002).expect("seed example parses");
    let id = unique("msg");
    m["id"] = json!(id);
    m["job"]["namespace"] = json!(w.ns);
    m["webhook"]["url"] = json!(format!("{}/hook/{id}", hook.url()));
    m["job"]["ttlSecondsAfterFinished"] = json!(600);
    tweak(&mut m);
    (id, m.to_string())
}

fn calls_for(hook: &WebhookReceiver, id: &str) -> Vec<Call> {
    hook.delivered()
        .into_iter()
        .filter(|c| c.body["id"] == json!(id))
        .collect()
}

fn statuses(calls: &[Call]) -> Vec<u64> {
    calls
        .iter()
        .filter_map(|c| c.body["status"].as_u64())
        .collect()
}

fn wait_terminal(w: &Worker, hook: &WebhookReceiver, id: &str, timeout: Duration) -> Vec<Call> {
    let ok = wait_for(timeout, || {
        statuses(&calls_for(hook, id))
            .iter()
            .any(|s| [2, 3, 99].contains(s))
    });
    let calls = calls_for(hook, id);
    assert!(
        ok,
        "no terminal callback for {id} within {timeout:?}; got {:?}\n{}",
        statuses(&calls),
        w.logs()
    );
    calls
}

/// PV + PVC `ps-pvc` for the seed's volume (bound by the PV controller).
fn make_pvc(ns: &str) {
    let b = bed();
    let pv = unique("pv");
    let (c, v) = b.kube_post(
        "/api/v1/persistentvolumes",
        &json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": "/tmp/pv"}, "claimRef": {"namespace": ns, "name": "ps-pvc"},
                "persistentVolumeReclaimPolicy": "Retain"}}),
    );
    assert_eq!(c, 201, "{v}");
    let (c, v) = b.kube_post(
        &format!("/api/v1/namespaces/{ns}/persistentvolumeclaims"),
        &json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "ps-pvc"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                "volumeName": pv, "storageClassName": ""}}),
    );
    assert_eq!(c, 201, "{v}");
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
}

/// Starts a worker and runs one completing, one failing and one invalid message
/// through it, to their terminal callbacks.
fn run_flow(q: Q, rust_log: &str, secret: &str) -> Flow {
    let hook = WebhookReceiver::start();
    let w = Worker::start(
        q,
        &[("RUST_LOG", rust_log), ("WEBHOOK_SIGNING_SECRET", secret)],
    );
    make_pvc(&w.ns);
    let (ok_id, ok) = message(&w, &hook, |_| {});
    let (fail_id, fail) = message(&w, &hook, |m| {
        m["job"]["fargate"] = json!({"key": "testbed.k8s-job-worker.io/outcome", "value": "fail"});
    });
    let (bad_id, bad) = message(&w, &hook, |m| m["job"]["backoffLimit"] = json!("zero"));
    for b in [&ok, &fail, &bad] {
        w.send(b);
    }
    assert_eq!(
        statuses(&wait_terminal(&w, &hook, &ok_id, Duration::from_secs(90))),
        vec![0, 1, 2]
    );
    assert_eq!(
        statuses(&wait_terminal(&w, &hook, &fail_id, Duration::from_secs(90))),
        vec![0, 1, 3]
    );
    assert_eq!(
        statuses(&wait_terminal(&w, &hook, &bad_id, Duration::from_secs(60))),
        vec![99]
    );
    Flow {
        w,
        hook,
        ids: vec![ok_id, fail_id, bad_id],
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
        let delivered = flow.hook.delivered();
        assert!(
            delivered.len() >= 7,
            "0,1,2 + 0,1,3 + 99: {}",
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
