//! The test bed with a real Kueue manager (`support::kueue_bed()`), driven
//! directly through the API server (no worker): Kueue admits queued Jobs
//! within a ClusterQueue's quota and kwok runs them; WorkloadPriorityClass
//! preemption; the kwok stages' termination message. See testbed/README.md.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Bed, KUEUE_PRIORITY_LABEL, KUEUE_QUEUE_LABEL, kueue_bed, wait_for};

/// A one-container Job asking for `cpu`; queued on `queue` (label, created
/// suspended as a Kueue producer does) when given. `annotations` go on the pod.
fn job(name: &str, queue: Option<&str>, cpu: &str, annotations: Value) -> Value {
    let mut labels = json!({});
    if let Some(q) = queue {
        labels[KUEUE_QUEUE_LABEL] = json!(q);
    }
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "suspend": queue.is_some(),
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "main", "image": "registry.example/kueue-bed:1",
                        "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}},
                    }],
                },
            },
        },
    })
}

fn create_job(b: &Bed, ns: &str, body: &Value) -> Value {
    let (st, v) = b.kube_post(&format!("/apis/batch/v1/namespaces/{ns}/jobs"), body);
    assert_eq!(st, 201, "creating Job: {v}");
    v
}

fn get_job(b: &Bed, ns: &str, name: &str) -> Value {
    let (st, v) = b.kube_get(&format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}"));
    assert_eq!(st, 200, "GET Job {ns}/{name}: {v}");
    v
}

fn condition(obj: &Value, kind: &str) -> bool {
    obj["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    })
}

fn suspended(j: &Value) -> bool {
    j["spec"]["suspend"].as_bool().unwrap_or(false)
}

/// Waits until Job `name` has condition `kind` (Complete, Failed); returns it.
fn wait_condition(b: &Bed, ns: &str, name: &str, kind: &str, timeout: Duration) -> Value {
    let mut last = Value::Null;
    let ok = wait_for(timeout, || {
        last = get_job(b, ns, name);
        condition(&last, kind)
    });
    assert!(
        ok,
        "Job {ns}/{name} not {kind} after {timeout:?}: {}\nkueue log:\n{}",
        last["status"],
        b.log_tail("kueue", 30)
    );
    last
}

fn admitted_workloads(b: &Bed, ns: &str) -> usize {
    b.kueue_workloads(ns)
        .iter()
        .filter(|w| condition(w, "Admitted") && !condition(w, "Finished"))
        .count()
}

#[test]
fn kueue_runs_with_webhooks_against_this_api_server() {
    let b = kueue_bed();
    let k = b.kueue.as_ref().expect("a Kueue bed");
    assert_eq!(k.version, "v0.17.0");
    assert!(
        k.webhooks,
        "bed.py reports Kueue's webhooks as not registered"
    );
    let (st, v) = b.kube_get("/version");
    assert_eq!(st, 200);
    assert_eq!(v["gitVersion"], "v1.36.3", "the bed's kube-apiserver: {v}");
    // The webhook configurations point at 127.0.0.1, not a Service.
    let (st, v) = b.kube_get(
        "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/kueue-mutating-webhook-configuration",
    );
    assert_eq!(st, 200, "{v}");
    let hooks = v["webhooks"].as_array().cloned().unwrap_or_default();
    let job_hook = hooks
        .iter()
        .find(|h| h["name"] == "mjob.kb.io")
        .expect("mjob.kb.io registered");
    assert!(
        job_hook["clientConfig"]["url"]
            .as_str()
            .unwrap_or_default()
            .starts_with("https://127.0.0.1:"),
        "{job_hook}"
    );
}

#[test]
fn webhook_suspends_a_queued_job_created_unsuspended() {
    let b = kueue_bed();
    let ns = b.new_namespace("kq-hook");
    let mut body = job("unsuspended", Some("no-such-queue"), "1", json!({}));
    body["spec"]["suspend"] = json!(false);
    let created = create_job(b, &ns, &body);
    assert!(
        suspended(&created),
        "Kueue's mutating webhook did not suspend a Job with a queue name: {}",
        created["spec"]
    );
    // No LocalQueue of that name: the Job stays suspended, its Workload inadmissible.
    std::thread::sleep(Duration::from_secs(2));
    assert!(suspended(&get_job(b, &ns, "unsuspended")));
}

#[test]
fn kueue_admits_a_queued_job_and_kwok_completes_it() {
    let b = kueue_bed();
    let ns = b.new_namespace("kq-one");
    let q = b.kueue_queues(&ns, "2", "Never");
    let t0 = Instant::now();
    create_job(
        b,
        &ns,
        &job(
            "one",
            Some(&q.local_queue),
            "1",
            json!({"testbed.k8s-job-worker.io/run-seconds": "0.5"}),
        ),
    );
    let mut admitted_at = None;
    assert!(
        wait_for(Duration::from_secs(30), || {
            let j = get_job(b, &ns, "one");
            if !suspended(&j) && admitted_at.is_none() {
                admitted_at = Some(t0.elapsed());
            }
            condition(&j, "Complete")
        }),
        "Job not Complete after 30 s: {}\nkueue log:\n{}",
        get_job(b, &ns, "one")["status"],
        b.log_tail("kueue", 30)
    );
    let admitted_at = admitted_at.expect("the Job was unsuspended before it completed");
    eprintln!(
        "[kueue_bed] admitted (unsuspended) after {:.2}s, Complete after {:.2}s",
        admitted_at.as_secs_f64(),
        t0.elapsed().as_secs_f64()
    );
    let j = get_job(b, &ns, "one");
    assert_eq!(j["status"]["succeeded"], 1, "{}", j["status"]);
    // Kueue marks the Workload Finished a moment after the Job completes.
    let mut wls = b.kueue_workloads(&ns);
    wait_for(Duration::from_secs(20), || {
        wls = b.kueue_workloads(&ns);
        wls.len() == 1 && condition(&wls[0], "Finished")
    });
    assert_eq!(wls.len(), 1, "one Workload for the Job: {wls:?}");
    let wl = &wls[0];
    assert_eq!(
        wl["status"]["admission"]["clusterQueue"], q.cluster_queue,
        "{}",
        wl["status"]
    );
    assert!(condition(wl, "Finished"), "{}", wl["status"]);
}

#[test]
fn quota_of_two_cpus_admits_two_of_three_one_cpu_jobs() {
    let b = kueue_bed();
    let ns = b.new_namespace("kq-quota");
    let q = b.kueue_queues(&ns, "2", "Never");
    let names = ["q0", "q1", "q2"];
    for n in names {
        create_job(
            b,
            &ns,
            &job(
                n,
                Some(&q.local_queue),
                "1",
                json!({"testbed.k8s-job-worker.io/run-seconds": "6"}),
            ),
        );
    }
    // Two are admitted; the third waits while they run.
    let mut seen_two_and_one = false;
    let mut max_running = 0;
    let mut max_admitted = 0;
    let all_done = wait_for(Duration::from_secs(60), || {
        let jobs: Vec<Value> = names.iter().map(|n| get_job(b, &ns, n)).collect();
        // Pods running: the Jobs' active counts (a finished pod is not active).
        let running: u64 = jobs
            .iter()
            .map(|j| j["status"]["active"].as_u64().unwrap_or(0))
            .sum();
        let waiting = jobs.iter().filter(|j| suspended(j)).count();
        let admitted = admitted_workloads(b, &ns);
        max_running = max_running.max(running);
        max_admitted = max_admitted.max(admitted);
        if running == 2 && waiting == 1 {
            seen_two_and_one = true;
        }
        jobs.iter().all(|j| condition(j, "Complete"))
    });
    assert!(
        all_done,
        "not all three Complete within 60 s\nkueue log:\n{}",
        b.log_tail("kueue", 30)
    );
    assert!(
        seen_two_and_one,
        "never saw two pods running and one Job waiting (max running {max_running})"
    );
    assert!(
        max_running <= 2,
        "{max_running} pods ran at once under a 2-CPU quota"
    );
    assert!(
        max_admitted <= 2,
        "{max_admitted} Workloads admitted at once"
    );
    let cq = b
        .kube_get(&format!(
            "{}/clusterqueues/{}",
            support::KUEUE_API,
            q.cluster_queue
        ))
        .1;
    eprintln!(
        "[kueue_bed] ClusterQueue status at the end: {}",
        cq["status"]
    );
}

#[test]
fn higher_priority_workload_preempts_a_lower_one() {
    let b = kueue_bed();
    let ns = b.new_namespace("kq-prio");
    let q = b.kueue_queues(&ns, "1", "LowerPriority");
    let low = support::unique("low");
    let high = support::unique("high");
    b.kueue_priority_class(&low, 100);
    b.kueue_priority_class(&high, 1000);

    let mut lj = job(
        "low",
        Some(&q.local_queue),
        "1",
        json!({"testbed.k8s-job-worker.io/run-seconds": "120"}),
    );
    lj["metadata"]["labels"][KUEUE_PRIORITY_LABEL] = json!(low);
    create_job(b, &ns, &lj);
    assert!(
        wait_for(Duration::from_secs(30), || {
            let j = get_job(b, &ns, "low");
            !suspended(&j) && j["status"]["active"].as_u64() == Some(1)
        }),
        "low-priority Job not running: {}",
        get_job(b, &ns, "low")["status"]
    );

    let mut hj = job(
        "high",
        Some(&q.local_queue),
        "1",
        json!({"testbed.k8s-job-worker.io/run-seconds": "1"}),
    );
    hj["metadata"]["labels"][KUEUE_PRIORITY_LABEL] = json!(high);
    create_job(b, &ns, &hj);
    // The low one is evicted (suspended again), the high one admitted and completes.
    let mut low_resuspended = false;
    let done = wait_for(Duration::from_secs(60), || {
        if suspended(&get_job(b, &ns, "low")) {
            low_resuspended = true;
        }
        condition(&get_job(b, &ns, "high"), "Complete")
    });
    assert!(
        done,
        "high-priority Job not Complete: {}\nkueue log:\n{}",
        get_job(b, &ns, "high")["status"],
        b.log_tail("kueue", 30)
    );
    assert!(
        low_resuspended,
        "the low-priority Job was never suspended again"
    );
    let wl = b
        .kueue_workloads(&ns)
        .into_iter()
        .find(|w| w["metadata"]["ownerReferences"][0]["name"] == "low")
        .expect("the low Job's Workload");
    let evicted = wl["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| (c["type"] == "Evicted" || c["type"] == "Preempted") && c["status"] == "True")
    });
    // Once the high one finished the low one is admitted again (it may already be).
    assert!(
        evicted || condition(&wl, "Admitted"),
        "low Workload: {}",
        wl["status"]
    );
    assert!(
        wait_for(Duration::from_secs(30), || !suspended(&get_job(
            b, &ns, "low"
        ))),
        "the low-priority Job was not admitted again after the high one finished"
    );
}

/// kwok: the pod annotation testbed.k8s-job-worker.io/termination-message becomes
/// the container's terminated message, on success and on failure (plain Jobs; the
/// Kueue bed lets them through untouched).
#[test]
fn kwok_termination_message_on_success_and_failure() {
    let b = kueue_bed();
    let ns = b.new_namespace("kwok-msg");
    let msg_ok = r#"{"answer": 42, "text": "line one\nline \"two\""}"#;
    create_job(
        b,
        &ns,
        &job(
            "ok",
            None,
            "100m",
            json!({"testbed.k8s-job-worker.io/run-seconds": "0.2",
                   "testbed.k8s-job-worker.io/termination-message": msg_ok}),
        ),
    );
    let mut failing = job(
        "bad",
        None,
        "100m",
        json!({"testbed.k8s-job-worker.io/run-seconds": "0.2",
               "testbed.k8s-job-worker.io/exit-code": "3",
               "testbed.k8s-job-worker.io/termination-message": "Traceback: boom"}),
    );
    failing["spec"]["template"]["metadata"]["labels"] =
        json!({"testbed.k8s-job-worker.io/outcome": "fail"});
    create_job(b, &ns, &failing);
    create_job(
        b,
        &ns,
        &job(
            "plain",
            None,
            "100m",
            json!({"testbed.k8s-job-worker.io/run-seconds": "0.2"}),
        ),
    );
    wait_condition(b, &ns, "ok", "Complete", Duration::from_secs(30));
    wait_condition(b, &ns, "bad", "Failed", Duration::from_secs(30));
    wait_condition(b, &ns, "plain", "Complete", Duration::from_secs(30));

    let terminated = |job_name: &str| -> Value {
        let (st, pods) = b.kube_get(&format!(
            "/api/v1/namespaces/{ns}/pods?labelSelector=job-name%3D{job_name}"
        ));
        assert_eq!(st, 200, "{pods}");
        let pod = &pods["items"][0];
        pod["status"]["containerStatuses"][0]["state"]["terminated"].clone()
    };
    let t = terminated("ok");
    assert_eq!(t["exitCode"], 0, "{t}");
    assert_eq!(t["message"], msg_ok, "{t}");
    let t = terminated("bad");
    assert_eq!(t["exitCode"], 3, "{t}");
    assert_eq!(t["reason"], "Error", "{t}");
    assert_eq!(t["message"], "Traceback: boom", "{t}");
    let t = terminated("plain");
    assert_eq!(t["reason"], "Completed", "{t}");
    assert!(t.get("message").is_none(), "no annotation, no message: {t}");
}
