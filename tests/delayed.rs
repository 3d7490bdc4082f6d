//! Delayed start on the test bed (with the real Kueue manager, so every Job
//! passes Kueue's webhooks as on a cluster that runs it): a message with
//! `job.startDelaySeconds` gets its Job at once, suspended, and status 0 with
//! `startAfter`; the message leaves the queue; no pod exists before the start
//! time; then 1 and 2. Across a leader kill the new leader starts it from the
//! Job's annotation. A queued one reaches Kueue (label, Workload) only at its
//! start time. Only lower bounds on time are asserted; lateness is logged.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::worker::{
    Deployment, FAST_ELECTION, Launcher, Q, Worker, calls_for, leader_and_standby, seed_message,
    statuses, wait_terminal,
};
use support::{Bed, KUEUE_QUEUE_LABEL, WebhookReceiver, kueue_bed, wait_for};

const ANN_START_AFTER: &str = "k8s-job-worker.io/start-after";

/// The seed message without volume and envRef, started `delay` s after receipt.
fn delayed_message(d: &Deployment, hook: &WebhookReceiver, delay: u64) -> (String, String) {
    seed_message(&d.ns, &hook.url(), |m| {
        if let Some(j) = m["job"].as_object_mut() {
            j.remove("volume");
            j.remove("envRef");
        }
        m["job"]["startDelaySeconds"] = json!(delay);
    })
}

fn rfc3339(v: &Value) -> SystemTime {
    let s = v.as_str().unwrap_or_default();
    k8s_job_worker::clock::parse_rfc3339(s).unwrap_or_else(|| panic!("not RFC 3339: {v}"))
}

fn secs_since(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

fn job_of(d: &Deployment, id: &str) -> Option<Value> {
    d.jobs()
        .into_iter()
        .find(|j| j["metadata"]["annotations"]["k8s-job-worker.io/message-id"] == json!(id))
}

fn pods_of(b: &Bed, ns: &str, job: &str) -> Vec<Value> {
    let (st, v) = b.kube_get(&format!(
        "/api/v1/namespaces/{ns}/pods?labelSelector=batch.kubernetes.io%2Fjob-name%3D{job}"
    ));
    assert_eq!(st, 200, "{v}");
    v["items"].as_array().cloned().unwrap_or_default()
}

/// Waits for status 0 of `id`; returns its `startAfter` and the Job.
fn wait_created(w: &Deployment, hook: &WebhookReceiver, id: &str) -> (SystemTime, Value) {
    assert!(
        wait_for(Duration::from_secs(60), || statuses(&calls_for(hook, id))
            .contains(&0)),
        "no status 0 for {id}"
    );
    let calls = calls_for(hook, id);
    let detail = &calls[0].body["detail"];
    let at = rfc3339(&detail["startAfter"]);
    let job = job_of(w, id).expect("the Job exists");
    assert_eq!(detail["jobName"], job["metadata"]["name"]);
    assert_eq!(
        job["metadata"]["annotations"][ANN_START_AFTER], detail["startAfter"],
        "status 0 carries the Job's start-after annotation"
    );
    (at, job)
}

/// Until `at` (by this machine's clock, which the worker shares), every look
/// finished before `at` finds the Job suspended and without pods. Returns how
/// many looks were made.
fn never_runs_before(b: &Bed, w: &Deployment, id: &str, name: &str, at: SystemTime) -> usize {
    let mut looks = 0;
    while SystemTime::now() < at {
        let job = job_of(w, id).expect("the Job exists");
        let pods = pods_of(b, &w.ns, name);
        if SystemTime::now() < at {
            looks += 1;
            assert_eq!(
                job["spec"]["suspend"], true,
                "suspended before its start: {job}"
            );
            assert!(pods.is_empty(), "a pod before the start time: {pods:?}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    looks
}

/// The lower bounds after the start: the pod was created, and the Job resumed,
/// no earlier than `at`; returns the resume's lateness in seconds.
fn started_not_before(b: &Bed, w: &Deployment, id: &str, name: &str, at: SystemTime) -> f64 {
    let pods = pods_of(b, &w.ns, name);
    assert!(!pods.is_empty(), "the Job ran a pod");
    for p in &pods {
        let created = rfc3339(&p["metadata"]["creationTimestamp"]);
        assert!(created >= at, "pod created {created:?} before {at:?}");
    }
    let job = job_of(w, id).expect("the Job exists");
    assert!(
        job["metadata"]["annotations"]
            .get(ANN_START_AFTER)
            .is_none(),
        "the start removes the annotation: {}",
        job["metadata"]
    );
    let resumed = job["status"]["conditions"]
        .as_array()
        .and_then(|cs| {
            cs.iter()
                .find(|c| c["type"] == "Suspended" && c["status"] == "False")
        })
        .map(|c| rfc3339(&c["lastTransitionTime"]))
        .expect("a Suspended=False condition");
    assert!(resumed >= at, "resumed {resumed:?} before {at:?}");
    secs_since(at, resumed)
}

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn delayed_job_waits_then_runs(q: Q) {
    let b = kueue_bed();
    let hook = WebhookReceiver::start();
    let w: Worker = Launcher::new(q).ns_tag("delay").log_tail(80).start();
    let (id, body) = delayed_message(&w, &hook, 8);
    let sent = SystemTime::now();
    w.send(&body);
    let (at, job) = wait_created(&w, &hook, &id);
    let name = job["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Received after it was sent: the start is at least 8 s after sending
    // (whole seconds, so allow the truncated fraction).
    assert!(
        seconds(at) >= seconds(sent).floor() + 8.0 - 1.0,
        "startAfter {at:?} vs sent {sent:?}"
    );
    // The message left the queue with the Job created (it holds the state).
    assert!(
        wait_for(Duration::from_secs(30), || w.queued() == 0),
        "queue not empty: {}",
        w.queued()
    );
    let acked_before_start = SystemTime::now() < at;
    let looks = never_runs_before(b, &w, &id, &name, at);
    let calls = wait_terminal(&w, &hook, &id, Duration::from_secs(90));
    assert_eq!(statuses(&calls), vec![0, 1, 2]);
    let late = started_not_before(b, &w, &id, &name, at);
    eprintln!(
        "[delayed {q:?}] acknowledged before the start: {acked_before_start}; {looks} looks found it \
         suspended without pods; resumed {late:.1} s after startAfter"
    );
}

#[test]
fn redis_delayed_job_waits_then_runs() {
    delayed_job_waits_then_runs(Q::Redis);
}

#[test]
fn sqs_delayed_job_waits_then_runs() {
    delayed_job_waits_then_runs(Q::Sqs);
}

#[test]
fn redis_delayed_job_starts_on_time_across_a_leader_kill() {
    delayed_job_starts_on_time_across_a_leader_kill(Q::Redis);
}

#[test]
fn sqs_delayed_job_starts_on_time_across_a_leader_kill() {
    delayed_job_starts_on_time_across_a_leader_kill(Q::Sqs);
}

fn delayed_job_starts_on_time_across_a_leader_kill(q: Q) {
    let b = kueue_bed();
    let hook = WebhookReceiver::start();
    let spec = Launcher::new(q)
        .ns_tag("delay-fo")
        .instance_tag("dfo")
        .envs(&FAST_ELECTION)
        .die_with_parent()
        .log_tail(80)
        .deploy();
    let (mut leader, standby) = leader_and_standby(&spec);
    // Long enough for the standby to take over (LEASE_DURATION 6 s) before it.
    let (id, body) = delayed_message(&spec, &hook, 20);
    spec.send(&body);
    let (at, job) = wait_created(&spec, &hook, &id);
    let name = job["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Once 0 is recorded on the Job (a status in flight at a kill may arrive
    // twice; that is failover.rs's subject, not this one's).
    assert!(
        wait_for(Duration::from_secs(30), || job_of(&spec, &id).is_some_and(
            |j| { j["metadata"]["annotations"]["k8s-job-worker.io/delivered"] == json!("0") }
        )),
        "status 0 recorded on the Job"
    );
    leader.kill9();
    let killed = SystemTime::now();
    assert!(
        wait_for(Duration::from_secs(60), || spec.holder() == standby.name),
        "the standby takes the Lease"
    );
    let took_over = SystemTime::now();
    let looks = never_runs_before(b, &spec, &id, &name, at);
    let calls = wait_terminal(&standby, &hook, &id, Duration::from_secs(90));
    // One 0 (from the dead leader, not repeated), then 1 and 2 from the new one.
    assert_eq!(statuses(&calls), vec![0, 1, 2]);
    let late = started_not_before(b, &spec, &id, &name, at);
    eprintln!(
        "[delayed failover {q:?}] killed {:.1} s before startAfter, standby leading {:.1} s before it; \
         {looks} looks before the start; resumed {late:.1} s after startAfter",
        secs_since(killed, at),
        secs_since(took_over, at)
    );
}

#[test]
fn redis_delayed_queued_job_reaches_kueue_at_its_start() {
    let b = kueue_bed();
    let hook = WebhookReceiver::start();
    let ns = b.new_namespace("delay-kq");
    let q = b.kueue_queues(&ns, "4", "Never");
    let w = Launcher::new(Q::Redis).namespace(&ns).log_tail(80).start();
    let (id, body) = seed_message(&ns, &hook.url(), |m| {
        if let Some(j) = m["job"].as_object_mut() {
            j.remove("volume");
            j.remove("envRef");
        }
        m["job"]["queueName"] = json!(q.local_queue);
        m["job"]["startDelaySeconds"] = json!(8);
        m["job"]["resources"] = json!({
            "requests": {"cpu": "1", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "128Mi"},
        });
    });
    w.send(&body);
    let (at, job) = wait_created(&w, &hook, &id);
    let calls = calls_for(&hook, &id);
    assert_eq!(calls[0].body["detail"]["queueName"], json!(q.local_queue));
    let name = job["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    // Before its start: not Kueue's (no label, no Workload), suspended.
    let mut looks = 0;
    while SystemTime::now() < at {
        let job = job_of(&w, &id).expect("the Job exists");
        let workloads = b.kueue_workloads(&ns);
        if SystemTime::now() < at {
            looks += 1;
            assert_eq!(job["spec"]["suspend"], true);
            assert!(
                job["metadata"]["labels"].get(KUEUE_QUEUE_LABEL).is_none(),
                "labelled before its start: {}",
                job["metadata"]
            );
            assert!(
                workloads.is_empty(),
                "a Workload before the start: {workloads:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    let calls = wait_terminal(&w, &hook, &id, Duration::from_secs(90));
    assert_eq!(statuses(&calls), vec![0, 1, 2]);
    let job = job_of(&w, &id).expect("the Job exists");
    assert_eq!(
        job["metadata"]["labels"][KUEUE_QUEUE_LABEL],
        json!(q.local_queue)
    );
    let workloads = b.kueue_workloads(&ns);
    assert_eq!(workloads.len(), 1, "{workloads:?}");
    let wl_created = rfc3339(&workloads[0]["metadata"]["creationTimestamp"]);
    assert!(
        wl_created >= at,
        "Workload created {wl_created:?} before {at:?}"
    );
    let late = started_not_before(b, &w, &id, &name, at);
    eprintln!(
        "[delayed kueue] {looks} looks before the start; Workload {:.1} s and resume {late:.1} s after startAfter",
        secs_since(at, wl_created)
    );
}

#[test]
fn redis_a_due_job_waits_for_a_max_concurrent_jobs_slot() {
    let b = kueue_bed();
    let hook = WebhookReceiver::start();
    let w = Launcher::new(Q::Redis)
        .ns_tag("delay-cap")
        .env("MAX_CONCURRENT_JOBS", "1")
        .log_tail(80)
        .start();
    // The delayed Job first (at the cap intake receives nothing), then a Job
    // whose pod never starts takes the one admitted slot.
    let (id, body) = delayed_message(&w, &hook, 4);
    w.send(&body);
    let (at, job) = wait_created(&w, &hook, &id);
    let name = job["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let (blocker, body) = seed_message(&w.ns, &hook.url(), |m| {
        if let Some(j) = m["job"].as_object_mut() {
            j.remove("volume");
            j.remove("envRef");
        }
        m["job"]["fargate"] =
            json!({"key": "testbed.k8s-job-worker.io/outcome", "value": "pending"});
    });
    w.send(&body);
    let (_, blocker_job) = {
        assert!(
            wait_for(Duration::from_secs(60), || statuses(&calls_for(
                &hook, &blocker
            ))
            .contains(&0)),
            "no status 0 for the blocker"
        );
        ((), job_of(&w, &blocker).expect("the blocker's Job"))
    };
    // Past its start time, with the slot taken, it stays suspended: no pod.
    let mut looks = 0;
    while SystemTime::now() < at + Duration::from_secs(6) {
        let job = job_of(&w, &id).expect("the Job exists");
        assert_eq!(job["spec"]["suspend"], true, "started past the cap: {job}");
        assert!(pods_of(b, &w.ns, &name).is_empty());
        looks += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    // The blocker goes: the due Job takes its slot.
    let bname = blocker_job["metadata"]["name"].as_str().unwrap_or_default();
    let (st, v) = b.kube_delete(
        &format!("/apis/batch/v1/namespaces/{}/jobs/{bname}", w.ns),
        Some(&json!({"propagationPolicy": "Background"})),
    );
    assert!(st == 200 || st == 202, "deleting the blocker: {st} {v}");
    let deleted = SystemTime::now();
    let blocker_calls = wait_terminal(&w, &hook, &blocker, Duration::from_secs(60));
    assert_eq!(statuses(&blocker_calls), vec![0, 99]);
    let calls = wait_terminal(&w, &hook, &id, Duration::from_secs(90));
    assert_eq!(statuses(&calls), vec![0, 1, 2]);
    let late = started_not_before(b, &w, &id, &name, at);
    eprintln!(
        "[delayed cap] {looks} looks past its start found it suspended; resumed {late:.1} s after \
         startAfter, {:.1} s after the blocker's delete",
        late - secs_since(at, deleted)
    );
}

/// The README's caveat, on the real Kueue (v0.17): in a namespace with a
/// LocalQueue named `default`, Kueue's webhook labels a new Job that has no
/// queue name with `default` (LocalQueueDefaulting), so a delayed Job there
/// would be Kueue's at once. Elsewhere an unlabelled suspended Job is left
/// alone, and the label may be added later while it is suspended.
#[test]
fn kueue_labels_unlabelled_jobs_only_where_a_default_local_queue_exists() {
    let b = kueue_bed();
    let job = |name: &str| {
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "annotations": {ANN_START_AFTER: "2030-01-01T00:00:00Z"}},
            "spec": {"suspend": true, "backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "job", "image": "busybox",
                    "resources": {"requests": {"cpu": "1", "memory": "64Mi"}}}]}}},
        })
    };
    let plain = b.new_namespace("delay-nodef");
    let q = b.kueue_queues(&plain, "4", "Never");
    let (st, v) = b.kube_post(
        &format!("/apis/batch/v1/namespaces/{plain}/jobs"),
        &job("a"),
    );
    assert_eq!(st, 201, "{v}");
    assert!(
        v["metadata"]["labels"].get(KUEUE_QUEUE_LABEL).is_none(),
        "{}",
        v["metadata"]
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        b.kueue_workloads(&plain).is_empty(),
        "Kueue ignores an unlabelled Job"
    );
    // Labelled later, while suspended: accepted, and Kueue takes it.
    let (st, v) = b.kube_patch(
        &format!("/apis/batch/v1/namespaces/{plain}/jobs/a"),
        &json!({"metadata": {"labels": {KUEUE_QUEUE_LABEL: q.local_queue}}}),
    );
    assert_eq!(
        st, 200,
        "Kueue's webhook allows the label on a suspended Job: {v}"
    );
    assert!(
        wait_for(Duration::from_secs(30), || b.kueue_workloads(&plain).len()
            == 1),
        "a Workload for the labelled Job"
    );

    let with_default = b.new_namespace("delay-def");
    let cq = b.kueue_queues(&with_default, "4", "Never").cluster_queue;
    b.kueue_local_queue(&with_default, "default", &cq);
    let (st, v) = b.kube_post(
        &format!("/apis/batch/v1/namespaces/{with_default}/jobs"),
        &job("b"),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        v["metadata"]["labels"][KUEUE_QUEUE_LABEL],
        json!("default"),
        "LocalQueueDefaulting labels it at creation: {}",
        v["metadata"]
    );
}
