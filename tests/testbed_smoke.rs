//! Proves each part of the test bed is real (see testbed/README.md).

#![allow(clippy::unwrap_used)] // tests may unwrap
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{WebhookReceiver, bed, wait_for};

const OUTCOME: &str = "testbed.k8s-job-worker.io/outcome";
const EXIT_CODE: &str = "testbed.k8s-job-worker.io/exit-code";
const RUN_SECONDS: &str = "testbed.k8s-job-worker.io/run-seconds";

fn job(name: &str, labels: Value, annotations: Value, extra_spec: Value) -> Value {
    let mut j = json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "registry.example/worker:1",
                                    "command": ["run"]}]
                }
            }
        }
    });
    if let (Some(spec), Some(extra)) = (j["spec"].as_object_mut(), extra_spec.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    j
}

fn create_job(ns: &str, j: &Value) {
    let (st, body) = bed().kube_post(&format!("/apis/batch/v1/namespaces/{ns}/jobs"), j);
    assert_eq!(st, 201, "creating job: {body}");
}

fn job_pods(ns: &str, name: &str) -> Vec<Value> {
    let (st, body) = bed().kube_get(&format!(
        "/api/v1/namespaces/{ns}/pods?labelSelector=batch.kubernetes.io/job-name%3D{name}"
    ));
    assert_eq!(st, 200, "{body}");
    body["items"].as_array().cloned().unwrap_or_default()
}

fn job_condition(ns: &str, name: &str, ty: &str) -> Option<Value> {
    let (st, body) = bed().kube_get(&format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}"));
    if st != 200 {
        return None;
    }
    body["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == ty && c["status"] == "True")
        .cloned()
}

fn diag(ns: &str) -> String {
    let b = bed();
    format!(
        "pods: {}\njobs: {}\nkwok log:\n{}\nkcm log:\n{}",
        b.kube_get(&format!("/api/v1/namespaces/{ns}/pods")).1,
        b.kube_get(&format!("/apis/batch/v1/namespaces/{ns}/jobs"))
            .1,
        b.log_tail("kwok", 15),
        b.log_tail("kube-controller-manager", 15)
    )
}

#[test]
fn job_runs_on_a_kwok_node_and_completes() {
    let b = bed();
    let ns = b.new_namespace("smoke-ok");
    create_job(
        &ns,
        &job("ok", json!({}), json!({RUN_SECONDS: "3"}), json!({})),
    );
    let mut pod = Value::Null;
    assert!(
        wait_for(Duration::from_secs(30), || {
            pod = job_pods(&ns, "ok")
                .into_iter()
                .next()
                .unwrap_or(Value::Null);
            pod["status"]["phase"] == "Running"
        }),
        "pod never Running: {}",
        diag(&ns)
    );
    let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
    assert!(b.nodes.iter().any(|n| n == node), "pod on {node:?}");
    assert!(pod["status"]["podIP"].is_string(), "no podIP: {pod}");
    let cs = &pod["status"]["containerStatuses"][0];
    assert!(cs["state"]["running"]["startedAt"].is_string(), "{cs}");
    assert!(
        wait_for(Duration::from_secs(30), || job_condition(
            &ns, "ok", "Complete"
        )
        .is_some()),
        "job never Complete: {}",
        diag(&ns)
    );
    let pod = &job_pods(&ns, "ok")[0];
    assert_eq!(pod["status"]["phase"], "Succeeded");
    let term = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["exitCode"], 0, "{pod}");
    assert_eq!(term["reason"], "Completed");
}

#[test]
fn failing_outcome_fails_the_job_with_the_exit_code() {
    let b = bed();
    let ns = b.new_namespace("smoke-fail");
    create_job(
        &ns,
        &job(
            "bad",
            json!({OUTCOME: "fail", EXIT_CODE: "3"}),
            json!({}),
            json!({}),
        ),
    );
    let mut cond = None;
    assert!(
        wait_for(Duration::from_secs(40), || {
            cond = job_condition(&ns, "bad", "Failed");
            cond.is_some()
        }),
        "job never Failed: {}",
        diag(&ns)
    );
    assert_eq!(cond.unwrap()["reason"], "BackoffLimitExceeded");
    let pod = &job_pods(&ns, "bad")[0];
    assert_eq!(pod["status"]["phase"], "Failed", "{pod}");
    let term = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["exitCode"], 3, "{pod}");
    assert_eq!(term["reason"], "Error");
}

#[test]
fn pending_outcome_never_starts() {
    let b = bed();
    let ns = b.new_namespace("smoke-pending");
    create_job(
        &ns,
        &job("stuck", json!({OUTCOME: "pending"}), json!({}), json!({})),
    );
    let reason = |p: &Value| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        wait_for(Duration::from_secs(30), || {
            job_pods(&ns, "stuck")
                .first()
                .is_some_and(|p| reason(p) == "ImagePullBackOff")
        }),
        "no ImagePullBackOff: {}",
        diag(&ns)
    );
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let pods = job_pods(&ns, "stuck");
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0]["status"]["phase"], "Pending", "{}", pods[0]);
        assert_eq!(reason(&pods[0]), "ImagePullBackOff");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// outcome=run: Running until deleted (no completion stage matches it).
#[test]
fn run_outcome_keeps_running() {
    let b = bed();
    let ns = b.new_namespace("smoke-run");
    create_job(
        &ns,
        &job("long", json!({OUTCOME: "run"}), json!({}), json!({})),
    );
    assert!(
        wait_for(Duration::from_secs(30), || job_pods(&ns, "long")
            .first()
            .is_some_and(|p| p["status"]["phase"] == "Running")),
        "pod never Running: {}",
        diag(&ns)
    );
    // Far beyond the default 1 s run: still running, the Job not finished.
    std::thread::sleep(Duration::from_secs(4));
    let pods = job_pods(&ns, "long");
    assert_eq!(pods.len(), 1);
    assert_eq!(pods[0]["status"]["phase"], "Running", "{}", pods[0]);
    assert!(job_condition(&ns, "long", "Complete").is_none());
    assert!(job_condition(&ns, "long", "Failed").is_none());
}

#[test]
fn ttl_after_finished_deletes_the_job_and_its_pods() {
    let b = bed();
    let ns = b.new_namespace("smoke-ttl");
    create_job(
        &ns,
        &job(
            "ttl",
            json!({}),
            json!({RUN_SECONDS: "0.2"}),
            json!({"ttlSecondsAfterFinished": 2}),
        ),
    );
    assert!(
        wait_for(Duration::from_secs(30), || job_condition(
            &ns, "ttl", "Complete"
        )
        .is_some()),
        "job never Complete: {}",
        diag(&ns)
    );
    let done = Instant::now();
    let path = format!("/apis/batch/v1/namespaces/{ns}/jobs/ttl");
    assert!(
        wait_for(Duration::from_secs(40), || b.kube_get(&path).0 == 404),
        "job not deleted: {}",
        diag(&ns)
    );
    eprintln!(
        "job deleted {:.1}s after Complete",
        done.elapsed().as_secs_f64()
    );
    assert!(
        wait_for(Duration::from_secs(30), || job_pods(&ns, "ttl").is_empty()),
        "pods left: {}",
        diag(&ns)
    );
}

#[test]
fn gpu_pod_lands_on_the_gpu_node() {
    let b = bed();
    let ns = b.new_namespace("smoke-gpu");
    let mut j = job("gpu", json!({}), json!({RUN_SECONDS: "0.2"}), json!({}));
    j["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"limits": {"nvidia.com/gpu": "2"}});
    create_job(&ns, &j);
    let mut node = String::new();
    assert!(
        wait_for(Duration::from_secs(30), || {
            node = job_pods(&ns, "gpu")
                .first()
                .and_then(|p| p["spec"]["nodeName"].as_str().map(String::from))
                .unwrap_or_default();
            !node.is_empty()
        }),
        "gpu pod not scheduled: {}",
        diag(&ns)
    );
    assert_eq!(node, "kwok-gpu-0");
}

#[test]
fn lease_update_with_stale_resource_version_conflicts() {
    let b = bed();
    let ns = b.new_namespace("smoke-lease");
    let base = format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases");
    let (st, created) = b.kube_post(
        &base,
        &json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "leader"},
                "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}),
    );
    assert_eq!(st, 201, "{created}");
    let mut first = created.clone();
    first["spec"]["holderIdentity"] = json!("b");
    let (st, updated) = b.kube_put(&format!("{base}/leader"), &first);
    assert_eq!(st, 200, "{updated}");
    let mut stale = created.clone();
    stale["spec"]["holderIdentity"] = json!("c");
    let (st, body) = b.kube_put(&format!("{base}/leader"), &stale);
    assert_eq!(st, 409, "{body}");
    assert_eq!(body["reason"], "Conflict");
}

#[test]
fn rbac_is_enforced_for_the_unprivileged_user() {
    let b = bed();
    let ns = b.new_namespace("smoke-rbac");
    let (st, _) = b.kube_as(
        &b.user_token,
        "GET",
        &format!("/api/v1/namespaces/{ns}/pods"),
        None,
    );
    assert_eq!(st, 403);
    let (st, _) = b.kube_as("not-a-token", "GET", "/api/v1/namespaces", None);
    assert_eq!(st, 401);
}

#[test]
fn job_watch_streams_events() {
    let b = bed();
    let ns = b.new_namespace("smoke-watch");
    let mut w = b.kube_watch(
        &format!("/apis/batch/v1/namespaces/{ns}/jobs?watch=true&allowWatchBookmarks=true"),
        Duration::from_secs(10),
    );
    assert_eq!(w.status, 200);
    create_job(
        &ns,
        &job("watched", json!({}), json!({RUN_SECONDS: "0.2"}), json!({})),
    );
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut complete = false;
    while Instant::now() < deadline && !complete {
        let Some(ev) = w.next_event() else { break };
        let ty = ev["type"].as_str().unwrap_or_default().to_string();
        complete = ev["object"]["status"]["conditions"]
            .as_array()
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Complete" && c["status"] == "True")
            });
        seen.push(ty);
    }
    // The apiserver may open the stream with a BOOKMARK; the first real event is ADDED.
    let first = seen.iter().find(|t| *t != "BOOKMARK").map(String::as_str);
    assert_eq!(first, Some("ADDED"), "{seen:?}");
    assert!(complete, "no Complete event; saw {seen:?}");
}

#[test]
fn redis_answers_lmove() {
    let b = bed();
    let src = support::unique("src");
    let dst = support::unique("dst");
    b.redis_cmd(&["RPUSH", &src, "one", "two"]);
    let v = b.redis_cmd(&["LMOVE", &src, &dst, "LEFT", "RIGHT"]);
    assert_eq!(v, redis::Value::BulkString(b"one".to_vec()));
    let v = b.redis_cmd(&["LRANGE", &dst, "0", "-1"]);
    assert_eq!(
        v,
        redis::Value::Array(vec![redis::Value::BulkString(b"one".to_vec())])
    );
}

#[test]
fn sqs_checks_signatures() {
    let b = bed();
    let url = b.sqs_create_queue(&support::unique("smoke"), false);
    b.aws_call(
        "sqs",
        "send_message",
        &json!({"QueueUrl": url, "MessageBody": "{\"x\":1}"}),
    )
    .expect("send_message");
    let r = b
        .aws_call(
            "sqs",
            "receive_message",
            &json!({"QueueUrl": url, "WaitTimeSeconds": 1}),
        )
        .expect("receive_message");
    assert_eq!(r["Messages"][0]["Body"], "{\"x\":1}", "{r}");
    let fifo = b.sqs_create_queue(&support::unique("smoke"), true);
    assert!(fifo.ends_with(".fifo"), "{fifo}");
    let err = b
        .aws_call_with(
            "sqs",
            "send_message",
            &json!({"QueueUrl": url, "MessageBody": "x"}),
            Some("wrong-secret"),
        )
        .expect_err("a wrong secret must be refused");
    assert_eq!(err["status"], 403, "{err}");
    assert_eq!(err["code"], "SignatureDoesNotMatch", "{err}");
}

#[test]
fn webhook_receiver_records_and_can_be_down() {
    let hook = WebhookReceiver::start();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let r = agent
        .post(&format!("{}/cb?x=1", hook.url()))
        .header("X-Test", "yes")
        .send_json(json!({"a": 1}))
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let calls = hook.wait_for_calls(1, Duration::from_secs(5));
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].path, "/cb?x=1");
    assert_eq!(calls[0].header("x-test"), Some("yes"));
    assert_eq!(calls[0].body, json!({"a": 1}));
    hook.respond_with(503);
    let r = agent.post(&hook.url()).send_json(json!({})).unwrap();
    assert_eq!(r.status().as_u16(), 503);
    hook.set_down(true);
    assert!(agent.post(&hook.url()).send_json(json!({})).is_err());
    hook.set_down(false);
    assert_eq!(
        agent
            .post(&hook.url())
            .send_json(json!({}))
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let calls = hook.wait_for_calls(4, Duration::from_secs(5));
    let statuses: Vec<u16> = calls.iter().map(|c| c.status).collect();
    assert_eq!(statuses, vec![200, 503, 0, 200]);
    assert_eq!(hook.delivered().len(), 2);
    assert!(calls[1].at <= calls[3].at);
}

#[test]
fn deleting_a_running_job_removes_it_and_its_pods() {
    let b = bed();
    let ns = b.new_namespace("smoke-del");
    create_job(
        &ns,
        &job("long", json!({}), json!({RUN_SECONDS: "1h"}), json!({})),
    );
    assert!(
        wait_for(Duration::from_secs(30), || {
            job_pods(&ns, "long")
                .first()
                .is_some_and(|p| p["status"]["phase"] == "Running")
        }),
        "pod never Running: {}",
        diag(&ns)
    );
    let path = format!("/apis/batch/v1/namespaces/{ns}/jobs/long");
    let t0 = Instant::now();
    let (st, body) = b.kube_delete(&path, Some(&json!({"propagationPolicy": "Foreground"})));
    assert_eq!(st, 200, "{body}");
    assert!(
        wait_for(Duration::from_secs(40), || b.kube_get(&path).0 == 404
            && job_pods(&ns, "long").is_empty()),
        "job or pods left: {}",
        diag(&ns)
    );
    eprintln!(
        "job and pods gone {:.1}s after DELETE",
        t0.elapsed().as_secs_f64()
    );
}

#[test]
fn a_record_guarded_by_uid_leaves_a_newer_object_of_the_name_alone() {
    // What the callback recorder relies on: a merge patch carrying another
    // uid is refused (422), and `release_uid` of another uid changes nothing.
    use k8s_job_worker::kube::client::{Client, KubeConfig};
    let b = bed();
    let ns = b.new_namespace("smoke-uid");
    let mut j = job("held", json!({}), json!({RUN_SECONDS: "1h"}), json!({}));
    j["metadata"]["finalizers"] = json!(["k8s-job-worker.io/result"]);
    create_job(&ns, &j);
    let path = format!("/apis/batch/v1/namespaces/{ns}/jobs/held");
    let (_, obj) = b.kube_get(&path);
    let uid = obj["metadata"]["uid"].as_str().unwrap().to_string();
    let kube = Client::new(&KubeConfig {
        api_url: b.api_url.clone(),
        token_file: Some(b.admin_token_file.clone()),
        ca_file: Some(b.ca_file.clone()),
    })
    .unwrap();
    let other = "00000000-0000-0000-0000-000000000000";
    let err = kube
        .merge_patch(
            &path,
            &json!({"metadata": {"uid": other, "annotations": {"k8s-job-worker.io/delivered": "0"}}}),
            "patch with another uid",
        )
        .unwrap_err();
    assert_eq!(err.code(), Some(422), "{err}");
    kube.release_uid(
        &path,
        other,
        "k8s-job-worker.io/result",
        &json!({}),
        "release other uid",
    )
    .unwrap();
    let (_, obj) = b.kube_get(&path);
    assert_eq!(
        obj["metadata"]["finalizers"],
        json!(["k8s-job-worker.io/result"])
    );
    assert!(
        obj["metadata"]["annotations"]
            .get("k8s-job-worker.io/delivered")
            .is_none()
    );
    kube.merge_patch(
        &path,
        &json!({"metadata": {"uid": uid, "annotations": {"k8s-job-worker.io/delivered": "0"}}}),
        "patch with its own uid",
    )
    .unwrap();
    kube.release_uid(
        &path,
        &uid,
        "k8s-job-worker.io/result",
        &json!({}),
        "release own uid",
    )
    .unwrap();
    let (_, obj) = b.kube_get(&path);
    assert!(
        obj["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty()),
        "{obj}"
    );
    assert_eq!(
        obj["metadata"]["annotations"]["k8s-job-worker.io/delivered"],
        "0"
    );
}
