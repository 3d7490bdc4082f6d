//! The tracker reads the same from a slim watch object (`kube::slim`) as from
//! the full one: every Job and Pod below goes through both and the readings
//! are compared, field by field (`JobObject`, `PodInfo` and the rest).

use serde_json::{Value, json};

use super::board::Slot;
use super::observe;
use crate::kube::slim;

/// A rendered Job (a golden file) as the API server returns it, with `status`.
fn served(golden: &str, status: Value, extra_meta: Value) -> Value {
    let mut j: Value = serde_json::from_str(golden).expect("golden Job");
    let m = j["metadata"].as_object_mut().expect("metadata");
    m.insert("uid".into(), json!("0f1e2d3c"));
    m.insert("resourceVersion".into(), json!("4711"));
    m.insert("creationTimestamp".into(), json!("2026-12-01T10:00:00Z"));
    m.insert("generation".into(), json!(1));
    m.insert(
        "managedFields".into(),
        json!([{"manager": "k8s-job-worker", "fieldsV1": {"f:spec": {}}}]),
    );
    m["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = json!("{}");
    for (k, v) in extra_meta.as_object().into_iter().flatten() {
        if k == "annotations" {
            for (a, x) in v.as_object().into_iter().flatten() {
                m["annotations"][a] = x.clone();
            }
        } else {
            m.insert(k.clone(), v.clone());
        }
    }
    j["spec"]["selector"] =
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "0f1e2d3c"}});
    j["status"] = status;
    j
}

fn same_job_reading(full: &Value) {
    let s = slim::job(full.clone());
    assert!(s.pointer("/spec/template").is_none(), "template dropped");
    assert_eq!(observe::job_object(&s), observe::job_object(full));
    assert!(observe::job_object(full).is_some());
    assert_eq!(observe::suspended(&s), observe::suspended(full));
    assert_eq!(observe::service(&s), observe::service(full));
    assert_eq!(observe::job_object_key(&s), observe::job_object_key(full));
    assert_eq!(Slot::of_job(&s), Slot::of_job(full));
    assert_eq!(s.pointer("/metadata/uid"), full.pointer("/metadata/uid"));
    // Slimming twice changes nothing more.
    assert_eq!(slim::job(s.clone()), s);
}

#[test]
fn every_job_the_tracker_sees_reads_the_same_slim() {
    let goldens = [
        include_str!("../../tests/golden/parallel.job.json"),
        include_str!("../../tests/golden/minimal.job.json"),
        include_str!("../../tests/golden/queued.job.json"),
        include_str!("../../tests/golden/delayed-queued.job.json"),
        include_str!("../../tests/golden/payload.job.json"),
    ];
    let statuses = [
        json!(null),
        json!({"active": 1, "ready": 0, "startTime": "2026-12-01T10:00:01Z"}),
        json!({"succeeded": 3, "startTime": "2026-12-01T10:00:01Z",
               "completionTime": "2026-12-01T10:00:31Z",
               "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                              {"type": "Complete", "status": "True",
                               "lastTransitionTime": "2026-12-01T10:00:31Z"}]}),
        json!({"failed": 1, "succeeded": 1, "startTime": "2026-12-01T10:00:01Z",
               "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                               "message": "Job has reached the specified backoff limit",
                               "lastTransitionTime": "2026-12-01T10:01:00Z"}]}),
        json!({"conditions": [{"type": "Suspended", "status": "False",
                               "lastTransitionTime": "2026-12-01T10:00:05Z"}]}),
        json!({"conditions": [{"type": "Suspended", "status": "True"}]}),
    ];
    let metas = [
        json!({}),
        json!({"deletionTimestamp": "2026-12-01T11:00:00Z",
               "annotations": {"k8s-job-worker.io/delivered": "1",
                               "k8s-job-worker.io/webhook-url": "https://hook.example/cb",
                               "k8s-job-worker.io/cancelled-at": "2026-12-01T10:30:00Z"}}),
        json!({"finalizers": [], "labels": {"app": "other", "kueue.x-k8s.io/queue-name": "lq"},
               "annotations": {"k8s-job-worker.io/start-after": "2026-12-01T12:00:00Z",
                               "k8s-job-worker.io/queue-name": "lq"}}),
    ];
    let mut n = 0;
    for g in goldens {
        for st in &statuses {
            for m in &metas {
                same_job_reading(&served(g, st.clone(), m.clone()));
                n += 1;
            }
        }
    }
    assert_eq!(n, 90);
}

#[test]
fn a_suspended_job_stays_suspended_when_slim() {
    let mut j = served(
        include_str!("../../tests/golden/queued.job.json"),
        json!(null),
        json!({}),
    );
    j["spec"]["suspend"] = json!(true);
    assert!(observe::suspended(&slim::job(j.clone())));
    same_job_reading(&j);
}

fn pod(status: Value, labels: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "shards-0ddff13272-abcde", "namespace": "default", "uid": "p-1",
            "resourceVersion": "99", "generateName": "shards-0ddff13272-",
            "labels": labels,
            "annotations": {"kwok.x-k8s.io/x": "y"},
            "ownerReferences": [{"kind": "Job", "name": "shards-0ddff13272", "uid": "0f1e2d3c"}],
            "managedFields": [{"manager": "kubelet"}]},
        "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "true"],
                                 "env": [{"name": "A", "value": "B"}]}],
                 "nodeName": "kwok-node-0", "restartPolicy": "Never"},
        "status": status
    })
}

#[test]
fn every_pod_the_tracker_sees_reads_the_same_slim() {
    let labels = [
        json!({"batch.kubernetes.io/job-name": "shards-0ddff13272", "job-name": "shards-0ddff13272",
               "batch.kubernetes.io/controller-uid": "0f1e2d3c"}),
        json!({"job-name": "shards-0ddff13272"}),
        json!({}),
    ];
    let statuses = [
        json!(null),
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
               "reason": "Unschedulable", "message": "0/1 nodes are available"}]}),
        json!({"phase": "Pending", "containerStatuses": [{"name": "main", "image": "busybox",
               "imageID": "", "ready": false, "restartCount": 0,
               "state": {"waiting": {"reason": "ErrImagePull", "message": "pull failed"}}}]}),
        json!({"phase": "Running", "podIP": "10.0.0.3", "hostIP": "10.0.0.1",
               "containerStatuses": [{"name": "main", "ready": true,
               "state": {"running": {"startedAt": "2026-12-01T10:00:02Z"}}}]}),
        json!({"phase": "Failed", "containerStatuses": [{"name": "main",
               "state": {"terminated": {"exitCode": 3, "reason": "Error", "message": "boom"}}}]}),
        json!({"phase": "Succeeded", "containerStatuses": [
               {"name": "side", "state": {"terminated": {"exitCode": 0}}},
               {"name": "main", "state": {"terminated": {"exitCode": 0, "message": "{\"r\":1}"}}}]}),
    ];
    for l in &labels {
        for st in &statuses {
            let full = pod(st.clone(), l.clone());
            let s = slim::pod(full.clone());
            assert!(s.get("spec").is_none(), "spec dropped");
            assert_eq!(observe::pod_info(&s), observe::pod_info(&full));
            assert_eq!(observe::pod_job_key(&s), observe::pod_job_key(&full));
            assert_eq!(slim::pod(s.clone()), s);
        }
    }
}
