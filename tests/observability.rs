//! Observability on the test bed: one worker (Redis, LOG_FORMAT=json) handles a
//! message that completes, one whose Job fails and one invalid message; then
//! /metrics is parsed by the Prometheus Python client's own parser (the venv's
//! `prometheus_client`), /healthz, /readyz and /jobs/{id} are queried, and
//! every line the worker wrote on stdout and stderr must be a JSON object.
//!
//! One test, one worker: a worker kept in a static would outlive the test
//! process (nothing kills it), so everything is checked in one function, each
//! check with its own message.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::worker::{Launcher, Q, Worker, complete_fail_invalid, make_pvc};
use support::{WebhookReceiver, bed, unique, wait_for};

/// The worker of a test: namespace `obs-*`, stdout and stderr to separate
/// files, the default environment plus `extra` (see tests/support/worker.rs).
fn start(q: Q, extra: &[(&str, &str)]) -> Worker {
    Launcher::new(q)
        .ns_tag("obs")
        .split_output()
        .envs(extra)
        .start()
}

// ------------------------------------------------------------ /metrics parsing

/// Parses exposition text with prometheus_client's parser (the venv python);
/// returns {family name: {"type", "help", "samples": [[name, labels, value]]}}.
/// The parser names counter families without `_total` (as the OpenMetrics data
/// model does); samples keep their full names.
fn parse_with_prometheus_client(text: &str) -> Result<BTreeMap<String, Value>, String> {
    const SCRIPT: &str = r#"
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
text = sys.stdin.read()
out = {}
for fam in text_string_to_metric_families(text):
    out[fam.name] = {
        "type": fam.type,
        "help": fam.documentation,
        "samples": [[s.name, s.labels, None if math.isinf(s.value) else s.value] for s in fam.samples],
    }
print(json.dumps(out))
"#;
    let mut child = Command::new(&bed().python)
        .arg("-c")
        .arg(SCRIPT)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning the venv python: {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "prometheus_client could not parse /metrics ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    Ok(v.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default())
}

/// Checks on the raw text: every sample belongs to a family with both a HELP
/// and a TYPE line, each family's HELP and TYPE appear once, and return the
/// families (name → type) declared.
fn check_help_and_type(text: &str) -> BTreeMap<String, String> {
    let mut help = BTreeMap::new();
    let mut types = BTreeMap::<String, String>::new();
    let mut sample_names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default().to_string();
            assert!(
                help.insert(name.clone(), ()).is_none(),
                "two HELP lines for {name}"
            );
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let name = it.next().unwrap_or_default().to_string();
            let t = it.next().unwrap_or_default().to_string();
            assert!(
                types.insert(name.clone(), t).is_none(),
                "two TYPE lines for {name}"
            );
        } else if !line.is_empty() && !line.starts_with('#') {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            sample_names.insert(name);
        }
    }
    for name in &sample_names {
        let family = types
            .keys()
            .find(|f| {
                *f == name
                    || (types[*f] == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| *name == format!("{f}{s}")))
            })
            .unwrap_or_else(|| panic!("sample {name} has no TYPE line:\n{text}"));
        assert!(help.contains_key(family), "{family} has no HELP line");
    }
    for name in types.keys() {
        assert!(help.contains_key(name), "{name} has TYPE but no HELP line");
    }
    for name in help.keys() {
        assert!(types.contains_key(name), "{name} has HELP but no TYPE line");
    }
    types
}

/// Sum of the values of `sample` whose labels include all of `want`.
fn sample_sum(
    fams: &BTreeMap<String, Value>,
    family: &str,
    sample: &str,
    want: &[(&str, &str)],
) -> Option<f64> {
    let f = fams.get(family)?;
    let mut found = None;
    for s in f["samples"].as_array()? {
        if s[0] != json!(sample) {
            continue;
        }
        if want.iter().all(|(k, v)| s[1][*k] == json!(v)) {
            *found.get_or_insert(0.0) += s[2].as_f64().unwrap_or(f64::INFINITY);
        }
    }
    found
}

// ------------------------------------------------------------ the test

#[test]
fn metrics_health_jobs_endpoint_and_json_logs() {
    let hook = WebhookReceiver::start();
    let w = start(Q::Redis, &[("LOG_FORMAT", "json")]);
    make_pvc(&w.ns);

    // (b) health before any message; /readyz once the worker leads.
    assert!(
        wait_for(Duration::from_secs(30), || w.get("/healthz").0 == 200),
        "/healthz: {:?}\n{}",
        w.get("/healthz"),
        w.logs()
    );
    assert!(
        wait_for(Duration::from_secs(60), || w.get("/readyz").0 == 200),
        "/readyz: {:?}\n{}",
        w.get("/readyz"),
        w.logs()
    );
    // Before the first scrape, the unobserved families must already be declared.
    let (code, early) = w.get("/metrics");
    assert_eq!(code, 200);
    check_help_and_type(&early);

    let [ok_id, fail_id, bad_id] = complete_fail_invalid(&w, &hook);
    // The callback counter moves after the receiver answered: let it settle.
    std::thread::sleep(Duration::from_millis(500));

    // ---- (a) /metrics
    let (code, text) = w.get("/metrics");
    assert_eq!(code, 200, "{text}");
    let types = check_help_and_type(&text);
    let fams = parse_with_prometheus_client(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let p = "job_worker_";
    // Every declared family, with its type, present in both views.
    let expect_types = [
        ("messages_received_total", "counter"),
        ("messages_acknowledged_total", "counter"),
        ("messages_rejected_total", "counter"),
        ("jobs_created_total", "counter"),
        ("jobs_finished_total", "counter"),
        ("callbacks_sent_total", "counter"),
        ("callback_delivery_seconds", "histogram"),
        ("job_duration_seconds", "histogram"),
        ("queue_to_job_seconds", "histogram"),
        ("jobs_in_flight", "gauge"),
        ("leader", "gauge"),
        ("watch_restarts_total", "counter"),
        ("build_info", "gauge"),
    ];
    for (name, t) in expect_types {
        let full = format!("{p}{name}");
        assert_eq!(
            types.get(&full).map(String::as_str),
            Some(t),
            "# TYPE of {full}\n{text}"
        );
        let fam_name = full.strip_suffix("_total").unwrap_or(&full);
        let fam = fams
            .get(fam_name)
            .unwrap_or_else(|| panic!("prometheus_client saw no family {fam_name}: {fams:?}"));
        assert_eq!(fam["type"], json!(t), "{fam_name}");
        assert!(
            fam["help"].as_str().is_some_and(|h| !h.is_empty()),
            "{fam_name} has an empty HELP"
        );
    }
    let v = |name: &str, sample: &str, want: &[(&str, &str)]| {
        let fam = format!("{p}{name}");
        let fam = fam.strip_suffix("_total").unwrap_or(&fam).to_string();
        sample_sum(&fams, &fam, &format!("{p}{sample}"), want)
            .unwrap_or_else(|| panic!("no sample {p}{sample} {want:?} in\n{text}"))
    };
    assert!(v("messages_received_total", "messages_received_total", &[]) >= 3.0);
    // Two Jobs created (ack) and one invalid message dead-lettered (also an ack).
    assert_eq!(
        v(
            "messages_acknowledged_total",
            "messages_acknowledged_total",
            &[]
        ),
        3.0,
        "every message left the queue\n{text}"
    );
    assert_eq!(
        v(
            "messages_rejected_total",
            "messages_rejected_total",
            &[("reason", "INVALID_MESSAGE")]
        ),
        1.0
    );
    assert_eq!(v("jobs_created_total", "jobs_created_total", &[]), 2.0);
    assert_eq!(
        v(
            "jobs_finished_total",
            "jobs_finished_total",
            &[("result", "complete")]
        ),
        1.0
    );
    assert_eq!(
        v(
            "jobs_finished_total",
            "jobs_finished_total",
            &[("result", "failed")]
        ),
        1.0
    );
    for (status, n) in [("0", 2.0), ("1", 2.0), ("2", 1.0), ("3", 1.0), ("99", 1.0)] {
        assert_eq!(
            v(
                "callbacks_sent_total",
                "callbacks_sent_total",
                &[("status", status), ("outcome", "delivered")]
            ),
            n,
            "callbacks_sent_total{{status={status},outcome=delivered}}\n{text}"
        );
    }
    assert_eq!(
        v(
            "callback_delivery_seconds",
            "callback_delivery_seconds_count",
            &[]
        ),
        7.0
    );
    assert_eq!(
        v("job_duration_seconds", "job_duration_seconds_count", &[]),
        2.0
    );
    // One observation per created Job.
    let q2j = v("queue_to_job_seconds", "queue_to_job_seconds_count", &[]);
    assert_eq!(q2j, 2.0, "queue_to_job_seconds_count {q2j}");
    assert!(v("queue_to_job_seconds", "queue_to_job_seconds_sum", &[]) >= 0.0);
    assert_eq!(v("jobs_in_flight", "jobs_in_flight", &[]), 0.0);
    assert_eq!(v("leader", "leader", &[]), 1.0);
    assert_eq!(v("build_info", "build_info", &[]), 1.0);
    let build = &fams[&format!("{p}build_info")]["samples"][0][1];
    assert!(
        build["version"].as_str().is_some_and(|s| !s.is_empty()),
        "build_info has a version label: {build}"
    );
    // Histogram buckets are cumulative and end with +Inf == _count.
    for h in [
        "callback_delivery_seconds",
        "job_duration_seconds",
        "queue_to_job_seconds",
    ] {
        let fam = &fams[&format!("{p}{h}")];
        // Per label set (without le): cumulative buckets, +Inf == _count.
        let mut last: BTreeMap<String, f64> = BTreeMap::new();
        let mut inf: BTreeMap<String, f64> = BTreeMap::new();
        let mut count: BTreeMap<String, f64> = BTreeMap::new();
        for s in fam["samples"].as_array().unwrap() {
            let mut l = s[1].clone();
            let le = l.as_object_mut().and_then(|o| o.remove("le"));
            let key = l.to_string();
            let c = s[2].as_f64().unwrap_or(f64::INFINITY);
            if s[0] == json!(format!("{p}{h}_bucket")) {
                let prev = last.insert(key.clone(), c).unwrap_or(0.0);
                assert!(c >= prev, "{h}{key}: buckets not cumulative: {fam}");
                if le == Some(json!("+Inf")) {
                    inf.insert(key, c);
                }
            } else if s[0] == json!(format!("{p}{h}_count")) {
                count.insert(key, c);
            }
        }
        assert!(!count.is_empty(), "{h} has observations");
        assert_eq!(inf, count, "{h}: +Inf bucket == _count");
    }

    // ---- (b) health, after work
    let (code, health) = w.get("/healthz");
    assert_eq!(code, 200, "{health}");
    assert!(health.starts_with("ok\n"), "{health}");
    for t in [
        "election",
        "intake",
        "tracker",
        "callbacks",
        "watch-jobs",
        "watch-pods",
    ] {
        assert!(
            health
                .lines()
                .any(|l| l.starts_with(&format!("{t} ")) && !l.contains(" stuck ")),
            "/healthz lists {t}, not stuck: {health}"
        );
    }
    assert_eq!(w.get("/readyz").0, 200);

    // ---- (c) /jobs/{id}
    let job_names: BTreeMap<String, String> = w
        .jobs()
        .iter()
        .map(|j| {
            (
                j["metadata"]["annotations"]["k8s-job-worker.io/message-id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                j["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    for (id, status, name) in [(&ok_id, 2, "complete"), (&fail_id, 3, "failed")] {
        let (code, body) = w.get(&format!("/jobs/{id}"));
        assert_eq!(code, 200, "/jobs/{id}: {body}");
        let view: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(view["id"], json!(id), "{view}");
        assert_eq!(view["status"], json!(status), "{view}");
        assert_eq!(view["statusName"], json!(name), "{view}");
        assert_eq!(view["namespace"], json!(w.ns), "{view}");
        let job_name = view["jobName"].as_str().unwrap_or_default();
        assert!(job_name.starts_with("bb-"), "{view}");
        if let Some(n) = job_names.get(id.as_str()) {
            assert_eq!(job_name, n, "the Job the cluster has for {id}");
        }
        for ts in ["createdAt", "startedAt", "finishedAt", "updatedAt"] {
            let t = view[ts].as_str().unwrap_or_default();
            assert!(
                t.len() >= 20 && t.as_bytes()[10] == b'T' && t.ends_with('Z'),
                "{ts} is an RFC 3339 UTC time: {view}"
            );
        }
        assert!(
            view["createdAt"].as_str() <= view["startedAt"].as_str(),
            "{view}"
        );
        assert!(
            view["startedAt"].as_str() <= view["finishedAt"].as_str(),
            "{view}"
        );
    }
    // A rejected message is known too: status 99 with its error code.
    let (code, body) = w.get(&format!("/jobs/{bad_id}"));
    assert_eq!(code, 200, "/jobs/{bad_id}: {body}");
    let view: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(view["status"], 99, "{view}");
    assert!(
        view["statusName"]
            .as_str()
            .unwrap_or("")
            .contains("INVALID_MESSAGE"),
        "{view}"
    );
    for unknown in ["no-such-message", "a%20b", &unique("never-sent")] {
        let (code, body) = w.get(&format!("/jobs/{unknown}"));
        assert_eq!(code, 404, "/jobs/{unknown}: {body}");
        let e: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert!(e["error"].is_string(), "{body}");
    }
    let (code, _) = w.get("/nope");
    assert_eq!(code, 404);

    // ---- (d) LOG_FORMAT=json: every line of stdout and stderr
    let mut lines = 0;
    let mut with_id_and_job = BTreeSet::new();
    for (stream, text) in [("stdout", w.stdout()), ("stderr", w.stderr())] {
        for line in text.lines() {
            lines += 1;
            let o: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{stream} line is not JSON ({e}): {line:?}"));
            assert!(o.is_object(), "{stream}: {line}");
            for k in ["ts", "level", "msg"] {
                assert!(
                    o[k].as_str().is_some_and(|s| !s.is_empty()),
                    "{stream}: no {k}: {line}"
                );
            }
            assert!(
                ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&o["level"].as_str().unwrap()),
                "{line}"
            );
            let ts = o["ts"].as_str().unwrap();
            assert!(
                ts.as_bytes().get(10) == Some(&b'T') && ts.ends_with('Z'),
                "{line}"
            );
            let msg = o["msg"].as_str().unwrap();
            // Lines about a message name it: "message <id> ..." or "... for message <id> ...".
            let named = msg
                .strip_prefix("message ")
                .or_else(|| msg.split_once("for message ").map(|(_, r)| r))
                .and_then(|r| r.split([' ', ':', ',']).next());
            if let Some(id) = named {
                assert_eq!(
                    o["id"],
                    json!(id),
                    "{stream}: line about message {id} without its id: {line}"
                );
            }
            // ... and their Job, when the line names one.
            if let Some(job) = msg
                .split_once(" job ")
                .and_then(|(_, r)| r.split([' ', ':', ',']).next())
                .filter(|j| j.contains('/'))
            {
                assert_eq!(
                    o["job"],
                    json!(job),
                    "{stream}: line about Job {job} without it: {line}"
                );
                if let Some(id) = o["id"].as_str() {
                    with_id_and_job.insert(id.to_string());
                }
            }
        }
    }
    assert!(lines > 5, "the worker logged {lines} lines\n{}", w.logs());
    for id in [&ok_id, &fail_id] {
        assert!(
            with_id_and_job.contains(id.as_str()),
            "no JSON line with id and job for {id}\n{}",
            w.logs()
        );
    }
    let logs = w.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains(&format!("\"id\":\"{bad_id}\""))),
        "the rejected message's line carries its id\n{logs}"
    );
}
