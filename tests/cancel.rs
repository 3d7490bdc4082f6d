//! Cancel on the test bed (real control plane with kwok, Redis and moto, real
//! webhook receivers): a cancel control message `{"id", "action": "cancel"}`
//! stops a running Job (0, 1, then 3 CANCELLED, its pod gone), changes nothing
//! for a finished one, and, arriving before its job request, leaves a tombstone
//! so that the request never gets a pod and its webhook exactly one 3
//! CANCELLED; a leader killed around a cancel loses nothing.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::worker::{
    Deployment, FAST_ELECTION, Launcher, Q, Worker, calls_for, leader_and_standby, seed_message,
    statuses, wait_terminal,
};
use support::{WebhookReceiver, bed, wait_for};

const OUTCOME: &str = "testbed.k8s-job-worker.io/outcome";
const CANCELLED_AT: &str = "k8s-job-worker.io/cancelled-at";

fn launcher(q: Q) -> Launcher {
    Launcher::new(q)
        .ns_tag("cancel")
        .no_env("ALLOWED_ENV_REFS")
        .no_env("ALLOWED_PVCS")
        .log_tail(120)
}

/// The seed message without volume and envRef; `run` makes its pod run until
/// deleted (kwok stage outcome=run).
fn job_message(d: &Deployment, hook: &WebhookReceiver, run: bool) -> (String, String) {
    seed_message(&d.ns, &hook.url(), |m| {
        if let Some(j) = m["job"].as_object_mut() {
            j.remove("volume");
            j.remove("envRef");
        }
        if run {
            m["job"]["fargate"] = json!({"key": OUTCOME, "value": "run"});
        }
    })
}

fn cancel_body(id: &str) -> String {
    // Other fields are ignored: a webhook here is never called.
    json!({"id": id, "action": "cancel", "webhook": {"url": "http://127.0.0.1:9/never"}})
        .to_string()
}

fn pods_of(ns: &str, job: &str) -> Vec<Value> {
    let (c, v) = bed().kube_get(&format!(
        "/api/v1/namespaces/{ns}/pods?labelSelector=batch.kubernetes.io%2Fjob-name%3D{job}"
    ));
    assert_eq!(c, 200, "{v}");
    v["items"].as_array().cloned().unwrap_or_default()
}

fn tombstones(d: &Deployment) -> Vec<Value> {
    let (c, v) = bed().kube_get(&format!(
        "/api/v1/namespaces/{}/configmaps?labelSelector=k8s-job-worker.io%2Ftombstone%3Dcancel%2Ck8s-job-worker.io%2Finstance%3D{}",
        d.ns, d.instance
    ));
    assert_eq!(c, 200, "{v}");
    v["items"].as_array().cloned().unwrap_or_default()
}

fn tombstone_of<'a>(list: &'a [Value], id: &str) -> Option<&'a Value> {
    list.iter()
        .find(|t| t["metadata"]["annotations"]["k8s-job-worker.io/message-id"] == json!(id))
}

/// The value of `cancels_total{outcome="<outcome>"}` (0 when absent).
fn cancels(w: &Worker, outcome: &str) -> f64 {
    let needle = format!("job_worker_cancels_total{{outcome=\"{outcome}\"}} ");
    w.metrics()
        .lines()
        .find_map(|l| l.strip_prefix(&needle)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Every pod name the namespace ever shows from now on (a watch on a thread).
fn record_pods(ns: &str) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut watch = bed().kube_watch(
        &format!("/api/v1/namespaces/{ns}/pods?watch=true"),
        Duration::from_secs(600),
    );
    assert_eq!(watch.status, 200);
    let out = seen.clone();
    std::thread::spawn(move || {
        while let Some(ev) = watch.next_event() {
            if let Some(name) = ev["object"]["metadata"]["name"].as_str() {
                out.lock().unwrap().push(name.to_string());
            }
        }
    });
    seen
}

fn assert_cancelled(call: &Value) {
    assert_eq!(call["status"], 3, "{call}");
    let err = &call["detail"]["error"];
    assert_eq!(err["errorCode"], "CANCELLED", "{call}");
    let msg = err["message"].as_str().unwrap_or("");
    let at = msg.strip_prefix("cancelled by request at ").unwrap_or("");
    assert!(
        at.len() == 20 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "an RFC 3339 time: {msg}"
    );
}

/// 0, 1, then the cancel: 3 CANCELLED, the pod gone, the Job gone (its
/// finalizer released once the 3 was settled), nothing after.
fn cancel_of_a_running_job(q: Q) {
    let hook = WebhookReceiver::start();
    let w = launcher(q).start();
    let (id, body) = job_message(&w, &hook, true);
    w.send(&body);
    assert!(
        wait_for(Duration::from_secs(60), || statuses(&calls_for(&hook, &id))
            == vec![0, 1]),
        "0 and 1 first: {:?}\n{}",
        statuses(&calls_for(&hook, &id)),
        w.logs()
    );
    let job = w.jobs()[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(pods_of(&w.ns, &job).len(), 1, "its pod runs");
    w.send(&cancel_body(&id));
    let calls = wait_terminal(&w, &hook, &id, Duration::from_secs(60));
    assert_eq!(statuses(&calls), vec![0, 1, 3]);
    assert_cancelled(&calls[2].body);
    assert!(
        wait_for(Duration::from_secs(60), || pods_of(&w.ns, &job).is_empty()),
        "the pod is gone: {:?}",
        pods_of(&w.ns, &job)
    );
    assert!(
        wait_for(Duration::from_secs(30), || w.jobs().is_empty()),
        "the Job is gone once its 3 was settled"
    );
    assert!(
        wait_for(Duration::from_secs(10), || w.queued() == 0),
        "both messages left the queue: {}",
        w.queued()
    );
    assert_eq!(cancels(&w, "cancelled"), 1.0, "{}", w.metrics());
    // A repeated cancel is a no-op.
    w.send(&cancel_body(&id));
    assert!(wait_for(Duration::from_secs(10), || w.queued() == 0));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(statuses(&calls_for(&hook, &id)), vec![0, 1, 3]);
    assert!(
        hook.calls().iter().all(|c| !c.path.contains("never")),
        "a cancel's own fields are ignored"
    );
}

/// A finished Job: nothing changes, no second terminal status.
fn cancel_of_a_finished_job(q: Q) {
    let hook = WebhookReceiver::start();
    let w = launcher(q).start();
    let (id, body) = job_message(&w, &hook, false);
    w.send(&body);
    let calls = wait_terminal(&w, &hook, &id, Duration::from_secs(90));
    assert_eq!(statuses(&calls), vec![0, 1, 2]);
    let before = w.jobs();
    assert_eq!(before.len(), 1);
    w.send(&cancel_body(&id));
    assert!(
        wait_for(Duration::from_secs(20), || cancels(&w, "already_finished")
            == 1.0),
        "counted already_finished: {}",
        w.metrics()
    );
    assert!(wait_for(Duration::from_secs(10), || w.queued() == 0));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(statuses(&calls_for(&hook, &id)), vec![0, 1, 2]);
    let after = w.jobs();
    assert_eq!(after.len(), 1, "the Job is still there");
    assert_eq!(after[0]["metadata"]["uid"], before[0]["metadata"]["uid"]);
    assert!(
        after[0]["metadata"]["annotations"]
            .get(CANCELLED_AT)
            .is_none()
    );
    assert!(after[0]["metadata"]["deletionTimestamp"].is_null());
    let t = tombstones(&w);
    let t = tombstone_of(&t, &id).expect("its tombstone");
    assert_eq!(
        t["metadata"]["annotations"]["k8s-job-worker.io/consumed"],
        "already_finished"
    );
}

/// The cancel first: a tombstone; then the request: its Job is created
/// suspended, no pod ever exists, and the webhook gets exactly one 3
/// CANCELLED; a redelivery of the request creates nothing.
fn cancel_before_the_job_request(q: Q) {
    let hook = WebhookReceiver::start();
    let w = launcher(q).start();
    let (id, body) = job_message(&w, &hook, true);
    let pods = record_pods(&w.ns);
    w.send(&cancel_body(&id));
    w.send(&cancel_body(&id)); // repeated: a no-op
    assert!(
        wait_for(Duration::from_secs(30), || tombstone_of(
            &tombstones(&w),
            &id
        )
        .is_some()
            && w.queued() == 0),
        "the cancel is recorded as a tombstone and acknowledged\n{}",
        w.logs()
    );
    assert!(
        wait_for(Duration::from_secs(10), || cancels(&w, "early") == 1.0),
        "counted early once: {}",
        w.metrics()
    );
    w.send(&body);
    let calls = wait_terminal(&w, &hook, &id, Duration::from_secs(60));
    assert_eq!(statuses(&calls), vec![3], "only the 3, no 0");
    assert_cancelled(&calls[0].body);
    assert!(
        wait_for(Duration::from_secs(30), || w.jobs().is_empty()),
        "the Job is gone"
    );
    // The same request again (a redelivery): nothing new.
    w.send(&body);
    assert!(wait_for(Duration::from_secs(20), || w.queued() == 0));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(statuses(&calls_for(&hook, &id)), vec![3]);
    assert!(w.jobs().is_empty(), "no second Job");
    assert!(
        pods.lock().unwrap().is_empty(),
        "no pod ever existed: {:?}",
        pods.lock().unwrap()
    );
    let t = tombstones(&w);
    let t = tombstone_of(&t, &id).expect("its tombstone");
    assert_eq!(
        t["metadata"]["annotations"]["k8s-job-worker.io/consumed"],
        "cancelled"
    );
}

/// A Job whose pod never starts (Pending, ImagePullBackOff) is waiting too:
/// 0, then 3 CANCELLED, and its pod goes.
#[test]
fn redis_cancel_of_a_pending_job_sends_0_3_cancelled() {
    let hook = WebhookReceiver::start();
    let w = launcher(Q::Redis).start();
    let (id, body) = seed_message(&w.ns, &hook.url(), |m| {
        if let Some(j) = m["job"].as_object_mut() {
            j.remove("volume");
            j.remove("envRef");
        }
        m["job"]["fargate"] = json!({"key": OUTCOME, "value": "pending"});
    });
    w.send(&body);
    assert!(
        wait_for(Duration::from_secs(60), || {
            let jobs = w.jobs();
            let name = jobs
                .first()
                .and_then(|j| j["metadata"]["name"].as_str())
                .unwrap_or("")
                .to_string();
            !name.is_empty() && !pods_of(&w.ns, &name).is_empty()
        }),
        "its pod exists, pending"
    );
    assert_eq!(statuses(&calls_for(&hook, &id)), vec![0]);
    w.send(&cancel_body(&id));
    let calls = wait_terminal(&w, &hook, &id, Duration::from_secs(60));
    assert_eq!(statuses(&calls), vec![0, 3]);
    assert_cancelled(&calls[1].body);
    assert!(
        wait_for(Duration::from_secs(60), || w.jobs().is_empty()),
        "the Job and its pod are gone"
    );
}

#[test]
fn redis_cancel_of_a_running_job_sends_0_1_3_cancelled_and_the_pod_goes() {
    cancel_of_a_running_job(Q::Redis);
}

#[test]
fn sqs_cancel_of_a_running_job_sends_0_1_3_cancelled_and_the_pod_goes() {
    cancel_of_a_running_job(Q::Sqs);
}

#[test]
fn redis_cancel_of_a_finished_job_changes_nothing() {
    cancel_of_a_finished_job(Q::Redis);
}

#[test]
fn sqs_cancel_of_a_finished_job_changes_nothing() {
    cancel_of_a_finished_job(Q::Sqs);
}

#[test]
fn redis_cancel_before_the_job_request_runs_no_pod() {
    cancel_before_the_job_request(Q::Redis);
}

#[test]
fn sqs_cancel_before_the_job_request_runs_no_pod() {
    cancel_before_the_job_request(Q::Sqs);
}

/// Unmatched tombstones expire (CANCEL_TOMBSTONE_TTL, swept every
/// LEASE_DURATION): deleted and counted `expired`.
#[test]
fn redis_an_unmatched_tombstone_expires() {
    let w = launcher(Q::Redis)
        .env("CANCEL_TOMBSTONE_TTL", "2")
        .env("LEASE_DURATION", "3")
        .env("RENEW_DEADLINE", "2")
        .env("RETRY_PERIOD", "1")
        .start();
    w.send(&cancel_body("never-arrives"));
    assert!(
        wait_for(Duration::from_secs(30), || cancels(&w, "expired") == 1.0),
        "expired: {}\n{}",
        w.metrics(),
        w.logs()
    );
    assert!(
        wait_for(Duration::from_secs(10), || tombstone_of(
            &tombstones(&w),
            "never-arrives"
        )
        .is_none()),
        "and deleted"
    );
}

/// Two replicas; the leader is SIGKILLed. While nobody leads: Job A carries
/// `cancelled-at` and is suspended but not deleted (what a leader killed
/// between its two writes leaves), a cancel of running Job B and a cancel of a
/// request C not sent yet wait in the queue. The standby finishes all three:
/// A and B 0, 1, 3 CANCELLED; C (sent after the takeover) only 3 CANCELLED and
/// never a pod; each exactly one terminal status.
fn cancel_during_a_leader_kill(q: Q) {
    let hook = WebhookReceiver::start();
    let spec = launcher(q)
        .instance_tag("cfo")
        .envs(&FAST_ELECTION)
        .die_with_parent()
        .deploy();
    let (mut leader, standby) = leader_and_standby(&spec);
    let (a, a_body) = job_message(&spec, &hook, true);
    let (b, b_body) = job_message(&spec, &hook, true);
    let (c, c_body) = job_message(&spec, &hook, true);
    spec.send_all(&[a_body, b_body]);
    for id in [&a, &b] {
        assert!(
            wait_for(Duration::from_secs(60), || statuses(&calls_for(&hook, id))
                == vec![0, 1]),
            "0 and 1 for {id}: {:?}",
            statuses(&calls_for(&hook, id))
        );
    }
    let job_of = |id: &str| -> String {
        spec.jobs()
            .iter()
            .find(|j| j["metadata"]["annotations"]["k8s-job-worker.io/message-id"] == json!(id))
            .and_then(|j| j["metadata"]["name"].as_str().map(str::to_string))
            .unwrap()
    };
    let (job_a, job_b) = (job_of(&a), job_of(&b));
    leader.kill9();
    // What a leader killed between the cancel's patch and its delete leaves.
    let (st, v) = bed().kube_patch(
        &format!("/apis/batch/v1/namespaces/{}/jobs/{job_a}", spec.ns),
        &json!({"metadata": {"annotations": {CANCELLED_AT: "2026-01-01T00:00:00Z"}},
                "spec": {"suspend": true}}),
    );
    assert_eq!(st, 200, "{v}");
    let pods_c = record_pods(&spec.ns);
    spec.send_all(&[cancel_body(&b), cancel_body(&c)]);
    assert!(
        wait_for(Duration::from_secs(60), || spec.holder() == standby.name),
        "the standby takes over"
    );
    for id in [&a, &b] {
        let calls = wait_terminal(&standby, &hook, id, Duration::from_secs(60));
        assert_eq!(statuses(&calls), vec![0, 1, 3], "{id}");
        assert_cancelled(&calls[2].body);
    }
    assert!(
        calls_for(&hook, &a)[2].body["detail"]["error"]["message"]
            .as_str()
            .unwrap_or("")
            .ends_with("2026-01-01T00:00:00Z"),
        "A reports the time its annotation carries"
    );
    for job in [&job_a, &job_b] {
        assert!(
            wait_for(Duration::from_secs(60), || pods_of(&spec.ns, job)
                .is_empty()),
            "the pods of {job} are gone"
        );
    }
    spec.send(&c_body);
    let calls = wait_terminal(&standby, &hook, &c, Duration::from_secs(60));
    assert_eq!(statuses(&calls), vec![3]);
    assert_cancelled(&calls[0].body);
    std::thread::sleep(Duration::from_secs(3));
    let seen: Vec<String> = pods_c.lock().unwrap().clone();
    let job_c_pods: Vec<&String> = seen
        .iter()
        .filter(|p| !p.starts_with(&job_a) && !p.starts_with(&job_b))
        .collect();
    assert!(job_c_pods.is_empty(), "no pod of C ever existed: {seen:?}");
    for id in [&a, &b, &c] {
        let s = statuses(&calls_for(&hook, id));
        assert_eq!(
            s.iter().filter(|s| [2, 3, 99].contains(*s)).count(),
            1,
            "exactly one terminal status for {id}: {s:?}"
        );
    }
    assert!(wait_for(Duration::from_secs(10), || spec.queued() == 0));
}

#[test]
fn redis_cancel_during_a_leader_kill() {
    cancel_during_a_leader_kill(Q::Redis);
}

#[test]
fn sqs_cancel_during_a_leader_kill() {
    cancel_during_a_leader_kill(Q::Sqs);
}

/// `k8s-job-worker cancel <id>` pushes the control message onto the
/// configured queue (here Redis), and the worker cancels the running Job;
/// `validate` accepts a cancel; a missing id is a usage error.
#[test]
fn redis_the_cancel_command_cancels_a_running_job() {
    let hook = WebhookReceiver::start();
    let w = launcher(Q::Redis).start();
    let (id, body) = job_message(&w, &hook, true);
    w.send(&body);
    assert!(
        wait_for(Duration::from_secs(60), || statuses(&calls_for(&hook, &id))
            == vec![0, 1]),
        "0 and 1 first"
    );
    let bin = env!("CARGO_BIN_EXE_k8s-job-worker");
    let cli = |args: &[&str]| {
        std::process::Command::new(bin)
            .args(args)
            .env_clear()
            .env("QUEUE_TYPE", "redis")
            .env("REDIS_ENDPOINT", format!("127.0.0.1:{}", w.redis_port))
            .env("REDIS_JOB_KEY_PREFIX", &w.redis_prefix)
            .output()
            .expect("run the CLI")
    };
    let out = cli(&["cancel", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let calls = wait_terminal(&w, &hook, &id, Duration::from_secs(60));
    assert_eq!(statuses(&calls), vec![0, 1, 3]);
    assert_cancelled(&calls[2].body);
    assert_eq!(cli(&["cancel"]).status.code(), Some(2));
    let file = std::env::temp_dir().join(format!("{}-cancel.json", w.instance));
    std::fs::write(&file, cancel_body(&id)).unwrap();
    let out = cli(&["validate", file.to_str().unwrap()]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("ok: cancel of message {id}")
    );
    let _ = std::fs::remove_file(file);
}

/// A delayed Job (issue 10 §2) cancelled while it waits: 0 (with
/// startAfter), then one 3 CANCELLED; no pod ever exists, before or after
/// its start time.
#[test]
fn redis_cancel_of_a_delayed_job_before_its_start_runs_no_pod() {
    let hook = WebhookReceiver::start();
    let w = launcher(Q::Redis).start();
    let pods = record_pods(&w.ns);
    let (id, body) = seed_message(&w.ns, &hook.url(), |m| {
        if let Some(j) = m["job"].as_object_mut() {
            j.remove("volume");
            j.remove("envRef");
        }
        m["job"]["startDelaySeconds"] = json!(12);
    });
    w.send(&body);
    assert!(
        wait_for(Duration::from_secs(30), || statuses(&calls_for(&hook, &id))
            == vec![0]),
        "no status 0\n{}",
        w.logs()
    );
    assert!(
        calls_for(&hook, &id)[0].body["detail"]["startAfter"].is_string(),
        "status 0 names its start time"
    );
    w.send(&cancel_body(&id));
    let calls = wait_terminal(&w, &hook, &id, Duration::from_secs(60));
    assert_eq!(statuses(&calls), vec![0, 3]);
    assert_cancelled(&calls[1].body);
    assert!(
        wait_for(Duration::from_secs(60), || w.jobs().is_empty()),
        "the Job is gone"
    );
    // Past the start time it was given: still no pod, nothing more sent.
    std::thread::sleep(Duration::from_secs(14));
    assert!(
        pods.lock().unwrap().is_empty(),
        "a pod ran: {:?}",
        pods.lock().unwrap()
    );
    assert_eq!(statuses(&calls_for(&hook, &id)), vec![0, 3]);
}
