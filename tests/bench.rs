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
//! 3. drain: until the worker reports no Job in flight (every Job terminal),
//!    then until the burst's Jobs and pods are deleted (TTL, then garbage
//!    collection), so the trickle does not share the bed with those deletions;
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
fn start_worker(q: Q, env: &[(&str, &str)]) -> Worker {
    start_worker_bin(q, env, worker_bin())
}

/// `start_worker` with another binary (e.g. the shipped static musl build).
fn start_worker_bin(q: Q, env: &[(&str, &str)], bin: PathBuf) -> Worker {
    Launcher::new(q)
        .bin(bin)
        .ns_tag("bench")
        .instance_tag("bench")
        .env("RUST_LOG", "info")
        .no_env("REDIS_DB")
        .no_env("CALLBACK_BACKOFF_MAX")
        .envs(env)
        .log_tail(60)
        .start()
}

/// A webhook receiver that answers 200 after `delay` (a slow but healthy
/// receiver), on `threads` threads with keep-alive; records (id, status, when).
struct SlowHook {
    url: String,
    seen: Arc<Mutex<Vec<(String, u64, Instant)>>>,
    server: Arc<tiny_http::Server>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl SlowHook {
    fn start(delay: Duration, threads: usize) -> SlowHook {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..threads)
            .map(|_| {
                let (server, seen) = (server.clone(), seen.clone());
                std::thread::spawn(move || {
                    while let Ok(mut rq) = server.recv() {
                        let mut body = String::new();
                        let _ = rq.as_reader().read_to_string(&mut body);
                        std::thread::sleep(delay);
                        let _ = rq.respond(tiny_http::Response::empty(200));
                        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                        if let (Some(id), Some(st)) = (v["id"].as_str(), v["status"].as_u64()) {
                            seen.lock()
                                .unwrap()
                                .push((id.to_string(), st, Instant::now()));
                        }
                    }
                })
            })
            .collect();
        SlowHook {
            url: format!("http://127.0.0.1:{port}"),
            seen,
            server,
            threads,
        }
    }

    /// When the last of `n` distinct status-`status` callbacks arrived, if all did.
    fn last_of(&self, status: u64, n: usize) -> Option<Instant> {
        let seen = self.seen.lock().unwrap();
        let mut ids = std::collections::HashSet::new();
        let mut last = None;
        for (id, st, at) in seen.iter() {
            if *st == status && ids.insert(id.clone()) {
                last = Some(last.map_or(*at, |l: Instant| l.max(*at)));
            }
        }
        (ids.len() >= n).then_some(last).flatten()
    }
}

impl Drop for SlowHook {
    fn drop(&mut self) {
        self.server.unblock();
        for _ in 1..self.threads.len() {
            self.server.unblock();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// job_worker_jobs_created_total of the worker on `port`.
fn created_total(port: u16) -> f64 {
    let text = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
        .call()
        .ok()
        .and_then(|r| r.into_body().read_to_string().ok())
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("job_worker_jobs_created_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls the worker's created-Jobs counter every 10 ms from now until it has
/// grown by `n`; `wait` returns when that happened.
struct CreatedWatch(std::thread::JoinHandle<Option<Instant>>);

impl CreatedWatch {
    fn start(port: u16, n: usize) -> CreatedWatch {
        let base = created_total(port);
        CreatedWatch(std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(900);
            while Instant::now() < deadline {
                if created_total(port) >= base + n as f64 {
                    return Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        }))
    }
    fn wait(self, _timeout: Duration) -> Option<Instant> {
        self.0.join().ok().flatten()
    }
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
    bench_message_to(ns, &hook.url(), id)
}

fn bench_message_to(ns: &str, hook_url: &str, id: &str) -> String {
    let mut m: Value = serde_json::from_str(SEED_002).unwrap();
    m["id"] = json!(id);
    let job = m["job"].as_object_mut().unwrap();
    for k in ["volume", "nodeSelector", "envRef", "toleration"] {
        job.remove(k);
    }
    job.insert("namespace".into(), json!(ns));
    job.insert("ttlSecondsAfterFinished".into(), json!(31));
    job.insert("command".into(), json!(["/bin/true"]));
    m["webhook"]["url"] = json!(format!("{hook_url}/hook"));
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
    /// First enqueue → job_worker_jobs_created_total reached N (the creates alone).
    burst_create_secs: f64,
    burst_got: usize,
    burst_p50: f64,
    burst_p99: f64,
    burst_max: f64,
    drain_secs: f64,
    /// First enqueue → the last message's status 2.
    terminal_secs: f64,
    terminal_got: usize,
    trickle_n: usize,
    trickle_rate: f64,
    trickle_got: usize,
    trickle_p50: f64,
    trickle_p99: f64,
    trickle_max: f64,
    /// 1-minute load average right after the burst, terminal and trickle phases.
    load_burst: String,
    load_terminal: String,
    load_trickle: String,
    /// Trickle means from the worker's histograms (queue_to_job_seconds,
    /// callback_delivery_seconds).
    trickle_receive_to_job_ms: f64,
    trickle_callback_queue_ms: f64,
}

fn run(q: Q, n: usize, trickle_n: usize, w: &Worker) -> Row {
    let b = bed();
    let rate = env_num("BENCH_RATE", 20.0);
    let clock = Clock::new();
    let redis_key = format!("{}queue", w.redis_prefix);
    let mut row = Row {
        queue: if q == Q::Redis { "redis" } else { "sqs" },
        n,
        trickle_n,
        trickle_rate: rate,
        ..Row::default()
    };
    assert!(
        wait_for(Duration::from_secs(60), || w.get("/readyz").0 == 200),
        "worker not ready"
    );
    std::thread::sleep(Duration::from_secs(2));
    row.idle_rss_kib = proc_kib(w, "VmRSS");
    let mut sender = (q == Q::Sqs).then(|| SqsSender::start(b, &w.sqs_url));

    // ---- burst
    let hook = WebhookReceiver::start();
    let ids: Vec<String> = (0..n).map(|i| format!("{}-b{i}", unique("m"))).collect();
    let bodies: Vec<String> = ids
        .iter()
        .map(|id| bench_message(&w.ns, &hook, id))
        .collect();
    let mut enq: HashMap<String, f64> = HashMap::new();
    let created = CreatedWatch::start(w.http_port, n);
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
    row.burst_create_secs = created
        .wait(Duration::from_secs(60))
        .map_or(f64::NAN, |t| clock.wall(t) - first_enq);
    row.burst_got = lat.len();
    row.burst_all_jobs_secs = last - first_enq;
    row.burst_jobs_per_sec = lat.len() as f64 / row.burst_all_jobs_secs;
    row.burst_p50 = pct(&lat, 50.0);
    row.burst_p99 = pct(&lat, 99.0);
    row.burst_max = lat.last().cloned().unwrap_or(f64::NAN);
    row.load_burst = load_avg();
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

    // ---- terminal throughput: every message's status 2
    let count2 = || {
        let mut ids = std::collections::HashSet::new();
        for c in hook.delivered() {
            if c.body["status"] == json!(2)
                && let Some(id) = c.body["id"].as_str()
            {
                ids.insert(id.to_string());
            }
        }
        ids.len()
    };
    wait_for(Duration::from_secs(900), || count2() >= n);
    row.terminal_got = count2();
    let last2 = hook
        .delivered()
        .iter()
        .filter(|c| c.body["status"] == json!(2))
        .map(|c| clock.wall(c.at))
        .fold(f64::MIN, f64::max);
    row.terminal_secs = last2 - first_enq;
    row.load_terminal = load_avg();
    eprintln!(
        "[bench] {}: {} of {n} at status 2, {:.1}s after the first enqueue",
        row.queue, row.terminal_got, row.terminal_secs
    );

    // ---- drain: every Job terminal
    let t = Instant::now();
    wait_for(Duration::from_secs(600), || {
        w.metric("job_worker_jobs_in_flight") == Some(0.0)
    });
    row.drain_secs = t.elapsed().as_secs_f64();
    eprintln!("[bench] {}: drained in {:.1}s", row.queue, row.drain_secs);

    // ---- the burst's Jobs and pods deleted (TTL, then garbage collection), so
    // that the trickle measures the worker rather than the bed's deletions.
    let t = Instant::now();
    let empty = |kind: &str| {
        let (code, list) = b.kube_get(&format!("{kind}?limit=1"));
        code == 200 && list["items"].as_array().is_some_and(Vec::is_empty)
    };
    let jobs = format!("/apis/batch/v1/namespaces/{}/jobs", w.ns);
    let pods = format!("/api/v1/namespaces/{}/pods", w.ns);
    let gone = wait_for(Duration::from_secs(600), || empty(&jobs) && empty(&pods));
    eprintln!(
        "[bench] {}: burst Jobs and pods gone: {gone} after {:.1}s",
        row.queue,
        t.elapsed().as_secs_f64()
    );

    // ---- trickle at `rate`/s
    // Where a status 0's time goes: the worker's own histograms over the
    // trickle alone (receive → Job known to the tracker; callback queued →
    // delivered, which includes waiting for the message's turn and records).
    let hist = |name: &str| {
        let s = w.metric(&format!("job_worker_{name}_sum")).unwrap_or(0.0);
        let c = w.metric(&format!("job_worker_{name}_count")).unwrap_or(0.0);
        (s, c)
    };
    let q2j0 = hist("queue_to_job_seconds");
    let cb0 = hist("callback_delivery_seconds");
    let hook = WebhookReceiver::start();
    let ids: Vec<String> = (0..trickle_n)
        .map(|i| format!("{}-t{i}", unique("m")))
        .collect();
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
        let times = s.wait_sent(before + trickle_n, Duration::from_secs(600));
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
    row.load_trickle = load_avg();
    let mean_ms = |a: (f64, f64), b: (f64, f64)| {
        if b.1 > a.1 {
            1000.0 * (b.0 - a.0) / (b.1 - a.1)
        } else {
            f64::NAN
        }
    };
    row.trickle_receive_to_job_ms = mean_ms(q2j0, hist("queue_to_job_seconds"));
    row.trickle_callback_queue_ms = mean_ms(cb0, hist("callback_delivery_seconds"));
    eprintln!(
        "[bench] {}: trickle means: receive → Job at the tracker {:.1} ms; callback queued → delivered {:.1} ms (every status)",
        row.queue, row.trickle_receive_to_job_ms, row.trickle_callback_queue_ms
    );
    wait_for(Duration::from_secs(300), || {
        w.metric("job_worker_jobs_in_flight") == Some(0.0)
    });
    row.peak_rss_kib = proc_kib(w, "VmHWM");
    row.cpu_secs = cpu_secs(w);
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
            if r.burst_got == r.n && r.trickle_got == r.trickle_n {
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

/// The burst again, with a receiver that answers every callback after 50 ms:
/// seconds from the last Job created (the worker's counter) to the last
/// status 0. Returns (create s, lag s).
fn slow_burst(w: &Worker, n: usize) -> (f64, f64) {
    let b = bed();
    let hook = SlowHook::start(Duration::from_millis(50), 96);
    let bodies: Vec<String> = (0..n)
        .map(|i| bench_message_to(&w.ns, &hook.url, &format!("{}-s{i}", unique("m"))))
        .collect();
    let created = CreatedWatch::start(w.http_port, n);
    let t0 = Instant::now();
    let mut cmd = redis::cmd("LPUSH");
    cmd.arg(format!("{}queue", w.redis_prefix));
    for body in &bodies {
        cmd.arg(body);
    }
    let _: i64 = cmd.query(&mut b.redis()).expect("LPUSH");
    let made = created.wait(Duration::from_secs(600));
    wait_for(Duration::from_secs(600), || hook.last_of(0, n).is_some());
    let last0 = hook.last_of(0, n);
    wait_for(Duration::from_secs(900), || {
        w.metric("job_worker_jobs_in_flight") == Some(0.0)
    });
    match (made, last0) {
        (Some(m), Some(l)) => (
            (m - t0).as_secs_f64(),
            l.saturating_duration_since(m).as_secs_f64(),
        ),
        _ => (f64::NAN, f64::NAN),
    }
}

/// BENCH_INFLIGHT_N (10,000) Jobs whose pods never finish (kwok keeps them
/// Pending), all in flight at once, on a fresh worker: seconds until the
/// worker counts them all in flight, and its peak RSS (KiB) then.
fn in_flight(n: usize, bin: PathBuf) -> InFlight {
    let b = bed();
    let w = start_worker_bin(Q::Redis, &[("POD_START_TIMEOUT", "3600")], bin.clone());
    assert!(
        wait_for(Duration::from_secs(60), || w.get("/readyz").0 == 200),
        "worker not ready"
    );
    std::thread::sleep(Duration::from_secs(2));
    let idle = proc_kib(&w, "VmRSS");
    let hook = WebhookReceiver::start();
    let mut cmd = redis::cmd("LPUSH");
    cmd.arg(format!("{}queue", w.redis_prefix));
    for i in 0..n {
        let mut m: Value = serde_json::from_str(&bench_message(
            &w.ns,
            &hook,
            &format!("{}-f{i}", unique("m")),
        ))
        .unwrap();
        m["job"]["fargate"] =
            json!({"key": "testbed.k8s-job-worker.io/outcome", "value": "pending"});
        cmd.arg(m.to_string());
    }
    let t0 = Instant::now();
    let _: i64 = cmd.query(&mut b.redis()).expect("LPUSH");
    wait_for(Duration::from_secs(900), || {
        w.metric("job_worker_jobs_in_flight").unwrap_or(0.0) >= n as f64
    });
    let secs = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(5)); // pods and their events settle
    let live = w.metric("job_worker_jobs_in_flight").unwrap_or(0.0) as usize;
    let peak = proc_kib(&w, "VmHWM");
    let ns = w.ns.clone();
    drop(w);
    // Unload the bed: the namespace's pods go (its Jobs keep our finalizer,
    // with the worker gone, until the bed is torn down).
    let _ = b.kube_delete(&format!("/api/v1/namespaces/{ns}"), None);
    InFlight {
        bin: bin_label(&bin),
        secs,
        live,
        peak_kib: peak,
        idle_kib: idle,
    }
}

/// One in-flight run: which binary, how long until all were in flight, how
/// many were, peak RSS, and idle RSS before the first message.
struct InFlight {
    bin: String,
    secs: f64,
    live: usize,
    peak_kib: u64,
    idle_kib: u64,
}

/// "static musl" for the shipped build, else "glibc" (the release build).
fn bin_label(bin: &std::path::Path) -> String {
    if bin.to_string_lossy().contains("musl") {
        "static musl (shipped)".into()
    } else {
        "glibc release".into()
    }
}

/// The binaries the in-flight row runs: BENCH_INFLIGHT_BINS (comma-separated
/// paths), else the release worker and, when built (`make static-amd64`), the
/// shipped static musl binary beside it.
fn in_flight_bins() -> Vec<PathBuf> {
    if let Ok(list) = std::env::var("BENCH_INFLIGHT_BINS") {
        return list
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| PathBuf::from(p.trim()))
            .collect();
    }
    let rel = worker_bin();
    let mut bins = vec![rel.clone()];
    if let Some(target) = rel.parent().and_then(|p| p.parent()) {
        let musl = target.join("x86_64-unknown-linux-musl/release/k8s-job-worker");
        if musl.exists() {
            bins.push(musl);
        }
    }
    bins
}

/// The machine's 1-minute load average (the bed is shared), for the table.
fn load_avg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Every worker row of issue 11 in one run, with the bed's ceiling and drain
/// rate measured in the same run beside them (see the module doc).
#[test]
#[ignore = "benchmark: run with `make bench`"]
fn bench_redis_and_sqs() {
    let b = bed();
    let only = std::env::var("BENCH_QUEUES").unwrap_or_else(|_| "redis,sqs".into());
    let n = env_num("BENCH_N", 5000.0) as usize;
    let sqs_n = env_num("BENCH_SQS_N", 1000.0) as usize;
    let trickle_n = env_num("BENCH_TRICKLE_N", 1000.0) as usize;
    let inflight_n = env_num("BENCH_INFLIGHT_N", 10000.0) as usize;
    let conc = support::load::create_concurrency();
    // The ceiling over as many Jobs as the burst (BENCH_CEILING_N overrides).
    let ceiling_n = env_num("BENCH_CEILING_N", n as f64) as usize;

    // The bed alone, first: create ceiling on 1 and `conc` connections, drain rate.
    let c1 = support::load::raw_ceiling(b, ceiling_n, 1, false);
    let load_c1 = load_avg();
    let cn = support::load::raw_ceiling(b, ceiling_n, conc, false);
    let load_cn = load_avg();
    // The same, with the worker's writes per message: a create and 3 records.
    let cr = support::load::ceiling_with_records(b, ceiling_n, conc, false, 3);
    let load_cr = load_avg();
    eprintln!(
        "[bench] ceiling: 1 conn {:.0}/s, {conc} conn {:.0}/s, {conc} conn with 3 records each {:.0}/s",
        c1.per_sec(),
        cn.per_sec(),
        cr.per_sec()
    );
    let drain = support::load::drain_rate(b, ceiling_n, conc, "1", Duration::from_secs(900));
    let load_drain = load_avg();
    eprintln!("[bench] bed drain rate {:.1}/s", drain.per_sec());

    let mut rows = Vec::new();
    let mut slow = (f64::NAN, f64::NAN);
    let mut load_slow = String::new();
    let cb_conc = std::env::var("CALLBACK_CONCURRENCY_PER_HOST").unwrap_or_default();
    let mut env: Vec<(&str, &str)> = Vec::new();
    let conc_s = conc.to_string();
    if std::env::var_os("CREATE_CONCURRENCY").is_some() {
        env.push(("CREATE_CONCURRENCY", &conc_s));
    }
    if !cb_conc.is_empty() {
        env.push(("CALLBACK_CONCURRENCY_PER_HOST", &cb_conc));
    }
    if only.split(',').any(|s| s.trim() == "redis") {
        let w = start_worker(Q::Redis, &env);
        rows.push(run(Q::Redis, n, trickle_n, &w));
        slow = slow_burst(&w, n);
        load_slow = load_avg();
        eprintln!(
            "[bench] slow receiver: creates {:.1}s, last status 0 {:.2}s after the last create",
            slow.0, slow.1
        );
    }
    let mut moto = (f64::NAN, f64::NAN);
    if only.split(',').any(|s| s.trim() == "sqs") {
        let w = start_worker(Q::Sqs, &env);
        rows.push(run(Q::Sqs, sqs_n, trickle_n, &w));
        drop(w);
        moto = sqs_baseline(sqs_n);
    }
    let inflight: Vec<(InFlight, String)> =
        if only.split(',').any(|s| s.trim() == "redis") && inflight_n > 0 {
            in_flight_bins()
                .into_iter()
                .map(|bin| {
                    let r = in_flight(inflight_n, bin);
                    eprintln!(
                        "[bench] {} in flight, {}: peak RSS {:.1} MiB, idle {:.1} MiB",
                        r.live,
                        r.bin,
                        mib(r.peak_kib),
                        mib(r.idle_kib)
                    );
                    (r, load_avg())
                })
                .collect()
        } else {
            Vec::new()
        };

    let t = table(&rows);
    let mut sum = String::new();
    sum += "| row | worker | beside it (same run) | ratio |\n|---|---|---|---|\n";
    sum += &format!(
        "| raw ceiling (plain ureq, minimal Jobs, {ceiling_n}) | — | 1 conn: {:.0} Jobs/s (load {load_c1}); {conc} conn: {:.0} Jobs/s (load {load_cn}) | — |\n",
        c1.per_sec(),
        cn.per_sec()
    );
    sum += &format!(
        "| ceiling with records (plain ureq: create + 3 annotation PATCHes per Job, {ceiling_n}) | — | {conc} conn: {:.0} Jobs/s with all their records = {:.0} writes/s (load {load_cr}) | — |\n",
        cr.per_sec(),
        4.0 * cr.per_sec()
    );
    for r in &rows {
        let ms = |s: f64| format!("{:.1}", s * 1000.0);
        let create_rate = r.n as f64 / r.burst_create_secs;
        if r.queue == "redis" {
            sum += &format!(
                "| Redis burst {} (CREATE_CONCURRENCY {conc}) | {:.0} Jobs/s created ({:.2} s); last status 0 after {:.2} s (load {}) | ceiling at {conc} conn: {:.0} Jobs/s | {:.0} % |\n",
                r.n,
                create_rate,
                r.burst_create_secs,
                r.burst_all_jobs_secs,
                r.load_burst,
                cn.per_sec(),
                100.0 * create_rate / cn.per_sec()
            );
            sum += &format!(
                "| terminal: all {} to status 2 | {} of {} in {:.1} s = {:.0} Jobs/s (load {}) | bed drain rate: {:.0} Jobs/s ({} Jobs, load {load_drain}) | {:.0} % |\n",
                r.n,
                r.terminal_got,
                r.n,
                r.terminal_secs,
                r.terminal_got as f64 / r.terminal_secs,
                r.load_terminal,
                drain.per_sec(),
                drain.completed,
                100.0 * (r.terminal_got as f64 / r.terminal_secs) / drain.per_sec()
            );
            sum += &format!(
                "| trickle {:.0}/s ({} msgs), Redis | status 0 p50 {} ms, p99 {} ms (load {}; means: receive → Job {:.1} ms, callback queued → delivered {:.1} ms); idle RSS {:.1} MiB; peak RSS (burst+trickle) {:.1} MiB | target p50 ≤ 5 ms, p99 ≤ 10 ms | — |\n",
                r.trickle_rate,
                r.trickle_got,
                ms(r.trickle_p50),
                ms(r.trickle_p99),
                r.load_trickle,
                r.trickle_receive_to_job_ms,
                r.trickle_callback_queue_ms,
                mib(r.idle_rss_kib),
                mib(r.peak_rss_kib)
            );
            sum += &format!(
                "| burst {} with a 50 ms receiver | last status 0 {:.2} s after the last Job created (creates {:.2} s; load {load_slow}) | — | — |\n",
                r.n, slow.1, slow.0
            );
        } else {
            sum += &format!(
                "| SQS burst {} | {:.0} Jobs/s created; last status 0 after {:.2} s ({:.0}/s) | moto alone: send {:.0}/s, receive+delete {:.0}/s | {:.0} % of moto's receive+delete |\n",
                r.n,
                create_rate,
                r.burst_all_jobs_secs,
                r.burst_jobs_per_sec,
                r.n as f64 / moto.0,
                r.n as f64 / moto.1,
                100.0 * create_rate / (r.n as f64 / moto.1)
            );
            sum += &format!(
                "| SQS trickle {:.0}/s ({} msgs) | status 0 p50 {} ms, p99 {} ms (load {}); idle RSS {:.1} MiB | — | — |\n",
                r.trickle_rate,
                r.trickle_got,
                ms(r.trickle_p50),
                ms(r.trickle_p99),
                r.load_trickle,
                mib(r.idle_rss_kib)
            );
        }
    }
    for (r, load) in &inflight {
        sum += &format!(
            "| {inflight_n} Jobs in flight (pods never finish), {} | peak RSS {:.1} MiB ({} counted in flight after {:.1} s; load {load}); idle RSS {:.1} MiB | target ≤ 32 MiB; idle ≤ 5 MiB | — |\n",
            r.bin,
            mib(r.peak_kib),
            r.live,
            r.secs,
            mib(r.idle_kib)
        );
    }
    println!(
        "\nk8s-job-worker bench (test bed, {} cores)\n\n{sum}\n{t}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    if let Some(p) = std::env::var_os("BENCH_OUT") {
        std::fs::write(&p, format!("{sum}\n{t}")).expect("BENCH_OUT");
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
    let r = support::load::ceiling_with_records(b, n, conc, false, 3);
    out += &format!(
        "| Jobs that run, each with 3 annotation PATCHes after its create (the worker's records) | {} | {} | {:.2} | {:.0} | {} |\n",
        r.connections,
        r.created,
        r.secs,
        r.per_sec(),
        r.errors
    );
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

/// How the defaults of CREATE_CONCURRENCY and CALLBACK_CONCURRENCY_PER_HOST
/// were chosen: with BENCH_SWEEP set (else it returns at once), for each
/// CREATE_CONCURRENCY in BENCH_SWEEP_CREATE (1,4,8,16,32) a fresh worker
/// creates a Redis burst of BENCH_SWEEP_N (2,000) beside the raw ceiling at the
/// same concurrency; then for each CALLBACK_CONCURRENCY_PER_HOST in
/// BENCH_SWEEP_CALLBACK (4,16,32,64) the burst with a 50 ms receiver.
#[test]
#[ignore = "benchmark: run with `BENCH_SWEEP=1 make bench`"]
fn sweep_concurrency() {
    if std::env::var_os("BENCH_SWEEP").is_none() {
        return;
    }
    let b = bed();
    let n = env_num("BENCH_SWEEP_N", 2000.0) as usize;
    let list = |name: &str, default: &str| -> Vec<usize> {
        std::env::var(name)
            .unwrap_or_else(|_| default.into())
            .split(',')
            .filter_map(|v| v.trim().parse().ok())
            .collect()
    };
    let mut out = String::from(
        "| CREATE_CONCURRENCY | burst Jobs/s (worker) | raw ceiling Jobs/s (same conns) | ratio | peak RSS MiB |\n|---|---|---|---|---|\n",
    );
    for c in list("BENCH_SWEEP_CREATE", "1,4,8,16,32") {
        let ceiling = support::load::raw_ceiling(b, n, c, false);
        let cs = c.to_string();
        let w = start_worker(Q::Redis, &[("CREATE_CONCURRENCY", &cs)]);
        assert!(wait_for(Duration::from_secs(60), || w.get("/readyz").0 == 200));
        let hook = WebhookReceiver::start();
        let created = CreatedWatch::start(w.http_port, n);
        let mut cmd = redis::cmd("LPUSH");
        cmd.arg(format!("{}queue", w.redis_prefix));
        for i in 0..n {
            cmd.arg(bench_message(
                &w.ns,
                &hook,
                &format!("{}-w{i}", unique("m")),
            ));
        }
        let t0 = Instant::now();
        let _: i64 = cmd.query(&mut b.redis()).expect("LPUSH");
        let secs = created
            .wait(Duration::from_secs(600))
            .map_or(f64::NAN, |t| (t - t0).as_secs_f64());
        let rate = n as f64 / secs;
        let peak = proc_kib(&w, "VmHWM");
        out += &format!(
            "| {c} | {rate:.0} | {:.0} | {:.0} % | {:.1} |\n",
            ceiling.per_sec(),
            100.0 * rate / ceiling.per_sec(),
            mib(peak)
        );
        eprintln!(
            "[sweep] create {c}: {rate:.0}/s vs ceiling {:.0}/s",
            ceiling.per_sec()
        );
        wait_for(Duration::from_secs(600), || {
            w.metric("job_worker_jobs_in_flight") == Some(0.0)
        });
    }
    out += "\n| CALLBACK_CONCURRENCY_PER_HOST | creates s | last status 0 after the last create, s (50 ms receiver) | peak RSS MiB |\n|---|---|---|---|\n";
    for k in list("BENCH_SWEEP_CALLBACK", "4,16,32,64") {
        let ks = k.to_string();
        let w = start_worker(Q::Redis, &[("CALLBACK_CONCURRENCY_PER_HOST", &ks)]);
        assert!(wait_for(Duration::from_secs(60), || w.get("/readyz").0 == 200));
        let (create, lag) = slow_burst(&w, n);
        out += &format!(
            "| {k} | {create:.2} | {lag:.2} | {:.1} |\n",
            mib(proc_kib(&w, "VmHWM"))
        );
        eprintln!("[sweep] callbacks {k}: lag {lag:.2}s");
    }
    println!("\nconcurrency sweep (Redis burst of {n})\n\n{out}");
}

/// The in-flight row alone (`make bench` has it in its table): with
/// BENCH_RSS set (else it returns at once), BENCH_INFLIGHT_N (10,000)
/// never-finishing Jobs on each binary of `in_flight_bins` (the glibc release
/// build and the shipped static musl build): idle RSS before the first
/// message and peak RSS.
#[test]
#[ignore = "benchmark: run with `BENCH_RSS=1 make bench`"]
fn in_flight_rss() {
    if std::env::var_os("BENCH_RSS").is_none() {
        return;
    }
    let n = env_num("BENCH_INFLIGHT_N", 10000.0) as usize;
    let mut out = String::from(
        "| binary | Jobs in flight | seconds until all in flight | idle RSS MiB | peak RSS MiB | load |\n|---|---|---|---|---|---|\n",
    );
    for bin in in_flight_bins() {
        let r = in_flight(n, bin);
        out += &format!(
            "| {} | {} of {n} | {:.1} | {:.1} | {:.1} | {} |\n",
            r.bin,
            r.live,
            r.secs,
            mib(r.idle_kib),
            mib(r.peak_kib),
            load_avg()
        );
    }
    println!("\nin-flight RSS (test bed)\n\n{out}");
}
