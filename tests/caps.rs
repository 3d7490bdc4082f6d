//! Per-service caps (SERVICE_MAX_CONCURRENT) and the create rate
//! (JOB_CREATE_RATE) on the test bed, for Redis and SQS (moto): one service
//! held at its cap by pods that never start (kwok's `outcome=pending`) while
//! another's messages get their Jobs at once; the capped service's messages
//! deferred (the Redis `<prefix>delayed` set, SQS visibility), never lost,
//! and completing once the cap frees (the blocking Jobs deleted); and
//! JOB_CREATE_RATE=5 holding 50 creates to at least 9 s. And the API
//! server's own 429 (API Priority and Fairness, a priority level that rejects,
//! its seats held by slow requests) keeping the messages until it lets
//! creates through.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_job_worker::queue::Queue;
use k8s_job_worker::queue::redis::RedisQueue;
use serde_json::{Value, json};
use support::worker::{
    Deployment, FAST_ELECTION, Launcher, Q, Worker, calls_for, kill_and_take_over,
    leader_and_standby, make_pvc, message, statuses,
};
use support::{WebhookReceiver, bed, fault_binary, unique, wait_for};

const PENDING: &str = "testbed.k8s-job-worker.io/outcome";

/// The value of `name{service="<service>"}` on the worker's /metrics (0 if absent).
fn by_service(w: &Worker, name: &str, service: &str) -> f64 {
    let prefix = format!("{name}{{service=\"{service}\"}} ");
    w.get("/metrics")
        .1
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.parse::<f64>().ok())
        .unwrap_or(0.0)
}

/// This deployment's Jobs of `service` (their `app` label).
fn jobs_of(w: &Worker, service: &str) -> Vec<Value> {
    w.jobs()
        .into_iter()
        .filter(|j| j["metadata"]["labels"]["app"] == json!(service))
        .collect()
}

/// Message id → its Job's creationTimestamp (RFC 3339, 1 s resolution).
fn created_at(jobs: &[Value]) -> HashMap<String, String> {
    jobs.iter()
        .filter_map(|j| {
            let id = j["metadata"]["annotations"]["k8s-job-worker.io/message-id"].as_str()?;
            let t = j["metadata"]["creationTimestamp"].as_str()?;
            Some((id.to_string(), t.to_string()))
        })
        .collect()
}

/// Enqueues `bodies` quickly: Redis in one LPUSH, SQS by batches of 10 (one
/// boto3 process per call, so a call per message would dominate the timings).
fn send_fast(w: &Worker, bodies: &[String]) {
    if w.q == Q::Redis {
        return w.send_all(bodies);
    }
    for chunk in bodies.chunks(10) {
        let entries: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| json!({"Id": i.to_string(), "MessageBody": b}))
            .collect();
        let r = bed()
            .aws_call(
                "sqs",
                "send_message_batch",
                &json!({"QueueUrl": w.sqs_url, "Entries": entries}),
            )
            .unwrap_or_else(|e| panic!("send_message_batch: {e}"));
        assert!(
            r.get("Failed")
                .is_none_or(|f| f.as_array().is_none_or(Vec::is_empty)),
            "{r}"
        );
    }
}

fn terminal_count(hook: &WebhookReceiver, id: &str) -> usize {
    statuses(&calls_for(hook, id))
        .iter()
        .filter(|s| [2, 3, 99].contains(*s))
        .count()
}

fn a_capped_service_is_deferred_while_another_flows(q: Q) {
    let hook = WebhookReceiver::start();
    let w = Launcher::new(q)
        .ns_tag("caps")
        .envs(&[
            ("SERVICE_MAX_CONCURRENT", "slow=2,*=50"),
            ("POD_START_TIMEOUT", "3600"),
        ])
        .start();
    make_pvc(&w.ns);
    let msg = |service: &str, pending: bool| {
        message(&w, &hook, |m| {
            m["service"] = json!(service);
            if pending {
                m["job"]["fargate"] = json!({"key": PENDING, "value": "pending"});
            }
        })
    };
    // Two slow Jobs whose pods never start fill the slow service's cap.
    let blockers: Vec<(String, String)> = (0..2).map(|_| msg("slow", true)).collect();
    send_fast(
        &w,
        &blockers.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>(),
    );
    assert!(
        wait_for(Duration::from_secs(60), || jobs_of(&w, "slow").len() == 2),
        "the two blocking Jobs were not created\n{}",
        w.logs()
    );
    // Six more slow messages and ten of another service, interleaved.
    let deferred: Vec<(String, String)> = (0..6).map(|_| msg("slow", false)).collect();
    let fast: Vec<(String, String)> = (0..10).map(|_| msg("fast", false)).collect();
    let mut bodies = Vec::new();
    for (i, (_, f)) in fast.iter().enumerate() {
        bodies.push(f.clone());
        if let Some((_, b)) = deferred.get(i) {
            bodies.push(b.clone());
        }
    }
    let t0 = Instant::now();
    send_fast(&w, &bodies);
    let sent = t0.elapsed();
    assert!(
        wait_for(Duration::from_secs(60), || jobs_of(&w, "fast").len() == 10),
        "the other service's Jobs were held up: {} of 10\n{}",
        jobs_of(&w, "fast").len(),
        w.logs()
    );
    eprintln!(
        "[caps {q:?}] 10 Jobs of the uncapped service created {:.2} s after sending began ({:.2} s to send), beside a service at its cap",
        t0.elapsed().as_secs_f64(),
        sent.as_secs_f64()
    );
    assert!(
        wait_for(Duration::from_secs(30), || by_service(
            &w,
            "job_worker_messages_deferred_total",
            "slow"
        ) >= 6.0),
        "the capped service's messages were not deferred\n{}",
        w.logs()
    );
    assert_eq!(
        jobs_of(&w, "slow").len(),
        2,
        "a Job past the cap was created"
    );
    assert_eq!(by_service(&w, "job_worker_jobs_in_flight", "slow"), 2.0);
    // Services not named share the `other` label; none is deferred.
    assert_eq!(
        by_service(&w, "job_worker_messages_deferred_total", "other"),
        0.0
    );
    if q == Q::Redis {
        // They wait in the delayed set, not in the queue or processing.
        let key = format!("{}delayed", w.redis_prefix);
        assert!(
            wait_for(Duration::from_secs(10), || {
                redis::cmd("ZCARD")
                    .arg(&key)
                    .query::<i64>(&mut w.redis_conn())
                    .unwrap_or(0)
                    >= 1
            }),
            "nothing in {key}"
        );
    }
    for (id, _) in &fast {
        assert!(
            wait_for(Duration::from_secs(90), || terminal_count(&hook, id) == 1),
            "no terminal status for {id}: {:?}",
            statuses(&calls_for(&hook, id))
        );
        assert_eq!(statuses(&calls_for(&hook, id)), vec![0, 1, 2], "{id}");
    }
    // Free the cap: delete the two blocking Jobs.
    let b = bed();
    for j in jobs_of(&w, "slow") {
        let name = j["metadata"]["name"].as_str().unwrap_or_default();
        let (code, body) = b.kube_delete(
            &format!("/apis/batch/v1/namespaces/{}/jobs/{name}", w.ns),
            Some(&json!({"propagationPolicy": "Background"})),
        );
        assert!(code == 200 || code == 202, "{code} {body}");
    }
    let t1 = Instant::now();
    let mut most_slow = 0.0f64;
    let done = wait_for(Duration::from_secs(240), || {
        most_slow = most_slow.max(by_service(&w, "job_worker_jobs_in_flight", "slow"));
        deferred
            .iter()
            .all(|(id, _)| terminal_count(&hook, id) == 1)
    });
    assert!(
        done,
        "deferred messages did not complete: {:?}\n{}",
        deferred
            .iter()
            .map(|(id, _)| statuses(&calls_for(&hook, id)))
            .collect::<Vec<_>>(),
        w.logs()
    );
    eprintln!(
        "[caps {q:?}] the 6 deferred messages completed {:.1} s after the cap freed; at most {most_slow} slow Job(s) in flight",
        t1.elapsed().as_secs_f64()
    );
    assert!(most_slow <= 2.0, "the cap was passed: {most_slow}");
    for (id, _) in &deferred {
        assert_eq!(statuses(&calls_for(&hook, id)), vec![0, 1, 2], "{id}");
    }
    for (id, _) in &blockers {
        assert!(
            wait_for(Duration::from_secs(30), || terminal_count(&hook, id) == 1),
            "blocking Job {id}: {:?}",
            statuses(&calls_for(&hook, id))
        );
    }
    // Every fast Job was created before any deferred one.
    let created = created_at(&w.jobs());
    let last_fast = fast.iter().filter_map(|(id, _)| created.get(id)).max();
    let first_deferred = deferred.iter().filter_map(|(id, _)| created.get(id)).min();
    assert!(
        last_fast.is_some() && first_deferred.is_some() && last_fast <= first_deferred,
        "fast {last_fast:?} vs deferred {first_deferred:?}"
    );
    // Nothing lost or duplicated: one terminal status each, the queue empty.
    for (id, _) in blockers.iter().chain(&deferred).chain(&fast) {
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(terminal_count(&hook, id), 1, "{id}");
    }
    assert!(
        wait_for(Duration::from_secs(30), || w.queued() == 0),
        "queue not empty: {}",
        w.queued()
    );
    if q == Q::Redis {
        let n: i64 = redis::cmd("ZCARD")
            .arg(format!("{}delayed", w.redis_prefix))
            .query(&mut w.redis_conn())
            .unwrap_or(-1);
        assert_eq!(n, 0, "the delayed set is empty at the end");
    }
}

fn the_create_rate_holds(q: Q) {
    let hook = WebhookReceiver::start();
    let w = Launcher::new(q)
        .ns_tag("rate")
        .envs(&[("JOB_CREATE_RATE", "5")])
        .start();
    make_pvc(&w.ns);
    let msgs: Vec<(String, String)> = (0..50).map(|_| message(&w, &hook, |_| {})).collect();
    let bodies: Vec<String> = msgs.iter().map(|(_, b)| b.clone()).collect();
    let t0 = Instant::now();
    send_fast(&w, &bodies);
    let sent = t0.elapsed();
    let mut n = 0;
    let ok = wait_for(Duration::from_secs(120), || {
        n = w.jobs().len();
        n >= 50
    });
    let secs = t0.elapsed().as_secs_f64();
    assert!(ok, "only {n} of 50 Jobs\n{}", w.logs());
    eprintln!(
        "[rate {q:?}] JOB_CREATE_RATE=5: 50 Jobs in {secs:.2} s after sending began ({:.2} s to send): {:.2} Jobs/s",
        sent.as_secs_f64(),
        50.0 / secs
    );
    // The burst of 5 at once, then 45 at 5 per second.
    assert!(secs >= 9.0, "50 creates took only {secs:.2} s");
    assert_eq!(w.jobs().len(), 50, "one Job per message");
    assert!(
        wait_for(Duration::from_secs(60), || w.queued() == 0),
        "queue not empty: {}",
        w.queued()
    );
}

#[test]
fn redis_a_capped_service_is_deferred_while_another_flows() {
    a_capped_service_is_deferred_while_another_flows(Q::Redis);
}

#[test]
fn sqs_a_capped_service_is_deferred_while_another_flows() {
    a_capped_service_is_deferred_while_another_flows(Q::Sqs);
}

#[test]
fn redis_the_create_rate_holds() {
    the_create_rate_holds(Q::Redis);
}

#[test]
fn sqs_the_create_rate_holds() {
    the_create_rate_holds(Q::Sqs);
}

/// Holds the seats of an APF priority level: `n` requests (a dry-run Job
/// create as `token`) whose headers are sent and whose body never finishes,
/// until stdin closes. Python, so the bytes on the wire are exactly these.
const HOLD_SEATS: &str = r#"
import json, socket, ssl, sys
host, port, token, ca, ns, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6])
ctx = ssl.create_default_context(cafile=ca)
body = json.dumps({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "seat"},
    "spec": {"template": {"spec": {"restartPolicy": "Never",
        "containers": [{"name": "c", "image": "busybox"}]}}}}).encode()
held = []
for i in range(n):
    s = ctx.wrap_socket(socket.create_connection((host, port)), server_hostname=host)
    head = ("POST /apis/batch/v1/namespaces/%s/jobs?dryRun=All HTTP/1.1\r\nHost: %s:%d\r\n"
            "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n\r\n" % (ns, host, port, token, len(body)))
    s.sendall(head.encode() + body[:1])
    held.append(s)
print("held", flush=True)
sys.stdin.read()
"#;

fn a_429_from_the_api_server_keeps_the_message(q: Q) {
    let b = bed();
    let hook = WebhookReceiver::start();
    let ns = b.new_namespace("apf");
    make_pvc(&ns);
    let sa = support::container::service_account_dir(&ns);
    let token = std::fs::read_to_string(sa.join("token")).expect("token");
    // A priority level with the fewest seats that rejects at once, for the
    // worker's creates of Jobs only.
    let name = unique("caps-apf");
    let api = "/apis/flowcontrol.apiserver.k8s.io/v1";
    let (code, body) = b.kube_post(
        &format!("{api}/prioritylevelconfigurations"),
        &json!({"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
            "metadata": {"name": name},
            "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 1,
                "lendablePercent": 0, "borrowingLimitPercent": 0,
                "limitResponse": {"type": "Reject"}}}}),
    );
    assert_eq!(code, 201, "{body}");
    let (code, body) = b.kube_post(
        &format!("{api}/flowschemas"),
        &json!({"apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
            "metadata": {"name": name},
            "spec": {"priorityLevelConfiguration": {"name": name}, "matchingPrecedence": 100,
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [{"subjects": [{"kind": "ServiceAccount",
                        "serviceAccount": {"name": "k8s-job-worker", "namespace": ns}}],
                    "resourceRules": [{"verbs": ["create"], "apiGroups": ["batch"],
                        "resources": ["jobs"], "namespaces": [ns]}]}]}}),
    );
    assert_eq!(code, 201, "{body}");
    let port = b.api_url.rsplit(':').next().unwrap_or_default().to_string();
    let mut holder = Command::new(&b.python)
        .args(["-c", HOLD_SEATS, "127.0.0.1", &port, &token])
        .arg(&b.ca_file)
        .args([ns.as_str(), "12"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("holder");
    assert_eq!(line.trim(), "held");
    // The level is full once a create of ours is refused with 429 (the
    // apiserver applies the new FlowSchema within a moment).
    let probe = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "probe"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]}}}});
    let mut last = (0, Value::Null);
    let full = wait_for(Duration::from_secs(30), || {
        last = b.kube_as(
            &token,
            "POST",
            &format!("/apis/batch/v1/namespaces/{ns}/jobs?dryRun=All"),
            Some(&probe),
        );
        last.0 == 429
    });
    assert!(full, "APF never answered 429: {last:?}");
    let w = Launcher::new(q)
        .namespace(&ns)
        .instance_tag("apf")
        .env("KUBE_TOKEN_FILE", &sa.join("token").to_string_lossy())
        .start();
    let msgs: Vec<(String, String)> = (0..3).map(|_| message(&w, &hook, |_| {})).collect();
    send_fast(&w, &msgs.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>());
    let refused = |w: &Worker| {
        w.get("/metrics")
            .1
            .lines()
            .find_map(|l| {
                l.strip_prefix("job_worker_job_create_errors_total{code=\"429\"} ")?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
    };
    assert!(
        wait_for(Duration::from_secs(60), || refused(&w) >= 3.0),
        "no 429 on the worker's creates\n{}",
        w.logs()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(w.jobs().is_empty(), "a Job was created while APF refused");
    assert_eq!(w.queued(), 3, "the refused messages stay in the queue");
    let logs = w.logs();
    let retry = logs
        .lines()
        .find(|l| l.contains("429") && l.contains("retrying in"));
    assert!(
        retry.is_some(),
        "the worker did not say when it retries\n{logs}"
    );
    eprintln!("[apf {q:?}] {}", retry.unwrap_or_default());
    // Let creates through: the held requests end.
    let t0 = Instant::now();
    drop(holder.stdin.take());
    let _ = holder.wait();
    for (id, _) in &msgs {
        assert!(
            wait_for(Duration::from_secs(120), || terminal_count(&hook, id) == 1),
            "{id}: {:?}\n{}",
            statuses(&calls_for(&hook, id)),
            w.logs()
        );
        assert_eq!(statuses(&calls_for(&hook, id)), vec![0, 1, 2], "{id}");
    }
    eprintln!(
        "[apf {q:?}] {} create(s) refused with 429; all 3 Jobs done {:.1} s after the level freed",
        refused(&w),
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(w.jobs().len(), 3, "one Job per message");
    assert!(wait_for(Duration::from_secs(30), || w.queued() == 0));
    for kind in ["flowschemas", "prioritylevelconfigurations"] {
        let _ = b.kube_delete(&format!("{api}/{kind}/{name}"), None);
    }
}

#[test]
fn redis_a_429_from_the_api_server_keeps_the_message() {
    a_429_from_the_api_server_keeps_the_message(Q::Redis);
}

#[test]
fn sqs_a_429_from_the_api_server_keeps_the_message() {
    a_429_from_the_api_server_keeps_the_message(Q::Sqs);
}

fn redis_int(args: &[&str]) -> i64 {
    match bed().redis_cmd(args) {
        redis::Value::Int(n) => n,
        v => panic!("{args:?}: {v:?}"),
    }
}

/// The Redis delayed set on its own: `defer` moves a held message from the
/// consumer's processing list into `<prefix>delayed` (nothing in between);
/// it is not received before it is due, comes back to the queue once due,
/// survives the consumer handing back and a new consumer taking over, and
/// the earliest comes back first.
#[test]
fn redis_deferred_messages_wait_in_the_delayed_set_and_come_back_when_due() {
    let prefix = format!("{}-", unique("dq"));
    let endpoint = format!("127.0.0.1:{}", bed().redis_port);
    let (queue, processing, delayed) = (
        format!("{prefix}queue"),
        format!("{prefix}processing:w-a"),
        format!("{prefix}delayed"),
    );
    let mut q = RedisQueue::new(&endpoint, 0, &prefix, "w-a", None).expect("queue");
    q.send(b"late").expect("send");
    q.send(b"early").expect("send");
    let got = q.receive(10, Duration::from_secs(1)).expect("receive");
    assert_eq!(got.len(), 2);
    let by = |b: &[u8]| got.iter().find(|r| r.body == b).expect("received").clone();
    let (late, early) = (by(b"late"), by(b"early"));
    q.defer(&late.handle, Duration::from_secs(3))
        .expect("defer");
    q.defer(&early.handle, Duration::from_millis(1500))
        .expect("defer");
    assert_eq!(
        redis_int(&["LLEN", &processing]),
        0,
        "moved out of processing"
    );
    assert_eq!(redis_int(&["ZCARD", &delayed]), 2, "into the delayed set");
    assert_eq!(redis_int(&["LLEN", &queue]), 0);
    // Not before it is due (the receive blocks at most until the first is).
    let t0 = Instant::now();
    let none = q.receive(10, Duration::from_millis(500)).expect("receive");
    assert!(none.is_empty(), "received before due: {none:?}");
    // A consumer that hands back leaves the set alone; the next one takes over.
    assert_eq!(q.hand_back().expect("hand back"), 0);
    drop(q);
    let mut next = RedisQueue::new(&endpoint, 0, &prefix, "w-b", None).expect("queue");
    next.recover().expect("recover");
    let mut bodies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while bodies.len() < 2 && Instant::now() < deadline {
        for r in next.receive(10, Duration::from_secs(5)).expect("receive") {
            bodies.push((String::from_utf8_lossy(&r.body).to_string(), t0.elapsed()));
            next.ack(&[r.handle]).expect("ack");
        }
    }
    eprintln!("[delayed] came back: {bodies:?}");
    let names: Vec<&str> = bodies.iter().map(|(b, _)| b.as_str()).collect();
    assert_eq!(
        names,
        vec!["early", "late"],
        "each once, the earliest first"
    );
    assert!(bodies[0].1 >= Duration::from_millis(1400), "{bodies:?}");
    assert!(bodies[1].1 >= Duration::from_millis(2900), "{bodies:?}");
    assert_eq!(redis_int(&["ZCARD", &delayed]), 0);
    assert_eq!(redis_int(&["LLEN", &queue]), 0);
}

/// Two replicas of a Redis deployment capped by `cap` (one Job of service
/// "slow"): the leader holds the cap with a Job whose pod never starts
/// (`blocker`), and three more "slow" messages (`waiting`) have been sent.
struct SlowFailover {
    d: Deployment,
    first: Worker,
    second: Worker,
    blocker: (String, String),
    waiting: Vec<(String, String)>,
}

/// A Redis deployment for two replicas with fast elections, capped by `cap`.
fn slow_deployment(tag: &str, cap: (&str, &str)) -> Deployment {
    let d = Launcher::new(Q::Redis)
        .ns_tag(tag)
        .envs(&[cap, ("POD_START_TIMEOUT", "3600")])
        .envs(&FAST_ELECTION)
        .die_with_parent()
        .deploy();
    make_pvc(&d.ns);
    d
}

/// A message (id, body) of service "slow"; `pending`: its pod never starts.
fn slow_message(d: &Deployment, hook: &WebhookReceiver, pending: bool) -> (String, String) {
    support::worker::seed_message(&d.ns, &hook.url(), |m| {
        m["service"] = json!("slow");
        if pending {
            m["job"]["fargate"] = json!({"key": PENDING, "value": "pending"});
        }
    })
}

fn slow_failover(hook: &WebhookReceiver, tag: &str, cap: (&str, &str)) -> SlowFailover {
    let d = slow_deployment(tag, cap);
    let (first, second) = leader_and_standby(&d);
    let msg = |pending: bool| slow_message(&d, hook, pending);
    let blocker = msg(true);
    first.send(&blocker.1);
    assert!(
        wait_for(Duration::from_secs(60), || jobs_of(&first, "slow").len()
            == 1),
        "{}",
        first.logs()
    );
    let waiting: Vec<(String, String)> = (0..3).map(|_| msg(false)).collect();
    send_fast(
        &first,
        &waiting.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>(),
    );
    SlowFailover {
        d,
        first,
        second,
        blocker,
        waiting,
    }
}

/// Deletes the one "slow" Job (background): the cap frees.
fn delete_the_slow_job(d: &Deployment, w: &Worker) {
    let jobs = jobs_of(w, "slow");
    assert_eq!(jobs.len(), 1, "one slow Job: {jobs:?}");
    let name = jobs[0]["metadata"]["name"].as_str().unwrap_or_default();
    let (code, body) = bed().kube_delete(
        &format!("/apis/batch/v1/namespaces/{}/jobs/{name}", d.ns),
        Some(&json!({"propagationPolicy": "Background"})),
    );
    assert!(code == 200 || code == 202, "{code} {body}");
}

/// A leader killed while a capped service's messages wait in the delayed set:
/// the new leader counts the service's live Jobs from the Jobs it lists (their
/// `app` label), keeps deferring past the cap, and creates the waiting ones
/// once the cap frees; each message ends with exactly one terminal status.
#[test]
fn redis_a_new_leader_counts_the_cap_from_the_jobs_and_keeps_deferring() {
    let hook = WebhookReceiver::start();
    let SlowFailover {
        d,
        mut first,
        second,
        blocker,
        waiting,
    } = slow_failover(&hook, "caps-fo", ("SERVICE_MAX_CONCURRENT", "slow=1"));
    assert!(
        wait_for(Duration::from_secs(30), || by_service(
            &first,
            "job_worker_messages_deferred_total",
            "slow"
        ) >= 3.0),
        "not deferred\n{}",
        first.logs()
    );
    let t0 = kill_and_take_over(&mut first, &second);
    // The new leader defers them again: the listed blocking Job holds the cap.
    assert!(
        wait_for(Duration::from_secs(60), || by_service(
            &second,
            "job_worker_messages_deferred_total",
            "slow"
        ) >= 1.0),
        "the new leader did not defer\n{}",
        second.logs()
    );
    assert_eq!(jobs_of(&second, "slow").len(), 1, "the cap was passed");
    delete_the_slow_job(&d, &second);
    let mut most = 0.0f64;
    let done = wait_for(Duration::from_secs(240), || {
        most = most.max(by_service(&second, "job_worker_jobs_in_flight", "slow"));
        waiting.iter().all(|(id, _)| terminal_count(&hook, id) == 1)
    });
    assert!(
        done,
        "{:?}\n{}",
        waiting
            .iter()
            .map(|(id, _)| statuses(&calls_for(&hook, id)))
            .collect::<Vec<_>>(),
        second.logs()
    );
    assert!(most <= 1.0, "the cap was passed: {most}");
    for (id, _) in &waiting {
        assert_eq!(statuses(&calls_for(&hook, id)), vec![0, 1, 2], "{id}");
    }
    assert!(wait_for(Duration::from_secs(30), || terminal_count(
        &hook, &blocker.0
    ) == 1));
    assert!(wait_for(Duration::from_secs(30), || second.queued() == 0));
    eprintln!(
        "[caps failover] the 3 deferred messages done {:.1} s after the kill",
        t0.elapsed().as_secs_f64()
    );
}

/// A leader that dies right after it created the blocking Job of `slow_failover`
/// (the fault-injection build, SIGKILL after the create): the blocker's message
/// is still unacknowledged when the standby takes over, with three more "slow"
/// messages queued behind it.
struct Orphaned {
    d: Deployment,
    /// The new leader.
    b: Worker,
    blocker: (String, String),
    /// The blocker's Job.
    job: String,
    waiting: Vec<(String, String)>,
}

fn killed_after_the_blockers_create(
    hook: &WebhookReceiver,
    tag: &str,
    cap: (&str, &str),
) -> Orphaned {
    let d = slow_deployment(tag, cap);
    let msg = |pending: bool| slow_message(&d, hook, pending);
    let mut a = d.spawn_with(
        &format!("{}-a", d.instance),
        &fault_binary(),
        &[("K8S_JOB_WORKER_FAULT_EXIT_AFTER_JOB_CREATE", "1")],
    );
    assert!(
        wait_for(Duration::from_secs(30), || a.is_leader_by_metrics()),
        "no leader\n{}",
        a.logs()
    );
    let blocker = msg(true);
    a.send(&blocker.1);
    assert!(
        wait_for(Duration::from_secs(30), || a
            .try_wait()
            .ok()
            .flatten()
            .is_some()),
        "the fault build did not die after its create\n{}",
        a.logs()
    );
    assert!(
        a.logs().contains("fault injection: SIGKILL"),
        "{}",
        a.logs()
    );
    let jobs = jobs_of(&a, "slow");
    assert_eq!(jobs.len(), 1, "the blocking Job exists");
    let job = jobs[0]["metadata"]["name"]
        .as_str()
        .expect("a name")
        .to_string();
    assert_eq!(a.queued(), 1, "its message is not acknowledged");
    let waiting: Vec<(String, String)> = (0..3).map(|_| msg(false)).collect();
    send_fast(
        &a,
        &waiting.iter().map(|(_, b)| b.clone()).collect::<Vec<_>>(),
    );
    let b = d.spawn(&format!("{}-b", d.instance));
    assert!(
        wait_for(Duration::from_secs(60), || b.is_leader_by_metrics()),
        "the standby did not take over\n{}",
        b.logs()
    );
    Orphaned {
        d,
        b,
        blocker,
        job,
        waiting,
    }
}

/// After the cap frees: each waiting message ends 0, 1, 2 and the blocker
/// with exactly one terminal status, its last (its Job deleted: 99), and the
/// blocker's Job is never made again.
fn after_the_blocker_is_deleted(hook: &WebhookReceiver, o: &Orphaned) {
    let Orphaned {
        d,
        b,
        blocker,
        job,
        waiting,
    } = o;
    delete_the_slow_job(d, b);
    let done = wait_for(Duration::from_secs(240), || {
        waiting.iter().all(|(id, _)| terminal_count(hook, id) == 1)
    });
    assert!(
        done,
        "{:?}\n{}",
        waiting
            .iter()
            .map(|(id, _)| statuses(&calls_for(hook, id)))
            .collect::<Vec<_>>(),
        b.logs()
    );
    for (id, _) in waiting {
        assert_eq!(statuses(&calls_for(hook, id)), vec![0, 1, 2], "{id}");
    }
    assert!(
        wait_for(Duration::from_secs(10), || b.queued() == 0),
        "{}",
        b.logs()
    );
    std::thread::sleep(Duration::from_secs(3));
    let got = statuses(&calls_for(hook, &blocker.0));
    assert_eq!(terminal_count(hook, &blocker.0), 1, "blocker: {got:?}");
    assert_eq!(got.last(), Some(&99), "blocker: {got:?}");
    assert!(
        !b.logs().contains(&format!("{job}: created")),
        "the blocker's Job was made again\n{}",
        b.logs()
    );
    assert_eq!(
        jobs_of(b, "slow").len(),
        3,
        "the three finished Jobs and no other"
    );
}

/// The blocker's message redelivered to the new leader while its own Job
/// holds the service's cap: it is adopted at once, not deferred behind the
/// cap its Job holds (a new leader used to count the Job against its own
/// message, and re-created it after its deletion had been reported).
#[test]
fn redis_a_redelivery_whose_job_holds_the_cap_is_adopted_not_deferred() {
    let hook = WebhookReceiver::start();
    let o =
        killed_after_the_blockers_create(&hook, "caps-own", ("SERVICE_MAX_CONCURRENT", "slow=1"));
    let (b, blocker) = (&o.b, &o.blocker);
    assert!(
        wait_for(Duration::from_secs(30), || by_service(
            b,
            "job_worker_messages_deferred_total",
            "slow"
        ) >= 3.0
            && b.metric("job_worker_jobs_adopted_total") == Some(1.0)),
        "not adopted, or the others not deferred\n{}",
        b.logs()
    );
    let logs = b.logs();
    assert!(
        !logs.contains(&format!("message {}: service slow", blocker.0)),
        "the blocker was deferred behind its own Job\n{logs}"
    );
    assert!(
        logs.contains(&format!("message {} job", blocker.0))
            && logs.contains("already exists, adopted"),
        "{logs}"
    );
    assert_eq!(jobs_of(b, "slow").len(), 1, "the cap was passed");
    after_the_blocker_is_deleted(&hook, &o);
}

/// MAX_CONCURRENT_JOBS=1 held by the blocker's Job: the new leader receives
/// nothing (the blocker's redelivery waits in the queue with the others);
/// once its Job is deleted (99), the redelivery is acknowledged without a new
/// Job, since this leader saw that Job end.
#[test]
fn redis_a_redelivery_after_its_job_was_deleted_makes_nothing() {
    let hook = WebhookReceiver::start();
    let o = killed_after_the_blockers_create(&hook, "cap-own", ("MAX_CONCURRENT_JOBS", "1"));
    let b = &o.b;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        assert_eq!(
            jobs_of(b, "slow").len(),
            1,
            "past MAX_CONCURRENT_JOBS\n{}",
            b.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(b.queued(), 4, "all four wait in the queue\n{}", b.logs());
    after_the_blocker_is_deleted(&hook, &o);
    assert_eq!(
        b.metric("job_worker_messages_already_ended_total"),
        Some(1.0),
        "{}",
        b.logs()
    );
    assert!(
        b.logs().contains(&format!(
            "message {} job {}/{}: redelivered after its Job ended",
            o.blocker.0, o.d.ns, o.job
        )),
        "{}",
        b.logs()
    );
}

/// MAX_CONCURRENT_JOBS across a leader kill: the new leader counts the Jobs it
/// lists before it receives anything, so messages waiting in the queue at the
/// takeover do not start past the cap.
#[test]
fn redis_a_new_leader_keeps_max_concurrent_jobs_from_its_first_receive() {
    let hook = WebhookReceiver::start();
    let SlowFailover {
        d,
        mut first,
        second,
        waiting,
        ..
    } = slow_failover(&hook, "cap-fo", ("MAX_CONCURRENT_JOBS", "1"));
    // At the cap the leader receives nothing: these wait in the queue.
    assert!(
        wait_for(Duration::from_secs(10), || first.queued() == 3),
        "the messages are not waiting in the queue\n{}",
        first.logs()
    );
    let t0 = kill_and_take_over(&mut first, &second);
    // Watch the Jobs for a while after the takeover: never more than one.
    let mut most = 0;
    while t0.elapsed() < Duration::from_secs(15) {
        most = most.max(jobs_of(&second, "slow").len());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        most,
        1,
        "the new leader passed MAX_CONCURRENT_JOBS\n{}",
        second.logs()
    );
    delete_the_slow_job(&d, &second);
    let done = wait_for(Duration::from_secs(240), || {
        waiting.iter().all(|(id, _)| terminal_count(&hook, id) == 1)
    });
    assert!(done, "{}", second.logs());
    for (id, _) in &waiting {
        assert_eq!(statuses(&calls_for(&hook, id)), vec![0, 1, 2], "{id}");
    }
}
