//! End to end on the test bed: the worker binary, a real control plane with
//! kwok, real Redis and moto (signature checking on), and real webhook
//! receivers. Every test runs its own worker instance (own namespace, queue,
//! WORKER_INSTANCE label and Lease), so the tests run in parallel on one bed.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::worker::{
    Launcher, Q, Worker, calls_for, free_port, make_pvc, message, statuses, wait_terminal,
};
use support::{Call, WebhookReceiver, bed, unique, wait_for};

/// One worker of its own (namespace `e2e-*`, instance `w-*`) with the default
/// environment plus `extra`.
fn start(q: Q, extra: &[(&str, &str)]) -> Worker {
    Launcher::new(q).envs(extra).start()
}

fn seed_example_reports_0_1_2(q: Q) {
    let hook = WebhookReceiver::start();
    let w = start(q, &[]);
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
    let w = start(q, &[]);
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
    let w = start(q, &[("MAX_MESSAGE_BYTES", "65536")]);
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
    let w = start(q, &[]);
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
    let w = start(q, &[("POD_START_TIMEOUT", "6")]);
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
    let w = start(q, &[]);
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
/// Issue 12: a UTF-8 byte-order mark before the JSON (Windows and .NET
/// producers send one) is ignored, not refused as malformed.
#[test]
fn redis_seed_example_with_a_byte_order_mark_reports_0_1_2() {
    let hook = WebhookReceiver::start();
    let w = start(Q::Redis, &[]);
    make_pvc(&w.ns);
    let (id, body) = message(&w, &hook, |_| {});
    w.send(&format!("\u{feff}{body}"));
    let calls = wait_terminal(&w, &hook, &id, Duration::from_secs(90));
    assert_eq!(
        statuses(&calls),
        vec![0, 1, 2],
        "{:#?}",
        calls.iter().map(|c| &c.body).collect::<Vec<_>>()
    );
    assert_eq!(w.jobs().len(), 1);
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
    let hook = WebhookReceiver::start();
    let w = start(Q::Sqs, &[("AWS_SECRET_ACCESS_KEY", "wrong-secret")]);
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
    let w = Launcher::new(Q::Sqs).fifo().start();
    let url = w.sqs_url.clone();
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
}

#[test]
fn redis_max_concurrent_jobs_applies_back_pressure() {
    let hook = WebhookReceiver::start();
    let w = start(
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
    let w = start(Q::Redis, &[("ALLOWED_IMAGES", "registry.local/")]);
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
    let w = start(Q::Redis, &[]);
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
    let w = start(
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
    let left = support::worker::redis_processing_len(&mut c, &w.redis_prefix);
    assert_eq!(left, 0);
}
