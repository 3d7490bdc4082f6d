//! Throughput and latency figures on the test bed (`make bench`); nothing here
//! is asserted beyond "the run completed". Ignored by `cargo test`; run with
//! `cargo test --test bench -- --ignored --nocapture`.
//!
//! For each queue (Redis, then SQS), one release-built worker
//! (`$CARGO_TARGET_DIR/release/k8s-job-worker`, or BENCH_WORKER_BIN), then:
//!
//! 1. idle RSS: VmRSS 2 s after /readyz answers 200, before any message;
//! 2. burst: BENCH_N (1,000) messages enqueued at once (Redis: one LPUSH of all
//!    of them; SQS: SendMessageBatch of 10, back to back) → the time from the
//!    first enqueue to the last Job's status-0 callback (Jobs/s), and each
//!    message's enqueue → status-0 callback latency (p50/p99/max);
//! 3. drain: until the worker reports no Job in flight (every Job terminal);
//! 4. trickle: BENCH_N messages at a steady BENCH_RATE (20/s) → the same
//!    latency. An open-loop fixed rate, not "send the next after the previous
//!    one's status 0": a closed loop never queues, so it would hide any
//!    backlog building up; 20/s is well below the burst throughput, so this
//!    measures the per-message path of a loaded-but-keeping-up worker;
//! 5. peak RSS: VmHWM at the end, and the worker's CPU time.
//!
//! `moto_baseline` measures moto alone (boto3 send, receive, delete; no
//! worker): on the bed, moto (Python, SigV4 checked) bounds the SQS figures.
//!
//! The status-0 callback is sent as soon as the Job exists (the tracker hears
//! of it from intake), so "enqueue → status 0" = queue pick-up + parse + Job
//! create + callback delivery. Messages carry ttlSecondsAfterFinished 31 so the
//! finished Jobs are removed while the bench runs; pods complete on kwok after
//! about a second.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::worker::{Launcher, Q, SEED_002, Worker};
use support::{Bed, WebhookReceiver, bed, repo_root, unique, wait_for};

fn env_num(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The release worker: BENCH_WORKER_BIN, else `<target dir>/release/k8s-job-worker`.
fn worker_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BENCH_WORKER_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_relative() {
                repo_root().join(p)
            } else {
                p
            }
        })
        .unwrap_or_else(|| repo_root().join("target"));
    let bin = target.join("release/k8s-job-worker");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build --release` first (make bench does), or set BENCH_WORKER_BIN",
        bin.display()
    );
    bin
}

/// Wall-clock seconds since the Unix epoch.
fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Maps the receiver's `Instant`s onto wall-clock seconds.
struct Clock {
    at: Instant,
    wall: f64,
}

impl Clock {
    fn new() -> Clock {
        Clock {
            at: Instant::now(),
            wall: now(),
        }
    }
    fn wall(&self, i: Instant) -> f64 {
        if i >= self.at {
            self.wall + (i - self.at).as_secs_f64()
        } else {
            self.wall - (self.at - i).as_secs_f64()
        }
    }
}

/// The release worker for `q` (namespace and instance `bench-*`), with the
/// default environment of tests/support/worker.rs except RUST_LOG=info and no
/// REDIS_DB or CALLBACK_BACKOFF_MAX.
fn start_worker(q: Q) -> Worker {
    Launcher::new(q)
        .bin(worker_bin())
        .ns_tag("bench")
        .instance_tag("bench")
        .env("RUST_LOG", "info")
        .no_env("REDIS_DB")
        .no_env("CALLBACK_BACKOFF_MAX")
        .log_tail(60)
        .start()
}

/// A field of /proc/<pid>/status in KiB (VmRSS, VmHWM).
fn proc_kib(w: &Worker, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", w.pid()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// User + system CPU seconds so far.
fn cpu_secs(w: &Worker) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", w.pid())).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat (utime, stime); `after` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

/// A persistent boto3 sender (one python process): each stdin line is a JSON
/// list of bodies, sent as one SendMessageBatch; for each line it prints the
/// wall time just before the send.
struct SqsSender {
    child: Child,
    stdin: ChildStdin,
    times: Arc<Mutex<Vec<f64>>>,
}

const SQS_SENDER: &str = r#"
import json, sys, time, boto3
endpoint, region, key, secret, url = sys.argv[1:6]
c = boto3.client("sqs", endpoint_url=endpoint, region_name=region,
                 aws_access_key_id=key, aws_secret_access_key=secret)
print("ready", flush=True)
for line in sys.stdin:
    bodies = json.loads(line)
    t = time.time()
    r = c.send_message_batch(QueueUrl=url, Entries=[
        {"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies)])
    if r.get("Failed"):
        print("failed " + json.dumps(r["Failed"]), file=sys.stderr, flush=True)
    print(repr(t), flush=True)
"#;

impl SqsSender {
    fn start(b: &Bed, url: &str) -> SqsSender {
        let mut child = Command::new(&b.python)
            .arg("-c")
            .arg(SQS_SENDER)
            .args([
                &b.sqs_endpoint,
                &b.aws_region,
                &b.aws_access_key_id,
                &b.aws_secret_access_key,
                url,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python sender");
        let stdin = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).expect("sender ready");
        assert_eq!(line.trim(), "ready", "the SQS sender did not start");
        let times = Arc::new(Mutex::new(Vec::new()));
        let t2 = times.clone();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                if let Ok(t) = l.trim().parse::<f64>() {
                    t2.lock().unwrap().push(t);
                }
            }
        });
        SqsSender {
            child,
            stdin,
            times,
        }
    }

    fn send(&mut self, bodies: &[String]) {
        writeln!(self.stdin, "{}", serde_json::to_string(bodies).unwrap()).expect("sender stdin");
    }

    /// Waits until `n` batches were sent; returns their send times.
    fn wait_sent(&self, n: usize, timeout: Duration) -> Vec<f64> {
        wait_for(timeout, || self.times.lock().unwrap().len() >= n);
        self.times.lock().unwrap().clone()
    }
}

impl Drop for SqsSender {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A light message: the seed example without volume, node selector, envRef or
/// toleration (1,000 pods spread over kwok's nodes), TTL 31 s.
fn bench_message(ns: &str, hook: &WebhookReceiver, id: &str) -> String {
    let mut m: Value = serde_json::from_str(SEED_002).unwrap();
    m["id"] = json!(id);
    let job = m["job"].as_object_mut().unwrap();
    for k in ["volume", "nodeSelector", "envRef", "toleration"] {
        job.remove(k);
    }
    job.insert("namespace".into(), json!(ns));
    job.insert("ttlSecondsAfterFinished".into(), json!(31));
    job.insert("command".into(), json!(["/bin/true"]));
    m["webhook"]["url"] = json!(format!("{}/hook", hook.url()));
    m.to_string()
}

/// Enqueue → status-0 latencies (seconds, sorted) of `ids` enqueued at
/// `enq[id]`, and the wall time of the last status 0. Waits up to `timeout`.
fn status0(
    hook: &WebhookReceiver,
    clock: &Clock,
    enq: &HashMap<String, f64>,
    timeout: Duration,
) -> (Vec<f64>, f64) {
    let count = || {
        hook.calls()
            .iter()
            .filter(|c| c.body["status"] == json!(0))
            .count()
    };
    let deadline = Instant::now() + timeout;
    while count() < enq.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut first: HashMap<String, f64> = HashMap::new();
    for c in hook.calls() {
        if c.body["status"] != json!(0) || !(200..300).contains(&c.status) {
            continue;
        }
        if let Some(id) = c.body["id"].as_str() {
            let t = clock.wall(c.at);
            first
                .entry(id.to_string())
                .and_modify(|v| *v = v.min(t))
                .or_insert(t);
        }
    }
    let mut lat: Vec<f64> = enq
        .iter()
        .filter_map(|(id, t0)| first.get(id).map(|t| t - t0))
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let last = first.values().cloned().fold(f64::MIN, f64::max);
    (lat, last)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

#[derive(Default, Debug)]
struct Row {
    queue: &'static str,
    n: usize,
    idle_rss_kib: u64,
    peak_rss_kib: u64,
    cpu_secs: f64,
    burst_enqueue_secs: f64,
    burst_all_jobs_secs: f64,
    burst_jobs_per_sec: f64,
    burst_got: usize,
    burst_p50: f64,
    burst_p99: f64,
    burst_max: f64,
    drain_secs: f64,
    trickle_rate: f64,
    trickle_got: usize,
    trickle_p50: f64,
    trickle_p99: f64,
    trickle_max: f64,
}

fn run(q: Q) -> Row {
    let b = bed();
    let n = env_num("BENCH_N", 1000.0) as usize;
    let rate = env_num("BENCH_RATE", 20.0);
    let clock = Clock::new();
    let w = start_worker(q);
    let redis_key = format!("{}queue", w.redis_prefix);
    let mut row = Row {
        queue: if q == Q::Redis { "redis" } else { "sqs" },
        n,
        trickle_rate: rate,
        ..Row::default()
    };
    assert!(
        wait_for(Duration::from_secs(60), || w.get("/readyz").0 == 200),
        "worker not ready"
    );
    std::thread::sleep(Duration::from_secs(2));
    row.idle_rss_kib = proc_kib(&w, "VmRSS");
    let mut sender = (q == Q::Sqs).then(|| SqsSender::start(b, &w.sqs_url));

    // ---- burst
    let hook = WebhookReceiver::start();
    let ids: Vec<String> = (0..n).map(|i| format!("{}-b{i}", unique("m"))).collect();
    let bodies: Vec<String> = ids
        .iter()
        .map(|id| bench_message(&w.ns, &hook, id))
        .collect();
    let mut enq: HashMap<String, f64> = HashMap::new();
    let t_start = now();
    match q {
        Q::Redis => {
            let mut cmd = redis::cmd("LPUSH");
            cmd.arg(&redis_key);
            for body in &bodies {
                cmd.arg(body);
            }
            let t = now();
            let _: i64 = cmd.query(&mut b.redis()).expect("LPUSH");
            for id in &ids {
                enq.insert(id.clone(), t);
            }
            row.burst_enqueue_secs = now() - t;
        }
        Q::Sqs => {
            let s = sender.as_mut().unwrap();
            for chunk in bodies.chunks(10) {
                s.send(chunk);
            }
            let batches = n.div_ceil(10);
            let times = s.wait_sent(batches, Duration::from_secs(300));
            assert_eq!(times.len(), batches, "SQS batches sent");
            for (i, id) in ids.iter().enumerate() {
                enq.insert(id.clone(), times[i / 10]);
            }
            row.burst_enqueue_secs = now() - t_start;
        }
    }
    let (lat, last) = status0(&hook, &clock, &enq, Duration::from_secs(600));
    let first_enq = enq.values().cloned().fold(f64::MAX, f64::min);
    row.burst_got = lat.len();
    row.burst_all_jobs_secs = last - first_enq;
    row.burst_jobs_per_sec = lat.len() as f64 / row.burst_all_jobs_secs;
    row.burst_p50 = pct(&lat, 50.0);
    row.burst_p99 = pct(&lat, 99.0);
    row.burst_max = lat.last().cloned().unwrap_or(f64::NAN);
    eprintln!("[bench] {}: burst done: {row:?}", row.queue);
    let (code, list) = b.kube_get(&format!(
        "/apis/batch/v1/namespaces/{}/jobs?limit=5000",
        w.ns
    ));
    eprintln!(
        "[bench] {}: {} Jobs in the namespace after the burst ({code})",
        row.queue,
        list["items"].as_array().map(Vec::len).unwrap_or(0)
    );

    // ---- drain: every Job terminal
    let t = Instant::now();
    wait_for(Duration::from_secs(600), || {
        w.metric("job_worker_jobs_in_flight") == Some(0.0)
    });
    row.drain_secs = t.elapsed().as_secs_f64();
    eprintln!("[bench] {}: drained in {:.1}s", row.queue, row.drain_secs);

    // ---- trickle at `rate`/s
    let hook = WebhookReceiver::start();
    let ids: Vec<String> = (0..n).map(|i| format!("{}-t{i}", unique("m"))).collect();
    let mut enq: HashMap<String, f64> = HashMap::new();
    let mut redis = b.redis();
    let t0 = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        let due = t0 + Duration::from_secs_f64(i as f64 / rate);
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let body = bench_message(&w.ns, &hook, id);
        match q {
            Q::Redis => {
                let t = now();
                let _: i64 = redis::cmd("LPUSH")
                    .arg(&redis_key)
                    .arg(&body)
                    .query(&mut redis)
                    .expect("LPUSH");
                enq.insert(id.clone(), t);
            }
            Q::Sqs => sender.as_mut().unwrap().send(&[body]),
        }
    }
    if let Some(s) = sender.as_ref() {
        let before = n.div_ceil(10);
        let times = s.wait_sent(before + n, Duration::from_secs(600));
        for (i, id) in ids.iter().enumerate() {
            if let Some(t) = times.get(before + i) {
                enq.insert(id.clone(), *t);
            }
        }
    }
    let first = enq.values().cloned().fold(f64::MAX, f64::min);
    let last = enq.values().cloned().fold(f64::MIN, f64::max);
    row.trickle_rate = (enq.len().saturating_sub(1)) as f64 / (last - first);
    let (lat, _) = status0(&hook, &clock, &enq, Duration::from_secs(300));
    row.trickle_got = lat.len();
    row.trickle_p50 = pct(&lat, 50.0);
    row.trickle_p99 = pct(&lat, 99.0);
    row.trickle_max = lat.last().cloned().unwrap_or(f64::NAN);
    wait_for(Duration::from_secs(300), || {
        w.metric("job_worker_jobs_in_flight") == Some(0.0)
    });
    row.peak_rss_kib = proc_kib(&w, "VmHWM");
    row.cpu_secs = cpu_secs(&w);
    eprintln!("[bench] {}: done: {row:?}", row.queue);
    row
}

/// What moto alone sustains, for reading the SQS row: boto3 sends `n`
/// messages in batches of 10, then receives (10 at a time) and deletes them in
/// batches, with no worker running. Returns (send s, receive+delete s).
fn sqs_baseline(n: usize) -> (f64, f64) {
    const SCRIPT: &str = r#"
import json, sys, time, boto3
endpoint, region, key, secret, url, n = sys.argv[1:7]
n = int(n)
c = boto3.client("sqs", endpoint_url=endpoint, region_name=region,
                 aws_access_key_id=key, aws_secret_access_key=secret)
body = json.dumps({"pad": "x" * 600})
t = time.time()
for i in range(0, n, 10):
    c.send_message_batch(QueueUrl=url, Entries=[
        {"Id": str(j), "MessageBody": body} for j in range(min(10, n - i))])
sent = time.time() - t
t = time.time()
got = 0
while got < n and time.time() - t < 600:
    r = c.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    ms = r.get("Messages", [])
    if ms:
        c.delete_message_batch(QueueUrl=url, Entries=[
            {"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(ms)])
    got += len(ms)
print(json.dumps([sent, time.time() - t, got]))
"#;
    let b = bed();
    let url = b.sqs_create_queue(&unique("baseline"), false);
    let out = Command::new(&b.python)
        .arg("-c")
        .arg(SCRIPT)
        .args([
            &b.sqs_endpoint,
            &b.aws_region,
            &b.aws_access_key_id,
            &b.aws_secret_access_key,
            &url,
            &n.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("python baseline");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        v[0].as_f64().unwrap_or(f64::NAN),
        v[1].as_f64().unwrap_or(f64::NAN),
    )
}

fn table(rows: &[Row]) -> String {
    let ms = |s: f64| format!("{:.1}", s * 1000.0);
    let mut out = String::new();
    out += "| queue | N | idle RSS MiB | peak RSS MiB | worker CPU s | burst: enqueue s | burst: all Jobs s | Jobs/s | burst p50 ms | burst p99 ms | burst max ms | drain s | trickle rate/s (achieved) | trickle p50 ms | trickle p99 ms | trickle max ms |\n";
    out += "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n";
    for r in rows {
        out += &format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} | {:.0} | {} | {} | {} | {:.1} | {:.1} | {} | {} | {} |\n",
            r.queue,
            if r.burst_got == r.n && r.trickle_got == r.n {
                r.n.to_string()
            } else {
                format!("{} (got {}/{})", r.n, r.burst_got, r.trickle_got)
            },
            r.idle_rss_kib as f64 / 1024.0,
            r.peak_rss_kib as f64 / 1024.0,
            r.cpu_secs,
            r.burst_enqueue_secs,
            r.burst_all_jobs_secs,
            r.burst_jobs_per_sec,
            ms(r.burst_p50),
            ms(r.burst_p99),
            ms(r.burst_max),
            r.drain_secs,
            r.trickle_rate,
            ms(r.trickle_p50),
            ms(r.trickle_p99),
            ms(r.trickle_max),
        );
    }
    out
}

#[test]
#[ignore = "benchmark: run with `make bench`"]
fn bench_redis_and_sqs() {
    let only = std::env::var("BENCH_QUEUES").unwrap_or_else(|_| "redis,sqs".into());
    let mut rows = Vec::new();
    for (name, q) in [("redis", Q::Redis), ("sqs", Q::Sqs)] {
        if only.split(',').any(|s| s.trim() == name) {
            rows.push(run(q));
        }
    }
    let t = table(&rows);
    println!(
        "\nk8s-job-worker bench (test bed, {} cores)\n\n{t}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    if let Some(p) = std::env::var_os("BENCH_OUT") {
        std::fs::write(&p, &t).expect("BENCH_OUT");
    }
}

/// moto's own ceiling, to read the SQS row against (see `sqs_baseline`).
#[test]
#[ignore = "benchmark: run with `make bench`"]
fn moto_baseline() {
    let n = env_num("BENCH_N", 1000.0) as usize;
    let (send, recv) = sqs_baseline(n);
    println!(
        "\nmoto alone (boto3, no worker): send {n} in batches of 10: {send:.1} s ({:.0}/s); receive 10 + delete batch until all {n}: {recv:.1} s ({:.0}/s)",
        n as f64 / send,
        n as f64 / recv
    );
}

/// The raw ceiling: a plain ureq client POSTing minimal Jobs to the bed's API
/// server, on 1 connection and on CREATE_CONCURRENCY (default 16) connections;
/// BENCH_CEILING_N (2,000) Jobs each, into a fresh namespace deleted afterwards.
/// Once with Jobs that run (each create sets off the Job controller, scheduler
/// and kwok, as the worker's burst does: read the worker's burst Jobs/s against
/// this figure at its own concurrency), once with suspended Jobs (the API
/// server's create cost alone, as for Jobs queued for Kueue).
#[test]
#[ignore = "benchmark: run with `make bench`"]
fn raw_ceiling() {
    let b = bed();
    let n = env_num("BENCH_CEILING_N", 2000.0) as usize;
    let conc = support::load::create_concurrency();
    let mut out = String::new();
    out += "| raw ceiling (plain ureq client, minimal Jobs) | connections | Jobs | s | Jobs/s | errors |\n";
    out += "|---|---|---|---|---|---|\n";
    for suspended in [false, true] {
        for c in [1, conc] {
            let r = support::load::raw_ceiling(b, n, c, suspended);
            out += &format!(
                "| {} | {} | {} | {:.2} | {:.0} | {} |\n",
                if suspended {
                    "suspended Jobs (no pods)"
                } else {
                    "Jobs that run (pods follow)"
                },
                r.connections,
                r.created,
                r.secs,
                r.per_sec(),
                r.errors
            );
        }
    }
    println!("\nraw create ceiling (test bed, nothing else running)\n\n{out}");
}

/// The bed's own drain rate: BENCH_DRAIN_N (2,000) minimal Jobs with pods of
/// BENCH_DRAIN_RUN_SECONDS (1) created on CREATE_CONCURRENCY connections, timed
/// from the first create until every one is Complete (watched). The worker's
/// terminal throughput reads against this. BENCH_DRAIN_TIMEOUT (900 s) bounds the wait.
#[test]
#[ignore = "benchmark: run with `make bench`"]
fn bed_drain_rate() {
    let b = bed();
    let n = env_num("BENCH_DRAIN_N", 2000.0) as usize;
    let run = std::env::var("BENCH_DRAIN_RUN_SECONDS").unwrap_or_else(|_| "1".into());
    let conc = support::load::create_concurrency();
    let timeout = Duration::from_secs_f64(env_num("BENCH_DRAIN_TIMEOUT", 900.0));
    let d = support::load::drain_rate(b, n, conc, &run, timeout);
    println!(
        "\nbed drain rate (no worker)\n\n\
         | bed drain | Jobs | pod run s | connections | created in s | half Complete s | all Complete s | Jobs/s (creation → Complete) |\n\
         |---|---|---|---|---|---|---|---|\n\
         | minimal Jobs | {} of {n} | {run} | {conc} | {:.2} | {:.1} | {:.1} | {:.1} |\n",
        d.completed,
        d.creates.secs,
        d.half_complete_secs,
        d.all_complete_secs,
        d.per_sec()
    );
}
