//! Faults forced inside the worker, on the test bed: a panic in a worker
//! thread of the release-profile binary (crash-only: the process aborts, the
//! standby takes over, nothing is lost), a frozen thread (/healthz turns 503
//! naming it within its heartbeat bound), and a lost Lease (the watch threads
//! are interrupted and joined at once instead of lingering until their
//! per-read timeout).
//!
//! The first two run the binary `support::fault_binary` builds with the
//! test-only cargo feature `fault-injection` (K8S_JOB_WORKER_FAULT selects
//! the fault) and the release profile's `panic = "abort"`. Timings are
//! printed for the notes.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod support;

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use support::worker::{Deployment, Launcher, Q, Worker, seed_message};
use support::{WebhookReceiver, bed, fault_binary, is_terminal, wait_for};

/// The tracker's heartbeat bound (worker::Bounds: 5 × 1 s tick + 2 × 30 s).
const TRACKER_BOUND: Duration = Duration::from_secs(65);

// Short election timings (lease > renew > 1.2 × retry), as in failover.rs.
const LEASE: u64 = 6;

/// A Redis deployment (instance `ft-*`) with short election timings, running
/// `bin`; the messages drop the seed's envRef and PVC.
fn spec(tag: &str, bin: Option<PathBuf>) -> Deployment {
    let mut l = Launcher::new(Q::Redis)
        .ns_tag(tag)
        .instance_tag("ft")
        .no_env("ALLOWED_ENV_REFS")
        .no_env("ALLOWED_PVCS")
        .env("LEASE_DURATION", &LEASE.to_string())
        .env("RENEW_DEADLINE", "4")
        .env("RETRY_PERIOD", "1")
        .die_with_parent()
        .log_tail(60);
    if let Some(b) = bin {
        l = l.bin(b);
    }
    l.deploy()
}

fn message(d: &Deployment, hook_url: &str) -> (String, String) {
    seed_message(&d.ns, hook_url, |m| {
        if let Some(j) = m["job"].as_object_mut() {
            j.remove("volume");
            j.remove("envRef");
        }
    })
}

fn wait_holder(d: &Deployment, timeout: Duration, want: &str) -> bool {
    wait_for(timeout, || d.holder() == want)
}

/// A panic forced in the tracker thread of the release-profile binary
/// aborts the process (SIGABRT: no unwinding, no half-alive process), the
/// standby takes the Lease once it expires, a restarted pod joins as a
/// follower, and every message sent before, during and after ends with one
/// Job and exactly one terminal status (2), after 0 and 1, in order.
#[test]
fn a_panic_aborts_the_release_build_and_the_standby_loses_nothing() {
    let bin = fault_binary();
    let hook = WebhookReceiver::start();
    let d = spec("faults-panic", Some(bin));
    let (a_name, b_name) = (format!("{}-a", d.instance), format!("{}-b", d.instance));
    let faulty = d.with_env("K8S_JOB_WORKER_FAULT", "panic:tracker:8");
    let mut a = faulty.spawn(&a_name);
    assert!(
        wait_holder(&d, Duration::from_secs(60), &a_name),
        "{a_name} did not take the Lease\n{}",
        a.logs()
    );
    let b = d.spawn(&b_name);

    let ids: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (d, ids, stop, url) = (d.clone(), ids.clone(), stop.clone(), hook.url());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let (id, body) = message(&d, &url);
                d.send(&body);
                ids.lock().unwrap().push(id);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    // The panic fires 8 s after a started leading.
    let mut status = None;
    assert!(
        wait_for(Duration::from_secs(60), || {
            status = a.try_wait().unwrap();
            status.is_some()
        }),
        "{a_name} is still running 60 s after it started leading\n{}",
        a.logs()
    );
    let t_abort = Instant::now();
    let status = status.unwrap();
    let logs = a.logs();
    assert_eq!(
        status.signal(),
        Some(libc::SIGABRT),
        "{a_name} must die by abort, not {status:?}\n{logs}"
    );
    assert!(
        logs.contains("fault injection: panic in thread tracker"),
        "{logs}"
    );
    let sent_before = ids.lock().unwrap().len();
    assert!(
        wait_holder(&d, Duration::from_secs(60), &b_name),
        "{b_name} did not take over\n{}",
        b.logs()
    );
    let takeover = t_abort.elapsed();
    // Kubernetes restarts the pod: the same POD_NAME, now without the fault.
    let a2 = d.spawn(&a_name);
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::SeqCst);
    producer.join().unwrap();
    let ids = ids.lock().unwrap().clone();

    let all_terminal = || {
        let m = hook.delivered_by_id();
        ids.iter()
            .all(|id| m.get(id).is_some_and(|v| v.iter().any(|s| is_terminal(*s))))
    };
    let done = wait_for(Duration::from_secs(180), all_terminal);
    let m = hook.delivered_by_id();
    let missing: Vec<_> = ids
        .iter()
        .filter(|id| {
            !m.get(*id)
                .is_some_and(|v| v.iter().any(|s| is_terminal(*s)))
        })
        .collect();
    assert!(
        done,
        "{} message(s) without a terminal callback, e.g. {:?}\n{}",
        missing.len(),
        missing
            .iter()
            .take(5)
            .map(|id| (id, m.get(*id)))
            .collect::<Vec<_>>(),
        b.logs()
    );
    std::thread::sleep(Duration::from_secs(3));
    let m = hook.delivered_by_id();
    let jobs = d.jobs();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for j in &jobs {
        let id = j["metadata"]["annotations"]["k8s-job-worker.io/message-id"]
            .as_str()
            .unwrap_or("")
            .to_string();
        *per_id.entry(id).or_default() += 1;
    }
    let mut repeats = 0;
    for id in &ids {
        assert_eq!(per_id.get(id), Some(&1), "message {id}: one Job");
        let got = m.get(id).cloned().unwrap_or_default();
        let mut distinct = got.clone();
        distinct.dedup();
        assert_eq!(
            distinct,
            vec![0, 1, 2],
            "message {id}: got {got:?}, want 0, 1 and exactly one terminal status (2)"
        );
        repeats += got.len() - distinct.len();
    }
    assert_eq!(
        d.queued(),
        0,
        "nothing left in the queue or a processing list"
    );
    eprintln!(
        "[faults] panic in tracker → SIGABRT; abort → {b_name} leads in {:.1}s (LEASE_DURATION {LEASE}s); \
         {} messages ({sent_before} sent before the abort), {} Jobs, 0 lost, {repeats} repeated deliveries",
        takeover.as_secs_f64(),
        ids.len(),
        jobs.len()
    );
    drop(a2);
}

/// GET /healthz: (status, body).
fn healthz(w: &Worker) -> (u16, String) {
    w.get("/healthz")
}

/// The state a /healthz body gives a thread: "fresh", "idle" or "stuck".
fn thread_state<'a>(body: &'a str, thread: &str) -> Vec<&'a str> {
    body.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            (it.next() == Some(thread)).then(|| it.next().unwrap_or(""))
        })
        .collect()
}

/// "<thread> <state> last beat <secs>s ago, ...": the seconds.
fn beat_age(body: &str, thread: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.split_whitespace().next() == Some(thread))?
        .split("last beat ")
        .nth(1)?
        .split('s')
        .next()?
        .parse()
        .ok()
}

/// The tracker frozen (by the fault-injection feature) 5 s after it started:
/// /healthz answers 200 with every thread fresh before, then 503 naming the
/// tracker once its bound (65 s) has passed, not before, and within a few
/// seconds after; intake, the watches and the callback dispatcher stay fresh
/// (or idle) meanwhile, and intake still takes a message in.
#[test]
fn a_frozen_tracker_turns_healthz_503_naming_it_within_its_bound() {
    let bin = fault_binary();
    let hook = WebhookReceiver::start();
    let d = spec("faults-freeze", Some(bin)).with_env("K8S_JOB_WORKER_FAULT", "freeze:tracker:5");
    let pod = format!("{}-pod", d.instance);
    let w = d.spawn(&pod);
    assert!(
        wait_holder(&d, Duration::from_secs(60), &pod),
        "no leader\n{}",
        w.logs()
    );
    let asked = Instant::now();
    let (code, body) = healthz(&w);
    assert_eq!(code, 200, "{body}");
    for t in ["intake", "tracker", "watch-jobs", "watch-pods"] {
        assert_eq!(thread_state(&body, t), vec!["fresh"], "{t}: {body}");
    }
    assert_eq!(thread_state(&body, "callbacks").len(), 1, "{body}");
    // The tracker beat at `asked - age` or later (the server answered after
    // `asked`), so it cannot be stuck before that plus its bound.
    let seen_beat =
        asked - Duration::from_secs_f64(beat_age(&body, "tracker").expect("tracker age") + 0.1);

    assert!(
        wait_for(Duration::from_secs(30), || w
            .logs()
            .contains("fault injection: thread tracker freezes now")),
        "the tracker did not freeze\n{}",
        w.logs()
    );
    let t_freeze = Instant::now();
    let (_, body) = message(&d, &hook.url());
    d.send(&body);

    let mut last = (0, String::new());
    let mut at = None;
    while t_freeze.elapsed() < TRACKER_BOUND + Duration::from_secs(30) {
        last = healthz(&w);
        if last.0 == 503 {
            at = Some(t_freeze.elapsed());
            break;
        }
        assert_eq!(last.0, 200, "{}", last.1);
        std::thread::sleep(Duration::from_millis(250));
    }
    let at = at.unwrap_or_else(|| panic!("/healthz still {} {:?}\n{}", last.0, last.1, w.logs()));
    let body = last.1;
    eprintln!(
        "[faults] tracker frozen → /healthz 503 {:.1}s after the freeze was logged, {:.1}s after a beat it had reported (bound {}s):\n{body}",
        at.as_secs_f64(),
        (t_freeze + at - seen_beat).as_secs_f64(),
        TRACKER_BOUND.as_secs()
    );
    assert!(
        body.starts_with("stuck: tracker\n"),
        "the first line names the tracker: {body}"
    );
    assert_eq!(thread_state(&body, "tracker"), vec!["stuck"], "{body}");
    for t in ["intake", "watch-jobs", "watch-pods"] {
        assert_eq!(thread_state(&body, t), vec!["fresh"], "{t}: {body}");
    }
    assert_ne!(thread_state(&body, "callbacks"), vec!["stuck"], "{body}");
    // Not before the bound: a lower bound that a slow machine only lengthens.
    assert!(
        t_freeze + at >= seen_beat + TRACKER_BOUND,
        "503 {:.1}s after a beat /healthz reported, before the bound",
        (t_freeze + at - seen_beat).as_secs_f64()
    );
    assert!(
        w.metric("job_worker_messages_received_total")
            .unwrap_or(0.0)
            >= 1.0,
        "intake kept receiving while the tracker was frozen"
    );
}

/// The Lease is taken away from the leader (another holder written into it):
/// it steps down at its next renew and stops its leading set; the watch
/// threads, blocked in reads whose timeout is 320 s, are interrupted and
/// joined at once — asserted well under a minute, and printed.
#[test]
fn losing_the_lease_joins_the_watch_threads_at_once() {
    let d = spec("faults-watch", None);
    let pod = format!("{}-pod", d.instance);
    let w = d.spawn(&pod);
    assert!(
        wait_holder(&d, Duration::from_secs(60), &pod),
        "no leader\n{}",
        w.logs()
    );
    // Let both watches list and block in their reads.
    assert!(
        wait_for(Duration::from_secs(30), || {
            let (_, body) = healthz(&w);
            thread_state(&body, "watch-jobs") == vec!["fresh"]
                && thread_state(&body, "watch-pods") == vec!["fresh"]
        }),
        "{}",
        w.logs()
    );
    std::thread::sleep(Duration::from_secs(3));

    let b = bed();
    let path = format!(
        "/apis/coordination.k8s.io/v1/namespaces/{}/leases/{}",
        d.ns, d.lock
    );
    let (code, mut lease) = b.kube_get(&path);
    assert_eq!(code, 200, "{lease}");
    lease["spec"]["holderIdentity"] = json!("thief");
    lease["spec"]["renewTime"] = json!(k8s_job_worker::clock::format_micros(SystemTime::now()));
    let t0 = Instant::now();
    let (code, v) = b.kube_put(&path, &lease);
    assert_eq!(code, 200, "{v}");

    let joined = |logs: &str| -> Option<u64> {
        let i = logs.find("watch thread(s) joined ")?;
        let rest = &logs[i + "watch thread(s) joined ".len()..];
        rest.split(' ').next()?.parse().ok()
    };
    let mut ms = None;
    assert!(
        wait_for(Duration::from_secs(30), || {
            ms = joined(&w.logs());
            ms.is_some()
        }),
        "the leader did not stop its watches within 30 s of losing the Lease\n{}",
        w.logs()
    );
    let ms = ms.unwrap();
    let logs = w.logs();
    assert!(logs.contains("lost the lease"), "{logs}");
    assert!(logs.contains("2 watch thread(s) joined"), "{logs}");
    eprintln!(
        "[faults] Lease lost: 2 watch threads joined {ms} ms after stop began ({:.1}s after the Lease was taken; per-read timeout 320 s)",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        ms < 60_000,
        "watch threads joined {ms} ms after stop: they waited for their read"
    );
}
