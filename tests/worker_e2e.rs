//! End to end on the test bed: the worker binary, a real control plane with
//! kwok, real Redis and moto (signature checking on), and real webhook
//! receivers. Every test runs its own worker instance (own namespace, queue,
//! WORKER_INSTANCE label and Lease), so the tests run in parallel on one bed.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Bed, Call, WebhookReceiver, bed, unique, wait_for};

const SEED_002: &str = include_str!("../example/seed-002.json");

#[derive(Clone, Copy, Debug, PartialEq)]
enum Q {
    Redis,
    Sqs,
}

/// A worker process; killed on drop. Its log is kept in the bed's dir.
struct Worker {
    child: Child,
    log: PathBuf,
    http_port: u16,
    pub ns: String,
    pub instance: String,
    q: Q,
    redis_prefix: String,
    sqs_url: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Worker {
    fn start(q: Q, extra: &[(&str, &str)]) -> Worker {
        let b = bed();
        let ns = b.new_namespace("e2e");
        let instance = unique("w");
        let redis_prefix = format!("{instance}-");
        let sqs_url = if q == Q::Sqs {
            b.sqs_create_queue(&instance, false)
        } else {
            String::new()
        };
        Self::spawn(b, q, ns, instance, redis_prefix, sqs_url, extra)
    }

    fn spawn(
        b: &Bed,
        q: Q,
        ns: String,
        instance: String,
        redis_prefix: String,
        sqs_url: String,
        extra: &[(&str, &str)],
    ) -> Worker {
        let log = b
            .dir
            .join(format!("worker-{instance}-{}.log", unique("run")));
        let http_port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_k8s-job-worker"));
        cmd.env_clear()
            .env("RUST_LOG", "info,k8s_job_worker=debug")
            .env("KUBE_API_URL", &b.api_url)
            .env("KUBE_TOKEN_FILE", &b.admin_token_file)
            .env("KUBE_CA_FILE", &b.ca_file)
            .env("POD_NAME", format!("{instance}-pod"))
            .env("POD_NAMESPACE", &ns)
            .env("LEADER_ELECTION_LOCK_NAME", format!("{instance}-lock"))
            .env("WORKER_INSTANCE", &instance)
            .env("ALLOWED_NAMESPACES", &ns)
            // The seed example's envRef and PVC (the policy denies both by default).
            .env("ALLOWED_ENV_REFS", "configmap/busybox-default")
            .env("ALLOWED_PVCS", "ps-pvc")
            .env("HTTP_SERVER_PORT", http_port.to_string())
            .env("POLLING_INTERVAL", "1")
            .env("CALLBACK_BACKOFF_MAX", "3");
        match q {
            Q::Redis => {
                cmd.env("QUEUE_TYPE", "redis")
                    .env("REDIS_ENDPOINT", format!("127.0.0.1:{}", b.redis_port))
                    .env("REDIS_DB", "0")
                    .env("REDIS_JOB_KEY_PREFIX", &redis_prefix);
            }
            Q::Sqs => {
                cmd.env("QUEUE_TYPE", "sqs")
                    .env("AWS_SQS_URL", &sqs_url)
                    .env("AWS_SQS_REGION", &b.aws_region)
                    .env("AWS_ACCESS_KEY_ID", &b.aws_access_key_id)
                    .env("AWS_SECRET_ACCESS_KEY", &b.aws_secret_access_key);
            }
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = std::fs::File::create(&log).expect("worker log");
        let err = out.try_clone().expect("worker log");
        let child = cmd
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("spawn worker");
        Worker {
            child,
            log,
            http_port,
            ns,
            instance,
            q,
            redis_prefix,
            sqs_url,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metrics(&self) -> String {
        ureq::get(&format!("http://127.0.0.1:{}/metrics", self.http_port))
            .call()
            .ok()
            .and_then(|r| r.into_body().read_to_string().ok())
            .unwrap_or_default()
    }

    fn send(&self, body: &str) {
        let b = bed();
        match self.q {
            Q::Redis => {
                b.redis_cmd(&["LPUSH", &format!("{}queue", self.redis_prefix), body]);
            }
            Q::Sqs => {
                b.aws_call(
                    "sqs",
                    "send_message",
                    &json!({"QueueUrl": self.sqs_url, "MessageBody": body}),
                )
                .unwrap_or_else(|e| panic!("send_message: {e}"));
            }
        }
    }

    /// Messages still in the queue (visible or in flight / processing).
    fn queued(&self) -> i64 {
        let b = bed();
        match self.q {
            Q::Redis => {
                let len = |k: &str| match b.redis_cmd(&["LLEN", k]) {
                    redis::Value::Int(n) => n,
                    _ => -1,
                };
                len(&format!("{}queue", self.redis_prefix))
                    + len(&format!("{}processing", self.redis_prefix))
            }
            Q::Sqs => {
                let r = b
                    .aws_call(
                        "sqs",
                        "get_queue_attributes",
                        &json!({"QueueUrl": self.sqs_url, "AttributeNames": ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]}),
                    )
                    .unwrap_or_else(|e| panic!("get_queue_attributes: {e}"));
                let n = |k: &str| {
                    r["Attributes"][k]
                        .as_str()
                        .and_then(|s| s.parse::<i64>().ok())
                        .unwrap_or(-1)
                };
                n("ApproximateNumberOfMessages") + n("ApproximateNumberOfMessagesNotVisible")
            }
        }
    }

    fn jobs(&self) -> Vec<Value> {
        let (code, list) = bed().kube_get(&format!(
            "/apis/batch/v1/namespaces/{}/jobs?labelSelector=k8s-job-worker.io%2Finstance%3D{}",
            self.ns, self.instance
        ));
        assert_eq!(code, 200, "{list}");
        list["items"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- worker log {} ----\n{}",
                self.log.display(),
                self.logs()
            );
        }
    }
}

/// A message with a test-specific id, namespace and webhook.
fn message(w: &Worker, hook: &WebhookReceiver, tweak: impl FnOnce(&mut Value)) -> (String, String) {
    let mut m: Value = serde_json::from_str(SEED_002).expect("seed example parses");
    let id = unique("msg");
    m["id"] = json!(id);
    m["job"]["namespace"] = json!(w.ns);
    m["webhook"]["url"] = json!(format!("{}/hook/{id}", hook.url()));
    // Keep the seed's scheduling constraints satisfiable on the bed.
    m["job"]["ttlSecondsAfterFinished"] = json!(600);
    tweak(&mut m);
    (id, m.to_string())
}

fn calls_for(hook: &WebhookReceiver, id: &str) -> Vec<Call> {
    hook.delivered()
        .into_iter()
        .filter(|c| c.body["id"] == json!(id))
        .collect()
}

fn statuses(calls: &[Call]) -> Vec<u64> {
    calls
        .iter()
        .filter_map(|c| c.body["status"].as_u64())
        .collect()
}

/// Waits until the message's delivered callbacks end with a terminal status.
fn wait_terminal(w: &Worker, hook: &WebhookReceiver, id: &str, timeout: Duration) -> Vec<Call> {
    let ok = wait_for(timeout, || {
        statuses(&calls_for(hook, id))
            .iter()
            .any(|s| [2, 3, 99].contains(s))
    });
    let calls = calls_for(hook, id);
    assert!(
        ok,
        "no terminal callback for {id} within {timeout:?}; got {:?}\n{}",
        statuses(&calls),
        w.logs()
    );
    calls
}

/// PV + PVC `ps-pvc` for the seed's volume (bound by the PV controller).
fn make_pvc(ns: &str) {
    let b = bed();
    let pv = unique("pv");
    let (c, v) = b.kube_post(
        "/api/v1/persistentvolumes",
        &json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "hostPath": {"path": "/tmp/pv"}, "claimRef": {"namespace": ns, "name": "ps-pvc"},
                "persistentVolumeReclaimPolicy": "Retain"}}),
    );
    assert_eq!(c, 201, "{v}");
    let (c, v) = b.kube_post(
        &format!("/api/v1/namespaces/{ns}/persistentvolumeclaims"),
        &json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "ps-pvc"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                "volumeName": pv, "storageClassName": ""}}),
    );
    assert_eq!(c, 201, "{v}");
}

fn seed_example_reports_0_1_2(q: Q) {
    let hook = WebhookReceiver::start();
    let w = Worker::start(q, &[]);
    make_pvc(&w.ns);
    let (id, body) = message(&w, &hook, |_| {});
    w.send(&body);
    let calls = wait_terminal(&w, &hook, &id, Duration::from_secs(90));
    assert_eq!(
        statuses(&calls),
        vec![0, 1, 2],
        "{:#?}",
        calls.iter().map(|c| &c.body).collect::<Vec<_>>()
    );
    let jobs = w.jobs();
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    let name = job["metadata"]["name"].as_str().unwrap_or("");
    assert!(name.starts_with("bb-") && name.len() == 13, "{name}");
    assert_eq!(
        calls[0].body["detail"],
        json!({"jobId": job["metadata"]["uid"], "jobName": name})
    );
    let pod_name = calls[1].body["detail"]["podName"].as_str().unwrap_or("");
    assert!(pod_name.starts_with(&format!("{name}-")), "{pod_name}");
    assert!(
        calls[1].body["detail"]["podId"]
            .as_str()
            .is_some_and(|s| s.len() == 36)
    );
    let d = calls[2].body["detail"]["duration"]
        .as_u64()
        .expect("duration is an integer");
    assert!(d <= 30, "kwok runs pods for about a second, got {d}");
    // The message left the queue.
    assert!(
        wait_for(Duration::from_secs(10), || w.queued() == 0),
        "queue not empty: {}",
        w.queued()
    );
}

fn failing_job_reports_0_1_3_with_exit_code(q: Q) {
    let hook = WebhookReceiver::start();
    let w = Worker::start(q, &[]);
    make_pvc(&w.ns);
    let (id, body) = message(&w, &hook, |m| {
        m["job"]["fargate"] = json!({"key": "testbed.k8s-job-worker.io/outcome", "value": "fail"});
    });
    w.send(&body);
    let calls = wait_terminal(&w, &hook, &id, Duration::from_secs(90));
    assert_eq!(statuses(&calls), vec![0, 1, 3]);
    let err = &calls[2].body["detail"]["error"];
    assert_eq!(err["errorCode"], "BACKOFF_LIMIT_EXCEEDED", "{err}");
    let msg = err["message"].as_str().unwrap_or("");
    assert!(msg.contains("exited with code 1"), "{msg}");
}

fn invalid_messages_get_99_naming_the_field(q: Q) {
    let hook = WebhookReceiver::start();
    let w = Worker::start(q, &[("MAX_MESSAGE_BYTES", "65536")]);
    type Tweak = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Tweak, &str)> = vec![
        (
            "missing image",
            Box::new(|m: &mut Value| {
                m["job"]
                    .as_object_mut()
                    .map(|o| o.remove("image"))
                    .map(|_| ())
                    .unwrap_or(())
            }),
            "job.image",
        ),
        (
            "wrong type",
            Box::new(|m: &mut Value| m["job"]["backoffLimit"] = json!("zero")),
            "job.backoffLimit",
        ),
        (
            "bad quantity",
            Box::new(|m: &mut Value| m["job"]["resources"]["limits"]["cpu"] = json!("1.2.3")),
            "job.resources.limits.cpu",
        ),
        (
            "bad name",
            Box::new(|m: &mut Value| m["job"]["prefixName"] = json!("Bad_Name")),
            "job.prefixName",
        ),
        (
            "deadline",
            Box::new(|m: &mut Value| m["job"]["activeDeadlineSeconds"] = json!(5)),
            "job.activeDeadlineSeconds",
        ),
        (
            "huge",
            Box::new(|m: &mut Value| m["job"]["args"] = json!(["x".repeat(70_000)])),
            "",
        ),
    ];
    let mut ids = Vec::new();
    for (what, tweak, field) in &cases {
        let (id, body) = message(&w, &hook, |m| tweak(m));
        w.send(&body);
        ids.push((what.to_string(), id, field.to_string()));
    }
    // Garbage without an id: nobody to call back; it must still leave the queue.
    w.send("{not json");
    w.send(r#"{"id": 42}"#);
    for (what, id, field) in &ids {
        if what == "huge" {
            continue; // too large to parse: no id could be read, nobody to call back
        }
        let calls = wait_terminal(&w, &hook, id, Duration::from_secs(60));
        assert_eq!(statuses(&calls), vec![99], "{what}");
        let err = &calls[0].body["detail"]["error"];
        assert_eq!(err["errorCode"], "INVALID_MESSAGE", "{what}: {err}");
        assert!(
            err["message"]
                .as_str()
                .unwrap_or("")
                .contains(field.as_str()),
            "{what}: {err}"
        );
    }
    assert!(
        wait_for(Duration::from_secs(30), || w.queued() == 0),
        "rejected messages must leave the queue: {}",
        w.queued()
    );
    assert!(w.jobs().is_empty(), "no Job for an invalid message");
    let m = w.metrics();
    assert!(
        m.contains("job_worker_messages_rejected_total{reason=\"INVALID_MESSAGE\"}"),
        "{m}"
    );
    assert!(
        w.logs().contains("rejected INVALID_MESSAGE"),
        "log line per rejection"
    );
    if q == Q::Redis {
        let dead = bed().redis_cmd(&["LLEN", &format!("{}dead", w.redis_prefix)]);
        assert_eq!(
            dead,
            redis::Value::Int(cases.len() as i64 + 2),
            "every rejected message is dead-lettered"
        );
    }
}

fn redelivered_message_creates_one_job(q: Q) {
    let hook = WebhookReceiver::start();
    let w = Worker::start(q, &[]);
    make_pvc(&w.ns);
    let (id, body) = message(&w, &hook, |_| {});
    w.send(&body);
    w.send(&body);
    let calls = wait_terminal(&w, &hook, &id, Duration::from_secs(90));
    std::thread::sleep(Duration::from_secs(3));
    let calls_after = calls_for(&hook, &id);
    assert_eq!(
        statuses(&calls_after),
        vec![0, 1, 2],
        "each status once: {:?}",
        statuses(&calls)
    );
    assert_eq!(w.jobs().len(), 1);
    assert!(
        w.logs().contains("adopted"),
        "the second delivery adopts the Job"
    );
    assert!(wait_for(Duration::from_secs(10), || w.queued() == 0));
}

fn never_starting_pod_times_out(q: Q) {
    let hook = WebhookReceiver::start();
    let w = Worker::start(q, &[("POD_START_TIMEOUT", "6")]);
    make_pvc(&w.ns);
    let (id, body) = message(&w, &hook, |m| {
        m["job"]["fargate"] =
            json!({"key": "testbed.k8s-job-worker.io/outcome", "value": "pending"});
    });
    w.send(&body);
    let calls = wait_terminal(&w, &hook, &id, Duration::from_secs(60));
    assert_eq!(statuses(&calls), vec![0, 99]);
    let err = &calls[1].body["detail"]["error"];
    assert_eq!(err["errorCode"], "POD_START_TIMEOUT");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or("")
            .contains("ImagePullBackOff"),
        "{err}"
    );
    assert!(
        wait_for(Duration::from_secs(30), || w.jobs().is_empty()),
        "the Job is deleted"
    );
}

fn dead_webhook_does_not_block_others(q: Q) {
    let dead = WebhookReceiver::start();
    let live = WebhookReceiver::start();
    dead.set_down(true);
    let w = Worker::start(q, &[]);
    make_pvc(&w.ns);
    let (dead_id, body) = message(&w, &dead, |_| {});
    w.send(&body);
    std::thread::sleep(Duration::from_secs(2));
    let sent = Instant::now();
    let (live_id, body) = message(&w, &live, |_| {});
    w.send(&body);
    let calls = wait_terminal(&w, &live, &live_id, Duration::from_secs(60));
    assert_eq!(statuses(&calls), vec![0, 1, 2]);
    let served_in = calls[2].at.duration_since(sent);
    assert!(
        served_in < Duration::from_secs(30),
        "the live webhook waited {served_in:?}"
    );
    assert!(
        dead.calls().iter().any(|c| c.status == 0),
        "the dead webhook was tried"
    );
    std::thread::sleep(Duration::from_secs(60).saturating_sub(sent.elapsed()));
    dead.set_down(false);
    let calls = wait_terminal(&w, &dead, &dead_id, Duration::from_secs(60));
    assert_eq!(
        statuses(&calls),
        vec![0, 1, 2],
        "all callbacks, in order, once the webhook is back"
    );
}

#[test]
fn redis_seed_example_reports_0_1_2() {
    seed_example_reports_0_1_2(Q::Redis);
}
#[test]
fn sqs_seed_example_reports_0_1_2() {
    seed_example_reports_0_1_2(Q::Sqs);
}
#[test]
fn redis_failing_job_reports_0_1_3() {
    failing_job_reports_0_1_3_with_exit_code(Q::Redis);
}
#[test]
fn sqs_failing_job_reports_0_1_3() {
    failing_job_reports_0_1_3_with_exit_code(Q::Sqs);
}
#[test]
fn redis_invalid_messages_get_99() {
    invalid_messages_get_99_naming_the_field(Q::Redis);
}
#[test]
fn sqs_invalid_messages_get_99() {
    invalid_messages_get_99_naming_the_field(Q::Sqs);
}
#[test]
fn redis_redelivery_creates_one_job() {
    redelivered_message_creates_one_job(Q::Redis);
}
#[test]
fn sqs_redelivery_creates_one_job() {
    redelivered_message_creates_one_job(Q::Sqs);
}
#[test]
fn redis_pod_start_timeout() {
    never_starting_pod_times_out(Q::Redis);
}
#[test]
fn sqs_pod_start_timeout() {
    never_starting_pod_times_out(Q::Sqs);
}
#[test]
fn redis_dead_webhook_does_not_block_others() {
    dead_webhook_does_not_block_others(Q::Redis);
}
#[test]
fn sqs_dead_webhook_does_not_block_others() {
    dead_webhook_does_not_block_others(Q::Sqs);
}

#[test]
fn sqs_wrong_credentials_are_reported_and_nothing_is_lost() {
    let b = bed();
    let hook = WebhookReceiver::start();
    let ns = b.new_namespace("e2e");
    let instance = unique("w");
    let url = b.sqs_create_queue(&instance, false);
    let w = Worker::spawn(
        b,
        Q::Sqs,
        ns,
        instance,
        String::new(),
        url,
        &[("AWS_SECRET_ACCESS_KEY", "wrong-secret")],
    );
    let (_, body) = message(&w, &hook, |_| {});
    w.send(&body);
    let ok = wait_for(Duration::from_secs(30), || {
        w.metrics().contains("kind=\"auth\"")
    });
    assert!(ok, "auth errors counted: {}", w.metrics());
    let logs = w.logs();
    assert!(logs.contains("credentials refused"), "{logs}");
    assert!(!logs.contains("wrong-secret"), "the secret is never logged");
    assert_eq!(w.queued(), 1, "the message stays in the queue");
    assert!(w.jobs().is_empty());
}

#[test]
fn sqs_fifo_queue_works() {
    let b = bed();
    let hook = WebhookReceiver::start();
    let ns = b.new_namespace("e2e");
    let instance = unique("w");
    let url = b.sqs_create_queue(&instance, true);
    let w = Worker::spawn(b, Q::Sqs, ns, instance, String::new(), url.clone(), &[]);
    make_pvc(&w.ns);
    let (id, body) = message(&w, &hook, |_| {});
    b.aws_call(
        "sqs",
        "send_message",
        &json!({"QueueUrl": url, "MessageBody": body, "MessageGroupId": "g", "MessageDeduplicationId": id}),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let calls = wait_terminal(&w, &hook, &id, Duration::from_secs(90));
    assert_eq!(statuses(&calls), vec![0, 1, 2]);
    let _ = std::io::empty().read(&mut [0u8; 0]);
}

#[test]
fn redis_max_concurrent_jobs_applies_back_pressure() {
    let hook = WebhookReceiver::start();
    let w = Worker::start(
        Q::Redis,
        &[("MAX_CONCURRENT_JOBS", "2"), ("POD_START_TIMEOUT", "3600")],
    );
    make_pvc(&w.ns);
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (id, body) = message(&w, &hook, |m| {
            m["job"]["fargate"] =
                json!({"key": "testbed.k8s-job-worker.io/outcome", "value": "pending"});
        });
        w.send(&body);
        ids.push(id);
    }
    assert!(
        wait_for(Duration::from_secs(30), || w.jobs().len() == 2),
        "two Jobs: {}",
        w.jobs().len()
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(w.jobs().len(), 2, "no third Job while two are live");
    assert_eq!(
        w.queued(),
        3,
        "the other messages wait in the queue, none dropped"
    );
    // Deleting one live Job (99 JOB_DELETED) makes room for exactly one more.
    let victim = w.jobs()[0]["metadata"]["name"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let (c, v) = bed().kube_delete(
        &format!("/apis/batch/v1/namespaces/{}/jobs/{victim}", w.ns),
        None,
    );
    assert!(c == 200 || c == 202, "{c} {v}");
    assert!(
        wait_for(Duration::from_secs(30), || w.queued() == 2),
        "one more message taken: {}",
        w.queued()
    );
    let live = || {
        w.jobs()
            .iter()
            .filter(|j| j["metadata"]["deletionTimestamp"].is_null())
            .count()
    };
    assert!(
        wait_for(Duration::from_secs(30), || live() == 2),
        "back at the cap: {}",
        live()
    );
    let deleted: Vec<Call> = hook
        .delivered()
        .into_iter()
        .filter(|c| c.body["status"] == json!(99))
        .collect();
    assert!(
        wait_for(Duration::from_secs(30), || hook.delivered().iter().any(
            |c| c.body["detail"]["error"]["errorCode"] == json!("JOB_DELETED")
        )),
        "{deleted:?}"
    );
}

#[test]
fn redis_policy_denied_message_creates_nothing() {
    let hook = WebhookReceiver::start();
    let w = Worker::start(Q::Redis, &[("ALLOWED_IMAGES", "registry.local/")]);
    let (id, body) = message(&w, &hook, |_| {});
    w.send(&body);
    let calls = wait_terminal(&w, &hook, &id, Duration::from_secs(60));
    assert_eq!(statuses(&calls), vec![99]);
    let err = &calls[0].body["detail"]["error"];
    assert_eq!(err["errorCode"], "POLICY_DENIED");
    assert!(
        err["message"]
            .as_str()
            .unwrap_or("")
            .contains("ALLOWED_IMAGES"),
        "{err}"
    );
    assert!(wait_for(Duration::from_secs(10), || w.queued() == 0));
    assert!(w.jobs().is_empty(), "a denied message creates nothing");
}

#[test]
fn redis_link_local_webhook_is_never_called() {
    let hook = WebhookReceiver::start();
    let w = Worker::start(Q::Redis, &[]);
    let (id, body) = message(&w, &hook, |m| {
        m["webhook"]["url"] = json!("http://169.254.169.254/latest/meta-data/");
    });
    w.send(&body);
    assert!(
        wait_for(Duration::from_secs(30), || w
            .logs()
            .contains(&format!("message {id}: rejected POLICY_DENIED"))),
        "{}",
        w.logs()
    );
    assert!(wait_for(Duration::from_secs(10), || w.queued() == 0));
    let dead = bed().redis_cmd(&["LLEN", &format!("{}dead", w.redis_prefix)]);
    assert_eq!(dead, redis::Value::Int(1), "dead-lettered with its reason");
    assert!(w.jobs().is_empty());
    assert!(hook.calls().is_empty());
}

/// A redis-server speaking only TLS (rediss://) on a free port; killed on drop.
struct TlsRedis {
    child: Child,
    port: u16,
    ca: PathBuf,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let dir = bed().dir.join(unique("tls-redis"));
        std::fs::create_dir_all(&dir).expect("dir");
        let (key, cert, ca) = (
            dir.join("key.pem"),
            dir.join("cert.pem"),
            dir.join("ca.pem"),
        );
        std::fs::write(
            dir.join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .expect("ext");
        // A CA and a leaf it signs (webpki refuses a self-signed CA as the server cert).
        let script = "set -e
            openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca -keyout ca.key -out ca.pem
            openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout key.pem -out leaf.csr
            openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile san.ext -out cert.pem";
        let ok = Command::new("sh")
            .args(["-c", script])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl");
        assert!(ok.success(), "openssl");
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--tls-auth-clients",
                "no",
            ])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        let r = TlsRedis { child, port, ca };
        assert!(
            wait_for(Duration::from_secs(10), || r.conn().is_some()),
            "TLS redis did not start"
        );
        r
    }

    fn conn(&self) -> Option<redis::Connection> {
        let pem = std::fs::read(&self.ca).ok()?;
        let certs = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        };
        redis::Client::build_with_tls(
            format!("rediss://127.0.0.1:{}/0", self.port).as_str(),
            certs,
        )
        .ok()?
        .get_connection()
        .ok()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn rediss_endpoint_with_a_private_ca() {
    let tls = TlsRedis::start();
    let hook = WebhookReceiver::start();
    let endpoint = format!("rediss://127.0.0.1:{}", tls.port);
    let ca = tls.ca.to_string_lossy().to_string();
    let w = Worker::start(
        Q::Redis,
        &[("REDIS_ENDPOINT", &endpoint), ("REDIS_CA_FILE", &ca)],
    );
    make_pvc(&w.ns);
    let (id, body) = message(&w, &hook, |_| {});
    let mut c = tls.conn().expect("TLS connection");
    let _: i64 = redis::cmd("LPUSH")
        .arg(format!("{}queue", w.redis_prefix))
        .arg(&body)
        .query(&mut c)
        .expect("LPUSH");
    let calls = wait_terminal(&w, &hook, &id, Duration::from_secs(90));
    assert_eq!(statuses(&calls), vec![0, 1, 2]);
    let left: i64 = redis::cmd("LLEN")
        .arg(format!("{}processing", w.redis_prefix))
        .query(&mut c)
        .expect("LLEN");
    assert_eq!(left, 0);
}
