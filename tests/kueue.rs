//! The worker as a Kueue producer, on the test bed with the real Kueue
//! manager (`support::kueue_bed()`, started only for this binary): queued
//! messages become suspended, labelled Jobs that Kueue admits within a
//! ClusterQueue's quota; a Job waiting in its queue is never timed out, and a
//! preempted one waits again and ends once. Also the result and the real
//! failure back to the sender (status 2 `result`, status 3 `exitCode`,
//! `reason`, `terminationMessage`), through the kwok termination-message stage.
//!
//! A message cannot set pod annotations, and the kwok stages read how long a
//! pod runs and its termination message from pod annotations. So the tests
//! hold the ClusterQueue (`stopPolicy: Hold`), let the worker create its
//! suspended Jobs, add those annotations to each Job's pod template (allowed
//! on a suspended Job that never ran), then release the queue.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};
use support::worker::{Launcher, Q, Worker, calls_for, seed_message, statuses, wait_terminal};
use support::{
    Bed, KUEUE_API, KUEUE_PRIORITY_LABEL, KUEUE_QUEUE_LABEL, WebhookReceiver, kueue_bed, unique,
    wait_for,
};

const RUN_SECONDS: &str = "testbed.k8s-job-worker.io/run-seconds";
const TERMINATION_MESSAGE: &str = "testbed.k8s-job-worker.io/termination-message";
const EXIT_CODE: &str = "testbed.k8s-job-worker.io/exit-code";

/// A worker in `ns` (where the LocalQueue is) with `extra` settings.
fn start(ns: &str, extra: &[(&str, &str)]) -> Worker {
    Launcher::new(Q::Redis)
        .namespace(ns)
        .envs(extra)
        .log_tail(80)
        .start()
}

/// The seed message on `queue` asking for 1 CPU, without the volume.
fn queued_message(w: &Worker, hook: &WebhookReceiver, queue: &str) -> (String, String) {
    queued_message_with(w, hook, queue, |_| {})
}

fn queued_message_with(
    w: &Worker,
    hook: &WebhookReceiver,
    queue: &str,
    tweak: impl FnOnce(&mut Value),
) -> (String, String) {
    seed_message(&w.ns, &hook.url(), |m| {
        if let Some(job) = m["job"].as_object_mut() {
            job.remove("volume");
            job.remove("volume:");
        }
        m["job"]["queueName"] = json!(queue);
        m["job"]["resources"] = json!({
            "requests": {"cpu": "1", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "128Mi"},
        });
        tweak(m);
    })
}

fn cq_path(cq: &str) -> String {
    format!("{KUEUE_API}/clusterqueues/{cq}")
}

fn cq_active(b: &Bed, cq: &str) -> Option<bool> {
    let (_, v) = b.kube_get(&cq_path(cq));
    v["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Active")
        .map(|c| c["status"] == "True")
}

/// Stops admission to ClusterQueue `cq` (admitted Workloads keep running).
fn hold(b: &Bed, cq: &str) {
    let (st, v) = b.kube_patch(&cq_path(cq), &json!({"spec": {"stopPolicy": "Hold"}}));
    assert_eq!(st, 200, "holding {cq}: {v}");
    assert!(
        wait_for(Duration::from_secs(30), || cq_active(b, cq) == Some(false)),
        "ClusterQueue {cq} still Active after Hold"
    );
}

fn release(b: &Bed, cq: &str) {
    let (st, v) = b.kube_patch(&cq_path(cq), &json!({"spec": {"stopPolicy": "None"}}));
    assert_eq!(st, 200, "releasing {cq}: {v}");
}

/// Adds `annotations` to the pod template of suspended Job `ns/name`.
fn annotate_pods(b: &Bed, ns: &str, name: &str, annotations: Value) {
    let path = format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}");
    let (st, v) = b.kube_patch(
        &path,
        &json!({"spec": {"template": {"metadata": {"annotations": annotations}}}}),
    );
    assert_eq!(st, 200, "annotating the pods of {ns}/{name}: {v}");
}

fn job_name(j: &Value) -> String {
    j["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn message_id(j: &Value) -> String {
    j["metadata"]["annotations"]["k8s-job-worker.io/message-id"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits for `n` Jobs of the worker, all suspended; returns them.
fn wait_jobs(w: &Worker, n: usize) -> Vec<Value> {
    let mut jobs = Vec::new();
    let ok = wait_for(Duration::from_secs(60), || {
        jobs = w.jobs();
        jobs.len() == n
    });
    assert!(ok, "{} of {n} Jobs after 60 s\n{}", jobs.len(), w.logs());
    for j in &jobs {
        assert_eq!(j["spec"]["suspend"], true, "{}", j["spec"]);
    }
    jobs
}

fn time(v: &Value) -> Option<SystemTime> {
    k8s_job_worker::clock::parse_rfc3339(v.as_str()?)
}

/// When a Job was last unsuspended (its Suspended condition turned False).
fn resumed_at(j: &Value) -> Option<SystemTime> {
    j["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Suspended" && c["status"] == "False")
        .and_then(|c| time(&c["lastTransitionTime"]))
}

fn pods_running(b: &Bed, ns: &str) -> usize {
    let (_, v) = b.kube_get(&format!("/api/v1/namespaces/{ns}/pods"));
    v["items"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter(|p| p["status"]["phase"] == "Running")
                .count()
        })
        .unwrap_or(0)
}

fn view(w: &Worker, id: &str) -> Value {
    let (st, body) = w.get(&format!("/jobs/{id}"));
    assert_eq!(st, 200, "/jobs/{id}: {body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// ClusterQueue of 2 CPU, six 1-CPU messages, POD_START_TIMEOUT=20, pods of
/// 15 s: never more than two pods at once, all six 0, 1, 2, no 99 although
/// most wait in the queue longer than 20 s.
#[test]
fn six_one_cpu_jobs_share_a_two_cpu_quota_without_timeouts() {
    let b = kueue_bed();
    let ns = b.new_namespace("kq-six");
    let q = b.kueue_queues(&ns, "2", "Never");
    hold(b, &q.cluster_queue);
    let hook = WebhookReceiver::start();
    let w = start(
        &ns,
        &[
            ("POD_START_TIMEOUT", "20"),
            ("ALLOWED_QUEUES", &q.local_queue),
            ("MAX_CONCURRENT_JOBS", "2"),
        ],
    );
    let msgs: Vec<(String, String)> = (0..6)
        .map(|_| queued_message(&w, &hook, &q.local_queue))
        .collect();
    let bodies: Vec<String> = msgs.iter().map(|(_, b)| b.clone()).collect();
    w.send_all(&bodies);
    let jobs = wait_jobs(&w, 6);
    let first_created = Instant::now();
    for j in &jobs {
        assert_eq!(j["metadata"]["labels"][KUEUE_QUEUE_LABEL], q.local_queue);
        annotate_pods(b, &ns, &job_name(j), json!({RUN_SECONDS: "15"}));
    }
    // Queued: status 0 with queueName, and /jobs says so.
    for (id, _) in &msgs {
        assert!(
            wait_for(Duration::from_secs(20), || !calls_for(&hook, id).is_empty()),
            "no status 0 for {id}"
        );
        let c0 = &calls_for(&hook, id)[0].body;
        assert_eq!(c0["status"], 0);
        assert_eq!(c0["detail"]["queueName"], q.local_queue, "{c0}");
        let v = view(&w, id);
        assert_eq!(v["admission"], "queued", "{v}");
        assert_eq!(v["queueName"], q.local_queue, "{v}");
    }
    // Keep them queued a while so that the later ones wait well past 20 s.
    while first_created.elapsed() < Duration::from_secs(8) {
        std::thread::sleep(Duration::from_millis(200));
    }
    let released = Instant::now();
    release(b, &q.cluster_queue);

    let mut max_running = 0;
    let all_done = wait_for(Duration::from_secs(180), || {
        max_running = max_running.max(pods_running(b, &ns));
        msgs.iter().all(|(id, _)| {
            statuses(&calls_for(&hook, id))
                .iter()
                .any(|s| [2, 3, 99].contains(s))
        })
    });
    let drained = released.elapsed();
    assert!(all_done, "not all six ended within 180 s\n{}", w.logs());
    // Nothing after the terminal status.
    std::thread::sleep(Duration::from_secs(3));
    let by_name: HashMap<String, Value> =
        w.jobs().into_iter().map(|j| (message_id(&j), j)).collect();
    let mut waits = Vec::new();
    for (i, (id, _)) in msgs.iter().enumerate() {
        let calls = calls_for(&hook, id);
        assert_eq!(
            statuses(&calls),
            vec![0, 1, 2],
            "message {i}: {:#?}",
            calls.iter().map(|c| &c.body).collect::<Vec<_>>()
        );
        let j = &by_name[id];
        let created = time(&j["metadata"]["creationTimestamp"]).expect("creationTimestamp");
        let admitted = resumed_at(j).expect("a Suspended=False condition");
        let waited = admitted.duration_since(created).unwrap_or_default();
        let duration = calls[2].body["detail"]["duration"].as_u64().unwrap_or(999);
        // Duration counts from startTime (set on admission), not creation.
        assert!(
            (14..=25).contains(&duration),
            "message {i}: duration {duration} s (waited {} s)",
            waited.as_secs()
        );
        assert_eq!(view(&w, id)["admission"], "admitted");
        waits.push((waited.as_secs(), duration));
    }
    eprintln!(
        "[kueue] six 1-CPU Jobs, 2-CPU quota, 15 s pods: (waited s, duration s) per Job {waits:?}; \
         max pods running {max_running}; drained {:.1} s after release",
        drained.as_secs_f64()
    );
    assert!(
        max_running <= 2,
        "{max_running} pods ran at once under a 2-CPU quota"
    );
    assert!(max_running >= 1);
    let long = waits.iter().filter(|(w, _)| *w > 20).count();
    assert!(
        long >= 4,
        "expected most Jobs to wait > 20 s (POD_START_TIMEOUT): {waits:?}"
    );
}

/// A running queued Job preempted by a higher WorkloadPriorityClass goes back
/// to waiting (suspended, pod deleted) and still ends with exactly one
/// terminal status, long after POD_START_TIMEOUT.
#[test]
fn a_preempted_job_waits_again_and_ends_once() {
    let b = kueue_bed();
    let ns = b.new_namespace("kq-pre");
    let q = b.kueue_queues(&ns, "1", "LowerPriority");
    let high = unique("high");
    b.kueue_priority_class(&high, 1000);
    hold(b, &q.cluster_queue);
    let hook = WebhookReceiver::start();
    let w = start(&ns, &[("POD_START_TIMEOUT", "8")]);
    let (id, body) = queued_message(&w, &hook, &q.local_queue);
    w.send(&body);
    let job = wait_jobs(&w, 1).remove(0);
    let name = job_name(&job);
    annotate_pods(b, &ns, &name, json!({RUN_SECONDS: "12"}));
    release(b, &q.cluster_queue);
    assert!(
        wait_for(Duration::from_secs(60), || statuses(&calls_for(&hook, &id))
            == vec![0, 1]),
        "no status 1: {:?}\n{}",
        statuses(&calls_for(&hook, &id)),
        w.logs()
    );
    // A competing Job of a higher priority, straight through the API.
    let competing = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "urgent", "labels": {
            KUEUE_QUEUE_LABEL: q.local_queue, KUEUE_PRIORITY_LABEL: high}},
        "spec": {"suspend": true, "backoffLimit": 0, "template": {
            "metadata": {"annotations": {RUN_SECONDS: "15"}},
            "spec": {"restartPolicy": "Never", "containers": [{
                "name": "main", "image": "registry.example/urgent:1",
                "resources": {"requests": {"cpu": "1", "memory": "64Mi"}}}]}}},
    });
    let (st, v) = b.kube_post(&format!("/apis/batch/v1/namespaces/{ns}/jobs"), &competing);
    assert_eq!(st, 201, "{v}");
    let path = format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}");
    let mut seen_queued_again = false;
    let requeued = wait_for(Duration::from_secs(30), || {
        let (_, j) = b.kube_get(&path);
        if j["spec"]["suspend"] == true && view(&w, &id)["admission"] == "queued" {
            seen_queued_again = true;
        }
        seen_queued_again
    });
    assert!(
        requeued,
        "the worker's Job was not suspended again (or /jobs did not say queued)\nkueue log:\n{}",
        b.log_tail("kueue", 30)
    );
    let preempted_at = Instant::now();
    // While it waits again (15 s > POD_START_TIMEOUT): nothing more.
    std::thread::sleep(Duration::from_secs(10));
    assert_eq!(statuses(&calls_for(&hook, &id)), vec![0, 1]);
    let calls = wait_terminal(&w, &hook, &id, Duration::from_secs(90));
    let waited_again = preempted_at.elapsed();
    std::thread::sleep(Duration::from_secs(3));
    let calls_after = calls_for(&hook, &id);
    assert_eq!(
        statuses(&calls_after),
        vec![0, 1, 2],
        "{:#?}",
        calls.iter().map(|c| &c.body).collect::<Vec<_>>()
    );
    let (_, urgent) = b.kube_get(&format!("/apis/batch/v1/namespaces/{ns}/jobs/urgent"));
    let done = urgent["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Complete" && c["status"] == "True")
    });
    assert!(done, "the urgent Job: {}", urgent["status"]);
    let duration = calls_after[2].body["detail"]["duration"]
        .as_u64()
        .unwrap_or(999);
    let (_, j) = b.kube_get(&path);
    let (_, pods) = b.kube_get(&format!("/api/v1/namespaces/{ns}/pods"));
    let pods: Vec<Value> = pods["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|p| {
            json!([
                p["metadata"]["name"],
                p["metadata"]["creationTimestamp"],
                p["status"]["phase"],
                p["status"]["containerStatuses"][0]["state"]
            ])
        })
        .collect();
    eprintln!(
        "[kueue] preempted Job status {}\npods {pods:?}",
        j["status"]
    );
    eprintln!(
        "[kueue] preempted Job: ended {:.1} s after preemption, status 2 duration {duration} s",
        waited_again.as_secs_f64()
    );
    // The duration of the last run only, from the startTime Kubernetes resets
    // on resume. (Kueue restores the pod template it recorded when it evicts a
    // Job, dropping the run-seconds annotation added later: the second pod runs
    // kwok's default 1 s.)
    let start = time(&j["status"]["startTime"]).expect("startTime");
    let end = time(&j["status"]["completionTime"]).expect("completionTime");
    let run = end.duration_since(start).unwrap_or_default().as_secs();
    assert_eq!(duration, run, "duration is completionTime - startTime");
    assert!(
        duration + 10 < waited_again.as_secs(),
        "duration {duration} s counts from the resume, not from the first start"
    );
}

/// ALLOWED_QUEUES refuses a queue not listed (POLICY_DENIED naming
/// job.queueName); a queued message without resources is INVALID_MESSAGE
/// naming job.resources. Neither creates a Job. A message without a
/// queueName goes to DEFAULT_QUEUE_NAME and runs through Kueue.
#[test]
fn queue_policy_and_resources_are_enforced() {
    let b = kueue_bed();
    let ns = b.new_namespace("kq-pol");
    let q = b.kueue_queues(&ns, "1", "Never");
    let hook = WebhookReceiver::start();
    let w = start(
        &ns,
        &[
            ("ALLOWED_QUEUES", &q.local_queue),
            ("DEFAULT_QUEUE_NAME", &q.local_queue),
        ],
    );
    let (denied, body) = queued_message(&w, &hook, "someone-elses-queue");
    w.send(&body);
    let (bare, body) = queued_message_with(&w, &hook, &q.local_queue, |m| {
        if let Some(job) = m["job"].as_object_mut() {
            job.remove("resources");
        }
    });
    w.send(&body);
    let c = wait_terminal(&w, &hook, &denied, Duration::from_secs(30));
    assert_eq!(statuses(&c), vec![99]);
    let err = &c[0].body["detail"]["error"];
    assert_eq!(err["errorCode"], "POLICY_DENIED", "{err}");
    let text = err["message"].as_str().unwrap_or("");
    assert!(
        text.contains("ALLOWED_QUEUES") && text.contains("job.queueName"),
        "{text}"
    );
    let c = wait_terminal(&w, &hook, &bare, Duration::from_secs(30));
    assert_eq!(statuses(&c), vec![99]);
    let err = &c[0].body["detail"]["error"];
    assert_eq!(err["errorCode"], "INVALID_MESSAGE", "{err}");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or("")
            .contains("job.resources"),
        "{err}"
    );
    assert!(w.jobs().is_empty(), "{:?}", w.jobs());

    let (defaulted, body) = queued_message_with(&w, &hook, &q.local_queue, |m| {
        if let Some(job) = m["job"].as_object_mut() {
            job.remove("queueName");
        }
    });
    w.send(&body);
    let c = wait_terminal(&w, &hook, &defaulted, Duration::from_secs(60));
    assert_eq!(statuses(&c), vec![0, 1, 2]);
    assert_eq!(c[0].body["detail"]["queueName"], q.local_queue);
    let jobs = w.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0]["metadata"]["labels"][KUEUE_QUEUE_LABEL],
        q.local_queue
    );
    // Kueue made a Workload for it and admitted it.
    let admitted = b.kueue_workloads(&ns).iter().any(|wl| {
        wl["metadata"]["ownerReferences"][0]["name"] == jobs[0]["metadata"]["name"]
            && wl["status"]["admission"].is_object()
    });
    assert!(admitted, "no admitted Workload for the defaulted Job");
}

/// A success with a JSON termination message: status 2 with `result` parsed.
/// A failure: status 3 with exitCode, reason and terminationMessage. Neither
/// message reaches the worker's logs.
#[test]
fn result_and_failure_come_back_from_the_container() {
    let b = kueue_bed();
    let ns = b.new_namespace("kq-res");
    let q = b.kueue_queues(&ns, "2", "Never");
    hold(b, &q.cluster_queue);
    let hook = WebhookReceiver::start();
    let w = start(&ns, &[]);
    let result_canary = unique("result-canary");
    let failure_canary = unique("failure-canary");
    let (ok_id, ok_body) = queued_message(&w, &hook, &q.local_queue);
    let (fail_id, fail_body) = queued_message_with(&w, &hook, &q.local_queue, |m| {
        m["job"]["fargate"] = json!({"key": "testbed.k8s-job-worker.io/outcome", "value": "fail"});
    });
    w.send_all(&[ok_body, fail_body]);
    for j in wait_jobs(&w, 2) {
        let ann = if message_id(&j) == ok_id {
            json!({RUN_SECONDS: "1", TERMINATION_MESSAGE:
                json!({"rows": 7, "canary": result_canary}).to_string()})
        } else {
            json!({RUN_SECONDS: "1", EXIT_CODE: "3", TERMINATION_MESSAGE:
                format!("Traceback (most recent call last):\n  boom {failure_canary}")})
        };
        annotate_pods(b, &ns, &job_name(&j), ann);
    }
    release(b, &q.cluster_queue);

    let c = wait_terminal(&w, &hook, &ok_id, Duration::from_secs(60));
    assert_eq!(statuses(&c), vec![0, 1, 2]);
    assert_eq!(
        c[2].body["detail"]["result"],
        json!({"rows": 7, "canary": result_canary}),
        "{}",
        c[2].body
    );

    let c = wait_terminal(&w, &hook, &fail_id, Duration::from_secs(60));
    assert_eq!(statuses(&c), vec![0, 1, 3]);
    let err = &c[2].body["detail"]["error"];
    assert_eq!(err["errorCode"], "BACKOFF_LIMIT_EXCEEDED", "{err}");
    assert_eq!(err["exitCode"], 3, "{err}");
    assert_eq!(err["reason"], "Error", "{err}");
    assert_eq!(
        err["terminationMessage"],
        format!("Traceback (most recent call last):\n  boom {failure_canary}"),
        "{err}"
    );
    // Payload-like data: never logged.
    let logs = w.logs();
    assert!(!logs.contains(&result_canary), "result logged");
    assert!(
        !logs.contains(&failure_canary),
        "termination message logged"
    );
}

/// MAX_QUEUED_JOBS bounds the suspended Jobs: with the ClusterQueue held and
/// a bound of 2, four messages make two Jobs and two stay in the queue; once
/// Kueue admits, the rest follow and all four end 0, 1, 2.
#[test]
fn max_queued_jobs_bounds_the_waiting_jobs() {
    let b = kueue_bed();
    let ns = b.new_namespace("kq-max");
    let q = b.kueue_queues(&ns, "4", "Never");
    hold(b, &q.cluster_queue);
    let hook = WebhookReceiver::start();
    let w = start(&ns, &[("MAX_QUEUED_JOBS", "2")]);
    let msgs: Vec<(String, String)> = (0..4)
        .map(|_| queued_message(&w, &hook, &q.local_queue))
        .collect();
    let bodies: Vec<String> = msgs.iter().map(|(_, b)| b.clone()).collect();
    w.send_all(&bodies);
    wait_jobs(&w, 2);
    // A lower bound a slow machine cannot break: it stays at two.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(w.jobs().len(), 2, "MAX_QUEUED_JOBS=2 exceeded");
    assert_eq!(w.queued(), 2, "two messages wait in the queue");
    release(b, &q.cluster_queue);
    for (id, _) in &msgs {
        let c = wait_terminal(&w, &hook, id, Duration::from_secs(90));
        assert_eq!(statuses(&c), vec![0, 1, 2], "{id}");
    }
    assert_eq!(w.jobs().len(), 4);
}

/// A queued message with a payload: the worker creates the suspended Job and
/// its Secret (acknowledging only then); Kueue admits the Job, which runs with
/// the Secret mounted. The Secret carries the worker's labels, not Kueue's.
#[test]
fn a_queued_payload_job_gets_its_secret_and_is_admitted() {
    let b = kueue_bed();
    let ns = b.new_namespace("kq-pl");
    let q = b.kueue_queues(&ns, "1", "Never");
    let hook = WebhookReceiver::start();
    let w = start(&ns, &[("ALLOWED_QUEUES", &q.local_queue)]);
    let (id, body) = queued_message_with(&w, &hook, &q.local_queue, |m| {
        m["payload"] = json!({"rows": [1, 2, 3]});
    });
    w.send(&body);
    assert_eq!(
        statuses(&wait_terminal(&w, &hook, &id, Duration::from_secs(120))),
        vec![0, 1, 2]
    );
    let name = k8s_job_worker::contract::job_name("bb", &id);
    let (code, job) = b.kube_get(&format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}"));
    assert_eq!(code, 200, "{job}");
    assert_eq!(
        job["metadata"]["labels"][KUEUE_QUEUE_LABEL],
        json!(q.local_queue)
    );
    let (code, secret) = b.kube_get(&format!("/api/v1/namespaces/{ns}/secrets/{name}"));
    assert_eq!(code, 200, "{secret}");
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        job["metadata"]["uid"]
    );
    assert!(
        secret["metadata"]["labels"]
            .get(KUEUE_QUEUE_LABEL)
            .is_none()
    );
    assert_eq!(
        job["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"],
        json!(name)
    );
    assert!(
        !b.kueue_workloads(&ns).is_empty(),
        "Kueue made a Workload of the Job"
    );
    assert!(wait_for(Duration::from_secs(10), || w.queued() == 0));
}

/// Cancel of a Job waiting in a Kueue queue (suspended, its quota taken by a
/// running one) and of the running, admitted one: the waiting Job gets 0 then
/// 3 CANCELLED and never a pod, and its Workload goes with it; the running one
/// 0, 1, 3 CANCELLED. The real Kueue manager admits and queues them.
#[test]
fn cancel_of_a_queued_and_an_admitted_job() {
    let b = kueue_bed();
    let ns = b.new_namespace("kq-cx");
    let q = b.kueue_queues(&ns, "1", "Never");
    let hook = WebhookReceiver::start();
    let w = start(&ns, &[("ALLOWED_QUEUES", &q.local_queue)]);
    // outcome=run: the admitted pod runs until it is deleted.
    let run = |m: &mut Value| {
        m["job"]["fargate"] = json!({"key": "testbed.k8s-job-worker.io/outcome", "value": "run"});
    };
    let (running, body) = queued_message_with(&w, &hook, &q.local_queue, run);
    w.send(&body);
    assert!(
        wait_for(Duration::from_secs(60), || statuses(&calls_for(
            &hook, &running
        )) == vec![0, 1]),
        "the first Job is admitted and runs: {:?}\n{}",
        statuses(&calls_for(&hook, &running)),
        w.logs()
    );
    let (waiting, body) = queued_message_with(&w, &hook, &q.local_queue, run);
    w.send(&body);
    let name = k8s_job_worker::contract::job_name("bb", &waiting);
    assert!(
        wait_for(Duration::from_secs(30), || {
            let v = w.get(&format!("/jobs/{waiting}")).1;
            serde_json::from_str::<Value>(&v).is_ok_and(|v| v["admission"] == "queued")
                && statuses(&calls_for(&hook, &waiting)) == vec![0]
        }),
        "the second one waits in the queue: {}",
        w.get(&format!("/jobs/{waiting}")).1
    );
    let cancel = |id: &str| json!({"id": id, "action": "cancel"}).to_string();
    w.send(&cancel(&waiting));
    let calls = wait_terminal(&w, &hook, &waiting, Duration::from_secs(60));
    assert_eq!(statuses(&calls), vec![0, 3]);
    assert_eq!(calls[1].body["detail"]["error"]["errorCode"], "CANCELLED");
    assert!(
        wait_for(Duration::from_secs(30), || b
            .kube_get(&format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}"))
            .0
            == 404),
        "the waiting Job is gone"
    );
    let pods = b.kube_get(&format!(
        "/api/v1/namespaces/{ns}/pods?labelSelector=batch.kubernetes.io%2Fjob-name%3D{name}"
    ));
    assert_eq!(
        pods.1["items"].as_array().map(Vec::len),
        Some(0),
        "never a pod"
    );
    assert_eq!(
        statuses(&calls_for(&hook, &running)),
        vec![0, 1],
        "the other runs on"
    );
    w.send(&cancel(&running));
    let calls = wait_terminal(&w, &hook, &running, Duration::from_secs(60));
    assert_eq!(statuses(&calls), vec![0, 1, 3]);
    assert_eq!(calls[2].body["detail"]["error"]["errorCode"], "CANCELLED");
    assert!(
        wait_for(Duration::from_secs(60), || b
            .kueue_workloads(&ns)
            .is_empty()),
        "their Workloads go with them: {:?}",
        b.kueue_workloads(&ns)
    );
}
