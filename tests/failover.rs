//! "Survives anything": leader failover under load, crash loops, terminal
//! callbacks across downtime longer than the Job's TTL, SIGTERM hand-over,
//! a Redis restart and an API server connection cut. Worker processes run on
//! the test bed; every test has its own namespace, WORKER_INSTANCE, Redis key
//! prefix and Lease. Timings are printed (eprintln) for the notes.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::worker::{Deployment, Launcher, Q, Worker, die_with_parent, free_port, seed_message};
use support::{WebhookReceiver, bed, is_terminal, wait_for};

const FAIL_LABEL: &str = "testbed.k8s-job-worker.io/outcome";

// Short election timings (lease > renew > 1.2 × retry).
const LEASE: u64 = 6;
const RENEW: u64 = 4;
const RETRY: u64 = 1;

/// A Redis deployment of replicas tagged `tag` (instance `fo-*`), with the
/// short election timings, then `extra`; children die with the test process.
/// The default environment of tests/support/worker.rs, without
/// ALLOWED_ENV_REFS and ALLOWED_PVCS (the messages drop the seed's envRef and
/// PVC).
fn spec(tag: &str, extra: &[(&str, &str)]) -> Launcher {
    Launcher::new(Q::Redis)
        .ns_tag(tag)
        .instance_tag("fo")
        .no_env("ALLOWED_ENV_REFS")
        .no_env("ALLOWED_PVCS")
        .env("LEASE_DURATION", &LEASE.to_string())
        .env("RENEW_DEADLINE", &RENEW.to_string())
        .env("RETRY_PERIOD", &RETRY.to_string())
        .envs(extra)
        .die_with_parent()
        .log_tail(80)
}

/// A message for this deployment: the seed without its PVC and ConfigMap.
fn message(spec: &Deployment, hook_url: &str, tweak: impl FnOnce(&mut Value)) -> (String, String) {
    seed_message(&spec.ns, hook_url, |m| {
        if let Some(j) = m["job"].as_object_mut() {
            j.remove("volume");
            j.remove("envRef");
        }
        tweak(m);
    })
}

/// Waits until every one of `ids` has a delivered terminal callback; else
/// fails with "<n> <what>, e.g. <up to 5 ids and what they got>".
fn wait_all_terminal<'a>(
    hook: &WebhookReceiver,
    ids: impl Iterator<Item = &'a String> + Clone,
    timeout: Duration,
    what: &str,
) {
    let all_terminal = |m: &HashMap<String, Vec<u64>>, id: &String| {
        m.get(id).is_some_and(|v| v.iter().any(|s| is_terminal(*s)))
    };
    let done = wait_for(timeout, || {
        let m = hook.delivered_by_id();
        ids.clone().all(|id| all_terminal(&m, id))
    });
    let m = hook.delivered_by_id();
    let missing: Vec<_> = ids.filter(|id| !all_terminal(&m, id)).collect();
    assert!(
        done,
        "{} {what}, e.g. {:?}",
        missing.len(),
        missing
            .iter()
            .take(5)
            .map(|id| (id, m.get(*id)))
            .collect::<Vec<_>>()
    );
}

fn rank(s: u64) -> u64 {
    s.min(2)
}

/// Checks one message's delivered statuses against its expected terminal
/// status: in order (ranks never go down), every step present, one terminal
/// status. Returns the number of repeated deliveries (a status sent again by a
/// worker whose predecessor died between the POST and recording it).
fn check_sequence(id: &str, got: &[u64], terminal: u64) -> Result<usize, String> {
    let mut dedup = got.to_vec();
    dedup.dedup();
    if dedup != vec![0, 1, terminal] {
        return Err(format!(
            "message {id}: got {got:?}, want 0, 1, {terminal} in order"
        ));
    }
    if got.windows(2).any(|w| rank(w[1]) < rank(w[0])) {
        return Err(format!("message {id}: out of order {got:?}"));
    }
    Ok(got.len() - dedup.len())
}

/// A small xorshift generator seeded from the clock.
struct Rng(u64);
impl Rng {
    fn new() -> Rng {
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(7);
        Rng(n | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [lo, hi) milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

fn wait_holder(spec: &Deployment, timeout: Duration, f: impl Fn(&str) -> bool) -> Option<String> {
    let mut last = String::new();
    let ok = wait_for(timeout, || {
        last = spec.holder();
        f(&last)
    });
    ok.then_some(last)
}

/// Replicas `<instance>-a` and `<instance>-b`, once one of them holds the
/// Lease (else fails with `what`): their names, the workers and the leader's
/// index.
fn two_replicas(spec: &Deployment, what: &str) -> ([String; 2], Vec<Worker>, usize) {
    let names = [
        format!("{}-a", spec.instance),
        format!("{}-b", spec.instance),
    ];
    let workers: Vec<Worker> = names.iter().map(|n| spec.spawn(n)).collect();
    let leader = wait_holder(spec, Duration::from_secs(60), |h| {
        names.iter().any(|n| n == h)
    })
    .expect(what);
    let li = names.iter().position(|n| *n == leader).unwrap();
    (names, workers, li)
}

// ------------------------------------------------------------------- tests

#[test]
fn two_workers_one_leader_and_failover_under_load() {
    const N: usize = 200;
    let hook = WebhookReceiver::start();
    let spec = spec("fo-load", &[]).deploy();
    // Exactly one leader: the Lease names one of them and only it says so.
    let (names, mut workers, li) = two_replicas(&spec, "one of the workers takes the Lease");
    let leader = names[li].clone();
    let si = 1 - li;
    assert!(
        wait_for(Duration::from_secs(20), || workers[li]
            .is_leader_by_metrics()),
        "the holder reports job_worker_leader 1:\n{}",
        workers[li].metrics()
    );
    std::thread::sleep(Duration::from_secs(2 * RETRY));
    assert!(
        !workers[si].is_leader_by_metrics(),
        "the standby must not lead: {}",
        workers[si].metrics()
    );
    assert_eq!(
        spec.holder(),
        leader,
        "the Lease stays with the first holder"
    );

    // 200 messages at once; every tenth fails.
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    let mut bodies = Vec::new();
    for i in 0..N {
        let fail = i % 10 == 3;
        let (id, body) = message(&spec, &hook.url(), |m| {
            if fail {
                m["job"]["fargate"] = json!({"key": FAIL_LABEL, "value": "fail"});
            }
        });
        want.insert(id, if fail { 3 } else { 2 });
        bodies.push(body);
    }
    let t_send = Instant::now();
    spec.send_all(&bodies);

    // Kill the leader once ~50 messages have their 0.
    let got = wait_for(Duration::from_secs(120), || {
        hook.delivered_by_id()
            .values()
            .filter(|v| v.contains(&0))
            .count()
            >= 50
    });
    assert!(got, "50 status-0 callbacks within 120 s");
    let by_id = hook.delivered_by_id();
    let terminal_before = by_id
        .values()
        .filter(|v| v.iter().any(|s| is_terminal(*s)))
        .count();
    let queued_before: i64 = {
        let mut c = spec.redis_conn();
        let q: i64 = redis::cmd("LLEN")
            .arg(format!("{}queue", spec.redis_prefix))
            .query(&mut c)
            .unwrap();
        let p = support::worker::redis_processing_len(&mut c, &spec.redis_prefix);
        q + p
    };
    let calls_before = hook.calls().len();
    let killed_at = Instant::now();
    workers[li].kill9();
    eprintln!(
        "[failover] killed leader {leader} {:.1}s after sending: {} with 0, {} terminal, {} still queued, {} calls so far",
        killed_at.duration_since(t_send).as_secs_f64(),
        by_id.len(),
        terminal_before,
        queued_before,
        calls_before
    );

    let standby = names[si].clone();
    let took = wait_holder(&spec, Duration::from_secs(60), |h| h == standby);
    let takeover = killed_at.elapsed();
    assert!(took.is_some(), "the standby never took the Lease");
    eprintln!(
        "[failover] takeover after SIGKILL: {:.2}s (lease {LEASE}s + retry {RETRY}s)",
        takeover.as_secs_f64()
    );
    assert!(
        takeover <= Duration::from_secs(LEASE + RETRY + 2),
        "takeover took {takeover:?}"
    );
    assert!(
        wait_for(Duration::from_secs(10), || workers[si]
            .is_leader_by_metrics()),
        "the new holder reports job_worker_leader 1"
    );

    // Every message reaches its terminal status.
    wait_all_terminal(
        &hook,
        want.keys(),
        Duration::from_secs(400),
        "message(s) without a terminal callback",
    );
    eprintln!(
        "[failover] all {N} terminal callbacks {:.1}s after sending",
        t_send.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(3)); // late duplicates would show now
    let m = hook.delivered_by_id();

    // One Job per message.
    let jobs = spec.jobs();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    let mut names_seen = HashSet::new();
    for j in &jobs {
        let id = j["metadata"]["annotations"]["k8s-job-worker.io/message-id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        *per_id.entry(id).or_default() += 1;
        assert!(names_seen.insert(j["metadata"]["name"].as_str().unwrap_or("").to_string()));
    }
    assert_eq!(jobs.len(), N, "one Job per message");
    for id in want.keys() {
        assert_eq!(per_id.get(id), Some(&1), "message {id}: one Job");
    }

    // Order, exactly one terminal status, duplicates only from the kill window.
    let mut dups = Vec::new();
    let mut errors = Vec::new();
    for (id, terminal) in &want {
        let got = m.get(id).cloned().unwrap_or_default();
        match check_sequence(id, &got, *terminal) {
            Ok(0) => {}
            Ok(n) => dups.push((id.clone(), got, n)),
            Err(e) => errors.push(e),
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let total: usize = dups.iter().map(|d| d.2).sum();
    eprintln!("[failover] repeated deliveries after the kill: {total}");
    for (id, got, _) in &dups {
        eprintln!("[failover]   {id}: {got:?}");
    }
    // The dead leader had at most CALLBACK_CONCURRENCY_PER_HOST POSTs in
    // flight (one destination here) and one settled-but-unrecorded callback.
    let bound = k8s_job_worker::config::DEFAULT_CALLBACK_CONCURRENCY_PER_HOST + 2;
    assert!(total <= bound, "too many repeated deliveries: {dups:?}");
    let unknown = hook
        .delivered()
        .iter()
        .filter(|c| !want.contains_key(c.body["id"].as_str().unwrap_or("")))
        .count();
    assert_eq!(unknown, 0, "callbacks for unknown ids");
}

#[test]
fn repeated_sigkill_crash_loop() {
    let iterations: usize = std::env::var("CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let hook = WebhookReceiver::start();
    let spec = Arc::new(spec("fo-crash", &[]).deploy());
    let pod = format!("{}-pod", spec.instance);
    let ids: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));

    // A producer: a message every ~150 ms while the worker is being killed.
    let producer = {
        let (spec, ids, stop, url) = (spec.clone(), ids.clone(), stop.clone(), hook.url());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let (id, body) = message(&spec, &url, |_| {});
                spec.send(&body);
                ids.lock().unwrap().push(id);
                std::thread::sleep(Duration::from_millis(150));
            }
        })
    };

    let mut rng = Rng::new();
    let t0 = Instant::now();
    let mut w = spec.spawn(&pod);
    for i in 0..iterations {
        let life = rng.millis(200, 3000);
        std::thread::sleep(life);
        w.kill9();
        drop(w);
        w = spec.spawn(&pod);
        if i % 5 == 4 {
            eprintln!(
                "[crash-loop] {} kills, {} messages so far, {} terminal",
                i + 1,
                ids.lock().unwrap().len(),
                hook.delivered_by_id()
                    .values()
                    .filter(|v| v.iter().any(|s| is_terminal(*s)))
                    .count()
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    producer.join().unwrap();
    let loop_time = t0.elapsed();
    let ids = ids.lock().unwrap().clone();

    wait_all_terminal(
        &hook,
        ids.iter(),
        Duration::from_secs(180 + 3 * iterations as u64),
        "lost message(s) (no terminal callback)",
    );
    std::thread::sleep(Duration::from_secs(3));
    let m = hook.delivered_by_id();

    let jobs = spec.jobs();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for j in &jobs {
        let id = j["metadata"]["annotations"]["k8s-job-worker.io/message-id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        *per_id.entry(id).or_default() += 1;
    }
    assert_eq!(jobs.len(), ids.len(), "one Job per message");
    let mut dups = 0;
    let mut errors = Vec::new();
    for id in &ids {
        assert_eq!(per_id.get(id), Some(&1), "message {id}: one Job");
        match check_sequence(id, m.get(id).map(Vec::as_slice).unwrap_or(&[]), 2) {
            Ok(n) => dups += n,
            Err(e) => errors.push(e),
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    eprintln!(
        "[crash-loop] {iterations} SIGKILLs in {:.1}s, {} messages, 0 lost, {} Jobs, {dups} repeated deliveries; all done {:.1}s after the start",
        loop_time.as_secs_f64(),
        ids.len(),
        jobs.len(),
        t0.elapsed().as_secs_f64()
    );
    assert!(
        dups <= 5 * iterations,
        "{dups} repeated deliveries for {iterations} kills"
    );
    // Finished Jobs are released once their terminal callback settled.
    assert!(
        wait_for(Duration::from_secs(30), || spec.jobs().iter().all(|j| {
            !j["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "k8s-job-worker.io/result"))
        })),
        "every finished Job released"
    );
}

/// A webhook that answers 200 to the statuses it lets through and 503 to the others.
struct GateHook {
    addr: std::net::SocketAddr,
    allowed: Arc<Mutex<HashSet<u64>>>,
    /// (status in the body, answered code)
    seen: Arc<Mutex<Vec<(u64, u16)>>>,
}

impl GateHook {
    fn start(allowed: &[u64]) -> GateHook {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let allowed = Arc::new(Mutex::new(allowed.iter().copied().collect::<HashSet<_>>()));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (a, s) = (allowed.clone(), seen.clone());
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let (a, s) = (a.clone(), s.clone());
                std::thread::spawn(move || gate_conn(conn, &a, &s));
            }
        });
        GateHook {
            addr,
            allowed,
            seen,
        }
    }
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    fn allow(&self, s: &[u64]) {
        self.allowed.lock().unwrap().extend(s);
    }
    fn delivered(&self) -> Vec<u64> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, c)| *c == 200)
            .map(|(s, _)| *s)
            .collect()
    }
    fn refused(&self) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, c)| *c != 200)
            .count()
    }
}

fn gate_conn(mut s: TcpStream, allowed: &Mutex<HashSet<u64>>, seen: &Mutex<Vec<(u64, u16)>>) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        match s.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&tmp[..n]),
        }
    }
    let v: Value = serde_json::from_slice(&body[..len]).unwrap_or(Value::Null);
    let status = v["status"].as_u64().unwrap_or(1000);
    let code = if allowed.lock().unwrap().contains(&status) {
        200
    } else {
        503
    };
    let resp = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    let _ = s.write_all(resp.as_bytes());
    let _ = s.flush();
    seen.lock().unwrap().push((status, code));
    let _ = s.shutdown(Shutdown::Both);
}

fn annotation(job: &Value, key: &str) -> Option<String> {
    job["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_string)
}

#[test]
fn terminal_callback_survives_downtime_longer_than_ttl() {
    let hook = GateHook::start(&[0]);
    let spec = spec("fo-ttl", &[]).deploy();
    let pod = format!("{}-pod", spec.instance);
    let mut w = spec.spawn(&pod);
    let (_id, body) = message(&spec, &hook.url(), |m| {
        m["job"]["ttlSecondsAfterFinished"] = json!(31);
    });
    spec.send(&body);
    let ok = wait_for(Duration::from_secs(90), || {
        hook.delivered() == vec![0]
            && spec
                .jobs()
                .first()
                .and_then(|j| annotation(j, "k8s-job-worker.io/delivered"))
                .as_deref()
                == Some("0")
    });
    assert!(
        ok,
        "status 0 delivered and recorded: {:?}",
        hook.delivered()
    );
    // Status 1 or 2 is being refused (and retried) now: the worker dies with it unsent.
    assert!(
        wait_for(Duration::from_secs(30), || hook.refused() > 0),
        "the worker tried its next callback"
    );
    w.kill9();
    let killed = Instant::now();
    let jpath = |name: &str| format!("/apis/batch/v1/namespaces/{}/jobs/{name}", spec.ns);
    let name = spec.jobs()[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    // The Job finishes, then the TTL controller deletes it: our finalizer holds it.
    let mut finished_at = None;
    let held = wait_for(Duration::from_secs(150), || {
        let (c, j) = bed().kube_get(&jpath(&name));
        if c != 200 {
            return false;
        }
        let complete = j["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Complete" && c["status"] == "True")
        });
        if complete && finished_at.is_none() {
            finished_at = Some(Instant::now());
        }
        j["metadata"]["deletionTimestamp"].is_string()
    });
    assert!(
        held,
        "the TTL controller deletes the finished Job within 150 s"
    );
    let (c, j) = bed().kube_get(&jpath(&name));
    assert_eq!(c, 200, "the finalizer holds the Job: {j}");
    assert_eq!(
        annotation(&j, "k8s-job-worker.io/delivered").as_deref(),
        Some("0")
    );
    // Stay down a little longer than the TTL past the finish.
    if let Some(f) = finished_at {
        std::thread::sleep(Duration::from_secs(33).saturating_sub(f.elapsed()));
    }
    let down = killed.elapsed();
    hook.allow(&[1, 2, 3, 99]);
    let _w = spec.spawn(&pod);
    let ok = wait_for(Duration::from_secs(60), || hook.delivered().contains(&2));
    assert!(
        ok,
        "terminal callback after the restart: {:?}",
        hook.delivered()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        hook.delivered(),
        vec![0, 1, 2],
        "0 is not repeated; 1 and 2 are sent"
    );
    let gone = wait_for(Duration::from_secs(30), || {
        bed().kube_get(&jpath(&name)).0 == 404
    });
    assert!(
        gone,
        "the Job is deleted once its terminal callback settled"
    );
    eprintln!(
        "[ttl] worker down {:.1}s; Job held by the finalizer until the restarted worker delivered 1, 2",
        down.as_secs_f64()
    );
}

#[test]
fn sigterm_releases_the_lease_and_standby_takes_over_fast() {
    let hook = WebhookReceiver::start();
    let spec = spec("fo-term", &[("SHUTDOWN_GRACE", "8")]).deploy();
    let (names, mut workers, li) = two_replicas(&spec, "a leader");
    let leader = names[li].clone();
    let standby = names[1 - li].clone();
    assert!(wait_for(Duration::from_secs(20), || workers[li]
        .is_leader_by_metrics()));

    // Some work in flight at the hand-over.
    let mut ids = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..20 {
        let (id, body) = message(&spec, &hook.url(), |_| {});
        ids.push(id);
        bodies.push(body);
    }
    spec.send_all(&bodies);
    assert!(
        wait_for(Duration::from_secs(60), || hook.delivered_by_id().len()
            >= 5),
        "some callbacks before the SIGTERM"
    );

    let t = Instant::now();
    workers[li].sigterm();
    let mut exited = None;
    let mut released = None;
    let mut taken = None;
    while t.elapsed() < Duration::from_secs(30) && (exited.is_none() || taken.is_none()) {
        if exited.is_none()
            && let Ok(Some(st)) = workers[li].try_wait()
        {
            exited = Some((t.elapsed(), st));
        }
        if taken.is_none() {
            let h = spec.holder();
            if h != leader && released.is_none() {
                released = Some(t.elapsed());
            }
            if h == standby {
                taken = Some(t.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let (exit_time, status) = exited.expect("the leader exits after SIGTERM");
    let released = released.expect("the Lease is released");
    let taken = taken.expect("the standby takes the Lease");
    eprintln!(
        "[sigterm] exit {status} after {:.2}s; Lease released at {:.2}s; standby leads at {:.2}s ({:.2}s after the release)",
        exit_time.as_secs_f64(),
        released.as_secs_f64(),
        taken.as_secs_f64(),
        (taken - released).as_secs_f64()
    );
    assert!(status.success(), "exit status {status}");
    assert!(
        exit_time <= Duration::from_secs(8 + 1),
        "exit took {exit_time:?}"
    );
    assert!(
        taken - released <= Duration::from_millis(RETRY * 1000 + 1500),
        "the standby took {:?} after the release",
        taken - released
    );
    assert!(wait_for(Duration::from_secs(10), || workers[1 - li]
        .is_leader_by_metrics()));
    assert!(
        workers[li].logs().contains("released lease"),
        "the old leader logs the release"
    );

    let done = wait_for(Duration::from_secs(120), || {
        let m = hook.delivered_by_id();
        ids.iter()
            .all(|id| m.get(id).is_some_and(|v| v.iter().any(|s| is_terminal(*s))))
    });
    assert!(
        done,
        "all messages finish after the hand-over: {:?}",
        hook.delivered_by_id()
    );
    std::thread::sleep(Duration::from_secs(2));
    let m = hook.delivered_by_id();
    let mut dups = 0;
    for id in &ids {
        dups += check_sequence(id, m.get(id).map(Vec::as_slice).unwrap_or(&[]), 2)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // A graceful hand-over records everything it delivered: no repeats.
    assert_eq!(
        dups, 0,
        "repeated deliveries after a graceful hand-over: {m:?}"
    );
    assert_eq!(spec.jobs().len(), ids.len());
}

// -------------------------------------------------------- redis restart

/// A redis-server of our own (the bed's must not die: bed.py would tear down).
struct OwnRedis {
    child: Option<Child>,
    port: u16,
}

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        let mut r = OwnRedis { child: None, port };
        r.restart();
        r
    }
    fn restart(&mut self) {
        let mut cmd = Command::new("redis-server");
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
            "--daemonize",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        die_with_parent(&mut cmd);
        self.child = Some(cmd.spawn().expect("redis-server"));
        let port = self.port;
        assert!(
            wait_for(Duration::from_secs(20), || TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "redis-server up on {port}"
        );
    }
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn redis_restart_poller_reconnects() {
    let hook = WebhookReceiver::start();
    let mut redis = OwnRedis::start(free_port());
    let spec = spec("fo-redis", &[]).redis_port(redis.port).deploy();
    let pod = format!("{}-pod", spec.instance);
    let w = spec.spawn(&pod);
    let statuses = |id: &str| hook.delivered_by_id().get(id).cloned().unwrap_or_default();

    let (id1, body) = message(&spec, &hook.url(), |_| {});
    spec.send(&body);
    assert!(
        wait_for(Duration::from_secs(90), || statuses(&id1).contains(&2)),
        "first message: {:?}",
        statuses(&id1)
    );

    redis.kill();
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(4)); // the poller sees the connection die
    redis.restart();
    let (id2, body) = message(&spec, &hook.url(), |_| {});
    spec.send(&body);
    assert!(
        wait_for(Duration::from_secs(120), || statuses(&id2).contains(&2)),
        "message sent after the Redis restart: {:?}\n{}",
        statuses(&id2),
        w.logs()
    );
    eprintln!(
        "[redis] message after the restart done {:.1}s after Redis was killed",
        t.elapsed().as_secs_f64()
    );
    assert_eq!(statuses(&id1), vec![0, 1, 2]);
    assert_eq!(statuses(&id2), vec![0, 1, 2]);
    assert!(
        w.metrics().contains("job_worker_queue_errors_total"),
        "queue errors are counted"
    );
}

// ------------------------------------------------- API server connection cut

/// A TCP proxy to the API server that can be cut (listener closed, every open
/// connection reset) and brought back on the same port.
struct Proxy {
    port: u16,
    target: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(target: std::net::SocketAddr) -> Proxy {
        let mut p = Proxy {
            port: free_port(),
            target,
            up: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
            accept: None,
        };
        p.bring_up();
        p
    }

    fn bring_up(&mut self) {
        let l = wait_bind(self.port);
        l.set_nonblocking(true).unwrap();
        self.up.store(true, Ordering::SeqCst);
        let (up, conns, target) = (self.up.clone(), self.conns.clone(), self.target);
        self.accept = Some(std::thread::spawn(move || {
            while up.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let Ok(s) = TcpStream::connect(target) else {
                            continue;
                        };
                        let mut list = conns.lock().unwrap();
                        for x in [&c, &s] {
                            if let Ok(x) = x.try_clone() {
                                list.push(x);
                            }
                        }
                        for (mut from, mut to) in
                            [(c.try_clone().unwrap(), s.try_clone().unwrap()), (s, c)]
                        {
                            std::thread::spawn(move || {
                                let _ = std::io::copy(&mut from, &mut to);
                                let _ = to.shutdown(Shutdown::Both);
                                let _ = from.shutdown(Shutdown::Both);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
    }

    /// Closes the listener and resets every connection.
    fn cut(&mut self) {
        self.up.store(false, Ordering::SeqCst);
        if let Some(h) = self.accept.take() {
            let _ = h.join();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

fn wait_bind(port: u16) -> TcpListener {
    let mut last = None;
    for _ in 0..100 {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => return l,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("bind 127.0.0.1:{port}: {last:?}");
}

#[test]
fn apiserver_connection_cut_watches_recover() {
    let hook = WebhookReceiver::start();
    let api: std::net::SocketAddr = bed()
        .api_url
        .trim_start_matches("https://")
        .parse()
        .expect("api_url is https://127.0.0.1:PORT");
    let mut proxy = Proxy::start(api);
    // Timings that ride out an 8 s cut without stepping down.
    let spec = spec(
        "fo-cut",
        &[
            ("LEASE_DURATION", "20"),
            ("RENEW_DEADLINE", "15"),
            ("RETRY_PERIOD", "2"),
        ],
    )
    .kube_url(format!("https://127.0.0.1:{}", proxy.port))
    .deploy();
    let pod = format!("{}-pod", spec.instance);
    let w = spec.spawn(&pod);
    assert!(
        wait_holder(&spec, Duration::from_secs(60), |h| h == pod).is_some(),
        "the worker leads"
    );
    let statuses = |id: &str| hook.delivered_by_id().get(id).cloned().unwrap_or_default();
    // Watches are up once a first message went through.
    let (id0, body) = message(&spec, &hook.url(), |_| {});
    spec.send(&body);
    assert!(wait_for(Duration::from_secs(90), || statuses(&id0).contains(&2)));

    // A Job that finishes while the API server is unreachable.
    let (id_a, body) = message(&spec, &hook.url(), |_| {});
    spec.send(&body);
    assert!(wait_for(Duration::from_secs(60), || statuses(&id_a).contains(&0)));
    proxy.cut();
    let t = Instant::now();
    // A message that arrives during the cut.
    let (id_b, body) = message(&spec, &hook.url(), |_| {});
    spec.send(&body);
    std::thread::sleep(Duration::from_secs(8));
    let during: Vec<u64> = statuses(&id_b);
    proxy.bring_up();
    eprintln!(
        "[cut] API server unreachable for {:.1}s",
        t.elapsed().as_secs_f64()
    );
    for id in [&id_a, &id_b] {
        assert!(
            wait_for(Duration::from_secs(120), || statuses(id)
                .iter()
                .any(|s| is_terminal(*s))),
            "message {id} finishes after the cut: {:?}\n{}",
            statuses(id),
            w.logs()
        );
    }
    eprintln!(
        "[cut] both messages finished {:.1}s after the cut began",
        t.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        during.is_empty(),
        "no Job could be created during the cut: {during:?}"
    );
    let m = hook.delivered_by_id();
    for id in [&id_a, &id_b] {
        let n = check_sequence(id, m.get(id).map(Vec::as_slice).unwrap_or(&[]), 2)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            n,
            0,
            "no repeats within one worker lifetime: {:?}",
            m.get(id)
        );
    }
    assert_eq!(
        spec.holder(),
        pod,
        "the worker kept the Lease through the cut"
    );
    assert!(
        w.metrics().contains("job_worker_watch_restarts_total"),
        "watch restarts are counted: {}",
        w.metrics()
    );
}

#[test]
fn webhook_down_two_minutes_then_callbacks_in_order() {
    let hook = WebhookReceiver::start();
    hook.set_down(true);
    let spec = spec("fo-hook", &[("CALLBACK_BACKOFF_MAX", "5")]).deploy();
    let _w = spec.spawn(&format!("{}-pod", spec.instance));
    let mut ids = Vec::new();
    let mut bodies = Vec::new();
    for i in 0..6 {
        let (id, body) = message(&spec, &hook.url(), |m| {
            if i % 3 == 2 {
                m["job"]["fargate"] = json!({"key": FAIL_LABEL, "value": "fail"});
            }
        });
        ids.push((id, if i % 3 == 2 { 3 } else { 2 }));
        bodies.push(body);
    }
    spec.send_all(&bodies);
    let t = Instant::now();
    std::thread::sleep(Duration::from_secs(120));
    let tried = hook.calls().len();
    assert!(tried > 6, "the worker kept retrying: {tried} attempts");
    hook.set_down(false);
    let up = Instant::now();
    let done = wait_for(Duration::from_secs(90), || {
        let m = hook.delivered_by_id();
        ids.iter()
            .all(|(id, _)| m.get(id).is_some_and(|v| v.iter().any(|s| is_terminal(*s))))
    });
    assert!(
        done,
        "callbacks after the webhook is back: {:?}",
        hook.delivered_by_id()
    );
    eprintln!(
        "[webhook] down {:.0}s ({tried} refused attempts); all callbacks delivered {:.1}s after it came back",
        up.duration_since(t).as_secs_f64(),
        up.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(2));
    let m = hook.delivered_by_id();
    for (id, terminal) in &ids {
        let got = m.get(id).cloned().unwrap_or_default();
        assert_eq!(
            got,
            vec![0, 1, *terminal],
            "message {id}: in order, once each"
        );
    }
}

// ------------------------------------- a cut-off leader's late Redis receive

/// The leader is cut off from the API server but not from Redis, while its
/// BLMOVE blocks for POLLING_INTERVAL (20 s, longer than LEASE_DURATION −
/// RENEW_DEADLINE): it steps down, the standby takes the Lease and recovers,
/// and then the old leader's receive returns with a message. That message must
/// not be stranded (it went into the old leader's own processing list, which
/// it hands back, and which the new leader sweeps), and the old leader must
/// not create its Job. Every message ends with exactly one Job and one
/// terminal status.
#[test]
fn cut_off_leader_late_receive_strands_nothing() {
    let hook = WebhookReceiver::start();
    let api: std::net::SocketAddr = bed()
        .api_url
        .trim_start_matches("https://")
        .parse()
        .expect("api_url is https://127.0.0.1:PORT");
    let mut proxy = Proxy::start(api);
    let spec = spec("fo-strand", &[("POLLING_INTERVAL", "20")]).deploy();
    let (a, b) = (
        format!("{}-a", spec.instance),
        format!("{}-b", spec.instance),
    );
    let mut cut_off = spec.clone();
    cut_off.kube_url = format!("https://127.0.0.1:{}", proxy.port);
    let wa = cut_off.spawn(&a);
    assert!(
        wait_holder(&spec, Duration::from_secs(60), |h| h == a).is_some(),
        "{a} leads first"
    );
    let wb = spec.spawn(&b);
    let statuses = |id: &str| hook.delivered_by_id().get(id).cloned().unwrap_or_default();
    // A first message restarts a's 20 s BLMOVE just before the cut.
    let (warm, body) = message(&spec, &hook.url(), |_| {});
    spec.send(&body);
    assert!(
        wait_for(Duration::from_secs(60), || statuses(&warm).contains(&0)),
        "the first message is created by {a}"
    );
    proxy.cut();
    let t = Instant::now();
    assert!(
        wait_holder(&spec, Duration::from_secs(60), |h| h == b).is_some(),
        "{b} takes over\n{}",
        wa.logs()
    );
    let took_over = t.elapsed();
    // a is still inside its BLMOVE and, blocked longest, gets the first of these.
    let mut ids = vec![warm];
    let mut bodies = Vec::new();
    for _ in 0..20 {
        let (id, body) = message(&spec, &hook.url(), |_| {});
        ids.push(id);
        bodies.push(body);
    }
    spec.send_all(&bodies);
    eprintln!(
        "[strand] {b} led {:.1}s after the cut; 20 messages sent at {:.1}s",
        took_over.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );
    wait_all_terminal(
        &hook,
        ids.iter(),
        Duration::from_secs(180),
        "messages without a terminal status",
    );
    eprintln!(
        "[strand] all 21 terminal {:.1}s after the cut",
        t.elapsed().as_secs_f64()
    );
    let m = hook.delivered_by_id();
    // The first message's 0 and 1 may come again from the new leader (the old
    // one could not record them on the Job): one terminal status all the same.
    let first = m.get(&ids[0]).cloned().unwrap_or_default();
    assert_eq!(
        first
            .iter()
            .filter(|s| is_terminal(**s))
            .collect::<Vec<_>>(),
        vec![&2],
        "one terminal status for the first message: {first:?}"
    );
    for id in &ids[1..] {
        check_sequence(id, m.get(id).map(Vec::as_slice).unwrap_or(&[]), 2)
            .unwrap_or_else(|e| panic!("{e}\n{}\n{}", wa.logs(), wb.logs()));
    }
    let jobs = spec.jobs();
    let mut owners: Vec<String> = jobs
        .iter()
        .filter_map(|j| annotation(j, "k8s-job-worker.io/message-id"))
        .collect();
    owners.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(owners, want, "exactly one Job per message");
    assert!(
        wait_for(Duration::from_secs(30), || spec.queued() == 0),
        "nothing left in the queue or any processing list: {}",
        spec.queued()
    );
    assert!(
        wa.logs().contains("handed") || wb.logs().contains("took back"),
        "the late receive went back to the queue (handed back by {a} or swept by {b})\n{}",
        wa.logs()
    );
    drop(proxy);
}

/// kill -9 of the leader in the middle of a 2,000-message Redis burst, while
/// its creator pool (CREATE_CONCURRENCY) is busy: the standby takes over and
/// every message ends with exactly one Job and exactly one terminal status
/// (per webhook-id; a status 0 or 1 may repeat from the kill window, in
/// order). Nothing is lost: Jobs created but not yet acknowledged are adopted
/// (409), messages received but not yet created are recovered from the dead
/// leader's processing list.
#[test]
fn sigkill_during_a_burst_with_the_creator_pool_busy_loses_and_duplicates_nothing() {
    const N: usize = 2000;
    let hook = WebhookReceiver::start();
    let spec = spec("fo-burst", &[]).deploy();
    let (names, mut workers, li) = two_replicas(&spec, "one of the workers takes the Lease");
    let si = 1 - li;
    assert!(
        wait_for(Duration::from_secs(20), || workers[li]
            .is_leader_by_metrics()),
        "the holder reports job_worker_leader 1"
    );
    let mut ids = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..N {
        let (id, body) = message(&spec, &hook.url(), |_| {});
        ids.push(id);
        bodies.push(body);
    }
    let t_send = Instant::now();
    spec.send_all(&bodies);

    // Kill once some Jobs exist and many are still to be created: the pool is busy.
    let busy = wait_for(Duration::from_secs(120), || {
        workers[li]
            .metric("job_worker_jobs_created_total")
            .unwrap_or(0.0)
            >= 150.0
    });
    assert!(busy, "150 Jobs created within 120 s");
    let created_before = workers[li]
        .metric("job_worker_jobs_created_total")
        .unwrap_or(0.0);
    workers[li].kill9();
    let killed_at = Instant::now();
    let left: i64 = {
        let mut c = spec.redis_conn();
        let q: i64 = redis::cmd("LLEN")
            .arg(format!("{}queue", spec.redis_prefix))
            .query(&mut c)
            .unwrap();
        q + support::worker::redis_processing_len(&mut c, &spec.redis_prefix)
    };
    eprintln!(
        "[failover] killed leader {} {:.1}s after sending, {created_before} Jobs created, {left} messages still in Redis",
        names[li],
        killed_at.duration_since(t_send).as_secs_f64()
    );
    assert!(
        left > 0,
        "the burst was over before the kill; the test proves nothing"
    );
    let standby = names[si].clone();
    assert!(
        wait_holder(&spec, Duration::from_secs(60), |h| h == standby).is_some(),
        "the standby never took the Lease"
    );

    wait_all_terminal(
        &hook,
        ids.iter(),
        Duration::from_secs(900),
        "message(s) without a terminal callback",
    );
    eprintln!(
        "[failover] all {N} terminal callbacks {:.1}s after sending",
        t_send.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(3)); // late duplicates would show now

    // Exactly one Job per message.
    let jobs = spec.jobs();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for j in &jobs {
        let id = j["metadata"]["annotations"]["k8s-job-worker.io/message-id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        *per_id.entry(id).or_default() += 1;
    }
    let lost: Vec<_> = ids.iter().filter(|id| !per_id.contains_key(*id)).collect();
    let doubled: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        lost.is_empty(),
        "{} message(s) without a Job: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    assert!(
        doubled.is_empty(),
        "message(s) with more than one Job: {doubled:?}"
    );
    assert_eq!(jobs.len(), N, "one Job per message");

    // In order, every step, exactly one terminal status per message.
    let m = hook.delivered_by_id();
    let mut errors = Vec::new();
    let mut repeats = 0;
    for id in &ids {
        let got = m.get(id).cloned().unwrap_or_default();
        match check_sequence(id, &got, 2) {
            Ok(n) => repeats += n,
            Err(e) => errors.push(e),
        }
    }
    assert!(
        errors.is_empty(),
        "{}",
        errors[..errors.len().min(10)].join("\n")
    );
    let mut terminal_ids: HashMap<String, HashSet<String>> = HashMap::new();
    for c in hook.delivered() {
        if c.body["status"].as_u64().is_some_and(is_terminal) {
            let wid = c
                .headers
                .iter()
                .find(|(k, _)| k == "webhook-id")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            terminal_ids
                .entry(c.body["id"].as_str().unwrap_or("").to_string())
                .or_default()
                .insert(wid);
        }
    }
    for id in &ids {
        assert_eq!(
            terminal_ids.get(id).map(HashSet::len),
            Some(1),
            "message {id}: exactly one terminal status"
        );
    }
    eprintln!("[failover] repeated deliveries (same webhook-id) after the kill: {repeats}");
}
