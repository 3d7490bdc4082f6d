//! In-memory tests of the callback thread's scheduling: table tests of the
//! pure state machine (`state.rs`), the worker pool, and the dispatcher driven
//! with a fake delivery function instead of HTTP.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::unbounded;

use super::pool::{Deliver, Finished, Pool, Work};
use super::state::{Action, Attempt, Event, Policy, Scheduler, Verdict};
use super::*;

fn cb(id: &str, status: u8, url: Option<&str>, queued_at: Instant) -> Callback {
    Callback {
        message_id: id.into(),
        status: crate::contract::Status::from_code(status).expect("a wire status"),
        detail: serde_json::json!({ "n": status }).into(),
        url: url.map(|u| crate::webhook_guard::WebhookUrl::parse(u).expect("a webhook URL")),
        job: None,
        token: Some(u64::from(status)),
        queued_at,
    }
}

const URL: Option<&str> = Some("http://hook.example:8080/cb");

fn policy(horizon_s: u64) -> Policy {
    Policy {
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(8),
        retry_horizon: Duration::from_secs(horizon_s),
    }
}

/// A scheduler whose random source replays `rs` (then 1.0 forever).
fn sched(horizon_s: u64, rs: &[f64]) -> Scheduler {
    let mut rs: std::collections::VecDeque<f64> = rs.iter().copied().collect();
    Scheduler::new(
        policy(horizon_s),
        Box::new(move || rs.pop_front().unwrap_or(1.0)),
    )
}

/// Renders actions compactly: `D m/s`, `R m/s #n 1500ms`, `S m/s <verdict> n`.
fn show(actions: Vec<Action>) -> Vec<String> {
    actions
        .into_iter()
        .map(|a| match a {
            Action::Dispatch(c) => format!("D {}/{}", c.message_id, c.status),
            Action::Retrying {
                message_id,
                status,
                attempts,
                delay,
                ..
            } => format!(
                "R {message_id}/{status} #{attempts} {}ms",
                delay.as_millis()
            ),
            Action::Settle {
                cb,
                verdict,
                attempts,
            } => {
                let v = match verdict {
                    Verdict::Delivered => "delivered",
                    Verdict::Skipped => "skipped",
                    Verdict::Failed(_) => "failed",
                    Verdict::Abandoned(_) => "abandoned",
                };
                format!("S {}/{} {v} {attempts}", cb.message_id, cb.status)
            }
        })
        .collect()
}

enum Ev {
    Enq(&'static str, u8, Option<&'static str>),
    Ok(&'static str),
    Retry(&'static str),
    RetryAfter(&'static str, u64),
    Final(&'static str),
    /// The settled head's record landed.
    Rec(&'static str),
    Tick,
}

/// Runs a table of (milliseconds since t0, event, expected actions) rows;
/// callbacks are queued at t0.
fn run_table(s: &mut Scheduler, rows: &[(u64, Ev, &[&str])]) {
    let t0 = Instant::now();
    for (i, (ms, ev, want)) in rows.iter().enumerate() {
        let now = t0 + Duration::from_millis(*ms);
        let ev = match ev {
            Ev::Enq(id, st, url) => Event::Enqueued(cb(id, *st, *url, t0)),
            Ev::Ok(id) => result(id, Attempt::Delivered),
            Ev::Retry(id) => result(
                id,
                Attempt::Retry {
                    reason: "HTTP 503".into(),
                    retry_after: None,
                },
            ),
            Ev::RetryAfter(id, secs) => result(
                id,
                Attempt::Retry {
                    reason: "HTTP 429".into(),
                    retry_after: Some(Duration::from_secs(*secs)),
                },
            ),
            Ev::Final(id) => result(id, Attempt::Final("HTTP 400".into())),
            Ev::Rec(id) => Event::Recorded {
                message_id: id.to_string(),
            },
            Ev::Tick => Event::Tick,
        };
        let got = show(s.step(now, ev));
        let want: Vec<String> = want.iter().map(|w| w.to_string()).collect();
        assert_eq!(got, want, "row {i} at {ms}ms");
    }
}

fn result(id: &str, attempt: Attempt) -> Event {
    Event::Result {
        message_id: id.into(),
        attempt,
    }
}

#[test]
fn one_message_is_delivered_strictly_in_order() {
    let mut s = sched(3600, &[]);
    run_table(
        &mut s,
        &[
            (0, Ev::Enq("m", 0, URL), &["D m/0"]),
            (0, Ev::Enq("m", 1, URL), &[]),
            (0, Ev::Enq("m", 2, URL), &[]),
            (5, Ev::Ok("m"), &["S m/0 delivered 1"]),
            (5, Ev::Rec("m"), &["D m/1"]),
            (6, Ev::Ok("m"), &["S m/1 delivered 1"]),
            (6, Ev::Rec("m"), &["D m/2"]),
            (7, Ev::Ok("m"), &["S m/2 delivered 1"]),
            (7, Ev::Rec("m"), &[]),
        ],
    );
    assert_eq!(s.pending(), 0);
    assert_eq!(s.next_due(), None);
}

#[test]
fn messages_proceed_independently_while_one_waits_for_a_retry() {
    let mut s = sched(3600, &[]);
    run_table(
        &mut s,
        &[
            (0, Ev::Enq("a", 0, URL), &["D a/0"]),
            (0, Ev::Enq("b", 0, URL), &["D b/0"]),
            (0, Ev::Enq("a", 1, URL), &[]),
            (0, Ev::Enq("b", 1, URL), &[]),
            (10, Ev::Retry("a"), &["R a/0 #1 1000ms"]),
            (20, Ev::Ok("b"), &["S b/0 delivered 1"]),
            (21, Ev::Rec("b"), &["D b/1"]),
            (30, Ev::Ok("b"), &["S b/1 delivered 1"]),
            (31, Ev::Rec("b"), &[]),
            (500, Ev::Tick, &[]),
            (1010, Ev::Tick, &["D a/0"]),
            (1020, Ev::Ok("a"), &["S a/0 delivered 2"]),
            (1021, Ev::Rec("a"), &["D a/1"]),
            (1030, Ev::Ok("a"), &["S a/1 delivered 1"]),
            (1031, Ev::Rec("a"), &[]),
        ],
    );
    assert_eq!(s.pending(), 0);
}

#[test]
fn backoff_doubles_to_the_cap_with_full_jitter_and_honours_retry_after() {
    // Random draws: 1.0 (full), 1.0, 0.5 (half of 4s), 1.0, 1.0 (capped at 8s), 0.0.
    let mut s = sched(3600, &[1.0, 1.0, 0.5, 1.0, 1.0, 0.0]);
    run_table(
        &mut s,
        &[
            (0, Ev::Enq("m", 0, URL), &["D m/0"]),
            (0, Ev::Retry("m"), &["R m/0 #1 1000ms"]),
            (999, Ev::Tick, &[]),
            (1000, Ev::Tick, &["D m/0"]),
            (1000, Ev::Retry("m"), &["R m/0 #2 2000ms"]),
            (3000, Ev::Tick, &["D m/0"]),
            (3000, Ev::Retry("m"), &["R m/0 #3 2000ms"]),
            (5000, Ev::Tick, &["D m/0"]),
            (5000, Ev::Retry("m"), &["R m/0 #4 8000ms"]),
            (13000, Ev::Tick, &["D m/0"]),
            (13000, Ev::Retry("m"), &["R m/0 #5 8000ms"]),
            (21000, Ev::Tick, &["D m/0"]),
            (21000, Ev::Retry("m"), &["R m/0 #6 0ms"]),
            (21000, Ev::Tick, &["D m/0"]),
            // Retry-After replaces the jitter and is capped at backoff_max.
            (21000, Ev::RetryAfter("m", 3), &["R m/0 #7 3000ms"]),
            (24000, Ev::Tick, &["D m/0"]),
            (24000, Ev::RetryAfter("m", 100), &["R m/0 #8 8000ms"]),
            (32000, Ev::Tick, &["D m/0"]),
            (32000, Ev::Ok("m"), &["S m/0 delivered 9"]),
        ],
    );
}

#[test]
fn retries_stop_at_the_horizon_and_the_next_callback_goes_on() {
    // Horizon 10s, random 1.0: delays 1, 2, 4 (at 7s), then 8 would pass the
    // horizon, so the last attempt is pulled in to 10s; failing there abandons.
    let mut s = sched(10, &[]);
    run_table(
        &mut s,
        &[
            (0, Ev::Enq("m", 1, URL), &["D m/1"]),
            (0, Ev::Enq("m", 2, URL), &[]),
            (0, Ev::Retry("m"), &["R m/1 #1 1000ms"]),
            (1000, Ev::Tick, &["D m/1"]),
            (1000, Ev::Retry("m"), &["R m/1 #2 2000ms"]),
            (3000, Ev::Tick, &["D m/1"]),
            (3000, Ev::Retry("m"), &["R m/1 #3 4000ms"]),
            (7000, Ev::Tick, &["D m/1"]),
            (7000, Ev::Retry("m"), &["R m/1 #4 3000ms"]),
            (10000, Ev::Tick, &["D m/1"]),
            (10000, Ev::Retry("m"), &["S m/1 abandoned 5"]),
            (10000, Ev::Rec("m"), &["D m/2"]),
            // m/2 was queued at t0 too, so its horizon is over as well: it gets
            // its one attempt, and a retryable failure abandons it.
            (10001, Ev::Retry("m"), &["S m/2 abandoned 1"]),
            (10002, Ev::Rec("m"), &[]),
        ],
    );
    assert_eq!(s.pending(), 0);
}

#[test]
fn retry_after_past_the_horizon_abandons() {
    let mut s = sched(5, &[]);
    run_table(
        &mut s,
        &[
            (0, Ev::Enq("m", 0, URL), &["D m/0"]),
            (3000, Ev::RetryAfter("m", 4), &["S m/0 abandoned 1"]),
        ],
    );
}

#[test]
fn no_url_settles_as_skipped_in_its_turn() {
    let mut s = sched(3600, &[]);
    run_table(
        &mut s,
        &[
            // Nothing ahead: skipped at once.
            (0, Ev::Enq("n", 0, None), &["S n/0 skipped 0"]),
            (0, Ev::Rec("n"), &[]),
            (0, Ev::Enq("m", 0, URL), &["D m/0"]),
            // Behind an in-flight callback: skipped after it, keeping the order;
            // a skipped callback is recorded in its turn like any other.
            (0, Ev::Enq("m", 1, None), &[]),
            (0, Ev::Enq("m", 2, URL), &[]),
            (0, Ev::Enq("m", 3, None), &[]),
            (1, Ev::Ok("m"), &["S m/0 delivered 1"]),
            (1, Ev::Rec("m"), &["S m/1 skipped 0"]),
            (1, Ev::Rec("m"), &["D m/2"]),
            (2, Ev::Ok("m"), &["S m/2 delivered 1"]),
            (2, Ev::Rec("m"), &["S m/3 skipped 0"]),
            (2, Ev::Rec("m"), &[]),
        ],
    );
    assert_eq!(s.pending(), 0);
}

#[test]
fn a_final_failure_settles_and_the_order_continues() {
    let mut s = sched(3600, &[]);
    run_table(
        &mut s,
        &[
            (0, Ev::Enq("m", 0, URL), &["D m/0"]),
            (0, Ev::Enq("m", 1, URL), &[]),
            (0, Ev::Enq("m", 2, URL), &[]),
            (1, Ev::Final("m"), &["S m/0 failed 1"]),
            (1, Ev::Rec("m"), &["D m/1"]),
            (2, Ev::Retry("m"), &["R m/1 #1 1000ms"]),
            (1002, Ev::Tick, &["D m/1"]),
            (1003, Ev::Final("m"), &["S m/1 failed 2"]),
            (1003, Ev::Rec("m"), &["D m/2"]),
            (1004, Ev::Ok("m"), &["S m/2 delivered 1"]),
        ],
    );
}

#[test]
fn unexpected_results_are_ignored() {
    let mut s = sched(3600, &[]);
    run_table(
        &mut s,
        &[
            (0, Ev::Ok("nobody"), &[]),
            (0, Ev::Enq("m", 0, URL), &["D m/0"]),
            (0, Ev::Retry("m"), &["R m/0 #1 1000ms"]),
            // A result while waiting for the retry is not for the head.
            (10, Ev::Ok("m"), &[]),
            (1000, Ev::Tick, &["D m/0"]),
            (1001, Ev::Ok("m"), &["S m/0 delivered 2"]),
            (1001, Ev::Rec("m"), &[]),
        ],
    );
    assert_eq!(s.pending(), 0);
}

#[test]
fn pending_and_next_due_track_the_queues() {
    let mut s = sched(3600, &[0.5]);
    let t0 = Instant::now();
    s.step(t0, Event::Enqueued(cb("a", 0, URL, t0)));
    s.step(t0, Event::Enqueued(cb("a", 1, URL, t0)));
    s.step(t0, Event::Enqueued(cb("b", 0, URL, t0)));
    assert_eq!(s.pending(), 3);
    assert_eq!(s.next_due(), None);
    s.step(
        t0,
        result(
            "a",
            Attempt::Retry {
                reason: "x".into(),
                retry_after: None,
            },
        ),
    );
    assert_eq!(s.next_due(), Some(t0 + Duration::from_millis(500)));
    assert_eq!(s.pending(), 3);
}

#[test]
fn the_next_callback_waits_until_the_previous_record_landed() {
    let mut s = sched(3600, &[]);
    run_table(
        &mut s,
        &[
            (0, Ev::Enq("m", 0, URL), &["D m/0"]),
            (0, Ev::Enq("m", 1, URL), &[]),
            (5, Ev::Ok("m"), &["S m/0 delivered 1"]),
            // Being recorded: a new callback, a tick or a stray result start nothing.
            (6, Ev::Enq("m", 2, URL), &[]),
            (7, Ev::Tick, &[]),
            (8, Ev::Ok("m"), &[]),
            (9, Ev::Retry("m"), &[]),
            // Other messages go on meanwhile.
            (10, Ev::Enq("x", 0, URL), &["D x/0"]),
            (11, Ev::Ok("x"), &["S x/0 delivered 1"]),
            (12, Ev::Rec("x"), &[]),
            (20, Ev::Rec("m"), &["D m/1"]),
            // A second record report for the same turn is not for the head.
            (21, Ev::Rec("m"), &[]),
            (22, Ev::Ok("m"), &["S m/1 delivered 1"]),
            (23, Ev::Rec("m"), &["D m/2"]),
            (24, Ev::Ok("m"), &["S m/2 delivered 1"]),
            (25, Ev::Rec("m"), &[]),
            (26, Ev::Rec("nobody"), &[]),
        ],
    );
    assert_eq!(s.pending(), 0);
}

#[test]
fn a_callback_counts_as_pending_until_its_record_landed() {
    let mut s = sched(3600, &[]);
    let t0 = Instant::now();
    s.step(t0, Event::Enqueued(cb("m", 0, URL, t0)));
    s.step(t0, Event::Enqueued(cb("n", 0, None, t0)));
    assert_eq!(s.pending(), 2);
    s.step(t0, result("m", Attempt::Delivered));
    assert_eq!(s.pending(), 2, "m/0 and n/0 are being recorded");
    s.step(
        t0,
        Event::Recorded {
            message_id: "n".into(),
        },
    );
    assert_eq!(s.pending(), 1);
    s.step(
        t0,
        Event::Recorded {
            message_id: "m".into(),
        },
    );
    assert_eq!(s.pending(), 0);
}

// ---- worker pool ----

#[test]
fn pool_bounds_workers_per_destination_and_reaps_idle_ones() {
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (a, p) = (Arc::clone(&active), Arc::clone(&peak));
    let deliver: Deliver = Arc::new(move |_cb: &Callback| {
        let n = a.fetch_add(1, Ordering::SeqCst) + 1;
        p.fetch_max(n, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(50));
        a.fetch_sub(1, Ordering::SeqCst);
        Attempt::Delivered
    });
    let (tx, rx) = unbounded();
    let hooks: Arc<dyn Hooks> = Arc::new(Record::default());
    let mut pool = Pool::new(2, Duration::from_millis(100), deliver, hooks, tx);
    let t0 = Instant::now();
    for i in 0..6u8 {
        let id = format!("m{i}");
        pool.submit(
            "http://h:1",
            "h",
            Work::Deliver(Arc::new(cb(&id, 0, URL, t0))),
        )
        .expect("submit");
    }
    // Another destination gets its own worker even though h:1's are all busy.
    pool.submit(
        "http://other:1",
        "other",
        Work::Deliver(Arc::new(cb("x", 0, URL, t0))),
    )
    .expect("submit");
    assert_eq!(pool.workers(), 3);
    for _ in 0..7 {
        let d = rx.recv_timeout(Duration::from_secs(5)).expect("result");
        assert_eq!(d.finished, Finished::Attempt(Attempt::Delivered));
        // A fixed clock for idleness: every worker went idle at t0.
        pool.finished(&d.dest, d.worker, t0);
    }
    assert!(
        peak.load(Ordering::SeqCst) <= 3,
        "at most 2 + 1 concurrent attempts"
    );
    assert_eq!(pool.next_reap(), Some(t0 + Duration::from_millis(100)));
    pool.reap(t0 + Duration::from_millis(99));
    assert_eq!(pool.workers(), 3, "not idle long enough yet");
    pool.reap(t0 + Duration::from_millis(100));
    assert_eq!(pool.workers(), 0);
    assert_eq!(pool.next_reap(), None);
    pool.shutdown();
}

// ---- dispatcher with a fake delivery ----

#[derive(Default)]
struct Record(Mutex<Vec<(String, u8, Outcome)>>);

impl Hooks for Record {
    fn settled(&self, cb: &Callback, outcome: &Outcome) {
        if let Ok(mut v) = self.0.lock() {
            v.push((cb.message_id.clone(), cb.status.code(), outcome.clone()));
        }
    }
}

fn quick_cfg() -> Config {
    Config {
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(5),
        ..Config::default()
    }
}

#[test]
fn dispatcher_drains_everything_queued_before_returning() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    // Every callback fails once, then succeeds.
    let seen = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let deliver: Deliver = Arc::new(move |cb: &Callback| {
        c.fetch_add(1, Ordering::SeqCst);
        let first = seen
            .lock()
            .map(|mut s| s.insert((cb.message_id.clone(), cb.status)))
            .unwrap_or(false);
        if first {
            Attempt::Retry {
                reason: "HTTP 503".into(),
                retry_after: None,
            }
        } else {
            Attempt::Delivered
        }
    });
    let rec = Arc::new(Record::default());
    let (tx, rx) = unbounded();
    let h = spawn_with(quick_cfg(), deliver, rx, rec.clone(), Box::new(|| 0.5)).expect("spawn");
    let t0 = Instant::now();
    for id in ["a", "b", "c"] {
        for st in [0u8, 1, 2] {
            tx.send(CallbackMsg::Send(cb(id, st, URL, t0)))
                .expect("send");
        }
    }
    // An unusable URL cannot reach the callback thread any more: a
    // `WebhookUrl` only holds what the strict parser accepted.
    tx.send(CallbackMsg::Send(cb("d", 1, None, t0)))
        .expect("send");
    drop(tx);
    h.join().expect("join");
    let got = rec.0.lock().map(|v| v.clone()).unwrap_or_default();
    assert_eq!(got.len(), 10);
    assert_eq!(calls.load(Ordering::SeqCst), 18);
    for id in ["a", "b", "c"] {
        let order: Vec<(u8, Outcome)> = got
            .iter()
            .filter(|r| r.0 == id)
            .map(|r| (r.1, r.2.clone()))
            .collect();
        assert_eq!(
            order,
            vec![
                (0, Outcome::Delivered),
                (1, Outcome::Delivered),
                (2, Outcome::Delivered)
            ]
        );
    }
    let d: Vec<&(String, u8, Outcome)> = got.iter().filter(|r| r.0 == "d").collect();
    assert_eq!(d[0].2, Outcome::Skipped, "{d:?}");
}

#[test]
fn dispatcher_gives_up_after_the_shutdown_grace() {
    let deliver: Deliver = Arc::new(|_cb: &Callback| Attempt::Retry {
        reason: "HTTP 503".into(),
        retry_after: None,
    });
    let rec = Arc::new(Record::default());
    let (tx, rx) = unbounded();
    let cfg = Config {
        shutdown_grace: Duration::from_millis(300),
        ..quick_cfg()
    };
    let h = spawn_with(cfg, deliver, rx, rec.clone(), Box::new(|| 1.0)).expect("spawn");
    tx.send(CallbackMsg::Send(cb("m", 0, URL, Instant::now())))
        .expect("send");
    tx.send(CallbackMsg::Send(cb("m", 1, URL, Instant::now())))
        .expect("send");
    let t = Instant::now();
    drop(tx);
    h.join().expect("join");
    assert!(t.elapsed() >= Duration::from_millis(250));
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(rec.0.lock().map(|v| v.is_empty()).unwrap_or(false));
}

/// Logs deliveries and records of every callback in one sequence.
#[derive(Default)]
struct Trace(Mutex<Vec<String>>);

impl Trace {
    fn push(&self, e: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push(e);
        }
    }
    fn events(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

struct SlowRecorder(Arc<Trace>);

impl Hooks for SlowRecorder {
    fn settled(&self, cb: &Callback, _outcome: &Outcome) {
        self.0
            .push(format!("record {}/{}", cb.message_id, cb.status));
        std::thread::sleep(Duration::from_millis(30));
        self.0
            .push(format!("recorded {}/{}", cb.message_id, cb.status));
    }
}

#[test]
fn dispatcher_sends_a_messages_next_callback_only_after_its_record_and_records_in_parallel() {
    let trace = Arc::new(Trace::default());
    let t = Arc::clone(&trace);
    let deliver: Deliver = Arc::new(move |cb: &Callback| {
        t.push(format!("deliver {}/{}", cb.message_id, cb.status));
        Attempt::Delivered
    });
    let (tx, rx) = unbounded();
    let cfg = Config {
        workers_per_host: 8,
        ..quick_cfg()
    };
    let rec = Arc::new(SlowRecorder(Arc::clone(&trace)));
    let h = spawn_with(cfg, deliver, rx, rec, Box::new(|| 0.5)).expect("spawn");
    let t0 = Instant::now();
    let ids: Vec<String> = (0..8).map(|i| format!("m{i}")).collect();
    for id in &ids {
        for st in [0u8, 1, 2] {
            tx.send(CallbackMsg::Send(cb(id, st, URL, t0)))
                .expect("send");
        }
    }
    tx.send(CallbackMsg::Send(cb("none", 0, None, t0)))
        .expect("send");
    tx.send(CallbackMsg::Send(cb("none", 2, None, t0)))
        .expect("send");
    drop(tx);
    h.join().expect("join");
    let ev = trace.events();
    let pos = |e: String| {
        ev.iter()
            .position(|x| *x == e)
            .unwrap_or_else(|| panic!("{e} missing from {ev:?}"))
    };
    for id in &ids {
        for st in [0u8, 1] {
            assert!(
                pos(format!("recorded {id}/{st}")) < pos(format!("deliver {id}/{}", st + 1)),
                "{id}/{} sent before {id}/{st} was recorded: {ev:?}",
                st + 1
            );
        }
        assert!(pos(format!("deliver {id}/2")) < pos(format!("recorded {id}/2")));
    }
    assert!(pos("recorded none/0".into()) < pos("record none/2".into()));
    // Records of different messages overlap (they run on the workers): some
    // record starts while another one is still running.
    let mut open = 0usize;
    let mut most = 0usize;
    for e in &ev {
        if e.starts_with("record ") {
            open += 1;
            most = most.max(open);
        } else if e.starts_with("recorded ") {
            open -= 1;
        }
    }
    assert!(most > 1, "records ran one at a time: {ev:?}");
    assert_eq!(ev.iter().filter(|e| e.starts_with("recorded ")).count(), 26);
}

#[test]
fn pool_puts_records_ahead_of_attempts_in_the_backlog() {
    let (gate_tx, gate_rx) = unbounded::<()>();
    let order = Arc::new(Trace::default());
    let o = Arc::clone(&order);
    let deliver: Deliver = Arc::new(move |cb: &Callback| {
        let _ = gate_rx.recv_timeout(Duration::from_secs(5));
        o.push(format!("deliver {}", cb.message_id));
        Attempt::Delivered
    });
    let hooks: Arc<dyn Hooks> = Arc::new(SlowRecorder(Arc::clone(&order)));
    let (tx, rx) = unbounded();
    let mut pool = Pool::new(1, Duration::from_secs(10), deliver, hooks, tx);
    let t0 = Instant::now();
    for w in [
        Work::Deliver(Arc::new(cb("a", 0, URL, t0))),
        Work::Deliver(Arc::new(cb("b", 0, URL, t0))),
        Work::Record(Arc::new(cb("c", 0, URL, t0)), Outcome::Delivered),
    ] {
        pool.submit("http://h:1", "h", w).expect("submit");
    }
    for _ in 0..3 {
        let _ = gate_tx.send(());
        let d = rx.recv_timeout(Duration::from_secs(5)).expect("result");
        pool.finished(&d.dest, d.worker, Instant::now());
    }
    pool.shutdown();
    assert_eq!(
        order.events(),
        vec!["deliver a", "record c/0", "recorded c/0", "deliver b"]
    );
}
