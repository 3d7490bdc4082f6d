//! The payload into the pod, on the test bed: the Job mounts an immutable
//! Secret of its name holding the payload byte for byte, owned by the Job (the
//! garbage collector deletes it with the Job); every Job gets
//! JOB_WORKER_MESSAGE_ID; a redelivery adopts Job and Secret; a foreign Secret
//! of the Job's name is JOB_NAME_CONFLICT with no Job created; a Secret refused
//! after the Job exists deletes the Job (99 JOB_DELETED) and dead-letters the
//! message with the reason; a worker killed
//! between the Job's create and its Secret's leaves the message queued and
//! the next leader completes it (the kill test: a `fault-injection` build of
//! the worker SIGKILLs itself at that point).

#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_job_worker::contract::job_name;
use serde_json::{Value, json};
use support::worker::{Deployment, Launcher, Q, Worker, calls_for, seed_message, statuses};
use support::{WebhookReceiver, bed, fault_binary, wait_for};

/// A payload as a sender might write it: a number beyond f64, keys out of
/// order, escapes and spacing that a re-serialization would change.
const RAW_PAYLOAD: &str = r#"{"z": 1, "big": 123456789012345678901234567890, "s": "caf\u00e9 \"q\"",  "a": [true, null]}"#;

fn spec(q: Q, tag: &str) -> Launcher {
    Launcher::new(q)
        .ns_tag(tag)
        .instance_tag("pl")
        .no_env("ALLOWED_ENV_REFS")
        .no_env("ALLOWED_PVCS")
}

/// The seed for this deployment (no PVC, no ConfigMap) with `payload` spliced
/// in verbatim when given. Returns (id, body).
fn payload_message(
    d: &Deployment,
    hook: &WebhookReceiver,
    payload: Option<&str>,
    tweak: impl FnOnce(&mut Value),
) -> (String, String) {
    let (id, body) = seed_message(&d.ns, &hook.url(), |m| {
        let j = m["job"].as_object_mut().unwrap();
        j.remove("volume");
        j.remove("envRef");
        tweak(m);
    });
    let body = match payload {
        Some(p) => format!("{{\"payload\": {p}, {}", &body[1..]),
        None => body,
    };
    (id, body)
}

fn name_of(id: &str) -> String {
    let seed: Value = serde_json::from_str(support::worker::SEED_002).unwrap();
    job_name(seed["job"]["prefixName"].as_str().unwrap(), id)
}

fn get_job(ns: &str, name: &str) -> (u16, Value) {
    bed().kube_get(&format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}"))
}

fn get_secret(ns: &str, name: &str) -> (u16, Value) {
    bed().kube_get(&format!("/api/v1/namespaces/{ns}/secrets/{name}"))
}

fn wait_statuses(w: &Worker, hook: &WebhookReceiver, id: &str, want: &[u64]) {
    let ok = wait_for(Duration::from_secs(90), || {
        statuses(&calls_for(hook, id))
            .iter()
            .any(|s| [2, 3, 99].contains(s))
    });
    let got = statuses(&calls_for(hook, id));
    assert!(
        ok && got == want,
        "{id}: got {got:?}, want {want:?}\n{}",
        w.logs()
    );
}

/// `wait_statuses` across a kill: a callback the dying leader delivered but
/// had not recorded yet comes again from the next one (at-least-once, the
/// same `webhook-id`, in order); counted once per webhook-id.
fn wait_statuses_across_a_kill(w: &Worker, hook: &WebhookReceiver, id: &str, want: &[u64]) {
    let _ = wait_for(Duration::from_secs(90), || {
        statuses(&calls_for(hook, id))
            .iter()
            .any(|s| [2, 3, 99].contains(s))
    });
    let calls = calls_for(hook, id);
    let raw = statuses(&calls);
    let mut seen = Vec::new();
    let mut once = Vec::new();
    for (c, s) in calls.iter().zip(&raw) {
        let wid = c.header("webhook-id").unwrap_or_default().to_string();
        assert!(!wid.is_empty(), "{id}: a callback without webhook-id");
        if !seen.contains(&wid) {
            seen.push(wid);
            once.push(*s);
        }
    }
    assert_eq!(
        once,
        want,
        "{id}: got {raw:?} (per webhook-id {once:?})\n{}",
        w.logs()
    );
    assert!(
        raw.windows(2).all(|p| p[0] <= p[1]),
        "{id}: out of order {raw:?}"
    );
    assert_eq!(raw.iter().filter(|s| **s >= 2).count(), 1, "{id}: {raw:?}");
}

/// The Secret holds exactly the payload and belongs to the Job.
fn check_secret(ns: &str, name: &str, id: &str, raw: &str) -> Value {
    let (code, job) = get_job(ns, name);
    assert_eq!(code, 200, "{job}");
    let (code, secret) = get_secret(ns, name);
    assert_eq!(code, 200, "payload Secret {ns}/{name}: {secret}");
    assert_eq!(secret["immutable"], true);
    assert_eq!(secret["metadata"]["labels"], job["metadata"]["labels"]);
    assert_eq!(
        secret["metadata"]["annotations"]["k8s-job-worker.io/message-id"],
        id
    );
    let owners = secret["metadata"]["ownerReferences"].as_array().unwrap();
    assert_eq!(owners.len(), 1, "{secret}");
    assert_eq!(owners[0]["kind"], "Job");
    assert_eq!(owners[0]["name"], name);
    assert_eq!(owners[0]["uid"], job["metadata"]["uid"]);
    let data = secret["data"]["payload.json"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        raw,
        "payload byte for byte"
    );
    assert_eq!(
        secret["data"].as_object().map(|d| d.len()),
        Some(1),
        "{secret}"
    );
    job
}

fn env_of(job: &Value) -> Vec<(String, String)> {
    job["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn payload_reaches_the_pod_through_its_own_secret() {
    let hook = WebhookReceiver::start();
    let w = spec(Q::Redis, "pl").start();
    let (pid, with) = payload_message(&w, &hook, Some(RAW_PAYLOAD), |_| {});
    let (plain_id, plain) = payload_message(&w, &hook, None, |_| {});
    w.send(&with);
    w.send(&plain);
    wait_statuses(&w, &hook, &pid, &[0, 1, 2]);
    wait_statuses(&w, &hook, &plain_id, &[0, 1, 2]);

    let name = name_of(&pid);
    let job = check_secret(&w.ns, &name, &pid, RAW_PAYLOAD);
    let env = env_of(&job);
    assert!(env.contains(&("JOB_WORKER_MESSAGE_ID".into(), pid.clone())));
    assert!(env.contains(&(
        "JOB_WORKER_PAYLOAD".into(),
        "/etc/k8s-job-worker/payload.json".into()
    )));
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(
        pod["volumes"],
        json!([{"name": "job-worker-payload",
                "secret": {"secretName": name, "defaultMode": 420}}])
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"],
        json!([{"name": "job-worker-payload", "mountPath": "/etc/k8s-job-worker", "readOnly": true}])
    );
    // Nothing of the payload in the Job (annotations included).
    assert!(!job.to_string().contains("123456789012345678901234567890"));

    // Without a payload: the message id, and no Secret.
    let plain_name = name_of(&plain_id);
    let (_, plain_job) = get_job(&w.ns, &plain_name);
    let env = env_of(&plain_job);
    assert_eq!(
        env.iter()
            .filter(|(k, _)| k.starts_with("JOB_WORKER_"))
            .collect::<Vec<_>>(),
        vec![&("JOB_WORKER_MESSAGE_ID".to_string(), plain_id.clone())]
    );
    assert!(
        plain_job["spec"]["template"]["spec"]
            .get("volumes")
            .is_none()
    );
    assert_eq!(get_secret(&w.ns, &plain_name).0, 404);
    assert_eq!(w.queued(), 0);

    // The garbage collector deletes the Secret with its Job.
    let t = Instant::now();
    let (code, body) = bed().kube_delete(
        &format!("/apis/batch/v1/namespaces/{}/jobs/{name}", w.ns),
        Some(&json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})),
    );
    assert_eq!(code, 200, "{body}");
    assert!(
        wait_for(Duration::from_secs(60), || get_secret(&w.ns, &name).0
            == 404),
        "the Secret outlived its Job: {}",
        get_secret(&w.ns, &name).1
    );
    eprintln!(
        "[payload] Secret garbage-collected {:.1} s after its Job's deletion",
        t.elapsed().as_secs_f64()
    );
}

#[test]
fn redelivery_adopts_the_job_and_its_secret() {
    let hook = WebhookReceiver::start();
    let w = spec(Q::Redis, "plre").start();
    let (id, body) = payload_message(&w, &hook, Some(r#"["once"]"#), |_| {});
    w.send(&body);
    wait_statuses(&w, &hook, &id, &[0, 1, 2]);
    // The same message again, after its Job and Secret exist.
    w.send(&body);
    assert!(
        wait_for(Duration::from_secs(30), || w.queued() == 0
            && w.logs().contains("already exists, adopted")),
        "redelivery not adopted:\n{}",
        w.logs()
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(statuses(&calls_for(&hook, &id)), vec![0, 1, 2]);
    assert_eq!(w.jobs().len(), 1);
    check_secret(&w.ns, &name_of(&id), &id, r#"["once"]"#);
    let logs = w.logs();
    assert_eq!(
        logs.matches("payload Secret created").count(),
        1,
        "one Secret create:\n{logs}"
    );
    assert!(
        !logs.contains("payload Secret:"),
        "no Secret error:\n{logs}"
    );
}

#[test]
fn a_foreign_secret_of_the_jobs_name_is_a_conflict() {
    let hook = WebhookReceiver::start();
    let w = spec(Q::Redis, "plcf")
        .env("MAX_MESSAGE_BYTES", "3000000")
        .start();
    let (id, body) = payload_message(&w, &hook, Some(r#"{"mine": true}"#), |_| {});
    let name = name_of(&id);
    let (code, v) = bed().kube_post(
        &format!("/api/v1/namespaces/{}/secrets", w.ns),
        &json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "annotations": {"k8s-job-worker.io/message-id": id}},
                "data": {"payload.json": "eyJ0aGVpcnMiOiB0cnVlfQ=="}}),
    );
    assert_eq!(code, 201, "{v}");
    // Over a Secret's 1 MiB (the body limit raised to let it through).
    let big = format!("\"{}\"", "x".repeat(1024 * 1024));
    let (big_id, big_body) = payload_message(&w, &hook, Some(&big), |_| {});
    w.send(&body);
    w.send(&big_body);

    wait_statuses(&w, &hook, &id, &[99]);
    let call = &calls_for(&hook, &id)[0];
    assert_eq!(
        call.body["detail"]["error"]["errorCode"],
        "JOB_NAME_CONFLICT"
    );
    let text = call.body["detail"]["error"]["message"].as_str().unwrap();
    assert!(
        text.contains(&format!("Secret {}/{name} already exists", w.ns)),
        "{text}"
    );
    assert_eq!(get_job(&w.ns, &name).0, 404, "no Job was created");
    let (_, secret) = get_secret(&w.ns, &name);
    assert_eq!(secret["data"]["payload.json"], "eyJ0aGVpcnMiOiB0cnVlfQ==");

    wait_statuses(&w, &hook, &big_id, &[99]);
    let call = &calls_for(&hook, &big_id)[0];
    assert_eq!(call.body["detail"]["error"]["errorCode"], "INVALID_MESSAGE");
    let text = call.body["detail"]["error"]["message"].as_str().unwrap();
    assert!(
        text.contains("payload: is 1048578 bytes, over the 1048576 bytes"),
        "{text}"
    );
    assert!(w.jobs().is_empty());
    assert!(wait_for(Duration::from_secs(10), || w.queued() == 0));
}

#[test]
fn killed_between_job_and_secret_the_next_leader_completes_it() {
    let bin = fault_binary();
    let hook = WebhookReceiver::start();
    let d = spec(Q::Redis, "plkill")
        .env("LEASE_DURATION", "6")
        .env("RENEW_DEADLINE", "4")
        .env("RETRY_PERIOD", "1")
        .die_with_parent()
        .log_tail(60)
        .deploy();
    let t0 = Instant::now();
    let at = |t: Instant| t.duration_since(t0).as_secs_f64();
    let (id, body) = payload_message(&d, &hook, Some(RAW_PAYLOAD), |_| {});
    let name = name_of(&id);

    // Worker A: the fault build, told to die right after a Job create.
    let mut a = d.spawn_with(
        &format!("{}-a", d.instance),
        &bin,
        &[("K8S_JOB_WORKER_FAULT_EXIT_AFTER_JOB_CREATE", "1")],
    );
    assert!(
        wait_for(Duration::from_secs(30), || a.holder() == a.name),
        "A never led:\n{}",
        a.logs()
    );
    let t_a_leads = Instant::now();
    d.send(&body);
    let t_sent = Instant::now();
    let mut exit = None;
    assert!(
        wait_for(Duration::from_secs(30), || {
            exit = a.try_wait().ok().flatten();
            exit.is_some()
        }),
        "A did not die:\n{}",
        a.logs()
    );
    let t_a_dead = Instant::now();
    {
        use std::os::unix::process::ExitStatusExt as _;
        assert_eq!(
            exit.and_then(|e| e.signal()),
            Some(libc::SIGKILL),
            "{exit:?}"
        );
    }
    assert!(
        a.logs().contains("fault injection: SIGKILL"),
        "{}",
        a.logs()
    );
    // Between the two creates: the Job exists, its Secret does not, the
    // message is still queued (A's processing list), nothing was acknowledged.
    assert_eq!(get_job(&d.ns, &name).0, 200, "A created the Job");
    assert_eq!(get_secret(&d.ns, &name).0, 404, "A died before the Secret");
    assert_eq!(d.queued(), 1, "the message stays in the queue");
    assert!(!a.logs().contains("payload Secret created"));

    // Worker B: the ordinary build, takes over and completes the message.
    let b = d.spawn(&format!("{}-b", d.instance));
    let t_b_started = Instant::now();
    assert!(
        wait_for(Duration::from_secs(60), || b.holder() == b.name),
        "B never led:\n{}",
        b.logs()
    );
    let t_b_leads = Instant::now();
    assert!(
        wait_for(Duration::from_secs(60), || get_secret(&d.ns, &name).0
            == 200),
        "B did not create the Secret:\n{}",
        b.logs()
    );
    let t_secret = Instant::now();
    check_secret(&d.ns, &name, &id, RAW_PAYLOAD);
    wait_statuses_across_a_kill(&b, &hook, &id, &[0, 1, 2]);
    let t_done = Instant::now();
    assert!(wait_for(Duration::from_secs(10), || d.queued() == 0));
    let logs = b.logs();
    assert!(
        logs.contains("already exists, adopted"),
        "B adopted A's Job:\n{logs}"
    );
    assert_eq!(logs.matches("payload Secret created").count(), 1, "{logs}");
    assert_eq!(d.jobs().len(), 1);
    eprintln!(
        "[payload] kill timeline (s from start): A leads {:.1}, message sent {:.1}, \
         A SIGKILLed itself after the Job create {:.1}, B started {:.1}, B leads {:.1}, \
         B created the Secret {:.1}, 0/1/2 delivered {:.1}",
        at(t_a_leads),
        at(t_sent),
        at(t_a_dead),
        at(t_b_started),
        at(t_b_leads),
        at(t_secret),
        at(t_done)
    );
}

/// A Secret create refused for good after the Job exists (here by a
/// ValidatingAdmissionPolicy on Secrets in the test namespace; the name check
/// before the Job is a GET, which it lets through): the Job is deleted, the
/// sender gets 0 (maybe 1) then 99 JOB_DELETED (exactly one terminal status), and the
/// message is dead-lettered with the reason.
#[test]
fn a_secret_refused_after_the_job_deletes_the_job_and_dead_letters() {
    let b = bed();
    let hook = WebhookReceiver::start();
    let d = spec(Q::Redis, "plvap").deploy();
    let policy = format!("deny-secrets-{}", d.ns);
    let (code, v) = b.kube_post(
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies",
        &json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": policy},
            "spec": {"failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["CREATE"], "resources": ["secrets"]}]},
                "validations": [{"expression": "false", "message": "no Secrets here (test)"}]}}),
    );
    assert_eq!(code, 201, "{v}");
    let (code, v) = b.kube_post(
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings",
        &json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": policy},
            "spec": {"policyName": policy, "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels":
                    {"kubernetes.io/metadata.name": d.ns}}}}}),
    );
    assert_eq!(code, 201, "{v}");
    let probe = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "probe"}});
    assert!(
        wait_for(Duration::from_secs(30), || {
            let (c, _) = b.kube_post(&format!("/api/v1/namespaces/{}/secrets", d.ns), &probe);
            if c == 201 {
                b.kube_delete(&format!("/api/v1/namespaces/{}/secrets/probe", d.ns), None);
            }
            c != 201
        }),
        "the policy never denied a Secret"
    );

    let w = d.spawn(&format!("{}-pod", d.instance));
    let (id, body) = payload_message(&w, &hook, Some(r#"{"n": 1}"#), |_| {});
    let name = name_of(&id);
    w.send(&body);
    // kwok starts pods without mounting volumes, so a 1 may come before the
    // Job is deleted (a real kubelet would still be retrying the mount).
    let ok = wait_for(Duration::from_secs(90), || {
        statuses(&calls_for(&hook, &id)).contains(&99)
    });
    let got = statuses(&calls_for(&hook, &id));
    assert!(
        ok && (got == [0, 99] || got == [0, 1, 99]),
        "{got:?}\n{}",
        w.logs()
    );
    let call = calls_for(&hook, &id).pop().unwrap();
    assert_eq!(call.body["detail"]["error"]["errorCode"], "JOB_DELETED");
    assert!(
        wait_for(Duration::from_secs(30), || get_job(&w.ns, &name).0 == 404),
        "the Job was not deleted: {}",
        get_job(&w.ns, &name).1
    );
    assert_eq!(get_secret(&w.ns, &name).0, 404);
    assert!(wait_for(Duration::from_secs(10), || w.queued() == 0));
    let dead: Vec<String> = redis::cmd("LRANGE")
        .arg(format!("{}dead", w.redis_prefix))
        .arg(0)
        .arg(-1)
        .query(&mut w.redis_conn())
        .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let record: Value = serde_json::from_str(&dead[0]).unwrap();
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("JOB_CREATE_FAILED: cannot create the payload Secret: ")
            && reason.contains("no Secrets here (test)"),
        "{reason}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(statuses(&calls_for(&hook, &id)), got, "one terminal status");
    assert!(
        w.metric("job_worker_payload_secret_errors_total")
            .unwrap_or(0.0)
            >= 1.0
    );
    for kind in [
        "validatingadmissionpolicybindings",
        "validatingadmissionpolicies",
    ] {
        b.kube_delete(
            &format!("/apis/admissionregistration.k8s.io/v1/{kind}/{policy}"),
            None,
        );
    }
}

#[test]
fn sqs_payload_message_gets_its_secret_and_leaves_the_queue() {
    let hook = WebhookReceiver::start();
    let w = spec(Q::Sqs, "plsqs").start();
    let (id, body) = payload_message(&w, &hook, Some(RAW_PAYLOAD), |_| {});
    w.send(&body);
    wait_statuses(&w, &hook, &id, &[0, 1, 2]);
    check_secret(&w.ns, &name_of(&id), &id, RAW_PAYLOAD);
    assert!(
        wait_for(Duration::from_secs(20), || w.queued() == 0),
        "acknowledged once Job and Secret exist:\n{}",
        w.logs()
    );
}
