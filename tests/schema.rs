//! The published JSON Schemas (schema/message.schema.json, schema/callback.schema.json)
//! checked with a real validator: Python `jsonschema`, pinned, in a venv that
//! tests/schema/venv.sh makes once (pip from PyPI) and tests/schema/validate.py drives.
//!
//! - every example and accepted golden input is valid, the refused ones are not;
//! - `k8s-job-worker schema [message|callback]` prints exactly the files;
//! - the schema and the worker's own validation (`message::parse` with the default
//!   limits, then the default numeric policy limits) agree on a table of invalid
//!   messages and on valid variants, and the schema's documented gaps are exactly
//!   where they disagree;
//! - callback bodies the worker builds (tracker state machine, sent by the real
//!   callback thread to a receiver on 127.0.0.1) are valid against callback.schema.json.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::unbounded;
use k8s_job_worker::callbacks::{self, Callback, CallbackMsg, Hooks, Outcome};
use k8s_job_worker::config::default_render;
use k8s_job_worker::contract::{self, Status};
use k8s_job_worker::kube::watch::Event;
use k8s_job_worker::message::{self, Limits};
use k8s_job_worker::policy::Policy;
use k8s_job_worker::render;
use k8s_job_worker::tracker::{Board, LiveJobs, Tracker, TrackerMsg, callback_msg};
use k8s_job_worker::webhook_guard::WebhookUrl;
use serde_json::{Value, json};

// ---- the validator ----

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python (created on first use; about 15 s).
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("tests/schema/venv.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/schema/venv.sh");
        assert!(out.status.success(), "tests/schema/venv.sh failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().unwrap_or("").trim();
        assert!(!line.is_empty(), "venv.sh printed no python path");
        PathBuf::from(line)
    })
}

fn schema_text(name: &str) -> String {
    std::fs::read_to_string(root().join(format!("schema/{name}.schema.json")))
        .unwrap_or_else(|e| panic!("read schema/{name}.schema.json: {e}"))
}

fn schema(name: &str) -> Value {
    serde_json::from_str(&schema_text(name)).expect("schema file is JSON")
}

/// One jsonschema error: the field it is about (worker style: `job.env[0].name`).
#[derive(Clone)]
struct SchemaError {
    path: String,
    message: String,
}

/// The errors as `field: message` lines, for failure messages.
fn show(errs: &[SchemaError]) -> String {
    let lines: Vec<String> = errs
        .iter()
        .map(|e| format!("  {}: {}", e.path, e.message))
        .collect();
    lines.join("\n")
}

/// Validates every instance against `schema/<name>.schema.json`; errors per instance.
fn validate(name: &str, instances: &[Value]) -> Vec<Vec<SchemaError>> {
    let request = json!({ "schema": schema(name), "instances": instances });
    let mut child = Command::new(python())
        .arg(root().join("tests/schema/validate.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start validate.py");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(request.to_string().as_bytes())
        .expect("write request");
    drop(stdin);
    let out = child.wait_with_output().expect("validate.py ran");
    assert!(
        out.status.success(),
        "validate.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Vec<Vec<Value>> = serde_json::from_slice(&out.stdout).expect("validate.py output");
    assert_eq!(result.len(), instances.len());
    result
        .into_iter()
        .map(|errs| {
            errs.into_iter()
                .map(|e| SchemaError {
                    path: e["path"].as_str().unwrap_or("").to_string(),
                    message: e["message"].as_str().unwrap_or("").to_string(),
                })
                .collect()
        })
        .collect()
}

// ---- the worker's verdict ----

/// The default policy with its allow-lists opened: the schema encodes the
/// default numeric limits (MAX_ENV_ENTRIES, MAX_JOB_GPUS, MAX_TTL_...), not the
/// deployment-specific allow-lists (ALLOWED_SERVICE_ACCOUNTS, _ENV_REFS, _PVCS).
fn numeric_policy() -> Policy {
    Policy {
        allowed_service_accounts: vec!["*".into()],
        allowed_env_refs: vec!["configmap/*".into(), "secret/*".into()],
        allowed_pvcs: vec!["*".into()],
        allowed_priority_classes: vec!["*".into()],
        allowed_image_pull_secrets: vec!["*".into()],
        ..Policy::default()
    }
}

/// Ok, or the refusal: (code, the fields named, the text).
fn worker(v: &Value) -> Result<(), (String, Vec<String>, String)> {
    let body = v.to_string();
    match message::parse_request(body.as_bytes(), &Limits::default()) {
        Err(r) => Err((
            r.code.to_string(),
            r.problems.iter().map(|p| p.field.clone()).collect(),
            r.to_string(),
        )),
        Ok(message::Request::Cancel { .. }) => Ok(()),
        Ok(message::Request::Job(m)) => numeric_policy()
            .check(&m)
            .map_err(|denied| ("POLICY_DENIED".to_string(), Vec::new(), denied.to_string())),
    }
}

/// Does the worker's refusal name `field`? (A problem's field, or for a policy
/// denial, the field in its text.)
fn names_field(refusal: &(String, Vec<String>, String), field: &str) -> bool {
    let (code, fields, text) = refusal;
    if code == "POLICY_DENIED" {
        text.contains(&format!(" {field} ")) || text.contains(&format!(" {field}["))
    } else {
        fields.iter().any(|f| f == field)
    }
}

/// Is `prefix` the field `field` or a parent of it (`job` of `job.env[0].name`)?
fn is_parent_or_same(prefix: &str, field: &str) -> bool {
    field == prefix
        || (prefix.is_empty() && !field.contains(['.', '[']))
        || field
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('.') || rest.starts_with('['))
}

// ---- building messages ----

fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{} is JSON: {e}", path.display()))
}

/// The seed example: every field of today's contract, valid.
fn base() -> Value {
    read_json(&root().join("example/seed-002.json"))
}

/// The base with `key` set in the object at JSON pointer `parent`.
fn with(parent: &str, key: &str, new: Value) -> Value {
    let mut v = base();
    let Some(Value::Object(obj)) = v.pointer_mut(parent) else {
        panic!("no object at {parent}");
    };
    obj.insert(key.to_string(), new);
    v
}

/// The base without `key` in the object at `parent`.
fn without(parent: &str, key: &str) -> Value {
    let mut v = base();
    if let Some(Value::Object(obj)) = v.pointer_mut(parent) {
        obj.remove(key);
    }
    v
}

/// Applies several edits to the base: (parent, key, Some(value) to set / None to remove).
fn edit(edits: &[(&str, &str, Option<Value>)]) -> Value {
    let mut v = base();
    for (parent, key, new) in edits {
        let Some(Value::Object(obj)) = v.pointer_mut(parent) else {
            panic!("no object at {parent}");
        };
        match new {
            Some(n) => obj.insert(key.to_string(), n.clone()),
            None => obj.remove(*key),
        };
    }
    v
}

fn env_entries(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({ "name": format!("V{i}"), "value": "x" }))
            .collect(),
    )
}

/// Invalid messages: (what, message, the field the worker names). Every row is
/// refused by the worker and must be refused by the schema.
fn invalid_table() -> Vec<(&'static str, Value, &'static str)> {
    let long = |n: usize| "a".repeat(n);
    vec![
        ("id missing", without("", "id"), "id"),
        (
            "startDelaySeconds negative",
            with("/job", "startDelaySeconds", json!(-1)),
            "job.startDelaySeconds",
        ),
        (
            "startDelaySeconds over 7 days",
            with("/job", "startDelaySeconds", json!(604_801)),
            "job.startDelaySeconds",
        ),
        (
            "startDelaySeconds a string",
            with("/job", "startDelaySeconds", json!("8")),
            "job.startDelaySeconds",
        ),
        (
            "startAfter without an offset",
            with("/job", "startAfter", json!("2026-12-01T18:00:00")),
            "job.startAfter",
        ),
        (
            "startAfter not a time",
            with("/job", "startAfter", json!("tomorrow")),
            "job.startAfter",
        ),
        (
            "startAfter and startDelaySeconds",
            edit(&[
                ("/job", "startAfter", Some(json!("2026-12-01T18:00:00Z"))),
                ("/job", "startDelaySeconds", Some(json!(8))),
            ]),
            "job.startAfter",
        ),
        ("id empty", with("", "id", json!("")), "id"),
        ("id a number", with("", "id", json!(42)), "id"),
        ("id null", with("", "id", Value::Null), "id"),
        ("id 1025 bytes", with("", "id", json!(long(1025))), "id"),
        ("body an array", json!([base()]), ""),
        ("body a string", json!("job"), ""),
        ("job missing", without("", "job"), "job"),
        ("job a string", with("", "job", json!("job")), "job"),
        ("job null", with("", "job", Value::Null), "job"),
        (
            "action unknown",
            with("", "action", json!("stop")),
            "action",
        ),
        (
            "action upper case",
            with("", "action", json!("CANCEL")),
            "action",
        ),
        ("action a number", with("", "action", json!(1)), "action"),
        ("a cancel without an id", json!({"action": "cancel"}), "id"),
        (
            "a cancel with an empty id",
            json!({"action": "cancel", "id": ""}),
            "id",
        ),
        (
            "service with spaces",
            with("", "service", json!("a b")),
            "service",
        ),
        (
            "service 64 chars",
            with("", "service", json!(long(64))),
            "service",
        ),
        ("service a number", with("", "service", json!(5)), "service"),
        (
            "service trailing newline",
            with("", "service", json!("svc\n")),
            "service",
        ),
        (
            "prefixName missing",
            without("/job", "prefixName"),
            "job.prefixName",
        ),
        (
            "prefixName empty",
            with("/job", "prefixName", json!("")),
            "job.prefixName",
        ),
        (
            "prefixName uppercase",
            with("/job", "prefixName", json!("BB")),
            "job.prefixName",
        ),
        (
            "prefixName 53 chars",
            with("/job", "prefixName", json!(long(53))),
            "job.prefixName",
        ),
        (
            "prefixName trailing dash",
            with("/job", "prefixName", json!("bb-")),
            "job.prefixName",
        ),
        (
            "prefixName underscore",
            with("/job", "prefixName", json!("b_b")),
            "job.prefixName",
        ),
        (
            "prefixName trailing newline",
            with("/job", "prefixName", json!("bb\n")),
            "job.prefixName",
        ),
        (
            "namespace uppercase",
            with("/job", "namespace", json!("Default")),
            "job.namespace",
        ),
        (
            "namespace with a dot",
            with("/job", "namespace", json!("a.b")),
            "job.namespace",
        ),
        (
            "namespace 64 chars",
            with("/job", "namespace", json!(long(64))),
            "job.namespace",
        ),
        (
            "namespace an array",
            with("/job", "namespace", json!(["default"])),
            "job.namespace",
        ),
        ("image missing", without("/job", "image"), "job.image"),
        ("image empty", with("/job", "image", json!("")), "job.image"),
        (
            "image with a space",
            with("/job", "image", json!("busy box")),
            "job.image",
        ),
        (
            "image trailing newline",
            with("/job", "image", json!("busybox\n")),
            "job.image",
        ),
        (
            "image ideographic space",
            with("/job", "image", json!("busy\u{3000}box")),
            "job.image",
        ),
        (
            "image NUL",
            with("/job", "image", json!("busy\u{0}box")),
            "job.image",
        ),
        (
            "image 4097 bytes",
            with("/job", "image", json!(long(4097))),
            "job.image",
        ),
        (
            "command a string",
            with("/job", "command", json!("echo hi")),
            "job.command",
        ),
        (
            "command item a number",
            with("/job", "command", json!(["a", 1])),
            "job.command[1]",
        ),
        (
            "args an object",
            with("/job", "args", json!({ "a": 1 })),
            "job.args",
        ),
        (
            "args item null",
            with("/job", "args", json!([null])),
            "job.args[0]",
        ),
        (
            "serviceAccount leading dash",
            with("/job", "serviceAccount", json!("-sa")),
            "job.serviceAccount",
        ),
        (
            "serviceAccount empty label",
            with("/job", "serviceAccount", json!("a..b")),
            "job.serviceAccount",
        ),
        (
            "serviceAccount 254 chars",
            with("/job", "serviceAccount", json!(long(254))),
            "job.serviceAccount",
        ),
        (
            "ttl 30",
            with("/job", "ttlSecondsAfterFinished", json!(30)),
            "job.ttlSecondsAfterFinished",
        ),
        (
            "ttl a string",
            with("/job", "ttlSecondsAfterFinished", json!("60")),
            "job.ttlSecondsAfterFinished",
        ),
        (
            "ttl over MAX_TTL default",
            with("/job", "ttlSecondsAfterFinished", json!(604_801)),
            "job.ttlSecondsAfterFinished",
        ),
        (
            "ttl over i32",
            with("/job", "ttlSecondsAfterFinished", json!(2_147_483_648_i64)),
            "job.ttlSecondsAfterFinished",
        ),
        (
            "backoffLimit a string",
            with("/job", "backoffLimit", json!("1")),
            "job.backoffLimit",
        ),
        (
            "backoffLimit 1.5",
            with("/job", "backoffLimit", json!(1.5)),
            "job.backoffLimit",
        ),
        (
            "backoffLimit -1",
            with("/job", "backoffLimit", json!(-1)),
            "job.backoffLimit",
        ),
        (
            "backoffLimit 101",
            with("/job", "backoffLimit", json!(101)),
            "job.backoffLimit",
        ),
        (
            "deadline 59",
            with("/job", "activeDeadlineSeconds", json!(59)),
            "job.activeDeadlineSeconds",
        ),
        (
            "deadline 86401",
            with("/job", "activeDeadlineSeconds", json!(86_401)),
            "job.activeDeadlineSeconds",
        ),
        (
            "deadline u64::MAX",
            with("/job", "activeDeadlineSeconds", json!(u64::MAX)),
            "job.activeDeadlineSeconds",
        ),
        (
            "gpuEnable a string",
            with("/job", "gpuEnable", json!("true")),
            "job.gpuEnable",
        ),
        (
            "gpuNumber 0",
            with("/job", "gpuNumber", json!(0)),
            "job.gpuNumber",
        ),
        (
            "gpuNumber 65",
            with("/job", "gpuNumber", json!(65)),
            "job.gpuNumber",
        ),
        (
            "gpuNumber over MAX_JOB_GPUS default",
            edit(&[
                ("/job", "gpuEnable", Some(json!(true))),
                ("/job", "gpuNumber", Some(json!(9))),
            ]),
            "job.gpuNumber",
        ),
        ("env a string", with("/job", "env", json!("A=1")), "job.env"),
        (
            "env item a string",
            with("/job", "env", json!(["A=1"])),
            "job.env[0]",
        ),
        (
            "env name 1A",
            with("/job", "env", json!([{ "name": "1A", "value": "x" }])),
            "job.env[0].name",
        ),
        (
            "env name A=",
            with("/job", "env", json!([{ "name": "A=", "value": "x" }])),
            "job.env[0].name",
        ),
        (
            "env name missing",
            with("/job", "env", json!([{ "value": "x" }])),
            "job.env[0].name",
        ),
        (
            "env name empty",
            with("/job", "env", json!([{ "name": "", "value": "x" }])),
            "job.env[0].name",
        ),
        (
            "env value a number",
            with("/job", "env", json!([{ "name": "A", "value": 1 }])),
            "job.env[0].value",
        ),
        (
            "env over MAX_ENV_ENTRIES default",
            with("/job", "env", env_entries(101)),
            "job.env",
        ),
        (
            "envRef type volume",
            with(
                "/job",
                "envRef",
                json!([{ "name": "cfg", "type": "volume" }]),
            ),
            "job.envRef[0].type",
        ),
        (
            "envRef type missing",
            with("/job", "envRef", json!([{ "name": "cfg" }])),
            "job.envRef[0].type",
        ),
        (
            "envRef name uppercase",
            with(
                "/job",
                "envRef",
                json!([{ "name": "Cfg", "type": "secret" }]),
            ),
            "job.envRef[0].name",
        ),
        (
            "envRef an object",
            with("/job", "envRef", json!({ "name": "cfg", "type": "secret" })),
            "job.envRef",
        ),
        (
            "envFrom name uppercase",
            edit(&[
                ("/job", "envRef", None),
                (
                    "/job",
                    "envFrom",
                    Some(json!([{ "name": "Cfg", "type": "secret" }])),
                ),
            ]),
            "job.envFrom[0].name",
        ),
        (
            "envRef and envFrom",
            with("/job", "envFrom", json!([])),
            "job.envFrom",
        ),
        (
            "resources a string",
            with("/job", "resources", json!("big")),
            "job.resources",
        ),
        (
            "cpu 1.2.3",
            with("/job/resources/limits", "cpu", json!("1.2.3")),
            "job.resources.limits.cpu",
        ),
        (
            "memory abc",
            with("/job/resources/requests", "memory", json!("abc")),
            "job.resources.requests.memory",
        ),
        (
            "memory -1Gi",
            with("/job/resources/limits", "memory", json!("-1Gi")),
            "job.resources.limits.memory",
        ),
        (
            "cpu a boolean",
            with("/job/resources/limits", "cpu", json!(true)),
            "job.resources.limits.cpu",
        ),
        (
            "cpu -1 as a number",
            with("/job/resources/limits", "cpu", json!(-1)),
            "job.resources.limits.cpu",
        ),
        (
            "cpu 1e",
            with("/job/resources/limits", "cpu", json!("1e")),
            "job.resources.limits.cpu",
        ),
        (
            "cpu 1Ki trailing newline",
            with("/job/resources/limits", "cpu", json!("1Ki\n")),
            "job.resources.limits.cpu",
        ),
        (
            "memory 1KB",
            with("/job/resources/limits", "memory", json!("1KB")),
            "job.resources.limits.memory",
        ),
        (
            "nodeSelector key with a space",
            with("/job/nodeSelector", "matchKey", json!("bad key")),
            "job.nodeSelector.matchKey",
        ),
        (
            "nodeSelector value leading dash",
            with("/job/nodeSelector", "matchValue", json!("-x")),
            "job.nodeSelector.matchValue",
        ),
        (
            "nodeSelector key missing",
            without("/job/nodeSelector", "matchKey"),
            "job.nodeSelector.matchKey",
        ),
        (
            "nodeSelector value null",
            with("/job/nodeSelector", "matchValue", Value::Null),
            "job.nodeSelector.matchValue",
        ),
        (
            "nodeSelector a list",
            with("/job", "nodeSelector", json!(["a=b"])),
            "job.nodeSelector",
        ),
        (
            "toleration key two slashes",
            with("/job/toleration", "key", json!("a/b/c")),
            "job.toleration.key",
        ),
        (
            "toleration key uppercase prefix",
            with("/job/toleration", "key", json!("Bad.Prefix/x")),
            "job.toleration.key",
        ),
        (
            "toleration key name 64",
            with("/job/toleration", "key", json!(long(64))),
            "job.toleration.key",
        ),
        (
            "toleration key a number",
            with("/job/toleration", "key", json!(7)),
            "job.toleration.key",
        ),
        (
            "fargate key app",
            with("/job", "fargate", json!({ "key": "app", "value": "x" })),
            "job.fargate.key",
        ),
        (
            "fargate key instance",
            with(
                "/job",
                "fargate",
                json!({ "key": "k8s-job-worker.io/instance", "value": "x" }),
            ),
            "job.fargate.key",
        ),
        (
            "mountPath ..",
            with("/job/volume", "mountPath", json!("/data/../etc")),
            "job.volume.mountPath",
        ),
        (
            "mountPath trailing ..",
            with("/job/volume", "mountPath", json!("data/..")),
            "job.volume.mountPath",
        ),
        (
            "mountPath colon",
            with("/job/volume", "mountPath", json!("c:/data")),
            "job.volume.mountPath",
        ),
        (
            "mountPath root",
            with("/job/volume", "mountPath", json!("/")),
            "job.volume.mountPath",
        ),
        (
            "mountPath ./.",
            with("/job/volume", "mountPath", json!("./.")),
            "job.volume.mountPath",
        ),
        (
            "mountPath control char",
            with("/job/volume", "mountPath", json!("/a\u{7}b")),
            "job.volume.mountPath",
        ),
        (
            "pvc uppercase",
            with("/job/volume", "pvc", json!("PVC")),
            "job.volume.pvc",
        ),
        (
            "pvc missing",
            without("/job/volume", "pvc"),
            "job.volume.pvc",
        ),
        (
            "volume: alias with empty pvc",
            edit(&[
                ("/job", "volume", None),
                (
                    "/job",
                    "volume:",
                    Some(json!({ "mountPath": "w", "pvc": "" })),
                ),
            ]),
            "job.volume.pvc",
        ),
        (
            "volume and volume:",
            with("/job", "volume:", json!({ "mountPath": "w", "pvc": "p" })),
            "job.volume",
        ),
        (
            "webhook a string",
            with("", "webhook", json!("http://x")),
            "webhook",
        ),
        (
            "webhook url ftp",
            with("/webhook", "url", json!("ftp://x")),
            "webhook.url",
        ),
        (
            "webhook url no scheme",
            with("/webhook", "url", json!("webhook.com")),
            "webhook.url",
        ),
        (
            "webhook url empty host",
            with("/webhook", "url", json!("http:///path")),
            "webhook.url",
        ),
        (
            "webhook url userinfo, no host",
            with("/webhook", "url", json!("http://user@/x")),
            "webhook.url",
        ),
        (
            "webhook url port only",
            with("/webhook", "url", json!("https://:80")),
            "webhook.url",
        ),
        (
            "webhook url userinfo",
            with("/webhook", "url", json!("http://user:pw@host/x")),
            "webhook.url",
        ),
        (
            "webhook url two @",
            with("/webhook", "url", json!("http://a@b@c")),
            "webhook.url",
        ),
        (
            "webhook url userinfo, port only",
            with("/webhook", "url", json!("http://a@:80")),
            "webhook.url",
        ),
        (
            "webhook url empty brackets",
            with("/webhook", "url", json!("http://[]/")),
            "webhook.url",
        ),
        (
            "webhook url with a space",
            with("/webhook", "url", json!("http://a b")),
            "webhook.url",
        ),
        (
            "webhook url trailing newline",
            with("/webhook", "url", json!("http://a/\n")),
            "webhook.url",
        ),
        (
            "webhook url 2049 bytes",
            with("/webhook", "url", json!(format!("http://h/{}", long(2040)))),
            "webhook.url",
        ),
        (
            "webhook url a number",
            with("/webhook", "url", json!(5)),
            "webhook.url",
        ),
        // Payload (issue 9 §2).
        (
            "env naming JOB_WORKER_PAYLOAD",
            with(
                "/job",
                "env",
                json!([{"name": "JOB_WORKER_PAYLOAD", "value": "x"}]),
            ),
            "job.env[0].name",
        ),
        (
            "env naming JOB_WORKER_MESSAGE_ID",
            with("/job", "env", json!([{"name": "JOB_WORKER_MESSAGE_ID"}])),
            "job.env[0].name",
        ),
        // Kueue (issue 9 §1).
        (
            "queueName with capitals",
            with("/job", "queueName", json!("Team-A")),
            "job.queueName",
        ),
        (
            "queueName a number",
            with("/job", "queueName", json!(7)),
            "job.queueName",
        ),
        (
            "queueName 64 chars",
            with("/job", "queueName", json!(long(64))),
            "job.queueName",
        ),
        (
            "queued without resources",
            edit(&[
                ("/job", "queueName", Some(json!("team-a"))),
                ("/job", "resources", None),
            ]),
            "job.resources",
        ),
        // Job spec fields (issue 9 §4).
        (
            "priorityClass with capitals",
            with("/job", "priorityClass", json!("High")),
            "job.priorityClass",
        ),
        (
            "completions 0",
            with("/job", "completions", json!(0)),
            "job.completions",
        ),
        (
            "completions a string",
            with("/job", "completions", json!("3")),
            "job.completions",
        ),
        (
            "parallelism 0",
            with("/job", "parallelism", json!(0)),
            "job.parallelism",
        ),
        (
            "parallelism over MAX_JOB_PARALLELISM",
            with("/job", "parallelism", json!(33)),
            "job.parallelism",
        ),
        (
            "completionMode lower case",
            with("/job", "completionMode", json!("indexed")),
            "job.completionMode",
        ),
        (
            "Indexed without completions",
            with("/job", "completionMode", json!("Indexed")),
            "job.completions",
        ),
        (
            "imagePullSecrets a string",
            with("/job", "imagePullSecrets", json!("regcred")),
            "job.imagePullSecrets",
        ),
        (
            "imagePullSecret bad name",
            with("/job", "imagePullSecrets", json!(["Reg_Cred"])),
            "job.imagePullSecrets[0]",
        ),
        (
            "podFailurePolicy a list",
            with("/job", "podFailurePolicy", json!([])),
            "job.podFailurePolicy",
        ),
        (
            "podFailurePolicy no rules",
            with("/job", "podFailurePolicy", json!({"rules": []})),
            "job.podFailurePolicy.rules",
        ),
        (
            "rule action unknown",
            with(
                "/job",
                "podFailurePolicy",
                json!({"rules": [{"action": "Retry", "onExitCodes": {"operator": "In", "values": [1]}}]}),
            ),
            "job.podFailurePolicy.rules[0].action",
        ),
        (
            "rule without matcher",
            with(
                "/job",
                "podFailurePolicy",
                json!({"rules": [{"action": "Ignore"}]}),
            ),
            "job.podFailurePolicy.rules[0]",
        ),
        (
            "exit codes operator unknown",
            with(
                "/job",
                "podFailurePolicy",
                json!({"rules": [{"action": "FailJob", "onExitCodes": {"operator": "Equals", "values": [1]}}]}),
            ),
            "job.podFailurePolicy.rules[0].onExitCodes.operator",
        ),
        (
            "exit code 0 with In",
            with(
                "/job",
                "podFailurePolicy",
                json!({"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [0]}}]}),
            ),
            "job.podFailurePolicy.rules[0].onExitCodes.values[0]",
        ),
        (
            "exit codes empty",
            with(
                "/job",
                "podFailurePolicy",
                json!({"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": []}}]}),
            ),
            "job.podFailurePolicy.rules[0].onExitCodes.values",
        ),
        (
            "other container",
            with(
                "/job",
                "podFailurePolicy",
                json!({"rules": [{"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [1]}}]}),
            ),
            "job.podFailurePolicy.rules[0].onExitCodes.containerName",
        ),
        (
            "pod condition status Yes",
            with(
                "/job",
                "podFailurePolicy",
                json!({"rules": [{"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "Yes"}]}]}),
            ),
            "job.podFailurePolicy.rules[0].onPodConditions[0].status",
        ),
    ]
}

/// An hour from now, as local time at +02:00 (RFC 3339 with an offset).
fn in_an_hour_with_an_offset() -> String {
    let t = SystemTime::now() + Duration::from_secs(3600 + 7200);
    let utc = k8s_job_worker::clock::format_secs(t);
    format!("{}+02:00", utc.trim_end_matches('Z'))
}

/// Valid variants: accepted by the worker and by the schema.
fn valid_table() -> Vec<(&'static str, Value)> {
    let long = |n: usize| "a".repeat(n);
    vec![
        ("the seed example", base()),
        ("action null", with("", "action", Value::Null)),
        ("a cancel", json!({"id": "m1", "action": "cancel"})),
        (
            "a JSON object payload",
            with(
                "",
                "payload",
                json!({"frames": [1, 2, 3], "scene": "s.blend"}),
            ),
        ),
        ("a string payload", with("", "payload", json!("just text"))),
        (
            "delayed by 600 s",
            with("/job", "startDelaySeconds", json!(600)),
        ),
        ("no delay", with("/job", "startDelaySeconds", json!(0))),
        (
            "delayed to an hour from now, with an offset",
            with("/job", "startAfter", json!(in_an_hour_with_an_offset())),
        ),
        (
            "startAfter null and startDelaySeconds",
            edit(&[
                ("/job", "startAfter", Some(Value::Null)),
                ("/job", "startDelaySeconds", Some(json!(8))),
            ]),
        ),
        ("a null payload", with("", "payload", Value::Null)),
        (
            "queued with a cpu request",
            edit(&[
                ("/job", "queueName", Some(json!("team-a"))),
                ("/job", "resources", Some(json!({"requests": {"cpu": "1"}}))),
            ]),
        ),
        (
            "every Job spec field",
            edit(&[
                ("/job", "priorityClass", Some(json!("batch-high"))),
                ("/job", "completions", Some(json!(8))),
                ("/job", "parallelism", Some(json!(4))),
                ("/job", "completionMode", Some(json!("Indexed"))),
                (
                    "/job",
                    "imagePullSecrets",
                    Some(json!(["regcred", {"name": "mirror"}])),
                ),
                (
                    "/job",
                    "podFailurePolicy",
                    Some(json!({"rules": [
                        {"action": "FailIndex", "onExitCodes": {"containerName": "job", "operator": "In", "values": [42, 3]}},
                        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                        {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [0]}}
                    ]})),
                ),
            ]),
        ),
        (
            "only id, prefixName and image",
            json!({ "id": "m", "job": { "prefixName": "p", "image": "busybox" } }),
        ),
        (
            "null and empty mean absent",
            json!({ "id": "m", "service": null, "webhook": null, "job": {
                "prefixName": "p", "image": "busybox", "namespace": "", "serviceAccount": "",
                "command": null, "args": null, "env": null, "envRef": null, "envFrom": null,
                "ttlSecondsAfterFinished": null, "backoffLimit": null,
                "activeDeadlineSeconds": null,
                "gpuEnable": null, "gpuNumber": null, "resources": {}, "nodeSelector": {},
                "toleration": null, "fargate": { "key": "", "value": null },
                "volume": { "mountPath": null, "pvc": "" }, "volume:": null } }),
        ),
        (
            "empty service and webhook url",
            edit(&[
                ("", "service", Some(json!(""))),
                ("/webhook", "url", Some(json!(""))),
            ]),
        ),
        ("webhook {}", with("", "webhook", json!({}))),
        (
            "unknown fields at every level",
            edit(&[
                ("", "extra", Some(json!({ "any": [1, 2] }))),
                ("/job", "unknownField", Some(json!(true))),
                ("/job/volume", "readOnly", Some(json!(true))),
                (
                    "/job/resources/limits",
                    "ephemeral-storage",
                    Some(json!("1Gi")),
                ),
                ("/webhook", "secret", Some(json!("s"))),
                (
                    "/job",
                    "env",
                    Some(json!([{ "name": "A", "value": "1", "comment": "c" }])),
                ),
            ]),
        ),
        (
            "envFrom alias, types in any case",
            edit(&[
                ("/job", "envRef", None),
                (
                    "/job",
                    "envFrom",
                    Some(json!([
                        { "name": "a", "type": "ConfigMap" },
                        { "name": "b.c", "type": "SECRET" }
                    ])),
                ),
            ]),
        ),
        (
            "volume: alias, relative and odd mount paths",
            edit(&[
                ("/job", "volume", None),
                (
                    "/job",
                    "volume:",
                    Some(json!({ "mountPath": "a/./b/...", "pvc": "my.pvc" })),
                ),
            ]),
        ),
        (
            "mountPath ...",
            with("/job/volume", "mountPath", json!("...")),
        ),
        (
            "quantities as numbers and every suffix form",
            with(
                "/job",
                "resources",
                json!({
                "limits": { "cpu": 2, "memory": "1E" },
                "requests": { "cpu": ".5", "memory": "+1.5Gi" } }),
            ),
        ),
        (
            "quantities 2e3 and 1.5",
            with(
                "/job",
                "resources",
                json!({ "limits": { "cpu": "2e3", "memory": 1.5 } }),
            ),
        ),
        (
            "quantity 1. and 100n",
            with(
                "/job",
                "resources",
                json!({ "limits": { "cpu": "1.", "memory": "100n" } }),
            ),
        ),
        (
            "prefixName 52 chars",
            with("/job", "prefixName", json!(long(52))),
        ),
        (
            "namespace 63 chars",
            with("/job", "namespace", json!(long(63))),
        ),
        (
            "serviceAccount a subdomain",
            with("/job", "serviceAccount", json!("team.runner-1")),
        ),
        (
            "bounds low",
            edit(&[
                ("/job", "ttlSecondsAfterFinished", Some(json!(31))),
                ("/job", "backoffLimit", Some(json!(0))),
                ("/job", "activeDeadlineSeconds", Some(json!(60))),
                ("/job", "gpuNumber", Some(json!(1))),
            ]),
        ),
        (
            "bounds high",
            edit(&[
                ("/job", "ttlSecondsAfterFinished", Some(json!(604_800))),
                ("/job", "backoffLimit", Some(json!(100))),
                ("/job", "activeDeadlineSeconds", Some(json!(86_400))),
                ("/job", "gpuEnable", Some(json!(true))),
                ("/job", "gpuNumber", Some(json!(8))),
            ]),
        ),
        (
            "gpuNumber 64 without gpuEnable",
            edit(&[
                ("/job", "gpuEnable", Some(json!(false))),
                ("/job", "gpuNumber", Some(json!(64))),
            ]),
        ),
        (
            "100 env entries, value missing or null",
            with("/job", "env", {
                let mut e = env_entries(98);
                if let Value::Array(items) = &mut e {
                    items.push(json!({ "name": "_x.y-z" }));
                    items.push(json!({ "name": "N", "value": null }));
                }
                e
            }),
        ),
        (
            "nodeSelector empty value",
            with("/job/nodeSelector", "matchValue", json!("")),
        ),
        (
            "toleration key with prefix",
            with(
                "/job",
                "toleration",
                json!({ "key": "example.com/a_b.c-d", "value": "v" }),
            ),
        ),
        (
            "fargate",
            with(
                "/job",
                "fargate",
                json!({ "key": "WorkerType", "value": "fargate" }),
            ),
        ),
        (
            "image by digest",
            with(
                "/job",
                "image",
                json!(format!("registry.local/team/app@sha256:{}", "a".repeat(64))),
            ),
        ),
        (
            "webhook url upper-case scheme, port, query",
            with("/webhook", "url", json!("HTTPS://example.com:8443/a?b#c")),
        ),
        (
            "webhook url IPv6",
            with("/webhook", "url", json!("http://[::1]:8080/")),
        ),
        ("id 1024 bytes", with("", "id", json!(long(1024)))),
        (
            "command and args",
            edit(&[
                ("/job", "command", Some(json!(["sh", "-c"]))),
                ("/job", "args", Some(json!(["echo é"]))),
            ]),
        ),
    ]
}

// ---- tests ----

#[test]
fn schemas_are_draft_2020_12_with_id_and_title() {
    for name in ["message", "callback"] {
        let s = schema(name);
        assert_eq!(
            s["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name}"
        );
        assert!(
            s["$id"]
                .as_str()
                .is_some_and(|id| id.ends_with(&format!("/{name}.schema.json"))),
            "{name}: $id"
        );
        assert!(s["title"].is_string() && s["description"].is_string());
        // validate.py checks the schema against the 2020-12 meta-schema first.
        let errs = validate(name, &[json!({})]);
        assert!(
            !errs[0].is_empty(),
            "{name}: {{}} lacks the required fields"
        );
    }
}

#[test]
fn examples_and_golden_inputs_are_valid() {
    let mut valid = Vec::new();
    let mut refused = Vec::new();
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["example", "tests/golden"] {
        for e in std::fs::read_dir(root().join(dir)).expect("read dir") {
            files.push(e.expect("dir entry").path());
        }
    }
    files.sort();
    for path in files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let in_golden = path.parent().is_some_and(|p| p.ends_with("tests/golden"));
        let (is_input, meant_valid) = if in_golden {
            let stem = name.strip_suffix(".input.json");
            let accepted = stem.is_some_and(|s| {
                path.with_file_name(format!("{s}.job.json")).exists()
                    || path.with_file_name(format!("{s}.cancel.json")).exists()
            });
            (stem.is_some(), accepted)
        } else {
            (name.ends_with(".json"), name != "invalid.json")
        };
        if !is_input {
            continue;
        }
        let body = std::fs::read(&path).expect("read");
        let parsed = message::parse_request(&body, &Limits::default());
        assert_eq!(
            parsed.is_ok(),
            meant_valid,
            "{}: the worker disagrees with the file's role",
            path.display()
        );
        let v = read_json(&path);
        if meant_valid {
            valid.push((path, v));
        } else {
            refused.push((path, v));
        }
    }
    assert!(
        valid.len() >= 15,
        "examples and golden inputs: {}",
        valid.len()
    );
    assert_eq!(
        refused.len(),
        4,
        "example/invalid.json, tests/golden/invalid.input.json, delayed-both.input.json and unknown-action.input.json"
    );

    let instances: Vec<Value> = valid.iter().map(|(_, v)| v.clone()).collect();
    for ((path, _), errs) in valid.iter().zip(validate("message", &instances)) {
        assert!(
            errs.is_empty(),
            "{} is not valid against message.schema.json: {}",
            path.display(),
            show(&errs)
        );
    }
    let instances: Vec<Value> = refused.iter().map(|(_, v)| v.clone()).collect();
    for ((path, _), errs) in refused.iter().zip(validate("message", &instances)) {
        assert!(
            !errs.is_empty(),
            "{} is refused by the worker but valid against the schema",
            path.display()
        );
    }
}

#[test]
fn schema_command_prints_the_files() {
    let bin = env!("CARGO_BIN_EXE_k8s-job-worker");
    for (args, file) in [
        (&[][..], "message"),
        (&["message"][..], "message"),
        (&["callback"][..], "callback"),
    ] {
        let out = Command::new(bin)
            .arg("schema")
            .args(args)
            .output()
            .expect("run k8s-job-worker schema");
        assert!(out.status.success(), "schema {args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            schema_text(file),
            "schema {args:?} prints schema/{file}.schema.json"
        );
    }
    let out = Command::new(bin)
        .args(["schema", "job"])
        .output()
        .expect("run k8s-job-worker schema job");
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn schema_and_worker_agree_on_invalid_messages() {
    let table = invalid_table();
    assert!(table.len() >= 30, "{} rows", table.len());
    let instances: Vec<Value> = table.iter().map(|(_, v, _)| v.clone()).collect();
    let results = validate("message", &instances);
    let mut failures = Vec::new();
    for ((what, v, field), errs) in table.iter().zip(results) {
        match worker(v) {
            Ok(()) => failures.push(format!("{what}: the worker accepts it")),
            Err(refusal) if !names_field(&refusal, field) => failures.push(format!(
                "{what}: the worker does not name {field}: {}",
                refusal.2
            )),
            Err(_) => {}
        }
        if errs.is_empty() {
            failures.push(format!("{what}: the schema accepts it"));
        } else if !errs
            .iter()
            // The worker reports the "volume:" alias under job.volume.
            .any(|e| is_parent_or_same(&e.path.replace("volume:", "volume"), field))
        {
            // Built from a valid base, the schema must object at the field or above it.
            failures.push(format!(
                "{what}: the schema objects elsewhere than {field}:\n{}",
                show(&errs)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows disagree:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
    eprintln!(
        "schema and worker agree on {} invalid messages",
        table.len()
    );
}

#[test]
fn schema_and_worker_agree_on_valid_messages() {
    let table = valid_table();
    let instances: Vec<Value> = table.iter().map(|(_, v)| v.clone()).collect();
    let mut failures = Vec::new();
    for ((what, v), errs) in table.iter().zip(validate("message", &instances)) {
        if let Err(refusal) = worker(v) {
            failures.push(format!("{what}: the worker refuses it: {}", refusal.2));
        }
        if !errs.is_empty() {
            failures.push(format!("{what}: the schema refuses it:\n{}", show(&errs)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The rules the schema cannot express ($comment in the schema), each shown
/// to be exactly a disagreement in the documented direction: if one of these
/// starts agreeing, the schema or its comments need updating.
#[test]
fn documented_gaps_are_the_only_known_disagreements() {
    let prefix = format!(
        "{}/x",
        [
            "a".repeat(63),
            "a".repeat(63),
            "a".repeat(63),
            "a".repeat(63)
        ]
        .join(".")
    );
    // (what, message, worker accepts, schema accepts)
    let gaps: Vec<(&str, Value, bool, bool)> = vec![
        (
            "integer written 1.0",
            with("/job", "backoffLimit", json!(1.0)),
            false,
            true,
        ),
        // The schema has no clock: a start in the past or too far ahead.
        (
            "startAfter years ago",
            with("/job", "startAfter", json!("2020-01-01T00:00:00Z")),
            false,
            true,
        ),
        (
            "startAfter decades ahead",
            with("/job", "startAfter", json!("2099-01-01T00:00:00Z")),
            false,
            true,
        ),
        (
            "duplicate env names",
            with(
                "/job",
                "env",
                json!([{ "name": "A", "value": "1" }, { "name": "A", "value": "2" }]),
            ),
            false,
            true,
        ),
        (
            "request above limit",
            with("/job/resources/requests", "cpu", json!("2")),
            false,
            true,
        ),
        (
            "quantity exponent over i64",
            with(
                "/job/resources/limits",
                "cpu",
                json!("1e99999999999999999999"),
            ),
            false,
            true,
        ),
        (
            "quantity -0",
            with("/job", "resources", json!({ "limits": { "cpu": "-0" } })),
            true,
            false,
        ),
        (
            "quantity -1n",
            with(
                "/job",
                "resources",
                json!({ "limits": { "memory": "-1n" } }),
            ),
            true,
            false,
        ),
        (
            "label key prefix over 253",
            with("/job/toleration", "key", json!(prefix)),
            false,
            true,
        ),
        (
            "id of 1024 two-byte characters",
            with("", "id", json!("é".repeat(1024))),
            false,
            true,
        ),
    ];
    let instances: Vec<Value> = gaps.iter().map(|(_, v, _, _)| v.clone()).collect();
    let mut failures = Vec::new();
    for ((what, v, worker_ok, schema_ok), errs) in gaps.iter().zip(validate("message", &instances))
    {
        if worker(v).is_ok() != *worker_ok {
            failures.push(format!(
                "{what}: worker accepts = {}, documented {worker_ok}",
                !worker_ok
            ));
        }
        if errs.is_empty() != *schema_ok {
            failures.push(format!(
                "{what}: schema accepts = {}, documented {schema_ok}:\n{}",
                !schema_ok,
                show(&errs)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // MAX_MESSAGE_BYTES: a body over the limit is still a valid instance.
    let big = with("/job", "args", json!(["x".repeat(300 * 1024)]));
    assert!(worker(&big).is_err_and(|r| r.0 == "MESSAGE_TOO_LARGE"));
    assert!(validate("message", &[big])[0].is_empty());
}

// ---- callbacks ----

/// A webhook receiver on 127.0.0.1 that records every body and answers 200.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start() -> Receiver {
        let server = tiny_http::Server::http("127.0.0.1:0").expect("bind receiver");
        let addr = server.server_addr().to_ip().expect("ip address");
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (b, s) = (Arc::clone(&bodies), Arc::clone(&stop));
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let Ok(Some(mut req)) = server.recv_timeout(Duration::from_millis(20)) else {
                    continue;
                };
                let mut raw = Vec::new();
                let _ = req.as_reader().read_to_end(&mut raw);
                b.lock().expect("bodies").push(raw);
                let _ = req.respond(tiny_http::Response::empty(200));
            }
        });
        Receiver {
            url: format!("http://{addr}/hook"),
            bodies,
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Settled(Mutex<Vec<Outcome>>);

impl Hooks for Settled {
    fn settled(&self, _cb: &Callback, outcome: &Outcome) {
        self.0.lock().expect("outcomes").push(outcome.clone());
    }
}

/// A message from example/ with its webhook pointed at `url`.
fn example_message(file: &str, url: &str) -> message::Message {
    let mut v = read_json(&root().join("example").join(file));
    v["webhook"] = json!({ "url": url });
    message::parse(v.to_string().as_bytes(), &Limits::default()).expect("example is valid")
}

/// The Job as the API server returns it after creation: the rendered Job with
/// a uid and a creationTimestamp, and `status`.
fn api_job(msg: &message::Message, status: Value) -> Value {
    let mut job = render::render(msg, &default_render());
    job["metadata"]["uid"] = json!(format!("uid-{}", msg.id));
    job["metadata"]["creationTimestamp"] = json!("2026-12-01T07:00:00Z");
    job["status"] = status;
    job
}

fn api_pod(job: &Value, phase: &str, state: Value) -> Value {
    let name = job["metadata"]["name"].as_str().unwrap_or("");
    json!({
        "metadata": { "namespace": job["metadata"]["namespace"], "name": format!("{name}-ww7g2"),
            "uid": format!("pod-{name}"), "labels": { "batch.kubernetes.io/job-name": name } },
        "status": { "phase": phase, "containerStatuses": [{ "name": "job", "state": state }] }
    })
}

fn wall(s: &str) -> SystemTime {
    k8s_job_worker::clock::parse_rfc3339(s).expect("timestamp")
}

/// Every kind of callback the tracker emits, from realistic Job and Pod objects.
fn tracker_callbacks(url: &str) -> Vec<CallbackMsg> {
    let mut tracker = Tracker::new(
        Arc::new(LiveJobs::default()),
        Board::default(),
        Duration::from_secs(600),
    );
    let now = Instant::now();
    let t0 = wall("2026-12-01T07:00:05Z");
    let mut actions = Vec::new();
    let mut feed = |tracker: &mut Tracker, msg: TrackerMsg, at: Instant, w: SystemTime| {
        actions.extend(tracker.handle(msg, at, w));
    };
    let running = json!({ "running": { "startedAt": "2026-12-01T07:00:02Z" } });

    // 0, 1, 2: the seed example completes.
    let ok = example_message("seed-002.json", url);
    feed(
        &mut tracker,
        TrackerMsg::Created {
            job: api_job(&ok, json!({})),
            received_at: now,
        },
        now,
        t0,
    );
    let job = api_job(&ok, json!({}));
    feed(
        &mut tracker,
        TrackerMsg::Pods(Event::Applied(api_pod(&job, "Running", running.clone()))),
        now,
        t0,
    );
    let done = json!({
        "startTime": "2026-12-01T07:00:01Z",
        "completionTime": "2026-12-01T07:00:31Z",
        "conditions": [
            { "type": "SuccessCriteriaMet", "status": "True" },
            { "type": "Complete", "status": "True" }
        ]
    });
    feed(
        &mut tracker,
        TrackerMsg::Jobs(Event::Applied(api_job(&ok, done.clone()))),
        now,
        t0,
    );

    // 0, 1, 3: failing.json exits 3 and hits its backoff limit.
    let fail = example_message("failing.json", url);
    let job = api_job(&fail, json!({}));
    feed(
        &mut tracker,
        TrackerMsg::Created {
            job: job.clone(),
            received_at: now,
        },
        now,
        t0,
    );
    let failed = json!({ "startTime": "2026-12-01T07:00:01Z", "conditions": [
        { "type": "FailureTarget", "status": "True" },
        { "type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
          "message": "Job has reached the specified backoff limit",
          "lastTransitionTime": "2026-12-01T07:00:09Z" }] });
    feed(
        &mut tracker,
        TrackerMsg::Jobs(Event::Applied(api_job(&fail, failed))),
        now,
        t0,
    );
    let exited = json!({ "terminated": { "exitCode": 3, "reason": "Error" } });
    feed(
        &mut tracker,
        TrackerMsg::Pods(Event::Applied(api_pod(&job, "Failed", exited))),
        now,
        t0,
    );

    // 0, 1 with empty pod fields, 2: a Job that finished before its pod was seen.
    let quick = example_message("minimal.json", url);
    feed(
        &mut tracker,
        TrackerMsg::Jobs(Event::Applied(api_job(&quick, done))),
        now,
        t0,
    );

    // 0, 99 POD_START_TIMEOUT: gpu.json's pod never starts.
    let stuck = example_message("gpu.json", url);
    let job = api_job(&stuck, json!({}));
    feed(
        &mut tracker,
        TrackerMsg::Created {
            job: job.clone(),
            received_at: now,
        },
        now,
        t0,
    );
    let waiting =
        json!({ "waiting": { "reason": "ImagePullBackOff", "message": "Back-off pulling image" } });
    feed(
        &mut tracker,
        TrackerMsg::Pods(Event::Applied(api_pod(&job, "Pending", waiting))),
        now,
        t0,
    );

    // 0, 1, 99 JOB_DELETED: env.json's Job is deleted while running.
    let gone = example_message("env.json", url);
    let job = api_job(&gone, json!({}));
    feed(
        &mut tracker,
        TrackerMsg::Created {
            job: job.clone(),
            received_at: now,
        },
        now,
        t0,
    );
    feed(
        &mut tracker,
        TrackerMsg::Pods(Event::Applied(api_pod(&job, "Running", running))),
        now,
        t0,
    );
    feed(&mut tracker, TrackerMsg::Jobs(Event::Deleted(job)), now, t0);

    // 0 with startAfter: a delayed Job (waits suspended; nothing more here).
    let mut v = read_json(&root().join("example").join("minimal.json"));
    v["webhook"] = json!({ "url": url });
    v["id"] = json!("delayed");
    v["job"]["startDelaySeconds"] = json!(3600);
    let delayed = message::parse(v.to_string().as_bytes(), &Limits::default()).expect("valid");
    feed(
        &mut tracker,
        TrackerMsg::Created {
            job: api_job(&delayed, json!({})),
            received_at: now,
        },
        now,
        t0,
    );

    // Later: the held terminal status is released, the pod start timeout runs out.
    actions.extend(tracker.tick(now + Duration::from_secs(10), wall("2026-12-01T07:20:00Z")));
    actions.iter().filter_map(callback_msg).collect()
}

/// The 99 callbacks intake sends, built as intake builds them
/// (`{"error": {"errorCode": code, "message": text}}`) from the worker's own
/// rejection and policy texts.
fn intake_callbacks(url: &str) -> Vec<CallbackMsg> {
    let cb = |id: &str, code: &str, text: String| {
        CallbackMsg::Send(Callback {
            message_id: id.to_string(),
            status: Status::Exception,
            detail: json!({ "error": { "errorCode": code, "message": text } }).into(),
            url: Some(WebhookUrl::parse(url).expect("a webhook URL")),
            job: None,
            token: None,
            queued_at: Instant::now(),
        })
    };
    let invalid = std::fs::read(root().join("example/invalid.json")).expect("invalid.json");
    let r = message::parse(&invalid, &Limits::default()).expect_err("invalid.json is refused");
    let id = r.id.clone().expect("invalid.json has an id");
    let seed = example_message("seed-002.json", url);
    let denied = Policy::default()
        .check(&seed)
        .expect_err("the default policy denies its envRef");
    let name = contract::job_name(&seed.job.prefix_name, &seed.id);
    vec![
        cb(&id, r.code.as_str(), r.to_string()),
        cb(&seed.id, "POLICY_DENIED", denied.to_string()),
        cb(
            &seed.id,
            "JOB_CREATE_FAILED",
            format!("cannot create Job default/{name}: admission webhook denied the request"),
        ),
        cb(
            &seed.id,
            "JOB_NAME_CONFLICT",
            format!(
                "Job default/{name} already exists for another message; \
                 choose another job.prefixName or id"
            ),
        ),
    ]
}

#[test]
fn callback_bodies_the_worker_sends_match_the_callback_schema() {
    let receiver = Receiver::start();
    let mut msgs = tracker_callbacks(&receiver.url);
    msgs.extend(intake_callbacks(&receiver.url));
    let expected = msgs.len();
    let (tx, rx) = unbounded();
    let hooks = Arc::new(Settled(Mutex::new(Vec::new())));
    let handle = callbacks::spawn(
        callbacks::Config::default(),
        ureq::Agent::config_builder().build(),
        rx,
        hooks.clone(),
    )
    .expect("callback thread");
    for m in msgs {
        tx.send(m).expect("send");
    }
    drop(tx);
    handle.join().expect("callback thread exits");
    let outcomes = hooks.0.lock().expect("outcomes").clone();
    assert_eq!(outcomes.len(), expected);
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Delivered),
        "{outcomes:?}"
    );

    let raw = receiver.bodies.lock().expect("bodies").clone();
    assert_eq!(raw.len(), expected);
    let bodies: Vec<Value> = raw
        .iter()
        .map(|b| serde_json::from_slice(b).expect("a callback body is JSON"))
        .collect();
    let mut kinds = BTreeSet::new();
    for b in &bodies {
        let code = b
            .pointer("/detail/error/errorCode")
            .and_then(Value::as_str)
            .unwrap_or("");
        kinds.insert(format!("{} {code}", b["status"]).trim().to_string());
    }
    let want: BTreeSet<String> = [
        "0",
        "1",
        "2",
        "3 BACKOFF_LIMIT_EXCEEDED",
        "99 INVALID_MESSAGE",
        "99 POLICY_DENIED",
        "99 JOB_CREATE_FAILED",
        "99 JOB_NAME_CONFLICT",
        "99 POD_START_TIMEOUT",
        "99 JOB_DELETED",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(kinds, want, "every kind of callback was sent");
    assert!(
        bodies
            .iter()
            .any(|b| b["status"] == 1 && b["detail"]["podName"] == ""),
        "a status 1 for a pod never seen"
    );
    assert!(
        bodies
            .iter()
            .any(|b| b["status"] == 0 && b["detail"]["startAfter"].is_string()),
        "a status 0 of a delayed Job"
    );

    for (b, errs) in bodies.iter().zip(validate("callback", &bodies)) {
        assert!(
            errs.is_empty(),
            "callback {b} is not valid against callback.schema.json:\n{}",
            show(&errs)
        );
    }
}

#[test]
fn callback_schema_refuses_malformed_bodies() {
    let body = |status: u8, detail: Value| json!({ "id": "m", "status": status, "detail": detail });
    let error =
        |code: &str, message: &str| json!({ "error": { "errorCode": code, "message": message } });
    let bad = [
        body(4, json!({})),
        json!({ "id": "m", "status": 0 }),
        json!({ "id": "", "status": 2, "detail": { "duration": 1 } }),
        body(0, json!({ "jobId": "u" })),
        body(0, json!({ "jobId": "u", "jobName": "Bad_Name" })),
        body(1, json!({ "duration": 3 })),
        body(2, json!({ "duration": -1 })),
        body(2, json!({ "duration": "3" })),
        body(3, error("backoff", "x")),
        body(3, json!({ "error": { "errorCode": "X" } })),
        body(99, error("BACKOFF_LIMIT_EXCEEDED", "x")),
        body(99, json!({ "error": "INVALID_MESSAGE" })),
        json!({ "id": "m", "status": 2, "detail": { "duration": 1 }, "extra": 1 }),
        body(2, json!({ "duration": 1, "undocumented": 1 })),
    ];
    for (b, errs) in bad.iter().zip(validate("callback", &bad)) {
        assert!(!errs.is_empty(), "{b} should be refused");
    }
    // The README's documented examples are valid.
    let good = [
        body(0, json!({ "jobId": "6f1c", "jobName": "bb-fbe70e5993" })),
        body(
            1,
            json!({ "podId": "0b2e", "podName": "bb-fbe70e5993-ww7g2" }),
        ),
        body(2, json!({ "duration": 30 })),
        body(3, error("BACKOFF_LIMIT_EXCEEDED", "...")),
        body(99, error("INVALID_MESSAGE", "...")),
    ];
    for (b, errs) in good.iter().zip(validate("callback", &good)) {
        assert!(errs.is_empty(), "{b}:\n{}", show(&errs));
    }
}
