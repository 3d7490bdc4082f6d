//! The Job-spec fields of issue 9 §4 on the real test bed: every golden Job
//! (priority class, pod failure policy, completions, parallelism, indexed
//! completion, image pull secrets among them) is accepted by the API server
//! (server-side dry run, so the worker's validation never lets through a Job
//! the API would refuse); a Job of several pods reports its succeeded and
//! failed counts with status 2; a pod failure policy ends a Job at the first
//! matching failure, and status 3 names the failing pod.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::worker::{Launcher, Q, message, statuses, wait_terminal};
use support::{WebhookReceiver, bed};

#[test]
fn every_golden_job_passes_the_api_servers_validation() {
    let b = bed();
    let ns = b.new_namespace("spec-dry");
    // The golden job-spec input names this priority class (admission checks it).
    let (st, body) = b.kube_post(
        "/apis/scheduling.k8s.io/v1/priorityclasses",
        &json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                "metadata": {"name": "batch-high"}, "value": 1000}),
    );
    assert!(st == 201 || st == 409, "priority class: {st} {body}");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".job.json") {
            continue;
        }
        let mut job: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        job["metadata"]["namespace"] = json!(ns);
        let (st, body) = b.kube_post(
            &format!("/apis/batch/v1/namespaces/{ns}/jobs?dryRun=All"),
            &job,
        );
        assert_eq!(
            st, 201,
            "{name}: the API server refused the rendered Job: {body}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "golden Jobs checked: {checked}");
}

#[test]
fn several_pods_report_counts_and_a_failure_policy_names_the_failing_pod() {
    let hook = WebhookReceiver::start();
    let w = Launcher::new(Q::Redis)
        .ns_tag("spec")
        .no_env("ALLOWED_ENV_REFS")
        .no_env("ALLOWED_PVCS")
        .start();
    let plain = |m: &mut Value| {
        let j = m["job"].as_object_mut().unwrap();
        j.remove("volume");
        j.remove("envRef");
    };
    // Three completions, two at a time: 0, 1, 2 with succeeded 3, failed 0.
    let (ok_id, body) = message(&w, &hook, |m| {
        plain(m);
        m["job"]["completions"] = json!(3);
        m["job"]["parallelism"] = json!(2);
    });
    w.send(&body);
    // A FailJob rule for exit code 1 ends the Job at its first failed pod,
    // although backoffLimit would allow three more.
    let (fail_id, body) = message(&w, &hook, |m| {
        plain(m);
        m["job"]["backoffLimit"] = json!(3);
        m["job"]["completions"] = json!(2);
        m["job"]["fargate"] = json!({"key": "testbed.k8s-job-worker.io/outcome", "value": "fail"});
        m["job"]["podFailurePolicy"] = json!({"rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [1]}}
        ]});
    });
    w.send(&body);

    let calls = wait_terminal(&w, &hook, &ok_id, Duration::from_secs(120));
    assert_eq!(statuses(&calls), vec![0, 1, 2], "{}", w.logs());
    let done = &calls[2].body["detail"];
    assert_eq!(
        (done["succeeded"].as_u64(), done["failed"].as_u64()),
        (Some(3), Some(0)),
        "{done}"
    );

    let calls = wait_terminal(&w, &hook, &fail_id, Duration::from_secs(120));
    assert_eq!(statuses(&calls), vec![0, 1, 3], "{}", w.logs());
    let detail = &calls[2].body["detail"];
    let err = &detail["error"];
    assert_eq!(err["errorCode"], "POD_FAILURE_POLICY", "{detail}");
    let pod = err["podName"].as_str().unwrap_or("");
    assert!(
        pod.starts_with(calls[0].body["detail"]["jobName"].as_str().unwrap()),
        "{detail}"
    );
    assert_eq!(
        detail["failed"].as_u64(),
        Some(1),
        "stopped at the first failure: {detail}"
    );
}
